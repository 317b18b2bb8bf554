import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL

/// The engine behind `MQTTProtocol`: a driver that moves events and actions between NIO, the
/// session machine, the connection machine (`ClientCore+Connection.swift`), the offline store and
/// the callbacks. All of its mutable state belongs to one event loop; other threads reach it only
/// through the `CommandInbox`, and read what it publishes as one `MQTTClientSnapshot`.
///
/// `@unchecked Sendable`: the `var`s below are touched only on `loop` (every entry point is
/// either called by the loop's channel handler and timers, or is `drain`, scheduled on the loop);
/// what other threads use (`inbox`, `listeners`, `published`, the `let`s) is Sendable itself.
final class ClientCore: @unchecked Sendable {
    let config: MQTTConfig
    let logger: Logger
    let inbox: CommandInbox
    let listeners = StateListeners()
    let tlsContext: NIOSSLContext?
    private let published: NIOLockedValueBox<MQTTClientSnapshot>
    var snapshot: MQTTClientSnapshot { published.withLockedValue { $0 } }
    /// One field of the snapshot, without copying the rest (the publish path reads the state).
    func read<T>(_ field: (inout MQTTClientSnapshot) -> T) -> T { published.withLockedValue { field(&$0) } }

    // Owned by the loop (here and in the ClientCore+*.swift extensions):
    var loop: EventLoop?
    /// The loop's own copy of what the application sees (`update` publishes it).
    private(set) var view: MQTTClientSnapshot
    var machine: SessionMachine<Completion>
    var actions: [SessionMachine<Completion>.Action] = []
    /// `runActions` is at work (what actions add meanwhile, it takes next), and the storage it
    /// reuses for each batch.
    private var performing = false
    private var spare: [SessionMachine<Completion>.Action] = []
    var channel: Channel?
    /// The core's own handler's place in the channel's pipeline: writes start there and go
    /// straight to the handlers before it (TLS, then the socket), not through the pipeline's tail.
    private var link: ChannelHandlerContext?
    /// Numbers connection attempts: events of an earlier attempt's channel are ignored.
    var attempt: UInt64 = 0
    private var batch = WriteBatch()
    /// A `flush` action came since the last write.
    private var flushDue = false
    /// `writeOut` is running (further flushes are its next rounds).
    private var writing = false
    private var inReadBatch = false
    var subscriptions = SubscriptionTable()
    /// Which broker next, when to wait, when to give up.
    var connection: ConnectionMachine
    /// The offline store (nil: none configured, or it could not be opened yet).
    private var outbox: Outbox?
    private var opener: StoreOpener
    var connectWaiters: [Completion] = []
    var disconnectWaiters: [Completion] = []
    var lastFailure: (any CommunicatorError)?
    var tickTask: RepeatedTask?
    var attemptTimeout: Scheduled<Void>?
    var reconnectTask: Scheduled<Void>?
    private var storeTickTask: RepeatedTask?
    /// The metrics (nil: none configured or bootstrapped) and what the core counts for them.
    let metrics: ClientMetrics?
    private var metricsTask: RepeatedTask?
    var bytesSent = 0
    var bytesReceived = 0
    var connections = 0
    /// Publishes that ended and messages delivered: counted here, where every end passes (a
    /// stored message once, when it leaves the store; the store's refusals before the session).
    private(set) var tally = PublishTally()

    /// Opens the link of one connection attempt.
    typealias Dialer = @Sendable (EventLoop, BrokerEndpoint, MQTTVersion, ClientCore, _ attempt: UInt64) -> EventLoopFuture<Channel>
    let dial: Dialer
    /// The loop's clock: what the machines and the timers count in. NIO's loops schedule on the
    /// monotonic clock (`NIODeadline.now()`); a test on an `EmbeddedEventLoop` passes its `now`.
    let clock: @Sendable () -> NIODeadline

