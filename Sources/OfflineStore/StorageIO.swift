#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// All file I/O of the store goes through these two protocols, so that a test double can
/// simulate power cuts (see Tests/OfflineStoreTests/SimulatedDisk.swift).
public protocol StoreFile: AnyObject {
    var size: Int { get }
    func read(at offset: Int, count: Int) throws(StoreError) -> [UInt8]
    /// Whole pages at page-aligned offsets only.
    func write(_ bytes: [UInt8], at offset: Int) throws(StoreError)
    /// fdatasync.
    func sync() throws(StoreError)
}

public protocol StoreFileSystem: Sendable {
    /// Opens `name` in `directory`, creating it with exactly `size` zero bytes if it does not exist.
    /// An existing file of another size is an error (the store never resizes its files).
    func open(directory: String, name: String, size: Int) throws(StoreError) -> StoreFile
    /// The size of `name` in `directory`, or nil when there is no such file.
    func size(directory: String, name: String) -> Int?
    /// Deletes `name` in `directory` (nothing happens when there is no such file).
    func remove(directory: String, name: String) throws(StoreError)
    /// Makes the directory's entries durable (files created and deleted in it).
    func syncDirectory(_ directory: String) throws(StoreError)
}

public enum StoreError: Error, Equatable, Sendable, CustomStringConvertible {
    /// An I/O call failed; `errno` names the cause (EIO, ENOSPC, ...).
    case io(operation: String, path: String, errno: Int32)
    /// An existing store file has the wrong size (another capacity or segment count?).
    case layout(String)
    /// `reject_newest` and every segment holds unacknowledged records.
    case full(capacity: Int)
    /// A record larger than a segment can hold.
    case tooLarge(bytes: Int, limit: Int)
    /// Another process has the store open.
    case locked(path: String)

    public var description: String {
        switch self {
        case .io(let op, let path, let e): "\(op) \(path) failed: \(String(cString: strerror(e))) (errno \(e))"
        case .layout(let what): "store layout mismatch: \(what)"
        case .full(let c): "offline store is full (\(c) bytes of unacknowledged messages) and full_policy is reject_newest"
        case .tooLarge(let b, let l): "record of \(b) bytes does not fit in a segment (limit \(l) bytes): raise the capacity or send less"
        case .locked(let path): "\(path) is in use by another process (is another edge-agent running with the same store directory?)"
        }
    }
}

/// The real thing: pread/pwrite/fdatasync on preallocated files. Each file is locked
/// (`flock`, exclusive) while open, so two processes never share a store; `readOnly` opens
/// existing files only, without locking, for inspection beside a running agent.
public struct PosixFileSystem: StoreFileSystem {
    public let readOnly: Bool

    public init(readOnly: Bool = false) {
        self.readOnly = readOnly
    }

    public func open(directory: String, name: String, size: Int) throws(StoreError) -> StoreFile {
        let path = directory + "/" + name
        if !readOnly { mkdir(directory, 0o750) }
        let fd = Glibc.open(path, readOnly ? O_RDONLY | O_CLOEXEC : O_RDWR | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw .io(operation: "open", path: path, errno: errno) }
        if !readOnly && flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let e = errno
            close(fd)
            if e == EWOULDBLOCK { throw .locked(path: path) }
            throw .io(operation: "flock", path: path, errno: e)
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .io(operation: "fstat", path: path, errno: errno) }
        if st.st_size == 0 && readOnly {
            close(fd)
            throw .layout("\(path) is empty: not a store")
        }
        if st.st_size == 0 {
            // Created once: allocate every block now, so later writes never need new space.
            let rc = posix_fallocate(fd, 0, off_t(size))
            if rc != 0 {
                close(fd)
                unlink(path)
                throw .io(operation: "fallocate", path: path, errno: rc)
            }
            if fsync(fd) != 0 { throw .io(operation: "fsync", path: path, errno: errno) }
        } else if Int(st.st_size) != size {
            close(fd)
            throw .layout("\(path) is \(st.st_size) bytes, expected \(size)")
        }
        return PosixFile(fd: fd, path: path, size: size, readOnly: readOnly)
    }

    public func size(directory: String, name: String) -> Int? {
        var st = stat()
        return stat(directory + "/" + name, &st) == 0 ? Int(st.st_size) : nil
    }

    public func remove(directory: String, name: String) throws(StoreError) {
        let path = directory + "/" + name
        if readOnly { throw .io(operation: "unlink (read-only store)", path: path, errno: EROFS) }
        if unlink(path) != 0 && errno != ENOENT { throw .io(operation: "unlink", path: path, errno: errno) }
    }

    public func syncDirectory(_ directory: String) throws(StoreError) {
        let fd = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(operation: "open", path: directory, errno: errno) }
        defer { close(fd) }
        if fsync(fd) != 0 { throw .io(operation: "fsync", path: directory, errno: errno) }
    }
}

final class PosixFile: StoreFile {
    let fd: Int32
    let path: String
    let size: Int
    let readOnly: Bool

    init(fd: Int32, path: String, size: Int, readOnly: Bool) {
        self.fd = fd
        self.path = path
        self.size = size
        self.readOnly = readOnly
    }

    deinit { close(fd) }

    func read(at offset: Int, count: Int) throws(StoreError) -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset + done)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(operation: "pread", path: path, errno: errno)
            }
            if n == 0 { break }
            done += n
        }
        return buf
    }

    func write(_ bytes: [UInt8], at offset: Int) throws(StoreError) {
        if readOnly { throw .io(operation: "pwrite (read-only store)", path: path, errno: EROFS) }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, bytes.count - done, off_t(offset + done)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(operation: "pwrite", path: path, errno: errno)
            }
            done += n
        }
    }

    func sync() throws(StoreError) {
        if readOnly { return }
        if fdatasync(fd) != 0 { throw .io(operation: "fdatasync", path: path, errno: errno) }
    }
}
