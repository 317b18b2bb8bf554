import Communicator
import DeviceAdapters
import FoundationEssentials
import Logging
import NIOCore
import OfflineStore

#if canImport(Glibc)
import Glibc
#endif

/// The agent's configuration: one YAML file (every key documented in
/// config/edge-agent.example.yaml), any key overridable by the environment
/// (`EDGE_AGENT_MQTT__PASSWORD` for `mqtt.password`). A minimal file is a device id and a broker.
public struct AgentConfig: Sendable {
    public struct MQTT: Sendable {
        public var host = "127.0.0.1"
        public var port = 1883
        public var clientID = "{device_id}"
        public var username: String?
        public var password: String?
        public var caCerts: String?
        public var clientCertificate: String?
        public var clientKey: String?
        public var tlsServerName: String?
        public var allowPasswordWithoutTLS = false
        public var protocolVersion = MQTTVersion.v5_0
        public var keepalive = 60
        public var timeout = 10.0
        public var sessionExpiry = 86_400
        public var reconnectInitialDelay = 1.0
        public var reconnectMaxDelay = 60.0
        /// Further brokers ("host:port"), tried in turn when the one before fails.
        public var failover: [BrokerEndpoint] = []
        public var brokerOrder = MQTTConfig.BrokerOrder.inOrder
        /// Hosts a broker's Server Reference may send the agent to, besides the brokers above.
        public var serverReferenceAllow: [String] = []
        /// Largest packet taken from the broker (nil: `incomingPacketLimit` derives it from the
        /// largest command).
        public var maxIncomingPacketSize: Int?
    }

    public struct Topics: Sendable {
        public var status = "device/status"
        public var info = "device/info"
        public var events = "vision/events"
        /// The newest snapshot image of a directory source (retained, QoS 0, never buffered).
        public var snapshot = "devices/{device_id}/snapshot"
    }

    public struct Store: Sendable {
        public var enabled = true
        public var directory = "/var/lib/edge-agent/buffer"
        public var capacityMB = 64
        public var sync = SyncMode.interval
        public var syncInterval = 1.0
        public var whenFull = RingStore.FullPolicy.dropOldest
        public var persist = OfflineStoreConfig.Persist.offline
        /// Connects on which brokers may refuse a stored message (their limits, their quota)
        /// before it is removed for good.
        public var maxRefusals = 3
    }

    /// When the offline store calls fdatasync (`offline_store.sync`).
    public enum SyncMode: String, Sendable, CaseIterable, ConfigChoice {
        /// At most every `sync_interval` seconds (or every MiB appended).
        case interval
        /// Before a message counts as accepted.
        case always
        /// Left to the kernel's writeback.
        case none
    }

    public enum LEDDriver: String, Sendable, CaseIterable, ConfigChoice {
        case simulated
        case gpiod
    }

    public struct LED: Sendable {
        public var enabled = true
        public var driver = LEDDriver.simulated
        public var board: String?
        public var chip = "gpiochip0"
        public var line = 0
        public var activeLow = false
        public var required = false
        public var simulatedLog: String?
        public var patterns: [AgentState: LightPattern] = AgentState.defaultPatterns
    }

    public struct Source: Sendable {
        public var type: SourceKind
        public var name: String
        public var rate = 1.0
        public var labels: [String] = []
        public var path = ""
        public var maxLineBytes = 65_536
        public var maxConnections = 64
        public var maxLinesPerSecond = 1000
        public var directory = "/dev"
        public var sysfs = "/sys/class/video4linux"
        public var pollInterval = 2.0
        /// Directory source: the largest file that is hashed (a larger one is reported without sha256).
        public var maxHashBytes = 64 << 20
        /// Directory source: the largest JPEG or PNG published as an image on `topics.snapshot`.
        public var maxImageBytes = 2 << 20
        /// Socket source: the event types its writers send (Home Assistant's event entity lists them).
        public var eventTypes = ["external"]

        /// A socket source listens on /run/edge-agent/events.sock unless `path` says otherwise; a
        /// directory source needs its path.
        public init(type: SourceKind, name: String, labels: [String] = [], path: String? = nil) {
            self.type = type
            self.name = name
            self.labels = labels
            self.path = path ?? (type == .socket ? "/run/edge-agent/events.sock" : "")
        }
    }

