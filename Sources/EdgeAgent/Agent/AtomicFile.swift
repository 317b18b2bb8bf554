import FoundationEssentials
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// Replaces `path` with `bytes` so that a power cut leaves the old or the new file, never a
/// mix: a temporary file beside it, fsync, rename, fsync of the folder. Used for the event
/// sequence lease, the remembered command answers and `config/set`.
enum AtomicFile {
    /// Numbers the temporary files: writers of the same path at once never share one.
    private static let counter = NIOLockedValueBox(0)

    static func write(_ bytes: [UInt8], to path: String) throws(AgentError) {
        let n = counter.withLockedValue { c in
            defer { c += 1 }
            return c
        }
        let tmp = path + ".new-\(getpid())-\(n)"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw AgentError("cannot write \(tmp): \(String(cString: strerror(errno)))") }
        let ok = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } == bytes.count && fsync(fd) == 0
        close(fd)
        guard ok, rename(tmp, path) == 0 else {
            let e = errno
            unlink(tmp)
            throw AgentError("cannot replace \(path): \(String(cString: strerror(e)))")
        }
        let dir = open(directoryPart(of: path), O_RDONLY | O_DIRECTORY)
        if dir >= 0 {
            fsync(dir)
            close(dir)
        }
    }
}
