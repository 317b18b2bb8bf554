import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import Communicator

/// Behaviour that mosquitto cannot be made to show: a broker of the test's own plays it byte by byte.
@Suite("Against a scripted broker")
struct ScriptedBrokerTests {
    func config(_ port: Int, _ version: MQTTVersion = .v5_0, configure: (inout MQTTConfig) -> Void = { _ in }) -> MQTTConfig {
        // A CONNACK from a broker on this machine, also when the whole suite loads its two cores.
        var c = MQTTConfig(
            brokerAddress: "127.0.0.1", port: port, timeout: 10 * TestTiming.scale, clientID: uniqueID("scripted"), protocolVersion: version
        )
        // One connection per scenario: no 3.1.1 clean-then-persistent hop (tested on its own below).
        c.sessionExpiryInterval = 0
        configure(&c)
        return c
    }

    @Test("3.1.1 with a session to keep: connects clean once, then again with Clean Session 0")
    func persistentSessionHop() throws {
        let connects = NIOLockedValueBox<[(clean: Bool, next: MQTTPacket?)]>([])
        let broker = try ScriptedBroker(connections: 2) { conn, _ in
            guard case .connect(let c) = try conn.read() else { throw TestFailure("expected CONNECT") }
            conn.send(.connack(.init(sessionPresent: !c.cleanStart, returnCode: 0)))
            let next = try conn.read(timeout: 5)
            connects.withLockedValue { $0.append((c.cleanStart, next)) }
            conn.close()
        }
        let mqtt = MQTTProtocol(config: config(broker.port, .v3_1_1) { $0.sessionExpiryInterval = 3600 })
        try mqtt.connect()
        try waitUntil(timeout: 30, "two connections") { connects.withLockedValue { $0.count } == 2 }
        let seen = connects.withLockedValue { $0 }
        #expect(seen[0].clean == true)
        #expect(seen[0].next == .disconnect(.init()))  // a clean DISCONNECT: no Will
        #expect(seen[1].clean == false)
        #expect(mqtt.sessionPresent == true)
        mqtt.disconnect()
    }

    @Test(
        "the 3.1.1 hop with a broker that keeps the clean link open after DISCONNECT: the client closes it itself and resumes the session")
    func sessionHopBrokerKeepsLinkOpen() throws {
        let seen = NIOLockedValueBox<[(clean: Bool, closedByClient: Bool)]>([])
        let broker = try ScriptedBroker(connections: 2) { conn, _ in
            guard case .connect(let c) = try conn.read() else { throw TestFailure("expected CONNECT") }
            conn.send(.connack(.init(sessionPresent: !c.cleanStart, returnCode: 0)))
            if c.cleanStart {
                guard try conn.read(timeout: 5) == .disconnect(.init()) else { throw TestFailure("expected DISCONNECT") }
                // Never closed from here: the next read ends only when the client closes (nil at EOF).
                let closed = try conn.read(timeout: 10) == nil
                seen.withLockedValue { $0.append((true, closed)) }
            } else {
                seen.withLockedValue { $0.append((false, false)) }
                _ = try conn.read(timeout: 5)
            }
            conn.close()
        }
        let mqtt = MQTTProtocol(config: config(broker.port, .v3_1_1) { $0.sessionExpiryInterval = 3600 })
        try mqtt.connect()
        defer { mqtt.disconnect() }
        try waitUntil(timeout: 30, "two connections") { seen.withLockedValue { $0.count } == 2 }
        let s = seen.withLockedValue { $0 }
        // The two connections' threads may report in either order.
        #expect(s.filter(\.clean).count == 1 && s.filter(\.clean).allSatisfy(\.closedByClient) && s.contains { !$0.clean }, "\(s)")
        #expect(mqtt.state == .connected && mqtt.sessionPresent == true)
    }

    struct BadReply: CustomTestStringConvertible, Sendable {
        let name: String
        let bytes: [UInt8]
        let expected: String
        var testDescription: String { name }
    }

    static let badReplies: [BadReply] = [
        .init(name: "bad remaining length", bytes: [0x20, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], expected: "more than 4 bytes"),
        .init(name: "reserved CONNACK flags", bytes: [0x20, 0x03, 0x02, 0x00, 0x00], expected: "reserved bits"),
        .init(
            name: "packet larger than max_packet_size", bytes: [0x20, 0xFF, 0x7F] + [UInt8](repeating: 0, count: 64),
            expected: "exceeds the maximum packet size"),
        .init(name: "truncated packet then close", bytes: [0x20, 0x09, 0x00, 0x00], expected: "closed before CONNACK"),
        .init(name: "PUBLISH before CONNACK", bytes: [0x30, 0x04, 0x00, 0x01, 0x61, 0x00], expected: "expected CONNACK"),
    ]

