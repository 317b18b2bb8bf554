import Dispatch
import FoundationEssentials
import Glibc
import NIOConcurrencyHelpers

#if canImport(Glibc)
#endif

/// The per-device event sequence number, kept across restarts without a write per event: the
/// file holds the end of a lease of `lease` numbers, written (atomically, fsynced) when a lease
/// begins. After a crash the count resumes at the lease's end: numbers are never reused, and a
/// gap downstream shows that events may have been lost. A clean stop (`close`) writes the next
/// unused number instead, so the count goes on without a gap.
public final class SequenceCounter: @unchecked Sendable {
    public let path: String
    private let lease: UInt64
    private let lock = NIOLock()
    private var next: UInt64
    private var leaseEnd: UInt64

    public init(directory: String, lease: UInt64 = 1000) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = directory + "/event-sequence"
        self.lease = lease
        var start: UInt64 = 1
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            guard let v = UInt64(text.trimmed) else {
                throw AgentError("event sequence file \(path) is damaged (\"\(text.prefix(40))\"); move it away to start a new count")
            }
            start = v
        }
        next = start
        leaseEnd = start
        try extend()
    }

    /// The next sequence number.
    public func take() throws -> UInt64 {
        lock.lock()
        defer { lock.unlock() }
        if next >= leaseEnd { try extend() }
        defer { next += 1 }
        return next
    }

    /// A clean stop, after the last `take`: the next start continues at the next unused number.
    /// If the write fails the lease stays as it was (a gap downstream, never a reused number).
    public func close() throws {
        lock.lock()
        defer { lock.unlock() }
        guard next < leaseEnd else { return }
        do { try AtomicFile.write(Array("\(next)\n".utf8), to: path) } catch {
            throw AgentError("\(error) (state_dir): the next start skips to \(leaseEnd)")
        }
        leaseEnd = next
    }

    private func extend() throws {
        let end = next + lease
        do { try AtomicFile.write(Array("\(end)\n".utf8), to: path) } catch {
            throw AgentError("\(error) (state_dir)")
        }
        leaseEnd = end
    }
}

public struct AgentError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ d: String) { description = d }
}
