import Dispatch
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import OfflineStore

/// The connection's state, as the application sees it.
public enum ConnectionState: Sendable, Equatable, CustomStringConvertible {
    case idle
    case connecting
    case connected
    /// Waiting `nextDelay` seconds before reconnect attempt number `attempt`.
    case reconnecting(attempt: Int, nextDelay: Double)
    case disconnected(reason: String?)

    public var description: String {
        switch self {
        case .idle: "idle"
        case .connecting: "connecting"
        case .connected: "connected"
        case .reconnecting(let a, let d): "reconnecting (attempt \(a) in \((d * 10).rounded() / 10) s)"
        case .disconnected(let r): "disconnected" + (r.map { ": \($0)" } ?? "")
        }
    }
}

/// A message delivered to a subscription.
public struct MQTTMessage: Sendable {
    public let topic: String
    public let payload: ByteBuffer
    public let qos: QoS
    public let retain: Bool
    /// 5.0 properties of the PUBLISH (empty on 3.1.1).
    public let properties: MQTTProperties

    public var bytes: [UInt8] { Array(payload.readableBytesView) }
    /// The payload as UTF-8 text (invalid sequences replaced).
    public var string: String { String(decoding: payload.readableBytesView, as: UTF8.self) }
}

typealias MessageHandler = @Sendable (MQTTMessage) -> Void

/// What a finished request reports back to its caller.
enum Completion: Sendable {
    case none
    case done(@Sendable (Result<Void, any Error>) -> Void)
    case granted(filters: [String], @Sendable (Result<[UInt8], any Error>) -> Void)
    /// Subscriptions restored after a reconnect: results only logged.
    case restore(filters: [String])
    /// A message kept in the offline store under this sequence number (its caller's completion,
    /// if any, waits in the outbox).
    case stored(UInt64)

    var isStored: Bool {
        if case .stored = self { return true }
        return false
    }
}

/// Requests from any thread to the loop that owns the session.
enum Command: Sendable {
    case connect(Completion)
    case publish(MQTTPacket.Publish, Completion)
    case subscribe([(filter: String, qos: QoS, options: SubscribeOptions, handler: MessageHandler)], Completion)
    case unsubscribe([String], Completion)
    case disconnect(Completion)
    case setWill(MQTTPacket.Will?)
    /// Runs on the loop after everything queued before it (a liveness probe).
    case probe(@Sendable () -> Void)
    /// 5.0 re-authentication (AUTH 0x19).
    case reauthenticate(Completion)
}

/// The engine behind `MQTTProtocol`. All session state is owned by one event loop; other threads
/// reach it only through `submit`, which queues a command and wakes the loop once per batch.
final class ClientCore: @unchecked Sendable {
    struct Inbox {
        var commands: [Command] = []
        var loop: EventLoop?
        var drainScheduled = false
        /// Publishes accepted and not yet completed.
        var outstanding = 0
        /// Publishes waiting for room in the full queue (woken when room is given back).
        var roomWaiters: [(ticket: UInt64, wake: ClientCore.RoomWaiter)] = []
        var nextWaiterID: UInt64 = 0
    }

    let config: MQTTConfig
    let logger: Logger
    private let inbox = NIOLockedValueBox(Inbox())
    private let tlsContext: NIOSSLContext?
    private let stateListeners = NIOLockedValueBox<(next: Int, all: [Int: @Sendable (ConnectionState) -> Void])>((0, [:]))
    /// The loop's own copy of what the application sees, and the one it publishes after a change.
    private var view: MQTTClientSnapshot
    private let published: NIOLockedValueBox<MQTTClientSnapshot>
    var snapshot: MQTTClientSnapshot { published.withLockedValue { $0 } }
    /// One field of the snapshot, without copying the rest (the publish path reads the state).
    func read<T>(_ field: (inout MQTTClientSnapshot) -> T) -> T { published.withLockedValue { field(&$0) } }

