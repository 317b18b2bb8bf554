import NIOCore

/// The bytes of every packet produced while handling one batch of commands or one read, sent
/// with one `writeAndFlush`, and the QoS 0 publishes among them: they complete when that write
/// does (as libmosquitto and Paho report QoS 0), which is also what bounds a fast QoS 0 publisher.
/// Owned by the loop. (Whether a write is due is the core's own flag: a field read on every
/// action should not share an access with the buffer being encoded into.)
///
/// One buffer serves every batch: once the socket has taken a write's bytes (at once, unless the
/// kernel's send buffer is full) the buffer is the batch's alone again, and the next batch is
/// encoded into the same storage: no allocation and no free per flush. A buffer grown past
/// `keptCapacity` by a burst is let go after its write, so a burst does not pin its memory.
struct WriteBatch {
    private(set) var bytes = ByteBuffer()
    private var waiters: [Completion] = []
    /// Capacity a buffer keeps between batches.
    static let keptCapacity = 64 * 1024

    /// The link's protocol version, which every packet is encoded for.
    private(set) var version = MQTTVersion.v5_0

    /// A new connection's first, empty buffer.
    mutating func start(_ buffer: ByteBuffer, version: MQTTVersion) {
        bytes = buffer
        self.version = version
    }

    mutating func append(_ packet: MQTTPacket) {
        packet.encode(version: version, into: &bytes)
    }

    /// A QoS 0 publish in `bytes`, complete when the write carrying it is.
    mutating func completeOnWrite(_ completion: Completion) { waiters.append(completion) }

    /// The bytes went to the channel: the next batch starts, in the same storage once the socket
    /// has let go of it. (The write itself is the core's, outside any mutation of the batch: NIO
    /// may close the channel during a write, and the core's close handling takes the waiters.)
    mutating func written(allocator: ByteBufferAllocator) {
        if bytes.capacity > Self.keptCapacity {
            bytes = allocator.buffer(capacity: 256)
        } else {
            bytes.clear()  // no copy: shared storage (the write still pending) gets a new one
        }
    }

    /// The QoS 0 publishes going out with the next write (or lost with the link).
    mutating func takeWaiters() -> [Completion] {
        guard !waiters.isEmpty else { return [] }
        defer { waiters.removeAll() }
        return waiters
    }
}
