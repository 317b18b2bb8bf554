import NIOCore
import Testing

@testable import Communicator

/// The session state machine driven by hand: events in, actions out, no sockets, no clock.
struct SessionDriver {
    typealias Machine = SessionMachine<Int>
    var machine: Machine
    var now: UInt64 = 1_000_000_000
    var actions: [Machine.Action] = []

    init(_ options: Machine.Options = .init(clientID: "test")) {
        machine = Machine(options: options)
    }

    /// Runs `body` and returns the actions it produced.
    mutating func step(_ body: (inout Machine, UInt64, inout [Machine.Action]) -> Void) -> [Machine.Action] {
        var out: [Machine.Action] = []
        body(&machine, now, &out)
        return out
    }

    mutating func connect(sessionPresent: Bool = false, properties: MQTTProperties = .init()) -> [Machine.Action] {
        _ = step { m, n, a in m.connectionEstablished(now: n, into: &a) }
        return receive(.connack(.init(sessionPresent: sessionPresent, returnCode: 0, properties: properties)))
    }

    mutating func receive(_ p: MQTTPacket) -> [Machine.Action] { step { m, n, a in m.received(p, now: n, into: &a) } }

    mutating func publish(_ topic: String, qos: QoS, token: Int) -> [Machine.Action] {
        step { m, n, a in
            m.publish(.init(topic: topic, payload: ByteBuffer(string: "x"), qos: qos), token: token, now: n, into: &a)
        }
    }
}

extension Array where Element == SessionMachine<Int>.Action {
    var sent: [MQTTPacket] { compactMap { if case .send(let p) = $0 { p } else { nil } } }
    var delivered: [MQTTPacket.Publish] { compactMap { if case .deliver(let p) = $0 { p } else { nil } } }
    var completedTokens: [Int] {
        compactMap {
            switch $0 {
            case .publishCompleted(let t, .success, _), .qos0Sent(let t): t
            default: nil
            }
        }
    }
    var failures: [SessionMachine<Int>.Failure] {
        compactMap { if case .publishCompleted(_, .failure(let f), _) = $0 { f } else { nil } }
    }
    var closed: SessionMachine<Int>.Failure?? {
        for a in self { if case .close(let f) = a { return .some(f) } }
        return nil
    }
}

extension MQTTPacket {
    var publishID: UInt16? { if case .publish(let p) = self { p.packetID } else { nil } }
    var publishDup: Bool? { if case .publish(let p) = self { p.dup } else { nil } }
    var ack: Ack? { if case .ack(let a) = self { a } else { nil } }
}

@Suite("Session state machine")
struct SessionMachineTests {
    @Test("CONNECT carries the options; CONNACK accepted reports the granted limits")
    func connect() {
        var props = MQTTProperties()
        props.receiveMaximum = 7
        props.serverKeepAlive = 12
        var d = SessionDriver(.init(version: .v5_0, clientID: "cam", cleanStart: false, keepAliveSeconds: 30, sessionExpirySeconds: 3600))
        let first = d.step { m, n, a in m.connectionEstablished(now: n, into: &a) }
        guard case .connect(let c) = first.sent.first else {
            Issue.record("no CONNECT")
            return
        }
        #expect(c.clientID == "cam" && !c.cleanStart && c.keepAliveSeconds == 30 && c.properties.sessionExpiryInterval == 3600)
        let acts = d.receive(.connack(.init(sessionPresent: true, returnCode: 0, properties: props)))
        let info = acts.compactMap { if case .connected(let i) = $0 { i } else { nil } }.first
        #expect(info?.receiveMaximum == 7)
        #expect(info?.keepAliveSeconds == 12)  // Server Keep Alive replaces ours
        #expect(d.machine.window == 7)
    }

    @Test("refused CONNACK closes with the code")
    func refused() {
        var d = SessionDriver()
        _ = d.step { m, n, a in m.connectionEstablished(now: n, into: &a) }
        let acts = d.receive(.connack(.init(sessionPresent: false, returnCode: 0x86)))
        #expect(acts.closed == .some(.connectionRefused(code: 0x86, properties: .init())))
    }

    @Test("a packet other than CONNACK first is a protocol violation")
    func connackFirst() {
        var d = SessionDriver()
        _ = d.step { m, n, a in m.connectionEstablished(now: n, into: &a) }
        let acts = d.receive(.pingresp)
        guard case .some(.some(.protocolViolation(let what, _))) = acts.closed else {
            Issue.record("not closed")
            return
        }
        #expect(what.contains("expected CONNACK"))
    }

