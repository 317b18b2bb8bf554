import Communicator
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Testing

/// MQTT 5.0 in full: what the broker announces is honoured, our own limits are announced and
/// enforced, topic aliases, message expiry, request/response, subscription options.
/// Against mosquitto set up to announce small limits, and a scripted broker for what mosquitto
/// cannot be made to send.
@Suite("MQTT 5.0 against mosquitto and a scripted broker")
struct MQTT5Tests {
    func client(_ port: Int, id: String = "m5", configure: (inout MQTTConfig) -> Void = { _ in }) -> MQTTProtocol {
        var config = MQTTConfig(brokerAddress: "127.0.0.1", port: port, timeout: 5, clientID: uniqueID(id), protocolVersion: .v5_0)
        configure(&config)
        return MQTTProtocol(config: config)
    }

    /// Counts transitions to `.connected`.
    final class Connections: @unchecked Sendable {
        let count = NIOLockedValueBox(0)
        init(_ mqtt: MQTTProtocol) {
            mqtt.onStateChange { [count] s in if s == .connected { count.withLockedValue { $0 += 1 } } }
        }
        var value: Int { count.withLockedValue { $0 } }
    }

    @Test("Receive Maximum 2 (max_inflight_messages 2): 1,000 QoS 2 publishes arrive complete and in order, no broker disconnect")
    func receiveMaximum() throws {
        let broker = try Broker.start(.init(extraConfig: "max_inflight_messages 2"))
        defer { broker.stop() }
        let topic = uniqueTopic("rm")
        let sub = try ExternalSubscriber(broker: broker, topic: topic, qos: 2, format: "%p", extraArgs: ["-V", "mqttv5"])
        let mqtt = client(broker.port) { $0.publishQueueMaxsize = 2000 }
        let connections = Connections(mqtt)
        try mqtt.connect()
        defer { mqtt.disconnect() }
        #expect(mqtt.connectionInfo?.receiveMaximum == 2)
        let failures = NIOLockedValueBox(0)
        for i in 0..<1000 {
            try mqtt.publish(topic, ByteBuffer(string: String(i)), qos: 2) { r in
                if case .failure = r { failures.withLockedValue { $0 += 1 } }
            }
        }
        // 4,000 packets two at a time: 0.5 s alone, but the whole suite on 2 cores has starved it
        // past 60 s (935 of 1,000 then). A bound on liveness, not a speed check.
        let lines = try sub.waitForLines(1000, timeout: 240)
        #expect(lines == (0..<1000).map(String.init))
        #expect(failures.withLockedValue { $0 } == 0)
        // A client over the Receive Maximum is disconnected by mosquitto (0x93): one connection only.
        #expect(connections.value == 1)
        #expect(mqtt.state == .connected)
    }

