import Logging
import NIOCore
import OfflineStore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where outgoing QoS 1/2 messages are kept on flash (see `OfflineStore.RingStore`).
///
/// Loss window per `persist` mode:
/// - `.offline` (default): messages accepted while the broker is unreachable, or while more
///   than `spillThreshold` messages wait in memory, go to the store; they are durable after the
///   sync policy's interval (1 s by default). Messages accepted while the link is up and the
///   backlog is short stay in memory until acknowledged: a crash or power cut loses at most those
///   (`spillThreshold` plus the in-flight window).
/// - `.always`: every QoS 1/2 message is written before it is sent; with `sync: .always` it is
///   durable before the first send (group commit: one fdatasync per batch).
public struct OfflineStoreConfig: Sendable {
    public enum Persist: String, Sendable {
        case offline
        case always
    }

    /// Folder of the store's files (created on first use; 16 segments + a checkpoint file).
    public var directory: String
    /// Bytes on disk, fixed at creation (default 64 MiB).
    public var capacity: Int
    public var segments: Int
    public var sync: RingStore.SyncPolicy
    public var whenFull: RingStore.FullPolicy
    public var persist: Persist
    /// Messages waiting in memory (queued + in flight) beyond which new ones go to the store
    /// even while connected (`.offline` mode).
    public var spillThreshold: Int
    /// After a disk error, how often (seconds) the disk is tried again.
    public var retryInterval: Double
    /// Connects on which brokers may refuse a stored message for a reason of their own (a lower
    /// Maximum QoS, no retain, a smaller Maximum Packet Size, PUBACK quota exceeded) before it is
    /// removed from the store for good; until then it is kept and tried after the next connect.
    public var maxRefusals: Int = 3
    /// The file layer (the real one by default; tests put a failing one here).
    public var fileSystem: any StoreFileSystem

    public init(
        directory: String, capacity: Int = 64 << 20, segments: Int = 16, sync: RingStore.SyncPolicy = .default,
        whenFull: RingStore.FullPolicy = .dropOldest, persist: Persist = .offline, spillThreshold: Int = 100,
        retryInterval: Double = 30, fileSystem: any StoreFileSystem = PosixFileSystem()
    ) {
        self.directory = directory
        self.capacity = capacity
        self.segments = segments
        self.sync = sync
        self.whenFull = whenFull
        self.persist = persist
        self.spillThreshold = spillThreshold
        self.retryInterval = retryInterval
        self.fileSystem = fileSystem
    }

    func problems() -> [String] {
        var p: [String] = []
        if directory.isEmpty { p.append("offline_store.directory is empty: name a folder on persistent storage") }
        if segments < 2 { p.append("offline_store.segments \(segments) must be at least 2") }
        if capacity / max(segments, 1) < 8192 {
            p.append("offline_store.capacity \(capacity) is too small: each of the \(segments) segments needs at least 8 KiB")
        }
        if spillThreshold < 0 { p.append("offline_store.spill_threshold \(spillThreshold) must be 0 or more") }
        if !(retryInterval > 0) { p.append("offline_store.retry_interval must be more than 0 seconds") }
        if maxRefusals < 1 { p.append("offline_store.max_refusals \(maxRefusals) must be at least 1") }
        return p
    }
}

/// A snapshot of the offline store for status reports (`MQTTProtocol.offlineStoreStatus`).
public struct OfflineStoreStatus: Sendable, Equatable {
    public var directory: String
    /// Messages waiting in the store (not yet acknowledged by the broker).
    public var pending: Int
    /// Share of the segments holding waiting messages (0...1).
    public var fill: Double
    /// Messages dropped by `drop_oldest` since the start.
    public var dropped: Int
    /// Corrupt records skipped when the store was opened.
    public var corruptSkipped: Int
    /// Messages a broker refused for a reason of its own (its limits, its quota), kept in the
    /// store and tried again after the next connect.
    public var held: Int
    /// The disk error that put the store in degraded mode (nil: healthy).
    public var degraded: String?
}

/// The durable side of the publish queue, owned by the client's event loop (like the session).
/// The client decides per message whether it goes to the store; the outbox appends it, hands
/// stored messages to the session as the in-flight window opens (oldest first), and removes a
/// message only after its PUBACK / PUBCOMP.
final class Outbox {
    struct QoS2State {
        var identity: UInt64
        var released: UInt64?
        var packetID: UInt16
    }

    enum Accepted {
        case stored
        /// The store refused it for good (full under reject_newest, too large): the error says why.
        case refused(ProtocolValidationError)
        /// A disk error: the message must be kept in memory instead.
        case degraded
    }

