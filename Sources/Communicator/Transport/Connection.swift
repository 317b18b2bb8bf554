import NIOCore
import NIOPosix
import NIOSSL

// The SwiftNIO side: a TCP (optionally TLS) channel whose pipeline only translates between the
// wire and the session machine. Cutting the bytes into packets is the pure codec's
// (`MQTTInboundStream`); encoding is done by the client core straight into one outbound buffer
// per flush.

/// The core's handler, the last in the pipeline: bytes in (cut into packets here, each handed
/// straight to the core: no `ByteToMessageHandler`, whose generic decode loop cost ~3,000
/// instructions a read, callgrind), and the connection's events: up, the end of a read, errors,
/// down.
final class MQTTConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let core: ClientCore
    private let attempt: UInt64
    private var stream: MQTTInboundStream
    /// A read is being cut into packets (a read that arrives meanwhile is appended and cut by
    /// the same loop), or the stream has failed or ended and further bytes are ignored.
    private var cutting = false
    private var stopped = false

    init(core: ClientCore, attempt: UInt64, version: MQTTVersion, maxPacketSize: Int) {
        self.core = core
        self.attempt = attempt
        self.stream = MQTTInboundStream(version: version, maxPacketSize: maxPacketSize)
    }

    func channelActive(context: ChannelHandlerContext) {
        core.transportUp(context, attempt: attempt)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = Self.unwrapInboundIn(data)
        core.bytesReceived &+= bytes.readableBytes
        guard !stopped else { return }
        stream.append(bytes)
        guard !cutting else { return }
        cutting = true
        defer { cutting = false }
        do {
            // Not after the channel went down within a packet's handling (`stopped`).
            while !stopped, let inbound = try stream.next() {
                switch inbound {
                case .packet(let packet): core.packetReceived(packet, attempt: attempt)
                case .droppedPublish(let d): core.publishDropped(d, attempt: attempt)
                }
            }
        } catch {
            stopped = true
            core.transportError(error, attempt: attempt)
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        core.readBatchComplete(attempt: attempt)
    }

    func channelInactive(context: ChannelHandlerContext) {
        // What is held is part of a packet: the connection that would have brought the rest is gone.
        stopped = true
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

    /// The handlers between the socket and the core: TLS (if configured), then the core's handler.
    /// Tests put them on an `EmbeddedChannel`.
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
        try sync.addHandler(
            MQTTConnectionHandler(core: core, attempt: attempt, version: version, maxPacketSize: config.incomingPacketLimit))
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