    @Test("the broker's Maximum Packet Size: a larger message is refused locally, the connection stays up")
    func brokerMaximumPacketSize() throws {
        let broker = try Broker.start(.init(extraConfig: "max_packet_size 1000"))
        defer { broker.stop() }
        let topic = uniqueTopic("mps")
        let mqtt = client(broker.port)
        try mqtt.connect()
        defer { mqtt.disconnect() }
        #expect(mqtt.connectionInfo?.maximumPacketSize == 1000)
        let inbox = Inbox()
        try mqtt.subscribe(topic, qos: 1) { m in inbox.add(m) }
        let e = #expect(throws: ProtocolValidationError.self) {
            try mqtt.publish(topic, [UInt8](repeating: 7, count: 2000), qos: 1)
        }
        #expect(e?.message.contains("Maximum Packet Size 1000") == true, "\(e?.message ?? "")")
        try mqtt.publish(topic, "small", qos: 1)
        #expect(try inbox.wait(for: 1).map(\.payload) == ["small"])
        #expect(mqtt.state == .connected)
    }

    @Test("our Maximum Packet Size is announced: mosquitto does not send a larger message to us")
    func ownMaximumPacketSize() throws {
        let broker = try SharedBroker.get()
        let topic = uniqueTopic("own-mps")
        // No incoming topic aliases here: mosquitto 2.1.2 gives the topic an alias in the PUBLISH
        // it then drops as too large, and uses the alias alone in the next one, which a client
        // can only reject (mosquitto_sub fails the same way). mosquitto 2.0 sends no aliases.
        let mqtt = client(broker.port) {
            $0.maxPacketSize = 500
            $0.topicAliasMaximum = 0
        }
        let connections = Connections(mqtt)
        try mqtt.connect()
        defer { mqtt.disconnect() }
        let inbox = Inbox()
        try mqtt.subscribe(topic, qos: 1) { m in inbox.add(m) }
        let sender = client(broker.port, id: "sender")
        try sender.connect()
        defer { sender.disconnect() }
        try sender.publish(topic, String(repeating: "x", count: 1000), qos: 1)
        try sender.publish(topic, "fits", qos: 1)
        #expect(try inbox.wait(for: 1).map(\.payload) == ["fits"])
        usleep(300_000)
        #expect(inbox.count == 1)
        #expect(connections.value == 1, "the connection was dropped")
    }

    @Test("Server Keep Alive (max_keepalive 10) replaces the 60 s we asked for")
    func serverKeepAlive() throws {
        let broker = try Broker.start(.init(extraConfig: "max_keepalive 10"))
        defer { broker.stop() }
        let mqtt = client(broker.port) { $0.keepalive = 60 }
        try mqtt.connect()
        defer { mqtt.disconnect() }
        #expect(mqtt.connectionInfo?.keepAliveSeconds == 10)
    }

    @Test("outgoing topic aliases within the broker's maximum (max_topic_alias 2): every message arrives on its own topic")
    func outgoingTopicAliases() throws {
        let broker = try Broker.start(.init(extraConfig: "max_topic_alias 2"))
        defer { broker.stop() }
        let base = uniqueTopic("alias")
        let sub = try ExternalSubscriber(broker: broker, topic: base + "/#", qos: 1, format: "%t %p")
        let mqtt = client(broker.port)
        let connections = Connections(mqtt)
        try mqtt.connect()
        defer { mqtt.disconnect() }
        #expect(mqtt.connectionInfo?.properties.topicAliasMaximum == 2)
        var expected: [String] = []
        for i in 0..<60 {
            let topic = "\(base)/t\(i % 5)"
            try mqtt.publish(topic, String(i), qos: 1)
            expected.append("\(topic) \(i)")
        }
        #expect(try sub.waitForLines(60, timeout: 30) == expected)
        // mosquitto disconnects a client that uses an alias above its maximum (0x94): still the first connection.
        #expect(connections.value == 1)
    }

    @Test("incoming topic aliases are resolved; an alias above our maximum gets DISCONNECT 0x94")
    func incomingTopicAliases() throws {
        let seen = NIOLockedValueBox<[MQTTPacket]>([])
        let broker = try ScriptedBroker { conn, _ in
            guard case .connect(let c) = try conn.read() else { throw TestFailure("expected CONNECT") }
            guard c.properties.topicAliasMaximum == 4 else {
                throw TestFailure("CONNECT announced \(String(describing: c.properties.topicAliasMaximum))")
            }
            conn.send(.connack(.init(sessionPresent: false, returnCode: 0)))
            guard case .subscribe(let s) = try conn.read() else { throw TestFailure("expected SUBSCRIBE") }
            conn.send(.suback(.init(packetID: s.packetID, reasonCodes: [0])))
            var first = MQTTProperties()
            first.topicAlias = 3
            conn.send(.publish(.init(topic: "cam/1/events", payload: ByteBuffer(string: "a"), qos: .atMostOnce, properties: first)))
            conn.send(.publish(.init(topic: "", payload: ByteBuffer(string: "b"), qos: .atMostOnce, properties: first)))
            var bad = MQTTProperties()
            bad.topicAlias = 5
            conn.send(.publish(.init(topic: "cam/1/events", payload: ByteBuffer(string: "c"), qos: .atMostOnce, properties: bad)))
            while let p = try conn.read(timeout: 5) { seen.withLockedValue { $0.append(p) } }
            conn.close()
        }
        let mqtt = client(broker.port) {
            $0.topicAliasMaximum = 4
            $0.maxReconnectAttempts = 1
            $0.reconnectInitialDelay = .seconds(30)
        }
        let inbox = Inbox()
        try mqtt.subscribe("cam/#", qos: 0) { m in inbox.add(m) }
        try mqtt.connect()
        defer { mqtt.disconnect() }
        let got = try inbox.wait(for: 2)
        #expect(got.map(\.topic) == ["cam/1/events", "cam/1/events"])
        #expect(got.map(\.payload) == ["a", "b"])
        try waitUntil(timeout: 10, "DISCONNECT from the client") { !seen.withLockedValue { $0 }.isEmpty }
        guard case .disconnect(let d) = seen.withLockedValue({ $0 }).first else {
            Issue.record("no DISCONNECT")
            return
        }
        #expect(d.reasonCode == 0x94)
        #expect(d.properties.reasonString?.contains("topic alias 5") == true)
        #expect(inbox.count == 2)
        try waitUntil(timeout: 10, "the error") { mqtt.lastError != nil }
        #expect(mqtt.lastError?.message.contains("topic alias invalid") == true, "\(mqtt.lastError?.message ?? "")")
    }

    @Test("a packet above our Maximum Packet Size gets DISCONNECT 0x95 (packet too large)")
    func incomingTooLarge() throws {
        let seen = NIOLockedValueBox<[MQTTPacket]>([])
        let broker = try ScriptedBroker { conn, _ in
            guard case .connect(let c) = try conn.read() else { throw TestFailure("expected CONNECT") }
            guard c.properties.maximumPacketSize == 256 else {
                throw TestFailure("CONNECT announced \(String(describing: c.properties.maximumPacketSize))")
            }
            conn.send(.connack(.init(sessionPresent: false, returnCode: 0)))
            conn.send(.publish(.init(topic: "big", payload: ByteBuffer(repeating: 1, count: 1000), qos: .atMostOnce)))
            while let p = try conn.read(timeout: 5) { seen.withLockedValue { $0.append(p) } }
            conn.close()
        }
        let mqtt = client(broker.port) {
            $0.maxPacketSize = 256
            $0.maxReconnectAttempts = 1
            $0.reconnectInitialDelay = .seconds(30)
        }
        try mqtt.connect()
        defer { mqtt.disconnect() }
        try waitUntil(timeout: 10, "DISCONNECT from the client") { !seen.withLockedValue { $0 }.isEmpty }
        guard case .disconnect(let d) = seen.withLockedValue({ $0 }).first else {
            Issue.record("no DISCONNECT")
            return
        }
        #expect(d.reasonCode == 0x95)
        try waitUntil(timeout: 10, "the error") { mqtt.lastError != nil }
        #expect(mqtt.lastError?.message.contains("exceeds the maximum packet size 256") == true, "\(mqtt.lastError?.message ?? "")")
    }

    @Test(
        "message expiry: a message that waited past its Message Expiry Interval is not sent, in memory and in the offline store",
        arguments: [false, true])
    func messageExpiry(store: Bool) throws {
        var broker = try Broker.start()
        defer { broker.stop() }
        let topic = uniqueTopic("expiry")
        let dir = TestFiles.makeTempDir("expiry-store")
        let mqtt = client(broker.port) {
            $0.reconnectInitialDelay = .seconds(0.2)
            $0.reconnectMaxDelay = .seconds(0.5)
            $0.maxReconnectAttempts = 0
            if store { $0.offlineStore = OfflineStoreConfig(directory: dir.path, capacity: 4 << 20) }
        }
        try mqtt.connect()
        defer { mqtt.disconnect() }
        broker.stop()
        try waitUntil(timeout: 10, "connection lost") { mqtt.state != .connected }
        let results = NIOLockedValueBox<[String: String]>([:])
        var short = MQTTProperties()
        short.messageExpiryInterval = 1
        var long = MQTTProperties()
        long.messageExpiryInterval = 3600
        for (name, props) in [("short", short), ("long", long), ("none", MQTTProperties())] {
            try mqtt.publish(topic + "/" + name, ByteBuffer(string: name), qos: 1, properties: props) { r in
                results.withLockedValue { $0[name] = (try? r.get()) != nil ? "ok" : "\(r)" }
            }
        }
        sleep(3)
        broker = try broker.restarted()
        try waitUntil(timeout: 30, "three results") { results.withLockedValue { $0.count } == 3 }
        let r = results.withLockedValue { $0 }
        #expect(r["long"] == "ok")
        #expect(r["none"] == "ok")
        #expect(r["short"]?.contains("Message Expiry Interval") == true && r["short"]?.contains("ran out") == true, "\(r)")
        #expect(!broker.log.contains(topic + "/short"), "the expired message reached the broker")
        #expect(broker.log.contains(topic + "/long"))
        if store { try waitUntil(timeout: 10, "store empty") { mqtt.offlineStoreStatus?.pending == 0 } }
    }

    @Test("request/response: the answer with our correlation data comes back; no answer times out")
    func requestResponse() async throws {
        let broker = try SharedBroker.get()
        let service = uniqueTopic("svc")
        let responder = client(broker.port, id: "responder")
        try await responder.connect()
        defer { responder.disconnect() }
        try await responder.subscribe(service, qos: 1) { m in
            guard let to = m.properties.responseTopic else { return }
            var props = MQTTProperties()
            props.correlationData = m.properties.correlationData
            try? responder.publish(to, ByteBuffer(string: "pong:" + m.string), qos: 1, properties: props)
        }
        let requester = client(broker.port, id: "requester")
        try await requester.connect()
        defer { requester.disconnect() }
        async let a = requester.request(service, "a")
        async let b = requester.request(service, "b")
        let (ra, rb) = try await (a, b)
        #expect(ra.string == "pong:a")
        #expect(rb.string == "pong:b")
        #expect(ra.properties.correlationData != rb.properties.correlationData)
        await #expect(throws: ProtocolConnectionError.self) {
            _ = try await requester.request(uniqueTopic("nobody"), ByteBuffer(string: "?"), timeout: 1)
        }
    }

    @Test("subscription options: no local, retain handling, retain as published; a shared subscription splits the messages")
    func subscriptionOptions() throws {
        let broker = try SharedBroker.get()
        let topic = uniqueTopic("opts")
        let mqtt = client(broker.port)
        try mqtt.connect()
        defer { mqtt.disconnect() }
        try mqtt.publish(topic + "/retained", "kept", qos: 1, retain: true)
        let noLocal = Inbox()
        try mqtt.subscribe(topic + "/chat", qos: 1, options: .init(noLocal: true)) { m in noLocal.add(m) }
        let noRetained = Inbox()
        try mqtt.subscribe(topic + "/retained", qos: 1, options: .init(retainHandling: .doNotSend)) { m in noRetained.add(m) }
        let asPublished = Inbox()
        let other = client(broker.port, id: "other")
        try other.connect()
        defer { other.disconnect() }
        try other.subscribe(topic + "/rap", qos: 1, options: .init(retainAsPublished: true)) { m in asPublished.add(m) }
        try mqtt.publish(topic + "/chat", "mine", qos: 1)
        try other.publish(topic + "/chat", "theirs", qos: 1)
        try mqtt.publish(topic + "/rap", "flagged", qos: 1, retain: true)
        #expect(try noLocal.wait(for: 1).map(\.payload) == ["theirs"])
        #expect(try asPublished.wait(for: 1).map(\.payload) == ["flagged"])
        #expect(asPublished.full.first?.retain == true)
        usleep(300_000)
        #expect(noLocal.count == 1)
        #expect(noRetained.count == 0)
        try mqtt.publish(topic + "/rap", ByteBuffer(), qos: 1, retain: true)  // clear the retained ones
        try mqtt.publish(topic + "/retained", ByteBuffer(), qos: 1, retain: true)

        // Shared subscription: each message goes to exactly one member of the group.
        let a = Inbox()
        let b = Inbox()
        let memberB = client(broker.port, id: "member-b")
        try memberB.connect()
        defer { memberB.disconnect() }
        try mqtt.subscribe("$share/g1/\(topic)/work", qos: 1) { m in a.add(m) }
        try memberB.subscribe("$share/g1/\(topic)/work", qos: 1) { m in b.add(m) }
        for i in 0..<40 { try other.publish(topic + "/work", String(i), qos: 1) }
        try waitUntil(timeout: 10, "40 messages over the group") { a.count + b.count == 40 }
        usleep(300_000)
        #expect(Set(a.all.map(\.payload) + b.all.map(\.payload)) == Set((0..<40).map(String.init)))
        #expect(a.count + b.count == 40)
        #expect(a.count > 0 && b.count > 0, "mosquitto shares round robin: \(a.count) / \(b.count)")
        #expect(throws: ProtocolValidationError.self) {
            try mqtt.subscribe("$share/g1/x", qos: 1, options: .init(noLocal: true)) { _ in }
        }
    }

    @Test("publish properties the standard forbids a client to send are refused with the reason")
    func forbiddenPublishProperties() throws {
        let broker = try SharedBroker.get()
        let mqtt = client(broker.port)
        var alias = MQTTProperties()
        alias.topicAlias = 1
        var subID = MQTTProperties()
        subID.subscriptionIdentifiers = [3]
        var zero = MQTTProperties()
        zero.messageExpiryInterval = 0
        var wildcard = MQTTProperties()
        wildcard.responseTopic = "replies/#"
        for (props, words) in [(alias, "topic aliases"), (subID, "MQTT-3.3.4-6"), (zero, "expire at once"), (wildcard, "MQTT-3.3.2-14")] {
            let e = #expect(throws: ProtocolValidationError.self) { try mqtt.publish("a/b", ByteBuffer(), qos: 1, properties: props) }
            #expect(e?.message.contains(words) == true, "\(e?.message ?? "")")
        }
    }
}