    let config: OfflineStoreConfig
    let logger: Logger
    let store: RingStore
    /// Highest sequence number handed to the session (records above it wait in the store).
    private var fedUpTo: UInt64 = 0
    /// Completion callbacks of stored messages accepted by this process.
    private var callbacks: [UInt64: Completion] = [:]
    private var qos2: [UInt64: QoS2State] = [:]
    private var byPacketID: [UInt16: UInt64] = [:]
    /// Flows of an earlier run put back into the session; not fed again.
    private var restored: Set<UInt64> = []
    /// Refused by a broker for a reason of its own (`isBrokerRefusal`): kept, waiting for the
    /// next connect, then fed again before anything newer; how often each was refused.
    private var held: [UInt64] = []
    private var refeed: [UInt64] = []
    private var refusals: [UInt64: Int] = [:]
    private(set) var degraded: StoreError?
    private var lastRetry: Double = 0
    private var unwrittenAcks: [UInt64] = []
    /// Identity / released records appended: fdatasync before the next bytes reach the socket.
    private(set) var needsSync = false
    private var droppedSeen = 0
    private var warnedFill = 0.0
    /// Whether a reject_newest store refused the last append (checked by `publish` at once).
    private var refusing = false
    /// Told the status and `refusing` after each change (the client publishes them).
    private let report: (OfflineStoreStatus, _ refusing: Bool) -> Void
    private var reported: (status: OfflineStoreStatus, refusing: Bool)?

    /// The client's clock (seconds): sync intervals, retries, record ages.
    private let clock: @Sendable () -> NIODeadline

    init(
        config: OfflineStoreConfig, logger: Logger, clock: @escaping @Sendable () -> NIODeadline,
        report: @escaping (OfflineStoreStatus, _ refusing: Bool) -> Void
    ) throws(StoreError) {
        self.config = config
        self.clock = clock
        self.logger = logger
        self.report = report
        let opened = try RingStore.open(
            directory: config.directory,
            options: .init(capacity: config.capacity, segmentCount: config.segments, sync: config.sync, whenFull: config.whenFull),
            fileSystem: config.fileSystem)
        store = opened.store
        let mib = { (bytes: Int) in "\(bytes >> 20) MiB" }
        switch opened.change {
        case .replaced(let capacity, let segments)?:
            logger.notice(
                "offline store \(config.directory): resized from \(mib(capacity)) in \(segments) segments to \(mib(config.capacity)) in \(config.segments), as configured (it was empty)"
            )
        case .kept(let capacity, let segments, let pending)?:
            logger.warning(
                "offline store \(config.directory): its files hold \(mib(capacity)) in \(segments) segments, the configuration asks \(mib(config.capacity)) in \(config.segments); \(pending) records wait in it, so it keeps its size until a start finds it empty"
            )
        case nil:
            break
        }
        let r = store.recovery
        updateStatus()
        logger.info(
            "offline store \(config.directory): \(r.pending) messages waiting, \(r.corruptSkipped) corrupt records skipped, \(r.segmentsSkipped) segments covered by the checkpoint"
        )
        if r.corruptSkipped > 0 {
            logger.warning(
                "offline store \(config.directory): skipped \(r.corruptSkipped) corrupt records (power cut or media error); everything else was kept"
            )
        }
    }

    func now() -> Double { Double(clock().uptimeNanoseconds) / 1e9 }

    /// Whether the wall clock was synchronised, looked up at most once a second while it is not
    /// (once it is, it stays so until a reboot): not one file lookup per stored message.
    private var wallSynchronized = false
    private var wallCheckedAt: Double = -1

    private func accepted() -> StoredRecord.Accepted {
        let t = now()
        if !wallSynchronized && t - wallCheckedAt >= 1 {
            wallSynchronized = StoredRecord.Accepted.isWallClockSynchronized()
            wallCheckedAt = t
        }
        return .now(synchronized: wallSynchronized)
    }

