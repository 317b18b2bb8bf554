import NIOCore

/// The bytes of every packet produced while handling one batch of commands or one read, sent
/// with one `writeAndFlush`, and the QoS 0 publishes among them: they complete when that write
/// does (as libmosquitto and Paho report QoS 0), which is also what bounds a fast QoS 0 publisher.
/// Owned by the loop. (Whether a write is due is the core's own flag: a field read on every
/// action should not share an access with the buffer being encoded into.)
struct WriteBatch {
    private(set) var bytes = ByteBuffer()
    private var waiters: [Completion] = []

    /// A new connection's first, empty buffer.
    mutating func start(_ buffer: ByteBuffer) { bytes = buffer }

    mutating func append(_ packet: MQTTPacket, version: MQTTVersion) {
        packet.encode(version: version, into: &bytes)
    }

    /// A QoS 0 publish in `bytes`, complete when the write carrying it is.
    mutating func completeOnWrite(_ completion: Completion) { waiters.append(completion) }

    /// What goes out now and who waits for it; `next` (empty) holds the next batch.
    mutating func take(next: ByteBuffer) -> (bytes: ByteBuffer, waiters: [Completion]) {
        defer {
            bytes = next
            if !waiters.isEmpty { waiters.removeAll() }
        }
        return (bytes, waiters)
    }

    /// The link is gone: the QoS 0 publishes that were to go with the bytes.
    mutating func takeWaiters() -> [Completion] {
        defer { waiters.removeAll() }
        return waiters
    }
}