    /// Remote management over MQTT (docs/COMMANDS.md).
    public struct Commands: Sendable {
        public var enabled = true
        /// Requests arrive on `<topic>/<name>`; the name may have several levels (config/get).
        public var topic = "devices/{device_id}/commands"
        public var broadcastTopic: String?
        /// Where answers go when the request names no response topic.
        public var responseTopic = "devices/{device_id}/response"
        public var allow: [String] = [
            "ping", "status", "config/get", "led/set", "led/identify", "source/enable", "source/disable", "source/restart", "buffer/stats",
            "log/level", "log/tail",
        ]
        public var timeout = 10.0
        public var maxPayloadBytes = 65_536
        public var remember = 256
        /// Requests of one command name waiting or running at once; more are answered `busy`.
        public var maxQueued = 8
        /// Empty: ask systemd through edge-agent-reboot.path (RebootRequest).
        public var rebootCommand = ""
    }

    /// How a source that failed is started again: a back-off from `initialDelay`, doubling up
    /// to `maxDelay` seconds.
    public struct SourceRestart: Sendable {
        public var initialDelay = 1.0
        public var maxDelay = 60.0
    }

    /// Home Assistant's MQTT discovery (docs/HOME_ASSISTANT.md).
    public struct HomeAssistant: Sendable {
        public var enabled = false
        public var discoveryPrefix = "homeassistant"
        /// The longest random wait before answering Home Assistant's `online`.
        public var republishDelay = 5.0
    }

    /// The Prometheus endpoint (docs/METRICS.md), read by `edge-agent status`.
    public struct Metrics: Sendable {
        public var enabled = true
        /// `address:port`, an IP literal (`[::1]:9464` for IPv6): loopback unless chosen otherwise.
        public var listen = "127.0.0.1:9464"
        /// Scrapes served at once; more are closed at once.
        public var maxConnections = 4
        /// A scrape's connection is closed after this many seconds, whatever the client does.
        public var timeout = 5.0

        public init() {}

        /// `listen` as an address and port (nil when it is not `address:port`).
        public var endpoint: (host: String, port: Int)? {
            guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (1...65_535).contains(port)
            else { return nil }
            var host = String(listen[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            guard (try? SocketAddress(ipAddress: host, port: port)) != nil else { return nil }
            return (host, port)
        }
    }

    /// Signed agent updates over MQTT (docs/UPDATES.md), when `commands.allow` has `agent/update`.
    public struct Update: Sendable {
        /// `ed25519:<base64>` public keys (edge-agent update keygen); an update signed by none is refused.
        public var trustedKeys: [String] = []
        /// The largest package taken.
        public var maxBytes = 67_108_864
        public var allowDowngrade = false
        /// How long the new version has to come online before the helper installs the previous one again.
        public var confirmTimeout = 180.0
        /// Chunks arrive on `<chunk_topic>/<first 16 hex digits of the package's SHA-256>` unless the announcement names a topic.
        public var chunkTopic = "devices/{device_id}/update"
        /// The chunk size offered (smaller when mqtt.max_incoming_packet_size needs it).
        public var chunkSize = 65_536
    }

    public static let knownCommands = [
        "ping", "status", "config/get", "config/set", "led/set", "led/identify", "source/enable", "source/disable", "source/restart",
        "buffer/stats", "log/level", "log/tail", "agent/restart", "reboot", "agent/update",
    ]

    public var deviceID = ""
    public var mqtt = MQTT()
    public var commands = Commands()
    public var topics = Topics()
    public var eventsQoS = 1
    public var infoInterval = 60.0
    public var store = Store()
    public var led = LED()
    public var sources: [Source] = []
    public var sourceRestart = SourceRestart()
    public var homeAssistant = HomeAssistant()
    public var metrics = Metrics()
    public var update = Update()
    public var stateDirectory = "/var/lib/edge-agent"
    public var logLevel = Logger.Level.info
    /// Log lines kept in memory for `log/tail` (0: none).
    public var logRingLines = 500
    public var hardwareDirectory = "/usr/share/edge-agent/hardware"
    /// Keys set from the environment.
    public var fromEnvironment: Set<String> = []
    /// Keys set from a systemd credential.
    public var fromCredential: Set<String> = []
    /// The credential the unit loads the broker password into (`LoadCredential=mqtt-password:…`):
    /// unlike `Environment=`, which every user can read with `systemctl show`, only the agent's
    /// user and root see it.
    public static let passwordCredential = "mqtt-password"

    public init() {}

    /// Reads and validates the file; throws with every problem at once.
    public static func load(
        path: String, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(ConfigError) -> AgentConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "cannot be read (permissions?)" : "does not exist"
            throw ConfigError(problems: [
                "configuration file \(path) \(reason): pass --config with the right path (example: config/edge-agent.example.yaml)"
            ])
        }
        let baseDir = directoryPart(of: path)
        return try parse(String(decoding: data, as: UTF8.self), source: path, environment: environment, baseDirectory: baseDir)
    }

