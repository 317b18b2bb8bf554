import Logging
import NIOCore
import NIOEmbedded
import Testing

@testable import Communicator

/// The client core and its channel handler on `EmbeddedChannel`s: the whole driver (inbox, session
/// and connection machines, write batching, timers on the loop's clock) without a socket or a
/// broker. The test plays the broker by reading what the client wrote and writing packets back.
@Suite("Client driver on EmbeddedChannel")
struct ClientDriverTests {
    /// A core on an `EmbeddedEventLoop` whose dialer opens an `EmbeddedChannel` with the real handlers.
    struct Harness {
        let loop = EmbeddedEventLoop()
        let core: ClientCore
        let version: MQTTVersion

        /// `breaker`: put first in every link's pipeline (a write that closes the link, when armed).
        init(version: MQTTVersion = .v5_0, breaker: WriteBreaker? = nil, configure: (inout MQTTConfig) -> Void = { _ in }) throws {
            var config = MQTTConfig(
                brokerAddress: "broker.test", timeout: 5, keepalive: 10, reconnectInitialDelay: 1, clientID: .fixed("driver"),
                protocolVersion: version)
            configure(&config)
            self.version = version
            let loop = self.loop
            core = try ClientCore(
                config: config, clientID: "driver", logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() },
                dial: { loop, broker, version, core, attempt in
                    let channel = EmbeddedChannel(loop: loop as! EmbeddedEventLoop)
                    do {
                        try Transport.addHandlers(
                            to: channel, serverName: broker.host, config: core.config, tlsContext: nil, version: version, core: core,
                            attempt: attempt)
                        if let breaker { try channel.pipeline.syncOperations.addHandler(breaker, position: .first) }
                    } catch {
                        return loop.makeFailedFuture(error)
                    }
                    return channel.connect(to: try! SocketAddress(ipAddress: "127.0.0.1", port: broker.port)).map { channel }
                }, clock: { loop.now })
            core.attach(loop)
        }

        var channel: EmbeddedChannel? { core.channel as? EmbeddedChannel }

        /// Every packet the client wrote since the last call, and how many writes carried them (on
        /// `link`: by default the current one).
        func written(on link: EmbeddedChannel? = nil) throws -> (packets: [MQTTPacket], writes: Int) {
            guard let channel = link ?? channel else { return ([], 0) }
            var packets: [MQTTPacket] = []
            var writes = 0
            var reader = MQTTFrameReader(maxPacketSize: 1 << 20, version: version)
            while var bytes = try channel.readOutbound(as: ByteBuffer.self) {
                writes += 1
                while case .frame(let f)? = try reader.next(from: &bytes) { packets.append(try MQTTPacket.decode(f, version: version)) }
            }
            return (packets, writes)
        }

        /// Packets from the broker, in one read.
        func send(_ packets: MQTTPacket...) throws {
            var b = ByteBuffer()
            for p in packets { p.encode(version: version, into: &b) }
            try channel?.writeInbound(b)
        }

        /// Connects and answers CONNECT with a CONNACK.
        func connect(sessionPresent: Bool = false) throws -> MQTTPacket.Connect? {
            core.submit(.connect(.none))
            loop.run()
            guard case .connect(let c)? = try written().packets.first else { return nil }
            try send(.connack(.init(sessionPresent: sessionPresent, returnCode: 0)))
            loop.run()
            return c
        }

