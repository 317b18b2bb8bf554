import Communicator
import FoundationEssentials
import Logging
import OfflineStore

/// A value a key chooses from a fixed list, by the name the file uses.
protocol ConfigChoice: Equatable {
    static var choices: [Self] { get }
    var configName: String { get }
}

extension ConfigChoice where Self: CaseIterable {
    static var choices: [Self] { Array(allCases) }
}

extension ConfigChoice where Self: RawRepresentable, RawValue == String {
    var configName: String { rawValue }
}

extension MQTTVersion: ConfigChoice {
    static var choices: [MQTTVersion] { [.v5_0, .v3_1_1] }
    var configName: String { description }
}

extension MQTTConfig.BrokerOrder: ConfigChoice {
    static var choices: [Self] { [.inOrder, .random] }
}

extension RingStore.FullPolicy: ConfigChoice {
    static var choices: [Self] { [.dropOldest, .rejectNewest] }
}

extension OfflineStoreConfig.Persist: ConfigChoice {
    static var choices: [Self] { [.offline, .always] }
}

extension Logger.Level: ConfigChoice {}

/// One key of the configuration file, declared once: its path, how it is read and checked (its
/// default is its value in a fresh `AgentConfig`), how it is shown (masked if secret), and its
/// documentation, which is the comment `config/edge-agent.example.yaml` carries (that file is
/// generated from the keys: `edge-agent check-config --example`).
struct ConfigKey {
    let path: String
    /// The comment after the value in the example file.
    var note = ""
    /// Comment lines above the key in the example file.
    var above: [String] = []
    /// May be changed remotely (`config/set`).
    var remote = false
    /// The YAML the example file shows instead of the default (nil: the default).
    var example: String?
    let read: (ConfigTree, inout AgentConfig) -> Void
    /// The value as YAML; a value of several lines starts with a newline and is indented already.
    let show: (AgentConfig) -> String
    /// A comment check-config adds after the value (a template filled in).
    var explain: ((AgentConfig) -> String)?

    // MARK: - Kinds of keys

    static func text(
        _ path: String, _ key: WritableKeyPath<AgentConfig, String>, note: String = "", above: [String] = [],
        check: ((String, AgentConfig) -> String?)? = nil, explain: ((AgentConfig) -> String)? = nil
    ) -> ConfigKey {
        ConfigKey(
            path: path, note: note, above: above,
            read: { t, c in
                let v = t.string(path, c[keyPath: key]) ?? c[keyPath: key]
                c[keyPath: key] = v
                if let problem = check?(v, c) { t.problem("\(path): \(problem)") }
            }, show: { YAML.quote($0[keyPath: key]) }, explain: explain)
    }

    /// A text that may be absent (`null`). `secret`: shown masked; `readableFile`: names a file
    /// this user must be able to read; `check` returns the problem with a value.
    static func optionalText(
        _ path: String, _ key: WritableKeyPath<AgentConfig, String?>, note: String = "", above: [String] = [], secret: Bool = false,
        readableFile: Bool = false, check: ((String, AgentConfig) -> String?)? = nil
    ) -> ConfigKey {
        ConfigKey(
            path: path, note: note, above: above,
            read: { t, c in
                let v = t.string(path, c[keyPath: key])
                c[keyPath: key] = v
                guard let v else { return }
                if readableFile && !FileManager.default.isReadableFile(atPath: v) {
                    t.problem("\(path): \(v) cannot be read (missing, or no permission for this user)")
                }
                if let problem = check?(v, c) { t.problem("\(path): \(problem)") }
            },
            show: { c in
                guard let v = c[keyPath: key] else { return "null" }
                return secret ? "\"********\"" : YAML.quote(v)
            })
    }

    static func int(
        _ path: String, _ key: WritableKeyPath<AgentConfig, Int>, _ range: ClosedRange<Int>, note: String = "", above: [String] = [],
        remote: Bool = false
    ) -> ConfigKey {
        ConfigKey(
            path: path, note: note, above: above, remote: remote, read: { t, c in c[keyPath: key] = t.int(path, c[keyPath: key], range) },
            show: { "\($0[keyPath: key])" })
    }

    static func seconds(
        _ path: String, _ key: WritableKeyPath<AgentConfig, Double>, _ range: ClosedRange<Double>, note: String = "",
        above: [String] = [], remote: Bool = false
    ) -> ConfigKey {
        ConfigKey(
            path: path, note: note, above: above, remote: remote,
            read: { t, c in c[keyPath: key] = t.double(path, c[keyPath: key], range) }, show: { number($0[keyPath: key]) })
    }

    static func flag(
        _ path: String, _ key: WritableKeyPath<AgentConfig, Bool>, note: String = "", above: [String] = [], remote: Bool = false
    ) -> ConfigKey {
        ConfigKey(
            path: path, note: note, above: above, remote: remote, read: { t, c in c[keyPath: key] = t.bool(path, c[keyPath: key]) },
            show: { "\($0[keyPath: key])" })
    }

    static func choice<E: ConfigChoice>(
        _ path: String, _ key: WritableKeyPath<AgentConfig, E>, note: String = "", above: [String] = [], remote: Bool = false
    ) -> ConfigKey {
        ConfigKey(
            path: path, note: note.isEmpty ? E.choices.map(\.configName).joined(separator: " | ") : note, above: above, remote: remote,
            read: { t, c in c[keyPath: key] = t.choice(path, c[keyPath: key]) }, show: { YAML.quote($0[keyPath: key].configName) })
    }

    /// A list of text items, each parsed (nil: not a valid item, named with `expected`).
    static func list<Item>(
        _ path: String, _ key: WritableKeyPath<AgentConfig, [Item]>, note: String = "", above: [String] = [], expected: String,
        parse: @escaping (String, AgentConfig) -> Item?, show: @escaping (Item) -> String
    ) -> ConfigKey {
        ConfigKey(
            path: path, note: note, above: above,
            read: { t, c in
                guard t.value(path) != nil else { return }
                var items: [Item] = []
                for (i, node) in t.list(path).enumerated() {
                    guard case .scalar(let s, _) = node, let item = parse(s, c) else {
                        t.problem("\(path)[\(i)]: expected \(expected), found \(ConfigTree.show(node))")
                        continue
                    }
                    items.append(item)
                }
                c[keyPath: key] = items
            }, show: { "[" + $0[keyPath: key].map(show).joined(separator: ", ") + "]" })
    }

    /// A list of text items, each one accepted by `check`.
    static func texts(
        _ path: String, _ key: WritableKeyPath<AgentConfig, [String]>, note: String = "", above: [String] = [],
        expected: String, check: @escaping (String) -> Bool = { !$0.isEmpty }
    ) -> ConfigKey {
        list(path, key, note: note, above: above, expected: expected, parse: { s, _ in check(s) ? s : nil }, show: YAML.quote)
    }

    /// Whole numbers without ".0", so that the file reads as written.
    static func number(_ d: Double) -> String {
        d == d.rounded() && abs(d) < 1e15 ? String(Int(d)) : String(d)
    }
}
