import FoundationEssentials
import NIOConcurrencyHelpers
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Something on the device that produces events (a camera pipeline, a device folder, ...).
/// The agent gives each event its identity, sequence number and time; a source says what
/// happened (`type`) and its own fields.
public struct SourceEvent: Sendable, Equatable {
    public var type: String
    public var fields: [String: JSONValue]

    public init(type: String, fields: [String: JSONValue] = [:]) {
        self.type = type
        self.fields = fields
    }
}

public typealias EventSink = @Sendable (SourceEvent) -> Void

public protocol EventSource: AnyObject, Sendable {
    /// The configured name (unique per agent), e.g. "cam0".
    var name: String { get }
    /// The kind: simulated, socket, v4l2, directory.
    var kind: String { get }
    /// Starts producing events into `sink`; throws with a clear reason if it cannot.
    func start(_ sink: @escaping EventSink) throws
    func stop()
    /// Counters for the status document (accepted, rejected by reason, ...).
    var counters: [String: Int] { get }
}

/// Thread-safe counters for sources.
public final class Counters: @unchecked Sendable {
    private let box = NIOLockedValueBox<[String: Int]>([:])
    public init() {}
    public func add(_ key: String, _ n: Int = 1) { box.withLockedValue { $0[key, default: 0] += n } }
    public var all: [String: Int] { box.withLockedValue { $0 } }
}

/// A loop on a thread of its own that can be stopped.
final class Worker: @unchecked Sendable {
    private let stopped = NIOLockedValueBox(false)
    private var thread: BackgroundThread?

    var isStopped: Bool { stopped.withLockedValue { $0 } }

    func start(name: String, _ body: @escaping @Sendable (Worker) -> Void) {
        stopped.withLockedValue { $0 = false }  // a stopped source can start again
        let t = BackgroundThread(name: name) { [self] in body(self) }
        thread = t
        t.start()
    }

    func stop() {
        stopped.withLockedValue { $0 = true }
        var spins = 0
        while thread?.isFinished == false && spins < 400 {
            usleep(5_000)
            spins += 1
        }
    }

    /// Sleeps up to `seconds` (monotonic clock), waking early when stopped. Returns false once stopped.
    func sleep(_ seconds: Double) -> Bool {
        sleep(until: .now() + .nanoseconds(Int64(max(0, seconds) * 1e9)))
    }

    /// Sleeps until `deadline` (monotonic clock), waking early when stopped. Returns false once stopped.
    func sleep(until deadline: NIODeadline) -> Bool {
        while NIODeadline.now() < deadline {
            if isStopped { return false }
            let left = Double((deadline - .now()).nanoseconds) / 1e9
            usleep(UInt32(min(0.05, max(0.001, left)) * 1e6))
        }
        return !isStopped
    }
}