    /// QoS 2 flows that had their packet identifier before the last stop: they go back into the
    /// session with that identifier. Bookkeeping records without their message are retired.
    func recoverFlows() -> [(seq: UInt64, publish: MQTTPacket.Publish, released: Bool)] {
        var flows: [UInt64: (publish: MQTTPacket.Publish?, state: QoS2State?)] = [:]
        var orphans: [UInt64] = []
        var cursor: UInt64 = 0
        do {
            while true {
                let batch = try store.pending(after: cursor, limit: 512)
                guard let last = batch.last else { break }
                cursor = last.seq
                for r in batch {
                    switch try? StoredRecord.decode(r.body) {
                    case .identity(let m, let id):
                        flows[m, default: (nil, nil)].state = QoS2State(identity: r.seq, released: nil, packetID: id)
                    case .released(let m):
                        if flows[m]?.state != nil { flows[m]!.state!.released = r.seq } else { orphans.append(r.seq) }
                    case .message, .none:
                        break
                    }
                }
            }
            var out: [(UInt64, MQTTPacket.Publish, Bool)] = []
            for (m, f) in flows.sorted(by: { $0.key < $1.key }) {
                guard let s = f.state else { continue }
                guard store.isPending(m), let rec = try store.pending(after: m - 1, limit: 1).first, rec.seq == m,
                    case .message(var p, _) = try? StoredRecord.decode(rec.body)
                else {
                    orphans.append(s.identity)
                    if let r = s.released { orphans.append(r) }
                    continue
                }
                p.packetID = s.packetID
                qos2[m] = s
                byPacketID[s.packetID] = m
                restored.insert(m)
                out.append((m, p, s.released != nil))
            }
            for o in orphans { try store.acknowledge(o) }
            if !out.isEmpty {
                logger.info("offline store: \(out.count) QoS 2 messages resume with their packet identifiers")
            }
            return out
        } catch {
            enterDegraded(error)
            return []
        }
    }

    /// Whether records wait in the store that the session has not been given yet.
    var hasUnfed: Bool { !refeed.isEmpty || (store.lastSeq > fedUpTo && store.pendingCount > restored.count) }

    /// A new connection: what a broker refused before is tried again (this broker may be another,
    /// or the same with other limits).
    func connected() {
        refeed = (refeed + held).sorted()
        held.removeAll()
        refusals = refusals.filter { store.isPending($0.key) }  // forget those dropped meanwhile
        updateStatus()
    }

    /// Refusals that say nothing against the message itself: the broker's announced limits, and
    /// PUBACK/PUBREC unspecified error, implementation specific error, not authorized (this
    /// broker's ACL; another may differ), quota exceeded. Not: topic name invalid, payload format
    /// invalid (the message is wrong anywhere).
    static let notFinal: Set<ReasonCode> = [.unspecifiedError, .implementationSpecificError, .notAuthorized, .quotaExceeded]

    static func isBrokerRefusal<T>(_ f: SessionMachine<T>.Failure) -> Bool {
        switch f {
        case .brokerLimit: true
        case .rejected(let packet, let code, _): (packet == .puback || packet == .pubrec) && Self.notFinal.contains(ReasonCode(code))
        default: false
        }
    }

    func append(_ p: MQTTPacket.Publish, _ completion: Completion, deferCommit: Bool) -> Accepted {
        if degraded != nil { return .degraded }
        let record = StoredRecord.message(p, accepted: accepted()).encoded()
        do {
            let seq = try store.append(record, now: now(), commit: !deferCommit)
            if case .none = completion {} else { callbacks[seq] = completion }
            if store.droppedCount != droppedSeen { noteDropped() }
            if store.fill >= 0.8 { warnFill() } else if store.fill < 0.7 { warnedFill = 0 }
            return .stored
        } catch {
            switch error {
            case .full:
                refusing = true
                updateStatus()
                return .refused(
                    ProtocolValidationError(
                        "message on \"\(p.topic)\" refused: \(error) (offline_store.when_full); it was not stored", reason: .storeFull))
            case .tooLarge:
                return .refused(ProtocolValidationError("message on \"\(p.topic)\" refused: \(error)", reason: .invalidArgument))
            case .io, .layout, .locked:
                enterDegraded(error)
                return .degraded
            }
        }
    }

    /// Group commit: the appends of one batch become durable together.
    func commit() {
        guard store.isDirty, config.sync == .always, degraded == nil else { return }
        do { try store.sync() } catch { enterDegraded(error) }
    }

    /// The next stored messages for the session: those refused before and tried again first,
    /// then the rest, oldest first.
    func next(limit: Int) -> [(seq: UInt64, publish: MQTTPacket.Publish)] {
        guard limit > 0, hasUnfed else { return [] }
        var out: [(UInt64, MQTTPacket.Publish)] = []
        let refeeding = !refeed.isEmpty
        defer { if refeeding { updateStatus() } }
        do {
            while out.count < limit, !refeed.isEmpty {
                let seq = refeed.removeFirst()
                // Gone meanwhile (dropped by drop_oldest): nothing to send.
                guard let r = try store.pending(after: seq - 1, limit: 1).first, r.seq == seq, let p = try message(r) else { continue }
                out.append((seq, p))
            }
            while out.count < limit, store.lastSeq > fedUpTo {
                let batch = try store.pending(after: fedUpTo, limit: limit - out.count)
                if batch.isEmpty {
                    fedUpTo = store.lastSeq
                    break
                }
                for r in batch {
                    fedUpTo = r.seq
                    guard !restored.contains(r.seq), let p = try message(r) else { continue }
                    out.append((r.seq, p))
                }
            }
        } catch {
            enterDegraded(error)
        }
        return out
    }

