import FoundationEssentials
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The answers to the last `capacity` request ids, kept across restarts, so that a request the
/// broker delivers twice (QoS 1 does, now and then) is answered with its first answer instead of
/// running twice. A repeat that arrives while the first is still running waits for that run's
/// answer; one that asks for the answer somewhere else (another response topic or correlation
/// data: another requester) gets it there too, at most `maxWaiters` of them per id. Written
/// atomically (temporary file, fsync, rename) after each new answer, on the thread pool: one
/// write at a time, only the newest state when answers come faster than the disk. The answer of a
/// command that ran waits for its write (it is on the disk before it is sent: a crash in between
/// cannot make it run twice); early refusals, answered on the network thread, do not wait.
final class RecentRequests<Waiter: Sendable & Equatable>: Sendable {
    struct Entry: Codable {
        var id: String
        var response: String
    }

    /// Requesters of one running id answered besides the first.
    static var maxWaiters: Int { 8 }

    struct State {
        var order: [String] = []
        var answers: [String: String] = [:]
        /// Requests being run now, with where each requester wants the answer (the first's first).
        var running: [String: [Waiter]] = [:]
        /// Of the answers; a save writes only the newest.
        var generation = 0
        /// The last save asked for: the next one follows it.
        var lastSave: EventLoopFuture<Void>
    }

    let path: String
    let capacity: Int
    private let threadPool: NIOThreadPool
    private let loop: any EventLoop
    private let state: NIOLockedValueBox<State>

    init(path: String, capacity: Int, threadPool: NIOThreadPool, loop: any EventLoop) {
        self.path = path
        self.capacity = capacity
        self.threadPool = threadPool
        self.loop = loop
        var s = State(lastSave: loop.makeSucceededVoidFuture())
        if let data = FileManager.default.contents(atPath: path), let entries = try? JSONDecoder().decode([Entry].self, from: data) {
            // A file with an id twice (written by hand, or damaged) keeps the later answer.
            for e in entries {
                if s.answers[e.id] != nil { s.order.removeAll { $0 == e.id } }
                s.order.append(e.id)
                s.answers[e.id] = e.response
            }
            while s.order.count > capacity { s.answers[s.order.removeFirst()] = nil }
        }
        state = NIOLockedValueBox(s)
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
        state.withLockedValue { s in
            if let a = s.answers[id] { return .answered(a) }
            if var waiters = s.running[id] {
                guard !waiters.contains(waiter), waiters.count <= Self.maxWaiters else { return .running(waits: false) }
                waiters.append(waiter)
                s.running[id] = waiters
                return .running(waits: true)
            }
            s.running[id] = [waiter]
            return .new
        }
    }

    /// Remembers the answer and saves it on the pool (`flush` waits for it); returns the
    /// requesters besides the first, still to be answered.
    @discardableResult
    func finish(_ id: String, response: String) -> [Waiter] {
        state.withLockedValue { s in
            let waiters = s.running.removeValue(forKey: id) ?? []
            if s.answers[id] == nil { s.order.append(id) }
            s.answers[id] = response
            while s.order.count > capacity { s.answers[s.order.removeFirst()] = nil }
            s.generation += 1
            let mine = s.generation
            let (pool, loop, path, state) = (threadPool, self.loop, self.path, self.state)
            s.lastSave = s.lastSave.recover { _ in }.flatMap {
                pool.runIfActive(eventLoop: loop) {
                    let entries: [Entry]? = state.withLockedValue { s in
                        guard s.generation == mine else { return nil }  // a newer answer's save follows
                        return s.order.compactMap { id in s.answers[id].map { Entry(id: id, response: $0) } }
                    }
                    guard let entries, let data = try? JSONEncoder().encode(entries) else { return }
                    try? AtomicFile.write(Array(data), to: path)
                }
            }
            return Array(waiters.dropFirst())
        }
    }

    /// Forgets a run without remembering an answer (it was refused as `busy`: the same id sent
    /// again later runs); returns the requesters besides the first.
    func abandon(_ id: String) -> [Waiter] {
        state.withLockedValue { Array(($0.running.removeValue(forKey: id) ?? []).dropFirst()) }
    }

    /// Waits until what was answered so far is on the disk (a clean stop, tests).
    func flush() async {
        try? await state.withLockedValue { $0.lastSave }.get()
    }
}
