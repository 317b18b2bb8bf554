import OfflineStore

/// Store recovery from whatever a card may hold after a power cut or a fault: a small store is
/// written, then its files are patched with the input's bytes (at offsets the input picks), and
/// opened again. Findings: a trap or a hang in recovery, a record handed out that was never
/// appended, or a record appended after recovery that is gone at the next open.
enum StoreFuzz {
    static let options = RingStore.Options(capacity: 64 << 10, segmentCount: 4, sync: .always)

    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let disk = MemoryFileSystem()
        var written: Set<[UInt8]> = []
        do {
            let store = try RingStore(directory: "/s", options: options, fileSystem: disk)
            for i in 0..<Int(input.byte() % 40) {
                let body = Array("record-\(i)-".utf8) + [UInt8](repeating: UInt8(i), count: i * 37 % 900)
                written.insert(body)
                _ = try store.append(body)
                if i % 3 == 0 { _ = try store.acknowledge(UInt64(i / 2) + 1) }
            }
            try store.close()
        } catch {
            preconditionFailure("a fresh store in memory failed: \(error)")
        }
        // Patches: file number, offset (two bytes, in 16-byte steps), length, bytes.
        let names = disk.names
        while !input.isEmpty, !names.isEmpty {
            let name = names[Int(input.byte()) % names.count]
            let offset = (Int(input.byte()) << 8 | Int(input.byte())) * 16
            let patch = input.take(Int(input.byte() % 64) + 1)
            disk.patch(name, at: offset, with: patch)
        }
        let fresh = Array("after-recovery".utf8)
        do {
            let (store, _) = try RingStore.open(directory: "/s", options: options, fileSystem: disk)
            for r in try store.pending() {
                precondition(
                    written.contains(r.body), "recovery handed out a record that was never appended (\(r.body.count) bytes, seq \(r.seq))")
            }
            let seq = try store.append(fresh)
            try store.close()
            let (again, _) = try RingStore.open(directory: "/s", options: options, fileSystem: disk)
            let kept = try again.pending().contains { $0.seq == seq && $0.body == fresh }
            precondition(kept, "a record appended and synced after recovery is gone at the next open")
            try again.close()
        } catch {
            // Refusing a damaged store is allowed (the agent then runs degraded, in memory); trapping is not.
        }
    }
}

/// Files in memory, for the harness (one thread).
final class MemoryFileSystem: StoreFileSystem, @unchecked Sendable {
    final class File: StoreFile {
        var bytes: [UInt8]
        init(size: Int) { bytes = [UInt8](repeating: 0, count: size) }
        var size: Int { bytes.count }
        func read(at offset: Int, count: Int) throws(StoreError) -> [UInt8] {
            guard offset >= 0, count >= 0, offset + count <= bytes.count else { throw .io(operation: "read", path: "memory", errno: 5) }
            return Array(bytes[offset..<offset + count])
        }
        func write(_ data: [UInt8], at offset: Int) throws(StoreError) {
            guard offset >= 0, offset + data.count <= bytes.count else { throw .io(operation: "write", path: "memory", errno: 5) }
            bytes.replaceSubrange(offset..<offset + data.count, with: data)
        }
        func sync() throws(StoreError) {}
    }

    private var files: [String: File] = [:]
    var names: [String] { files.keys.sorted() }

    func open(directory: String, name: String, size: Int) throws(StoreError) -> StoreFile {
        let key = directory + "/" + name
        if let f = files[key] {
            guard f.size == size else { throw .layout("\(key) is \(f.size) bytes, not \(size)") }
            return f
        }
        let f = File(size: size)
        files[key] = f
        return f
    }

    func size(directory: String, name: String) -> Int? { files[directory + "/" + name]?.size }
    func remove(directory: String, name: String) throws(StoreError) { files[directory + "/" + name] = nil }
    func syncDirectory(_ directory: String) throws(StoreError) {}

    func patch(_ name: String, at offset: Int, with data: [UInt8]) {
        guard let f = files[name], f.size > 0 else { return }
        let start = offset % f.size
        let n = min(data.count, f.size - start)
        f.bytes.replaceSubrange(start..<start + n, with: data.prefix(n))
    }
}
