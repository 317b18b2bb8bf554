import NIOCore

/// Why bytes from the peer are not a valid MQTT packet. Each case names what was wrong.
public enum MQTTDecodeError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The packet ended before a field that must be there.
    case truncated(String)
    /// A field breaks the standard's rules (reserved bits, bad lengths, invalid UTF-8, ...).
    case malformed(String)
    /// The packet's declared size exceeds the maximum we accept.
    case packetTooLarge(size: Int, limit: Int)

    public var description: String {
        switch self {
        case .truncated(let what): "malformed packet: truncated \(what)"
        case .malformed(let what): "malformed packet: \(what)"
        case .packetTooLarge(let size, let limit): "packet of \(size) bytes exceeds the maximum packet size \(limit)"
        }
    }
}

func hexByte<T: BinaryInteger>(_ v: T) -> String {
    let digits = Array("0123456789ABCDEF")
    let b = Int(v) & 0xFF
    return "0x" + String(digits[b >> 4]) + String(digits[b & 0xF])
}

/// Variable Byte Integer (5.0 §1.5.5; 3.1.1 §2.2.3 "Remaining Length").
enum VarInt {
    static let max = 268_435_455

    static func size(_ value: Int) -> Int {
        value < 128 ? 1 : value < 16_384 ? 2 : value < 2_097_152 ? 3 : 4
    }

    /// Into `bytes` (room for 4); returns how many were written. [MQTT-1.5.5-1] the minimum
    /// number of bytes is used.
    static func write(_ value: Int, into bytes: UnsafeMutableRawBufferPointer) -> Int {
        precondition(value >= 0 && value <= max, "variable byte integer out of range")
        var v = value
        var i = 0
        repeat {
            var byte = UInt8(v & 0x7F)
            v >>= 7
            if v > 0 { byte |= 0x80 }
            bytes[i] = byte
            i += 1
        } while v > 0
        return i
    }

    static func write(_ value: Int, to buffer: inout ByteBuffer) {
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 4) { write(value, into: $0) }
    }

    static func read(from buffer: inout ByteBuffer, what: String) throws(MQTTDecodeError) -> Int {
        switch peek(buffer, at: buffer.readerIndex) {
        case .value(let v, let n):
            buffer.moveReaderIndex(forwardBy: n)
            return v
        case .needMore: throw .truncated(what)
        case .invalid: throw .malformed("\(what) uses more than 4 bytes")
        }
    }

    enum Peek { case value(Int, bytes: Int), needMore, invalid }

    /// Reads without consuming, for the streaming frame decoder.
    @inline(__always)
    static func peek(_ buffer: ByteBuffer, at index: Int) -> Peek {
        var value = 0
        var shift = 0
        for i in 0..<4 {
            guard let byte = buffer.getInteger(at: index + i, as: UInt8.self) else { return .needMore }
            value |= Int(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return .value(value, bytes: i + 1) }
            shift += 7
        }
        return .invalid
    }
}

extension ByteBuffer {
    /// UTF-8 Encoded String (§1.5.4): two-byte length then the bytes.
    @inline(__always)
    /// One write (each write to a ByteBuffer checks its uniqueness, capacity and, at run time,
    /// exclusive access: about 150 instructions); a topic is written with every PUBLISH.
    mutating func writeMQTTString(_ string: String) {
        let utf8 = string.utf8
        let n = utf8.count
        writeWithUnsafeMutableBytes(minimumWritableBytes: 2 + n) { raw in
            raw[0] = UInt8(truncatingIfNeeded: n >> 8)
            raw[1] = UInt8(truncatingIfNeeded: n)
            UnsafeMutableRawBufferPointer(rebasing: raw[2...]).copyBytes(from: utf8)
            return 2 + n
        }
    }

    mutating func writeMQTTBinary(_ bytes: ByteBuffer) {
        writeInteger(UInt16(truncatingIfNeeded: bytes.readableBytes))
        writeImmutableBuffer(bytes)
    }

    /// Reads a UTF-8 Encoded String. [MQTT-1.5.4-1] ill-formed UTF-8 (including surrogates) and
    /// [MQTT-1.5.4-2] U+0000 make the packet malformed.
    mutating func readMQTTString(what: String) throws(MQTTDecodeError) -> String {
        guard let length = readInteger(as: UInt16.self) else { throw .truncated("\(what) length") }
        guard let view = readSlice(length: Int(length)) else {
            throw .truncated("\(what): \(length) bytes announced, \(readableBytes) left")
        }
        return try view.mqttValidatedString(what: what)
    }

    func mqttValidatedString(what: String) throws(MQTTDecodeError) -> String {
        let result: String? = withUnsafeReadableBytes { raw in
            // Topics and most strings are ASCII: one pass decides, and ASCII is valid UTF-8 as
            // it stands (`String(validating:as:)`, generic over the encoding, instantiated its
            // parser's metadata on every call: ~330 instructions a received PUBLISH).
            if raw.allSatisfy({ $0 &- 1 < 0x7F }) { return String(decoding: raw, as: UTF8.self) }
            if raw.contains(0) { return nil }
            return String(validating: raw, as: UTF8.self)
        }
        guard let s = result else { throw .malformed("\(what) is not valid UTF-8 or contains U+0000") }
        return s
    }

    mutating func readMQTTBinary(what: String) throws(MQTTDecodeError) -> ByteBuffer {
        guard let length = readInteger(as: UInt16.self) else { throw .truncated("\(what) length") }
        guard let data = readSlice(length: Int(length)) else {
            throw .truncated("\(what): \(length) bytes announced, \(readableBytes) left")
        }
        return data
    }
}
