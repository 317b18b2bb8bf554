import CoreMetrics
import MetricsTestKit
import NIOCore
import Testing

@testable import Communicator

#if canImport(Glibc)
import Glibc
#endif

/// The client's metrics: the session machine's plain counts and round-trip samples (no sockets),
/// their translation into swift-metrics series, and the driver wiring on `EmbeddedChannel`s.
@Suite("Client metrics")
struct ClientMetricsTests {
    @Test("the tally counts each publish once, by QoS and outcome; a QoS 2 repeat before PUBREL is not a second delivery")
    func tally() throws {
        let h = try ClientDriverTests.Harness()
        h.publish("t", qos: .atMostOnce)  // not connected: fails
        _ = try h.connect()
        h.publish("t", qos: .atMostOnce)
        h.publish("t", qos: .atLeastOnce)
        h.publish("t", qos: .exactlyOnce)
        let ids = try h.written().packets.compactMap(\.publishID)
        #expect(ids.count == 2)
        try h.send(.ack(.init(.puback, packetID: ids[0])), .ack(.init(.pubrec, packetID: ids[1])))
        try h.send(.ack(.init(.pubcomp, packetID: ids[1])))
        var incoming = MQTTPacket.Publish(topic: "in", payload: ByteBuffer(string: "x"), qos: .exactlyOnce, retain: false)
        incoming.packetID = 9
        try h.send(.publish(incoming))
        try h.send(.publish(incoming))  // the broker's resend before PUBREL
        h.loop.run()
        let tally = h.core.tally
        #expect(tally.completed == [1, 1, 1], "\(tally)")
        #expect(tally.failed == [.init(qos: 0, reason: "not_connected"): 1], "\(tally)")
        #expect(tally.received == 1)
    }

    @Test("round trips: one publish timed at a time, to its PUBACK; a resent one is not timed; PINGREQ to PINGRESP; off by default")
    func roundTrips() {
        var d = SessionDriver(.init(clientID: "t", keepAliveSeconds: 10, timeRoundTrips: true))
        _ = d.connect()
        let a = d.publish("t", qos: .atLeastOnce, token: 1).sent.first!.publishID!
        d.now += 2_000_000
        let b = d.publish("t", qos: .atLeastOnce, token: 2).sent.first!.publishID!
        d.now += 3_000_000
        let acked = d.receive(.ack(.init(.puback, packetID: a)))
        #expect(Self.roundTrips(acked) == [.init(kind: .publish, nanoseconds: 5_000_000)])
        #expect(Self.roundTrips(d.receive(.ack(.init(.puback, packetID: b)))).isEmpty, "b was sent while a was timed")
        // Sent, then the link went: the resend on the next connection is not timed.
        _ = d.publish("t", qos: .atLeastOnce, token: 3)
        _ = d.step { m, _, a in m.connectionLost(into: &a) }
        let resent = d.connect(sessionPresent: true).sent.compactMap(\.publishID)
        #expect(resent.count == 1)
        #expect(Self.roundTrips(d.receive(.ack(.init(.puback, packetID: resent[0])))).isEmpty)
        // Keep-alive: PINGREQ after 10 s of silence, PINGRESP 7 ms later.
        d.now += 10_000_000_000
        #expect(d.step { m, n, a in m.tick(now: n, into: &a) }.sent == [.pingreq])
        d.now += 7_000_000
        #expect(Self.roundTrips(d.receive(.pingresp)) == [.init(kind: .ping, nanoseconds: 7_000_000)])

        var off = SessionDriver(.init(clientID: "t"))
        _ = off.connect()
        let id = off.publish("t", qos: .atLeastOnce, token: 1).sent.first!.publishID!
        #expect(Self.roundTrips(off.receive(.ack(.init(.puback, packetID: id)))).isEmpty)
    }

    struct Sample: Equatable {
        var kind: SessionMachine<Int>.RoundTrip
        var nanoseconds: UInt64
    }

    static func roundTrips(_ actions: [SessionMachine<Int>.Action]) -> [Sample] {
        actions.compactMap { if case .roundTrip(let k, let n) = $0 { Sample(kind: k, nanoseconds: n) } else { nil } }
    }