    // Owned by the loop:
    private var loop: EventLoop?
    private var machine: SessionMachine<Completion>
    private var actions: [SessionMachine<Completion>.Action] = []
    private var spareActions: [SessionMachine<Completion>.Action] = []
    private var channel: Channel?
    private var attempt: UInt64 = 0
    private var out = ByteBuffer()
    private var needsFlush = false
    /// QoS 0 publishes in `out`: complete when the write that carries them completes.
    private var writeWaiters: [Completion] = []
    private var inReadBatch = false
    private var subscriptions = SubscriptionTable()
    /// Which broker next, when to wait, when to give up (failover, Server Reference, the 3.1.1
    /// session hop, the 5.0 → 3.1.1 fallback, the back-off).
    private var connection: ConnectionMachine
    /// The broker of the current (or last) connection attempt.
    private var current: BrokerEndpoint { view.broker }
    private var connectWaiters: [Completion] = []
    private var disconnectWaiters: [Completion] = []
    private var lastFailure: (any CommunicatorError)?
    private var tickTask: RepeatedTask?
    private var attemptTimeout: Scheduled<Void>?
    private var reconnectTask: Scheduled<Void>?
    /// The offline store (nil: none configured, or it could not be opened yet).
    private var outbox: Outbox?
    private var storeOpenFailure: (error: StoreError, at: Double)?
    private var storeTickTask: RepeatedTask?

    init(config: MQTTConfig, clientID: String, logger: Logger) throws {
        self.config = config
        self.logger = logger
        connection = ConnectionMachine(
            settings: .init(
                brokers: config.brokers, order: config.brokerOrder, serverReferenceAllowList: config.serverReferenceAllowList,
                maxReconnectAttempts: config.maxReconnectAttempts, reconnectInitialDelay: config.reconnectInitialDelay,
                reconnectMaxDelay: config.reconnectMaxDelay, fallbackToV311: config.fallbackToV311, keepConnecting: config.keepConnecting,
                version: config.protocolVersion,
                cleanStart: config.cleanStart, sessionExpiryInterval: config.sessionExpiryInterval),
            seed: UInt64.random(in: .min ... .max))
        view = MQTTClientSnapshot(broker: config.brokers[0])
        published = NIOLockedValueBox(view)
        self.tlsContext = config.usesTLS ? try Transport.makeTLSContext(config) : nil
        let password = config.password.map { ByteBuffer(string: $0) }
        machine = SessionMachine(
            options: .init(
                version: config.protocolVersion, clientID: clientID, cleanStart: config.cleanStart,
                keepAliveSeconds: UInt16(clamping: config.keepalive), heartbeatCheckRatio: config.heartbeatCheckRatio,
                username: config.username, password: password, will: nil,
                sessionExpirySeconds: config.sessionExpiryInterval, maxInflight: config.maxInflight,
                maxPacketSize: config.incomingPacketLimit, queueLimit: config.publishQueueMaxsize,
                queueQoS0WhileDisconnected: config.queueQoS0WhileDisconnected,
                dropOldestWhenFull: config.queueFullPolicy == .dropOldest, receiveMaximum: config.receiveMaximum,
                topicAliasMaximum: config.topicAliasMaximum, outgoingTopicAliases: config.outgoingTopicAliases,
                authenticator: config.authenticator, preparer: config.publishPreparer))
        if config.offlineStore != nil { openStore() }
    }

    /// Opens the offline store and puts QoS 2 flows of an earlier run back into the session.
    /// A store that cannot be opened leaves the client working from memory; it is tried again.
    private func openStore() {
        guard let sc = config.offlineStore else { return }
        do {
            let o = try Outbox(config: sc, logger: logger) { [unowned self] status, refusing in
                update {
                    $0.store = status
                    $0.storeRefusing = refusing
                }
            }
            for f in o.recoverFlows() { machine.restoreOutgoing(f.publish, released: f.released, token: .stored(f.seq)) }
            outbox = o
            storeOpenFailure = nil
        } catch {
            if storeOpenFailure == nil {
                logger.error(
                    "offline store \(sc.directory) cannot be opened: \(error). Messages are kept in memory only (publish_queue_maxsize); trying again every \(sc.retryInterval) s"
                )
            }
            storeOpenFailure = (error, Outbox.now())
            update {
                $0.store = OfflineStoreStatus(
                    directory: sc.directory, pending: 0, fill: 0, dropped: 0, corruptSkipped: 0, held: 0, degraded: "\(error)")
            }
        }
    }

    private func storeTick() {
        if let f = storeOpenFailure, let sc = config.offlineStore, Outbox.now() - f.at >= sc.retryInterval {
            openStore()
        }
        guard let outbox else { return }
        outbox.tick()
        failDroppedCallbacks()
        if machine.isConnected {
            feedFromStore(now: Self.now())
            runActions()
        }
    }

    private func failDroppedCallbacks() {
        guard let outbox, !outbox.droppedCallbacks.isEmpty else { return }
        let dropped = outbox.droppedCallbacks
        outbox.droppedCallbacks.removeAll()
        for c in dropped {
            complete(
                c,
                .failure(
                    ProtocolValidationError("message dropped: the offline store was full and when_full is drop_oldest", reason: .dropped)))
        }
    }

