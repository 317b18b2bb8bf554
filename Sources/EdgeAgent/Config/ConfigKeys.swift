import Communicator
import DeviceAdapters
import FoundationEssentials

#if canImport(Glibc)
import Glibc
#endif

// Every key of the configuration file, in the order the example file and check-config show them.
// A key's default is its value in a fresh `AgentConfig`; checks that involve several keys are in
// `AgentConfig.parse`.

extension AgentConfig {
    static var keys: [ConfigKey] {
        // Appended in parts: one expression of them all is too much for the type checker.
        var keys = mqttKeys
        keys += topicKeys
        keys += storeKeys
        keys += ledKeys
        keys.append(sourcesKey)
        keys += sourceRestartKeys
        keys += homeAssistantKeys
        keys += metricsKeys
        keys += pathKeys
        keys += commandKeys
        keys += updateKeys
        return keys
    }

    private static var topicKeys: [ConfigKey] {
        [
            .text(
                "topics.status", \.topics.status, note: "retained \"online\" / \"offline\"; the Will says \"offline\"", check: topicProblem,
                explain: { YAML.quote($0.topic($0.topics.status)) }),
            .text(
                "topics.info", \.topics.info, note: "retained JSON: version, uptime, connection, buffer, sources", check: topicProblem,
                explain: { YAML.quote($0.topic($0.topics.info)) }),
            .text(
                "topics.events", \.topics.events, note: "one JSON event per message (docs/EVENTS.md)", check: topicProblem,
                explain: { YAML.quote($0.topic($0.topics.events)) }),
            .text(
                "topics.snapshot", \.topics.snapshot,
                note: "retained: the newest JPEG/PNG of a directory source, QoS 0, never through the offline store", check: topicProblem,
                explain: { YAML.quote($0.topic($0.topics.snapshot)) }),
            .int("events.qos", \.eventsQoS, 0...2, note: "0, 1 or 2; QoS 1/2 events are buffered on flash while offline", remote: true),
            .seconds(
                "status.info_interval", \.infoInterval, 1...86_400,
                note: "seconds between info documents (also sent on every change of state)", remote: true),
        ]
    }

    private static var sourceRestartKeys: [ConfigKey] {
        [
            .seconds(
                "source_restart.initial_delay", \.sourceRestart.initialDelay, 0.1...3600,
                note: "a source that failed is started again after this, doubling with each failure in a row"),
            .seconds(
                "source_restart.max_delay", \.sourceRestart.maxDelay, 0.1...86_400, note: "the longest wait between a source's restarts"),
        ]
    }

    private static var homeAssistantKeys: [ConfigKey] {
        [
            .flag("home_assistant.enabled", \.homeAssistant.enabled, note: "publish MQTT discovery configs for Home Assistant"),
            .text(
                "home_assistant.discovery_prefix", \.homeAssistant.discoveryPrefix, note: "Home Assistant's discovery prefix",
                check: { v, _ in v.isEmpty || v.contains("+") || v.contains("#") ? "a topic prefix without wildcards" : nil }),
            .seconds(
                "home_assistant.republish_delay", \.homeAssistant.republishDelay, 0.1...600,
                note: "at most this long (at random) before answering Home Assistant's online"),
        ]
    }

    private static var metricsKeys: [ConfigKey] {
        [
            .flag("metrics.enabled", \.metrics.enabled, note: "serve Prometheus metrics (and edge-agent status) over HTTP"),
            .text(
                "metrics.listen", \.metrics.listen, note: "address:port; loopback unless another address is chosen",
                check: { _, c in
                    c.metrics.endpoint == nil ? "not address:port with an IP address (127.0.0.1:9464, [::1]:9464, 0.0.0.0:9464)" : nil
                }),
            .int("metrics.max_connections", \.metrics.maxConnections, 1...64, note: "scrapes served at once; more are refused"),
            .seconds("metrics.timeout", \.metrics.timeout, 0.1...60, note: "a scrape's connection is closed after this long"),
        ]
    }

    private static var pathKeys: [ConfigKey] {
        [
            .text("state_dir", \.stateDirectory, note: "the event sequence number and remembered answers live here"),
            .choice("log_level", \.logLevel, remote: true),
            .int("log_ring_lines", \.logRingLines, 0...10_000, note: "log lines kept in memory for the log/tail command (0: none)"),
            // Read before the table (led.board needs it): here only shown.
            ConfigKey(
                path: "hardware_dir", note: "board profiles (led.board); default: ../hardware beside the file, else this",
                read: { _, _ in }, show: { YAML.quote($0.hardwareDirectory) }),
        ]
    }