        func publish(_ topic: String, qos: QoS, done: @escaping @Sendable (Result<Void, any Error>) -> Void = { _ in }) {
            _ = core.submitPublish(.init(topic: topic, payload: ByteBuffer(string: "x"), qos: qos, retain: false), .done(done))
            loop.run()
        }
    }

    /// Fails and closes the link on a write once armed: what a socket write that hits a reset
    /// connection does, synchronously, inside the core's write.
    final class WriteBreaker: ChannelOutboundHandler, @unchecked Sendable {  // the embedded loop's one thread
        typealias OutboundIn = ByteBuffer
        var armed = false
        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            guard armed else { return context.write(data, promise: promise) }
            promise?.fail(ChannelError.ioOnClosedChannel)
            context.close(promise: nil)
        }
    }

    final class Results: @unchecked Sendable {  // written and read on the test's one thread (the embedded loop's)
        var all: [Result<Void, any Error>] = []
        func add(_ r: Result<Void, any Error>) { all.append(r) }
    }

    @Test("CONNECT when the channel comes up, connected on CONNACK; a QoS 1 publish completes on its PUBACK, not before")
    func connectAndPublish() throws {
        let h = try Harness()
        let connect = try #require(try h.connect())
        #expect(connect.clientID == "driver" && connect.keepAliveSeconds == 10)
        #expect(h.core.snapshot.state == .connected)
        let results = Results()
        h.publish("a/b", qos: .atLeastOnce) { results.add($0) }
        guard case .publish(let p)? = try h.written().packets.first, let id = p.packetID else {
            Issue.record("no PUBLISH")
            return
        }
        #expect(p.topic == "a/b" && results.all.isEmpty)
        try h.send(.ack(.init(.puback, packetID: id)))
        #expect(results.all.count == 1 && (try? results.all[0].get()) != nil)
    }

    @Test("the packets one read causes go out in one write: three QoS 1 messages in, three PUBACKs in one buffer")
    func oneWritePerRead() throws {
        let h = try Harness()
        _ = try h.connect()
        _ = try h.written()
        let messages = (1...3).map { i -> MQTTPacket in
            var p = MQTTPacket.Publish(topic: "cmd", payload: ByteBuffer(string: "\(i)"), qos: .atLeastOnce, retain: false)
            p.packetID = UInt16(i)
            return .publish(p)
        }
        try h.send(messages[0], messages[1], messages[2])
        let out = try h.written()
        #expect(out.packets == (1...3).map { .ack(.init(.puback, packetID: UInt16($0))) } && out.writes == 1, "\(out)")
    }

    @Test(
        "keep-alive on the loop's clock: PINGREQ after 10 s of silence; no PINGRESP within keepalive × 1.5, the link is closed and, after the back-off, dialled again"
    )
    func keepAlive() throws {
        let h = try Harness()
        _ = try h.connect()
        _ = try h.written()
        h.loop.advanceTime(by: .seconds(9))
        #expect(try h.written().packets.isEmpty, "nothing before the keep-alive is due")
        h.loop.advanceTime(by: .seconds(2))
        #expect(try h.written().packets == [.pingreq])
        let first = h.channel
        // Dead keepalive × heartbeat_check_ratio (0.5) after the PINGREQ, at 15 s: stepped in 100 ms,
        // so the state is seen before the back-off (1 s ± 20 %) ends.
        h.loop.advanceTime(by: .seconds(3))
        #expect(first?.isActive == true, "not dead before the PINGREQ had its time")
        for _ in 0..<30 where first?.isActive == true { h.loop.advanceTime(by: .milliseconds(100)) }
        #expect(first?.isActive == false)
        guard case .reconnecting = h.core.snapshot.state else {
            Issue.record("state \(h.core.snapshot.state)")
            return
        }
        h.loop.advanceTime(by: .seconds(2))  // the back-off: 1 s, jittered
        #expect(h.channel != nil && h.channel !== first && h.core.snapshot.state == .connecting)
        guard case .connect? = try h.written().packets.first else {
            Issue.record("no CONNECT on the new link")
            return
        }
        #expect(h.core.snapshot.lastError?.reason == .keepAliveTimeout, "\(String(describing: h.core.snapshot.lastError))")
    }

    @Test("a QoS 1 message unacknowledged when the link drops is sent again, with DUP, on the next link after the back-off")
    func resendOnNextLink() throws {
        let h = try Harness { $0.cleanStart = false }
        _ = try h.connect()
        h.publish("keep", qos: .atLeastOnce)
        guard case .publish(let p)? = try h.written().packets.first else {
            Issue.record("no PUBLISH")
            return
        }
        let first = try #require(h.channel)
        try first.close().wait()
        h.loop.run()
        #expect(h.channel == nil)
        h.loop.advanceTime(by: .seconds(3))  // the back-off: 1 s, jittered
        let second = try #require(h.channel, "no second link after the back-off")
        #expect(second !== first)
        guard case .connect(let c)? = try h.written().packets.first else {
            Issue.record("no CONNECT")
            return
        }
        #expect(!c.cleanStart)
        try h.send(.connack(.init(sessionPresent: true, returnCode: 0)))
        guard case .publish(let again)? = try h.written().packets.first else {
            Issue.record("no resend")
            return
        }
        #expect(again.dup && again.packetID == p.packetID && again.topic == "keep")
    }

    @Test("5.0: a malformed packet from the broker gets DISCONNECT 0x81 before the link is closed")
    func malformedPacket() throws {
        let h = try Harness()
        _ = try h.connect()
        _ = try h.written()
        let link = try #require(h.channel)
        // A PUBACK whose remaining length says 1: too short for a packet identifier.
        try link.writeInbound(ByteBuffer(bytes: [0x40, 0x01, 0x00]))
        #expect(!link.isActive && h.channel == nil)
        let out = try h.written(on: link)
        guard out.packets.count == 1, case .disconnect(let d) = out.packets[0] else {
            Issue.record("not one DISCONNECT: \(out)")
            return
        }
        #expect(ReasonCode(d.reasonCode) == .malformedPacket && d.properties.reasonString != nil, "\(d)")
        #expect(h.core.snapshot.lastError?.reason == .protocolViolation, "\(String(describing: h.core.snapshot.lastError))")
    }

    @Test(
        "a publish made on the loop goes to the session at once, but behind what waits in the inbox: queued before a drain, or made while a drain hands its commands over"
    )
    func publishOnLoopKeepsOrder() throws {
        let h = try Harness()
        _ = try h.connect()
        _ = try h.written()
        @Sendable func publish(_ topic: String) {
            _ = h.core.submitPublish(.init(topic: topic, payload: ByteBuffer(string: "x"), qos: .atLeastOnce, retain: false), .none)
        }
        publish("direct")  // the test's thread is the embedded loop's: nothing queued, so no drain needed
        #expect(try h.written().packets.map(\.publishTopic) == ["direct"])
        // A command waits in the inbox (its drain is scheduled, not run): a publish made now queues
        // behind it; one made by the probe while the drain runs queues behind "queued".
        h.core.submit(.probe({ publish("in-drain") }))
        publish("queued")
        #expect(try h.written().packets.isEmpty, "nothing before the drain runs")
        h.loop.run()
        #expect(try h.written().packets.map(\.publishTopic) == ["queued", "in-drain"])
    }

    @Test(
        "a publisher driven by its QoS 0 completions on the loop: each write's completion publishes the next, and the running write loop sends it (the stack stays flat over 2,000 messages)"
    )
    func completionDrivenPublisher() throws {
        let h = try Harness { $0.publishQueueMaxsize = 2 }
        _ = try h.connect()
        _ = try h.written()
        final class Chain: @unchecked Sendable {  // the embedded loop's one thread
            var completed = 0
            var lowest = UInt.max
            var highest = UInt.min
        }
        let chain = Chain()
        let n = 2_000
        @Sendable func next() {
            let p = MQTTPacket.Publish(topic: "chain", payload: ByteBuffer(string: "x"), qos: .atMostOnce, retain: false)
            let accepted = h.core.submitPublish(
                p,
                .done({ result in
                    var marker = 0
                    let depth = withUnsafeMutablePointer(to: &marker) { UInt(bitPattern: $0) }
                    chain.lowest = min(chain.lowest, depth)
                    chain.highest = max(chain.highest, depth)
                    guard case .success = result else { return }
                    chain.completed += 1
                    if chain.completed < n { next() }
                }))
            #expect(accepted)
        }
        next()
        h.loop.run()
        #expect(chain.completed == n)
        let out = try h.written()
        #expect(out.packets.count == n && out.writes == n)
        // A nested write per message would grow the stack by its frames each time: hundreds of KB.
        #expect(chain.highest - chain.lowest < 16 * 1024, "stack spread \(chain.highest - chain.lowest) bytes")
    }
    @Test(
        "a write that closes the link as it fails: the QoS 0 publish in it fails with the connection, the core reconnects (no overlapping access to the batch)"
    )
    func writeClosesLink() throws {
        let breaker = WriteBreaker()
        let h = try Harness(breaker: breaker)
        _ = try h.connect()
        _ = try h.written()
        breaker.armed = true
        let results = Results()
        h.publish("lost", qos: .atMostOnce) { results.add($0) }
        #expect(results.all.count == 1)
        if case .failure(let e as ProtocolConnectionError)? = results.all.first {
            #expect(e.reason == .connectionLost, "\(e)")
        } else {
            Issue.record("not a connection failure: \(results.all)")
        }
        guard case .reconnecting = h.core.snapshot.state else {
            Issue.record("state \(h.core.snapshot.state)")
            return
        }
    }
}

extension MQTTPacket {
    fileprivate var publishTopic: String? {
        if case .publish(let p) = self { return p.topic }
        return nil
    }
}
