import NIOCore
import Testing

@testable import Communicator

private func bytes(_ b: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: b) }
/// The wire bytes from pieces (one call instead of a chain of `+`: quick to type-check).
private func w(_ parts: [UInt8]...) -> [UInt8] { parts.flatMap { $0 } }
private func str(_ s: String) -> [UInt8] { [UInt8(s.utf8.count >> 8), UInt8(s.utf8.count & 0xFF)] + Array(s.utf8) }

/// Golden vectors written by hand from the standards' field layouts (3.1.1 §3, 5.0 §3).
struct GoldenVector: CustomTestStringConvertible, Sendable {
    let name: String
    let version: MQTTVersion
    let packet: MQTTPacket
    let wire: [UInt8]
    var testDescription: String { "\(name) (\(version))" }
}

private func will(_ props: MQTTProperties = .init()) -> MQTTPacket.Will {
    .init(topic: "w", payload: bytes([0x78]), qos: .atLeastOnce, retain: true, properties: props)
}

// A function rather than a closure: each statement is type-checked on its own (Swift 6.2's type
// checker gives up on the whole closure at once).
private func makeGoldenVectors() -> [GoldenVector] {
    var v: [GoldenVector] = []
    // CONNECT 3.1.1 §3.1: flags user|password|will retain|will QoS 1|will|clean = 0xEE.
    v.append(
        .init(
            name: "CONNECT", version: .v3_1_1,
            packet: .connect(
                .init(
                    version: .v3_1_1, clientID: "c1", cleanStart: true, keepAliveSeconds: 60, username: "u",
                    password: bytes([0x70]), will: will())),
            wire: w([0x10, 26], str("MQTT"), [0x04, 0xEE, 0x00, 0x3C], str("c1"), str("w"), str("x"), str("u"), str("p"))))
    var sessionProps = MQTTProperties()
    sessionProps.sessionExpiryInterval = 3600
    var willProps = MQTTProperties()
    willProps.willDelayInterval = 5
    v.append(
        .init(
            name: "CONNECT with properties", version: .v5_0,
            packet: .connect(
                .init(
                    version: .v5_0, clientID: "c1", cleanStart: true, keepAliveSeconds: 60, username: "u",
                    password: bytes([0x70]), will: will(willProps), properties: sessionProps)),
            wire: w(
                [0x10, 38], str("MQTT"), [0x05, 0xEE, 0x00, 0x3C, 0x05, 0x11, 0x00, 0x00, 0x0E, 0x10], str("c1"),
                [0x05, 0x18, 0x00, 0x00, 0x00, 0x05], str("w"), str("x"), str("u"), str("p"))))
    v.append(
        .init(
            name: "CONNECT minimal", version: .v3_1_1,
            packet: .connect(.init(version: .v3_1_1, clientID: "", cleanStart: true, keepAliveSeconds: 0)),
            wire: w([0x10, 12], str("MQTT"), [0x04, 0x02, 0x00, 0x00], str(""))))
    v.append(
        .init(
            name: "CONNACK", version: .v3_1_1, packet: .connack(.init(sessionPresent: true, returnCode: 0)),
            wire: [0x20, 0x02, 0x01, 0x00]))
    v.append(
        .init(
            name: "CONNACK refused 4", version: .v3_1_1, packet: .connack(.init(sessionPresent: false, returnCode: 4)),
            wire: [0x20, 0x02, 0x00, 0x04]))
    var connackProps = MQTTProperties()
    connackProps.receiveMaximum = 10
    connackProps.topicAliasMaximum = 5
    v.append(
        .init(
            name: "CONNACK with limits", version: .v5_0,
            packet: .connack(.init(sessionPresent: false, returnCode: 0, properties: connackProps)),
            wire: [0x20, 0x09, 0x00, 0x00, 0x06, 0x21, 0x00, 0x0A, 0x22, 0x00, 0x05]))
    // PUBLISH: DUP 0x08 | QoS 1 0x02 | RETAIN 0x01.
    v.append(
        .init(
            name: "PUBLISH QoS 1 dup retain", version: .v3_1_1,
            packet: .publish(.init(topic: "a/b", payload: bytes([0x68, 0x69]), qos: .atLeastOnce, retain: true, dup: true, packetID: 10)),
            wire: w([0x3B, 0x09], str("a/b"), [0x00, 0x0A, 0x68, 0x69])))
    v.append(
        .init(
            name: "PUBLISH QoS 2", version: .v3_1_1,
            packet: .publish(.init(topic: "t", payload: bytes([]), qos: .exactlyOnce, packetID: 0xFFFF)),
            wire: w([0x34, 0x05], str("t"), [0xFF, 0xFF])))
    var pubProps = MQTTProperties()
    pubProps.payloadFormatIndicator = 1
    pubProps.contentType = "text"
    v.append(
        .init(
            name: "PUBLISH QoS 0 with properties", version: .v5_0,
            packet: .publish(.init(topic: "t", payload: bytes([0x78]), qos: .atMostOnce, properties: pubProps)),
            wire: w([0x30, 0x0E], str("t"), [0x09, 0x01, 0x01, 0x03], str("text"), [0x78])))
    for (kind, first) in [(MQTTPacket.Ack.Kind.puback, UInt8(0x40)), (.pubrec, 0x50), (.pubrel, 0x62), (.pubcomp, 0x70)] {
        v.append(.init(name: "\(kind)", version: .v3_1_1, packet: .ack(.init(kind, packetID: 10)), wire: [first, 0x02, 0x00, 0x0A]))
        v.append(
            .init(
                name: "\(kind) success short form", version: .v5_0, packet: .ack(.init(kind, packetID: 10)),
                wire: [first, 0x02, 0x00, 0x0A]))
    }
    v.append(
        .init(
            name: "PUBACK no matching subscribers", version: .v5_0, packet: .ack(.init(.puback, packetID: 10, reasonCode: 0x10)),
            wire: [0x40, 0x03, 0x00, 0x0A, 0x10]))
    var reason = MQTTProperties()
    reason.reasonString = "no"
    v.append(
        .init(
            name: "PUBREC not authorized with reason string", version: .v5_0,
            packet: .ack(.init(.pubrec, packetID: 10, reasonCode: 0x87, properties: reason)),
            wire: w([0x50, 0x09, 0x00, 0x0A, 0x87, 0x05, 0x1F], str("no"))))
    v.append(
        .init(
            name: "SUBSCRIBE", version: .v3_1_1,
            packet: .subscribe(.init(packetID: 1, subscriptions: [.init(filter: "a/#", qos: .atLeastOnce)])),
            wire: w([0x82, 0x08, 0x00, 0x01], str("a/#"), [0x01])))
    var subProps = MQTTProperties()
    subProps.subscriptionIdentifiers = [5]
    v.append(
        .init(
            name: "SUBSCRIBE with options and identifier", version: .v5_0,
            packet: .subscribe(
                .init(
                    packetID: 1,
                    subscriptions: [
                        .init(filter: "a/#", qos: .atLeastOnce, noLocal: true, retainAsPublished: true, retainHandling: .doNotSend)
                    ], properties: subProps)),
            wire: w([0x82, 0x0B, 0x00, 0x01, 0x02, 0x0B, 0x05], str("a/#"), [0x2D])))
    v.append(
        .init(
            name: "SUBACK", version: .v3_1_1, packet: .suback(.init(packetID: 1, reasonCodes: [1, 0x80])),
            wire: [0x90, 0x04, 0x00, 0x01, 0x01, 0x80]))
    v.append(
        .init(
            name: "SUBACK", version: .v5_0, packet: .suback(.init(packetID: 1, reasonCodes: [2])),
            wire: [0x90, 0x04, 0x00, 0x01, 0x00, 0x02]))
    v.append(
        .init(
            name: "UNSUBSCRIBE", version: .v3_1_1, packet: .unsubscribe(.init(packetID: 2, filters: ["a"])),
            wire: w([0xA2, 0x05, 0x00, 0x02], str("a"))))
    v.append(
        .init(
            name: "UNSUBSCRIBE", version: .v5_0, packet: .unsubscribe(.init(packetID: 2, filters: ["a"])),
            wire: w([0xA2, 0x06, 0x00, 0x02, 0x00], str("a"))))
    v.append(.init(name: "UNSUBACK", version: .v3_1_1, packet: .unsuback(.init(packetID: 2)), wire: [0xB0, 0x02, 0x00, 0x02]))
    v.append(
        .init(
            name: "UNSUBACK", version: .v5_0, packet: .unsuback(.init(packetID: 2, reasonCodes: [0x11])),
            wire: [0xB0, 0x04, 0x00, 0x02, 0x00, 0x11]))
    for version in [MQTTVersion.v3_1_1, .v5_0] {
        v.append(.init(name: "PINGREQ", version: version, packet: .pingreq, wire: [0xC0, 0x00]))
        v.append(.init(name: "PINGRESP", version: version, packet: .pingresp, wire: [0xD0, 0x00]))
        v.append(.init(name: "DISCONNECT", version: version, packet: .disconnect(.init()), wire: [0xE0, 0x00]))
    }
    v.append(.init(name: "DISCONNECT with Will", version: .v5_0, packet: .disconnect(.init(reasonCode: 0x04)), wire: [0xE0, 0x01, 0x04]))
    var expiry0 = MQTTProperties()
    expiry0.sessionExpiryInterval = 0
    v.append(
        .init(
            name: "DISCONNECT with session expiry", version: .v5_0,
            packet: .disconnect(.init(reasonCode: 0, properties: expiry0)),
            wire: [0xE0, 0x07, 0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x00]))
    v.append(.init(name: "AUTH success", version: .v5_0, packet: .auth(.init()), wire: [0xF0, 0x00]))
    var authProps = MQTTProperties()
    authProps.authenticationMethod = "SCRAM"
    v.append(
        .init(
            name: "AUTH continue", version: .v5_0, packet: .auth(.init(reasonCode: 0x18, properties: authProps)),
            wire: w([0xF0, 0x0A, 0x18, 0x08, 0x15], str("SCRAM"))))
    return v
}

