import Logging
import NIOCore
import OfflineStore

/// Opening the offline store, and opening it again after a failure: a store that cannot be
/// opened leaves the client working from memory until `isDue` says to try again.
struct StoreOpener {
    let config: OfflineStoreConfig?
    let logger: Logger
    let clock: @Sendable () -> NIODeadline
    /// When the last open failed (nil: it did not).
    private var failedAt: NIODeadline?

    init(config: OfflineStoreConfig?, logger: Logger, clock: @escaping @Sendable () -> NIODeadline) {
        self.config = config
        self.logger = logger
        self.clock = clock
    }

    enum Opened {
        case opened(Outbox)
        /// It failed: the status to show.
        case failed(OfflineStoreStatus)
    }

    /// Opens the store and puts the QoS 2 flows of an earlier run back into the session (nil:
    /// no store configured).
    mutating func open(
        restoringInto session: inout SessionMachine<Completion>, report: @escaping (OfflineStoreStatus, _ refusing: Bool) -> Void
    ) -> Opened? {
        guard let config else { return nil }
        do {
            let o = try Outbox(config: config, logger: logger, clock: clock, report: report)
            for f in o.recoverFlows() { session.restoreOutgoing(f.publish, released: f.released, token: .stored(f.seq)) }
            failedAt = nil
            return .opened(o)
        } catch {
            if failedAt == nil {
                logger.error(
                    "offline store \(config.directory) cannot be opened: \(error). Messages are kept in memory only (publish_queue_maxsize); trying again every \(config.retryInterval) s"
                )
            }
            failedAt = clock()
            return .failed(
                OfflineStoreStatus(
                    directory: config.directory, pending: 0, fill: 0, dropped: 0, corruptSkipped: 0, held: 0, degraded: "\(error)"))
        }
    }

    /// Whether a failed open is due to be tried again.
    var isDue: Bool {
        guard let failedAt, let config else { return false }
        return Double((clock() - failedAt).nanoseconds) / 1e9 >= config.retryInterval  // seconds: any retryInterval, no overflow
    }
}

// The store as the loop feeds it: each accepted QoS 1/2 publish placed in memory or in the store,
// stored messages handed to the session as its in-flight window opens, a stored message's end
// told to its caller.
extension Outbox {
    enum Placement {
        /// Into the session's queue.
        case memory
        /// In the store; its room in the publish queue is the store's now.
        case stored
        /// The store refused it for good (full under reject_newest, too large).
        case refused(ProtocolValidationError)
    }

    /// Where an accepted QoS 1/2 publish goes. `.offline` keeps messages in memory while the
    /// broker takes them promptly; once anything waits in the store, newer ones queue behind it
    /// there (order is kept). A store in degraded mode: memory.
    func place(_ p: MQTTPacket.Publish, _ c: Completion, connected: Bool, waiting: Int) -> Placement {
        let inMemory = config.persist == .offline && connected && !hasUnfed && waiting < config.spillThreshold
        if inMemory || degraded != nil { return .memory }
        switch append(p, c, deferCommit: true) {
        case .stored: return .stored
        case .refused(let error):
            logger.warning("\(error.message)")
            return .refused(error)
        case .degraded: return .memory
        }
    }

    /// Hands stored messages to the session as far as its in-flight window has room.
    func feed(_ session: inout SessionMachine<Completion>, now: UInt64, into actions: inout [SessionMachine<Completion>.Action]) {
        guard session.isConnected, hasUnfed else { return }
        let room = session.window - session.inflightCount - session.queuedCount
        for (seq, p) in next(limit: room) {
            session.publish(p, token: .stored(seq), now: now, into: &actions)
        }
    }

    /// A stored message finished in the session: its caller (if one waits) and what to tell it.
    func finished(
        _ seq: UInt64, _ result: Result<Void, SessionMachine<Completion>.Failure>,
        describe: (SessionMachine<Completion>.Failure) -> any CommunicatorError
    ) -> (tell: (Completion, Result<Void, any Error>)?, final: Bool) {
        let (callback, final) = finished(seq, result)
        switch result {
        case .success:
            return (callback.map { ($0, .success(())) }, final)
        case .failure(let f):
            let error = describe(f)
            if final { logger.error("stored message \(seq) removed from the offline store: \(error.message)") }
            guard let callback else { return (nil, final) }
            if final { return ((callback, .failure(error)), final) }
            let kept = ProtocolConnectionError(
                "\(error.message); the message stays in the offline store and is sent after the next connect", code: error.code,
                reason: error.reason)
            return ((callback, .failure(kept)), final)
        }
    }

    /// Callers of messages the store dropped (drop_oldest), to be failed.
    func takeDropped() -> [Completion] {
        guard !droppedCallbacks.isEmpty else { return [] }
        defer { droppedCallbacks.removeAll() }
        return droppedCallbacks
    }
}
