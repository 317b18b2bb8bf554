import FoundationEssentials
import Logging
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One line per event, for a person and for journald: under systemd (JOURNAL_STREAM set) each
/// line starts with its syslog priority (`<3>` error ... `<7>` debug) and no timestamp (journald
/// adds its own); otherwise an ISO timestamp and the level. Metadata follows as key=value. Each
/// line also goes into `LogRing.shared`, for `log/tail`.
public struct AgentLogHandler: LogHandler {
    /// One level for the whole process, changeable at run time (`log/level` command).
    public static let level = NIOLockedValueBox<Logger.Level>(.info)

    public var logLevel: Logger.Level {
        get { Self.level.withLockedValue { $0 } }
        set { Self.level.withLockedValue { $0 = newValue } }
    }
    public var metadata: Logger.Metadata = [:]
    let label: String
    let journald: Bool

    public init(label: String, level: Logger.Level, journald: Bool = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] != nil) {
        self.label = label
        self.journald = journald
        Self.level.withLockedValue { $0 = level }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var all = metadata
        if let m = event.metadata { all.merge(m) { $1 } }
        let extra = all.isEmpty ? "" : " " + all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        let text = "\(event.message)".replacing("\n", with: " | ")
        let plain = "\(Self.stamp()) \(event.level) \(label): \(text)\(extra)"
        LogRing.shared.append(event.level, plain)
        let line = journald ? "<\(Self.priority(event.level))>\(label): \(text)\(extra)\n" : plain + "\n"
        let bytes = Array(line.utf8)
        _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }

    static func priority(_ l: Logger.Level) -> Int {
        switch l {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    static func stamp() -> String { EventPipeline.timestamp(Date()) }
}
