import DeviceAdapters
import FoundationEssentials
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// `config/set`: `{"values": {"status.info_interval": 10, "log_level": "debug"}}`. Only the keys
/// in `settable` may be changed remotely: not the broker, credentials, TLS, topics or client id
/// (a command could move the device to another broker), not `commands.*` (a command could allow
/// itself more), not paths (`led.simulated_log`, `led.board`, `state_dir`, `hardware_dir`, the
/// sources). The changed file is validated exactly like a file at start; any problem rejects the
/// whole change (the running configuration and the file stay as they were). A valid change is
/// written atomically (temporary file, fsync, rename; the file's comments are not kept) and applied
/// at once where the agent can (info interval, log level, LED patterns); the answer lists the keys
/// that take effect at the next start.
struct ConfigUpdate {
    let agent: Agent

    /// The keys the table marks `remote`.
    static let settable: Set<String> = Set(AgentConfig.keys.filter(\.remote).map(\.path))
    /// Bounds checked before anything is parsed further.
    static let maxKeys = 32
    static let maxValueBytes = 256

    /// The checks made before anything is read or written: 1 to `maxKeys` keys, each settable,
    /// each one scalar of at most `maxValueBytes`. The values in key order, as configuration nodes.
    struct Change {
        var key: String
        var value: ConfigTree.Value
    }

    static func check(_ values: JSONValue?) throws -> [Change] {
        typealias F = CommandServer.Failure
        guard case .object(let values)? = values, !values.isEmpty, values.count <= Self.maxKeys else {
            throw F(
                code: "bad_arguments",
                message: "\"values\" must be an object of 1 to \(Self.maxKeys) dotted keys and values, e.g. {\"status.info_interval\": 10}")
        }
        let refused = values.keys.filter { !Self.settable.contains($0) }.sorted()
        guard refused.isEmpty else {
            let named = refused.map { key -> String in
                let shown = key.utf8.count <= 64 ? key : String(key.prefix(64)) + "…"
                let near = Self.settable.min { ConfigTree.distance($0, key) < ConfigTree.distance($1, key) }
                return "\"\(shown)\"" + (near.map { ConfigTree.distance($0, key) <= 3 ? " (did you mean \($0)?)" : "" } ?? "")
            }
            throw F(
                code: "bad_arguments",
                message:
                    "cannot be set remotely: \(named.joined(separator: ", ")); nothing changed. Settable: \(Self.settable.sorted().joined(separator: ", "))"
            )
        }
        var changes: [Change] = []
        for (key, value) in values.sorted(by: { $0.key < $1.key }) {
            changes.append(Change(key: key, value: try Self.node(value, key: key)))
        }
        return changes
    }

    func apply(_ args: [String: JSONValue]) throws -> JSONValue {
        typealias F = CommandServer.Failure
        let changes = try Self.check(args["values"])
        guard let path = agent.configPath else {
            throw F(code: "unavailable", message: "the agent was not started from a configuration file")
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw F(code: "failed", message: "cannot read \(path)") }
        let tree: ConfigTree
        do { tree = try ConfigTree(yaml: String(decoding: data, as: UTF8.self), source: path) } catch {
            throw F(code: "failed", message: "\(error)")
        }
        for c in changes { tree.set(c.key, c.value) }
        let text = tree.yaml()
        let updated: AgentConfig
        do {
            updated = try AgentConfig.parse(
                text, source: path, environment: ProcessInfo.processInfo.environment, baseDirectory: directoryPart(of: path))
        } catch {
            throw F(code: "invalid_config", message: "nothing changed: " + error.problems.joined(separator: "; "))
        }
        do { try AtomicFile.write(Array(text.utf8), to: path) } catch {
            throw CommandServer.Failure(code: "failed", message: "\(error)")
        }
        agent.effective.withLockedValue { $0 = updated }
        var applied: [String] = []
        var later: [String] = []
        for key in changes.map(\.key) {
            switch key {
            case "status.info_interval":
                agent.scheduleInfo(every: updated.infoInterval)
                applied.append(key)
            case "log_level":
                AgentLogHandler.level.withLockedValue { $0 = updated.logLevel }
                applied.append(key)
            case _ where key.hasPrefix("led.patterns."):
                agent.ledChoice.withLockedValue { $0.patterns = updated.led.patterns }
                agent.refreshLED()
                applied.append(key)
            default:
                later.append(key)
            }
        }
        agent.logger.notice("config/set wrote \(path): applied \(applied), at the next start \(later)")
        return .object([
            "written": .string(path), "applied": .array(applied.map { .string($0) }), "restart_required": .array(later.map { .string($0) }),
        ])
    }

    /// Every settable key takes one scalar.
    static func node(_ v: JSONValue, key: String) throws -> ConfigTree.Value {
        switch v {
        case .string(let s):
            guard s.utf8.count <= maxValueBytes else {
                throw CommandServer.Failure(
                    code: "bad_arguments", message: "\"\(key)\": a value of \(s.utf8.count) bytes; at most \(maxValueBytes)")
            }
            return .scalar(s, quoted: true)
        case .int(let i): return .scalar(String(i), quoted: false)
        case .number(let d): return .scalar(String(d), quoted: false)
        case .bool(let b): return .scalar(b ? "true" : "false", quoted: false)
        case .null: return .null
        case .array, .object:
            throw CommandServer.Failure(code: "bad_arguments", message: "\"\(key)\" takes one value (a string, number, boolean or null)")
        }
    }
}
