import NIOCore

// Decoding: bytes → MQTTPacket. `MQTTFrame.next` cuts one packet out of a stream (or says it needs
// more bytes); `MQTTPacket.decode` parses the packet. Every rule violation is an MQTTDecodeError
// naming the field and the rule; nothing here traps on hostile input.

/// One framed packet: its first byte and its body.
public struct MQTTFrame: Sendable {
    public var firstByte: UInt8
    public var body: ByteBuffer

    /// Reads one whole packet from the front of `buffer`, or returns nil (consuming nothing) when
    /// more bytes are needed. `maxPacketSize` bounds the whole packet, fixed header included,
    /// so an oversized packet is refused before its body is buffered.
    public static func next(from buffer: inout ByteBuffer, maxPacketSize: Int) throws(MQTTDecodeError) -> MQTTFrame? {
        let start = buffer.readerIndex
        guard let first = buffer.getInteger(at: start, as: UInt8.self) else { return nil }
        switch VarInt.peek(buffer, at: start + 1) {
        case .needMore:
            return nil
        case .invalid:
            throw .malformed("remaining length uses more than 4 bytes")
        case .value(let length, let n):
            let total = 1 + n + length
            if total > maxPacketSize { throw .packetTooLarge(size: total, limit: maxPacketSize) }
            guard buffer.readableBytes >= total else { return nil }
            buffer.moveReaderIndex(forwardBy: 1 + n)
            let body = buffer.readSlice(length: length)!
            return MQTTFrame(firstByte: first, body: body)
        }
    }
}

extension MQTTPacket {
    /// Decodes a whole packet (fixed header included), as a peer would send it.
    public static func decode(_ bytes: ByteBuffer, version: MQTTVersion) throws(MQTTDecodeError) -> MQTTPacket {
        var b = bytes
        guard let frame = try MQTTFrame.next(from: &b, maxPacketSize: Int.max) else {
            throw .truncated("packet: \(bytes.readableBytes) bytes do not hold the announced remaining length")
        }
        guard b.readableBytes == 0 else { throw .malformed("\(b.readableBytes) bytes after the packet") }
        return try decode(frame, version: version)
    }