/// A toy challenge/response method: the answer to nonce N is "proof:" + N reversed; the
/// broker's final data must be "server-ok" (where SCRAM checks the server signature).
final class ReversingAuthenticator: MQTTAuthenticator, @unchecked Sendable {
    let method = "TEST-REVERSE"
    let steps = NIOLockedValueBox<[String]>([])
    func start() throws -> [UInt8]? {
        steps.withLockedValue { $0.append("start") }
        return Array("client-first".utf8)
    }
    func respond(to challenge: [UInt8]) throws -> [UInt8]? {
        steps.withLockedValue { $0.append("challenge " + String(decoding: challenge, as: UTF8.self)) }
        return Array(("proof:" + String(String(decoding: challenge, as: UTF8.self).reversed())).utf8)
    }
    func finish(_ data: [UInt8]?) throws {
        let text = data.map { String(decoding: $0, as: UTF8.self) } ?? ""
        steps.withLockedValue { $0.append("finish " + text) }
        guard text == "server-ok" else { throw TestFailure("server signature \"\(text)\" is wrong") }
    }
}

@Suite("Enhanced authentication (AUTH)")
struct EnhancedAuthTests {
    static func authProps(_ data: String?) -> MQTTProperties {
        var p = MQTTProperties()
        p.authenticationMethod = "TEST-REVERSE"
        p.authenticationData = data.map { ByteBuffer(string: $0) }
        return p
    }