    @Test("packet identifiers: non-zero, unique while in use, wrap 65535 → 1")
    func identifiers() {
        var d = SessionDriver(.init(version: .v3_1_1, clientID: "t", maxInflight: 65_535, queueLimit: 100_000))
        _ = d.connect()
        var seen = Set<UInt16>()
        // Keep id 1 in flight forever; cycle the rest.
        let first = d.publish("t", qos: .atLeastOnce, token: 0).sent.first!.publishID!
        #expect(first == 1)
        seen.insert(first)
        for i in 1..<70_000 {
            let id = d.publish("t", qos: .atLeastOnce, token: i).sent.first!.publishID!
            #expect(id != 0 && id != 1)
            _ = d.receive(.ack(.init(.puback, packetID: id)))
            seen.insert(id)
        }
        #expect(seen.count == 65_535)
    }

    @Test("the in-flight window holds the rest back, in order")
    func window() {
        var d = SessionDriver(.init(version: .v3_1_1, clientID: "t"))  // 3.1.1 default window 20
        _ = d.connect()
        var sentIDs: [UInt16] = []
        for i in 0..<25 { sentIDs += d.publish("t", qos: .exactlyOnce, token: i).sent.compactMap(\.publishID) }
        #expect(sentIDs.count == 20)
        #expect(d.machine.queuedCount == 5)
        // PUBREC → PUBREL; the slot frees only at PUBCOMP.
        let rec = d.receive(.ack(.init(.pubrec, packetID: sentIDs[0])))
        #expect(rec.sent.first?.ack == .init(.pubrel, packetID: sentIDs[0]))
        #expect(rec.sent.count == 1)
        let comp = d.receive(.ack(.init(.pubcomp, packetID: sentIDs[0])))
        #expect(comp.completedTokens == [0])
        #expect(comp.sent.compactMap(\.publishID).count == 1)
        #expect(d.machine.queuedCount == 4)
    }

    @Test("QoS 0 is not held by the window, but keeps its place behind queued messages")
    func qos0() {
        var d = SessionDriver(.init(version: .v3_1_1, clientID: "t", maxInflight: 1))
        _ = d.connect()
        _ = d.publish("t", qos: .atLeastOnce, token: 1)  // in flight: the window is full
        #expect(d.publish("t", qos: .atMostOnce, token: 2).sent.count == 1)  // goes out anyway
        #expect(d.publish("t", qos: .atLeastOnce, token: 3).sent.isEmpty)  // waits for the window
        #expect(d.publish("t", qos: .atMostOnce, token: 4).sent.isEmpty)  // waits behind it, in order
        let acked = d.receive(.ack(.init(.puback, packetID: 1)))
        #expect(acked.completedTokens == [1, 4])
        #expect(acked.sent.count == 2)
    }

    @Test("resume with session present: unacknowledged PUBLISH again with DUP, PUBREL for flows past PUBREC, in order")
    func resumeWithSession() {
        var d = SessionDriver(.init(version: .v3_1_1, clientID: "t"))
        _ = d.connect()
        _ = d.publish("a", qos: .atLeastOnce, token: 1)  // id 1
        _ = d.publish("b", qos: .exactlyOnce, token: 2)  // id 2
        _ = d.publish("c", qos: .exactlyOnce, token: 3)  // id 3
        _ = d.receive(.ack(.init(.pubrec, packetID: 2)))  // flow 2 now waits for PUBCOMP
        _ = d.step { m, _, a in m.connectionLost(into: &a) }
        let acts = d.connect(sessionPresent: true)
        let sent = acts.sent
        #expect(sent.count == 3)
        #expect(sent[0].publishID == 1 && sent[0].publishDup == true)
        #expect(sent[1].ack == .init(.pubrel, packetID: 2))
        #expect(sent[2].publishID == 3 && sent[2].publishDup == true)
    }