    /// Changes the loop's view and publishes it (on the loop; in `init` before it has one).
    private func update(_ change: (inout MQTTClientSnapshot) -> Void) {
        change(&view)
        let now = view
        published.withLockedValue { $0 = now }
    }

    /// Adds a listener; the returned key removes it again.
    @discardableResult
    func onStateChange(_ listener: @escaping @Sendable (ConnectionState) -> Void) -> Int {
        stateListeners.withLockedValue { l in
            l.next += 1
            l.all[l.next] = listener
            return l.next
        }
    }

    var stateListenerCount: Int { stateListeners.withLockedValue { $0.all.count } }

    func removeStateListener(_ key: Int) {
        stateListeners.withLockedValue { _ = $0.all.removeValue(forKey: key) }
    }

    var clientID: String { machine.options.clientID }

    // MARK: - Entry from any thread

    /// Accepts a publish if the bound on outstanding messages allows it.
    func submitPublish(_ publish: MQTTPacket.Publish, _ completion: Completion) -> Bool {
        if case .accepted = admit(publish, completion, orWait: nil) { return true }
        return false
    }

    /// Accepts a publish, waiting up to `seconds` for room in a full queue (a thread other than
    /// the network thread: the network thread makes the room). The seed's `Queue.put`.
    func submitPublish(_ publish: MQTTPacket.Publish, _ completion: Completion, waitingUpTo seconds: Double) -> Bool {
        let deadline = DispatchTime.now() + seconds
        let ticket = newTicket()
        while true {
            let wake = DispatchSemaphore(value: 0)
            guard case .waiting = admit(publish, completion, orWait: (ticket, .thread(wake))) else { return true }
            if wake.wait(timeout: deadline) == .timedOut {
                withdraw(ticket)
                return submitPublish(publish, completion)  // room may have come with the deadline
            }
        }
    }

    /// The async form: no thread waits. Each time room is given back the loop tries again (on the
    /// loop), until `seconds` have passed; then `failed` runs.
    func submitPublish(
        _ publish: MQTTPacket.Publish, _ completion: Completion, waitingUpTo seconds: Double, failed: @escaping @Sendable () -> Void
    ) {
        let ticket = newTicket()
        @Sendable func attempt() -> Admission { admit(publish, completion, orWait: (ticket, .retry({ _ = attempt() }))) }
        guard case .waiting = attempt() else { return }
        guard let loop = currentLoop else {
            withdraw(ticket)
            failed()
            return
        }
        loop.scheduleTask(in: .nanoseconds(Int64(seconds * 1e9))) { [self] in
            // Still waiting at the deadline (wakes and this run on the loop, one after the other).
            if withdraw(ticket) && !submitPublish(publish, completion) { failed() }
        }
    }

    /// Who waits for room: a thread in a plain `publish`, or an async publish's next try.
    enum RoomWaiter: Sendable {
        case thread(DispatchSemaphore)
        case retry(@Sendable () -> Void)

        func wake() {
            switch self {
            case .thread(let s): s.signal()
            case .retry(let again): again()
            }
        }
    }

    private enum Admission {
        case accepted
        case full
        case waiting
    }

    private func newTicket() -> UInt64 {
        inbox.withLockedValue {
            $0.nextWaiterID &+= 1
            return $0.nextWaiterID
        }
    }

    /// Takes the ticket's waiter off the list; false if it was not on it (woken or accepted).
    @discardableResult
    private func withdraw(_ ticket: UInt64) -> Bool {
        inbox.withLockedValue { box in
            guard let i = box.roomWaiters.firstIndex(where: { $0.ticket == ticket }) else { return false }
            box.roomWaiters.remove(at: i)
            return true
        }
    }

    private func admit(
        _ publish: MQTTPacket.Publish, _ completion: Completion, orWait waiter: (ticket: UInt64, wake: RoomWaiter)?
    )
        -> Admission
    {
        // Drop-oldest lets the loop make room, but a hard bound still holds for what waits
        // between two drains of the inbox.
        let limit = config.queueFullPolicy == .reject ? config.publishQueueMaxsize : 2 * config.publishQueueMaxsize + 65_535
        let (admission, loop, schedule) = inbox.withLockedValue { box -> (Admission, EventLoop?, Bool) in
            guard box.outstanding < limit else {
                guard let waiter else { return (.full, nil, false) }
                box.roomWaiters.append(waiter)
                return (.waiting, nil, false)
            }
            box.outstanding += 1
            box.commands.append(.publish(publish, completion))
            let schedule = box.loop != nil && !box.drainScheduled
            if schedule { box.drainScheduled = true }
            return (.accepted, box.loop, schedule)
        }
        if schedule, let loop { loop.execute { self.drain() } }
        return admission
    }