    /// Plays CONNECT → AUTH challenge → CONNACK (+ final), then a re-authentication.
    static func broker(final: String, log: NIOLockedValueBox<[String]>) throws -> ScriptedBroker {
        try ScriptedBroker { conn, _ in
            func expectAuth(_ code: UInt8, _ data: String) throws {
                // A long wait: under load the test may take a while to ask for the re-authentication.
                guard case .auth(let a) = try conn.read(timeout: 30), a.reasonCode == code,
                    a.properties.authenticationMethod == "TEST-REVERSE",
                    a.properties.authenticationData.map({ String(buffer: $0) }) == data
                else { throw TestFailure("expected AUTH \(code) \(data)") }
                log.withLockedValue { $0.append("auth \(code) \(data)") }
            }
            guard case .connect(let c) = try conn.read(), c.properties.authenticationMethod == "TEST-REVERSE",
                c.properties.authenticationData.map({ String(buffer: $0) }) == "client-first"
            else { throw TestFailure("CONNECT without the method and first data") }
            conn.send(.auth(.init(reasonCode: 0x18, properties: authProps("nonce-123"))))
            try expectAuth(0x18, "proof:321-ecnon")
            var props = authProps(final)
            props.authenticationMethod = "TEST-REVERSE"
            conn.send(.connack(.init(sessionPresent: false, returnCode: 0, properties: props)))
            guard final == "server-ok" else {
                if case .disconnect(let d) = try conn.read() { log.withLockedValue { $0.append("disconnect \(d.reasonCode)") } }
                return
            }
            // Re-authentication.
            try expectAuth(0x19, "client-first")
            conn.send(.auth(.init(reasonCode: 0x18, properties: authProps("nonce-456"))))
            try expectAuth(0x18, "proof:654-ecnon")
            conn.send(.auth(.init(reasonCode: 0x00, properties: authProps("server-ok"))))
            log.withLockedValue { $0.append("reauthenticated") }
            while let p = try conn.read(timeout: 5) {
                if case .disconnect = p { break }
            }
            conn.close()
        }
    }