    /// Comment lines above a mapping in the example file.
    static let sectionNotes: [String: [String]] = [
        "topics": [
            "Topics are templates: {device_id} is replaced. A fleet layout:",
            "  status: devices/{device_id}/status, info: devices/{device_id}/info, events: devices/{device_id}/events",
        ],
        "led.patterns": ["on | off | \"blink ON/OFF\" | \"pattern A/B/C/D...\" (ms, alternately on and off)"],
        "commands": [
            "Remote management over MQTT (docs/COMMANDS.md). Secure the command topics with broker ACLs",
            "(config/mosquitto-acl.example): only the fleet service may write them.",
        ],
    ]

    static let exampleHeader = """
        # edge-agent configuration: every key, with its default. A minimal file is
        #   device_id: cam-0042
        #   mqtt: {host: broker.example.net}
        # Any key can be overridden from the environment: EDGE_AGENT_<PATH> with the path's parts
        # joined by "__", e.g. EDGE_AGENT_MQTT__PASSWORD for mqtt.password (keep secrets out of files).
        # Check a file with: edge-agent check-config FILE
        # Generated from the agent's key table (edge-agent check-config --example): edit the table.


        """

    private static var mqttKeys: [ConfigKey] {
        [
            ConfigKey(
                path: "device_id",
                above: [
                    "Unique name of this board (\"{hostname}\": the host name): letters, digits, '.', '_', '-' (1-64). Used in topics and the client id."
                ], example: "cam-0042", read: readDeviceID, show: { YAML.quote($0.deviceID) }),
            .text(
                "mqtt.host", \.mqtt.host, note: "broker host name or address",
                check: { v, _ in v.isEmpty ? "empty; set the broker's host name or address" : nil }),
            .int("mqtt.port", \.mqtt.port, 1...65_535, note: "8883 for TLS"),
            .text(
                "mqtt.client_id", \.mqtt.clientID, note: "template; {device_id} is replaced",
                explain: { YAML.quote($0.topic($0.mqtt.clientID)) }),
            .optionalText("mqtt.username", \.mqtt.username),
            .optionalText(
                "mqtt.password", \.mqtt.password, note: "better: EDGE_AGENT_MQTT__PASSWORD, or the systemd credential", secret: true),
            .optionalText("mqtt.ca_certs", \.mqtt.caCerts, note: "CA file (PEM); setting it turns TLS on", readableFile: true),
            .optionalText(
                "mqtt.client_certificate", \.mqtt.clientCertificate, note: "mutual TLS: certificate (PEM) ...", readableFile: true),
            .optionalText("mqtt.client_key", \.mqtt.clientKey, note: "... and its key", readableFile: true),
            .optionalText("mqtt.tls_server_name", \.mqtt.tlsServerName, note: "name checked in the broker's certificate (default: host)"),
            .flag(
                "mqtt.allow_password_without_tls", \.mqtt.allowPasswordWithoutTLS,
                note: "a password to a broker off this machine needs TLS unless this says otherwise"),
            .choice("mqtt.protocol_version", \.mqtt.protocolVersion),
            .int("mqtt.keepalive", \.mqtt.keepalive, 0...65_535, note: "seconds; 0 = off", remote: true),
            .seconds("mqtt.timeout", \.mqtt.timeout, 0.1...600, note: "seconds for TCP + TLS + CONNACK", remote: true),
            .int(
                "mqtt.session_expiry", \.mqtt.sessionExpiry, 0...4_294_967_295,
                note: "seconds the broker keeps the session (QoS 1/2 in flight) after a drop", remote: true),
            // Not 0: the back-off doubles it, and from 0 it would never grow (a tight reconnect loop).
            .seconds(
                "mqtt.reconnect_initial_delay", \.mqtt.reconnectInitialDelay, 0.01...3600,
                note: "back-off after a lost connection, doubling ...", remote: true),
            .seconds(
                "mqtt.reconnect_max_delay", \.mqtt.reconnectMaxDelay, 0...86_400, note: "... up to this; the agent retries for ever",
                remote: true),
            .list(
                "mqtt.failover", \.mqtt.failover, note: "e.g. [\"broker-b.example:8883\", \"10.0.0.12\"]",
                above: [
                    "More brokers (a cluster or a standby), \"host\" or \"host:port\". A failed attempt moves on to the",
                    "next broker at once; the back-off above waits only after every broker failed. Each round",
                    "starts again with host:port above, so the agent returns to it once it is back.",
                ], expected: "\"host\" or \"host:port\" (port 1...65535)",
                parse: { text, c in BrokerEndpoint(parsing: text, defaultPort: c.mqtt.port) }, show: { YAML.quote($0.description) }),
            .choice("mqtt.broker_order", \.mqtt.brokerOrder, note: "in_order, or random (a new order each round, spreads a fleet)"),
            .texts(
                "mqtt.server_reference_allow", \.mqtt.serverReferenceAllow,
                above: [
                    "An MQTT 5 broker may redirect (Server Reference, 0x9C use another server / 0x9D server moved).",
                    "The agent follows only to a broker listed above or to a host named here; others are logged.",
                ], expected: "a host name"),
            ConfigKey(
                path: "mqtt.max_incoming_packet_size", note: "null: commands.max_payload_bytes + 16384",
                above: [
                    "Largest packet taken from the broker (only commands come from it). Announced to a 5.0 broker,",
                    "which then drops larger ones; on 3.1.1 a larger message is acknowledged and skipped unbuffered",
                    "(info: connection.dropped_incoming).",
                ],
                read: { t, c in
                    guard t.value("mqtt.max_incoming_packet_size") != nil else { return }
                    c.mqtt.maxIncomingPacketSize = t.int("mqtt.max_incoming_packet_size", 0, 1024...268_435_460)
                },
                show: { $0.mqtt.maxIncomingPacketSize.map(String.init) ?? "null" },
                explain: { "\($0.incomingPacketLimit) bytes" }),
        ]
    }

