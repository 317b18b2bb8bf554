import FoundationEssentials

#if canImport(Glibc)
import Glibc
#endif

/// Replaces `path` with `bytes` so that a power cut leaves the old or the new file, never a
/// mix: a temporary file beside it, fsync, rename, fsync of the folder. Used for the event
/// sequence lease, the remembered command answers and `config/set`.
enum AtomicFile {
    static func write(_ bytes: [UInt8], to path: String) throws(AgentError) {
        let tmp = path + ".new"
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

/// The folder part of a path ("." for a bare name), as `dirname` gives it.
func directoryPart(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return slash == path.startIndex ? "/" : String(path[..<slash])
}

/// `x` with one decimal ("12.3"), for human-readable sizes and percentages.
func oneDecimal(_ x: Double) -> String {
    let tenths = Int((x * 10).rounded())
    return "\(tenths / 10).\(abs(tenths % 10))"
}

/// [A-Za-z0-9_] in ASCII.
func isWordByte(_ b: UInt8) -> Bool {
    (b >= 48 && b <= 57) || (b >= 65 && b <= 90) || (b >= 97 && b <= 122) || b == 95
}
