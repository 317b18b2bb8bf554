import FoundationEssentials
import NIOConcurrencyHelpers
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Watches a snapshot folder (inotify) and reports each new image file once it is complete
/// (closed after writing, or renamed into the folder), with its path, size and SHA-256. Names
/// starting with "." or ending in ".tmp" / ".part" are writers' temporary files and are skipped.
/// A JPEG or PNG (by its first bytes) of at most `maxImageBytes` comes with its bytes, for the
/// agent to publish as the newest snapshot image (`content_type` in the event says which).
///
/// What else can be put into a folder is met without harm: only regular files are read, opened
/// with `O_NOFOLLOW | O_NONBLOCK` (a symlink is not followed, a FIFO does not block the source),
/// and at most `maxHashBytes` of a file are hashed (a larger one is reported with its size and
/// without `sha256`). Each refusal is counted by reason. When the kernel's event queue overflows,
/// the folder is scanned for files changed since the last one reported; when the folder is
/// removed or moved away, the source watches for it to come back and then scans it.
public final class DirectoryWatcher: EventSource {
    public let name: String
    public let kind = "directory"
    public let path: String
    public let maxHashBytes: Int
    /// A JPEG or PNG file up to this size comes with its bytes (`SourceEvent.image`); 0: never.
    public let maxImageBytes: Int
    private let counts = Counters()

    public init(name: String, path: String, maxHashBytes: Int = 64 << 20, maxImageBytes: Int = 2 << 20) {
        self.name = name
        self.path = path
        self.maxHashBytes = maxHashBytes
        self.maxImageBytes = maxImageBytes
    }

    public var counters: [String: Int] { counts.all }

    static let watchMask = UInt32(IN_CLOSE_WRITE) | UInt32(IN_MOVED_TO) | UInt32(IN_DELETE_SELF) | UInt32(IN_MOVE_SELF)

    /// Watches until cancelled. Files are hashed on the context's thread pool, one at a time, in
    /// the order the kernel reported them.
    public func run(_ context: SourceContext) async throws {
        try await Inotify.withDescriptor(on: context.loop, source: name) { fd, reads in
            guard inotify_add_watch(fd, path, Self.watchMask) >= 0 else {
                throw SourceError(name, .badPath, "cannot watch \(path): \(String(cString: strerror(errno))) (sources[].path)")
            }
            context.ready()
            var since = timespec()  // the change time of the newest file reported: what a scan goes by
            for try await chunk in reads {
                var overflowed = false
                var gone = false
                for event in InotifyEvent.parse(chunk) {
                    if event.has(IN_Q_OVERFLOW) {
                        overflowed = true
                    } else if event.has(IN_DELETE_SELF) || event.has(IN_MOVE_SELF) || event.has(IN_IGNORED) {
                        gone = true
                    } else if Self.isCandidate(event.name) {
                        try await report(path + "/" + event.name, since: &since, context)
                    }
                }
                if gone {
                    // The folder went away: look for it again each second, then catch up.
                    counts.add("folder_gone")
                    while inotify_add_watch(fd, path, Self.watchMask) < 0 { try await context.loop.sleep(for: .seconds(1)) }
                    counts.add("folder_back")
                    try await scan(since: &since, context)
                } else if overflowed {
                    counts.add("queue_overflow")
                    try await scan(since: &since, context)
                }
            }
            try Task.checkCancellation()
            throw SourceError(name, .ended, "the inotify descriptor was closed")
        }
    }

    static func isCandidate(_ file: String) -> Bool {
        !file.isEmpty && !file.hasPrefix(".") && !file.hasSuffix(".tmp") && !file.hasSuffix(".part")
    }

    /// Reports every file in the folder changed at or after `since` (the kernel dropped events, or
    /// the folder came back), oldest first. At, not only after: file times are coarse (a clock
    /// tick), so files written together share one; the newest one reported before may come again
    /// (at least once, never lost).
    private func scan(since: inout timespec, _ context: SourceContext) async throws {
        guard let dir = opendir(path) else { return }
        var found: [(time: timespec, file: String)] = []
        while let entry = readdir(dir) {
            let file = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard Self.isCandidate(file) else { continue }
            var st = stat()
            guard lstat(path + "/" + file, &st) == 0, Self.isRegular(st), !Self.after(since, st.st_ctim) else { continue }
            found.append((st.st_ctim, file))
        }
        closedir(dir)
        for f in found.sorted(by: { Self.after($1.time, $0.time) }) { try await report(path + "/" + f.file, since: &since, context) }
    }

    static func isRegular(_ st: stat) -> Bool { st.st_mode & S_IFMT == S_IFREG }

    static func after(_ a: timespec, _ b: timespec) -> Bool { a.tv_sec != b.tv_sec ? a.tv_sec > b.tv_sec : a.tv_nsec > b.tv_nsec }

    private func report(_ file: String, since: inout timespec, _ context: SourceContext) async throws {
        let fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        guard fd >= 0 else {
            counts.add(errno == ELOOP ? "symlink" : "unreadable")
            return
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, Self.isRegular(st) else {
            counts.add("not_regular")
            return
        }
        if Self.after(st.st_ctim, since) { since = st.st_ctim }
        let size = Int(st.st_size)
        var fields: [String: JSONValue] = ["path": .string(file), "size": .int(size)]
        var image: SourceImage?
        if size > maxHashBytes {
            fields["hash_skipped"] = .string("larger than \(maxHashBytes) bytes (sources[].max_hash_bytes)")
            counts.add("hash_skipped")
        } else if let read = try await Self.hash(fd, limit: maxHashBytes, keep: size <= maxImageBytes ? size : 8, on: context.threadPool) {
            fields["sha256"] = .string(read.digest)
            if let type = SourceImage.contentType(of: read.head) {
                fields["content_type"] = .string(type)
                if size <= maxImageBytes && read.head.count == size {
                    image = SourceImage(bytes: read.head, contentType: type)
                    counts.add("images")
                } else if size <= maxImageBytes {
                    fields["image_skipped"] = .string("the file changed while it was read")
                    counts.add("image_skipped")
                } else if maxImageBytes > 0 {
                    fields["image_skipped"] = .string("larger than \(maxImageBytes) bytes (sources[].max_image_bytes)")
                    counts.add("image_skipped")
                }
            }
        } else {
            counts.add("unreadable")
            return
        }
        context.sink(SourceEvent(type: "snapshot", fields: fields, image: image))
        counts.add("snapshots")
    }

    /// SHA-256 of at most `limit` bytes (a file still growing is not read without end), and the
    /// first `keep` bytes, on the thread pool; nil on a read error. Cancelling the task stops it
    /// at the next 256 KiB.
    static func hash(_ fd: Int32, limit: Int, keep: Int, on pool: NIOThreadPool) async throws -> (digest: String, head: [UInt8])? {
        let cancelled = NIOLockedValueBox(false)
        return try await withTaskCancellationHandler {
            try await pool.runIfActive {
                try SHA256.digest(of: fd, limit: limit, keep: keep) { cancelled.withLockedValue { $0 } }.map { ($0.digest, $0.head) }
            }
        } onCancel: {
            cancelled.withLockedValue { $0 = true }
        }
    }
}