    /// Room of `n` messages completed (or stored) is given back; whoever waits for room tries again.
    private func giveBack(_ n: Int) {
        let anyWaiting = inbox.withLockedValue { box -> Bool in
            box.outstanding -= n
            return !box.roomWaiters.isEmpty
        }
        guard anyWaiting else { return }  // the common case: one lock, no copy
        let waiting = inbox.withLockedValue { box -> [(ticket: UInt64, wake: RoomWaiter)] in
            defer { box.roomWaiters.removeAll(keepingCapacity: true) }
            return box.roomWaiters
        }
        for w in waiting { w.wake.wake() }
    }

    func submit(_ command: Command) {
        let (loop, schedule) = inbox.withLockedValue { box -> (EventLoop?, Bool) in
            box.commands.append(command)
            let schedule = box.loop != nil && !box.drainScheduled
            if schedule { box.drainScheduled = true }
            return (box.loop, schedule)
        }
        if schedule, let loop { loop.execute { self.drain() } }
    }

    var currentLoop: EventLoop? { inbox.withLockedValue { $0.loop } }

    // MARK: - Loop attachment

    /// Gives the core its loop; queued commands run on it from now on.
    func attach(_ loop: EventLoop) {
        loop.preconditionInEventLoop()
        self.loop = loop
        out = ByteBuffer()
        inbox.withLockedValue {
            $0.loop = loop
            $0.drainScheduled = true
        }
        if config.offlineStore != nil {
            storeTickTask = loop.scheduleRepeatedTask(initialDelay: .milliseconds(100), delay: .milliseconds(100)) { [self] _ in
                storeTick()
            }
        }
        drain()
    }

    private func detach() {
        storeTickTask?.cancel()
        storeTickTask = nil
        outbox?.close()
        inbox.withLockedValue {
            $0.loop = nil
            $0.drainScheduled = false
        }
        loop = nil
    }

    private func drain() {
        let commands = inbox.withLockedValue { box -> [Command] in
            box.drainScheduled = false
            defer { box.commands.removeAll(keepingCapacity: true) }
            return box.commands
        }
        let now = Self.now()
        for command in commands {
            switch command {
            case .connect(let c): startConnect(c)
            case .publish(let p, let c): accept(p, c, now: now)
            case .subscribe(let entries, let c): subscribe(entries, c, now: now)
            case .unsubscribe(let filters, let c): unsubscribe(filters, c, now: now)
            case .disconnect(let c): startDisconnect(c, now: now)
            case .setWill(let w): machine.setWill(w)
            case .probe(let done): done()
            case .reauthenticate(let c):
                if let problem = machine.reauthenticate(now: now, into: &actions) {
                    complete(c, .failure(ProtocolValidationError("cannot re-authenticate: \(problem)", reason: .misuse)))
                } else {
                    complete(c, .success(()))
                }
            }
        }
        if let outbox {
            outbox.commit()  // group commit of this batch's appends (sync: always)
            failDroppedCallbacks()
            feedFromStore(now: now)
        }
        runActions()
    }

    /// A publish from the inbox: into the session (memory) or into the offline store.
    private func accept(_ p: MQTTPacket.Publish, _ c: Completion, now: UInt64) {
        guard let outbox, p.qos != .atMostOnce else {
            machine.publish(p, token: c, now: now, into: &actions)
            return
        }
        // persist: offline keeps messages in memory while the broker takes them promptly; once
        // anything waits in the store, newer messages queue behind it there (order is kept).
        let inMemory =
            outbox.config.persist == .offline && machine.isConnected && !outbox.hasUnfed
            && machine.inflightCount + machine.queuedCount < outbox.config.spillThreshold
        if inMemory || outbox.degraded != nil {
            machine.publish(p, token: c, now: now, into: &actions)
            return
        }
        switch outbox.append(p, c, deferCommit: true) {
        case .stored:
            giveBack(1)  // its room is the store's now
        case .refused(let error):
            giveBack(1)
            logger.warning("\(error.message)")
            complete(c, .failure(error))
        case .degraded:
            machine.publish(p, token: c, now: now, into: &actions)
        }
    }

