import Communicator
import DeviceAdapters
import FoundationEssentials
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// What the agent's services share: the configuration, the MQTT client, the event pipeline, the
/// status LED, the agent's state and what commands may change while it runs. The services
/// (`Sources/EdgeAgent/Runtime`) own the running: `AgentRuntime` builds them around one `Agent`.
public final class Agent: Sendable {
    public let config: AgentConfig
    let logger: Logger
    let mqtt: MQTTProtocol
    let pipeline: EventPipeline
    let sources: [SourceService]
    let player: LightPlayer?
    let startedAt = Date()
    let startedUptime = ProcessInfo.processInfo.systemUptime
    /// The agent's event loop (the one group's) and the pool for blocking work.
    let loop: any EventLoop
    let threadPool: NIOThreadPool
    private let state = NIOLockedValueBox<
        (current: AgentState, connectedSince: Date?, reconnects: Int, everConnected: Bool, stopping: Bool)
    >(
        (.connecting, nil, 0, false, false))
    /// What the LED shows, as commands may change it while running (`config/set`, `led/set`).
    struct LEDChoice {
        var patterns: [AgentState: LightPattern]
        /// A pattern set by `led/set` and when it ends.
        var override: (pattern: LightPattern, until: NIODeadline)?
    }
    let ledChoice: NIOLockedValueBox<LEDChoice>
    /// The configuration as last validated (changed by `config/set`).
    let effective: NIOLockedValueBox<AgentConfig>
    /// The configuration file (for `config/set`), if the agent was started from one.
    public let configPath: String?
    /// Answers by command (`unknown` for a name that is none) and result code (`ok`,
    /// `forbidden`, ...), for the info document and the metrics.
    let commandCounts = NIOLockedValueBox<[String: [String: Int]]>([:])
    let notifier = SystemdNotifier()
    private let readySent = NIOLockedValueBox(false)
    /// The exit code asked for (`agent/restart`) and how to stop the service group.
    private let exit = NIOLockedValueBox<(code: Int32, stop: (@Sendable () -> Void)?)>((0, nil))
    /// The info document's timer (started by `InfoService`, rescheduled by `config/set`).
    let infoTimer: InfoPublisher
    /// The Prometheus registry of the agent and its client, and the agent's series (nil: metrics
    /// off). Each agent has its own (no process-wide bootstrap: tests run several agents).
    let export: PrometheusExport?
    let metrics: AgentMetrics?
    /// What `UpdateService` reports (nil: updates are off).
    let updateStatus = NIOLockedValueBox<UpdateStatus?>(nil)
    /// The installed package's version (the package's `/usr/share/edge-agent/version`), else the
    /// binary's: the version updates are compared with and the helper installs.
    let packageVersion: String

    public var currentState: AgentState { state.withLockedValue { $0.current } }

    /// The exit code of `agent/restart`: systemd's Restart=on-failure starts the agent again.
    public static let restartExitCode: Int32 = 3

    /// Builds everything on `loop` (the MQTT client runs on `group`, of which `loop` is one);
    /// throws (with every reason) when the agent cannot run as configured.
    public init(
        config: AgentConfig, logger: Logger, configPath: String? = nil, group: any EventLoopGroup, threadPool: NIOThreadPool
    ) throws {
        self.config = config
        self.logger = logger
        self.configPath = configPath
        packageVersion = EdgeAgentVersion.installedPackage ?? EdgeAgentVersion.current
        let loop = group.next()
        self.loop = loop
        self.threadPool = threadPool
        ledChoice = NIOLockedValueBox(LEDChoice(patterns: config.led.patterns))
        effective = NIOLockedValueBox(config)
        var mqttLogger = logger
        mqttLogger[metadataKey: "part"] = "mqtt"
        let export = config.metrics.enabled ? PrometheusExport() : nil
        self.export = export
        metrics = export.map { AgentMetrics(factory: $0) }
        var mqttConfig = config.mqttConfig()
        mqttConfig.metricsFactory = export
        mqtt = MQTTProtocol(config: mqttConfig, logger: mqttLogger, eventLoopGroup: group)
        let sequence = try SequenceCounter(directory: config.stateDirectory)
        if let recovery = sequence.recovery { logger.error("\(recovery)") }
        let pipeline = EventPipeline(
            mqtt: mqtt, topic: config.topic(config.topics.events), snapshotTopic: config.topic(config.topics.snapshot),
            qos: config.eventsQoS, deviceID: config.deviceID, sequence: sequence, logger: logger)
        self.pipeline = pipeline
        // The LED: a missing chip or line is logged and the agent goes on without it, unless required.
        var player: LightPlayer?
        if config.led.enabled {
            do {
                let light: any StatusLight =
                    config.led.driver == .gpiod
                    ? try GPIOLight(chip: config.led.chip, line: UInt32(config.led.line), activeLow: config.led.activeLow)
                    : SimulatedLight(logPath: config.led.simulatedLog)
                let l = logger
                player = LightPlayer(light: light, loop: loop) { l.warning("status LED: \($0)") }
                logger.info("status LED: \(light.name)\(config.led.driver == .gpiod ? " (\(GPIOLight.libraryVersion))" : "")")
            } catch {
                if config.led.required { throw AgentError("status LED required (led.required) but \(error)") }
                logger.error("status LED unavailable, going on without it: \(error)")
            }
        }
        self.player = player
        let restart = (
            initial: TimeAmount(seconds: config.sourceRestart.initialDelay), max: TimeAmount(seconds: config.sourceRestart.maxDelay)
        )
        sources = config.sources.map { s in
            let l = logger
            let source: any EventSource
            switch s.type {
            case .simulated:
                source = SimulatedCamera(
                    name: s.name, rate: s.rate, labels: s.labels.isEmpty ? ["person", "car", "bicycle", "dog"] : s.labels)
            case .socket:
                source = SocketSource(
                    name: s.name, path: s.path, maxLineBytes: s.maxLineBytes, maxConnections: s.maxConnections,
                    maxLinesPerSecond: s.maxLinesPerSecond
                ) { l.warning("\($0)") }
            case .v4l2: source = V4L2Watcher(name: s.name, directory: s.directory, sysfs: s.sysfs, pollInterval: s.pollInterval)
            case .directory:
                source = DirectoryWatcher(name: s.name, path: s.path, maxHashBytes: s.maxHashBytes, maxImageBytes: s.maxImageBytes)
            }
            return SourceService(source: source, loop: loop, threadPool: threadPool, restart: restart, logger: logger) { [source] event in
                pipeline.publish(event, from: source)
            }
        }
        infoTimer = InfoPublisher(loop: loop)
    }