    @Test(
        "a packet the decoder refuses: 5.0 DISCONNECT packet too large or malformed packet, with the reason, then close; 3.1.1: close only")
    func decodeFailed() {
        for (error, code) in [
            (MQTTDecodeError.packetTooLarge(size: 9000, limit: 4096), ReasonCode.packetTooLarge),
            (.malformed("bad flags"), .malformedPacket),
        ] {
            var d = SessionDriver(.init(version: .v5_0, clientID: "t"))
            _ = d.connect()
            let acts = d.step { m, _, a in m.decodeFailed(error, into: &a) }
            guard case .disconnect(let dis)? = acts.sent.first else {
                Issue.record("no DISCONNECT: \(acts)")
                continue
            }
            #expect(ReasonCode(dis.reasonCode) == code)
            #expect(dis.properties.reasonString == "\(error)")
            #expect(acts.closed != nil)
        }
        var old = SessionDriver(.init(version: .v3_1_1, clientID: "t"))
        _ = old.connect()
        let acts = old.step { m, _, a in m.decodeFailed(.malformed("x"), into: &a) }
        #expect(acts.sent.isEmpty && acts.closed != nil)
    }

    /// Counts its calls and puts "prepared:" before payloads of topic "fix".
    final class CountingPreparer: MQTTPublishPreparer, @unchecked Sendable {
        private(set) var calls = 0
        func prepare(topic: String, payload: ByteBuffer) -> ByteBuffer? {
            calls += 1
            guard topic == "fix" else { return nil }
            return ByteBuffer(string: "prepared:" + String(buffer: payload))
        }
    }

