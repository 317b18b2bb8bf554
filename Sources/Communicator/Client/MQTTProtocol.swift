import Dispatch
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The seed's abstract publish/subscribe interface.
public protocol PubSubProtocol: AnyObject, Sendable {
    func connect() throws
    func disconnect()
    func publish(_ topic: String, _ message: String) throws
    func subscribe(_ topic: String, callback: @escaping @Sendable (String, String) -> Void) throws
}

/// The MQTT client with the seed's API: connect, disconnect, publish, subscribe, unsubscribe,
/// setWill, the two loop modes. Safe to use from any number of threads at once.
///
/// Threads: in `.nonBlocking` mode (default) the network runs on a thread of its own and message
/// callbacks run there, so a callback should return quickly. In `.blocking` mode `loopForever()`
/// turns the calling thread into that network thread.
public final class MQTTProtocol: PubSubProtocol, Sendable {
    public let config: MQTTConfig
    public var logger: Logger { core.logger }
    let core: ClientCore
    private let group: MultiThreadedEventLoopGroup?

    /// `eventLoopGroup`: in `.nonBlocking` mode, run on one of this group's loops (an application's
    /// one group for all its network and timer work) instead of a thread of the client's own; the
    /// group stays the application's to shut down, after the client is disconnected.
    public init(
        config: MQTTConfig, logger: Logger = Logger(label: "communicator.mqtt"), eventLoopGroup: (any EventLoopGroup)? = nil
    ) {
        self.config = config
        let problems = config.problems()
        if !problems.isEmpty {
            for p in problems { logger.error("MQTT configuration: \(p)") }
        }
        let clientID = ClientIdentity.resolve(config.clientID)
        do {
            core = try ClientCore(config: config, clientID: clientID, logger: logger)
            setupError = nil
        } catch {
            logger.error("\(error)")
            var plain = config
            plain.tls = false
            core = try! ClientCore(config: plain, clientID: clientID, logger: logger)
            setupError = error as? any CommunicatorError
        }
        setupProblems = problems
        let own = clientID.isEmpty ? "assigned-" + String(UInt64.random(in: 0...UInt64.max), radix: 36) : clientID
        requester = Requester(responseTopic: config.responseTopic ?? "responses/" + own)
        if config.mode == .nonBlocking {
            let loop: any EventLoop
            if let eventLoopGroup {
                group = nil
                loop = eventLoopGroup.next()
            } else {
                let own = MultiThreadedEventLoopGroup(numberOfThreads: 1)
                group = own
                loop = own.next()
            }
            let core = self.core
            loop.execute { core.attach(loop) }
        } else {
            group = nil
        }
    }

    /// The seed's second initializer: connection parameters directly.
    public convenience init(
        brokerAddress: String, port: Int = 1883, timeout: Double = 60, keepalive: Int = 60,
        mode: MQTTConfig.Mode = .nonBlocking, username: String? = nil, password: String? = nil, caCerts: String? = nil
    ) {
        self.init(
            config: MQTTConfig(
                brokerAddress: brokerAddress, port: port, timeout: timeout, keepalive: keepalive, mode: mode,
                username: username, password: password, caCerts: caCerts))
    }

    /// Why the configuration cannot work (a TLS file that does not load): `connect` throws it.
    private let setupError: (any CommunicatorError)?
    private let requester: Requester
    private let setupProblems: [String]

    deinit {
        group?.shutdownGracefully { _ in }
    }

    /// The client identifier sent in CONNECT.
    public var clientID: String { core.read { $0.clientID } }

    /// What the broker granted in the last CONNACK (keep-alive, Receive Maximum, Maximum Packet
    /// Size, Maximum QoS, ...), nil before the first connection.
    public var connectionInfo: MQTTConnectionInfo? { core.read { $0.connectionInfo } }

    /// The broker of the current connection (or of the last attempt): `brokerAddress:port`, a
    /// failover broker, or where a Server Reference sent the client.
    public var broker: BrokerEndpoint { core.read { $0.broker } }

    /// The connection's current state.
    public var state: ConnectionState { core.read { $0.state } }

