import FoundationEssentials

/// The configuration file as a tree, with the environment's overrides applied, read by typed
/// accessors that collect every problem (with its key and the fix) instead of stopping at the
/// first, and that remember which keys were read so unknown keys are reported too.
final class ConfigTree {
    indirect enum Value {
        case scalar(String, quoted: Bool)
        case mapping([(String, Value)])
        case sequence([Value])
        case null

        func child(_ key: String) -> Value? {
            guard case .mapping(let pairs) = self else { return nil }
            return pairs.first { $0.0 == key }?.1
        }
    }

    private(set) var root: Value
    private(set) var problems: [String] = []
    private var used: Set<String> = []
    /// Keys whose values came from the environment (shown as such in check-config).
    private(set) var fromEnvironment: Set<String> = []

    init(yaml text: String, source: String) throws(ConfigError) {
        do {
            root = try YAML.parse(text) ?? .mapping([])
        } catch {
            throw ConfigError(problems: ["\(source) is not valid YAML: \(error)"])
        }
        if case .mapping = root {
        } else if case .null = root {
            root = .mapping([])
        } else {
            throw ConfigError(problems: ["\(source): the top level must be a mapping of keys (device_id: ..., mqtt: ...)"])
        }
    }

    /// `EDGE_AGENT_MQTT__PASSWORD=...` sets `mqtt.password` (path parts joined by "__").
    func applyEnvironment(_ env: [String: String], prefix: String = "EDGE_AGENT_") {
        for (name, value) in env where name.hasPrefix(prefix) {
            let path = name.dropFirst(prefix.count).lowercased().components(separatedBy: "__")
            guard !path.isEmpty, path.allSatisfy({ !$0.isEmpty }) else { continue }
            root = Self.set(root, path[...], .scalar(value, quoted: true))
            fromEnvironment.insert(path.joined(separator: "."))
        }
    }

    /// Keys whose values came from a systemd credential.
    private(set) var fromCredential: Set<String> = []

    /// A systemd credential (the unit's `LoadCredential=`, in `$CREDENTIALS_DIRECTORY`) sets `key`
    /// to the file's text without its final newline, over the file and the environment. An empty
    /// credential (the package makes the file empty) sets nothing.
    func applyCredential(directory: String, name: String, key: String) {
        let path = directory + "/" + name
        guard FileManager.default.fileExists(atPath: path) else { return }
        guard let data = FileManager.default.contents(atPath: path), data.count <= 4096 else {
            problem("\(key): the systemd credential \(path) cannot be read or is over 4096 bytes")
            return
        }
        var text = String(decoding: data, as: UTF8.self)
        while text.hasSuffix("\n") || text.hasSuffix("\r") { text.removeLast() }
        guard !text.isEmpty else { return }
        root = Self.set(root, key.split(separator: ".").map(String.init)[...], .scalar(text, quoted: true))
        fromCredential.insert(key)
    }

    private static func set(_ v: Value, _ path: ArraySlice<String>, _ new: Value) -> Value {
        guard let key = path.first else { return new }
        var pairs: [(String, Value)] = []
        if case .mapping(let p) = v { pairs = p }
        if let i = pairs.firstIndex(where: { $0.0 == key }) {
            pairs[i].1 = set(pairs[i].1, path.dropFirst(), new)
        } else {
            pairs.append((key, set(.null, path.dropFirst(), new)))
        }
        return .mapping(pairs)
    }

    func problem(_ text: String) { problems.append(text) }

    /// Sets one dotted key (used by `config/set`).
    func set(_ path: String, _ value: Value) {
        root = Self.set(root, path.split(separator: ".").map(String.init)[...], value)
    }

    /// The tree as YAML text (comments of the original file are not kept).
    func yaml() -> String { YAML.write(root) }

    func value(_ path: String, in base: Value? = nil) -> Value? {
        markUsed(path)
        var v: Value? = base ?? root
        let parts = base == nil ? path.split(separator: ".").map(String.init) : [String(path.split(separator: ".").last!)]
        for p in parts { v = v?.child(p) }
        if case .null = v { return nil }
        return v
    }

    /// The key and every mapping above it count as known.
    func markUsed(_ path: String) {
        var p = Substring(path)
        while true {
            used.insert(String(p))
            guard let dot = p.lastIndex(of: ".") else { return }
            p = p[..<dot]
        }
    }