    @Test(
        "a preparer sees each message once, at its first transmission (queued while offline too); a DUP resend carries the prepared payload; a restored flow is prepared"
    )
    func preparerAtFirstSend() {
        let preparer = CountingPreparer()
        var d = SessionDriver(.init(version: .v3_1_1, clientID: "t", preparer: preparer))
        _ = d.publish("fix", qos: .atLeastOnce, token: 1)  // queued while offline: not yet prepared
        #expect(preparer.calls == 0)
        _ = d.connect()
        let first = d.step { m, n, a in m.sendQueued(now: n, into: &a) }  // after the owner's subscriptions
        #expect(preparer.calls == 1)
        let sent1 = first.sent.compactMap { if case .publish(let p) = $0 { String(buffer: p.payload) } else { nil } }
        #expect(sent1 == ["prepared:x"])
        let other = d.publish("other", qos: .atLeastOnce, token: 2)
        #expect(
            other.sent.compactMap { if case .publish(let p) = $0 { String(buffer: p.payload) } else { nil } } == ["x"],
            "nil leaves it as it is")
        _ = d.step { m, _, a in m.connectionLost(into: &a) }
        let again = d.connect(sessionPresent: true)
        let resent = again.sent.compactMap { if case .publish(let p) = $0 { (p.dup, String(buffer: p.payload)) } else { nil } }
        #expect(resent.map(\.1) == ["prepared:x", "x"] && resent.allSatisfy(\.0), "DUP resends carry what went first")
        #expect(preparer.calls == 2, "not called again on resends: \(preparer.calls)")
        // A flow from durable storage (an earlier run) goes through the preparer before its resend.
        var e = SessionDriver(.init(version: .v3_1_1, clientID: "t", preparer: preparer))
        var stored = MQTTPacket.Publish(topic: "fix", payload: ByteBuffer(string: "y"), qos: .exactlyOnce)
        stored.packetID = 9
        e.machine.restoreOutgoing(stored, released: false, token: 3)
        let restored = e.connect(sessionPresent: true).sent.compactMap {
            if case .publish(let p) = $0 { String(buffer: p.payload) } else { nil }
        }
        #expect(restored == ["prepared:y"])
    }

    @Test("a preparer's larger payload is held to the broker's Maximum Packet Size like any other")
    func preparerWithinBrokerLimits() {
        var props = MQTTProperties()
        props.maximumPacketSize = 15
        var d = SessionDriver(.init(version: .v5_0, clientID: "t", preparer: CountingPreparer()))
        _ = d.connect(properties: props)
        let acts = d.publish("fix", qos: .atLeastOnce, token: 1)  // an 11-byte packet, 20 after preparing
        #expect(acts.sent.isEmpty)
        #expect(acts.failures.count == 1, "\(acts)")
        if case .brokerLimit? = acts.failures.first {} else { Issue.record("not a broker limit: \(acts.failures)") }
    }

    @Test("resume without session: every unfinished flow sent again as a new publication, in order")
    func resumeWithoutSession() {
        var d = SessionDriver(.init(version: .v3_1_1, clientID: "t"))
        _ = d.connect()
        _ = d.publish("a", qos: .atLeastOnce, token: 1)
        _ = d.publish("b", qos: .exactlyOnce, token: 2)
        _ = d.receive(.ack(.init(.pubrec, packetID: 2)))
        _ = d.step { m, _, a in m.connectionLost(into: &a) }
        let acts = d.connect(sessionPresent: false)
        // The broker lost the session: QoS 2 past PUBREC too (mosquitto releases at PUBREL).
        #expect(acts.sent.map(\.publishID) == [1, 2])
        #expect(acts.sent.allSatisfy { $0.publishDup == false })
        #expect(acts.completedTokens.isEmpty)
        // The QoS 2 flow starts over: PUBREC → PUBREL → PUBCOMP.
        #expect(d.receive(.ack(.init(.pubrec, packetID: 2))).sent == [.ack(.init(.pubrel, packetID: 2))])
        #expect(d.receive(.ack(.init(.pubcomp, packetID: 2))).completedTokens == [2])
    }

    @Test("incoming QoS 2: delivered once though the PUBLISH repeats; PUBREL answered with PUBCOMP")
    func incomingQoS2() {
        var d = SessionDriver(.init(version: .v5_0, clientID: "t"))
        _ = d.connect()
        let p = MQTTPacket.Publish(topic: "t", payload: ByteBuffer(string: "once"), qos: .exactlyOnce, packetID: 9)
        let first = d.receive(.publish(p))
        #expect(first.delivered.count == 1)
        #expect(first.sent.first?.ack == .init(.pubrec, packetID: 9))
        var dup = p
        dup.dup = true
        let again = d.receive(.publish(dup))
        #expect(again.delivered.isEmpty)
        #expect(again.sent.first?.ack == .init(.pubrec, packetID: 9))
        let rel = d.receive(.ack(.init(.pubrel, packetID: 9)))
        #expect(rel.sent.first?.ack == .init(.pubcomp, packetID: 9))
        // The identifier is free again: a new message with it is a new delivery.
        #expect(d.receive(.publish(p)).delivered.count == 1)
        // PUBREL for an unknown identifier: 5.0 answers 0x92.
        #expect(d.receive(.ack(.init(.pubrel, packetID: 77))).sent.first?.ack == .init(.pubcomp, packetID: 77, reasonCode: 0x92))
    }

    @Test("an incoming PUBLISH skipped as too large (3.1.1) is acknowledged, not delivered, and reported")
    func droppedIncoming() {
        var d = SessionDriver(.init(version: .v3_1_1, clientID: "t", maxPacketSize: 1024))
        _ = d.connect()
        let q1 = DroppedPublish(topic: "cmd/ping", qos: .atLeastOnce, packetID: 5, size: 100_000_000, limit: 1024)
        let a1 = d.step { m, n, a in m.droppedPublish(q1, now: n, into: &a) }
        #expect(a1.delivered.isEmpty)
        #expect(a1.sent == [.ack(.init(.puback, packetID: 5))])
        #expect(a1.contains { if case .droppedIncoming(let x) = $0 { x == q1 } else { false } })
        // QoS 2: PUBREC now, PUBCOMP on PUBREL, as for a delivered one.
        let q2 = DroppedPublish(topic: "cmd/ping", qos: .exactlyOnce, packetID: 6, size: 5000, limit: 1024)
        #expect(d.step { m, n, a in m.droppedPublish(q2, now: n, into: &a) }.sent == [.ack(.init(.pubrec, packetID: 6))])
        #expect(d.receive(.ack(.init(.pubrel, packetID: 6))).sent == [.ack(.init(.pubcomp, packetID: 6))])
        // QoS 0: nothing to send; the link stays up.
        let q0 = DroppedPublish(topic: "cmd/ping", qos: .atMostOnce, packetID: nil, size: 5000, limit: 1024)
        let a0 = d.step { m, n, a in m.droppedPublish(q0, now: n, into: &a) }
        #expect(a0.sent.isEmpty && a0.closed == nil)
        #expect(d.machine.isConnected)
    }

    @Test("incoming QoS 1: delivered, then PUBACK with the same identifier")
    func incomingQoS1() {
        var d = SessionDriver(.init(version: .v3_1_1, clientID: "t"))
        _ = d.connect()
        let acts = d.receive(.publish(.init(topic: "t", payload: ByteBuffer(), qos: .atLeastOnce, packetID: 5)))
        #expect(acts.delivered.count == 1)
        #expect(acts.sent.first?.ack == .init(.puback, packetID: 5))
    }

    @Test("5.0 PUBREC with a failure code ends the flow without PUBREL")
    func pubrecFailure() {
        var d = SessionDriver(.init(version: .v5_0, clientID: "t"))
        _ = d.connect()
        _ = d.publish("t", qos: .exactlyOnce, token: 1)
        let acts = d.receive(.ack(.init(.pubrec, packetID: 1, reasonCode: 0x87)))
        #expect(acts.sent.isEmpty)
        #expect(acts.failures == [.rejected(packet: .pubrec, code: 0x87, reason: nil)])
        #expect(d.machine.inflightCount == 0)
    }

    @Test("keep-alive: PINGREQ after silence, dead link after keepalive × ratio without answer")
    func keepAlive() {
        var d = SessionDriver(.init(version: .v3_1_1, clientID: "t", keepAliveSeconds: 10, heartbeatCheckRatio: 0.5))
        _ = d.connect()
        d.now += 9_000_000_000
        #expect(d.step { m, n, a in m.tick(now: n, into: &a) }.sent.isEmpty)
        d.now += 1_000_000_000
        #expect(d.step { m, n, a in m.tick(now: n, into: &a) }.sent == [.pingreq])
        d.now += 4_000_000_000
        #expect(d.step { m, n, a in m.tick(now: n, into: &a) }.closed == nil)
        // Answered in time: no close; next ping after another keep-alive of silence.
        _ = d.receive(.pingresp)
        d.now += 2_000_000_000
        #expect(d.step { m, n, a in m.tick(now: n, into: &a) }.closed == nil)
        d.now += 8_000_000_000
        #expect(d.step { m, n, a in m.tick(now: n, into: &a) }.sent == [.pingreq])
        d.now += 5_000_000_000
        let acts = d.step { m, n, a in m.tick(now: n, into: &a) }
        guard case .some(.some(.keepAliveTimeout)) = acts.closed else {
            Issue.record("no close: \(acts)")
            return
        }
    }

    @Test("keep-alive 0 never pings")
    func keepAliveOff() {
        var d = SessionDriver(.init(version: .v3_1_1, clientID: "t", keepAliveSeconds: 0))
        _ = d.connect()
        d.now += 1_000_000_000_000
        #expect(d.step { m, n, a in m.tick(now: n, into: &a) }.isEmpty)
    }

    @Test("queue bound: a full queue refuses the publish")
    func queueFull() {
        var d = SessionDriver(.init(version: .v3_1_1, clientID: "t", queueLimit: 3))
        for i in 0..<3 { #expect(d.publish("t", qos: .atLeastOnce, token: i).isEmpty) }
        let acts = d.publish("t", qos: .atLeastOnce, token: 3)
        #expect(acts.failures.first == .queueFull(limit: 3))
        // Queued messages leave in order once connected.
        let sent = d.connect().sent
        #expect(sent.isEmpty)  // the owner calls sendQueued after restoring subscriptions
        let queued = d.step { m, n, a in m.sendQueued(now: n, into: &a) }
        #expect(queued.sent.compactMap(\.publishID) == [1, 2, 3])
    }

    @Test("broker limits: Maximum Packet Size, Maximum QoS and Retain Available refuse locally")
    func brokerLimits() {
        var props = MQTTProperties()
        props.maximumPacketSize = 15
        props.maximumQoS = 1
        props.retainAvailable = 0
        var d = SessionDriver(.init(version: .v5_0, clientID: "t"))
        _ = d.connect(properties: props)
        let big = d.step { m, n, a in
            m.publish(.init(topic: "t", payload: ByteBuffer(repeating: 0, count: 100), qos: .atLeastOnce), token: 1, now: n, into: &a)
        }
        #expect(big.failures.count == 1)
        #expect(d.publish("t", qos: .exactlyOnce, token: 2).failures.count == 1)
        let retained = d.step { m, n, a in
            m.publish(.init(topic: "t", payload: ByteBuffer(), qos: .atMostOnce, retain: true), token: 3, now: n, into: &a)
        }
        #expect(retained.failures.count == 1)
        #expect(d.machine.isConnected)
        // This broker's limits, not the message's fault: the offline store keeps such messages.
        for f in big.failures + retained.failures {
            guard case .brokerLimit = f else {
                Issue.record("\(f) is not a broker limit")
                continue
            }
            #expect(Outbox.isBrokerRefusal(f))
        }
        #expect(Outbox.isBrokerRefusal(SessionMachine<Int>.Failure.rejected(packet: .puback, code: 0x97, reason: "quota exceeded")))
        #expect(
            !Outbox.isBrokerRefusal(SessionMachine<Int>.Failure.rejected(packet: .puback, code: 0x90, reason: nil)),
            "topic name invalid is the message's fault")
        #expect(!Outbox.isBrokerRefusal(SessionMachine<Int>.Failure.queueFull(limit: 3)))
    }

    @Test("clean disconnect sends DISCONNECT and closes without a failure")
    func disconnect() {
        var d = SessionDriver()
        _ = d.connect()
        let acts = d.step { m, n, a in m.disconnect(now: n, into: &a) }
        #expect(acts.sent == [.disconnect(.init())])
        #expect(acts.closed == .some(nil))
    }

    @Test("broker DISCONNECT is reported with its reason")
    func serverDisconnect() {
        var d = SessionDriver()
        _ = d.connect()
        var props = MQTTProperties()
        props.reasonString = "maintenance"
        let acts = d.receive(.disconnect(.init(reasonCode: 0x8B, properties: props)))
        #expect(acts.closed == .some(.serverDisconnected(code: 0x8B, reason: "maintenance")))
    }
}