    @Test("a challenge at connect and a re-authentication run through the authenticator")
    func challengeAndReauth() throws {
        let log = NIOLockedValueBox<[String]>([])
        let broker = try Self.broker(final: "server-ok", log: log)
        let auth = ReversingAuthenticator()
        var config = MQTTConfig(brokerAddress: "127.0.0.1", port: broker.port, timeout: 5, clientID: uniqueID("auth"))
        config.authenticator = auth
        let mqtt = MQTTProtocol(config: config)
        try mqtt.connect()
        #expect(auth.steps.withLockedValue { $0 } == ["start", "challenge nonce-123", "finish server-ok"])
        try mqtt.reauthenticate()
        do {
            try waitUntil(timeout: 30, "re-authenticated") { log.withLockedValue { $0.contains("reauthenticated") } }
        } catch {
            Issue.record("broker saw \(log.withLockedValue { $0 }), script errors \(broker.scriptErrors)")
            throw error
        }
        try waitUntil(timeout: 10, "finish") { auth.steps.withLockedValue { $0.count } == 6 }
        #expect(auth.steps.withLockedValue { $0 }.suffix(3) == ["start", "challenge nonce-456", "finish server-ok"])
        #expect(mqtt.state == .connected)
        mqtt.disconnect()
        #expect(broker.scriptErrors.isEmpty, "\(broker.scriptErrors)")
    }

