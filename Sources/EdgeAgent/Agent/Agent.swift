import Communicator
import DeviceAdapters
import Dispatch
import FoundationEssentials
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The agent: configuration → sources → events → MQTT, with the device status (retained
/// `online`, Will `offline`), the retained info document and the status LED.
public final class Agent: @unchecked Sendable {
    public let config: AgentConfig
    let logger: Logger
    let mqtt: MQTTProtocol
    let pipeline: EventPipeline
    let sources: [EventSource]
    let player: LightPlayer?
    let startedAt = Date()
    let startedUptime = ProcessInfo.processInfo.systemUptime
    private let state = NIOLockedValueBox<
        (current: AgentState, connectedSince: Date?, reconnects: Int, everConnected: Bool, stopping: Bool)
    >(
        (.connecting, nil, 0, false, false))
    private let wake = Condition()
    private var infoTimer: RepeatedTask?  // touched on infoQueue only
    private let infoQueue = DispatchQueue(label: "edge-agent.info")
    /// Where the agent's timers run: NIO's scheduled tasks, on the monotonic clock, on one thread
    /// for the process. (Dispatch's timers arm absolute timerfds, which libfaketime shifts when the
    /// wall clock is stepped, so tests could not show them right; NIO's are relative.)
    static let timerGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let timers: EventLoop = Agent.timerGroup.next()
    /// Settings a command may change while running.
    struct Runtime {
        var infoInterval: Double
        var patterns: [AgentState: LightPattern]
        /// A pattern set by `led/set` and when it ends.
        var ledOverride: (pattern: LightPattern, until: NIODeadline)?
        var sourceRunning: [String: Bool] = [:]
    }
    let runtime: NIOLockedValueBox<Runtime>
    /// The configuration as last validated (changed by `config/set`).
    let effective: NIOLockedValueBox<AgentConfig>
    /// The configuration file (for `config/set`), if the agent was started from one.
    public let configPath: String?
    /// Called when a command asks for a restart (`agent/restart`) or a reboot.
    public var onExitRequest: (@Sendable (Int32) -> Void)?
    var commands: CommandServer?
    let notifier = SystemdNotifier()
    private let readySent = NIOLockedValueBox(false)

    public var currentState: AgentState { state.withLockedValue { $0.current } }

    /// The exit code of `agent/restart`: systemd's Restart=on-failure starts the agent again.
    public static let restartExitCode: Int32 = 3

    /// Builds everything; throws (with every reason) when the agent cannot run as configured.
    public init(config: AgentConfig, logger: Logger, configPath: String? = nil) throws {
        self.config = config
        self.logger = logger
        self.configPath = configPath
        runtime = NIOLockedValueBox(Runtime(infoInterval: config.infoInterval, patterns: config.led.patterns))
        effective = NIOLockedValueBox(config)
        var mqttLogger = logger
        mqttLogger[metadataKey: "part"] = "mqtt"
        mqtt = MQTTProtocol(config: config.mqttConfig(), logger: mqttLogger)
        let sequence = try SequenceCounter(directory: config.stateDirectory)
        if let recovery = sequence.recovery { logger.error("\(recovery)") }
        pipeline = EventPipeline(
            mqtt: mqtt, topic: config.topic(config.topics.events), qos: config.eventsQoS, deviceID: config.deviceID,
            sequence: sequence, logger: logger)
        // The LED: a missing chip or line is logged and the agent goes on without it, unless required.
        var player: LightPlayer?
        if config.led.enabled {
            do {
                let light: StatusLight =
                    config.led.driver == .gpiod
                    ? try GPIOLight(chip: config.led.chip, line: UInt32(config.led.line), activeLow: config.led.activeLow)
                    : SimulatedLight(logPath: config.led.simulatedLog)
                let l = logger
                player = LightPlayer(light: light) { l.warning("status LED: \($0)") }
                logger.info("status LED: \(light.name)\(config.led.driver == .gpiod ? " (\(GPIOLight.libraryVersion))" : "")")
            } catch {
                if config.led.required { throw AgentError("status LED required (led.required) but \(error)") }
                logger.error("status LED unavailable, going on without it: \(error)")
            }
        }
        self.player = player
        var built: [EventSource] = []
        for s in config.sources {
            let l = logger
            switch s.type {
            case .simulated:
                built.append(
                    SimulatedCamera(name: s.name, rate: s.rate, labels: s.labels.isEmpty ? ["person", "car", "bicycle", "dog"] : s.labels))
            case .socket:
                built.append(
                    SocketSource(
                        name: s.name, path: s.path, maxLineBytes: s.maxLineBytes, maxConnections: s.maxConnections,
                        maxLinesPerSecond: s.maxLinesPerSecond
                    ) { l.warning("\($0)") })
            case .v4l2: built.append(V4L2Watcher(name: s.name, directory: s.directory, sysfs: s.sysfs, pollInterval: s.pollInterval))
            case .directory: built.append(DirectoryWatcher(name: s.name, path: s.path, maxHashBytes: s.maxHashBytes))
            }
        }
        sources = built
        if config.commands.enabled { commands = CommandServer(agent: self) }
    }

    // MARK: - Lifecycle

    /// Starts the LED, the MQTT session (in the background: a broker that is down at boot is
    /// retried for ever), the sources and the info timer.
    public func start() throws {
        setState(.connecting)
        try mqtt.setWill(topic: config.topic(config.topics.status), payload: "offline", qos: 1, retain: true)
        mqtt.onStateChange { [weak self] s in self?.connectionChanged(s) }
        for s in sources {
            do { try startSource(s) } catch {
                stopSources()
                throw AgentError("source \(s.name) cannot start: \(error)")
            }
        }
        try commands?.start()
        // The first connect in the background. After it, and after every failure, the client
        // keeps trying by itself (keepConnecting, max_reconnect_attempts 0): a broker that is
        // down at boot, or a password the broker refuses until someone fixes it, is retried.
        Task { [self] in
            do { try await mqtt.connect() } catch {
                logger.warning("cannot connect to \(config.mqtt.host):\(config.mqtt.port): \(error); trying again with back-off")
            }
            sendReady()
        }
        scheduleInfo(every: config.infoInterval)
    }

    func scheduleInfo(every seconds: Double) {
        infoQueue.async { [self] in
            infoTimer?.cancel()
            let every = TimeAmount.nanoseconds(Int64(seconds * 1e9))
            infoTimer = timers.scheduleRepeatedTask(initialDelay: every, delay: every) { [weak self] _ in
                guard let self else { return }
                infoQueue.async { self.publishInfo() }
            }
        }
    }

    func startSource(_ s: EventSource) throws {
        let pipeline = self.pipeline
        try s.start { [unowned s] event in pipeline.publish(event, from: s) }
        runtime.withLockedValue { $0.sourceRunning[s.name] = true }
        logger.info("source \(s.name) (\(s.kind)) started")
    }

    func stopSource(_ s: EventSource) {
        s.stop()
        runtime.withLockedValue { $0.sourceRunning[s.name] = false }
        logger.info("source \(s.name) (\(s.kind)) stopped")
    }

    /// `led/set`: a pattern for `seconds` (nil: back to the agent's state).
    func overrideLED(_ pattern: LightPattern?, seconds: Double) {
        runtime.withLockedValue { $0.ledOverride = pattern.map { ($0, NIODeadline.now() + .nanoseconds(Int64(seconds * 1e9))) } }
        refreshLED()
        if pattern != nil {
            timers.scheduleTask(in: .nanoseconds(Int64((seconds + 0.01) * 1e9))) { [weak self] in self?.refreshLED() }
        }
    }

    func refreshLED() {
        guard let player else { return }
        let (r, s) = (runtime.withLockedValue { $0 }, currentState)
        if let o = r.ledOverride, o.until > .now() { player.play(o.pattern) } else if let p = r.patterns[s] { player.play(p) }
    }

    var ledDescription: String? { player.map { "\($0.light.name): \($0.current)" } }

    /// READY=1 after the first connection attempt, whatever its outcome: the agent is up and
    /// buffering; a broker that is down is not a failed start.
    private func sendReady() {
        guard
            readySent.withLockedValue({ r in
                defer { r = true }
                return !r
            }), notifier.isActive
        else { return }
        notifier.notify("READY=1\nSTATUS=\(currentState.rawValue)")
        logger.info("systemd: READY")
        if let interval = notifier.watchdogInterval { startWatchdog(every: interval) }
    }

    /// WATCHDOG=1 every half `WatchdogSec`, only while the MQTT client's thread takes commands
    /// (through the same queue as publishes) and the agent's own queue runs: a stuck agent stops
    /// feeding the watchdog and systemd restarts it.
    private func startWatchdog(every interval: Double) {
        let t = BackgroundThread(name: "edge-agent-watchdog") { [weak self] in
            while let self, !self.state.withLockedValue({ $0.stopping }) {
                let budget = max(0.05, interval / 2)
                let loopOK = mqtt.isResponsive(timeout: budget)
                let queueOK = DispatchSemaphore(value: 0)
                infoQueue.async { queueOK.signal() }
                let agentOK = queueOK.wait(timeout: .now() + budget) == .success
                if loopOK && agentOK {
                    notifier.notify("WATCHDOG=1")
                } else {
                    logger.error(
                        "watchdog not fed: \(loopOK ? "" : "the MQTT thread did not answer within \(budget) s; ")\(agentOK ? "" : "the agent's queue is stuck")"
                    )
                }
                wake.lock()
                _ = wake.wait(seconds: interval)
                wake.unlock()
            }
        }
        t.start()
    }

    private func connectionChanged(_ s: ConnectionState) {
        switch s {
        case .connected:
            let first = state.withLockedValue { st -> Bool in
                let first = !st.everConnected
                if st.everConnected { st.reconnects += 1 }
                st.everConnected = true
                st.connectedSince = Date()
                return first
            }
            setState(.connected)
            logger.info("\(first ? "connected" : "reconnected") to \(config.mqtt.host):\(config.mqtt.port) as \(mqtt.clientID)")
            do { try mqtt.publish(config.topic(config.topics.status), "online", qos: 1, retain: true) } catch {
                logger.error("status online not published: \(error)")
            }
            infoQueue.async { [weak self] in self?.publishInfo() }
        case .connecting:
            if currentState != .offline && currentState != .error { setState(.connecting) }
        case .reconnecting, .disconnected:
            state.withLockedValue { $0.connectedSince = nil }
            if state.withLockedValue({ $0.stopping }) { return }
            setState(mqtt.lastError is ProtocolAuthenticationError ? .error : .offline)
        case .idle:
            break
        }
    }

    private func setState(_ s: AgentState) {
        let changed = state.withLockedValue { st -> Bool in
            guard st.current != s else { return false }
            st.current = s
            return true
        }
        refreshLED()
        if changed {
            logger.info("state: \(s.rawValue)")
            notifier.notify("STATUS=\(s.rawValue)")
        }
    }

    /// A clean stop: sources first, then the retained `offline` (a clean DISCONNECT suppresses
    /// the Will, so the agent says it itself), then DISCONNECT; the LED goes off.
    public func stop() {
        guard
            state.withLockedValue({ st in
                defer { st.stopping = true }
                return !st.stopping
            })
        else { return }
        notifier.notify("STOPPING=1")
        wake.lock()
        wake.broadcast()
        wake.unlock()
        infoQueue.sync { infoTimer?.cancel() }
        stopSources()
        do { try pipeline.sequence.close() } catch { logger.warning("event sequence not saved: \(error)") }
        if mqtt.state == .connected {
            let done = DispatchSemaphore(value: 0)
            do {
                try mqtt.publish(config.topic(config.topics.status), ByteBuffer(string: "offline"), qos: 1, retain: true) { _ in
                    done.signal()
                }
                if done.wait(timeout: .now() + 3) == .timedOut { logger.warning("status offline not acknowledged within 3 s") }
            } catch {
                logger.warning("status offline not published: \(error)")
            }
        }
        mqtt.disconnect()
        commands?.recent.flush()
        setState(.stopped)
        player?.stop()
        logger.info("stopped")
    }

    private func stopSources() {
        for s in sources where runtime.withLockedValue({ $0.sourceRunning[s.name] ?? false }) { stopSource(s) }
    }

    // MARK: - Info document

    struct Info: Encodable {
        struct Connection: Encodable {
            var broker: String
            var state: String
            var connected_since: String?
            var reconnects: Int
            var last_error: String?
            var client_id: String
            /// Commands over mqtt.max_incoming_packet_size skipped unread (3.1.1).
            var dropped_incoming: Int
        }
        struct Buffer: Encodable {
            var pending: Int
            var fill: Double
            var dropped: Int
            var corrupt_skipped: Int
            /// Refused by a broker for a reason of its own; kept, tried after the next connect.
            var held: Int
            var degraded: String?
        }
        struct Source: Encodable {
            var name: String
            var type: String
            var counters: [String: Int]
        }
        struct Events: Encodable {
            var published: Int
            var failed: Int
            var last_seq: UInt64
        }
        var device_id: String
        var version: String
        var state: String
        var started_at: String
        var uptime_s: Int
        var connection: Connection
        var buffer: Buffer?
        var sources: [Source]
        var events: Events
        var led: String?
        var commands: [String: Int]?
    }

    func info() -> Info {
        let st = state.withLockedValue { $0 }
        let store = mqtt.offlineStoreStatus
        let ev = pipeline.figures
        return Info(
            device_id: config.deviceID, version: EdgeAgentVersion.current, state: st.current.rawValue,
            started_at: EventPipeline.timestamp(startedAt), uptime_s: Int(ProcessInfo.processInfo.systemUptime - startedUptime),
            connection: .init(
                broker: mqtt.broker.description, state: "\(mqtt.state)", connected_since: st.connectedSince.map(EventPipeline.timestamp),
                reconnects: st.reconnects, last_error: mqtt.lastError?.message, client_id: mqtt.clientID,
                dropped_incoming: mqtt.droppedIncomingMessages),
            buffer: store.map {
                .init(
                    pending: $0.pending, fill: ($0.fill * 1000).rounded() / 1000, dropped: $0.dropped, corrupt_skipped: $0.corruptSkipped,
                    held: $0.held, degraded: $0.degraded)
            },
            sources: sources.map { s in
                var c = s.counters
                if runtime.withLockedValue({ $0.sourceRunning[s.name] }) == false { c["disabled"] = 1 }
                return .init(name: s.name, type: s.kind, counters: c)
            },
            events: .init(published: ev.published, failed: ev.failed, last_seq: ev.lastSeq),
            led: ledDescription, commands: commands?.counters)
    }

    public func infoJSON() -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? e.encode(info())).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    func publishInfo() {
        guard mqtt.state == .connected else { return }
        do { try mqtt.publish(config.topic(config.topics.info), infoJSON(), qos: 1, retain: true) } catch {
            logger.warning("info not published: \(error)")
        }
    }
}