    func string(_ path: String, _ def: String?, in base: Value? = nil) -> String? {
        guard let v = value(path, in: base) else { return def }
        guard case .scalar(let s, _) = v else {
            problem("\(path): expected a text value, found a \(Self.kind(v))")
            return def
        }
        return s
    }

    func int(_ path: String, _ def: Int, _ range: ClosedRange<Int>, in base: Value? = nil) -> Int {
        guard let v = value(path, in: base) else { return def }
        guard case .scalar(let s, _) = v, let i = Int(s.replacing("_", with: "")) else {
            problem("\(path): expected a whole number in \(range.lowerBound)...\(range.upperBound), found \(Self.show(v))")
            return def
        }
        guard range.contains(i) else {
            problem("\(path): \(i) is out of range \(range.lowerBound)...\(range.upperBound)")
            return def
        }
        return i
    }

    func double(_ path: String, _ def: Double, _ range: ClosedRange<Double>, in base: Value? = nil) -> Double {
        guard let v = value(path, in: base) else { return def }
        guard case .scalar(let s, _) = v, let d = Double(s), d.isFinite else {
            problem("\(path): expected a number in \(range.lowerBound)...\(range.upperBound), found \(Self.show(v))")
            return def
        }
        guard range.contains(d) else {
            problem("\(path): \(s) is out of range \(range.lowerBound)...\(range.upperBound)")
            return def
        }
        return d
    }

    func bool(_ path: String, _ def: Bool, in base: Value? = nil) -> Bool {
        guard let v = value(path, in: base) else { return def }
        if case .scalar(let s, _) = v {
            switch s.lowercased() {
            case "true", "yes", "on", "1": return true
            case "false", "no", "off", "0": return false
            default: break
            }
        }
        problem("\(path): expected true or false, found \(Self.show(v))")
        return def
    }

    func choice<E: ConfigChoice>(_ path: String, _ def: E, in base: Value? = nil) -> E { choice(path, in: base) ?? def }

    /// nil when the key is absent or its value is not one of the choices (a problem then).
    func choice<E: ConfigChoice>(_ path: String, in base: Value? = nil) -> E? {
        guard let s = string(path, nil, in: base) else { return nil }
        guard let e = E.choices.first(where: { $0.configName == s }) else {
            problem("\(path): \"\(s)\" is not one of \(E.choices.map(\.configName).joined(separator: ", "))")
            return nil
        }
        return e
    }

    func list(_ path: String) -> [Value] {
        guard let v = value(path) else { return [] }
        guard case .sequence(let items) = v else {
            problem("\(path): expected a list (- item per line), found a \(Self.kind(v))")
            return []
        }
        return items
    }

    /// Keys present in the file that nothing read: misspellings, or options that do not exist.
    func reportUnknownKeys(known: (String) -> Bool) {
        func walk(_ v: Value, _ prefix: String) {
            guard case .mapping(let pairs) = v else { return }
            for (k, child) in pairs {
                let path = prefix.isEmpty ? k : prefix + "." + k
                if !used.contains(path) && !known(path) {
                    let hint = used.filter { $0.hasPrefix(prefix.isEmpty ? "" : prefix + ".") }.min { a, b in
                        Self.distance(a, path) < Self.distance(b, path)
                    }
                    let suggestion = hint.flatMap { Self.distance($0, path) <= 3 ? " (did you mean \($0)?)" : nil } ?? ""
                    problem("\(path): unknown key\(suggestion); see config/edge-agent.example.yaml for every key")
                    continue
                }
                if case .mapping = child { walk(child, path) }
            }
        }
        walk(root, "")
    }

    static func kind(_ v: Value) -> String {
        switch v {
        case .scalar: "value"
        case .mapping: "mapping"
        case .sequence: "list"
        case .null: "nothing"
        }
    }

    static func show(_ v: Value) -> String {
        if case .scalar(let s, _) = v { return "\"\(s)\"" }
        return "a \(kind(v))"
    }

    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a)
        let b = Array(b)
        var row = Array(0...b.count)
        for i in 1...max(1, a.count) where !a.isEmpty {
            var prev = row[0]
            row[0] = i
            for j in 1...max(1, b.count) where !b.isEmpty {
                let cur = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] == b[j - 1] ? 0 : 1))
                prev = cur
            }
        }
        return row[b.count]
    }
}

/// Everything wrong with a configuration, each naming the key and the fix.
public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public let problems: [String]
    public var description: String {
        "configuration has \(problems.count) problem\(problems.count == 1 ? "" : "s"):\n"
            + problems.map { "  - \($0)" }.joined(separator: "\n")
    }
}