    /// A stored record as the message to send, or nil for bookkeeping records.
    private func message(_ r: RingStore.Record) throws(StoreError) -> MQTTPacket.Publish? {
        switch try? StoredRecord.decode(r.body) {
        case .message(var p, let accepted):
            // 5.0 Message Expiry: the time spent in the store counts, also across restarts
            // (`Accepted.waitedSeconds`: the boot clock within a boot, a synchronised wall clock
            // across boots). What is left goes out; an expired message gets 0 and the session
            // retires it unsent.
            if let expiry = p.properties.messageExpiryInterval {
                let waited = accepted.waitedSeconds(until: self.accepted())
                p.properties.messageExpiryInterval = waited >= UInt64(expiry) ? 0 : expiry - UInt32(waited)
            }
            return p
        case .identity, .released:
            return nil
        case .none:
            // Passed its CRC but not ours: written by something else. Retired, loudly.
            logger.error("offline store: record \(r.seq) is not a message of this program; removed")
            _ = try store.acknowledge(r.seq)
            return nil
        }
    }

    /// A stored message finished in the session. Returns its caller's completion, if any, and
    /// whether it is gone from the store (false: it stays and is sent again later).
    func finished(_ seq: UInt64, _ result: Result<Void, SessionMachine<Completion>.Failure>) -> (Completion?, final: Bool) {
        if case .failure(let f) = result, Self.isBrokerRefusal(f) {
            let n = (refusals[seq] ?? 0) + 1
            if n < config.maxRefusals {
                // Not this message's fault: kept for the next connect, counted, said.
                refusals[seq] = n
                held.append(seq)
                restored.remove(seq)
                retireQoS2State(seq)
                updateStatus()
                logger.warning(
                    "stored message \(seq): \(Self.describe(f)); kept in the offline store and tried again after the next connect (refusal \(n) of \(config.maxRefusals), offline_store.max_refusals)"
                )
                return (callbacks.removeValue(forKey: seq), false)
            }
        }
        refusals[seq] = nil
        if case .failure(let f) = result, f == .connectionLost || isDropped(f) {
            // The session gave it up (the client stopped reconnecting): still in the store, it is
            // handed to the session again, as a new flow, after the next connect.
            restored.remove(seq)
            fedUpTo = min(fedUpTo, seq - 1)
            retireQoS2State(seq)
            return (callbacks.removeValue(forKey: seq), false)
        }
        acknowledge(seq)
        retireQoS2State(seq)
        restored.remove(seq)
        if refusing {
            refusing = false
            updateStatus()
        }
        return (callbacks.removeValue(forKey: seq), true)
    }

    private static func describe(_ f: SessionMachine<Completion>.Failure) -> String {
        switch f {
        case .brokerLimit(let what): what
        case .rejected(let packet, let code, let reason):
            "the broker refused it (\(packet) \(hexByte(code)))" + (reason.map { ": \($0)" } ?? "")
        default: "\(f)"
        }
    }

    private func retireQoS2State(_ seq: UInt64) {
        guard let s = qos2.removeValue(forKey: seq) else { return }
        byPacketID[s.packetID] = nil
        acknowledge(s.identity)
        if let r = s.released { acknowledge(r) }
    }

    private func isDropped(_ f: SessionMachine<Completion>.Failure) -> Bool {
        if case .dropped = f { return true }
        return false
    }

    /// Before the first send of a stored QoS 2 message: its identifier goes to the store.
    func noteIdentity(_ seq: UInt64, packetID: UInt16) {
        guard qos2[seq] == nil, degraded == nil else { return }
        do {
            let r = try store.append(StoredRecord.identity(message: seq, packetID: packetID).encoded(), now: now(), commit: false)
            qos2[seq] = QoS2State(identity: r, released: nil, packetID: packetID)
            byPacketID[packetID] = seq
            needsSync = true
        } catch {
            enterDegraded(error)
        }
    }

    /// Before PUBREL of a stored QoS 2 message: the release goes to the store.
    func noteRelease(packetID: UInt16) {
        guard let m = byPacketID[packetID], qos2[m]?.released == nil, degraded == nil else { return }
        do {
            qos2[m]!.released = try store.append(StoredRecord.released(message: m).encoded(), now: now(), commit: false)
            needsSync = true
        } catch {
            enterDegraded(error)
        }
    }