    static func parse(
        _ text: String, source: String, environment: [String: String], baseDirectory: String
    ) throws(ConfigError) -> AgentConfig {
        let t = try ConfigTree(yaml: text, source: source)
        t.applyEnvironment(environment)
        if let credentials = environment["CREDENTIALS_DIRECTORY"] {
            t.applyCredential(directory: credentials, name: Self.passwordCredential, key: "mqtt.password")
        }
        var c = AgentConfig()
        c.fromEnvironment = t.fromEnvironment.subtracting(t.fromCredential)
        c.fromCredential = t.fromCredential
        // led.board reads its profile from hardware_dir, which the file lists further down.
        c.hardwareDirectory = t.string("hardware_dir", nil) ?? Self.defaultHardwareDirectory(near: baseDirectory)
        for key in Self.keys { key.read(t, &c) }
        for p in c.problemsAcrossKeys() { t.problem(p) }
        t.reportUnknownKeys { $0.hasPrefix("sources") }
        // The MQTT library's own checks (ranges it knows better).
        if t.problems.isEmpty {
            for p in c.mqttConfig().problems() { t.problem("mqtt: \(p)") }
        }
        guard t.problems.isEmpty else { throw ConfigError(problems: t.problems) }
        return c
    }

    /// Checks that involve more than one key.
    private func problemsAcrossKeys() -> [String] {
        var p: [String] = []
        if mqtt.reconnectMaxDelay < mqtt.reconnectInitialDelay {
            p.append("mqtt.reconnect_max_delay: \(mqtt.reconnectMaxDelay) is below reconnect_initial_delay \(mqtt.reconnectInitialDelay)")
        }
        if sourceRestart.maxDelay < sourceRestart.initialDelay {
            p.append("source_restart.max_delay: \(sourceRestart.maxDelay) is below initial_delay \(sourceRestart.initialDelay)")
        }
        if (mqtt.clientCertificate == nil) != (mqtt.clientKey == nil) {
            p.append("mqtt.client_certificate and mqtt.client_key go together for mutual TLS: set both or neither")
        }
        if mqtt.password != nil && mqtt.username == nil { p.append("mqtt.password is set without mqtt.username") }
        // Only commands come from the broker, so their limit bounds what the agent buffers of a
        // packet (a 100 MB publish on a command topic must not cost 100 MB).
        if let limit = mqtt.maxIncomingPacketSize, limit < commands.maxPayloadBytes + 1024 {
            p.append(
                "mqtt.max_incoming_packet_size: \(limit) leaves no room for a command of commands.max_payload_bytes \(commands.maxPayloadBytes) and its topic; set it to at least \(commands.maxPayloadBytes + 1024) or leave it out"
            )
        }
        return p
    }

    /// The largest packet taken from the broker: `mqtt.max_incoming_packet_size`, or the largest
    /// command and 16 KiB for its topic, a 5.0 response topic, correlation data and properties.
    public var incomingPacketLimit: Int { mqtt.maxIncomingPacketSize ?? commands.maxPayloadBytes + 16_384 }

    struct BoardProfile {
        var chip: String
        var line: Int
        var activeLow: Bool
    }

    static func defaultHardwareDirectory(near base: String) -> String {
        for candidate in [base + "/../hardware", "/usr/share/edge-agent/hardware"] {
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
        }
        return "/usr/share/edge-agent/hardware"
    }