    /// Hands stored messages to the session as far as its in-flight window has room.
    private func feedFromStore(now: UInt64) {
        guard let outbox, machine.isConnected, outbox.hasUnfed else { return }
        let room = machine.window - machine.inflightCount - machine.queuedCount
        for (seq, p) in outbox.next(limit: room) {
            machine.publish(p, token: .stored(seq), now: now, into: &actions)
        }
    }

    private static func now() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

    // MARK: - Connect / disconnect

    private func setState(_ s: ConnectionState) {
        guard view.state != s else { return }
        update { $0.state = s }
        logger.info("MQTT \(s)", metadata: ["broker": "\(current)"])
        for l in stateListeners.withLockedValue({ $0.all.sorted { $0.key < $1.key }.map(\.value) }) { l(s) }
    }

    private func startConnect(_ completion: Completion) {
        if machine.isConnected {
            complete(completion, .success(()))
            return
        }
        connectWaiters.append(completion)
        lifecycle(.connect)
    }

    private func startDisconnect(_ completion: Completion, now: UInt64) {
        disconnectWaiters.append(completion)
        lifecycle(.disconnect(linkOpen: channel != nil))
    }

    /// One event into the connection machine; its actions at once. Session actions they produce
    /// wait in `actions` for the caller's `runActions`.
    private func lifecycle(_ event: ConnectionMachine.Event) {
        var todo: [ConnectionMachine.Action] = []
        connection.handle(event, now: Self.now(), into: &todo)
        for action in todo { perform(action) }
    }

    private func perform(_ action: ConnectionMachine.Action) {
        switch action {
        case .dial(let d):
            machine.options.version = d.version
            machine.options.cleanStart = d.cleanStart
            update { $0.broker = d.broker }
            startAttempt()
        case .hop:
            // The clean session is open (old state wiped): leave it and come back with Clean
            // Session 0 so that this session outlives a dropped link. The next CONNECT waits for
            // the broker to close this link: a CONNECT with our identifier that overtook the
            // DISCONNECT (a proxy or load balancer in between) would take the session over, and
            // the broker would publish this link's Will.
            machine.options.cleanStart = false
            machine.disconnect(now: Self.now(), awaitClose: true, into: &actions)
            let thisAttempt = attempt
            loop?.scheduleTask(in: .nanoseconds(Int64(min(1, config.timeout) * 1e9))) { [self] in
                if attempt == thisAttempt { channel?.close(promise: nil) }
            }
        case .up:
            sessionUp()
        case .report(let s):
            setState(s)
        case .scheduleRetry(let delay):
            guard let loop else { return }
            reconnectTask = loop.scheduleTask(in: .nanoseconds(Int64(delay * 1e9))) { [self] in
                reconnectTask = nil
                lifecycle(.backoffElapsed)
                runActions()
            }
        case .cancelRetry:
            reconnectTask?.cancel()
            reconnectTask = nil
        case .closeLink:
            machine.disconnect(now: Self.now(), into: &actions)
            if !machine.isConnected && machine.state != .closing { channel?.close(promise: nil) }
        case .abandonAttempt:
            // A TCP/TLS connect may still be under way: its result is now stale and is closed.
            attempt &+= 1
            attemptTimeout?.cancel()
            attemptTimeout = nil
        case .failQueued:
            machine.failAll(.connectionLost, into: &actions)
        case .connectSucceeded:
            for w in connectWaiters { complete(w, .success(())) }
            connectWaiters.removeAll()
        case .connectFailed(let error):
            for w in connectWaiters { complete(w, .failure(error)) }
            connectWaiters.removeAll()
        case .disconnectFinished:
            outbox?.close()
            for w in disconnectWaiters { complete(w, .success(())) }
            disconnectWaiters.removeAll()
            if config.mode == .blocking { endLoop() }
        case .gaveUp(let error):
            update { $0.lastError = error }
            machine.failAll(.connectionLost, into: &actions)
        case .log(let level, let message):
            logger.log(level: level, "\(message)")
        }
    }

    private func startAttempt() {
        guard let loop else { return }
        attempt &+= 1
        let thisAttempt = attempt
        lastFailure = nil
        if config.tlsInsecureSkipVerify && tlsContext != nil {
            logger.warning("TLS certificate verification is OFF (tls_insecure_skip_verify): the broker's identity is not checked")
        }
        attemptTimeout?.cancel()
        attemptTimeout = loop.scheduleTask(in: .nanoseconds(Int64(config.timeout * 1e9))) { [self] in
            guard attempt == thisAttempt, case .connecting = connection.state else { return }
            fail(
                ProtocolConnectionError(
                    "no answer from \(current) within \(config.timeout) s (TCP, TLS and CONNACK): check the address, the port and that the broker is up",
                    reason: .timeout))
        }
        Transport.connect(
            on: loop, to: current, config: config, tlsContext: tlsContext, version: machine.options.version, core: self,
            attempt: thisAttempt
        ).whenComplete { [self] result in
            guard attempt == thisAttempt else {
                if case .success(let ch) = result { ch.close(promise: nil) }
                return
            }
            switch result {
            case .success(let ch):
                channel = ch
            case .failure(let error):
                lastFailure = lastFailure ?? mapTransportError(error)
                attemptEnded()
            }
        }
    }

