import DeviceAdapters
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
public final class SequenceCounter: Sendable {
    public let path: String
    private let lease: UInt64
    /// The next number and the end of the lease on the disk.
    private let counter: NIOLockedValueBox<(next: UInt64, leaseEnd: UInt64)>
    /// What the start had to do about a damaged file, for the log (nil: nothing).
    public let recovery: String?

    /// The lease is written twice (`event-sequence`, then `event-sequence.bak`), so that a file
    /// damaged on the disk (or emptied, or edited by hand) never stops the agent and never makes
    /// it reuse a number: the backup is at most one lease behind, so the count goes on a lease
    /// after it. With both unreadable the count goes on above every number a board can have used:
    /// the milliseconds since 2025 (fewer than one event per millisecond on average), and from 1
    /// only when the clock is not trusted either, which the log says.
    public init(directory: String, lease: UInt64 = 1000, now: Date = Date()) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = directory + "/event-sequence"
        self.lease = lease
        var start: UInt64 = 1
        var recovery: String?
        let read = { (p: String) -> String? in (try? String(contentsOfFile: p, encoding: .utf8)) }
        if let text = read(path) {
            if let v = UInt64(text.trimmed), v > 0 {
                start = v
            } else if let backup = read(path + ".bak"), let v = UInt64(backup.trimmed), v > 0 {
                start = v + lease
                recovery =
                    "event sequence file \(path) is damaged (\(printable(Array(text.utf8), limit: 40))); went on from its backup at \(start) (a gap of up to \(lease))"
            } else {
                let floor = now.timeIntervalSince(EventPipeline.clockFloor)
                start = floor > 0 ? UInt64(floor * 1000) : 1
                recovery =
                    floor > 0
                    ? "event sequence file \(path) and its backup are damaged; went on at \(start), the milliseconds since 2025 (above any number used before)"
                    : "event sequence file \(path) and its backup are damaged and the clock is not trusted: counting again from 1 (event ids may repeat)"
            }
        }
        self.recovery = recovery
        try Self.save(start + lease, to: path)
        counter = NIOLockedValueBox((start, start + lease))
    }

    /// The next sequence number.
    public func take() throws -> UInt64 {
        try counter.withLockedValue { c in
            if c.next >= c.leaseEnd {
                try Self.save(c.next + lease, to: path)
                c.leaseEnd = c.next + lease
            }
            defer { c.next += 1 }
            return c.next
        }
    }

    /// A clean stop, after the last `take`: the next start continues at the next unused number.
    /// If the write fails the lease stays as it was (a gap downstream, never a reused number).
    public func close() throws {
        try counter.withLockedValue { c in
            guard c.next < c.leaseEnd else { return }
            try Self.save(c.next, to: path)
            c.leaseEnd = c.next
        }
    }

    private static func save(_ value: UInt64, to path: String) throws {
        let text = Array("\(value)\n".utf8)
        do {
            try AtomicFile.write(text, to: path)
            try AtomicFile.write(text, to: path + ".bak")
        } catch {
            throw AgentError("\(error) (state_dir)")
        }
    }
}

public struct AgentError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ d: String) { description = d }
}