    @Test("malformed input from the broker fails connect with a ProtocolError naming the cause", arguments: badReplies)
    func malformedConnack(_ reply: BadReply) throws {
        let broker = try ScriptedBroker { conn, _ in
            guard case .connect = try conn.read() else { throw TestFailure("expected CONNECT") }
            conn.send(raw: reply.bytes)
            usleep(100_000)
            conn.close()
        }
        let mqtt = MQTTProtocol(config: config(broker.port) { $0.maxPacketSize = 1024 })
        do {
            try mqtt.connect()
            Issue.record("connected despite \(reply.name)")
        } catch let e as ProtocolError {
            #expect(e.message.contains(reply.expected), "\(e.message)")
        } catch let e as ProtocolConnectionError {
            #expect(e.message.contains(reply.expected), "\(e.message)")
        }
        #expect(broker.scriptErrors.isEmpty)
    }

    @Test("invalid UTF-8 in a PUBLISH topic after CONNACK drops the connection with a clear reason")
    func malformedPublish() throws {
        let broker = try ScriptedBroker { conn, _ in
            guard case .connect = try conn.read() else { throw TestFailure("expected CONNECT") }
            conn.send(.connack(.init(sessionPresent: false, returnCode: 0)))
            guard case .subscribe(let sub) = try conn.read() else { throw TestFailure("expected SUBSCRIBE") }
            conn.send(.suback(.init(packetID: sub.packetID, reasonCodes: [1])))
            // Topic "a\u{C3}(": an invalid 2-byte UTF-8 sequence.
            conn.send(raw: [0x30, 0x06, 0x00, 0x03, 0x61, 0xC3, 0x28, 0x00])
            usleep(500_000)
            conn.close()
        }
        let mqtt = MQTTProtocol(
            config: config(broker.port) {
                $0.maxReconnectAttempts = 1
                $0.reconnectInitialDelay = .seconds(10)
            })
        let states = NIOLockedValueBox<[ConnectionState]>([])
        mqtt.onStateChange { s in states.withLockedValue { $0.append(s) } }
        let received = NIOLockedValueBox(0)
        try mqtt.connect()
        try mqtt.subscribe("#") { _, _ in received.withLockedValue { $0 += 1 } }
        try waitUntil(timeout: 5, "reconnecting after the malformed packet") {
            states.withLockedValue { $0.contains { if case .reconnecting = $0 { true } else { false } } }
        }
        #expect(mqtt.lastError?.message.contains("not valid UTF-8") == true, "\(String(describing: mqtt.lastError))")
        #expect(mqtt.lastError is ProtocolError)
        #expect(received.withLockedValue { $0 } == 0)
        mqtt.disconnect()
    }

    @Test("broker refuses 5.0 (0x84): ProtocolError says so; with fallback the client connects on 3.1.1")
    func protocolVersionRefusal() throws {
        let script: @Sendable (ScriptedBroker.Connection, Int) throws -> Void = { conn, _ in
            guard case .connect(let c) = try conn.read() else { throw TestFailure("expected CONNECT") }
            if c.version == .v5_0 {
                conn.send(.connack(.init(sessionPresent: false, returnCode: 0x84)))
                conn.close()
                return
            }
            conn.send(.connack(.init(sessionPresent: false, returnCode: 0)))
            _ = try conn.read(timeout: 2)
            conn.close()
        }
        let refusing = try ScriptedBroker(script: script)
        let plain = MQTTProtocol(config: config(refusing.port))
        let e = #expect(throws: ProtocolError.self) { try plain.connect() }
        #expect(e?.code == 0x84)
        #expect(e?.message.contains("does not accept MQTT 5.0") == true)

        let fallbackBroker = try ScriptedBroker(connections: 2, script: script)
        let fallback = MQTTProtocol(config: config(fallbackBroker.port) { $0.fallbackToV311 = true })
        try fallback.connect()
        #expect(fallback.state == .connected)
        fallback.disconnect()
        #expect(fallbackBroker.scriptErrors.isEmpty)
    }

