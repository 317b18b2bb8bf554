import NIOCore

// The connection's bytes as they arrive → packets, in order. The reads a socket hands over cut
// packets anywhere; what is left of one read waits for the next. At most one packet within
// `maxPacketSize` (the frame reader's bound, `incoming_packet_limit`) plus what one read brought
// is held; an oversized 3.1.1 PUBLISH is skipped as it arrives, never held.

/// What the stream hands on: a packet, or word of a PUBLISH skipped as too large.
enum Inbound: Equatable {
    case packet(MQTTPacket)
    case droppedPublish(DroppedPublish)
}

struct MQTTInboundStream {
    let version: MQTTVersion
    private var reader: MQTTFrameReader
    /// Bytes read and not yet cut into packets (nil: none, the last read was used up).
    private var held: ByteBuffer?

    init(version: MQTTVersion, maxPacketSize: Int) {
        self.version = version
        self.reader = MQTTFrameReader(maxPacketSize: maxPacketSize, version: version)
    }

    /// How many bytes wait for the rest of their packet.
    var heldBytes: Int { held?.readableBytes ?? 0 }

    /// Takes one read's bytes. When nothing is held (the usual case: reads end on packet
    /// boundaries) the read's own buffer is kept, without a copy.
    mutating func append(_ bytes: ByteBuffer) {
        guard var h = held else {
            held = bytes
            return
        }
        held = nil  // `h` is then the only reference: the write below does not copy the storage
        // What has been cut off the front is let go before the buffer grows (the storage is
        // reused, not reallocated, while packets stay smaller than it).
        if h.readerIndex > 0 && h.writableBytes < bytes.readableBytes { h.discardReadBytes() }
        h.writeImmutableBuffer(bytes)
        held = h
    }

    /// The next whole packet, or nil when more bytes are needed. A malformed packet throws: the
    /// stream cannot be trusted after it, and the connection is closed.
    mutating func next() throws(MQTTDecodeError) -> Inbound? {
        guard var h = held else { return nil }
        held = nil
        defer { held = h.readableBytes > 0 ? h : nil }
        switch try reader.next(from: &h) {
        case nil: return nil
        case .frame(let frame): return .packet(try MQTTPacket.decode(frame, version: version))
        case .droppedPublish(let d): return .droppedPublish(d)
        }
    }
}
