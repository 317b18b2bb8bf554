import NIOCore
import NIOPosix
import NIOSSL

// The SwiftNIO side: a TCP (optionally TLS) channel whose pipeline only translates between the
// wire and the session machine. Framing and decoding use the pure codec; encoding is done by the
// client core straight into one outbound buffer per flush.

/// What the decoder hands on: a packet, or word of a PUBLISH skipped as too large.
enum Inbound: Equatable {
    case packet(MQTTPacket)
    case droppedPublish(DroppedPublish)
}

/// Bytes → packets, enforcing our maximum packet size before buffering a body (`MQTTFrameReader`).
/// With `deliver`, each packet goes straight to it (the client core: no `NIOAny` box and cast per
/// packet); without, down the pipeline (`ByteToMessageDecoderVerifier` tests).
struct MQTTPacketDecoder: ByteToMessageDecoder {
    typealias InboundOut = Inbound
    let version: MQTTVersion
    var reader: MQTTFrameReader
    let deliver: ((Inbound) -> Void)?

    init(version: MQTTVersion, maxPacketSize: Int, deliver: ((Inbound) -> Void)? = nil) {
        self.version = version
        self.reader = MQTTFrameReader(maxPacketSize: maxPacketSize, version: version)
        self.deliver = deliver
    }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let inbound: Inbound
        switch try reader.next(from: &buffer) {
        case nil: return .needMoreData
        case .frame(let frame): inbound = .packet(try MQTTPacket.decode(frame, version: version))
        case .droppedPublish(let d): inbound = .droppedPublish(d)
        }
        if let deliver { deliver(inbound) } else { context.fireChannelRead(Self.wrapInboundOut(inbound)) }
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        // Whatever is left at EOF is an incomplete packet: drop it, the connection is gone anyway.
        while try decode(context: context, buffer: &buffer) == .continue {}
        buffer.moveReaderIndex(to: buffer.writerIndex)
        return .needMoreData
    }
}

/// Hands the connection's events to the client core: up, the end of a read, errors, down (and
/// decoded packets, when the decoder sends them down the pipeline rather than to the core).
final class MQTTConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = Inbound
    typealias OutboundOut = ByteBuffer

    private let core: ClientCore
    private let attempt: UInt64

    init(core: ClientCore, attempt: UInt64) {
        self.core = core
        self.attempt = attempt
    }

    func channelActive(context: ChannelHandlerContext) {
        core.transportUp(context, attempt: attempt)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .packet(let packet): core.packetReceived(packet, attempt: attempt)
        case .droppedPublish(let d): core.publishDropped(d, attempt: attempt)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        core.readBatchComplete(attempt: attempt)
    }

    func channelInactive(context: ChannelHandlerContext) {
        core.transportDown(attempt: attempt)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        core.transportError(error, attempt: attempt)
        context.close(promise: nil)
    }
}

enum Transport {
    /// Builds the TLS context once per client (certificate files are read here).
    static func makeTLSContext(_ config: MQTTConfig) throws -> NIOSSLContext {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = config.tlsVersion == .tls1_3 ? .tlsv13 : .tlsv12
        if let ca = config.caCerts {
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
            } catch {
                throw ProtocolConnectionError(
                    "cannot load ca_certs \"\(ca)\": \(error). Point ca_certs at a PEM file holding the broker's CA", reason: .tls)
            }
        }
        if let cert = config.clientCertificate, let key = config.clientKey {
            do {
                tls.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            } catch {
                throw ProtocolConnectionError(
                    "cannot load client certificate \"\(cert)\" / key \"\(key)\": \(error). Both must be PEM files", reason: .tls)
            }
        }
        if config.tlsInsecureSkipVerify { tls.certificateVerification = .none }
        do {
            return try NIOSSLContext(configuration: tls)
        } catch {
            throw ProtocolConnectionError("cannot set up TLS: \(error)", reason: .tls)
        }
    }

    /// The handlers between the socket and the core: TLS (if configured), the decoder, the core's
    /// handler. Tests put them on an `EmbeddedChannel`.
    static func addHandlers(
        to channel: Channel, serverName: String, config: MQTTConfig, tlsContext: NIOSSLContext?, version: MQTTVersion, core: ClientCore,
        attempt: UInt64
    ) throws {
        let sync = channel.pipeline.syncOperations
        if let tlsContext {
            // SNI and hostname verification need a name; an IP literal is checked against the
            // certificate's IP SANs instead (NIOSSL does that when the name is nil).
            let isIP = (try? SocketAddress(ipAddress: serverName, port: 0)) != nil
            try sync.addHandler(try NIOSSLClientHandler(context: tlsContext, serverHostname: isIP ? nil : serverName))
        }
        let deliver: (Inbound) -> Void = { inbound in
            switch inbound {
            case .packet(let packet): core.packetReceived(packet, attempt: attempt)
            case .droppedPublish(let d): core.publishDropped(d, attempt: attempt)
            }
        }
        if core.metrics != nil { try sync.addHandler(ReceivedBytesCounter(core: core)) }
        let decoder = MQTTPacketDecoder(version: version, maxPacketSize: config.incomingPacketLimit, deliver: deliver)
        try sync.addHandler(ByteToMessageHandler(decoder))
        try sync.addHandler(MQTTConnectionHandler(core: core, attempt: attempt))
    }

    /// The default dialer: TCP, with TLS when configured.
    static func connect(
        on loop: EventLoop, to broker: BrokerEndpoint, version: MQTTVersion, core: ClientCore, attempt: UInt64
    )
        -> EventLoopFuture<Channel>
    {
        let config = core.config
        let tlsContext = core.tlsContext
        let serverName = config.tlsServerName ?? broker.host
        return ClientBootstrap(group: loop)
            .connectTimeout(config.timeout.timeAmount)
            // Small packets go out at once (no Nagle delay on acks and PINGREQ); batching is ours.
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try addHandlers(
                        to: channel, serverName: serverName, config: config, tlsContext: tlsContext, version: version, core: core,
                        attempt: attempt)
                }
            }
            .connect(host: broker.host, port: broker.port)
    }
}
