import DeviceAdapters
import FoundationEssentials
import NIOCore

/// One package on its way in, as pure state: which chunks have arrived. A chunk is one MQTT
/// message on the transfer's chunk topic: `[index: 4 bytes, big-endian][SHA-256 of the data:
/// 32 bytes][data]`, every chunk `chunkSize` bytes but the last. What `have` marks is on the
/// disk (the service saves it only after the chunks' data was synced), so after a power cut the
/// transfer resumes where its last save left it and the operator sends only what is missing.
struct UpdateTransfer: Codable, Equatable, Sendable {
    var manifest: UpdateManifest
    var chunkSize: Int
    var chunkTopic: String
    /// One bit per chunk (a number per 8 chunks in the saved JSON).
    private(set) var have: [UInt8]
    /// How many bits of `have` are set, and whether the last (short) chunk is one of them.
    private(set) var receivedChunks = 0
    /// Chunks refused (a wrong hash, index or length) since the transfer began or resumed.
    var badChunks = 0

    static let headerBytes = 36

    private enum CodingKeys: String, CodingKey { case manifest, chunkSize, chunkTopic, have }

    init(manifest: UpdateManifest, chunkSize: Int, chunkTopic: String) {
        self.manifest = manifest
        self.chunkSize = chunkSize
        self.chunkTopic = chunkTopic
        have = [UInt8](repeating: 0, count: (manifest.size / chunkSize + 1 + 7) / 8)
    }

    /// A saved transfer; what does not fit its own sizes is refused.
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        manifest = try c.decode(UpdateManifest.self, forKey: .manifest)
        chunkSize = try c.decode(Int.self, forKey: .chunkSize)
        chunkTopic = try c.decode(String.self, forKey: .chunkTopic)
        have = try c.decode([UInt8].self, forKey: .have)
        guard chunkSize > 0, manifest.size > 0, have.count == (manifest.size / chunkSize + 1 + 7) / 8 else {
            throw DecodingError.dataCorruptedError(forKey: .have, in: c, debugDescription: "the chunk map does not fit the package's size")
        }
        receivedChunks = (0..<chunkCount).reduce(0) { $0 + (has($1) ? 1 : 0) }
    }

    var chunkCount: Int { (manifest.size + chunkSize - 1) / chunkSize }

    func has(_ i: Int) -> Bool { have[i >> 3] & (1 << UInt8(i & 7)) != 0 }

    var receivedBytes: Int {
        let last = chunkCount - 1
        return has(last) ? (receivedChunks - 1) * chunkSize + length(of: last) : receivedChunks * chunkSize
    }

    var isComplete: Bool { receivedChunks == chunkCount }

    func length(of i: Int) -> Int { min(chunkSize, manifest.size - i * chunkSize) }

    /// The first `limit` runs of missing chunks, as [first, last] pairs (for the operator).
    func missing(limit: Int = 64) -> [[Int]] {
        var runs: [[Int]] = []
        var i = 0
        while i < chunkCount && runs.count < limit {
            if has(i) {
                i += 1
                continue
            }
            var j = i
            while j + 1 < chunkCount && !has(j + 1) { j += 1 }
            runs.append([i, j])
            i = j + 1
        }
        return runs
    }

    enum Chunk: Equatable {
        /// New: its data goes to `offset` of the package file.
        case new(index: Int, offset: Int)
        /// Already there (a redelivery, or the operator sent it again): nothing to write.
        case duplicate(index: Int)
        case refused(String)
    }

    /// Looks at one chunk message: checks its header, index, length and hash (the data is
    /// `payload` after the header). Does not mark it: `mark` does, once the data is on the disk.
    func check(_ payload: ByteBuffer) -> Chunk {
        guard payload.readableBytes > Self.headerBytes, let index = payload.getInteger(at: payload.readerIndex, as: UInt32.self) else {
            return .refused("a chunk of \(payload.readableBytes) bytes is shorter than its 36-byte header and one byte of data")
        }
        let i = Int(index)
        guard i < chunkCount else { return .refused("chunk \(i) is past the last, \(chunkCount - 1)") }
        let dataBytes = payload.readableBytes - Self.headerBytes
        guard dataBytes == length(of: i) else {
            return .refused("chunk \(i) has \(dataBytes) bytes of data, not \(length(of: i)) (chunk_size \(chunkSize))")
        }
        if has(i) { return .duplicate(index: i) }
        var hash = SHA256()
        payload.withUnsafeReadableBytes { hash.update(UnsafeRawBufferPointer(rebasing: $0[Self.headerBytes...])) }
        let digest = hash.finalize()
        let claimed = payload.getBytes(at: payload.readerIndex + 4, length: 32) ?? []
        guard digest == claimed else { return .refused("chunk \(i): its data does not match its SHA-256 (damaged on the way)") }
        return .new(index: i, offset: i * chunkSize)
    }

    mutating func mark(_ i: Int) {
        guard !has(i) else { return }
        have[i >> 3] |= 1 << UInt8(i & 7)
        receivedChunks += 1
    }

    /// A chunk message for chunk `i` of `package` (the operator's side).
    static func chunkMessage(_ package: [UInt8], index i: Int, chunkSize: Int) -> ByteBuffer {
        let data = package[(i * chunkSize)..<min(package.count, (i + 1) * chunkSize)]
        var hash = SHA256()
        data.withUnsafeBytes { hash.update($0) }
        var b = ByteBuffer()
        b.reserveCapacity(Self.headerBytes + data.count)
        b.writeInteger(UInt32(i))
        b.writeBytes(hash.finalize())
        b.writeBytes(data)
        return b
    }
}
