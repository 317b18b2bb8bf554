import Dispatch
import FoundationEssentials
import Glibc
import NIOConcurrencyHelpers

#if canImport(Glibc)
#endif

/// The answers to the last `capacity` request ids, kept across restarts, so that a request the
/// broker delivers twice (QoS 1 does, now and then) is answered with its first answer instead of
/// running twice. Written atomically (temporary file, fsync, rename) after each new answer.
final class RecentRequests: @unchecked Sendable {
    struct Entry: Codable {
        var id: String
        var response: String
    }

    let path: String
    let capacity: Int
    private let lock = NIOLock()
    private var order: [String] = []
    private var answers: [String: String] = [:]
    /// Requests being run now: a duplicate of one is dropped (the first will answer).
    private var running: Set<String> = []

    init(path: String, capacity: Int) {
        self.path = path
        self.capacity = capacity
        if let data = FileManager.default.contents(atPath: path), let entries = try? JSONDecoder().decode([Entry].self, from: data) {
            for e in entries.suffix(capacity) {
                order.append(e.id)
                answers[e.id] = e.response
            }
        }
    }

    enum Seen {
        case new
        case answered(String)
        case running
    }

    /// Looks the id up, and marks a new one as running.
    func begin(_ id: String) -> Seen {
        lock.lock()
        defer { lock.unlock() }
        if let a = answers[id] { return .answered(a) }
        if running.contains(id) { return .running }
        running.insert(id)
        return .new
    }

    func finish(_ id: String, response: String) {
        lock.lock()
        running.remove(id)
        if answers[id] == nil { order.append(id) }
        answers[id] = response
        while order.count > capacity { answers[order.removeFirst()] = nil }
        let entries = order.map { Entry(id: $0, response: answers[$0]!) }
        lock.unlock()
        save(entries)
    }

    private func save(_ entries: [Entry]) {
        guard let data = try? JSONEncoder().encode(entries) else { return }
        try? AtomicFile.write(Array(data), to: path)
    }
}
