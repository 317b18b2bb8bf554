import NIOCore

// Cutting a byte stream into packets, with a bound on what is buffered. A packet above the limit
// is an error on 5.0 (we announced the limit in CONNECT, so the broker broke it: DISCONNECT 0x95).
// MQTT 3.1.1 has no way to announce a limit, so there an oversized PUBLISH is not an error: its
// topic and packet identifier are read, and the rest of its bytes are skipped as they arrive,
// never buffered, so that a 100 MB message costs no more memory than a small one and the
// connection stays up.

/// A PUBLISH too large to accept, skipped on the way in: what is known of it.
public struct DroppedPublish: Sendable, Equatable {
    public var topic: String
    public var qos: QoS
    public var packetID: UInt16?
    /// The whole packet's size in bytes, fixed header included.
    public var size: Int
    public var limit: Int
}

/// What the reader cut out of the stream.
public enum InboundFrame: Sendable {
    case frame(MQTTFrame)
    case droppedPublish(DroppedPublish)
}

/// Reads packets from a stream one after another. Holds at most one packet within the limit
/// (and a few header bytes); of an oversized 3.1.1 PUBLISH it keeps only the first
/// `keptTopicBytes` of its topic (for the log) and its packet identifier, never its body.
public struct MQTTFrameReader: Sendable {
    public let maxPacketSize: Int
    /// 3.1.1: skip oversized PUBLISH packets instead of failing the connection.
    public let skipsOversizedPublish: Bool
    public static var keptTopicBytes: Int { 256 }

    /// An oversized PUBLISH on its way through: its topic is read, then its packet identifier
    /// (QoS 1 and 2), then it is reported, then the rest of its body is skipped.
    struct Dropping {
        var qos: QoS
        var size: Int
        var topicLeft: Int
        var topic: [UInt8] = []
        var idLeft: Int
        var id: UInt16 = 0
        var bodyLeft: Int
        var reported = false
    }
    private var dropping: Dropping?

    public init(maxPacketSize: Int, version: MQTTVersion) {
        self.maxPacketSize = maxPacketSize
        self.skipsOversizedPublish = version == .v3_1_1
    }

    /// The next packet from the front of `buffer`, or nil when more bytes are needed. The bytes
    /// of a skipped packet are consumed as they come (nil is returned until all are gone).
    public mutating func next(from buffer: inout ByteBuffer) throws(MQTTDecodeError) -> InboundFrame? {
        while true {
            if var d = dropping {
                defer { dropping = d.bodyLeft == 0 && d.reported ? nil : d }
                if d.topicLeft > 0 {
                    let k = min(d.topicLeft, buffer.readableBytes)
                    let keep = min(k, Self.keptTopicBytes - d.topic.count)
                    if keep > 0, let bytes = buffer.getBytes(at: buffer.readerIndex, length: keep) { d.topic += bytes }
                    buffer.moveReaderIndex(forwardBy: k)
                    d.topicLeft -= k
                }
                while d.topicLeft == 0, d.idLeft > 0, let b = buffer.readInteger(as: UInt8.self) {
                    d.id = d.id << 8 | UInt16(b)
                    d.idLeft -= 1
                }
                guard d.topicLeft == 0, d.idLeft == 0 else { return nil }
                if !d.reported {
                    // [MQTT-2.3.1-1] a QoS 1/2 PUBLISH has a non-zero identifier.
                    if d.qos != .atMostOnce && d.id == 0 { throw .malformed("PUBLISH packet identifier 0") }
                    d.reported = true
                    return .droppedPublish(
                        DroppedPublish(
                            topic: String(decoding: d.topic, as: UTF8.self), qos: d.qos, packetID: d.qos == .atMostOnce ? nil : d.id,
                            size: d.size, limit: maxPacketSize))
                }
                let k = min(d.bodyLeft, buffer.readableBytes)
                buffer.moveReaderIndex(forwardBy: k)
                d.bodyLeft -= k
                guard d.bodyLeft == 0 else { return nil }
                continue
            }
            let start = buffer.readerIndex
            guard skipsOversizedPublish, let first = buffer.getInteger(at: start, as: UInt8.self),
                first >> 4 == PacketType.publish.rawValue,
                case .value(let length, let n) = VarInt.peek(buffer, at: start + 1), 1 + n + length > maxPacketSize
            else {
                return try MQTTFrame.next(from: &buffer, maxPacketSize: maxPacketSize).map { .frame($0) }
            }
            // [MQTT-3.3.1-4] QoS 3 is malformed; the topic and the identifier come first (3.1.1 §3.3.2).
            guard let qos = QoS(rawValue: (first >> 1) & 0x03) else { throw .malformed("PUBLISH with QoS 3") }
            guard let topicLength = buffer.getInteger(at: start + 1 + n, as: UInt16.self) else { return nil }
            let idLength = qos == .atMostOnce ? 0 : 2
            let head = 2 + Int(topicLength) + idLength
            guard head <= length else { throw .truncated("PUBLISH of \(length) bytes: its topic and packet identifier need \(head)") }
            buffer.moveReaderIndex(forwardBy: 1 + n + 2)
            dropping = Dropping(qos: qos, size: 1 + n + length, topicLeft: Int(topicLength), idLeft: idLength, bodyLeft: length - head)
        }
    }
}