@Suite("Session state machine: packet identifiers")
struct PacketIdentifierTests {
    static func subscribe(_ d: inout SessionDriver, _ token: Int) -> [SessionMachine<Int>.Action] {
        d.step { m, n, a in m.subscribe([.init(filter: "f/\(token)", qos: .atLeastOnce)], token: token, now: n, into: &a) }
    }

    static func refused(_ actions: [SessionMachine<Int>.Action]) -> Bool {
        actions.contains {
            if case .subscribeCompleted(_, .failure(.refused(let why))) = $0 { why.contains("65,535 packet identifiers") } else { false }
        }
    }

    @Test(
        "a 5.0 broker without Receive Maximum: the window stops 512 identifiers short of 65,535, so SUBSCRIBE finds one; when none is left it is refused at once, never searched for without end"
    )
    func exhaustion() {
        var d = SessionDriver(.init(version: .v5_0, clientID: "c"))
        _ = d.connect()  // no Receive Maximum: 65,535
        let window = 65_535 - SessionMachine<Int>.identifiersKeptForControl
        #expect(d.machine.window == window)
        for i in 0..<(window + 100) { _ = d.publish("t", qos: .atLeastOnce, token: i) }
        #expect(d.machine.inflightCount == window && d.machine.queuedCount == 100)
        // Every identifier the window left: a SUBSCRIBE each; the next one is refused.
        var sent = 0
        for i in 0..<SessionMachine<Int>.identifiersKeptForControl {
            let a = Self.subscribe(&d, 1_000_000 + i)
            #expect(!Self.refused(a))
            sent += a.sent.count
        }
        #expect(sent == SessionMachine<Int>.identifiersKeptForControl)
        let refused = Self.subscribe(&d, 2_000_000)
        #expect(Self.refused(refused) && refused.sent.isEmpty, "\(refused)")
        let unsub = d.step { m, n, a in m.unsubscribe(["f/1"], token: 2_000_001, now: n, into: &a) }
        #expect(unsub.contains { if case .unsubscribeCompleted(_, .failure(.refused)) = $0 { true } else { false } })
        // A PUBACK frees an identifier: the next queued publish takes it (the window is full again),
        // and SUBSCRIBE is still refused rather than spinning.
        let ack = d.receive(.ack(.init(.puback, packetID: 1)))
        #expect(ack.completedTokens == [0] && ack.sent.count == 1 && d.machine.queuedCount == 99)
        #expect(Self.refused(Self.subscribe(&d, 2_000_002)))
    }

    @Test("3.1.1 and a broker's own Receive Maximum keep their windows; our max_inflight is capped by the identifier space too")
    func windows() {
        var v3 = SessionDriver(.init(version: .v3_1_1, clientID: "c"))
        _ = v3.connect()
        #expect(v3.machine.window == 20)
        var props = MQTTProperties()
        props.receiveMaximum = 100
        var v5 = SessionDriver(.init(version: .v5_0, clientID: "c"))
        _ = v5.connect(properties: props)
        #expect(v5.machine.window == 100)
        var own = SessionDriver(.init(version: .v5_0, clientID: "c", maxInflight: 70_000))
        _ = own.connect()
        #expect(own.machine.window == 65_535 - SessionMachine<Int>.identifiersKeptForControl)
    }
}