    /// `hardware/<board>.yaml`: led.chip, led.line, led.active_low.
    static func boardProfile(_ board: String, directory: String, problems: (String) -> Void) -> BoardProfile? {
        let path = board.contains("/") ? board : "\(directory)/\(board).yaml"
        guard let data = FileManager.default.contents(atPath: path) else {
            let known = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".yaml") }
                .map { String($0.dropLast(5)) }.sorted()
            problems("led.board: no profile \(path) (known in \(directory): \(known.isEmpty ? "none" : known.joined(separator: ", ")))")
            return nil
        }
        do {
            let t = try ConfigTree(yaml: String(decoding: data, as: UTF8.self), source: path)
            let p = BoardProfile(
                chip: t.string("led.chip", "gpiochip0") ?? "gpiochip0", line: t.int("led.line", 0, 0...1023),
                activeLow: t.bool("led.active_low", false))
            _ = t.string("name", nil)
            _ = t.string("description", nil)
            t.markUsed("cameras")
            t.reportUnknownKeys { $0.hasPrefix("cameras") }
            for q in t.problems { problems("board profile \(path): \(q)") }
            return p
        } catch {
            problems("led.board: \(error)")
            return nil
        }
    }

    /// The topic with `{device_id}` filled in.
    public func topic(_ template: String) -> String { template.replacing("{device_id}", with: deviceID) }

    /// The MQTT library's configuration for this agent.
    public func mqttConfig() -> MQTTConfig {
        var c = MQTTConfig(
            brokerAddress: mqtt.host, port: mqtt.port, timeout: mqtt.timeout, keepalive: mqtt.keepalive,
            username: mqtt.username, password: mqtt.password, caCerts: mqtt.caCerts,
            sessionExpiryInterval: UInt32(clamping: mqtt.sessionExpiry), maxReconnectAttempts: 0,
            reconnectInitialDelay: mqtt.reconnectInitialDelay, reconnectMaxDelay: mqtt.reconnectMaxDelay,
            clientID: .fixed(topic(mqtt.clientID)), protocolVersion: mqtt.protocolVersion,
            // An agent restarting resumes its session: QoS 2 kept across restarts needs it.
            cleanStart: false)
        c.clientCertificate = mqtt.clientCertificate
        c.clientKey = mqtt.clientKey
        c.tlsServerName = mqtt.tlsServerName
        c.allowPasswordWithoutTLS = mqtt.allowPasswordWithoutTLS
        c.failoverBrokers = mqtt.failover
        c.brokerOrder = mqtt.brokerOrder
        c.serverReferenceAllowList = mqtt.serverReferenceAllow
        c.maxIncomingPacketSize = incomingPacketLimit
        // Commands are all the agent receives: topic aliases towards it would save nothing, and
        // mosquitto 2.1 sends an alias alone after dropping the PUBLISH that set it as too large
        // for us (see MQTTConfig.topicAliasMaximum), a protocol error that would cost the link.
        c.topicAliasMaximum = 0
        c.publishPreparer = ClockCorrection(topic: topic(topics.events))
        c.keepConnecting = true
        if store.enabled {
            let syncPolicy: RingStore.SyncPolicy =
                switch store.sync {
                case .always: .always
                case .none: .none
                case .interval: .interval(seconds: store.syncInterval, bytes: 1 << 20)
                }
            c.offlineStore = OfflineStoreConfig(
                directory: store.directory, capacity: store.capacityMB << 20, sync: syncPolicy,
                whenFull: store.whenFull, persist: store.persist)
            c.offlineStore?.maxRefusals = store.maxRefusals
        }
        return c
    }

    /// The effective configuration as YAML, secrets masked (for check-config and config/get).
    public func rendered() -> String { Self.render(self, as: .effective) }

    /// `config/edge-agent.example.yaml`: every key with its default and its documentation.
    public static func example() -> String { render(AgentConfig(), as: .example) }
}

/// What the agent is doing, as the LED and the status document show it.
public enum AgentState: String, Sendable, CaseIterable {
    case connected
    case connecting
    /// The broker is unreachable: events are buffered.
    case offline
    /// Configuration or authentication error: a person must act.
    case error
    case stopped

    public static let defaultPatterns: [AgentState: LightPattern] = [
        .connected: .on,
        .connecting: .blink(100, 100),
        .offline: .blink(1000, 1000),
        .error: LightPattern(steps: [100, 100, 100, 100, 100, 1000], solid: false),
        .stopped: .off,
    ]
}