    /// `dial`: TCP (and TLS) by default; tests hand in `EmbeddedChannel`s, and their loop's clock.
    init(
        config: MQTTConfig, clientID: String, logger: Logger, dial: @escaping Dialer = Transport.connect,
        clock: @escaping @Sendable () -> NIODeadline = { .now() }
    ) throws {
        self.config = config
        self.logger = logger
        self.dial = dial
        self.clock = clock
        // Drop-oldest lets the loop make room, but a hard bound still holds for what waits
        // between two drains of the inbox.
        inbox = CommandInbox(
            limit: config.queueFullPolicy == .reject ? config.publishQueueMaxsize : 2 * config.publishQueueMaxsize + 65_535)
        connection = ConnectionMachine(settings: .init(config), seed: UInt64.random(in: .min ... .max))
        view = MQTTClientSnapshot(broker: config.brokers[0], clientID: clientID)
        published = NIOLockedValueBox(view)
        tlsContext = config.usesTLS ? try Transport.makeTLSContext(config) : nil
        machine = SessionMachine(options: .init(config, clientID: clientID))
        opener = StoreOpener(config: config.offlineStore, logger: logger, clock: clock)
        metrics = config.metricsDestination.map { ClientMetrics(factory: $0) }
        machine.options.timeRoundTrips = metrics != nil
        openStore()
    }

    var currentLoop: EventLoop? { inbox.loop }
    /// The broker of the current (or last) connection attempt.
    var current: BrokerEndpoint { view.broker }

    /// Changes the loop's view and publishes it (on the loop; in `init` before it has one).
    func update(_ change: (inout MQTTClientSnapshot) -> Void) {
        change(&view)
        let now = view
        published.withLockedValue { $0 = now }
    }

    func now() -> UInt64 { clock().uptimeNanoseconds }

    // MARK: - The inbox (any thread) and the loop

    func submit(_ command: Command) { drain(on: inbox.submit(command)) }

    func drain(on loop: EventLoop?) {
        if let loop { loop.execute { self.drain() } }
    }

    /// Gives the core its loop; queued commands run on it from now on.
    func attach(_ loop: EventLoop) {
        loop.preconditionInEventLoop()
        self.loop = loop
        batch = WriteBatch()
        inbox.attach(loop)
        if config.offlineStore != nil {
            storeTickTask = loop.scheduleRepeatedTask(initialDelay: .milliseconds(100), delay: .milliseconds(100)) { [self] _ in
                storeTick()
            }
        }
        if metrics != nil {
            let every = config.metricsInterval.timeAmount
            metricsTask = loop.scheduleRepeatedTask(initialDelay: .zero, delay: every) { [self] _ in reportMetrics() }
        }
        drain()
    }

    func closeStore() { outbox?.close() }

    /// Blocking mode, after the disconnect (which closed the store): the loop goes away.
    func detach() {
        storeTickTask?.cancel()
        storeTickTask = nil
        metricsTask?.cancel()
        metricsTask = nil
        inbox.detach()
        loop = nil
    }

    private func drain() {
        let now = self.now()
        for command in inbox.take() {
            switch command {
            case .connect(let c): startConnect(c)
            case .publish(let p, let c): accept(p, c, now: now)
            case .subscribe(let entries, let c): subscribe(entries, c, now: now)
            case .unsubscribe(let filters, let c): unsubscribe(filters, c, now: now)
            case .disconnect(let c): startDisconnect(c)
            case .setWill(let w): machine.setWill(w)
            case .probe(let done): done()
            case .reportMetrics(let done):
                reportMetrics()
                done()
            case .reauthenticate(let c):
                let problem = machine.reauthenticate(now: now, into: &actions)
                complete(
                    c, problem.map { .failure(ProtocolValidationError("cannot re-authenticate: \($0)", reason: .misuse)) } ?? .success(()))
            }
        }
        inbox.drained()
        commandsHandled(now: now)
    }

    /// A publish made on the loop, with nothing queued before it (`Admission.acceptedOnLoop`).
    func acceptOnLoop(_ p: MQTTPacket.Publish, _ c: Completion) {
        let now = self.now()
        accept(p, c, now: now)
        commandsHandled(now: now)
    }

