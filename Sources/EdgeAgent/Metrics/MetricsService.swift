import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// The Prometheus endpoint (docs/METRICS.md): `GET /metrics` on `metrics.listen`, on the agent's
/// loop. A scrape first brings the client's metrics up to date (`reportMetrics`), then the
/// agent's (`AgentMetrics.collect`), then emits the registry's text. Nothing a client does can
/// hold the agent up: at most `metrics.max_connections` at once (more are closed at once), each
/// closed after `metrics.timeout` whatever its client does, one request per connection, a body
/// never read into memory. A port that cannot be had is logged and the agent runs on without it.
struct MetricsService: Service {
    let agent: Agent
    let export: PrometheusExport
    let metrics: AgentMetrics

    func run() async {
        let config = agent.config.metrics
        // (A service that returns ends the group: without an endpoint it waits for the shutdown.)
        guard let (host, port) = config.endpoint else {  // checked with the configuration
            try? await gracefulShutdown()
            return
        }
        let logger = agent.logger
        // A scrape less than a second old is served again: however often clients come, the
        // figures are gathered at most once a second.
        let recent = NIOLockedValueBox<(at: NIODeadline, text: String)?>(nil)
        let scrape: MetricsHTTPHandler.Scrape = { [agent, export, metrics] promise in
            if let r = recent.withLockedValue({ $0 }), NIODeadline.now() - r.at < .seconds(1) { return promise.succeed(r.text) }
            agent.mqtt.reportMetrics {
                metrics.collect(agent)
                let text = export.text()
                recent.withLockedValue { $0 = (.now(), text) }
                promise.succeed(text)
            }
        }
        let open = NIOLockedValueBox(0)
        let (limit, timeout) = (config.maxConnections, TimeAmount(seconds: config.timeout))
        let bootstrap = ServerBootstrap(group: agent.loop)
            .serverChannelOption(.backlog, value: 16)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                let admitted = open.withLockedValue { n in
                    guard n < limit else { return false }
                    n += 1
                    return true
                }
                guard admitted else {
                    logger.debug("metrics: a connection over metrics.max_connections (\(limit)) closed")
                    return channel.close()
                }
                let deadline = channel.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
                channel.closeFuture.whenComplete { _ in
                    deadline.cancel()
                    open.withLockedValue { $0 -= 1 }
                }
                return channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true)
                    try sync.addHandler(MetricsHTTPHandler(scrape: scrape))
                }
            }
        let server: any Channel
        do {
            server = try await bootstrap.bind(host: host, port: port).get()
        } catch {
            logger.error(
                "metrics: cannot listen on \(config.listen): \(error). The agent runs on without the endpoint; free the port or choose another (metrics.listen)"
            )
            try? await gracefulShutdown()
            return
        }
        logger.info("metrics: http://\(config.listen)/metrics")
        try? await gracefulShutdown()
        try? await server.close()
    }
}

/// One request per connection: `GET` or `HEAD` of `/metrics` (the scrape) or `/` (a pointer to
/// it); other paths 404, other methods 405. The answer closes the connection.
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    /// Fulfils the promise with the exposition text.
    typealias Scrape = @Sendable (EventLoopPromise<String>) -> Void

    private let scrape: Scrape
    private var head: HTTPRequestHead?
    private var answered = false

    init(scrape: @escaping Scrape) { self.scrape = scrape }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break  // not kept: the answer does not depend on it, and the timeout bounds it
        case .end:
            guard let head, !answered else { return }
            answered = true
            answer(head, context: context)
        }
    }

    private func answer(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
        guard head.method == .GET || head.method == .HEAD else {
            return send(.methodNotAllowed, "only GET and HEAD\n", head: head, extra: [("Allow", "GET, HEAD")], context: context)
        }
        switch path {
        case "/metrics":
            let promise = context.eventLoop.makePromise(of: String.self)
            scrape(promise)
            promise.futureResult.assumeIsolated().whenSuccess { [self] text in
                send(.ok, text, head: head, type: "text/plain; version=0.0.4; charset=utf-8", context: context)
            }
        case "/":
            send(.ok, "edge-agent: Prometheus metrics at /metrics\n", head: head, context: context)
        default:
            send(.notFound, "not found: the metrics are at /metrics\n", head: head, context: context)
        }
    }

    private func send(
        _ status: HTTPResponseStatus, _ body: String, head: HTTPRequestHead, type: String = "text/plain; charset=utf-8",
        extra: [(String, String)] = [], context: ChannelHandlerContext
    ) {
        var headers = HTTPHeaders([("Content-Type", type), ("Content-Length", "\(body.utf8.count)"), ("Connection", "close")])
        headers.add(contentsOf: extra)
        context.write(Self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if head.method != .HEAD {
            context.write(Self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        }
        let channel = context.channel
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}
