import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Something on the device that produces events (a camera pipeline, a device folder, ...).
/// The agent gives each event its identity, sequence number and time; a source says what
/// happened (`type`) and its own fields.
public struct SourceEvent: Sendable, Equatable {
    public var type: String
    public var fields: [String: JSONValue]
    /// An image that came with the event (a snapshot): published on its own topic, not in the event.
    public var image: SourceImage?

    public init(type: String, fields: [String: JSONValue] = [:], image: SourceImage? = nil) {
        self.type = type
        self.fields = fields
        self.image = image
    }
}

/// An image's bytes and what they are, recognised by their first bytes (not by the file's name).
public struct SourceImage: Sendable, Equatable {
    public var bytes: [UInt8]
    public var contentType: String

    public init(bytes: [UInt8], contentType: String) {
        self.bytes = bytes
        self.contentType = contentType
    }

    /// `image/jpeg` or `image/png` from the magic bytes at the start; nil for anything else.
    public static func contentType(of head: some Collection<UInt8>) -> String? {
        if head.starts(with: [0xFF, 0xD8, 0xFF]) { return "image/jpeg" }
        if head.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return "image/png" }
        return nil
    }
}

public typealias EventSink = @Sendable (SourceEvent) -> Void

/// What a running source is given: where its events go, the event loop its I/O and timers run on
/// (the agent's one group), the thread pool for blocking work (hashing a file), and whom to tell
/// that it is set up.
public struct SourceContext: Sendable {
    public var loop: any EventLoop
    public var threadPool: NIOThreadPool
    public var sink: EventSink
    /// Called once the source listens or watches (its supervisor reports it running).
    public var ready: @Sendable () -> Void

    public init(loop: any EventLoop, threadPool: NIOThreadPool, sink: @escaping EventSink, ready: @escaping @Sendable () -> Void = {}) {
        self.loop = loop
        self.threadPool = threadPool
        self.sink = sink
        self.ready = ready
    }
}

public protocol EventSource: Sendable {
    /// The configured name (unique per agent), e.g. "cam0".
    var name: String { get }
    /// The kind: simulated, socket, v4l2, directory.
    var kind: String { get }
    /// Produces events until its task is cancelled, then returns or throws `CancellationError`,
    /// having closed everything it opened. Throws a `SourceError` when it cannot run (its
    /// supervisor restarts it later).
    func run(_ context: SourceContext) async throws
    /// Counters for the status document (accepted, rejected by reason, ...).
    var counters: [String: Int] { get }
}

/// Why a source cannot run, with the configuration key to look at.
public struct SourceError: Error, Sendable, CustomStringConvertible, Equatable {
    public enum Reason: Sendable, Equatable {
        /// `sources[].path` or `.directory` names something of the wrong kind, or nothing.
        case badPath
        /// Listening or watching failed (permissions, a full inotify table).
        case system
        /// It stopped by itself (its socket or descriptor was closed under it).
        case ended
    }

    public let source: String
    public let reason: Reason
    public let message: String

    public init(_ source: String, _ reason: Reason, _ message: String) {
        self.source = source
        self.reason = reason
        self.message = message
    }

    public var description: String { "source \(source): \(message)" }
}

/// Counters shared by a source's runs and read by the status document.
public final class Counters: Sendable {
    private let box = NIOLockedValueBox<[String: Int]>([:])
    public init() {}
    public func add(_ key: String, _ n: Int = 1) { box.withLockedValue { $0[key, default: 0] += n } }
    public var all: [String: Int] { box.withLockedValue { $0 } }
}
