import FoundationEssentials
import NIOCore
import NIOPosix

/// A Unix domain socket where the vision pipeline writes one JSON object per line (many writers
/// at once). A line's `type` field names the event (default "external"); its other fields are
/// the event's fields. A line that is not a JSON object, or longer than `maxLineBytes`, is
/// rejected with a logged reason and counted; the source goes on.
public final class SocketSource: EventSource, @unchecked Sendable {
    public let name: String
    public let kind = "socket"
    public let path: String
    public let maxLineBytes: Int
    private let counts = Counters()
    private let log: @Sendable (String) -> Void
    private var group: MultiThreadedEventLoopGroup?
    private var channel: Channel?

    public init(name: String, path: String, maxLineBytes: Int = 65_536, log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.name = name
        self.path = path
        self.maxLineBytes = maxLineBytes
        self.log = log
    }

    public var counters: [String: Int] { counts.all }

    public func start(_ sink: @escaping EventSink) throws {
        // A socket file left by an earlier run is replaced; anything else at the path is not.
        var st = stat()
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else {
                throw LightError(description: "socket source \(name): \(path) exists and is not a socket (sources[].path)")
            }
            unlink(path)
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let (name, max, counts, log) = (self.name, maxLineBytes, self.counts, self.log)
        do {
            channel = try ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 64)
                .childChannelInitializer { ch in
                    ch.eventLoop.makeCompletedFuture {
                        try ch.pipeline.syncOperations.addHandler(LineHandler(source: name, maxLineBytes: max, counts: counts, log: log, sink: sink))
                    }
                }
                .bind(unixDomainSocketPath: path).wait()
            chmod(path, 0o660)
            self.group = group
        } catch {
            try? group.syncShutdownGracefully()
            throw LightError(description: "socket source \(name): cannot listen on \(path): \(error)")
        }
    }

    public func stop() {
        guard let group else { return }
        try? channel?.close().wait()
        channel = nil
        try? group.syncShutdownGracefully()
        self.group = nil
        unlink(path)
    }
}

/// Splits a stream into lines; over-long lines are dropped up to their newline.
final class LineHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let source: String
    let maxLineBytes: Int
    let counts: Counters
    let log: @Sendable (String) -> Void
    let sink: EventSink
    var pending: [UInt8] = []
    var discarding = false

    init(source: String, maxLineBytes: Int, counts: Counters, log: @escaping @Sendable (String) -> Void, sink: @escaping EventSink) {
        self.source = source
        self.maxLineBytes = maxLineBytes
        self.counts = counts
        self.log = log
        self.sink = sink
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        for byte in buffer.readableBytesView {
            if byte == UInt8(ascii: "\n") {
                if discarding {
                    discarding = false
                } else {
                    line(pending)
                }
                pending.removeAll(keepingCapacity: true)
                continue
            }
            if discarding { continue }
            pending.append(byte)
            if pending.count > maxLineBytes {
                reject("too_large", "line longer than \(maxLineBytes) bytes (max_line_bytes)")
                pending.removeAll(keepingCapacity: true)
                discarding = true
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !pending.isEmpty && !discarding { line(pending) }  // a last line without newline
        pending.removeAll()
    }

    private func line(_ bytes: [UInt8]) {
        let trimmed = bytes.last == UInt8(ascii: "\r") ? Array(bytes.dropLast()) : bytes
        if trimmed.allSatisfy({ $0 == 32 || $0 == 9 }) { return }
        guard let value = JSONValue.parse(trimmed) else {
            reject("invalid_json", "not valid JSON: \(String(decoding: trimmed.prefix(80), as: UTF8.self))")
            return
        }
        guard case .object(var fields) = value else {
            reject("not_object", "a JSON value that is not an object")
            return
        }
        var type = "external"
        if let t = fields.removeValue(forKey: "type") {
            guard let s = t.stringValue, !s.isEmpty, s.count <= 64 else {
                reject("bad_type", "\"type\" must be a non-empty string of at most 64 characters")
                return
            }
            type = s
        }
        counts.add("accepted")
        sink(SourceEvent(type: type, fields: fields))
    }

    private func reject(_ reason: String, _ message: String) {
        counts.add("rejected_\(reason)")
        log("socket source \(source): rejected a line: \(message)")
    }
}