    @Test(
        "3.1.1 return codes map to the seed's error types",
        arguments: [
            (UInt8(1), "ProtocolError"), (2, "ProtocolError"), (3, "ProtocolError"), (4, "ProtocolAuthenticationError"),
            (5, "ProtocolAuthenticationError"),
        ])
    func returnCodes(_ c: (UInt8, String)) throws {
        let broker = try ScriptedBroker { conn, _ in
            _ = try conn.read()
            conn.send(.connack(.init(sessionPresent: false, returnCode: c.0)))
            conn.close()
        }
        let mqtt = MQTTProtocol(config: config(broker.port, .v3_1_1))
        do {
            try mqtt.connect()
            Issue.record("connected")
        } catch let e as any CommunicatorError {
            #expect("\(type(of: e))" == c.1)
            #expect(e.code == c.0)
            #expect(e.message.contains(ReasonCode.connackName311(c.0)))
        }
    }

    @Test("a broker that stops answering is detected by keep-alive within keepalive × (1 + ratio)")
    func deadPeer() throws {
        let start = NIOLockedValueBox<Date?>(nil)
        let broker = try ScriptedBroker { conn, _ in
            guard case .connect(let c) = try conn.read() else { throw TestFailure("expected CONNECT") }
            guard c.keepAliveSeconds == 1 else { throw TestFailure("keep-alive \(c.keepAliveSeconds)") }
            conn.send(.connack(.init(sessionPresent: false, returnCode: 0)))
            start.withLockedValue { $0 = Date() }
            // Swallow everything (PINGREQ included) and never answer.
            while let p = try conn.read(timeout: 5) { _ = p }
            conn.close()
        }
        let mqtt = MQTTProtocol(
            config: config(broker.port) {
                $0.keepalive = 1
                $0.heartbeatCheckRatio = 0.5
                $0.maxReconnectAttempts = 1
                $0.reconnectInitialDelay = .seconds(30)
            })
        let lostAt = NIOLockedValueBox<Date?>(nil)
        mqtt.onStateChange { s in
            if case .reconnecting = s { lostAt.withLockedValue { if $0 == nil { $0 = Date() } } }
        }
        try mqtt.connect()
        try waitUntil(timeout: 5, "keep-alive timeout") { lostAt.withLockedValue { $0 } != nil }
        let elapsed = lostAt.withLockedValue { $0 }!.timeIntervalSince(start.withLockedValue { $0 }!)
        // Bound: 1 s of silence + 0.5 s without PINGRESP, plus one tick (0.125 s here); the upper
        // limit leaves room for a loaded CI machine.
        #expect(elapsed >= 1.4)
        #expect(elapsed <= 2.5)
        mqtt.disconnect()
    }

    @Test("no CONNACK within timeout: ProtocolConnectionError")
    func connackTimeout() throws {
        let broker = try ScriptedBroker { conn, _ in
            _ = try conn.read()
            usleep(2_500_000)
            conn.close()
        }
        let mqtt = MQTTProtocol(config: config(broker.port) { $0.timeout = .seconds(1) })
        let e = #expect(throws: ProtocolConnectionError.self) { try mqtt.connect() }
        #expect(e?.message.contains("within 1.0 s") == true)
    }

    @Test("SUBACK 0x80 and a 5.0 PUBACK 0x87 reach the caller as ProtocolValidationError with the code")
    func refusedBySubackAndPuback() throws {
        // Synchronous on purpose: an async test can wait minutes for a thread while the long
        // synchronous suites hold the cooperative pool, and the script would time out.
        let broker = try ScriptedBroker { conn, _ in
            guard case .connect = try conn.read() else { throw TestFailure("expected CONNECT") }
            conn.send(.connack(.init(sessionPresent: false, returnCode: 0)))
            while let p = try conn.read(timeout: 30) {
                switch p {
                case .pingreq: conn.send(.pingresp)
                case .subscribe(let sub): conn.send(.suback(.init(packetID: sub.packetID, reasonCodes: [0x80])))
                case .publish(let pub):
                    var props = MQTTProperties()
                    props.reasonString = "ACL denies cam/7"
                    conn.send(.ack(.init(.puback, packetID: pub.packetID!, reasonCode: 0x87, properties: props)))
                case .disconnect:
                    conn.close()
                    return
                default: break
                }
            }
        }
        let mqtt = MQTTProtocol(config: config(broker.port))
        try mqtt.connect()
        let sub = #expect(throws: ProtocolValidationError.self) { try mqtt.subscribe("secret/#") { _, _ in } }
        #expect(sub?.code == 0x80)
        #expect(sub?.message.contains("secret/#") == true)
        let result = NIOLockedValueBox<Result<Void, any Error>?>(nil)
        try mqtt.publish("cam/7", ByteBuffer(string: "x"), qos: 1) { r in result.withLockedValue { $0 = r } }
        try waitUntil(timeout: 5, "PUBACK") { result.withLockedValue { $0 } != nil }
        guard case .failure(let e as ProtocolValidationError) = result.withLockedValue({ $0 }) else {
            Issue.record("publish not refused: \(String(describing: result.withLockedValue { $0 }))")
            return
        }
        #expect(e.code == 0x87)
        #expect(e.message.contains("not authorized") && e.message.contains("ACL denies cam/7"))
        #expect(mqtt.state == .connected)  // a refusal is not a connection problem
        mqtt.disconnect()
        #expect(broker.scriptErrors.isEmpty, "\(broker.scriptErrors)")
    }