    // MARK: - Stopping

    /// Stops the service group, exiting with `code` (`agent/restart`).
    func requestExit(_ code: Int32) {
        let stop = exit.withLockedValue { e -> (@Sendable () -> Void)? in
            e.code = code
            return e.stop
        }
        stop?()
    }

    /// How `requestExit` stops the service group (set by `AgentRuntime`).
    func onExitRequest(_ stop: @escaping @Sendable () -> Void) { exit.withLockedValue { $0.stop = stop } }

    /// The exit code the run ends with (0 unless a restart was asked for).
    var exitCode: Int32 { exit.withLockedValue { $0.code } }

    /// The first step of a clean stop (a signal or `agent/restart`): systemd hears STOPPING, and
    /// the connection's coming loss no longer changes the state.
    func beginStopping(cancelled: Bool = false) {
        guard
            state.withLockedValue({ st in
                defer { st.stopping = true }
                return !st.stopping
            })
        else { return }
        logger.info(
            cancelled
                ? "stopping: a service failed (see above)" : exitCode == 0 ? "stopping: SIGTERM or SIGINT" : "stopping: restart requested")
        notifier.notify("STOPPING=1")
    }

    // MARK: - State and LED

    /// `led/set`: a pattern for `seconds` (nil: back to the agent's state).
    func overrideLED(_ pattern: LightPattern?, seconds: Double) {
        ledChoice.withLockedValue { $0.override = pattern.map { ($0, NIODeadline.now() + TimeAmount(seconds: seconds)) } }
        refreshLED()
        if pattern != nil {
            loop.scheduleTask(in: TimeAmount(seconds: seconds + 0.01)) { [weak self] in self?.refreshLED() }
        }
    }

    func refreshLED() {
        guard let player else { return }
        let (r, s) = (ledChoice.withLockedValue { $0 }, currentState)
        if let o = r.override, o.until > .now() { player.play(o.pattern) } else if let p = r.patterns[s] { player.play(p) }
    }

    var ledDescription: String? { player.map { "\($0.light.name): \($0.current)" } }

    /// READY=1 after the first connection attempt, whatever its outcome: the agent is up and
    /// buffering; a broker that is down is not a failed start.
    func sendReady() {
        guard !state.withLockedValue({ $0.stopping }),
            readySent.withLockedValue({ r in
                defer { r = true }
                return !r
            }), notifier.isActive
        else { return }
        notifier.notify("READY=1\nSTATUS=\(currentState.rawValue)")
        logger.info("systemd: READY")
    }

    var isReady: Bool { readySent.withLockedValue { $0 } }

    /// A clean stop has begun (`beginStopping`).
    var isStopping: Bool { state.withLockedValue { $0.stopping } }

    func connectionChanged(_ s: ConnectionState) {
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
            publishOnline()
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

    /// The retained `online` and the info document: after each connect, and again for a Home
    /// Assistant that came back.
    func publishOnline() {
        do {
            try mqtt.publish(config.topic(config.topics.status), ByteBuffer(string: "online"), qos: 1, retain: true, waitForRoom: false)
        } catch {
            logger.error("status online not published: \(error)")
        }
        loop.execute { [weak self] in self?.publishInfo() }
    }

    func setState(_ s: AgentState) {
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

    var connectionFigures: (connectedSince: Date?, reconnects: Int) {
        state.withLockedValue { ($0.connectedSince, $0.reconnects) }
    }
}

extension TimeAmount {
    /// Seconds of the configuration as a `TimeAmount` (negative: 0).
    init(seconds: Double) { self = .nanoseconds(Int64(max(0, seconds) * 1e9)) }
}