private let goldenVectors = makeGoldenVectors()

@Suite("Codec")
struct CodecTests {
    @Test("properties are values: a copy changed later leaves the original alone; empty is empty again")
    func propertiesAreValues() {
        var a = MQTTProperties()
        #expect(a.isEmpty && a.encodedLength == 0)
        a.contentType = "image/jpeg"
        a.userProperties.append((name: "k", value: "v"))
        var b = a
        #expect(b == a)
        b.contentType = "text/plain"
        b.userProperties.append((name: "k2", value: "v2"))
        #expect(a.contentType == "image/jpeg" && a.userProperties.count == 1)
        #expect(b.contentType == "text/plain" && b.userProperties.count == 2)
        #expect(a != b)
        var c = a
        c.contentType = nil
        c.userProperties = []
        #expect(c.isEmpty && c == MQTTProperties() && c.encodedLength == 0)
        #expect(!a.isEmpty && a.encodedLength == (1 + 2 + 10) + (1 + 2 + 1 + 2 + 1))
        var v = MQTTProperties.Values()
        v.messageExpiryInterval = 30
        #expect(MQTTProperties(values: v).messageExpiryInterval == 30)
        #expect(MQTTProperties(values: .init()).isEmpty)
    }

    @Test("encodes to the golden bytes", arguments: goldenVectors)
    func encode(_ v: GoldenVector) {
        let out = v.packet.encoded(version: v.version)
        #expect(Array(out.readableBytesView) == v.wire)
        #expect(v.packet.encodedSize(version: v.version) == v.wire.count)
    }

