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
    /// The stream between reads. `.cutting`: a read is being cut into packets, and holds what
    /// arrives meanwhile (a read from within a packet's handling), which the same loop cuts next;
    /// `.stopped`: the stream failed or the link went down, further bytes are ignored. (One field,
    /// read once a packet: each access to a field of a class is a dynamic exclusivity check.)
    private enum Input {
        case idle(MQTTInboundStream)
        case cutting(arrived: ByteBuffer?)
        case stopped
    }
    private var input: Input

    init(core: ClientCore, attempt: UInt64, version: MQTTVersion, maxPacketSize: Int) {
        self.core = core
        self.attempt = attempt
        self.input = .idle(MQTTInboundStream(version: version, maxPacketSize: maxPacketSize))
    }

    func channelActive(context: ChannelHandlerContext) {
        core.transportUp(context, attempt: attempt)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = Self.unwrapInboundIn(data)
        core.bytesReceived &+= bytes.readableBytes
        var stream: MQTTInboundStream
        switch input {
        case .idle(let s): stream = s
        case .cutting(nil):
            input = .cutting(arrived: bytes)
            return
        case .cutting(var arrived?):
            arrived.writeImmutableBuffer(bytes)
            input = .cutting(arrived: arrived)
            return
        case .stopped: return
        }
        input = .cutting(arrived: nil)  // the local `stream` now holds the only reference to its bytes
        stream.append(bytes)
        do {
            while let inbound = try stream.next() {
                switch inbound {
                case .packet(let packet): core.packetReceived(packet, attempt: attempt)
                case .droppedPublish(let d): core.publishDropped(d, attempt: attempt)
                }
                switch input {
                case .cutting(nil): continue
                case .cutting(let arrived?):
                    stream.append(arrived)
                    input = .cutting(arrived: nil)
                case .stopped, .idle: return  // the link went down while the packet was handled
                }
            }
            input = .idle(stream)
        } catch {
            input = .stopped
            core.transportError(error, attempt: attempt)
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        core.readBatchComplete(attempt: attempt)
    }

    func channelInactive(context: ChannelHandlerContext) {
        // What is held is part of a packet: the connection that would have brought the rest is gone.
        input = .stopped
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