    @Test("a broker whose final data fails our check is left with DISCONNECT 0x80 and an authentication error")
    func badServerSignature() throws {
        let log = NIOLockedValueBox<[String]>([])
        let broker = try Self.broker(final: "forged", log: log)
        var config = MQTTConfig(brokerAddress: "127.0.0.1", port: broker.port, timeout: 5, clientID: uniqueID("auth"))
        let auth = ReversingAuthenticator()
        config.authenticator = auth
        let mqtt = MQTTProtocol(config: config)
        let e = #expect(throws: ProtocolAuthenticationError.self) { try mqtt.connect() }
        #expect(auth.steps.withLockedValue { $0 } == ["start", "challenge nonce-123", "finish forged"])
        #expect(e?.message.contains("server signature \"forged\" is wrong") == true, "\(e?.message ?? "")")
        try waitUntil(timeout: 5, "DISCONNECT") { log.withLockedValue { $0.contains("disconnect 128") } }
        #expect(broker.scriptErrors.isEmpty, "\(broker.scriptErrors)")
    }
}

/// More than one broker: failover, and 5.0 server redirection.
@Suite("Several brokers and server redirection")
struct FailoverTests {
    @Test("a dead first broker: the client connects to the second one at once, within one back-off step")
    func deadFirstBroker() throws {
        let live = try SharedBroker.get()
        let dead = Broker.freePort()
        var config = MQTTConfig(brokerAddress: "127.0.0.1", port: dead, timeout: 5, reconnectInitialDelay: 5, clientID: uniqueID("fo"))
        config.failoverBrokers = [BrokerEndpoint(host: "127.0.0.1", port: live.port)]
        let mqtt = MQTTProtocol(config: config)
        let start = Date()
        try mqtt.connect()
        defer { mqtt.disconnect() }
        let took = Date().timeIntervalSince(start)
        #expect(mqtt.broker.port == live.port)
        // One moment's view: connected, to the live broker, after the dead one's error.
        let view = mqtt.snapshot
        #expect(view.state == .connected && view.broker.port == live.port && view.connectionInfo != nil && view.sessionPresent == false)
        #expect(.seconds(took) < config.reconnectInitialDelay, "failover took \(took) s")
    }