    @Test("decodes the golden bytes", arguments: goldenVectors)
    func decode(_ v: GoldenVector) throws {
        #expect(try MQTTPacket.decode(bytes(v.wire), version: v.version) == v.packet)
    }

    @Test("a stream split at every byte yields the same packets")
    func streaming() throws {
        let packets = goldenVectors.filter { $0.version == .v5_0 }
        let stream = packets.flatMap(\.wire)
        for split in 0...stream.count {
            var buffer = ByteBuffer()
            var decoded: [MQTTPacket] = []
            for chunk in [Array(stream[..<split]), Array(stream[split...])] {
                buffer.writeBytes(chunk)
                while let frame = try MQTTFrame.next(from: &buffer, maxPacketSize: 1 << 20) {
                    decoded.append(try MQTTPacket.decode(frame, version: .v5_0))
                }
            }
            #expect(decoded == packets.map(\.packet))
        }
    }

    @Test("every property survives a round trip")
    func allProperties() throws {
        var p = MQTTProperties()
        p.payloadFormatIndicator = 1
        p.messageExpiryInterval = 60
        p.contentType = "application/json"
        p.responseTopic = "r/t"
        p.correlationData = bytes([1, 2, 3])
        p.subscriptionIdentifiers = [1, 268_435_455]
        p.topicAlias = 3
        p.userProperties = [("k", "v"), ("k", "v2")]
        let publish = MQTTPacket.publish(.init(topic: "x", payload: bytes([9]), qos: .atLeastOnce, packetID: 7, properties: p))
        #expect(try MQTTPacket.decode(publish.encoded(version: .v5_0), version: .v5_0) == publish)

        var c = MQTTProperties()
        c.sessionExpiryInterval = 1
        c.assignedClientIdentifier = "auto-1"
        c.serverKeepAlive = 30
        c.authenticationMethod = "m"
        c.authenticationData = bytes([0])
        c.responseInformation = "resp/"
        c.serverReference = "other:1883"
        c.reasonString = "fine"
        c.receiveMaximum = 2
        c.topicAliasMaximum = 4
        c.maximumQoS = 1
        c.retainAvailable = 0
        c.userProperties = [("a", "b")]
        c.maximumPacketSize = 1024
        c.wildcardSubscriptionAvailable = 0
        c.subscriptionIdentifierAvailable = 0
        c.sharedSubscriptionAvailable = 0
        let connack = MQTTPacket.connack(.init(sessionPresent: true, returnCode: 0, properties: c))
        #expect(try MQTTPacket.decode(connack.encoded(version: .v5_0), version: .v5_0) == connack)

        var k = MQTTProperties()
        k.requestProblemInformation = 0
        k.requestResponseInformation = 1
        k.maximumPacketSize = 4096
        k.receiveMaximum = 100
        k.topicAliasMaximum = 10
        k.authenticationMethod = "SCRAM-SHA-256"
        var w = MQTTProperties()
        w.willDelayInterval = 10
        w.messageExpiryInterval = 5
        w.contentType = "text/plain"
        w.responseTopic = "x"
        w.correlationData = bytes([7])
        w.payloadFormatIndicator = 1
        let connect = MQTTPacket.connect(
            .init(
                version: .v5_0, clientID: "id", cleanStart: false, keepAliveSeconds: 5, username: "u", password: nil,
                will: .init(topic: "w", payload: bytes([1]), qos: .exactlyOnce, retain: false, properties: w), properties: k))
        #expect(try MQTTPacket.decode(connect.encoded(version: .v5_0), version: .v5_0) == connect)
    }

