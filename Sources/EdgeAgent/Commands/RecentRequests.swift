import Dispatch
import FoundationEssentials
import Glibc
import NIOConcurrencyHelpers

#if canImport(Glibc)
#endif

/// The answers to the last `capacity` request ids, kept across restarts, so that a request the
/// broker delivers twice (QoS 1 does, now and then) is answered with its first answer instead of
/// running twice. Written atomically (temporary file, fsync, rename) after each new answer, on a
/// queue of its own: one write at a time, only the newest state when answers come faster than
/// the disk. The answer of a command that ran waits for its write (it is on the disk before it is
/// sent: a crash in between cannot make it run twice); early refusals, answered on the network
/// thread, do not wait.
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
    private let saver = DispatchQueue(label: "edge-agent.command-answers")
    private var generation = 0  // of the answers; the saver writes only the newest

    init(path: String, capacity: Int) {
        self.path = path
        self.capacity = capacity
        if let data = FileManager.default.contents(atPath: path), let entries = try? JSONDecoder().decode([Entry].self, from: data) {
            // A file with an id twice (written by hand, or damaged) keeps the later answer.
            for e in entries {
                if answers[e.id] != nil { order.removeAll { $0 == e.id } }
                order.append(e.id)
                answers[e.id] = e.response
            }
            while order.count > capacity { answers[order.removeFirst()] = nil }
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

    func finish(_ id: String, response: String, durable: Bool) {
        lock.lock()
        running.remove(id)
        if answers[id] == nil { order.append(id) }
        answers[id] = response
        while order.count > capacity { answers[order.removeFirst()] = nil }
        generation += 1
        let mine = generation
        lock.unlock()
        saver.async { [self] in
            let entries: [Entry]? = lock.withLock {
                guard generation == mine else { return nil }  // a newer answer's save follows
                return order.compactMap { id in answers[id].map { Entry(id: id, response: $0) } }
            }
            guard let entries, let data = try? JSONEncoder().encode(entries) else { return }
            try? AtomicFile.write(Array(data), to: path)
        }
        if durable { saver.sync {} }
    }

    /// Waits until what was answered so far is on the disk (a clean stop, tests).
    func flush() { saver.sync {} }
}
