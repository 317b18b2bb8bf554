import DeviceAdapters
import FoundationEssentials
import Logging
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// `config/set`: `{"values": {"status.info_interval": 10, "log_level": "debug"}}`. The changed
/// file is validated exactly like a file at start; any problem rejects the whole change (the
/// running configuration and the file stay as they were). A valid change is written atomically
/// (temporary file, fsync, rename; the file's comments are not kept) and applied at once where the
/// agent can (info interval, log level, LED patterns, allowed commands); the answer lists the keys
/// that take effect at the next start.
struct ConfigUpdate {
    let agent: Agent
    let allow: NIOLockedValueBox<Set<String>>

    static let live: Set<String> = ["status.info_interval", "log_level", "commands.allow"]

    func apply(_ args: [String: JSONValue]) throws -> JSONValue {
        typealias F = CommandServer.Failure
        guard case .object(let values)? = args["values"], !values.isEmpty else {
            throw F(code: "bad_arguments", message: "\"values\" must be an object of dotted keys and values, e.g. {\"status.info_interval\": 10}")
        }
        guard let path = agent.configPath else { throw F(code: "unavailable", message: "the agent was not started from a configuration file") }
        guard let data = FileManager.default.contents(atPath: path) else { throw F(code: "failed", message: "cannot read \(path)") }
        let tree: ConfigTree
        do { tree = try ConfigTree(yaml: String(decoding: data, as: UTF8.self), source: path) } catch {
            throw F(code: "failed", message: "\(error)")
        }
        for (key, value) in values.sorted(by: { $0.key < $1.key }) {
            guard Self.isDottedKey(key), !key.hasPrefix("sources") else {
                throw F(code: "bad_arguments", message: "\"\(key)\" is not a settable key (dotted lower-case keys such as mqtt.keepalive; sources cannot be changed here)")
            }
            tree.set(key, try Self.node(value, key: key))
        }
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
        for key in values.keys.sorted() {
            switch key {
            case "status.info_interval":
                agent.runtime.withLockedValue { $0.infoInterval = updated.infoInterval }
                agent.scheduleInfo(every: updated.infoInterval)
                applied.append(key)
            case "log_level":
                AgentLogHandler.level.withLockedValue { $0 = Logger.Level(rawValue: updated.logLevel) ?? .info }
                applied.append(key)
            case "commands.allow":
                allow.withLockedValue { $0 = Set(updated.commands.allow) }
                applied.append(key)
            case _ where key.hasPrefix("led.patterns."):
                agent.runtime.withLockedValue { $0.patterns = updated.led.patterns }
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

    /// Lower-case words of [a-z0-9_] joined by dots, as `mqtt.keepalive`.
    static func isDottedKey(_ key: String) -> Bool {
        let words = key.split(separator: ".", omittingEmptySubsequences: false)
        return words.allSatisfy { w in !w.isEmpty && w.utf8.allSatisfy { isWordByte($0) && !($0 >= 65 && $0 <= 90) } }
    }

    static func node(_ v: JSONValue, key: String) throws -> ConfigTree.Value {
        switch v {
        case .string(let s): return .scalar(s, quoted: true)
        case .int(let i): return .scalar(String(i), quoted: false)
        case .number(let d): return .scalar(String(d), quoted: false)
        case .bool(let b): return .scalar(b ? "true" : "false", quoted: false)
        case .null: return .null
        case .array(let items):
            return .sequence(try items.map { item in
                guard case .string(let s) = item else {
                    throw CommandServer.Failure(code: "bad_arguments", message: "\"\(key)\": a list may hold strings only")
                }
                return .scalar(s, quoted: true)
            })
        case .object:
            throw CommandServer.Failure(code: "bad_arguments", message: "\"\(key)\": set nested keys one by one with dotted names")
        }
    }
}