    @Test("every broker dead: connect fails naming each one")
    func allDead() throws {
        let (a, b) = (Broker.freePort(), Broker.freePort())
        var config = MQTTConfig(brokerAddress: "127.0.0.1", port: a, timeout: 5, clientID: uniqueID("fo"))
        config.failoverBrokers = [BrokerEndpoint(host: "127.0.0.1", port: b)]
        let mqtt = MQTTProtocol(config: config)
        let e = #expect(throws: ProtocolConnectionError.self) { try mqtt.connect() }
        #expect(e?.message.contains("127.0.0.1:\(a)") == true && e?.message.contains("127.0.0.1:\(b)") == true, "\(e?.message ?? "")")
    }

    @Test("the connected broker dies: the client goes to the other one within one back-off step and nothing is lost")
    func failoverOnLoss() throws {
        let first = try Broker.start()
        defer { first.stop() }
        let second = try Broker.start()
        defer { second.stop() }
        let topic = uniqueTopic("fo-loss")
        let sub = try ExternalSubscriber(broker: second, topic: topic, qos: 1, format: "%p")
        var config = MQTTConfig(
            brokerAddress: "127.0.0.1", port: first.port, timeout: 5, reconnectInitialDelay: 1, reconnectMaxDelay: 1,
            clientID: uniqueID("fo"))
        config.failoverBrokers = [BrokerEndpoint(host: "127.0.0.1", port: second.port)]
        let mqtt = MQTTProtocol(config: config)
        try mqtt.connect()
        defer { mqtt.disconnect() }
        #expect(mqtt.broker.port == first.port)
        first.kill9()
        let lost = Date()
        try waitUntil(timeout: 10, "connected to the second broker") { mqtt.state == .connected && mqtt.broker.port == second.port }
        let took = Date().timeIntervalSince(lost)
        #expect(took < 2 * 1.2 + 1, "failover after a loss took \(took) s (one back-off step is 1 s ± 20 %)")
        for i in 0..<20 { try mqtt.publish(topic, String(i), qos: 1) }
        #expect(try sub.waitForLines(20, timeout: 20) == (0..<20).map(String.init))
    }

