import Communicator
import DeviceAdapters
import FoundationEssentials
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
        public var protocolVersion = "5.0"
        public var keepalive = 60
        public var timeout = 10.0
        public var sessionExpiry = 86_400
        public var reconnectInitialDelay = 1.0
        public var reconnectMaxDelay = 60.0
        /// Further brokers ("host:port"), tried in turn when the one before fails.
        public var failover: [BrokerEndpoint] = []
        public var brokerOrder = "in_order"
        /// Hosts a broker's Server Reference may send the agent to, besides the brokers above.
        public var serverReferenceAllow: [String] = []
        /// Largest packet taken from the broker: by default `commands.max_payload_bytes` and 16 KiB
        /// for the topic, a 5.0 response topic, correlation data and properties.
        public var maxIncomingPacketSize = 65_536 + 16_384
    }

    public struct Topics: Sendable {
        public var status = "device/status"
        public var info = "device/info"
        public var events = "vision/events"
    }

    public struct Store: Sendable {
        public var enabled = true
        public var directory = "/var/lib/edge-agent/buffer"
        public var capacityMB = 64
        public var sync = "interval"
        public var syncInterval = 1.0
        public var whenFull = "drop_oldest"
        public var persist = "offline"
        /// Connects on which brokers may refuse a stored message (their limits, their quota)
        /// before it is removed for good.
        public var maxRefusals = 3
    }

    public struct LED: Sendable {
        public var enabled = true
        public var driver = "simulated"
        public var board: String?
        public var chip = "gpiochip0"
        public var line = 0
        public var activeLow = false
        public var required = false
        public var simulatedLog: String?
        public var patterns: [AgentState: LightPattern] = AgentState.defaultPatterns
    }

    public struct Source: Sendable {
        public var type: String
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
            "ping", "status", "config/get", "led/set", "source/enable", "source/disable", "source/restart", "buffer/stats", "log/level",
        ]
        public var timeout = 10.0
        public var maxPayloadBytes = 65_536
        public var remember = 256
        /// Requests of one command name waiting or running at once; more are answered `busy`.
        public var maxQueued = 8
        /// Empty: ask systemd through edge-agent-reboot.path (RebootRequest).
        public var rebootCommand = ""
    }

    public static let knownCommands = [
        "ping", "status", "config/get", "config/set", "led/set", "source/enable", "source/disable", "source/restart", "buffer/stats",
        "log/level", "agent/restart", "reboot",
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
    public var stateDirectory = "/var/lib/edge-agent"
    public var logLevel = "info"
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

        if var id = t.string("device_id", nil), !id.isEmpty {
            if id == "{hostname}" {
                // One configuration for many boards: each takes its host name.
                var name = [CChar](repeating: 0, count: 256)
                gethostname(&name, 255)
                id = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            }
            if !(1...64).contains(id.utf8.count)
                || !id.utf8.allSatisfy({ isWordByte($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") })
            {
                t.problem(
                    "device_id: \"\(id)\" may use only letters, digits, '.', '_' and '-' (1...64 characters): it becomes part of topics and the client id"
                )
            }
            c.deviceID = id
        } else {
            t.problem("device_id: missing; set a unique name for this board (e.g. device_id: cam-0042)")
        }

        // mqtt
        var m = MQTT()
        m.host = t.string("mqtt.host", m.host) ?? m.host
        if m.host.isEmpty { t.problem("mqtt.host: empty; set the broker's host name or address") }
        m.port = t.int("mqtt.port", m.port, 1...65_535)
        m.clientID = t.string("mqtt.client_id", m.clientID) ?? m.clientID
        m.username = t.string("mqtt.username", nil)
        m.password = t.string("mqtt.password", nil)
        m.caCerts = t.string("mqtt.ca_certs", nil)
        m.clientCertificate = t.string("mqtt.client_certificate", nil)
        m.clientKey = t.string("mqtt.client_key", nil)
        m.tlsServerName = t.string("mqtt.tls_server_name", nil)
        m.allowPasswordWithoutTLS = t.bool("mqtt.allow_password_without_tls", m.allowPasswordWithoutTLS)
        m.protocolVersion = t.choice("mqtt.protocol_version", m.protocolVersion, ["5.0", "3.1.1"])
        m.keepalive = t.int("mqtt.keepalive", m.keepalive, 0...65_535)
        m.timeout = t.double("mqtt.timeout", m.timeout, 0.1...600)
        m.sessionExpiry = t.int("mqtt.session_expiry", m.sessionExpiry, 0...4_294_967_295)
        // Not 0: the back-off doubles it, and from 0 it would never grow (a tight reconnect loop).
        m.reconnectInitialDelay = t.double("mqtt.reconnect_initial_delay", m.reconnectInitialDelay, 0.01...3600)
        m.reconnectMaxDelay = t.double("mqtt.reconnect_max_delay", m.reconnectMaxDelay, 0...86_400)
        for (i, item) in t.list("mqtt.failover").enumerated() {
            guard case .scalar(let text, _) = item, let b = BrokerEndpoint(parsing: text, defaultPort: m.port) else {
                t.problem("mqtt.failover[\(i)]: expected \"host\" or \"host:port\" (port 1...65535), found \(ConfigTree.show(item))")
                continue
            }
            m.failover.append(b)
        }
        m.brokerOrder = t.choice("mqtt.broker_order", m.brokerOrder, ["in_order", "random"])
        for (i, item) in t.list("mqtt.server_reference_allow").enumerated() {
            guard case .scalar(let host, _) = item, !host.isEmpty else {
                t.problem("mqtt.server_reference_allow[\(i)]: expected a host name, found \(ConfigTree.show(item))")
                continue
            }
            m.serverReferenceAllow.append(host)
        }
        if m.reconnectMaxDelay < m.reconnectInitialDelay {
            t.problem("mqtt.reconnect_max_delay: \(m.reconnectMaxDelay) is below reconnect_initial_delay \(m.reconnectInitialDelay)")
        }
        for (key, file) in [
            ("mqtt.ca_certs", m.caCerts), ("mqtt.client_certificate", m.clientCertificate), ("mqtt.client_key", m.clientKey),
        ] {
            if let file, !FileManager.default.isReadableFile(atPath: file) {
                t.problem("\(key): \(file) cannot be read (missing, or no permission for this user)")
            }
        }
        if (m.clientCertificate == nil) != (m.clientKey == nil) {
            t.problem("mqtt.client_certificate and mqtt.client_key go together for mutual TLS: set both or neither")
        }
        if m.password != nil && m.username == nil { t.problem("mqtt.password is set without mqtt.username") }
        c.mqtt = m

        // topics
        for (key, keyPath) in [("status", \Topics.status), ("info", \Topics.info), ("events", \Topics.events)]
            as [(String, WritableKeyPath<Topics, String>)]
        {
            let v = t.string("topics.\(key)", c.topics[keyPath: keyPath]) ?? c.topics[keyPath: keyPath]
            c.topics[keyPath: keyPath] = v
            let expanded = v.replacing("{device_id}", with: c.deviceID.isEmpty ? "x" : c.deviceID)
            if let p = Topic.nameProblem(expanded) { t.problem("topics.\(key): \(p)") }
            if expanded.contains("{") { t.problem("topics.\(key): only {device_id} may be used in a topic template") }
        }
        c.eventsQoS = t.int("events.qos", 1, 0...2)
        c.infoInterval = t.double("status.info_interval", 60, 1...86_400)

        // offline store
        var s = Store()
        s.enabled = t.bool("offline_store.enabled", s.enabled)
        s.directory = t.string("offline_store.directory", s.directory) ?? s.directory
        s.capacityMB = t.int("offline_store.capacity_mb", s.capacityMB, 1...65_536)
        s.sync = t.choice("offline_store.sync", s.sync, ["interval", "always", "none"])
        s.syncInterval = t.double("offline_store.sync_interval", s.syncInterval, 0.01...60)
        s.whenFull = t.choice("offline_store.when_full", s.whenFull, ["drop_oldest", "reject_newest"])
        s.persist = t.choice("offline_store.persist", s.persist, ["offline", "always"])
        s.maxRefusals = t.int("offline_store.max_refusals", s.maxRefusals, 1...1000)
        c.store = s

        // LED (a board profile first, then the file's own keys on top)
        var l = LED()
        l.enabled = t.bool("led.enabled", l.enabled)
        l.driver = t.choice("led.driver", l.driver, ["simulated", "gpiod"])
        c.hardwareDirectory = t.string("hardware_dir", nil) ?? Self.defaultHardwareDirectory(near: baseDirectory)
        if let board = t.string("led.board", nil) {
            l.board = board
            if let profile = Self.boardProfile(board, directory: c.hardwareDirectory, problems: t.problem) {
                l.chip = profile.chip
                l.line = profile.line
                l.activeLow = profile.activeLow
            }
        }
        l.chip = t.string("led.chip", l.chip) ?? l.chip
        l.line = t.int("led.line", l.line, 0...1023)
        l.activeLow = t.bool("led.active_low", l.activeLow)
        l.required = t.bool("led.required", l.required)
        l.simulatedLog = t.string("led.simulated_log", nil)
        for state in AgentState.allCases {
            if let text = t.string("led.patterns.\(state.rawValue)", nil) {
                do { l.patterns[state] = try LightPattern(parsing: text) } catch { t.problem("led.patterns.\(state.rawValue): \(error)") }
            }
        }
        c.led = l

        // sources
        var names: Set<String> = []
        for (i, item) in t.list("sources").enumerated() {
            let p = "sources[\(i)]"
            guard case .mapping(let pairs) = item else {
                t.problem("\(p): expected a mapping with type and name")
                continue
            }
            func key(_ k: String) -> String { "\(p).\(k)" }
            let type = t.choice(key("type"), "", ["simulated", "socket", "v4l2", "directory"], in: item)
            if item.child("type") == nil { t.problem("\(key("type")): missing; one of simulated, socket, v4l2, directory") }
            var src = Source(type: type, name: t.string(key("name"), type.isEmpty ? "source\(i)" : "\(type)\(i)", in: item) ?? "")
            if !names.insert(src.name).inserted {
                t.problem("\(key("name")): \"\(src.name)\" is used by another source; names must be unique")
            }
            var allowed: Set<String> = ["type", "name"]
            switch type {
            case "simulated":
                src.rate = t.double(key("rate"), 1, 0.001...1000, in: item)
                if let labels = item.child("labels") {
                    if case .sequence(let ls) = labels {
                        src.labels = ls.compactMap { if case .scalar(let s, _) = $0 { s } else { nil } }
                    } else {
                        t.problem("\(key("labels")): expected a list of labels")
                    }
                }
                allowed.formUnion(["rate", "labels"])
            case "socket":
                src.path = t.string(key("path"), "/run/edge-agent/events.sock", in: item) ?? ""
                src.maxLineBytes = t.int(key("max_line_bytes"), 65_536, 64...16_777_216, in: item)
                src.maxConnections = t.int(key("max_connections"), src.maxConnections, 1...4096, in: item)
                src.maxLinesPerSecond = t.int(key("max_lines_per_second"), src.maxLinesPerSecond, 1...1_000_000, in: item)
                allowed.formUnion(["path", "max_line_bytes", "max_connections", "max_lines_per_second"])
            case "v4l2":
                src.directory = t.string(key("directory"), "/dev", in: item) ?? "/dev"
                src.sysfs = t.string(key("sysfs"), "/sys/class/video4linux", in: item) ?? ""
                src.pollInterval = t.double(key("poll_interval"), 2, 0.05...3600, in: item)
                allowed.formUnion(["directory", "sysfs", "poll_interval"])
            case "directory":
                src.path = t.string(key("path"), nil, in: item) ?? ""
                if src.path.isEmpty { t.problem("\(key("path")): missing; the snapshot folder to watch") }
                src.maxHashBytes = t.int(key("max_hash_bytes"), src.maxHashBytes, 4096...(1 << 36), in: item)
                allowed.formUnion(["path", "max_hash_bytes"])
            default:
                break
            }
            for (k, _) in pairs where !allowed.contains(k) && !type.isEmpty {
                t.problem("\(key(k)): unknown key for a \(type) source (known: \(allowed.sorted().joined(separator: ", ")))")
            }
            c.sources.append(src)
        }

        // commands
        var k = Commands()
        k.enabled = t.bool("commands.enabled", k.enabled)
        k.topic = t.string("commands.topic", k.topic) ?? k.topic
        k.broadcastTopic = t.string("commands.broadcast_topic", nil)
        k.responseTopic = t.string("commands.response_topic", k.responseTopic) ?? k.responseTopic
        for (key, v) in [
            ("commands.topic", k.topic), ("commands.response_topic", k.responseTopic),
            ("commands.broadcast_topic", k.broadcastTopic ?? "x"),
        ] {
            let expanded = v.replacing("{device_id}", with: c.deviceID.isEmpty ? "x" : c.deviceID)
            if let p = Topic.nameProblem(expanded) { t.problem("\(key): \(p) (the agent appends /<command name> itself)") }
        }
        if let list = t.value("commands.allow") {
            if case .sequence(let items) = list {
                k.allow = []
                for item in items {
                    guard case .scalar(let name, _) = item, Self.knownCommands.contains(name) else {
                        t.problem(
                            "commands.allow: \(ConfigTree.show(item)) is not a command (known: \(Self.knownCommands.joined(separator: ", ")))"
                        )
                        continue
                    }
                    k.allow.append(name)
                }
            } else {
                t.problem("commands.allow: expected a list of command names")
            }
        }
        k.timeout = t.double("commands.timeout", k.timeout, 0.1...3600)
        k.maxPayloadBytes = t.int("commands.max_payload_bytes", k.maxPayloadBytes, 64...16_777_216)
        k.remember = t.int("commands.remember", k.remember, 1...100_000)
        k.maxQueued = t.int("commands.max_queued", k.maxQueued, 1...1000)
        k.rebootCommand = t.string("commands.reboot_command", k.rebootCommand) ?? k.rebootCommand
        c.commands = k
        // Only commands come from the broker, so their limit bounds what the agent buffers of a
        // packet (a 100 MB publish on a command topic must not cost 100 MB).
        c.mqtt.maxIncomingPacketSize = t.int("mqtt.max_incoming_packet_size", k.maxPayloadBytes + 16_384, 1024...268_435_460)
        if c.mqtt.maxIncomingPacketSize < k.maxPayloadBytes + 1024 {
            t.problem(
                "mqtt.max_incoming_packet_size: \(c.mqtt.maxIncomingPacketSize) leaves no room for a command of commands.max_payload_bytes \(k.maxPayloadBytes) and its topic; set it to at least \(k.maxPayloadBytes + 1024) or leave it out"
            )
        }

        c.stateDirectory = t.string("state_dir", c.stateDirectory) ?? c.stateDirectory
        c.logLevel = t.choice("log_level", c.logLevel, ["trace", "debug", "info", "notice", "warning", "error", "critical"])
        t.reportUnknownKeys { $0.hasPrefix("sources") }
        // The MQTT library's own checks (ranges it knows better).
        if t.problems.isEmpty {
            for p in c.mqttConfig().problems() { t.problem("mqtt: \(p)") }
        }
        guard t.problems.isEmpty else { throw ConfigError(problems: t.problems) }
        return c
    }

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
            clientID: .fixed(topic(mqtt.clientID)), protocolVersion: mqtt.protocolVersion == "3.1.1" ? .v3_1_1 : .v5_0,
            // An agent restarting resumes its session: QoS 2 kept across restarts needs it.
            cleanStart: false)
        c.clientCertificate = mqtt.clientCertificate
        c.clientKey = mqtt.clientKey
        c.tlsServerName = mqtt.tlsServerName
        c.allowPasswordWithoutTLS = mqtt.allowPasswordWithoutTLS
        c.failoverBrokers = mqtt.failover
        c.brokerOrder = mqtt.brokerOrder == "random" ? .random : .inOrder
        c.serverReferenceAllowList = mqtt.serverReferenceAllow
        c.maxIncomingPacketSize = mqtt.maxIncomingPacketSize
        // Commands are all the agent receives: topic aliases towards it would save nothing, and
        // mosquitto 2.1 sends an alias alone after dropping the PUBLISH that set it as too large
        // for us (see MQTTConfig.topicAliasMaximum), a protocol error that would cost the link.
        c.topicAliasMaximum = 0
        c.publishPreparer = ClockCorrection(topic: topic(topics.events))
        c.keepConnecting = true
        if store.enabled {
            let syncPolicy: RingStore.SyncPolicy =
                switch store.sync {
                case "always": .always
                case "none": .none
                default: .interval(seconds: store.syncInterval, bytes: 1 << 20)
                }
            c.offlineStore = OfflineStoreConfig(
                directory: store.directory, capacity: store.capacityMB << 20, sync: syncPolicy,
                whenFull: store.whenFull == "reject_newest" ? .rejectNewest : .dropOldest,
                persist: store.persist == "always" ? .always : .offline)
            c.offlineStore?.maxRefusals = store.maxRefusals
        }
        return c
    }

    /// The effective configuration as YAML, secrets masked (for check-config and config/get).
    public func rendered() -> String {
        func q(_ s: String?) -> String { s.map(YAML.quote) ?? "null" }  // escaped: it must read back
        func secret(_ s: String?) -> String { s == nil ? "null" : "\"********\"" }
        func env(_ key: String) -> String {
            fromCredential.contains(key)
                ? "  # from the systemd credential \(Self.passwordCredential)"
                : fromEnvironment.contains(key) ? "  # from the environment" : ""
        }
        var out = """
            device_id: \(q(deviceID))
            mqtt:
              host: \(q(mqtt.host))\(env("mqtt.host"))
              port: \(mqtt.port)\(env("mqtt.port"))
              client_id: \(q(mqtt.clientID))  # \(YAML.quote(topic(mqtt.clientID)))
              username: \(q(mqtt.username))\(env("mqtt.username"))
              password: \(secret(mqtt.password))\(env("mqtt.password"))
              ca_certs: \(q(mqtt.caCerts))
              client_certificate: \(q(mqtt.clientCertificate))
              client_key: \(q(mqtt.clientKey))
              tls_server_name: \(q(mqtt.tlsServerName))
              allow_password_without_tls: \(mqtt.allowPasswordWithoutTLS)
              protocol_version: \(q(mqtt.protocolVersion))
              keepalive: \(mqtt.keepalive)
              timeout: \(mqtt.timeout)
              session_expiry: \(mqtt.sessionExpiry)
              reconnect_initial_delay: \(mqtt.reconnectInitialDelay)
              reconnect_max_delay: \(mqtt.reconnectMaxDelay)
              failover: [\(mqtt.failover.map { q($0.description) }.joined(separator: ", "))]
              broker_order: \(q(mqtt.brokerOrder))
              server_reference_allow: [\(mqtt.serverReferenceAllow.map { q($0) }.joined(separator: ", "))]
              max_incoming_packet_size: \(mqtt.maxIncomingPacketSize)
            topics:
              status: \(q(topics.status))  # \(topic(topics.status))
              info: \(q(topics.info))  # \(topic(topics.info))
              events: \(q(topics.events))  # \(topic(topics.events))
            events:
              qos: \(eventsQoS)
            status:
              info_interval: \(infoInterval)
            offline_store:
              enabled: \(store.enabled)
              directory: \(q(store.directory))
              capacity_mb: \(store.capacityMB)
              sync: \(store.sync)
              sync_interval: \(store.syncInterval)
              when_full: \(store.whenFull)
              persist: \(store.persist)
              max_refusals: \(store.maxRefusals)
            led:
              enabled: \(led.enabled)
              driver: \(led.driver)
              board: \(q(led.board))
              chip: \(q(led.chip))
              line: \(led.line)
              active_low: \(led.activeLow)
              required: \(led.required)
              simulated_log: \(q(led.simulatedLog))
              patterns:

            """
        for s in AgentState.allCases { out += "    \(s.rawValue): \"\(led.patterns[s] ?? .off)\"\n" }
        out += "sources:\n"
        for s in sources {
            out += "  - type: \(s.type)\n    name: \(q(s.name))\n"
            switch s.type {
            case "simulated":
                out +=
                    "    rate: \(s.rate)\n" + (s.labels.isEmpty ? "" : "    labels: [\(s.labels.map { q($0) }.joined(separator: ", "))]\n")
            case "socket": out += "    path: \(q(s.path))\n    max_line_bytes: \(s.maxLineBytes)\n"
            case "v4l2": out += "    directory: \(q(s.directory))\n    sysfs: \(q(s.sysfs))\n    poll_interval: \(s.pollInterval)\n"
            default: out += "    path: \(q(s.path))\n"
            }
        }
        out += "commands:\n  enabled: \(commands.enabled)\n  topic: \(q(commands.topic))  # \(topic(commands.topic))/<name>\n"
        out += "  broadcast_topic: \(q(commands.broadcastTopic))\n  response_topic: \(q(commands.responseTopic))\n"
        out += "  allow: [\(commands.allow.joined(separator: ", "))]\n  timeout: \(commands.timeout)\n"
        out +=
            "  max_payload_bytes: \(commands.maxPayloadBytes)\n  remember: \(commands.remember)\n  max_queued: \(commands.maxQueued)\n  reboot_command: \(q(commands.rebootCommand))\n"
        out += "state_dir: \(q(stateDirectory))\nlog_level: \(logLevel)\nhardware_dir: \(q(hardwareDirectory))\n"
        return out
    }
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