    /// State, broker, last error, session, store and counters together, as one moment held them.
    public var snapshot: MQTTClientSnapshot { core.snapshot }

    /// Whether the broker resumed a stored session on the last connect (nil before the first).
    public var sessionPresent: Bool? { core.read { $0.sessionPresent } }

    /// Messages dropped from a full queue under `queueFullPolicy = .dropOldest`.
    public var droppedMessages: Int { core.read { $0.droppedMessages } }

    /// Incoming messages skipped as larger than `maxIncomingPacketSize` (MQTT 3.1.1, which cannot
    /// tell the broker the limit; on 5.0 the broker drops them itself), since this client was made.
    public var droppedIncomingMessages: Int { core.read { $0.droppedIncomingMessages } }

    /// Whether the network thread takes commands: a no-op goes through the same queue as
    /// publishes and must come back within `timeout` seconds (for watchdogs). In blocking mode,
    /// only while `loopForever()` runs.
    public func isResponsive(timeout: Double) -> Bool {
        let done = DispatchSemaphore(value: 0)
        core.submit(.probe({ done.signal() }))
        return done.wait(timeout: .now() + timeout) == .success
    }

    /// Calls `then` once the network thread has taken a no-op through the queue of publishes (for
    /// an application's own watchdog, which gives it the time it allows).
    public func probe(then: @escaping @Sendable () -> Void) {
        core.submit(.probe(then))
    }

    /// Brings the metrics (`MQTTConfig.metricsFactory`) up to date with this moment, then calls
    /// `then` on the network thread: for an exporter that serves a scrape (the counters are
    /// otherwise updated every `metricsInterval`). Without metrics, `then` is simply called; so
    /// it is, at once, when no network thread runs (blocking mode outside `loopForever()`).
    public func reportMetrics(then: @escaping @Sendable () -> Void) {
        guard core.currentLoop != nil else { return then() }
        core.submit(.reportMetrics(then))
    }

    /// The offline store's fill, counters and degraded state (nil without a store).
    public var offlineStoreStatus: OfflineStoreStatus? { core.read { $0.store } }

    /// Why the last connection attempt or connection ended (nil if none has failed).
    public var lastError: (any CommunicatorError)? { core.read { $0.lastError } }

    /// Calls `listener` (on the network thread) on every state change.
    public func onStateChange(_ listener: @escaping @Sendable (ConnectionState) -> Void) {
        core.listeners.add(listener)
    }

    /// Every state change as an async sequence.
    public var stateChanges: AsyncStream<ConnectionState> {
        let (stream, continuation) = AsyncStream<ConnectionState>.makeStream(bufferingPolicy: .bufferingNewest(64))
        let key = core.listeners.add { continuation.yield($0) }
        let core = self.core
        continuation.onTermination = { _ in core.listeners.remove(key) }
        return stream
    }

    // MARK: - Connect / disconnect

    /// Connects and waits for the broker's CONNACK (non-blocking mode). In blocking mode it only
    /// checks the configuration; `loopForever()` then connects on the calling thread.
    public func connect() throws {
        try checkSetup()
        if config.mode == .blocking {
            core.submit(.connect(.none))
            return
        }
        try wait(timeout: config.timeout + .seconds(5)) { done in core.submit(.connect(.done(done))) }
    }

