import FoundationEssentials
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A Unix domain socket where the vision pipeline writes one JSON object per line (many writers
/// at once). A line's `type` field names the event (default "external"); its other fields are
/// the event's fields. A line that is not a JSON object, or longer than `maxLineBytes`, is
/// rejected with a logged reason and counted; the source goes on. Bounded against a careless or
/// hostile writer: at most `maxConnections` writers at once (more are closed at once), and each
/// writer at most `maxLinesPerSecond` (a token bucket on the monotonic clock: one flooding writer
/// cannot crowd the others' events out of the queue and the store). What is logged of a line is
/// escaped.
public final class SocketSource: EventSource {
    public let name: String
    public let kind = "socket"
    public let path: String
    public let maxLineBytes: Int
    public let maxConnections: Int
    public let maxLinesPerSecond: Int
    private let counts = Counters()
    private let log: @Sendable (String) -> Void

    public init(
        name: String, path: String, maxLineBytes: Int = 65_536, maxConnections: Int = 64, maxLinesPerSecond: Int = 1000,
        log: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.name = name
        self.path = path
        self.maxLineBytes = maxLineBytes
        self.maxConnections = maxConnections
        self.maxLinesPerSecond = maxLinesPerSecond
        self.log = log
    }

    public var counters: [String: Int] { counts.all }

    /// Listens on the context's loop until cancelled; then closes the listener and every writer's
    /// connection and removes the socket file.
    public func run(_ context: SourceContext) async throws {
        // A socket file left by an earlier run is replaced; anything else at the path is not.
        var st = stat()
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else {
                throw SourceError(name, .badPath, "\(path) exists and is not a socket (sources[].path)")
            }
            unlink(path)
        }
        let (name, max, counts, log, sink) = (self.name, maxLineBytes, self.counts, self.log, context.sink)
        let (maxConnections, rate) = (self.maxConnections, maxLinesPerSecond)
        let writers = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])  // connected now
        let server: any Channel
        do {
            server = try await ServerBootstrap(group: context.loop)
                .serverChannelOption(.backlog, value: 64)
                .childChannelInitializer { ch in
                    let admitted = writers.withLockedValue { w -> Bool in
                        guard w.count < maxConnections else { return false }
                        w[ObjectIdentifier(ch)] = ch
                        return true
                    }
                    guard admitted else {
                        counts.add("rejected_connection_limit")
                        log("socket source \(name): refused a writer: \(maxConnections) are connected (max_connections)")
                        return ch.close()
                    }
                    counts.add("connections")
                    return ch.eventLoop.makeCompletedFuture {
                        try ch.pipeline.syncOperations.addHandler(
                            LineHandler(
                                source: name, maxLineBytes: max, maxLinesPerSecond: rate, counts: counts, log: log, sink: sink,
                                closed: { _ = writers.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(ch)) } }))
                    }
                }
                .bind(unixDomainSocketPath: path).get()
        } catch {
            throw SourceError(name, .system, "cannot listen on \(path): \(error) (sources[].path)")
        }
        chmod(path, 0o660)
        context.ready()
        await withTaskCancellationHandler {
            try? await server.closeFuture.get()
        } onCancel: {
            server.close(promise: nil)
        }
        for writer in writers.withLockedValue({ Array($0.values) }) { try? await writer.close() }
        unlink(path)
        try Task.checkCancellation()
        throw SourceError(name, .ended, "the listening socket \(path) was closed")
    }
}

/// One writer's connection: `LineFramer` cuts its lines, the token bucket bounds their rate,
/// `SocketLine.parse` reads each; refusals are counted per reason and logged escaped.
final class LineHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let source: String
    let counts: Counters
    let log: @Sendable (String) -> Void
    let sink: EventSink
    let closed: @Sendable () -> Void
    let maxLineBytes: Int
    /// Mutated only by `channelRead`/`channelInactive`, whose callbacks must not touch it.
    var framer: LineFramer
    // The token bucket: up to one second's worth of lines, refilled at the rate.
    let rate: Double
    var tokens: Double
    var refilled = NIODeadline.now()
    var droppedSinceLog = 0
    var loggedAt: NIODeadline?

    init(
        source: String, maxLineBytes: Int, maxLinesPerSecond: Int, counts: Counters, log: @escaping @Sendable (String) -> Void,
        sink: @escaping EventSink, closed: @escaping @Sendable () -> Void
    ) {
        self.source = source
        self.maxLineBytes = maxLineBytes
        self.framer = LineFramer(maxLineBytes: maxLineBytes)
        self.counts = counts
        self.log = log
        self.sink = sink
        self.closed = closed
        rate = Double(maxLinesPerSecond)
        tokens = rate
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        framer.feed(unwrapInboundIn(data).readableBytesView, piece)
    }

    func channelInactive(context: ChannelHandlerContext) {
        framer.finish(piece)
        closed()
    }

    private func piece(_ p: LineFramer.Piece) {
        switch p {
        case .tooLong:
            reject("too_large", "line longer than \(maxLineBytes) bytes (max_line_bytes)")
        case .line(let bytes):
            // A blank line costs no token; any other line does, before it is read.
            if SocketLine.isBlank(bytes) { return }
            guard withinRate() else { return }
            switch SocketLine.parse(bytes) {
            case .blank: return
            case .event(let type, let fields):
                counts.add("accepted")
                sink(SourceEvent(type: type, fields: fields))
            case .rejected(let reason, let message):
                reject(reason, message)
            }
        }
    }

    /// Takes a token for one line; false when the writer is over its rate: counted, and logged at
    /// most once a second with how many were dropped since.
    private func withinRate() -> Bool {
        let now = NIODeadline.now()
        tokens = min(rate, tokens + Double((now - refilled).nanoseconds) / 1e9 * rate)
        refilled = now
        guard tokens >= 1 else {
            counts.add("rejected_rate")
            droppedSinceLog += 1
            if loggedAt.map({ now - $0 >= .seconds(1) }) ?? true {
                log(
                    "socket source \(source): a writer is over \(Int(rate)) lines per second (max_lines_per_second): \(droppedSinceLog) lines dropped"
                )
                loggedAt = now
                droppedSinceLog = 0
            }
            return false
        }
        tokens -= 1
        return true
    }

    private func reject(_ reason: String, _ message: String) {
        counts.add("rejected_\(reason)")
        log("socket source \(source): rejected a line: \(message)")
    }
}