    private func fail(_ error: any CommunicatorError) {
        if lastFailure == nil { lastFailure = error }
        if let channel { channel.close(promise: nil) } else { attemptEnded() }
    }

    private func endLoop() {
        guard let loop, config.mode == .blocking else { return }
        detach()
        loop.shutdownGracefully { _ in }
    }

    /// CONNACK accepted this session (after any hop): keep-alive, subscriptions, queued messages.
    private func sessionUp() {
        guard let info = machine.connectionInfo else { return }
        update {
            $0.sessionPresent = info.sessionPresent
            $0.connectionInfo = info
        }
        attemptTimeout?.cancel()
        attemptTimeout = nil
        subscriptions.usesIdentifiers =
            machine.options.version == .v5_0 && (info.properties.subscriptionIdentifierAvailable ?? 1) == 1
        startTicking()
        logger.debug(
            "CONNACK: session present \(info.sessionPresent), keep-alive \(info.keepAliveSeconds) s, receive maximum \(info.receiveMaximum)"
        )
        let now = Self.now()
        for r in subscriptions.restore(sessionPresent: info.sessionPresent) {
            machine.subscribe(r.subscriptions, properties: r.properties, token: .restore(filters: r.filters), now: now, into: &actions)
        }
        machine.sendQueued(now: now, into: &actions)
    }

    // MARK: - Transport events (on the loop)

    func transportUp(channel: Channel, attempt: UInt64) {
        guard attempt == self.attempt else { return }
        self.channel = channel
        out = channel.allocator.buffer(capacity: 256)
        machine.connectionEstablished(now: Self.now(), into: &actions)
        runActions()
    }

    func packetReceived(_ packet: MQTTPacket, attempt: UInt64) {
        guard attempt == self.attempt else { return }
        inReadBatch = true
        machine.received(packet, now: Self.now(), into: &actions)
        runActions()
    }

    func publishDropped(_ d: DroppedPublish, attempt: UInt64) {
        guard attempt == self.attempt else { return }
        inReadBatch = true
        machine.droppedPublish(d, now: Self.now(), into: &actions)
        runActions()
    }

    func readBatchComplete(attempt: UInt64) {
        guard attempt == self.attempt else { return }
        inReadBatch = false
        writeOut()
    }

    func transportError(_ error: Error, attempt: UInt64) {
        guard attempt == self.attempt else { return }
        if lastFailure == nil { lastFailure = mapTransportError(error) }
        logger.debug("MQTT transport error: \(error)")
        if let d = error as? MQTTDecodeError {
            machine.decodeFailed(d, into: &actions)  // 5.0: DISCONNECT with the reason, then close
            runActions()
        }
    }

    func transportDown(attempt: UInt64) {
        guard attempt == self.attempt else { return }
        channel = nil
        inReadBatch = false
        failWriteWaiters()
        machine.connectionLost(into: &actions)
        runActions()
        attemptEnded()
    }

    /// The connection attempt or the connection ended: the connection machine decides what next.
    private func attemptEnded() {
        attemptTimeout?.cancel()
        attemptTimeout = nil
        tickTask?.cancel()
        tickTask = nil
        let failure = lastFailure
        if let failure { update { $0.lastError = failure } }
        lifecycle(.ended(.init(error: failure)))
        runActions()
    }

    // MARK: - Subscriptions

    private func subscribe(
        _ entries: [(filter: String, qos: QoS, options: SubscribeOptions, handler: MessageHandler)], _ completion: Completion, now: UInt64
    ) {
        if let info = machine.connectionInfo,
            let problem = entries.lazy.compactMap({ SubscriptionTable.unsupported($0.filter, by: info) }).first
        {
            complete(completion, .failure(ProtocolValidationError(problem, reason: .brokerLimit)))
            return
        }
        for e in entries { subscriptions.add(e.filter, qos: e.qos, options: e.options, handler: e.handler) }
        guard machine.isConnected else {
            // Sent when the connection comes up (with the others being restored).
            complete(completion, .success(()), granted: entries.map { $0.qos.rawValue })
            return
        }
        // One request (the caller's filters share one SUBSCRIBE, or one filter with its identifier).
        for r in subscriptions.requests(for: entries.map(\.filter)) {
            machine.subscribe(r.subscriptions, properties: r.properties, token: completion, now: now, into: &actions)
        }
    }