    public func connect() async throws {
        try checkSetup()
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            core.submit(.connect(.done({ c.resume(with: $0) })))
        }
    }

    /// Sends DISCONNECT (so the broker discards the Will) and closes. Waits up to `timeout`.
    public func disconnect() {
        if config.mode == .blocking || isOnNetworkThread {
            core.submit(.disconnect(.none))
            return
        }
        try? wait(timeout: config.timeout) { done in core.submit(.disconnect(.done(done))) }
    }

    public func disconnect() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            core.submit(.disconnect(.done({ _ in c.resume() })))
        }
    }

    // MARK: - Blocking mode

    /// Blocking mode: runs the network on the calling thread until `stopLoop()` or `disconnect()`.
    /// Throws if the first connection attempt fails.
    public func loopForever() throws {
        guard config.mode == .blocking else {
            throw ProtocolValidationError(
                "loopForever() needs mode .blocking; in .nonBlocking mode the network already runs on its own thread", reason: .misuse)
        }
        try checkSetup()
        let failure = NIOLockedValueBox<(any Error)?>(nil)
        let core = self.core
        core.submit(
            .connect(
                .done({ result in
                    if case .failure(let e) = result { failure.withLockedValue { $0 = e } }
                })))
        MultiThreadedEventLoopGroup.withCurrentThreadAsEventLoop { loop in
            core.attach(loop)
            // A failed first connect ends the loop too.
            core.listeners.add { state in
                if case .disconnected = state, failure.withLockedValue({ $0 }) != nil {
                    core.submit(.disconnect(.none))
                }
            }
        }
        if let e = failure.withLockedValue({ $0 }) { throw e }
    }

    /// Ends `loopForever()` after a clean disconnect. Callable from any thread, callbacks included.
    public func stopLoop() {
        core.submit(.disconnect(.none))
    }

    // MARK: - Will

    /// Sets the Will sent with the next CONNECT (call before `connect()`).
    public func setWill(topic: String, payload: String, qos: Int = 1, retain: Bool = false) throws {
        try setWill(topic: topic, payload: Array(payload.utf8), qos: qos, retain: retain)
    }

    public func setWill(topic: String, payload: [UInt8], qos: Int = 1, retain: Bool = false) throws {
        if let p = Topic.nameProblem(topic) { throw ProtocolValidationError("Will \(p)", reason: .invalidArgument) }
        let q = try Self.qos(qos)
        core.submit(.setWill(.init(topic: topic, payload: ByteBuffer(bytes: payload), qos: q, retain: retain)))
    }

    /// Removes the Will for the next CONNECT.
    public func clearWill() { core.submit(.setWill(nil)) }

    // MARK: - Publish

    public func publish(_ topic: String, _ message: String) throws {
        try publish(topic, message, qos: 1, retain: false)
    }

    /// Queues a message and returns; it is sent in order as soon as the connection allows. When
    /// `publishQueueMaxsize` messages are waiting or in flight, waits for room up to `timeout`
    /// (like the seed's `Queue.put`; the async forms suspend instead), except on the network
    /// thread (in a callback) and in blocking mode, where a full queue fails at once. Throws `ProtocolValidationError` for an
    /// invalid topic or QoS, a payload over the maximum packet size, or a queue still full.
    public func publish(_ topic: String, _ payload: String, qos: Int = 1, retain: Bool = false) throws {
        try enqueue(try makePublish(topic, ByteBuffer(string: payload), qos: qos, retain: retain), .none)
    }

    public func publish(_ topic: String, _ payload: [UInt8], qos: Int = 1, retain: Bool = false) throws {
        try enqueue(try makePublish(topic, ByteBuffer(bytes: payload), qos: qos, retain: retain), .none)
    }

    public func publish(_ topic: String, _ payload: ByteBuffer, qos: Int = 1, retain: Bool = false) throws {
        try enqueue(try makePublish(topic, payload, qos: qos, retain: retain), .none)
    }

    /// Publishes and calls `completion` once the message is complete (QoS 0: written; QoS 1:
    /// PUBACK; QoS 2: PUBCOMP) or has failed. The callback runs on the network thread.
    public func publish(
        _ topic: String, _ payload: ByteBuffer, qos: Int = 1, retain: Bool = false,
        completion: @escaping @Sendable (Result<Void, any Error>) -> Void
    ) throws {
        try enqueue(try makePublish(topic, payload, qos: qos, retain: retain), .done(completion))
    }

    /// Publishes with MQTT 5.0 properties (response topic, correlation data, user properties,
    /// content type, ...); on 3.1.1 the properties are not sent.
    public func publish(
        _ topic: String, _ payload: ByteBuffer, qos: Int = 1, retain: Bool = false, properties: MQTTProperties,
        completion: (@Sendable (Result<Void, any Error>) -> Void)? = nil
    ) throws {
        try enqueue(
            try makePublish(topic, payload, qos: qos, retain: retain, properties: properties), completion.map { .done($0) } ?? .none)
    }

    /// Queues the message like `publish(_:_:qos:retain:properties:completion:)`, but with
    /// `waitForRoom: false` never waits for room: a full queue (`publishQueueMaxsize`) throws
    /// `.queueFull` at once, wherever it is called. For code that must not hold up its thread: an
    /// event loop's, or a task on Swift's cooperative pool (the agent's event sources).
    public func publish(
        _ topic: String, _ payload: ByteBuffer, qos: Int = 1, retain: Bool = false, properties: MQTTProperties? = nil,
        waitForRoom: Bool, completion: (@Sendable (Result<Void, any Error>) -> Void)? = nil
    ) throws {
        try enqueue(
            try makePublish(topic, payload, qos: qos, retain: retain, properties: properties), completion.map { .done($0) } ?? .none,
            wait: waitForRoom)
    }

    /// Publishes with 5.0 properties and waits until the message is complete.
    public func publish(_ topic: String, _ payload: ByteBuffer, qos: Int = 1, retain: Bool = false, properties: MQTTProperties) async throws
    {
        let p = try makePublish(topic, payload, qos: qos, retain: retain, properties: properties)
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            enqueueSuspending(p, c)
        }
    }

    /// Publishes and waits until the message is complete (see `publish(_:_:qos:retain:completion:)`).
    public func publish(_ topic: String, _ payload: String, qos: Int = 1, retain: Bool = false) async throws {
        try await publish(topic, ByteBuffer(string: payload), qos: qos, retain: retain)
    }

    public func publish(_ topic: String, _ payload: [UInt8], qos: Int = 1, retain: Bool = false) async throws {
        try await publish(topic, ByteBuffer(bytes: payload), qos: qos, retain: retain)
    }

    public func publish(_ topic: String, _ payload: ByteBuffer, qos: Int = 1, retain: Bool = false) async throws {
        let p = try makePublish(topic, payload, qos: qos, retain: retain)
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            enqueueSuspending(p, c)
        }
    }

    /// The async forms: checked like a plain publish, then, if the queue is full, suspended (no
    /// thread waits) until room comes or `timeout` has passed.
    private func enqueueSuspending(_ p: MQTTPacket.Publish, _ c: CheckedContinuation<Void, any Error>) {
        do { try enqueue(p, .done({ c.resume(with: $0) }), wait: false) } catch let e as ProtocolValidationError
            where e.reason == .queueFull
        {
            guard canWaitForRoom else { return c.resume(throwing: e) }
            let timedOut = queueFull(p.topic, waited: true)
            core.submitPublish(p, .done({ c.resume(with: $0) }), waitingUpTo: config.timeout) { c.resume(throwing: timedOut) }
        } catch {
            c.resume(throwing: error)
        }
    }

    /// `wait`: a plain publish waits for room in a full queue, off the network thread.
    private func enqueue(_ p: MQTTPacket.Publish, _ completion: Completion, wait: Bool = true) throws {
        if p.qos == .atMostOnce && !config.queueQoS0WhileDisconnected && state != .connected {
            throw ProtocolConnectionError(
                "not connected (\(state)): QoS 0 message on \"\(p.topic)\" not sent; use QoS 1/2 or queue_qos0_while_disconnected to keep it",
                reason: .notConnected)
        }
        if p.qos != .atMostOnce && core.read({ $0.storeRefusing }) {
            throw ProtocolValidationError(
                "message on \"\(p.topic)\" refused: the offline store is full and when_full is reject_newest; nothing was stored",
                reason: .storeFull)
        }
        // Off the network thread a full queue is waited on, up to `timeout` (the seed's Queue.put);
        // the network thread makes the room, so there (in a callback) it fails at once.
        if core.submitPublish(p, completion) { return }  // the common case: room, no further question
        let canWait = wait && canWaitForRoom
        guard canWait && core.submitPublish(p, completion, waitingUpTo: config.timeout) else { throw queueFull(p.topic, waited: canWait) }
    }

    /// Whether a publish made here may wait for room: not on the network thread (which makes the
    /// room), not in blocking mode, and only when a full queue refuses (not under drop-oldest).
    private var canWaitForRoom: Bool { config.mode == .nonBlocking && !isOnNetworkThread && config.queueFullPolicy == .reject }

    private func queueFull(_ topic: String, waited: Bool) -> ProtocolValidationError {
        ProtocolValidationError(
            "publish queue is full: \(config.publishQueueMaxsize) messages are waiting or in flight (publish_queue_maxsize)"
                + (waited ? ", and none completed within \(config.timeout.inSeconds) s (timeout)" : "")
                + "; message on \"\(topic)\" refused",
            reason: .queueFull)
    }

    private func makePublish(
        _ topic: String, _ payload: ByteBuffer, qos: Int, retain: Bool, properties: MQTTProperties? = nil
    ) throws -> MQTTPacket.Publish {
        if let p = Topic.nameProblem(topic) { throw ProtocolValidationError("cannot publish: \(p)", reason: .invalidArgument) }
        let q = try Self.qos(qos)
        var p = MQTTPacket.Publish(topic: topic, payload: payload, qos: q, retain: retain)
        if let properties, config.protocolVersion == .v5_0 {
            if let problem = Self.publishPropertyProblem(properties) {
                throw ProtocolValidationError("cannot publish on \"\(topic)\": \(problem)", reason: .invalidArgument)
            }
            p.properties = properties
        }
        // Fixed header (≤ 5) + topic + packet id + properties + payload.
        let size = MQTTPacket.publish(p).encodedSize(version: config.protocolVersion) + 2
        if size > config.maxPacketSize {
            throw ProtocolValidationError(
                "message on \"\(topic)\" is \(size) bytes, over max_packet_size \(config.maxPacketSize): send a smaller payload or raise the limit",
                reason: .invalidArgument)
        }
        // The broker's own Maximum Packet Size (5.0 CONNACK): refused here, the connection stays
        // up [MQTT-3.1.2-24: the client must not send a larger packet].
        if let brokerMax = connectionInfo?.maximumPacketSize, size > brokerMax {
            throw ProtocolValidationError(
                "message on \"\(topic)\" is \(size) bytes, over the broker's Maximum Packet Size \(brokerMax) (CONNACK): send a smaller payload",
                reason: .brokerLimit)
        }
        return p
    }

    /// Properties a client may not set on PUBLISH, or values the standard forbids.
    static func publishPropertyProblem(_ p: MQTTProperties) -> String? {
        if p.messageExpiryInterval == 0 { return "message_expiry_interval 0 would expire at once: leave it unset for no expiry" }
        if p.topicAlias != nil { return "topic aliases are chosen by the client itself (outgoingTopicAliases)" }
        if !p.subscriptionIdentifiers.isEmpty { return "a client may not send Subscription Identifiers on PUBLISH [MQTT-3.3.4-6]" }
        if let t = p.responseTopic, let problem = Topic.nameProblem(t) { return "response topic: \(problem) [MQTT-3.3.2-14]" }
        if let f = p.payloadFormatIndicator, f > 1 { return "payload format indicator must be 0 (bytes) or 1 (UTF-8), not \(f)" }
        return nil
    }

    static func qos(_ qos: Int) throws -> QoS {
        guard let q = QoS(rawValue: UInt8(clamping: max(qos, 0))), (0...2).contains(qos) else {
            throw ProtocolValidationError("QoS \(qos) is out of range: use 0, 1 or 2", reason: .invalidArgument)
        }
        return q
    }

    // MARK: - Enhanced authentication

    /// Starts a 5.0 re-authentication (AUTH 0x19) with the configured authenticator, e.g. before
    /// a token expires. Returns once the AUTH is on its way; the exchange completes in the
    /// background (logged). If the broker refuses it, it disconnects, and the client reconnects.
    public func reauthenticate() throws {
        try wait(timeout: config.timeout) { done in core.submit(.reauthenticate(.done(done))) }
    }

    public func reauthenticate() async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            core.submit(.reauthenticate(.done({ c.resume(with: $0) })))
        }
    }

    // MARK: - Request / response

    /// Sends a request (5.0 §4.10) and waits for its response: the message goes to `topic` with a
    /// Response Topic (`responses/<client id>` unless `responseTopic` is given) and fresh
    /// Correlation Data; the first message on the response topic with the same correlation data
    /// is returned. Throws `ProtocolConnectionError` when none arrives within `timeout` seconds.
    public func request(
        _ topic: String, _ payload: ByteBuffer, qos: Int = 1, timeout: Double = 10, properties: MQTTProperties = .init()
    ) async throws -> MQTTMessage {
        try await requester.request(on: self, topic: topic, payload: payload, qos: qos, timeout: timeout, properties: properties)
    }

    public func request(_ topic: String, _ payload: String, qos: Int = 1, timeout: Double = 10) async throws -> MQTTMessage {
        try await request(topic, ByteBuffer(string: payload), qos: qos, timeout: timeout)
    }

    // MARK: - Subscribe

    /// Subscribes at QoS 1 (the seed's default) and calls `callback(topic, payload)` for each
    /// message matching `topic`. Waits for the SUBACK when connected (non-blocking mode, off the
    /// network thread); otherwise the subscription is sent once the connection is up.
    public func subscribe(_ topic: String, callback: @escaping @Sendable (String, String) -> Void) throws {
        try subscribe(topic, qos: 1, callback: callback)
    }

    public func subscribe(_ topic: String, qos: Int, callback: @escaping @Sendable (String, String) -> Void) throws {
        try subscribe(topic, qos: qos, onMessage: { callback($0.topic, $0.string) })
    }

    /// Subscribes with a callback that receives the whole message (bytes, QoS, retain, and the
    /// 5.0 properties: user properties, content type, response topic, correlation data, ...).
    /// `topic` may be a shared subscription, `$share/<group>/<filter>` (5.0): the broker hands each
    /// message to one member of the group.
    public func subscribe(
        _ topic: String, qos: Int = 1, options: SubscribeOptions = .init(), onMessage: @escaping @Sendable (MQTTMessage) -> Void
    ) throws {
        let q = try validateFilter(topic, qos, options)
        if config.mode == .blocking || isOnNetworkThread || state != .connected {
            core.submit(.subscribe([(topic, q, options, onMessage)], .none))
            return
        }
        try wait(timeout: config.timeout) { done in
            core.submit(.subscribe([(topic, q, options, onMessage)], .granted(filters: [topic], { done($0.map { _ in () }) })))
        }
    }

    public func subscribe(_ topic: String, qos: Int = 1, callback: @escaping @Sendable (String, String) -> Void) async throws {
        try await subscribe(topic, qos: qos, onMessage: { callback($0.topic, $0.string) })
    }

    public func subscribe(
        _ topic: String, qos: Int = 1, options: SubscribeOptions = .init(), onMessage: @escaping @Sendable (MQTTMessage) -> Void
    ) async throws {
        let q = try validateFilter(topic, qos, options)
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            core.submit(.subscribe([(topic, q, options, onMessage)], .granted(filters: [topic], { c.resume(with: $0.map { _ in () }) })))
        }
    }

    private func validateFilter(_ topic: String, _ qos: Int, _ options: SubscribeOptions = .init()) throws -> QoS {
        if let p = Topic.filterProblem(topic) { throw ProtocolValidationError("cannot subscribe: \(p)", reason: .invalidArgument) }
        if options.noLocal && topic.hasPrefix("$share/") {
            // [MQTT-3.8.3-4] No Local on a shared subscription is a protocol error.
            throw ProtocolValidationError(
                "cannot subscribe to \"\(topic)\" with no_local: a shared subscription may not set No Local [MQTT-3.8.3-4]",
                reason: .invalidArgument)
        }
        if topic.hasPrefix("$share/") && config.protocolVersion == .v3_1_1 {
            throw ProtocolValidationError(
                "cannot subscribe to \"\(topic)\": shared subscriptions need MQTT 5.0 (protocol_version)", reason: .invalidArgument)
        }
        return try Self.qos(qos)
    }

    /// Stops delivery for `topic` at once and sends UNSUBSCRIBE.
    public func unsubscribe(_ topic: String) throws {
        if let p = Topic.filterProblem(topic) { throw ProtocolValidationError("cannot unsubscribe: \(p)", reason: .invalidArgument) }
        if config.mode == .blocking || isOnNetworkThread || state != .connected {
            core.submit(.unsubscribe([topic], .none))
            return
        }
        try wait(timeout: config.timeout) { done in core.submit(.unsubscribe([topic], .done(done))) }
    }

    public func unsubscribe(_ topic: String) async throws {
        if let p = Topic.filterProblem(topic) { throw ProtocolValidationError("cannot unsubscribe: \(p)", reason: .invalidArgument) }
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            core.submit(.unsubscribe([topic], .done({ c.resume(with: $0) })))
        }
    }

    // MARK: - Helpers

    private var isOnNetworkThread: Bool { core.currentLoop?.inEventLoop ?? false }

    private func checkSetup() throws {
        if let first = setupProblems.first {
            throw ProtocolValidationError(
                "invalid MQTT configuration: " + first + (setupProblems.count > 1 ? " (and \(setupProblems.count - 1) more)" : ""),
                reason: .invalidArgument)
        }
        if let setupError { throw setupError }
    }

    /// Runs `start` and blocks the calling thread until its callback fires or `timeout` passes.
    private func wait(timeout: Duration, _ start: (@escaping @Sendable (Result<Void, any Error>) -> Void) -> Void) throws {
        if isOnNetworkThread {
            throw ProtocolValidationError(
                "a blocking call was made on the network thread (inside a callback): use the async form", reason: .misuse)
        }
        let semaphore = DispatchSemaphore(value: 0)
        let result = NIOLockedValueBox<Result<Void, any Error>?>(nil)
        start { r in
            result.withLockedValue { $0 = r }
            semaphore.signal()
        }
        if semaphore.wait(timeout: .now() + timeout.inSeconds) == .timedOut {
            throw ProtocolConnectionError("no result within \(timeout.inSeconds) s (timeout)", reason: .timeout)
        }
        try result.withLockedValue { $0 }!.get()
    }
}