    /// Makes identity / released records durable (called before the socket write that needs it).
    func syncBeforeSend() {
        needsSync = false
        guard degraded == nil else { return }
        do { try store.sync() } catch { enterDegraded(error) }
    }

    private func acknowledge(_ seq: UInt64) {
        guard degraded == nil else {
            unwrittenAcks.append(seq)
            return
        }
        do { try store.acknowledge(seq, now: now()) } catch {
            unwrittenAcks.append(seq)
            enterDegraded(error)
        }
    }

    /// Periodic: the sync policy, the checkpoint, retries after a disk error, the status snapshot.
    func tick() {
        let now = self.now()
        if let error = degraded {
            if now - lastRetry >= config.retryInterval {
                lastRetry = now
                do {
                    try store.sync()
                    for a in unwrittenAcks { try store.acknowledge(a, now: now) }
                    unwrittenAcks.removeAll()
                    try store.sync()
                    degraded = nil
                    logger.notice("offline store \(config.directory): the disk works again (was: \(error)); storing messages again")
                } catch {
                    logger.warning("offline store \(config.directory): still failing: \(error); next try in \(config.retryInterval) s")
                }
            }
        } else {
            do { try store.tick(now: now) } catch { enterDegraded(error) }
        }
        updateStatus()
    }

    func updateStatus() {
        let s = OfflineStoreStatus(
            directory: config.directory, pending: store.pendingCount, fill: store.fill, dropped: store.droppedCount,
            corruptSkipped: store.recovery.corruptSkipped, held: held.count + refeed.count, degraded: degraded.map { "\($0)" })
        if let r = reported, r.status == s, r.refusing == refusing { return }
        reported = (s, refusing)
        report(s, refusing)
    }

    /// What the metrics show of the store: the bytes waiting and the oldest waiting message's age
    /// (whole seconds, `Accepted.waitedSeconds`; nil when none waits or the age is unknown). The
    /// oldest message's acceptance is read from the disk once per head of the store (the first
    /// message among the first few records: the head may be bookkeeping), not per report.
    func figures() -> (pendingBytes: Int, oldestAge: UInt64?) {
        guard store.pendingCount > 0 else { return (0, nil) }
        let head = store.headSeq
        if oldest?.head != head {
            var found: StoredRecord.Accepted?
            var after = head &- 1
            for _ in 0..<8 {
                guard let r = (try? store.pending(after: after, limit: 1))?.first else { break }
                if case .message(_, let at)? = try? StoredRecord.decode(r.body) {
                    found = at
                    break
                }
                after = r.seq
            }
            oldest = (head, found)
        }
        return (store.pendingBytes, oldest?.accepted.map { $0.waitedSeconds(until: accepted()) })
    }

    /// The store's head when `figures` last looked, and its oldest message's acceptance.
    private var oldest: (head: UInt64, accepted: StoredRecord.Accepted?)?

    /// Syncs and checkpoints (a clean stop).
    func close() {
        guard degraded == nil else { return }
        do { try store.close() } catch { enterDegraded(error) }
        updateStatus()
    }

    private func enterDegraded(_ error: StoreError) {
        if degraded == nil {
            logger.error(
                "offline store \(config.directory): \(error). Degraded: new messages are kept in memory (publish_queue_maxsize) and the disk is tried again every \(config.retryInterval) s"
            )
        }
        degraded = error
        lastRetry = now()
        updateStatus()
    }

    private func noteDropped() {
        let n = store.droppedCount - droppedSeen
        droppedSeen = store.droppedCount
        logger.warning(
            "offline store full: dropped the \(n) oldest waiting messages (when_full drop_oldest); \(droppedSeen) dropped since start")
        // Callers waiting on dropped messages learn it now.
        for (seq, c) in callbacks where seq > fedUpTo && !store.isPending(seq) {
            callbacks[seq] = nil
            droppedCallbacks.append(c)
        }
    }

    /// Completions of messages the store dropped, for the client to fail.
    var droppedCallbacks: [Completion] = []

    private func warnFill() {
        let level = store.fill >= 0.95 ? 0.95 : 0.8
        guard level > warnedFill else { return }
        warnedFill = level
        logger.warning(
            "offline store \(config.directory) is \(Int(store.fill * 100)) % full (\(store.pendingCount) messages waiting): \(config.whenFull == .dropOldest ? "the oldest will be dropped" : "new messages will be refused") when it is full"
        )
    }
}
