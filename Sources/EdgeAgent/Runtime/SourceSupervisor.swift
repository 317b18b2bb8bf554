import NIOCore

/// What one event source's supervisor decides, as a value: when a run starts, when it is
/// cancelled, how long to wait after a failure before the next, and when a command that asked
/// for a change gets its answer. Events in, actions out, time passed in (the house style of
/// `SessionMachine`); `SourceService` does the I/O. `Reply` is whatever the caller wants back
/// with the answer (the service uses a continuation, tests use integers).
///
/// A run that fails (throws, or ends without being asked to) is started again after a back-off
/// that doubles from `initialDelay` to `maxDelay`; a run that stayed up for `stableAfter` counts
/// as recovered, so its next failure waits `initialDelay` again. A failing source never stops
/// anything but itself.
struct SourceSupervisor<Reply> {
    enum Event {
        /// The service started: run the source unless it is disabled.
        case begin
        case enable(Reply?)
        case disable(Reply?)
        case restart(Reply?)
        /// Run `run` is set up (listening, watching).
        case ready(run: Int, at: NIODeadline)
        /// Run `run` returned or threw (`error`: why; nil when it was cancelled, as asked or by the
        /// shutdown).
        case ended(run: Int, error: String?, at: NIODeadline)
        /// The back-off before run `run` is over.
        case retryDue(run: Int)
    }

    enum Action: Equatable {
        case start(run: Int)
        case cancel(run: Int)
        case retry(run: Int, after: TimeAmount)
        case failed(run: Int, error: String, retryIn: TimeAmount)
        /// Answer the replies handed over with `enable`/`disable`/`restart` (`takeWaiting`; `status`
        /// holds the outcome).
        case answer
    }

    enum Phase: Equatable {
        case disabled
        case starting(run: Int)
        case running(run: Int, since: NIODeadline)
        /// Cancelled, waiting for it to end; then start again or stay disabled.
        case stopping(run: Int, thenStart: Bool)
        case backingOff(run: Int)
    }

    let initialDelay: TimeAmount
    let maxDelay: TimeAmount
    let stableAfter: TimeAmount
    private(set) var phase: Phase = .disabled
    private(set) var enabled = true
    private var lastRun = 0
    private var started = 0
    /// Failures in a row (reset by a run that stayed up `stableAfter`).
    private var streak = 0
    private var errors = 0
    private var lastError: String?
    /// Replies waiting for the outcome of a change.
    private(set) var waiting: [Reply] = []

    init(initialDelay: TimeAmount, maxDelay: TimeAmount, stableAfter: TimeAmount = .seconds(30)) {
        self.initialDelay = initialDelay
        self.maxDelay = max(initialDelay, maxDelay)
        self.stableAfter = stableAfter
    }

    var status: SourceStatus {
        let state: String
        switch phase {
        case .disabled: state = "disabled"
        case .starting: state = "starting"
        case .running: state = "running"
        case .stopping: state = "stopping"
        case .backingOff: state = "backing_off"
        }
        return SourceStatus(state: state, enabled: enabled, restarts: max(0, started - 1), errors: errors, lastError: lastError)
    }

    /// The replies `answer` refers to, taken out.
    mutating func takeWaiting() -> [Reply] {
        defer { waiting = [] }
        return waiting
    }

    mutating func handle(_ event: Event) -> [Action] {
        switch event {
        case .begin:
            return enabled ? startNew() : []
        case .enable(let reply): return change(reply, run: true, again: false)
        case .disable(let reply): return change(reply, run: false, again: false)
        case .restart(let reply): return change(reply, run: true, again: true)
        case .ready(let run, let at):
            guard phase == .starting(run: run) else { return [] }
            phase = .running(run: run, since: at)
            return answerAll()
        case .ended(let run, let error, let at):
            switch phase {
            case .stopping(run, let thenStart):
                if thenStart { return startNew() }
                phase = .disabled
                return answerAll()
            case .starting(run) where error == nil, .running(run, _) where error == nil:
                return []  // cancelled from outside: the service is shutting down
            case .starting(run):
                return failed(run, error, stayedUp: false)
            case .running(run, let since):
                return failed(run, error, stayedUp: at - since >= stableAfter)
            default:
                return []
            }
        case .retryDue(let run):
            guard phase == .backingOff(run: run) else { return [] }
            phase = .starting(run: run)
            started += 1
            return [.start(run: run)]
        }
    }

    /// A command: the source should `run` (or not), from a new run if `again`.
    private mutating func change(_ reply: Reply?, run shouldRun: Bool, again: Bool) -> [Action] {
        enabled = shouldRun
        if let reply { waiting.append(reply) }
        switch phase {
        case .stopping(let run, _):
            phase = .stopping(run: run, thenStart: shouldRun)
            return []
        case .disabled, .backingOff:
            if shouldRun { return startNew() }
            phase = .disabled
            return answerAll()
        case .starting(let run), .running(let run, _):
            if shouldRun && !again {
                if case .running = phase { return answerAll() }
                return []  // answered when it is up
            }
            phase = .stopping(run: run, thenStart: shouldRun)
            return [.cancel(run: run)]
        }
    }

    private mutating func startNew() -> [Action] {
        lastRun += 1
        started += 1
        phase = .starting(run: lastRun)
        return [.start(run: lastRun)]
    }

    private mutating func failed(_ run: Int, _ error: String?, stayedUp: Bool) -> [Action] {
        streak = stayedUp ? 1 : streak + 1
        errors += 1
        let reason = error ?? "it stopped by itself"
        lastError = reason
        var delay = initialDelay
        for _ in 1..<streak where delay < maxDelay { delay = delay + delay }
        delay = min(delay, maxDelay)
        lastRun += 1
        phase = .backingOff(run: lastRun)
        return [.failed(run: run, error: reason, retryIn: delay), .retry(run: lastRun, after: delay)] + answerAll()
    }

    private func answerAll() -> [Action] { waiting.isEmpty ? [] : [.answer] }
}

extension SourceSupervisor.Event: Sendable where Reply: Sendable {}

/// A supervised source as the info document, the commands and the logs see it.
struct SourceStatus: Sendable, Equatable {
    /// disabled, starting, running, stopping, backing_off.
    var state: String
    var enabled: Bool
    /// Runs started after the first (after failures and by commands).
    var restarts: Int
    /// Runs that failed, in all.
    var errors: Int
    var lastError: String?
    var running: Bool { state == "running" }
}