    /// After commands: what they stored is committed, and what they produced runs.
    private func commandsHandled(now: UInt64) {
        if let outbox {
            outbox.commit()  // group commit of this batch's appends (sync: always)
            failDropped()
            outbox.feed(&machine, now: now, into: &actions)
        }
        runActions()
    }

    // MARK: - Publishing and the offline store

    /// A publish from the inbox: into the session (memory) or into the offline store.
    private func accept(_ p: MQTTPacket.Publish, _ c: Completion, now: UInt64) {
        guard let outbox, p.qos != .atMostOnce else { return machine.publish(p, token: c, now: now, into: &actions) }
        switch outbox.place(p, c, connected: machine.isConnected, waiting: machine.inflightCount + machine.queuedCount) {
        case .memory: machine.publish(p, token: c, now: now, into: &actions)
        case .stored: inbox.giveBack(1)
        case .refused(let error):
            inbox.giveBack(1)
            tally.failed[.init(qos: Int(p.qos.rawValue), reason: "store_refused"), default: 0] += 1
            complete(c, .failure(error))
        }
    }

    private func openStore() {
        let opened = opener.open(restoringInto: &machine) { [unowned self] status, refusing in
            update {
                $0.store = status
                $0.storeRefusing = refusing
            }
        }
        switch opened {
        case .opened(let o)?: outbox = o
        case .failed(let status)?: update { $0.store = status }
        case nil: break
        }
    }

    private func storeTick() {
        if opener.isDue { openStore() }
        guard let outbox else { return }
        outbox.tick()
        failDropped()
        if machine.isConnected {
            outbox.feed(&machine, now: now(), into: &actions)
            runActions()
        }
    }

    private func failDropped() {
        for c in outbox?.takeDropped() ?? [] {
            complete(
                c,
                .failure(
                    ProtocolValidationError("message dropped: the offline store was full and when_full is drop_oldest", reason: .dropped)))
        }
    }

    // MARK: - Transport events (on the loop, from MQTTConnectionHandler)

    func transportUp(_ context: ChannelHandlerContext, attempt: UInt64) {
        guard attempt == self.attempt else { return }
        let channel = context.channel
        self.channel = channel
        link = context
        batch.start(channel.allocator.buffer(capacity: 256), version: machine.options.version)
        machine.connectionEstablished(now: now(), into: &actions)
        runActions()
    }

    func packetReceived(_ packet: MQTTPacket, attempt: UInt64) {
        guard attempt == self.attempt else { return }
        inReadBatch = true
        machine.received(packet, now: now(), into: &actions)
        runActions()
    }

    func publishDropped(_ d: DroppedPublish, attempt: UInt64) {
        guard attempt == self.attempt else { return }
        inReadBatch = true
        machine.droppedPublish(d, now: now(), into: &actions)
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
        link = nil
        inReadBatch = false
        failWriteWaiters()
        machine.connectionLost(into: &actions)
        runActions()
        attemptEnded()
    }

    // MARK: - Session actions

    /// Not re-entered: a channel closed while actions run reports its end at once, and what that
    /// adds to `actions` is taken by the loop already running (`performing`).
    func runActions() {
        guard !performing else { return }
        performing = true
        while !actions.isEmpty {
            // The batch is a local (reads of it need no exclusivity check) in the spare array's
            // storage, walked by index (an element is switched on in place; `for action in`
            // copied each one out, twice).
            var batch: [SessionMachine<Completion>.Action] = []
            swap(&batch, &spare)
            swap(&batch, &actions)
            // Room in the queue is given back before the completion callbacks run, so a caller
            // that publishes again from (or right after) a callback finds it.
            // (Stored messages gave their room back when they were stored; QoS 0: when written.)
            // The batch's ends are counted here, in a local, and added to `tally` once (a field of
            // this class costs a dynamic exclusivity check per access); a stored message's end is
            // counted where the store says whether it is final.
            var counts = PublishTally.Batch()
            for i in batch.indices { batch[i].count(into: &counts) }
            if counts.hasOutcomes { tally.add(counts) }
            if counts.freed > 0 { inbox.giveBack(counts.freed) }
            // Each action is moved out of the batch (a payload-free one left in its place), not
            // copied out and the copy destroyed after.
            for i in batch.indices {
                var action = SessionMachine<Completion>.Action.flush
                swap(&action, &batch[i])
                perform(action)
            }
            batch.removeAll(keepingCapacity: true)
            swap(&batch, &spare)
            // The window opened: stored messages go next.
            if counts.ended, let outbox { outbox.feed(&machine, now: now(), into: &actions) }
        }
        performing = false  // before the write: what its completions publish runs at once
        if flushDue && !inReadBatch { writeOut() }
    }

