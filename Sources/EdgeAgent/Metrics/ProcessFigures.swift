#if canImport(Glibc)
import Glibc
#endif

/// The process' own figures from /proc (Linux): resident memory, open and allowed file
/// descriptors, CPU time. nil where a figure cannot be read.
struct ProcessFigures {
    var residentBytes: Int?
    var openFiles: Int?
    var maxFiles: Int?
    var cpuSeconds: Double?

    /// When the process started, by the wall clock (the boot time the kernel keeps in step with
    /// it, plus the start's clock ticks since boot); read once. nil where /proc/stat is hidden
    /// (the packaged unit's `ProcSubset=pid`).
    static let startSeconds: Double? = {
        // starttime is the 22nd field of the line, the 20th after the parenthesis.
        guard let f = statFields(), f.count > 19, let start = Double(f[19]), let proc = readSmallFile("/proc/stat"),
            let line = proc.split(separator: "\n").first(where: { $0.hasPrefix("btime ") }), let boot = Double(line.dropFirst(6))
        else { return nil }
        return boot + start / ticks
    }()

    private static let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))

    /// /proc/self/stat's fields after the command's closing parenthesis (the command may hold spaces).
    private static func statFields() -> [Substring]? {
        guard let stat = readSmallFile("/proc/self/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ")
    }

    static func now() -> ProcessFigures {
        var p = ProcessFigures()
        // statm: size resident shared ... in pages.
        if let statm = readSmallFile("/proc/self/statm"), case let f = statm.split(separator: " "), f.count > 1, let pages = Int(f[1]) {
            p.residentBytes = pages * Int(sysconf(Int32(_SC_PAGESIZE)))
        }
        if let dir = opendir("/proc/self/fd") {
            var n = 0
            while let entry = readdir(dir) {
                if entry.pointee.d_name.0 != UInt8(ascii: ".") { n += 1 }
            }
            closedir(dir)
            p.openFiles = n - 1  // the listing's own descriptor
        }
        var limit = rlimit()
        if getrlimit(RLIMIT_NOFILE_VALUE, &limit) == 0 { p.maxFiles = Int(clamping: limit.rlim_cur) }
        // utime and stime: the 14th and 15th fields of the line, the 12th and 13th after the parenthesis.
        if let f = statFields(), f.count > 12, let user = Double(f[11]), let system = Double(f[12]) {
            p.cpuSeconds = (user + system) / ticks
        }
        return p
    }

    private static var RLIMIT_NOFILE_VALUE: __rlimit_resource_t { __rlimit_resource_t(RLIMIT_NOFILE.rawValue) }

    /// A /proc file of at most 4 KiB (its size reads as 0, so read until the end).
    static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 4096)
        var used = 0
        while used < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + used, $0.count - used) }
            if n <= 0 { break }
            used += n
        }
        return String(decoding: bytes[..<used], as: UTF8.self)
    }
}
