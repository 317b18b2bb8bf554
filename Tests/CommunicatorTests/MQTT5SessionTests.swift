import NIOCore
import Testing

@testable import Communicator

/// 5.0 behaviour of the session machine, packet by packet.
@Suite("Session: MQTT 5.0 limits, aliases, expiry")
struct MQTT5SessionTests {
    func publishes(_ actions: [SessionMachine<Int>.Action]) -> [MQTTPacket.Publish] {
        actions.sent.compactMap { if case .publish(let p) = $0 { p } else { nil } }
    }

    @Test("CONNECT announces our Receive Maximum, Maximum Packet Size and Topic Alias Maximum")
    func connectAnnouncesLimits() {
        var d = SessionDriver(.init(clientID: "t", maxPacketSize: 4096, receiveMaximum: 8, topicAliasMaximum: 4))
        let acts = d.step { m, n, a in m.connectionEstablished(now: n, into: &a) }
        guard case .connect(let c) = acts.sent.first else {
            Issue.record("no CONNECT")
            return
        }
        #expect(c.properties.receiveMaximum == 8)
        #expect(c.properties.maximumPacketSize == 4096)
        #expect(c.properties.topicAliasMaximum == 4)
    }

    @Test(
        "outgoing aliases: a topic's second use sets an alias, later uses send only the alias; never above the broker's maximum; reset per connection"
    )
    func outgoingAliases() {
        var d = SessionDriver()
        var props = MQTTProperties()
        props.topicAliasMaximum = 1
        _ = d.connect(properties: props)
        var wire: [MQTTPacket.Publish] = []
        for (i, t) in ["a/1", "a/1", "a/1", "b/2", "b/2", "a/1"].enumerated() {
            wire += publishes(d.publish(t, qos: .atMostOnce, token: i))
        }
        #expect(wire.map(\.topic) == ["a/1", "a/1", "", "b/2", "b/2", ""])
        #expect(wire.map(\.properties.topicAlias) == [nil, 1, 1, nil, nil, 1])
        // A new connection starts without aliases [MQTT-3.3.2-7].
        _ = d.step { m, _, a in m.connectionLost(into: &a) }
        _ = d.connect(properties: props)
        let again = publishes(d.publish("a/1", qos: .atMostOnce, token: 9))
        #expect(again.map(\.topic) == ["a/1"])
        #expect(again.first?.properties.topicAlias == nil)
    }

    @Test("a QoS 1 message resent after a reconnect carries its topic, not the old connection's alias")
    func resendWithoutStaleAlias() {
        var d = SessionDriver()
        var props = MQTTProperties()
        props.topicAliasMaximum = 5
        _ = d.connect(properties: props)
        _ = d.publish("x/y", qos: .atLeastOnce, token: 1)
        _ = d.receive(.ack(.init(.puback, packetID: 1)))
        let aliased = publishes(d.publish("x/y", qos: .atLeastOnce, token: 2))
        #expect(aliased.first?.properties.topicAlias == 1)
        _ = d.step { m, _, a in m.connectionLost(into: &a) }
        let resent = publishes(d.connect(sessionPresent: true, properties: props))
        #expect(resent.map(\.topic) == ["x/y"])
        #expect(resent.first?.properties.topicAlias == nil)
        #expect(resent.first?.dup == true)
    }

    @Test("Message Expiry: expired while queued → not sent; otherwise sent with the time left")
    func expiry() {
        var d = SessionDriver()
        var short = MQTTProperties()
        short.messageExpiryInterval = 2
        var long = MQTTProperties()
        long.messageExpiryInterval = 60
        _ = d.step { m, n, a in
            m.publish(.init(topic: "s", payload: ByteBuffer(), qos: .atLeastOnce, properties: short), token: 1, now: n, into: &a)
            m.publish(.init(topic: "l", payload: ByteBuffer(), qos: .atLeastOnce, properties: long), token: 2, now: n, into: &a)
        }
        d.now += 5_000_000_000
        var acts = d.connect()
        acts += d.step { m, n, a in m.sendQueued(now: n, into: &a) }
        #expect(acts.failures == [.expired(seconds: 2)])
        let sent = publishes(acts)
        #expect(sent.map(\.topic) == ["l"])
        #expect(sent.first?.properties.messageExpiryInterval == 55)
    }

    @Test("incoming: more unreleased QoS 2 publishes than our Receive Maximum → DISCONNECT 0x93")
    func receiveMaximumEnforced() {
        var d = SessionDriver(.init(clientID: "t", receiveMaximum: 2))
        _ = d.connect()
        for id in UInt16(1)...2 { _ = d.receive(.publish(.init(topic: "t", payload: ByteBuffer(), qos: .exactlyOnce, packetID: id))) }
        // A duplicate of one in progress is fine.
        let dup = d.receive(.publish(.init(topic: "t", payload: ByteBuffer(), qos: .exactlyOnce, dup: true, packetID: 2)))
        #expect(dup.closed == nil)
        let acts = d.receive(.publish(.init(topic: "t", payload: ByteBuffer(), qos: .exactlyOnce, packetID: 3)))
        guard case .disconnect(let disc) = acts.sent.first else {
            Issue.record("no DISCONNECT: \(acts)")
            return
        }
        #expect(disc.reasonCode == 0x93)
        #expect(acts.delivered.isEmpty)
        if case .protocolViolation(_, let code)?? = acts.closed { #expect(code == 0x93) } else { Issue.record("not closed") }
    }

    @Test("incoming alias never set on this connection → DISCONNECT 0x82 (protocol error)")
    func unknownIncomingAlias() {
        var d = SessionDriver()
        _ = d.connect()
        var props = MQTTProperties()
        props.topicAlias = 2
        let acts = d.receive(.publish(.init(topic: "", payload: ByteBuffer(), qos: .atMostOnce, properties: props)))
        guard case .disconnect(let disc) = acts.sent.first else {
            Issue.record("no DISCONNECT")
            return
        }
        #expect(disc.reasonCode == 0x82)
        #expect(acts.delivered.isEmpty)
    }

    @Test("a PUBACK that succeeds with a reason (0x10 no matching subscribers) completes and reports the code and reason string")
    func successWithReason() {
        var d = SessionDriver()
        _ = d.connect()
        _ = d.publish("t", qos: .atLeastOnce, token: 1)
        var props = MQTTProperties()
        props.reasonString = "nobody listens"
        let acts = d.receive(.ack(.init(.puback, packetID: 1, reasonCode: 0x10, properties: props)))
        #expect(acts.completedTokens == [1])
        let notes = acts.compactMap { a -> (UInt8, String?)? in
            if case .acknowledgedWithReason(.puback, let code, let reason) = a { (code, reason) } else { nil }
        }
        #expect(notes.count == 1 && notes.first?.0 == 0x10 && notes.first?.1 == "nobody listens")
    }
}
