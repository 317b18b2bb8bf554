@testable import OfflineStore

/// A file system in memory that remembers what was synced, so a test can cut the power:
/// keep each file's image as of its last fdatasync, then apply a prefix of the later writes (in
/// the order they were issued, across files), the last one torn at a 512-byte boundary, and
/// optionally flip bits.
final class SimulatedDisk: StoreFileSystem, @unchecked Sendable {
    /// What the files report to (no reference back to the disk: no cycle).
    final class Journal {
        var pending: [(file: String, offset: Int, bytes: [UInt8])] = []
        var syncs = 0
        var bytesWritten = 0
        var failWrites: Int32?
    }

    final class File: StoreFile {
        let name: String
        var current: [UInt8]
        var synced: [UInt8]
        let disk: Journal
        var syncs = 0

        init(name: String, size: Int, disk: Journal) {
            self.name = name
            current = [UInt8](repeating: 0, count: size)
            synced = current
            self.disk = disk
        }

        var size: Int { current.count }

        func read(at offset: Int, count: Int) throws(StoreError) -> [UInt8] {
            Array(current[offset..<min(offset + count, current.count)])
        }

        func write(_ bytes: [UInt8], at offset: Int) throws(StoreError) {
            if let e = disk.failWrites { throw .io(operation: "pwrite", path: name, errno: e) }
            precondition(offset % 4096 == 0 && bytes.count % 4096 == 0, "unaligned write \(offset) +\(bytes.count)")
            current.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
            disk.pending.append((name, offset, bytes))
            disk.bytesWritten += bytes.count
        }

        func sync() throws(StoreError) {
            synced = current
            disk.pending.removeAll { $0.file == name }
            syncs += 1
            disk.syncs += 1
        }
    }

    var files: [String: File] = [:]
    let journal = Journal()
    var pending: [(file: String, offset: Int, bytes: [UInt8])] { journal.pending }
    var syncs: Int { journal.syncs }
    var bytesWritten: Int { journal.bytesWritten }
    var failWrites: Int32? {
        get { journal.failWrites }
        set { journal.failWrites = newValue }
    }

    func open(directory: String, name: String, size: Int) throws(StoreError) -> StoreFile {
        if let f = files[name] {
            guard f.size == size else { throw .layout("\(name) is \(f.size) bytes, expected \(size)") }
            return f
        }
        let f = File(name: name, size: size, disk: journal)
        files[name] = f
        return f
    }

    func size(directory: String, name: String) -> Int? { files[name]?.size }

    func remove(directory: String, name: String) throws(StoreError) { files[name] = nil }

    func syncDirectory(_ directory: String) throws(StoreError) {}

    struct Flip {
        let file: String
        let offset: Int
    }

    /// The disk as it is after a power cut: synced images, a prefix of the pending writes, the
    /// last torn, unsynced bit flips, and (if asked) one flip in synced bytes, which it returns.
    func crash(rng: inout SplitMix, flipSynced: Bool) -> (SimulatedDisk, Flip?) {
        let after = SimulatedDisk()
        for (name, f) in files {
            let g = File(name: name, size: f.size, disk: after.journal)
            g.current = f.synced
            g.synced = f.synced
            after.files[name] = g
        }
        let applied = pending.isEmpty ? 0 : Int(rng.next() % UInt64(pending.count + 1))
        var unsynced: [(String, Int)] = []
        for (i, w) in pending.prefix(applied).enumerated() {
            var bytes = w.bytes
            if i == applied - 1 && rng.next() % 2 == 0 {
                let sectors = Int(rng.next() % UInt64(bytes.count / 512))
                bytes = Array(bytes.prefix(sectors * 512))
            }
            guard !bytes.isEmpty else { continue }
            let g = after.files[w.file]!
            // Bytes this write changes: the rest (a rewritten tail page) holds synced data.
            let before = files[w.file]!.synced
            for k in bytes.indices where bytes[k] != before[w.offset + k] { unsynced.append((w.file, w.offset + k)) }
            g.current.replaceSubrange(w.offset..<(w.offset + bytes.count), with: bytes)
        }
        // Bit flips in bytes that were never synced.
        if !unsynced.isEmpty && rng.next() % 3 == 0 {
            let (file, at) = unsynced[Int(rng.next() % UInt64(unsynced.count))]
            after.files[file]!.current[at] ^= UInt8(1 << (rng.next() % 8))
        }
        for g in after.files.values { g.synced = g.current }
        var flip: Flip?
        if flipSynced {
            // One flip anywhere in a synced, non-zero region of a segment.
            let names = files.keys.filter { $0.hasPrefix("segment") }.sorted()
            for _ in 0..<20 {
                let name = names[Int(rng.next() % UInt64(names.count))]
                let f = files[name]!
                let at = Int(rng.next() % UInt64(f.size))
                if f.synced[at] != 0 {
                    after.files[name]!.current[at] ^= UInt8(1 << (rng.next() % 8))
                    after.files[name]!.synced = after.files[name]!.current
                    flip = Flip(file: name, offset: at)
                    break
                }
            }
        }
        return (after, flip)
    }
}

/// A small deterministic generator for seeded tests.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
