import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import Communicator

#if canImport(Glibc)
import Glibc
#endif

@Suite("Reconnect and resume")
struct ResilienceTests {
    func fastReconnect(_ port: Int, _ version: MQTTVersion = .v5_0, configure: (inout MQTTConfig) -> Void = { _ in }) -> MQTTConfig {
        var c = MQTTConfig(
            brokerAddress: "127.0.0.1", port: port, timeout: 3, keepalive: 5, maxReconnectAttempts: 0,
            reconnectInitialDelay: 0.05, reconnectMaxDelay: 0.5, clientID: uniqueID("res"), protocolVersion: version)
        configure(&c)
        return c
    }

    // MARK: Resend at each step of the QoS 1 and QoS 2 handshakes

    enum CutPoint: String, CaseIterable, Sendable {
        case afterPublish = "after PUBLISH"
        case afterPubrec = "after PUBREC"
        case afterPubrel = "after PUBREL"
        case afterPubcomp = "after PUBCOMP"
        case afterPuback = "after PUBACK"
    }

    @Test(
        "the client resends the right packet after a cut at each step of the handshake",
        arguments: [
            (CutPoint.afterPublish, 1), (.afterPuback, 1), (.afterPublish, 2), (.afterPubrec, 2), (.afterPubrel, 2), (.afterPubcomp, 2),
        ],
        [MQTTVersion.v3_1_1, .v5_0])
    func handshakeCuts(_ c: (CutPoint, Int), version: MQTTVersion) throws {
        let (cut, qos) = c
        let second = NIOLockedValueBox<[MQTTPacket]>([])
        let firstID = NIOLockedValueBox<UInt16?>(nil)
        let broker = try ScriptedBroker(connections: 2) { conn, n in
            guard case .connect(let connect) = try conn.read() else { throw TestFailure("expected CONNECT") }
            if n == 0 {
                conn.send(.connack(.init(sessionPresent: false, returnCode: 0)))
                guard case .publish(let p) = try conn.read() else { throw TestFailure("expected PUBLISH") }
                firstID.withLockedValue { $0 = p.packetID }
                switch cut {
                case .afterPublish: break
                case .afterPuback: conn.send(.ack(.init(.puback, packetID: p.packetID!)))
                case .afterPubrec: conn.send(.ack(.init(.pubrec, packetID: p.packetID!)))
                case .afterPubrel, .afterPubcomp:
                    conn.send(.ack(.init(.pubrec, packetID: p.packetID!)))
                    guard case .ack(let rel) = try conn.read(), rel.kind == .pubrel else { throw TestFailure("expected PUBREL") }
                    if cut == .afterPubcomp { conn.send(.ack(.init(.pubcomp, packetID: p.packetID!))) }
                }
                usleep(100_000)
                conn.close()
            } else {
                guard !connect.cleanStart else { throw TestFailure("reconnect asked for a clean session") }
                conn.send(.connack(.init(sessionPresent: true, returnCode: 0)))
                while let p = try conn.read(timeout: 3) {
                    second.withLockedValue { $0.append(p) }
                    if case .publish(let pub) = p, let id = pub.packetID {
                        conn.send(.ack(.init(pub.qos == .atLeastOnce ? .puback : .pubrec, packetID: id)))
                    }
                    if case .ack(let a) = p, a.kind == .pubrel { conn.send(.ack(.init(.pubcomp, packetID: a.packetID))) }
                }
                conn.close()
            }
        }
        // (No 3.1.1 clean-then-persistent hop: the scenario scripts one connection before the cut.)
        let mqtt = MQTTProtocol(config: fastReconnect(broker.port, version) { $0.sessionExpiryInterval = 0 })
        try mqtt.connect()
        try mqtt.publish("t", "m", qos: qos)
        try waitUntil(timeout: 10, "the scripted broker to finish") { broker.finished }
        mqtt.disconnect()
        #expect(broker.scriptErrors.isEmpty, "\(broker.scriptErrors)")
        let id = firstID.withLockedValue { $0 }!
        let resent = second.withLockedValue { $0 }.filter { $0 != .pingreq && $0 != .disconnect(.init()) }
        switch cut {
        case .afterPublish:
            // [MQTT-4.4.0-1] the same PUBLISH, same identifier, DUP set [MQTT-3.3.1-1].
            // (The scripted broker then acknowledges it, so the handshake goes on after it.)
            #expect(
                resent.first
                    == .publish(
                        .init(topic: "t", payload: ByteBuffer(string: "m"), qos: QoS(rawValue: UInt8(qos))!, dup: true, packetID: id)))
            #expect(resent.filter { if case .publish = $0 { true } else { false } }.count == 1)
        case .afterPubrec, .afterPubrel:
            // PUBREL, not PUBLISH, once PUBREC was seen.
            #expect(resent == [.ack(.init(.pubrel, packetID: id))])
        case .afterPuback, .afterPubcomp:
            #expect(resent.isEmpty)
        }
    }

    // MARK: Subscriptions after reconnect

    @Test(
        "subscriptions work again after a broker restart without the session (session present 0)", arguments: [MQTTVersion.v3_1_1, .v5_0])
    func resubscribeWithoutSession(version: MQTTVersion) throws {
        var broker = try Broker.start()
        defer { broker.stop() }
        let port = broker.port
        let mqtt = MQTTProtocol(config: fastReconnect(port, version))
        let inbox = Inbox()
        try mqtt.connect()
        let topics = (0..<5).map { uniqueTopic("resub\($0)") }
        for t in topics { try mqtt.subscribe(t, qos: 1) { m in inbox.add(m) } }
        broker.kill9()
        broker = try broker.restarted()  // no persistence: the session is gone
        try waitUntil(timeout: 10, "reconnected") { mqtt.state == .connected }
        try waitUntil(timeout: 10, "SUBSCRIBE restored for every filter") {
            let log = broker.log
            return topics.allSatisfy { log.contains($0) }
        }
        let other = MQTTProtocol(config: fastReconnect(port, version))
        try other.connect()
        for t in topics { try other.publish(t, "after", qos: 1) }
        _ = try inbox.wait(for: 5)
        #expect(Set(inbox.all.map(\.topic)) == Set(topics))
        other.disconnect()
        mqtt.disconnect()
    }

    @Test("subscriptions keep working after a cut with the session kept (session present 1)")
    func resumeWithSession() throws {
        let broker = try SharedBroker.get()
        let proxy = try TCPProxy(to: broker.port)
        let mqtt = MQTTProtocol(config: fastReconnect(proxy.port))
        let sessions = NIOLockedValueBox<[Bool]>([])
        mqtt.onStateChange { s in if s == .connected { sessions.withLockedValue { $0.append(true) } } }
        let inbox = Inbox()
        let topic = uniqueTopic("keep")
        try mqtt.connect()
        try mqtt.subscribe(topic, qos: 1) { m in inbox.add(m) }
        proxy.cutAll()
        try waitUntil(timeout: 10, "reconnected") { sessions.withLockedValue { $0.count } >= 2 && mqtt.state == .connected }
        let other = MQTTProtocol(config: fastReconnect(broker.port))
        try other.connect()
        try other.publish(topic, "x", qos: 1)
        _ = try inbox.wait(for: 1)
        #expect(mqtt.sessionPresent == true)
        other.disconnect()
        mqtt.disconnect()
    }

    // MARK: Stopping

    @Test("wrong credentials during a reconnect stop the loop with ProtocolAuthenticationError")
    func credentialsRevoked() throws {
        var broker = try Broker.start(.init(users: ["cam7": "good"]))
        defer { broker.stop() }
        let mqtt = MQTTProtocol(
            config: fastReconnect(broker.port) {
                $0.username = "cam7"
                $0.password = "good"
            })
        try mqtt.connect()
        broker.stop()
        broker = try broker.restarted(.init(users: ["cam7": "changed"]))
        try waitUntil(timeout: 10, "the client to give up") {
            if case .disconnected = mqtt.state { return true }
            return false
        }
        #expect(mqtt.lastError is ProtocolAuthenticationError, "\(String(describing: mqtt.lastError))")
        // It does not hammer the broker: exactly one refused attempt.
        usleep(500_000)
        let attempts = broker.log.components(separatedBy: "New client connected").count - 1
        #expect(attempts == 1, "\(attempts) connection attempts after the password change")
    }

    @Test("max_reconnect_attempts then a final error; back-off grows")
    func giveUp() throws {
        let broker = try Broker.start()
        let mqtt = MQTTProtocol(
            config: fastReconnect(broker.port) {
                $0.maxReconnectAttempts = 3
                $0.reconnectInitialDelay = .seconds(0.1)
                $0.reconnectMaxDelay = .seconds(10)
            })
        let delays = NIOLockedValueBox<[Double]>([])
        mqtt.onStateChange { s in if case .reconnecting(_, let d) = s { delays.withLockedValue { $0.append(d) } } }
        try mqtt.connect()
        broker.kill9()
        try waitUntil(timeout: 10, "the client to give up") {
            if case .disconnected = mqtt.state { return true }
            return false
        }
        let d = delays.withLockedValue { $0 }
        #expect(d.count == 3)
        // 0.1, 0.2, 0.4 s with ±20 % jitter.
        for (i, delay) in d.enumerated() {
            let base = 0.1 * Double(1 << i)
            #expect(delay >= base * 0.8 - 1e-9 && delay <= base * 1.2 + 1e-9, "attempt \(i + 1): \(delay)")
        }
        #expect(mqtt.lastError?.message.contains("gave up after 3 reconnect attempts") == true, "\(String(describing: mqtt.lastError))")
    }

    @Test("disconnect() during a back-off stops it at once")
    func disconnectDuringBackoff() throws {
        let broker = try Broker.start()
        let mqtt = MQTTProtocol(
            config: fastReconnect(broker.port) {
                $0.reconnectInitialDelay = .seconds(30)
                $0.reconnectMaxDelay = .seconds(60)
            })
        try mqtt.connect()
        broker.kill9()
        try waitUntil(timeout: 5, "back-off") { if case .reconnecting = mqtt.state { true } else { false } }
        let start = Date()
        mqtt.disconnect()
        #expect(Date().timeIntervalSince(start) < 1)
        #expect(mqtt.state == .disconnected(reason: "disconnect requested"))
    }

    // MARK: The publish queue

    @Test("publishing while disconnected queues in order; a full queue refuses or drops the oldest")
    func offlineQueue() throws {
        // Persistence keeps the independent subscriber's session across the broker's restart.
        var broker = try Broker.start(.init(extraConfig: "autosave_on_changes true", persistence: true))
        let port = broker.port
        defer { broker.stop() }
        let topic = uniqueTopic("queue")
        let sub = try ExternalSubscriber(broker: broker, topic: topic, qos: 1, extraArgs: ["-c"])
        let rejecting = MQTTProtocol(config: fastReconnect(port) { $0.publishQueueMaxsize = 5 })
        let dropping = MQTTProtocol(
            config: fastReconnect(port) {
                $0.publishQueueMaxsize = 5
                $0.queueFullPolicy = .dropOldest
            })
        try rejecting.connect()
        try dropping.connect()
        usleep(1_200_000)  // let the broker save the subscriber's session
        broker.stop()
        try waitUntil(timeout: 5, "both offline") { rejecting.state != .connected && dropping.state != .connected }
        for i in 0..<5 { try rejecting.publish(topic, "r\(i)", qos: 1) }
        let e = #expect(throws: ProtocolValidationError.self) { try rejecting.publish(topic, "r5", qos: 1) }
        #expect(e?.message.contains("publish queue is full") == true)
        // QoS 0 is not queued by default.
        let q0 = #expect(throws: ProtocolConnectionError.self) { try rejecting.publish(topic, "q0", qos: 0) }
        #expect(q0?.message.contains("QoS 0") == true)
        for i in 0..<8 { try dropping.publish(topic, "d\(i)", qos: 1) }
        broker = try broker.restarted()
        try waitUntil(timeout: 10, "both reconnected") { rejecting.state == .connected && dropping.state == .connected }
        let lines = try sub.waitForLines(10).map { String($0.split(separator: "|").last!) }
        #expect(lines.filter { $0.hasPrefix("r") } == ["r0", "r1", "r2", "r3", "r4"])
        #expect(lines.filter { $0.hasPrefix("d") } == ["d3", "d4", "d5", "d6", "d7"])
        #expect(!lines.contains("q0"))
        #expect(dropping.droppedMessages == 3)
        rejecting.disconnect()
        dropping.disconnect()
    }
}