    private static var storeKeys: [ConfigKey] {
        [
            .flag("offline_store.enabled", \.store.enabled),
            .text("offline_store.directory", \.store.directory),
            .int("offline_store.capacity_mb", \.store.capacityMB, 1...65_536, note: "fixed size on disk, allocated once", remote: true),
            .choice("offline_store.sync", \.store.sync, remote: true),
            .seconds(
                "offline_store.sync_interval", \.store.syncInterval, 0.01...60,
                note: "seconds: the most a power cut can lose of what was accepted offline", remote: true),
            .choice("offline_store.when_full", \.store.whenFull, remote: true),
            .choice(
                "offline_store.persist", \.store.persist,
                note: "offline: write only while the broker is unreachable; always: every message", remote: true),
            .int(
                "offline_store.max_refusals", \.store.maxRefusals, 1...1000,
                note: "refusals by brokers (for their own reasons) before a message is removed",
                above: [
                    "A message a broker refuses for its own reasons (lower Maximum QoS, no retain, smaller Maximum",
                    "Packet Size, quota) is kept and tried after the next connect; after max_refusals refusals it is",
                    "removed (logged as an error).",
                ]),
        ]
    }

    private static var ledKeys: [ConfigKey] {
        [
            .flag("led.enabled", \.led.enabled, remote: true),
            .choice("led.driver", \.led.driver),
            ConfigKey(
                path: "led.board", note: "a profile in hardware_dir, e.g. raspberry-pi-4 (sets chip, line, active_low)",
                read: { t, c in
                    // A board profile first; the file's own led.chip, led.line, led.active_low go on top.
                    guard let board = t.string("led.board", nil) else { return }
                    c.led.board = board
                    if let profile = Self.boardProfile(board, directory: c.hardwareDirectory, problems: t.problem) {
                        c.led.chip = profile.chip
                        c.led.line = profile.line
                        c.led.activeLow = profile.activeLow
                    }
                }, show: { $0.led.board.map(YAML.quote) ?? "null" }),
            .text("led.chip", \.led.chip),
            .int("led.line", \.led.line, 0...1023),
            .flag("led.active_low", \.led.activeLow),
            .flag("led.required", \.led.required, note: "true: the agent does not start without its LED"),
            .optionalText(
                "led.simulated_log", \.led.simulatedLog, note: "simulated driver: a file that gets \"<ms> on|off\" per transition"),
        ]
            + AgentState.allCases.map { state in
                ConfigKey(
                    path: "led.patterns.\(state.rawValue)", remote: true,
                    read: { t, c in
                        guard let text = t.string("led.patterns.\(state.rawValue)", nil) else { return }
                        do { c.led.patterns[state] = try LightPattern(parsing: text) } catch {
                            t.problem("led.patterns.\(state.rawValue): \(error)")
                        }
                    }, show: { YAML.quote("\($0.led.patterns[state] ?? .off)") })
            }
    }