    static func redirectingBroker(code: UInt8, to reference: String, afterConnect: Bool) throws -> ScriptedBroker {
        try ScriptedBroker(connections: 1) { conn, _ in
            guard case .connect = try conn.read() else { throw TestFailure("expected CONNECT") }
            var props = MQTTProperties()
            props.serverReference = reference
            props.reasonString = "maintenance"
            if afterConnect {
                conn.send(.connack(.init(sessionPresent: false, returnCode: 0)))
                usleep(300_000)
                conn.send(.disconnect(.init(reasonCode: code, properties: props)))
            } else {
                conn.send(.connack(.init(sessionPresent: false, returnCode: code, properties: props)))
            }
            _ = try conn.read(timeout: 2)
            conn.close()
        }
    }

    @Test("CONNACK 0x9C (use another server) with an allowed Server Reference: the client connects there")
    func connackRedirect() throws {
        let target = try SharedBroker.get()
        let redirector = try Self.redirectingBroker(
            code: 0x9C, to: "localhost:\(target.port) 127.0.0.1:\(target.port)", afterConnect: false)
        var config = MQTTConfig(brokerAddress: "127.0.0.1", port: redirector.port, timeout: 5, clientID: uniqueID("redir"))
        config.serverReferenceAllowList = ["127.0.0.1"]
        let mqtt = MQTTProtocol(config: config)
        try mqtt.connect()
        defer { mqtt.disconnect() }
        #expect(mqtt.broker == BrokerEndpoint(host: "127.0.0.1", port: target.port))
        #expect(mqtt.state == .connected)
    }

    @Test("a Server Reference outside the configured brokers and the allow-list is not followed")
    func redirectRefused() throws {
        let target = try SharedBroker.get()
        let redirector = try Self.redirectingBroker(code: 0x9C, to: "127.0.0.1:\(target.port)", afterConnect: false)
        let id = "redir-no-\(UUID().uuidString.prefix(8))"
        let mqtt = MQTTProtocol(config: MQTTConfig(brokerAddress: "127.0.0.1", port: redirector.port, timeout: 5, clientID: .fixed(id)))
        let e = #expect(throws: ProtocolError.self) { try mqtt.connect() }
        #expect(e?.code == 0x9C)
        #expect(e?.message.contains("use another server") == true, "\(e?.message ?? "")")
        #expect(mqtt.broker.port == redirector.port)
        #expect(!target.log.contains(id), "the client went to a server it was not allowed to")
    }

    @Test("DISCONNECT 0x9D (server moved) while connected: the client moves to the configured broker named")
    func disconnectMoved() throws {
        let target = try SharedBroker.get()
        let redirector = try Self.redirectingBroker(code: 0x9D, to: "127.0.0.1:\(target.port)", afterConnect: true)
        var config = MQTTConfig(
            brokerAddress: "127.0.0.1", port: redirector.port, timeout: 5, reconnectInitialDelay: 10, clientID: uniqueID("moved"))
        config.failoverBrokers = [BrokerEndpoint(host: "127.0.0.1", port: target.port)]
        let mqtt = MQTTProtocol(config: config)
        try mqtt.connect()
        defer { mqtt.disconnect() }
        #expect(mqtt.broker.port == redirector.port)
        // Moved at once, without the 10 s back-off.
        try waitUntil(timeout: 5, "moved") { mqtt.state == .connected && mqtt.broker.port == target.port }
        #expect(mqtt.lastError?.message.contains("server moved") == true, "\(mqtt.lastError?.message ?? "")")
        let topic = uniqueTopic("moved")
        let inbox = Inbox()
        try mqtt.subscribe(topic, qos: 1) { m in inbox.add(m) }
        try mqtt.publish(topic, "here", qos: 1)
        #expect(try inbox.wait(for: 1).map(\.payload) == ["here"])
    }
}