    @Test(
        "QoS 0 completes when its bytes are out: a broker that does not read lets the kernel's buffers fill and the completions wait; once it reads, every message completes, in order"
    )
    func qos0CompletesWhenWritten() throws {
        // 64 KiB each: 10 MB, over twice what the two loopback buffers hold while nothing reads
        // (the sender's up to 4 MB, tcp_wmem; the receiver's window, 128 KiB, does not grow unread).
        let n = 160
        let reading = DispatchSemaphore(value: 0)
        let received = NIOLockedValueBox(0)
        let broker = try ScriptedBroker { conn, _ in
            guard case .connect = try conn.read() else { throw TestFailure("expected CONNECT") }
            conn.send(.connack(.init(sessionPresent: false, returnCode: 0)))
            reading.wait()
            while received.withLockedValue({ $0 }) < n, case .publish? = try conn.read(timeout: 10) {
                received.withLockedValue { $0 += 1 }
            }
            _ = try conn.read(timeout: 10)  // until the client's DISCONNECT
            conn.close()
        }
        let mqtt = MQTTProtocol(config: config(broker.port, .v3_1_1) { $0.publishQueueMaxsize = n + 1 })
        try mqtt.connect()
        let completed = NIOLockedValueBox<[Int]>([])
        let payload = ByteBuffer(repeating: 0x61, count: 64 * 1024)
        for i in 0..<n {
            try mqtt.publish("fill", payload, qos: 0) { r in
                if case .success = r { completed.withLockedValue { $0.append(i) } }
            }
        }
        // Nothing has been read: all of them cannot be out. (Completed at the hand-over to the
        // channel, all would be within milliseconds.)
        #expect(throws: TestFailure.self) {
            try waitUntil(timeout: 1, "all completed unread") { completed.withLockedValue { $0.count } == n }
        }
        #expect(completed.withLockedValue { $0.count } < n)
        reading.signal()
        try waitUntil(timeout: 30, "all completed once read") { completed.withLockedValue { $0.count } == n }
        #expect(completed.withLockedValue { $0 } == Array(0..<n))
        // Written is not yet read: the last bytes may still be on their way through the buffers.
        try waitUntil(timeout: 30, "the broker read them all") { received.withLockedValue { $0 } == n }
        mqtt.disconnect()
        #expect(broker.scriptErrors.isEmpty, "\(broker.scriptErrors)")
    }

    @Test("stateChanges: an async sequence of states; a finished iteration removes its listener")
    func stateChanges() async throws {
        let broker = try ScriptedBroker { conn, _ in
            _ = try conn.read()
            conn.send(.connack(.init(sessionPresent: false, returnCode: 0)))
            // Long: the async test below may wait minutes for a thread of the cooperative pool.
            while let p = try conn.read(timeout: 600), p != .disconnect(.init()) {
                if p == .pingreq { conn.send(.pingresp) }
            }
            conn.close()
        }
        let mqtt = MQTTProtocol(config: config(broker.port))
        let before = mqtt.core.listeners.count
        let collector = Task {
            var seen: [ConnectionState] = []
            for await s in mqtt.stateChanges {
                seen.append(s)
                if s == .connected { break }
            }
            return seen
        }
        try await waitUntilAsync { mqtt.core.listeners.count == before + 1 }
        try await mqtt.connect()
        #expect(await collector.value == [.connecting, .connected])
        try await waitUntilAsync { mqtt.core.listeners.count == before }
        await mqtt.disconnect()
    }

    @Test("disconnect() while waiting for CONNACK ends connect() at once")
    func disconnectWhileConnecting() throws {
        let broker = try ScriptedBroker { conn, _ in
            _ = try conn.read()
            _ = try conn.read(timeout: 5)  // never answers
            conn.close()
        }
        let mqtt = MQTTProtocol(config: config(broker.port) { $0.timeout = .seconds(20) })
        let outcome = NIOLockedValueBox<String?>(nil)
        Thread.detachNewThread {
            do {
                try mqtt.connect()
                outcome.withLockedValue { $0 = "connected" }
            } catch {
                outcome.withLockedValue { $0 = "\(error)" }
            }
        }
        try waitUntil(timeout: 5, "connecting") { mqtt.state == .connecting }
        usleep(200_000)
        let start = Date()
        mqtt.disconnect()
        try waitUntil(timeout: 3, "connect() to return") { outcome.withLockedValue { $0 } != nil }
        #expect(Date().timeIntervalSince(start) < 2)
        #expect(outcome.withLockedValue { $0 }?.contains("disconnect() was called") == true)
        #expect(mqtt.state == .disconnected(reason: "disconnect requested"))
    }

    @Test("what the client sends: CONNECT fields, SUBSCRIBE flags, ids, PINGREQ cadence")
    func wire() throws {
        let seen = NIOLockedValueBox<[MQTTPacket]>([])
        let broker = try ScriptedBroker { conn, _ in
            // Until the client's DISCONNECT: a loaded CI machine can be slow between two packets.
            while let p = try conn.read(timeout: 120) {
                seen.withLockedValue { $0.append(p) }
                switch p {
                case .connect: conn.send(.connack(.init(sessionPresent: false, returnCode: 0)))
                case .subscribe(let s):
                    conn.send(.suback(.init(packetID: s.packetID, reasonCodes: s.subscriptions.map { $0.qos.rawValue })))
                case .publish(let pub) where pub.qos == .atLeastOnce: conn.send(.ack(.init(.puback, packetID: pub.packetID!)))
                case .pingreq: conn.send(.pingresp)
                case .disconnect:
                    conn.close()
                    return
                default: break
                }
            }
        }
        let mqtt = MQTTProtocol(
            config: config(broker.port, .v3_1_1) {
                $0.keepalive = 1
                $0.username = "cam7"
                $0.password = "pw"
            })
        try mqtt.setWill(topic: "device/status", payload: "offline", qos: 1, retain: true)
        let start = Date()
        try mqtt.connect()
        try mqtt.subscribe("a/+", qos: 2) { _, _ in }
        try mqtt.publish("a/b", "x", qos: 1)
        usleep(2_300_000)
        mqtt.disconnect()
        let elapsed = Date().timeIntervalSince(start)
        // The scripted broker reads on its own thread: wait until it has seen the DISCONNECT.
        try waitUntil(timeout: 30, "the broker's script to end") { broker.finished }
        let packets = seen.withLockedValue { $0 }
        guard case .connect(let c) = packets.first else {
            Issue.record("no CONNECT first")
            return
        }
        #expect(c.version == .v3_1_1 && c.cleanStart && c.keepAliveSeconds == 1 && c.username == "cam7")
        #expect(c.password == ByteBuffer(string: "pw"))
        #expect(c.will == .init(topic: "device/status", payload: ByteBuffer(string: "offline"), qos: .atLeastOnce, retain: true))
        #expect(packets.filter { if case .connect = $0 { true } else { false } }.count == 1)
        #expect(packets.contains(.subscribe(.init(packetID: 1, subscriptions: [.init(filter: "a/+", qos: .exactlyOnce)]))))
        #expect(packets.contains(.publish(.init(topic: "a/b", payload: ByteBuffer(string: "x"), qos: .atLeastOnce, packetID: 2))))
        // Keep-alive 1 s over about 2.3 s of silence (longer on a loaded machine): a PINGREQ
        // each second of silence, never a storm.
        let pings = packets.filter { $0 == .pingreq }.count
        #expect(pings >= 1 && pings <= Int(elapsed) + 1, "\(pings) PINGREQ in \(elapsed) s")
        #expect(packets.last == .disconnect(.init()))
    }
}

/// Polls `condition` from async code (10 ms steps, 5 s at most).
func waitUntilAsync(_ condition: @Sendable () -> Bool) async throws {
    for _ in 0..<500 {
        if condition() { return }
        try await Task.sleep(nanoseconds: 10_000_000)
    }
    throw TestFailure("condition not met within 5 s")
}