    private func unsubscribe(_ filters: [String], _ completion: Completion, now: UInt64) {
        subscriptions.remove(filters)
        guard machine.isConnected else {
            complete(completion, .success(()))
            return
        }
        machine.unsubscribe(filters, token: completion, now: now, into: &actions)
    }

    // MARK: - Actions

    /// Not re-entered: a channel closed while actions run reports its end at once, and what that
    /// adds to `actions` is taken by the loop already running (which holds its batch in
    /// `spareActions` until it is done, so a non-empty `spareActions` means "running").
    private func runActions() {
        guard spareActions.isEmpty else { return }
        while !actions.isEmpty {
            swap(&actions, &spareActions)
            // Room in the queue is given back before the completion callbacks run, so a caller
            // that publishes again from (or right after) a callback finds it.
            // (Stored messages gave their room back when they were stored; QoS 0: when written.)
            var completed = 0
            var anyCompleted = false
            for case .publishCompleted(let token, _) in spareActions {
                anyCompleted = true
                if !token.isStored { completed += 1 }
            }
            if completed > 0 { giveBack(completed) }
            for action in spareActions { perform(action) }
            spareActions.removeAll(keepingCapacity: true)
            // The window opened: stored messages go next.
            if anyCompleted && outbox != nil { feedFromStore(now: Self.now()) }
        }
        if needsFlush && !inReadBatch { writeOut() }
    }

    private func writeOut() {
        guard needsFlush else { return }
        needsFlush = false
        // A stored QoS 2 message's packet identifier (or its release) is durable before the
        // bytes that use it leave: after a restart it is resent with the same identifier.
        if let outbox, outbox.needsSync { outbox.syncBeforeSend() }
        guard let channel, out.readableBytes > 0 else {
            failWriteWaiters()
            return
        }
        let buffer = out
        out = channel.allocator.buffer(capacity: 256)
        guard !writeWaiters.isEmpty else {
            channel.writeAndFlush(buffer, promise: nil)
            return
        }
        // QoS 0 is complete when its bytes are written to the socket (as libmosquitto and Paho
        // report it); this is also the back-pressure that keeps a fast QoS 0 publisher bounded.
        let waiters = writeWaiters
        writeWaiters.removeAll()
        channel.writeAndFlush(buffer).whenComplete { [self] result in
            self.giveBack(waiters.count)
            let r = result.mapError { _ in self.mapFailure(.connectionLost) as any Error }
            for w in waiters { complete(w, r) }
        }
    }

    private func failWriteWaiters() {
        guard !writeWaiters.isEmpty else { return }
        let waiters = writeWaiters
        writeWaiters.removeAll()
        giveBack(waiters.count)
        for w in waiters { complete(w, .failure(mapFailure(.connectionLost))) }
    }