/// Resolves `MQTTConfig.ClientID` to the identifier sent in CONNECT.
enum ClientIdentity {
    private static let used = NIOLockedValueBox<[String: Int]>([:])

    static func resolve(_ id: MQTTConfig.ClientID) -> String {
        switch id {
        case .fixed(let s): return s
        case .brokerAssigned: return ""
        case .random: return "edge-" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        case .stable:
            let base = "\(programName())-\(machineHash())"
            let n = used.withLockedValue { counts -> Int in
                counts[base, default: 0] += 1
                return counts[base]!
            }
            // [MQTT-3.1.3-5] 23 characters of [0-9a-zA-Z] are always accepted; brokers accept longer.
            return n == 1 ? base : "\(base)-\(n)"
        }
    }

    private static func programName() -> String {
        let arg0 = CommandLine.arguments.first ?? "mqtt"
        let name = arg0.split(separator: "/").last.map(String.init) ?? "mqtt"
        let cleaned = String(
            name.unicodeScalars.filter { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-") })
        return cleaned.isEmpty ? "mqtt" : String(cleaned.prefix(24))
    }

    /// FNV-1a of /etc/machine-id (or the host name): stable per machine, reveals nothing.
    private static func machineHash() -> String {
        var text = readFile("/etc/machine-id") ?? ""
        if text.isEmpty {
            var buf = [CChar](repeating: 0, count: 256)
            if gethostname(&buf, 255) == 0 { text = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        }
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in text.utf8 {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        let s = String(h, radix: 16)
        return String(repeating: "0", count: max(0, 12 - s.count)) + s.prefix(12)
    }

    private static func readFile(_ path: String) -> String? {
        guard let f = fopen(path, "r") else { return nil }
        defer { fclose(f) }
        var buf = [CChar](repeating: 0, count: 128)
        guard fgets(&buf, 128, f) != nil else { return nil }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            .trimmingCharacters(in: " \n\t")
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
