import Dispatch
import FoundationEssentials
import NIOConcurrencyHelpers

/// The answers to the last `capacity` request ids, kept across restarts, so that a request the
/// broker delivers twice (QoS 1 does, now and then) is answered with its first answer instead of
/// running twice. A repeat that arrives while the first is still running waits for that run's
/// answer; one that asks for the answer somewhere else (another response topic or correlation
/// data: another requester) gets it there too, at most `maxWaiters` of them per id. Written
/// atomically (temporary file, fsync, rename) after each new answer, on a queue of its own: one
/// write at a time, only the newest state when answers come faster than the disk. The answer of a
/// command that ran waits for its write (it is on the disk before it is sent: a crash in between
/// cannot make it run twice); early refusals, answered on the network thread, do not wait.
final class RecentRequests<Waiter: Sendable & Equatable>: @unchecked Sendable {
    struct Entry: Codable {
        var id: String
        var response: String
    }

    /// Requesters of one running id answered besides the first.
    static var maxWaiters: Int { 8 }

    let path: String
    let capacity: Int
    private let lock = NIOLock()
    private var order: [String] = []
    private var answers: [String: String] = [:]
    /// Requests being run now, with where each requester wants the answer (the first's first).
    private var running: [String: [Waiter]] = [:]
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
        /// Running; `waits`: this requester is answered when it ends (false: it already is, or
        /// too many wait).
        case running(waits: Bool)
    }

    /// Looks the id up, and marks a new one as running for `waiter`.
    func begin(_ id: String, waiter: Waiter) -> Seen {
        lock.lock()
        defer { lock.unlock() }
        if let a = answers[id] { return .answered(a) }
        if var waiters = running[id] {
            guard !waiters.contains(waiter), waiters.count <= Self.maxWaiters else { return .running(waits: false) }
            waiters.append(waiter)
            running[id] = waiters
            return .running(waits: true)
        }
        running[id] = [waiter]
        return .new
    }

    /// Remembers the answer; returns the requesters besides the first, still to be answered.
    @discardableResult
    func finish(_ id: String, response: String, durable: Bool) -> [Waiter] {
        lock.lock()
        let waiters = running.removeValue(forKey: id) ?? []
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
        return Array(waiters.dropFirst())
    }

    /// Forgets a run without remembering an answer (it was refused as `busy`: the same id sent
    /// again later runs); returns the requesters besides the first.
    func abandon(_ id: String) -> [Waiter] {
        lock.withLock { Array((running.removeValue(forKey: id) ?? []).dropFirst()) }
    }

    /// Waits until what was answered so far is on the disk (a clean stop, tests).
    func flush() { saver.sync {} }
}