    private func perform(_ action: SessionMachine<Completion>.Action) {
        switch action {
        case .send(let packet):
            if let outbox, case .ack(let a) = packet, a.kind == .pubrel { outbox.noteRelease(packetID: a.packetID) }
            packet.encode(version: machine.options.version, into: &out)
        case .flush:
            needsFlush = true
        case .deliver(let p):
            let message = MQTTMessage(topic: p.topic, payload: p.payload, qos: p.qos, retain: p.retain, properties: p.properties)
            subscriptions.forEachHandler(for: p) { $0(message) }
        case .connected:
            outbox?.connected()
            lifecycle(.accepted)
        case .assigned(let token, let packetID):
            if case .stored(let seq) = token { outbox?.noteIdentity(seq, packetID: packetID) }
        case .publishCompleted(.stored(let seq), let result):
            guard let outbox else { return }
            let (callback, final) = outbox.finished(seq, result)
            switch result {
            case .success:
                if let callback { complete(callback, .success(())) }
            case .failure(let f):
                let error = mapFailure(f)
                if final {
                    logger.error("stored message \(seq) removed from the offline store: \(error.message)")
                    if let callback { complete(callback, .failure(error)) }
                } else if let callback {
                    complete(
                        callback,
                        .failure(
                            ProtocolConnectionError(
                                "\(error.message); the message stays in the offline store and is sent after the next connect",
                                code: error.code,
                                reason: error.reason)))
                }
            }
        case .publishCompleted(let token, let result):
            switch result {
            case .success: complete(token, .success(()))
            case .failure(let f):
                let error = mapFailure(f)
                if case .dropped = f {
                    update { $0.droppedMessages += 1 }
                    logger.warning("publish queue full: dropped the oldest waiting message")
                } else if case .none = token {
                    logger.warning("publish failed: \(error.message)")
                }
                complete(token, .failure(error))
            }
        case .qos0Sent(let token):
            writeWaiters.append(token)
        case .subscribeCompleted(let token, let result):
            switch result {
            case .success(let codes):
                if case .granted(let filters, _) = token { markSubscribed(filters, codes) }
                if case .restore(let filters) = token { markSubscribed(filters, codes) }
                complete(token, .success(()), granted: codes)
            case .failure(let f):
                complete(token, .failure(mapFailure(f)))
            }
        case .unsubscribeCompleted(let token, let result):
            complete(token, result.mapError { mapFailure($0) as any Error })
        case .reauthenticated:
            logger.info("re-authenticated with \(current)")
        case .acknowledgedWithReason(let packet, let code, let reason):
            // Success, with something to say (PUBACK 0x10 "no matching subscribers" would be noise
            // at info level on every event nobody subscribed to).
            logger.debug("\(packet) \(ReasonCode.describe(code, version: machine.options.version))\(reason.map { ": \($0)" } ?? "")")
        case .droppedIncoming(let d):
            update { $0.droppedIncomingMessages += 1 }
            logger.warning(
                "dropped an incoming message of \(d.size) bytes on \(String(reflecting: String(d.topic.prefix(200)))) (\(d.qos)): over max_incoming_packet_size \(d.limit); it was acknowledged and its bytes skipped unbuffered"
            )
        case .close(let failure):
            if let failure, lastFailure == nil { lastFailure = mapFailure(failure) }
            // 5.0 §4.11: "use another server" or "server moved", with a Server Reference.
            switch failure {
            case .connectionRefused(let code, let props)?:
                if let r = props.serverReference, let moved = Self.redirect(code) { lifecycle(.referred(to: r, moved: moved)) }
            case .serverDisconnected(let code, _, let reference?)?:
                if let moved = Self.redirect(code) { lifecycle(.referred(to: reference, moved: moved)) }
            default: break
            }
            writeOut()
            channel?.close(promise: nil)
        }
    }

    /// nil: not a redirect; else whether the server moved (for good) rather than asks for another.
    private static func redirect(_ code: UInt8) -> Bool? {
        switch ReasonCode(code) {
        case .serverMoved: true
        case .useAnotherServer: false
        default: nil
        }
    }

    private func markSubscribed(_ filters: [String], _ codes: [UInt8]) {
        for (filter, code) in subscriptions.acknowledged(filters, codes: codes) {
            logger.error(
                "broker refused subscription to \"\(filter)\" (SUBACK \(ReasonCode.describe(code, version: machine.options.version)))")
        }
    }

    private func startTicking() {
        guard let loop else { return }
        tickTask?.cancel()
        let interval = machine.tickIntervalNanoseconds
        tickTask = loop.scheduleRepeatedTask(initialDelay: .nanoseconds(Int64(interval)), delay: .nanoseconds(Int64(interval))) {
            [self] _ in
            machine.tick(now: Self.now(), into: &actions)
            runActions()
        }
    }

    private func complete(_ completion: Completion, _ result: Result<Void, any Error>, granted: [UInt8] = []) {
        switch completion {
        case .none, .restore, .stored: break
        case .done(let cb): cb(result)
        case .granted(let filters, let cb):
            switch result {
            case .failure(let e): cb(.failure(e))
            case .success:
                if let (i, code) = granted.enumerated().first(where: { ReasonCode($0.element).isFailure }) {
                    let filter = i < filters.count ? filters[i] : "?"
                    cb(
                        .failure(
                            ProtocolValidationError(
                                "broker refused the subscription to \"\(filter)\" (SUBACK \(ReasonCode.describe(code, version: machine.options.version))): check the filter and the broker's ACL",
                                code: code, reason: .refused(ReasonCode(code)))))
                } else {
                    cb(.success(granted))
                }
            }
        }
    }

    private var errors: ErrorMapping { ErrorMapping(v: machine.options.version, brokerEndpoint: current, config: config) }
    private func mapFailure(_ f: SessionMachine<Completion>.Failure) -> any CommunicatorError { errors.failure(f) }
    func mapTransportError(_ error: Error) -> any CommunicatorError { errors.transport(error) }
}