    /// Writes what the batch holds, again while writing produced more: a QoS 0 publish whose
    /// write completes at once calls back, and a publish made in that callback is encoded into
    /// the next batch and written by this loop, not by a nested call (a publisher driven by its
    /// completions would otherwise recurse once per message).
    func writeOut() {
        guard !writing else { return }
        writing = true
        defer { writing = false }
        while flushDue { writeBatch() }
    }

    /// One write: the batch's bytes, and its QoS 0 publishes' completions.
    private func writeBatch() {
        flushDue = false
        // A stored QoS 2 message's packet identifier (or its release) is durable before the
        // bytes that use it leave: after a restart it is resent with the same identifier.
        if let outbox, outbox.needsSync { outbox.syncBeforeSend() }
        guard let channel, let link, batch.bytes.readableBytes > 0 else {
            failWriteWaiters()
            return
        }
        let waiters = batch.takeWaiters()
        guard !waiters.isEmpty else { return send(on: link, promise: nil) }
        // Plain TCP: the socket usually takes every byte at once, and then the QoS 0 publishes
        // are written without a promise and its future per write (~3,500 instructions, callgrind).
        // If bytes wait in the channel (the kernel's buffer is full), an empty write after them
        // completes when they are out. TLS keeps the promise on the write itself: its handler
        // may hold bytes the socket's count does not show.
        let promise: EventLoopPromise<Void>
        if tlsContext == nil, let options = channel.syncOptions {
            send(on: link, promise: nil)
            // Still up (a failed write closes the link at once) and nothing left in it.
            if channel.isActive, (try? options.getOption(.bufferedWritableBytes)) == 0 {
                inbox.giveBack(waiters.count)
                for w in waiters { complete(w, .success(())) }
                return
            }
            promise = channel.eventLoop.makePromise()
            link.writeAndFlush(NIOAny(ByteBuffer()), promise: promise)
        } else {
            promise = channel.eventLoop.makePromise()
            send(on: link, promise: promise)
        }
        promise.futureResult.whenComplete { [self] result in
            inbox.giveBack(waiters.count)
            let r = result.mapError { _ in self.mapFailure(.connectionLost) as any Error }
            for w in waiters { complete(w, r) }
        }
    }

    /// Hands the batch's bytes to the channel, from the core's handler on. Not within a mutation of
    /// `batch`: a write that fails closes the channel at once, and `transportDown` takes the
    /// batch's waiters meanwhile (an overlapping access would trap).
    private func send(on link: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        bytesSent &+= batch.bytes.readableBytes
        link.writeAndFlush(NIOAny(batch.bytes), promise: promise)
        batch.written(allocator: link.channel.allocator)
    }

    private func failWriteWaiters() {
        let waiters = batch.takeWaiters()
        guard !waiters.isEmpty else { return }
        inbox.giveBack(waiters.count)
        for w in waiters { complete(w, .failure(mapFailure(.connectionLost))) }
    }