    public static func decode(_ frame: MQTTFrame, version: MQTTVersion) throws(MQTTDecodeError) -> MQTTPacket {
        let flags = frame.firstByte & 0x0F
        guard let type = PacketType(rawValue: frame.firstByte >> 4) else {
            throw .malformed("reserved packet type 0 (first byte \(hexByte(frame.firstByte)))")
        }
        // [MQTT-2.2.2-1/2] fixed flags of every type but PUBLISH.
        let expectedFlags: UInt8? =
            switch type {
            case .publish: nil
            case .pubrel, .subscribe, .unsubscribe: 0x02
            default: 0x00
            }
        if let e = expectedFlags, flags != e {
            throw .malformed("\(type) with reserved flag bits \(hexByte(flags)) (must be \(hexByte(e)))")
        }
        if type == .auth && version != .v5_0 { throw .malformed("AUTH packet on an MQTT 3.1.1 connection") }
        var b = frame.body
        let v5 = version == .v5_0
        let packet: MQTTPacket
        switch type {
        case .connect:
            packet = .connect(try decodeConnect(&b))
        case .connack:
            guard let ackFlags = b.readInteger(as: UInt8.self), let code = b.readInteger(as: UInt8.self) else {
                throw .truncated("CONNACK")
            }
            // [MQTT-3.2.2-1] bits 7-1 of the acknowledge flags are reserved.
            guard ackFlags & 0xFE == 0 else { throw .malformed("CONNACK acknowledge flags \(hexByte(ackFlags)) set reserved bits") }
            let props = v5 ? try MQTTProperties.read(from: &b, context: .connack) : MQTTProperties()
            packet = .connack(Connack(sessionPresent: ackFlags == 1, returnCode: code, properties: props))
        case .publish:
            let qosBits = (flags >> 1) & 0x03
            // [MQTT-3.3.1-4] QoS 3 is malformed.
            guard let qos = QoS(rawValue: qosBits) else { throw .malformed("PUBLISH with QoS 3") }
            let dup = flags & 0x08 != 0
            // [MQTT-3.3.1-2] DUP must be 0 on QoS 0.
            if dup && qos == .atMostOnce { throw .malformed("PUBLISH QoS 0 with DUP set") }
            let topic = try b.readMQTTString(what: "PUBLISH topic")
            // [MQTT-3.3.2-2] no wildcards in a topic name.
            if topic.utf8.contains(where: { $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") }) {
                throw .malformed("PUBLISH topic \"\(topic)\" contains a wildcard")
            }
            var packetID: UInt16?
            if qos != .atMostOnce {
                guard let id = b.readInteger(as: UInt16.self) else { throw .truncated("PUBLISH packet identifier") }
                guard id != 0 else { throw .malformed("PUBLISH packet identifier 0") }  // [MQTT-2.3.1-1]
                packetID = id
            }
            let props = v5 ? try MQTTProperties.read(from: &b, context: .publish) : MQTTProperties()
            // 3.1.1 §4.7.3: topic names are at least one character; 5.0 allows empty with a Topic Alias.
            if topic.isEmpty && props.topicAlias == nil { throw .malformed("PUBLISH with an empty topic and no topic alias") }
            packet = .publish(
                Publish(topic: topic, payload: b, qos: qos, retain: flags & 1 != 0, dup: dup, packetID: packetID, properties: props))
            b.moveReaderIndex(to: b.writerIndex)
        case .puback, .pubrec, .pubrel, .pubcomp:
            let kind: Ack.Kind = type == .puback ? .puback : type == .pubrec ? .pubrec : type == .pubrel ? .pubrel : .pubcomp
            guard let id = b.readInteger(as: UInt16.self) else { throw .truncated("\(type) packet identifier") }
            guard id != 0 else { throw .malformed("\(type) packet identifier 0") }
            var code: UInt8 = 0
            var props = MQTTProperties()
            if v5, let c = b.readInteger(as: UInt8.self) {
                code = c
                if b.readableBytes > 0 {
                    let ctx: PropertyContext = kind == .puback ? .puback : kind == .pubrec ? .pubrec : kind == .pubrel ? .pubrel : .pubcomp
                    props = try MQTTProperties.read(from: &b, context: ctx)
                }
            }
            packet = .ack(Ack(kind, packetID: id, reasonCode: code, properties: props))
        case .subscribe:
            guard let id = b.readInteger(as: UInt16.self) else { throw .truncated("SUBSCRIBE packet identifier") }
            guard id != 0 else { throw .malformed("SUBSCRIBE packet identifier 0") }
            let props = v5 ? try MQTTProperties.read(from: &b, context: .subscribe) : MQTTProperties()
            var subs: [Subscription] = []
            while b.readableBytes > 0 {
                let filter = try b.readMQTTString(what: "SUBSCRIBE topic filter")
                guard let options = b.readInteger(as: UInt8.self) else { throw .truncated("SUBSCRIBE options") }
                guard let qos = QoS(rawValue: options & 0x03) else { throw .malformed("SUBSCRIBE with QoS 3") }
                if v5 {
                    guard options & 0xC0 == 0 else { throw .malformed("SUBSCRIBE options set reserved bits 6-7") }
                    guard let rh = Subscription.RetainHandling(rawValue: (options >> 4) & 0x03) else {
                        throw .malformed("SUBSCRIBE retain handling 3")
                    }
                    subs.append(
                        Subscription(
                            filter: filter, qos: qos, noLocal: options & 0x04 != 0, retainAsPublished: options & 0x08 != 0,
                            retainHandling: rh))
                } else {
                    // [MQTT-3-8.3-4] upper 6 bits reserved in 3.1.1.
                    guard options & 0xFC == 0 else { throw .malformed("SUBSCRIBE requested QoS byte sets reserved bits") }
                    subs.append(Subscription(filter: filter, qos: qos))
                }
            }
            // [MQTT-3.8.3-3] at least one filter.
            guard !subs.isEmpty else { throw .malformed("SUBSCRIBE without any topic filter") }
            packet = .subscribe(Subscribe(packetID: id, subscriptions: subs, properties: props))
        case .suback:
            guard let id = b.readInteger(as: UInt16.self) else { throw .truncated("SUBACK packet identifier") }
            let props = v5 ? try MQTTProperties.read(from: &b, context: .suback) : MQTTProperties()
            var codes: [UInt8] = []
            while let c = b.readInteger(as: UInt8.self) {
                let valid: Bool = v5 ? ReasonCode.subackCodes.contains(c) : (c <= 2 || c == 0x80)
                guard valid else { throw .malformed("SUBACK return code \(hexByte(c)) is not defined") }
                codes.append(c)
            }
            guard !codes.isEmpty else { throw .malformed("SUBACK without any return code") }
            packet = .suback(Suback(packetID: id, reasonCodes: codes, properties: props))
        case .unsubscribe:
            guard let id = b.readInteger(as: UInt16.self) else { throw .truncated("UNSUBSCRIBE packet identifier") }
            guard id != 0 else { throw .malformed("UNSUBSCRIBE packet identifier 0") }
            let props = v5 ? try MQTTProperties.read(from: &b, context: .unsubscribe) : MQTTProperties()
            var filters: [String] = []
            while b.readableBytes > 0 { filters.append(try b.readMQTTString(what: "UNSUBSCRIBE topic filter")) }
            // [MQTT-3.10.3-2] at least one filter.
            guard !filters.isEmpty else { throw .malformed("UNSUBSCRIBE without any topic filter") }
            packet = .unsubscribe(Unsubscribe(packetID: id, filters: filters, properties: props))
        case .unsuback:
            guard let id = b.readInteger(as: UInt16.self) else { throw .truncated("UNSUBACK packet identifier") }
            var props = MQTTProperties()
            var codes: [UInt8] = []
            if v5 {
                props = try MQTTProperties.read(from: &b, context: .unsuback)
                while let c = b.readInteger(as: UInt8.self) { codes.append(c) }
            }
            packet = .unsuback(Unsuback(packetID: id, reasonCodes: codes, properties: props))
        case .pingreq:
            packet = .pingreq
        case .pingresp:
            packet = .pingresp
        case .disconnect:
            var code: UInt8 = 0
            var props = MQTTProperties()
            if v5, let c = b.readInteger(as: UInt8.self) {
                code = c
                if b.readableBytes > 0 { props = try MQTTProperties.read(from: &b, context: .disconnect) }
            }
            packet = .disconnect(Disconnect(reasonCode: code, properties: props))
        case .auth:
            var code: UInt8 = 0
            var props = MQTTProperties()
            if let c = b.readInteger(as: UInt8.self) {
                code = c
                if b.readableBytes > 0 { props = try MQTTProperties.read(from: &b, context: .auth) }
            }
            packet = .auth(Auth(reasonCode: code, properties: props))
        }
        guard b.readableBytes == 0 else {
            throw .malformed("\(type) has \(b.readableBytes) unexpected bytes after its last field")
        }
        return packet
    }

    private static func decodeConnect(_ b: inout ByteBuffer) throws(MQTTDecodeError) -> Connect {
        let name = try b.readMQTTString(what: "CONNECT protocol name")
        guard let level = b.readInteger(as: UInt8.self) else { throw .truncated("CONNECT protocol level") }
        guard name == "MQTT", let version = MQTTVersion(rawValue: level) else {
            throw .malformed("unsupported protocol \"\(name)\" level \(level)")
        }
        guard let flags = b.readInteger(as: UInt8.self), let keepAlive = b.readInteger(as: UInt16.self) else {
            throw .truncated("CONNECT flags")
        }
        guard flags & 0x01 == 0 else { throw .malformed("CONNECT reserved flag set") }  // [MQTT-3.1.2-3]
        let v5 = version == .v5_0
        let props = v5 ? try MQTTProperties.read(from: &b, context: .connect) : MQTTProperties()
        let clientID = try b.readMQTTString(what: "CONNECT client identifier")
        var will: Will?
        let willQoSBits = (flags >> 3) & 0x03
        if flags & 0x04 != 0 {
            guard let wq = QoS(rawValue: willQoSBits) else { throw .malformed("CONNECT Will QoS 3") }  // [MQTT-3.1.2-14]
            let wprops = v5 ? try MQTTProperties.read(from: &b, context: .will) : MQTTProperties()
            let topic = try b.readMQTTString(what: "Will topic")
            let payload = try b.readMQTTBinary(what: "Will payload")
            will = Will(topic: topic, payload: payload, qos: wq, retain: flags & 0x20 != 0, properties: wprops)
        } else if willQoSBits != 0 || flags & 0x20 != 0 {
            throw .malformed("CONNECT Will QoS/Retain set without the Will flag")  // [MQTT-3.1.2-11/13]
        }
        var username: String?
        var password: ByteBuffer?
        if flags & 0x80 != 0 { username = try b.readMQTTString(what: "CONNECT user name") }
        if flags & 0x40 != 0 {
            // [MQTT-3.1.2-22] 3.1.1: no password without a user name.
            if !v5 && username == nil { throw .malformed("CONNECT password flag set without user name flag") }
            password = try b.readMQTTBinary(what: "CONNECT password")
        }
        return Connect(
            version: version, clientID: clientID, cleanStart: flags & 0x02 != 0, keepAliveSeconds: keepAlive,
            username: username, password: password, will: will, properties: props)
    }
}