    private static var commandKeys: [ConfigKey] {
        [
            .flag("commands.enabled", \.commands.enabled),
            .text(
                "commands.topic", \.commands.topic, note: "requests on <topic>/<name>", check: commandTopicProblem,
                explain: { YAML.quote($0.topic($0.commands.topic) + "/<name>") }),
            .optionalText(
                "commands.broadcast_topic", \.commands.broadcastTopic, note: "e.g. fleet/commands: requests to every device",
                check: commandTopicProblem),
            .text(
                "commands.response_topic", \.commands.responseTopic, note: "answers when the request names no response topic",
                check: commandTopicProblem, explain: { YAML.quote($0.topic($0.commands.responseTopic)) }),
            .texts(
                "commands.allow", \.commands.allow,
                above: ["Dangerous, so not allowed by default: config/set, agent/restart, reboot, agent/update."],
                expected: "a command (known: \(knownCommands.joined(separator: ", ")))", check: { knownCommands.contains($0) }),
            .seconds("commands.timeout", \.commands.timeout, 0.1...3600, note: "seconds per command"),
            .int("commands.max_payload_bytes", \.commands.maxPayloadBytes, 64...16_777_216),
            .int("commands.remember", \.commands.remember, 1...100_000, note: "answers kept for repeated request ids (across restarts)"),
            .int("commands.max_queued", \.commands.maxQueued, 1...1000, note: "requests of one command waiting or running; more: busy"),
            .text(
                "commands.reboot_command", \.commands.rebootCommand,
                note: "\"\": ask systemd (edge-agent-reboot.path, from the package); or a command, e.g. /bin/systemctl reboot as root"),
        ]
    }

    private static var updateKeys: [ConfigKey] {
        [
            .texts(
                "update.trusted_keys", \.update.trustedKeys,
                above: ["Signed updates over MQTT (agent/update in commands.allow; docs/UPDATES.md)."],
                expected: "an Ed25519 public key, ed25519:<base64> (the .pub of edge-agent update keygen)",
                check: { if case .success = UpdateKeys.publicKey($0) { true } else { false } }),
            .int("update.max_bytes", \.update.maxBytes, 1024...1_073_741_824, note: "the largest package taken"),
            .flag("update.allow_downgrade", \.update.allowDowngrade, note: "install a version that is not newer than the running one"),
            .seconds(
                "update.confirm_timeout", \.update.confirmTimeout, 10...3600,
                note: "the new version must be online within this, or the previous one is installed again"),
            .text(
                "update.chunk_topic", \.update.chunkTopic, note: "chunks on <chunk_topic>/<16 hex digits of the SHA-256>",
                check: commandTopicProblem, explain: { YAML.quote($0.topic($0.update.chunkTopic) + "/<sha256 prefix>") }),
            .int("update.chunk_size", \.update.chunkSize, 1024...1_048_576, note: "bytes per chunk offered to the operator"),
        ]
    }

    /// A template as it is checked: `{device_id}` filled in (with a stand-in while it is missing).
    private static func checkable(_ template: String, _ c: AgentConfig) -> String {
        template.replacing("{device_id}", with: c.deviceID.isEmpty ? "x" : c.deviceID)
    }

    private static func topicProblem(_ template: String, _ c: AgentConfig) -> String? {
        let expanded = checkable(template, c)
        let problems = [Topic.nameProblem(expanded), expanded.contains("{") ? "only {device_id} may be used in a topic template" : nil]
        let found = problems.compactMap { $0 }
        return found.isEmpty ? nil : found.joined(separator: "; ")
    }

    private static func commandTopicProblem(_ template: String, _ c: AgentConfig) -> String? {
        Topic.nameProblem(checkable(template, c)).map { "\($0) (the agent appends /<command name> itself)" }
    }

    private static func readDeviceID(_ t: ConfigTree, _ c: inout AgentConfig) {
        guard var id = t.string("device_id", nil), !id.isEmpty else {
            t.problem("device_id: missing; set a unique name for this board (e.g. device_id: cam-0042)")
            return
        }
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
    }
}