    private func perform(_ action: consuming SessionMachine<Completion>.Action) {
        switch action {
        case .send(let packet):
            if case .ack(let a) = packet, a.kind == .pubrel, let outbox { outbox.noteRelease(packetID: a.packetID) }
            batch.append(packet)
        case .flush:
            flushDue = true
        case .deliver(let p):
            let message = MQTTMessage(topic: p.topic, payload: p.payload, qos: p.qos, retain: p.retain, properties: p.properties)
            subscriptions.forEachHandler(for: p) { $0(message) }
        case .connected:
            outbox?.connected()
            lifecycle(.accepted)
        case .assigned(let token, let packetID):
            if case .stored(let seq) = token { outbox?.noteIdentity(seq, packetID: packetID) }
        case .publishCompleted(.stored(let seq), let result, let qos):
            guard let outbox else { break }
            let (tell, final) = outbox.finished(seq, result, describe: mapFailure)
            // A refusal the store keeps the message through is not its end: counted when it leaves.
            if final { count(result, qos: qos) }
            if let (callback, r) = tell { complete(callback, r) }
        case .publishCompleted(let token, let result, _):
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
            batch.completeOnWrite(token)
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
        case .roundTrip(let kind, let nanoseconds):
            metrics?.roundTrip(kind, nanoseconds: nanoseconds)
        case .droppedIncoming(let d):
            update { $0.droppedIncomingMessages += 1 }
            logger.warning(
                "dropped an incoming message of \(d.size) bytes on \(String(reflecting: String(d.topic.prefix(200)))) (\(d.qos)): over max_incoming_packet_size \(d.limit); it was acknowledged and its bytes skipped unbuffered"
            )
        case .close(let failure):
            if let failure, lastFailure == nil { lastFailure = mapFailure(failure) }
            if let (reference, moved) = failure.flatMap(Self.referral) { lifecycle(.referred(to: reference, moved: moved)) }
            if flushDue { writeBatch() }  // now, even within `writeOut`: the last bytes go before the close
            channel?.close(promise: nil)
        }
    }

    /// 5.0 §4.11: "use another server" or "server moved", with a Server Reference (nil: no
    /// referral); `moved`: the server moved for good rather than asks for another.
    private static func referral(_ failure: SessionMachine<Completion>.Failure) -> (String, moved: Bool)? {
        let (code, reference): (UInt8, String?) =
            switch failure {
            case .connectionRefused(let code, let props): (code, props.serverReference)
            case .serverDisconnected(let code, _, let reference): (code, reference)
            default: (0, nil)
            }
        guard let reference else { return nil }
        switch ReasonCode(code) {
        case .serverMoved: return (reference, true)
        case .useAnotherServer: return (reference, false)
        default: return nil
        }
    }

    func complete(_ completion: Completion, _ result: Result<Void, any Error>, granted: [UInt8] = []) {
        switch completion {
        case .none, .restore, .stored: break
        case .done(let callback): callback(result)
        case .granted(let filters, let callback):
            callback(Completion.subscribeResult(result, filters: filters, granted: granted, version: machine.options.version))
        }
    }

    private func count(_ result: Result<Void, SessionMachine<Completion>.Failure>, qos: QoS) {
        switch result {
        case .success: tally.completed[Int(qos.rawValue)] &+= 1
        case .failure(let f): tally.failed[.init(qos: Int(qos.rawValue), reason: f.metricName), default: 0] &+= 1
        }
    }

    /// Brings the metrics up to date with what the core counted (on the loop).
    func reportMetrics() {
        metrics?.report(
            .init(
                state: view.state.metricLabel, connections: connections, tally: tally,
                droppedIncoming: view.droppedIncomingMessages, inflight: machine.inflightCount, queued: machine.queuedCount,
                bytesSent: bytesSent, bytesReceived: bytesReceived,
                store: view.store.map { status in
                    let f = outbox?.figures()
                    return .init(status: status, pendingBytes: f?.pendingBytes ?? 0, oldestAge: f?.oldestAge)
                }))
    }

    private var errors: ErrorMapping { ErrorMapping(v: machine.options.version, brokerEndpoint: current, config: config) }
    func mapFailure(_ f: SessionMachine<Completion>.Failure) -> any CommunicatorError { errors.failure(f) }
    func mapTransportError(_ error: Error) -> any CommunicatorError { errors.transport(error) }
}
