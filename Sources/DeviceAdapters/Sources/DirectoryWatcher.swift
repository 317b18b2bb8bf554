import Crypto
import FoundationEssentials

#if canImport(Glibc)
import Glibc
#endif

/// Watches a snapshot folder (inotify) and reports each new image file once it is complete
/// (closed after writing, or renamed into the folder), with its path, size and SHA-256. Names
/// starting with "." or ending in ".tmp" / ".part" are writers' temporary files and are skipped.
public final class DirectoryWatcher: EventSource, @unchecked Sendable {
    public let name: String
    public let kind = "directory"
    public let path: String
    private let worker = Worker()
    private let counts = Counters()

    public init(name: String, path: String) {
        self.name = name
        self.path = path
    }

    public var counters: [String: Int] { counts.all }

    public func start(_ sink: @escaping EventSink) throws {
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { throw LightError(description: "directory source \(name): inotify_init1 failed: \(String(cString: strerror(errno)))") }
        let mask = UInt32(IN_CLOSE_WRITE) | UInt32(IN_MOVED_TO)
        guard inotify_add_watch(fd, path, mask) >= 0 else {
            let e = errno
            close(fd)
            throw LightError(description: "directory source \(name): cannot watch \(path): \(String(cString: strerror(e))) (sources[].path)")
        }
        worker.start(name: "source-\(name)") { [self] w in
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            while !w.isStopped {
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&pfd, 1, 100) > 0 else { continue }
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                guard n > 0 else { continue }
                var offset = 0
                while offset + 16 <= n {
                    let (len, nameBytes): (Int, [UInt8]) = buffer.withUnsafeBytes { raw in
                        let len = Int(raw.load(fromByteOffset: offset + 12, as: UInt32.self))
                        let bytes = Array(raw[(offset + 16)..<min(n, offset + 16 + len)])
                        return (len, bytes)
                    }
                    offset += 16 + len
                    let file = String(decoding: nameBytes.prefix { $0 != 0 }, as: UTF8.self)
                    guard !file.isEmpty, !file.hasPrefix("."), !file.hasSuffix(".tmp"), !file.hasSuffix(".part") else { continue }
                    report(path + "/" + file, sink)
                }
            }
        }
    }

    private func report(_ file: String, _ sink: EventSink) {
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            counts.add("unreadable")
            return
        }
        defer { close(fd) }
        var hasher = SHA256()
        var size = 0
        var chunk = [UInt8](repeating: 0, count: 256 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            chunk.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[..<n])) }
            size += n
        }
        let hex = Array("0123456789abcdef".utf8)
        let digest = String(decoding: hasher.finalize().flatMap { [hex[Int($0 >> 4)], hex[Int($0 & 15)]] }, as: UTF8.self)
        sink(SourceEvent(type: "snapshot", fields: ["path": .string(file), "size": .int(size), "sha256": .string(digest)]))
        counts.add("snapshots")
    }

    public func stop() { worker.stop() }
}