    @Test("remaining length: 1 to 4 bytes, minimal encoding, boundaries")
    func remainingLength() throws {
        for (value, encoded) in [
            (0, [0x00]), (127, [0x7F]), (128, [0x80, 0x01]), (16_383, [0xFF, 0x7F]), (16_384, [0x80, 0x80, 0x01]),
            (2_097_151, [0xFF, 0xFF, 0x7F]), (2_097_152, [0x80, 0x80, 0x80, 0x01]), (268_435_455, [0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            var b = ByteBuffer()
            VarInt.write(value, to: &b)
            #expect(Array(b.readableBytesView) == encoded.map(UInt8.init))
            #expect(try VarInt.read(from: &b, what: "x") == value)
        }
        // A payload big enough to need a 3-byte remaining length.
        let big = MQTTPacket.publish(.init(topic: "t", payload: ByteBuffer(repeating: 0x41, count: 20_000), qos: .atMostOnce))
        let wire = big.encoded(version: .v3_1_1)
        // body 2 + 1 + 20000 = 20003 = 0x23 + 0x1C·128 + 1·16384
        #expect(Array(wire.readableBytesView.prefix(4)) == [0x30, 0xA3, 0x9C, 0x01])
        #expect(try MQTTPacket.decode(wire, version: .v3_1_1) == big)
    }

    struct Malformed: CustomTestStringConvertible, Sendable {
        let name: String
        let version: MQTTVersion
        let wire: [UInt8]
        let expected: String
        var testDescription: String { name }
    }

    static let malformed: [Malformed] = [
        .init(
            name: "remaining length over 4 bytes", version: .v3_1_1, wire: [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
            expected: "more than 4 bytes"),
        .init(name: "truncated packet", version: .v3_1_1, wire: [0x30, 0x05, 0x00, 0x03, 0x61], expected: "truncated"),
        .init(name: "body shorter than its fields", version: .v3_1_1, wire: [0x30, 0x02, 0x00, 0x03], expected: "truncated"),
        .init(name: "PUBACK with reserved flag bits", version: .v3_1_1, wire: [0x42, 0x02, 0x00, 0x0A], expected: "reserved flag bits"),
        .init(
            name: "SUBSCRIBE without its 0b0010 flags", version: .v3_1_1, wire: w([0x80, 0x06, 0x00, 0x01], str("a"), [0x00]),
            expected: "reserved flag bits"),
        .init(name: "PUBREL without its 0b0010 flags", version: .v3_1_1, wire: [0x60, 0x02, 0x00, 0x01], expected: "reserved flag bits"),
        .init(name: "packet type 0", version: .v3_1_1, wire: [0x00, 0x00], expected: "reserved packet type"),
        .init(
            name: "invalid UTF-8 in a topic", version: .v3_1_1, wire: [0x30, 0x05, 0x00, 0x03, 0x61, 0xFF, 0x62],
            expected: "not valid UTF-8"),
        .init(name: "U+0000 in a topic", version: .v3_1_1, wire: [0x30, 0x05, 0x00, 0x03, 0x61, 0x00, 0x62], expected: "U+0000"),
        .init(
            name: "UTF-16 surrogate encoded in a topic", version: .v3_1_1, wire: [0x30, 0x05, 0x00, 0x03, 0xED, 0xA0, 0x80],
            expected: "not valid UTF-8"),
        .init(name: "wildcard in a PUBLISH topic", version: .v3_1_1, wire: w([0x30, 0x05], str("a/#")), expected: "wildcard"),
        .init(name: "PUBLISH QoS 3", version: .v3_1_1, wire: w([0x36, 0x05], str("a"), [0x00, 0x01]), expected: "QoS 3"),
        .init(name: "PUBLISH QoS 0 with DUP", version: .v3_1_1, wire: w([0x38, 0x03], str("a")), expected: "DUP"),
        .init(
            name: "PUBLISH packet identifier 0", version: .v3_1_1, wire: w([0x32, 0x05], str("a"), [0x00, 0x00]), expected: "identifier 0"),
        .init(name: "empty topic on 3.1.1", version: .v3_1_1, wire: [0x30, 0x02, 0x00, 0x00], expected: "empty topic"),
        .init(name: "CONNACK reserved flag bits", version: .v3_1_1, wire: [0x20, 0x02, 0x02, 0x00], expected: "reserved bits"),
        .init(name: "CONNACK too long on 3.1.1", version: .v3_1_1, wire: [0x20, 0x03, 0x00, 0x00, 0x00], expected: "unexpected bytes"),
        .init(name: "SUBACK undefined return code", version: .v3_1_1, wire: [0x90, 0x03, 0x00, 0x01, 0x03], expected: "not defined"),
        .init(name: "SUBSCRIBE without filters", version: .v3_1_1, wire: [0x82, 0x02, 0x00, 0x01], expected: "without any topic filter"),
        .init(
            name: "CONNECT reserved flag", version: .v3_1_1, wire: w([0x10, 12], str("MQTT"), [0x04, 0x03, 0x00, 0x00], str("")),
            expected: "reserved flag"),
        .init(
            name: "CONNECT password without user name on 3.1.1", version: .v3_1_1,
            wire: w([0x10, 15], str("MQTT"), [0x04, 0x42, 0x00, 0x00], str(""), str("p")), expected: "without user name"),
        .init(
            name: "CONNECT unknown protocol level", version: .v3_1_1, wire: w([0x10, 12], str("MQTT"), [0x03, 0x02, 0x00, 0x00], str("")),
            expected: "unsupported protocol"),
        .init(name: "AUTH on 3.1.1", version: .v3_1_1, wire: [0xF0, 0x00], expected: "AUTH packet on an MQTT 3.1.1"),
        .init(
            name: "property appearing twice", version: .v5_0, wire: w([0x30, 0x08], str("t"), [0x04, 0x01, 0x01, 0x01, 0x00]),
            expected: "appears twice"),
        .init(
            name: "property not allowed in the packet", version: .v5_0, wire: w([0x30, 0x07], str("t"), [0x03, 0x21, 0x00, 0x01]),
            expected: "not allowed in PUBLISH"),
        .init(name: "unknown property", version: .v5_0, wire: w([0x30, 0x05], str("t"), [0x01, 0x7E]), expected: "not allowed"),
        .init(
            name: "property length past the end", version: .v5_0, wire: w([0x30, 0x05], str("t"), [0x09, 0x01]),
            expected: "runs past the end"),
        .init(
            name: "Receive Maximum 0", version: .v5_0, wire: [0x20, 0x06, 0x00, 0x00, 0x03, 0x21, 0x00, 0x00], expected: "Receive Maximum 0"
        ),
        .init(
            name: "Maximum QoS 2 in CONNACK", version: .v5_0, wire: [0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x02], expected: "invalid value"),
        .init(
            name: "Topic Alias 0", version: .v5_0, wire: w([0x30, 0x07], str("t"), [0x03, 0x23, 0x00, 0x00]), expected: "Topic Alias 0"),
        .init(
            name: "subscription identifier 0", version: .v5_0, wire: w([0x30, 0x06], str("t"), [0x02, 0x0B, 0x00]),
            expected: "subscription identifier 0"),
        .init(
            name: "SUBSCRIBE retain handling 3", version: .v5_0, wire: w([0x82, 0x07, 0x00, 0x01, 0x00], str("a"), [0x30]),
            expected: "retain handling"),
    ]

    @Test("malformed input is an error that names the cause", arguments: malformed)
    func malformedInput(_ m: Malformed) {
        do {
            let packet = try MQTTPacket.decode(bytes(m.wire), version: m.version)
            Issue.record("decoded \(packet) from malformed bytes")
        } catch {
            #expect(error.description.contains(m.expected), "\(error.description)")
        }
    }

    @Test(
        "topics decode as sent: ASCII, and UTF-8 beyond it (two-, three- and four-byte characters, and U+007F)",
        arguments: ["sensors/cam-1", "caf\u{E9}/\u{FC}ber", "\u{20AC}/\u{1F4F7}", "a\u{7F}b"])
    func topicDecodes(_ topic: String) throws {
        let packet = try MQTTPacket.decode(bytes(w([0x30, UInt8(topic.utf8.count + 2)], str(topic))), version: .v3_1_1)
        guard case .publish(let p) = packet else {
            Issue.record("not a PUBLISH: \(packet)")
            return
        }
        #expect(p.topic == topic && p.topic.utf8.elementsEqual(topic.utf8))
    }

    @Test("a packet value is no larger than a PUBLISH: CONNECT, the largest, is boxed (every action and queue entry holds one)")
    func packetValueSize() {
        #expect(MemoryLayout<MQTTPacket>.size <= MemoryLayout<MQTTPacket.Publish>.size + 1, "\(MemoryLayout<MQTTPacket>.size) bytes")
        #expect(MemoryLayout<MQTTPacket.Connect>.size > MemoryLayout<MQTTPacket.Publish>.size)
    }

    @Test("a packet larger than allowed is refused from its header, before the body arrives")
    func tooLarge() {
        var b = bytes([0x30, 0xE8, 0x07])  // announces 1000 bytes, none present yet
        #expect(throws: MQTTDecodeError.packetTooLarge(size: 1003, limit: 100)) {
            _ = try MQTTFrame.next(from: &b, maxPacketSize: 100)
        }
    }

    @Test("random packets round-trip (seeded)")
    func randomRoundTrips() throws {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<2000 {
            let version: MQTTVersion = rng.next() % 2 == 0 ? .v3_1_1 : .v5_0
            let topicLen = Int(rng.next() % 40) + 1
            let topic = String((0..<topicLen).map { _ in Character(UnicodeScalar(UInt8(97 + rng.next() % 26))) })
            let qos = QoS(rawValue: UInt8(rng.next() % 3))!
            let payload = ByteBuffer(bytes: (0..<Int(rng.next() % 300)).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
            var props = MQTTProperties()
            if version == .v5_0 && rng.next() % 2 == 0 {
                props.messageExpiryInterval = UInt32(truncatingIfNeeded: rng.next())
                props.userProperties = [("n", "\(rng.next())")]
            }
            let p = MQTTPacket.publish(
                .init(
                    topic: topic, payload: payload, qos: qos, retain: rng.next() % 2 == 0, dup: qos != .atMostOnce && rng.next() % 2 == 0,
                    packetID: qos == .atMostOnce ? nil : UInt16(rng.next() % 65535 + 1), properties: props))
            #expect(try MQTTPacket.decode(p.encoded(version: version), version: version) == p)
        }
    }

    @Test("random bytes never crash the decoder (seeded)")
    func fuzz() {
        var rng = SplitMix64(seed: 7)
        var decodedCount = 0
        for _ in 0..<20_000 {
            let len = Int(rng.next() % 24)
            var raw = (0..<len).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            if !raw.isEmpty { raw[0] = UInt8(truncatingIfNeeded: rng.next() % 16) << 4 | UInt8(truncatingIfNeeded: rng.next() % 16) }
            if raw.count > 1 { raw[1] = UInt8(raw.count - 2) }
            for version in [MQTTVersion.v3_1_1, .v5_0] {
                if (try? MQTTPacket.decode(ByteBuffer(bytes: raw), version: version)) != nil { decodedCount += 1 }
            }
        }
        // Some random inputs are valid packets (PINGREQ, short acks...); most are not.
        #expect(decodedCount > 0)
        #expect(decodedCount < 40_000)
    }
}