    @Test("a report turns what the core counted into increments: only what grew is added, a failure's series appears when it first happens")
    func reportDeltas() throws {
        let test = TestMetrics()
        let metrics = ClientMetrics(factory: test)
        var reading = ClientMetrics.Reading(
            state: "connected", connections: 1, tally: PublishTally(), droppedIncoming: 0, inflight: 3, queued: 7, bytesSent: 100,
            bytesReceived: 40, store: nil)
        reading.tally.completed = [0, 5, 0]
        metrics.report(reading)
        #expect(try test.expectCounter("mqtt_client_publishes_total", [("qos", "1"), ("result", "ok")]).totalValue == 5)
        #expect(try test.expectCounter("mqtt_client_connections_total").totalValue == 1)
        #expect(try test.expectCounter("mqtt_client_reconnects_total").totalValue == 0)
        #expect(try test.expectGauge("mqtt_client_inflight_messages").lastValue == 3)
        #expect(try test.expectGauge("mqtt_client_connection_state", [("state", "connected")]).lastValue == 1)
        #expect(try test.expectGauge("mqtt_client_connection_state", [("state", "reconnecting")]).lastValue == 0)
        #expect(test.counters(label: "mqtt_client_publishes_total").count == 3, "the successes exist from the start, failures not yet")

        reading.state = "reconnecting"
        reading.connections = 3
        reading.tally.completed = [0, 8, 0]
        reading.tally.failed = [.init(qos: 1, reason: "queue_full"): 2]
        reading.bytesSent = 250
        reading.store = .init(
            status: OfflineStoreStatus(directory: "/s", pending: 4, fill: 0.5, dropped: 1, corruptSkipped: 0, held: 0, degraded: nil),
            pendingBytes: 999, oldestAge: 12)
        metrics.report(reading)
        metrics.report(reading)  // nothing changed: nothing added
        #expect(try test.expectCounter("mqtt_client_publishes_total", [("qos", "1"), ("result", "ok")]).totalValue == 8)
        #expect(try test.expectCounter("mqtt_client_publishes_total", [("qos", "1"), ("result", "queue_full")]).totalValue == 2)
        #expect(try test.expectCounter("mqtt_client_reconnects_total").totalValue == 2)
        #expect(try test.expectCounter("mqtt_client_sent_bytes_total").totalValue == 250)
        #expect(try test.expectGauge("mqtt_client_connection_state", [("state", "connected")]).lastValue == 0)
        #expect(try test.expectGauge("mqtt_client_connection_state", [("state", "reconnecting")]).lastValue == 1)
        #expect(try test.expectGauge("mqtt_client_store_pending_bytes").lastValue == 999)
        #expect(try test.expectGauge("mqtt_client_store_oldest_message_age_seconds").lastValue == 12)
        #expect(try test.expectCounter("mqtt_client_store_dropped_messages_total").totalValue == 1)
        // Every series the client makes has its help text.
        let labels = Set(test.counters.map(\.label) + test.recorders.map(\.label) + test.timers.map(\.label))
        #expect(labels.allSatisfy { MQTTClientMetrics.help[$0] != nil }, "\(labels.subtracting(MQTTClientMetrics.help.keys))")
    }

    @Test(
        "a stored message a broker refuses for a reason of its own (held, sent again after the next connect) counts once, when it is acknowledged"
    )
    func storedRefusalCountsOnce() throws {
        var template = Array("/tmp/metrics-store-XXXXXX".utf8CString)
        let dir = String(cString: try #require(mkdtemp(&template)))
        let test = TestMetrics()
        let h = try ClientDriverTests.Harness {
            $0.metricsFactory = test
            $0.cleanStart = false
            $0.offlineStore = OfflineStoreConfig(directory: dir, capacity: 1 << 20, persist: .always)
        }
        _ = try h.connect()
        h.publish("held", qos: .atLeastOnce)
        guard case .publish(let p)? = try h.written().packets.last, let id = p.packetID else {
            Issue.record("no PUBLISH")
            return
        }
        try h.send(.ack(.init(.puback, packetID: id, reasonCode: ReasonCode.quotaExceeded.rawValue)))
        h.core.submit(.reportMetrics({}))
        h.loop.run()
        #expect(test.counterTotal(label: "mqtt_client_publishes_total") == 0, "held, not ended")
        // The next connection sends it again; this time it is acknowledged.
        try #require(h.channel).close().wait()
        h.loop.run()
        h.loop.advanceTime(by: .seconds(3))
        _ = try h.written()
        try h.send(.connack(.init(sessionPresent: true, returnCode: 0)))
        h.loop.advanceTime(by: .milliseconds(200))  // the store's tick feeds what was held
        let again = try h.written().packets.compactMap { if case .publish(let q) = $0 { q } else { nil } }
        let resent = try #require(again.first { $0.topic == "held" })
        try h.send(.ack(.init(.puback, packetID: resent.packetID!)))
        h.core.submit(.reportMetrics({}))
        h.loop.run()
        #expect(try test.expectCounter("mqtt_client_publishes_total", [("qos", "1"), ("result", "ok")]).totalValue == 1)
        #expect(test.counterTotal(label: "mqtt_client_publishes_total") == 1, "one end in all")
        h.core.closeStore()
    }

    @Test("the driver: bytes both ways, publishes and round trips reach the factory on reportMetrics; without a factory none is made")
    func driverWiring() throws {
        let test = TestMetrics()
        let h = try ClientDriverTests.Harness { $0.metricsFactory = test }
        _ = try h.connect()
        h.publish("a/b", qos: .atLeastOnce)
        guard case .publish(let p)? = try h.written().packets.first, let id = p.packetID else {
            Issue.record("no PUBLISH")
            return
        }
        h.loop.advanceTime(by: .milliseconds(4))
        try h.send(.ack(.init(.puback, packetID: id)))
        h.core.submit(.reportMetrics({}))
        h.loop.run()
        #expect(try test.expectCounter("mqtt_client_publishes_total", [("qos", "1"), ("result", "ok")]).totalValue == 1)
        #expect(try test.expectCounter("mqtt_client_sent_bytes_total").totalValue > 20, "CONNECT and PUBLISH")
        let received = [MQTTPacket.connack(.init(sessionPresent: false, returnCode: 0)), .ack(.init(.puback, packetID: id))].map {
            $0.encoded(version: .v5_0).readableBytes
        }
        #expect(try test.expectCounter("mqtt_client_received_bytes_total").totalValue == Int64(received.reduce(0, +)), "CONNACK and PUBACK")
        #expect(try test.expectTimer("mqtt_client_round_trip_seconds", [("packet", "publish")]).values == [4_000_000])

        let plain = try ClientDriverTests.Harness()
        #expect(plain.core.metrics == nil && !plain.core.machine.options.timeRoundTrips)
        var spinning = MQTTConfig(brokerAddress: "b")
        spinning.metricsInterval = .zero
        #expect(spinning.problems().contains { $0.hasPrefix("metricsInterval 0.0 seconds is below 10 ms") }, "\(spinning.problems())")
    }
}
