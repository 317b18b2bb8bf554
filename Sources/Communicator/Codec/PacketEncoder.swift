import NIOCore

// Encoding: MQTTPacket → bytes. The body length is computed first so that every packet is
// written once, straight into the output buffer, with the minimal Remaining Length (§2.2.3).

extension MQTTPacket {
    /// The size of the whole packet on the wire (fixed header included).
    public func encodedSize(version: MQTTVersion) -> Int {
        let body = bodyLength(version: version)
        return 1 + VarInt.size(body) + body
    }

    /// Appends the packet's bytes to `buffer`.
    public func encode(version: MQTTVersion, into buffer: inout ByteBuffer) {
        let body = bodyLength(version: version)
        buffer.reserveCapacity(minimumWritableBytes: 5 + body)
        // The fixed header in one write: each write to a ByteBuffer checks its uniqueness,
        // capacity and (at run time) exclusive access, about 150 instructions.
        let first = firstByte
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 5) { raw in
            raw[0] = first
            return 1 + VarInt.write(body, into: UnsafeMutableRawBufferPointer(rebasing: raw[1...]))
        }
        let start = buffer.writerIndex
        writeBody(version: version, to: &buffer)
        assert(buffer.writerIndex - start == body, "body length mismatch for \(type)")
    }

    /// Convenience for tests and tools.
    public func encoded(version: MQTTVersion) -> ByteBuffer {
        var b = ByteBuffer()
        encode(version: version, into: &b)
        return b
    }

    /// Fixed header byte 1: type and flags. [MQTT-3.6.1-1] PUBREL, [MQTT-3.8.1-1] SUBSCRIBE and
    /// [MQTT-3.10.1-1] UNSUBSCRIBE carry flags 0b0010; every other type but PUBLISH carries 0.
    var firstByte: UInt8 {
        switch self {
        case .publish(let p):
            // [MQTT-3.3.1-2] DUP is 0 for QoS 0.
            let dup: UInt8 = (p.dup && p.qos != .atMostOnce) ? 0x08 : 0
            return 0x30 | dup | (p.qos.rawValue << 1) | (p.retain ? 1 : 0)
        case .ack(let a) where a.kind == .pubrel: return 0x62
        case .subscribe: return 0x82
        case .unsubscribe: return 0xA2
        default: return type.rawValue << 4
        }
    }

    private static func propertiesSize(_ p: MQTTProperties) -> Int {
        let n = p.encodedLength
        return VarInt.size(n) + n
    }

    func bodyLength(version: MQTTVersion) -> Int {
        let v5 = version == .v5_0
        switch self {
        case .connect(let c):
            var n = 10 + 2 + c.clientID.utf8.count
            if c.version == .v5_0 { n += Self.propertiesSize(c.properties) }
            if let w = c.will {
                if c.version == .v5_0 { n += Self.propertiesSize(w.properties) }
                n += 2 + w.topic.utf8.count + 2 + w.payload.readableBytes
            }
            if let u = c.username { n += 2 + u.utf8.count }
            if let p = c.password { n += 2 + p.readableBytes }
            return n
        case .connack(let c):
            return 2 + (v5 ? Self.propertiesSize(c.properties) : 0)
        case .publish(let p):
            var n = 2 + p.topic.utf8.count + p.payload.readableBytes
            if p.qos != .atMostOnce { n += 2 }
            if v5 { n += Self.propertiesSize(p.properties) }
            return n
        case .ack(let a):
            // 5.0 §3.4.2.1: reason code and properties may be omitted when 0x00 and none.
            guard v5 else { return 2 }
            if a.properties.isEmpty { return a.reasonCode == 0 ? 2 : 3 }
            return 3 + Self.propertiesSize(a.properties)
        case .subscribe(let s):
            var n = 2 + (v5 ? Self.propertiesSize(s.properties) : 0)
            for sub in s.subscriptions { n += 3 + sub.filter.utf8.count }
            return n
        case .suback(let s):
            return 2 + (v5 ? Self.propertiesSize(s.properties) : 0) + s.reasonCodes.count
        case .unsubscribe(let u):
            var n = 2 + (v5 ? Self.propertiesSize(u.properties) : 0)
            for f in u.filters { n += 2 + f.utf8.count }
            return n
        case .unsuback(let u):
            return v5 ? 2 + Self.propertiesSize(u.properties) + u.reasonCodes.count : 2
        case .pingreq, .pingresp:
            return 0
        case .disconnect(let d):
            // 5.0 §3.14.2.1: omitted entirely when Normal disconnection and no properties.
            guard v5 else { return 0 }
            if d.properties.isEmpty { return d.reasonCode == 0 ? 0 : 1 }
            return 1 + Self.propertiesSize(d.properties)
        case .auth(let a):
            // 5.0 §3.15.2.1: may be omitted when Success and no properties.
            if a.properties.isEmpty { return a.reasonCode == 0 ? 0 : 1 }
            return 1 + Self.propertiesSize(a.properties)
        }
    }

    private func writeBody(version: MQTTVersion, to b: inout ByteBuffer) {
        let v5 = version == .v5_0
        switch self {
        case .connect(let c):
            b.writeMQTTString("MQTT")
            b.writeInteger(c.version.rawValue)
            var flags: UInt8 = 0
            if c.username != nil { flags |= 0x80 }
            if c.password != nil { flags |= 0x40 }
            if let w = c.will {
                flags |= 0x04 | (w.qos.rawValue << 3) | (w.retain ? 0x20 : 0)
            }
            if c.cleanStart { flags |= 0x02 }
            b.writeInteger(flags)
            b.writeInteger(c.keepAliveSeconds)
            if c.version == .v5_0 { c.properties.write(to: &b) }
            b.writeMQTTString(c.clientID)
            if let w = c.will {
                if c.version == .v5_0 { w.properties.write(to: &b) }
                b.writeMQTTString(w.topic)
                b.writeMQTTBinary(w.payload)
            }
            if let u = c.username { b.writeMQTTString(u) }
            if let p = c.password { b.writeMQTTBinary(p) }
        case .connack(let c):
            b.writeInteger(UInt8(c.sessionPresent ? 1 : 0))
            b.writeInteger(c.returnCode)
            if v5 { c.properties.write(to: &b) }
        case .publish(let p):
            b.writeMQTTString(p.topic)
            if p.qos != .atMostOnce { b.writeInteger(p.packetID ?? 0) }
            if v5 { p.properties.write(to: &b) }
            b.writeImmutableBuffer(p.payload)
        case .ack(let a):
            b.writeInteger(a.packetID)
            if v5 {
                if a.properties.isEmpty {
                    if a.reasonCode != 0 { b.writeInteger(a.reasonCode) }
                } else {
                    b.writeInteger(a.reasonCode)
                    a.properties.write(to: &b)
                }
            }
        case .subscribe(let s):
            b.writeInteger(s.packetID)
            if v5 { s.properties.write(to: &b) }
            for sub in s.subscriptions {
                b.writeMQTTString(sub.filter)
                var options = sub.qos.rawValue
                if v5 {
                    if sub.noLocal { options |= 0x04 }
                    if sub.retainAsPublished { options |= 0x08 }
                    options |= sub.retainHandling.rawValue << 4
                }
                b.writeInteger(options)
            }
        case .suback(let s):
            b.writeInteger(s.packetID)
            if v5 { s.properties.write(to: &b) }
            for code in s.reasonCodes { b.writeInteger(code) }
        case .unsubscribe(let u):
            b.writeInteger(u.packetID)
            if v5 { u.properties.write(to: &b) }
            for f in u.filters { b.writeMQTTString(f) }
        case .unsuback(let u):
            b.writeInteger(u.packetID)
            if v5 {
                u.properties.write(to: &b)
                for code in u.reasonCodes { b.writeInteger(code) }
            }
        case .pingreq, .pingresp:
            break
        case .disconnect(let d):
            guard v5 else { return }
            if d.properties.isEmpty {
                if d.reasonCode != 0 { b.writeInteger(d.reasonCode) }
            } else {
                b.writeInteger(d.reasonCode)
                d.properties.write(to: &b)
            }
        case .auth(let a):
            if a.properties.isEmpty {
                if a.reasonCode != 0 { b.writeInteger(a.reasonCode) }
            } else {
                b.writeInteger(a.reasonCode)
                a.properties.write(to: &b)
            }
        }
    }
}
