import DeviceAdapters
import FoundationEssentials

/// Home Assistant's MQTT discovery for this device, from the configuration alone (a value: what
/// `HomeAssistantService` publishes and `edge-agent ha remove` empties). Per-entity configs under
/// `<prefix>/<component>/<node>/<object>/config`, the form every Home Assistant release accepts
/// (`event` needs 2023.8 or newer). Every entity has a `unique_id`, the same `device` block and an
/// `origin`; all but the connectivity sensor follow the status topic's `online`/`offline`.
struct HomeAssistantDiscovery {
    struct Entity: Equatable {
        var component: String
        var object: String
        var config: [String: JSONValue]
    }

    let config: AgentConfig
    /// What is published, built once from the configuration.
    private(set) var entities: [Entity] = []

    init(config: AgentConfig) {
        self.config = config
        entities = makeEntities()
    }

    /// The discovery topic's node id: the device id with what Home Assistant does not take there
    /// (anything but letters, digits, `_` and `-`) as `_`.
    var node: String { Self.safe(config.deviceID) }

    /// What Home Assistant takes in a discovery topic's node and object ids: letters, digits, `_`
    /// and `-`; anything else becomes `_`, and then a short hash of the original follows, so that
    /// `gw.7` and `gw_7` do not share ids.
    static func safe(_ text: String) -> String {
        let kept = String(text.map { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") ? $0 : "_" })
        guard kept != text else { return text }
        var hash: UInt32 = 2_166_136_261  // FNV-1a: stable across runs and builds
        for byte in text.utf8 { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
        let hex = String(hash % 0x10000, radix: 16)
        return kept + "_" + String(repeating: "0", count: 4 - hex.count) + hex
    }

    /// A text inside a single-quoted Jinja string of a template.
    static func jinjaQuoted(_ text: String) -> String {
        text.replacing("\\", with: "\\\\").replacing("'", with: "\\'")
    }

    var prefix: String { config.homeAssistant.discoveryPrefix }
    var statusTopic: String { config.topic(config.topics.status) }
    var infoTopic: String { config.topic(config.topics.info) }
    var commandPrefix: String { config.topic(config.commands.topic) }

    /// Where Home Assistant says it (re)started.
    var birthTopic: String { prefix + "/status" }

    /// The topic a button's press arrives on (`press/<command>`: each press runs; no JSON, no id).
    func pressTopic(_ command: String) -> String { commandPrefix + "/" + CommandServer.pressPrefix + command }

    func topic(_ e: Entity) -> String { "\(prefix)/\(e.component)/\(node)/\(e.object)/config" }

    /// Every discovery topic this device may have used: its entities with every optional one on
    /// (the buttons, the LED, the buffer), so that a removal also clears one the configuration
    /// has since turned off.
    var everyTopic: [String] {
        var all = config
        all.commands.enabled = true
        all.commands.allow += ["led/identify", "agent/restart"]
        all.led.enabled = true
        all.store.enabled = true
        let d = HomeAssistantDiscovery(config: all)
        return d.entities.map(d.topic)
    }

    func payload(_ e: Entity) -> [UInt8] { (try? Array(EventPipeline.encoder.encode(JSONValue.object(e.config)))) ?? [] }

    /// The event types each kind of source can emit (a socket source's are configured).
    static func eventTypes(_ source: AgentConfig.Source) -> [String] {
        switch source.type {
        case .simulated: ["detection", "motion"]
        case .socket: source.eventTypes
        case .v4l2: ["camera_online", "camera_offline"]
        case .directory: ["snapshot"]
        }
    }

    var device: JSONValue {
        .object([
            "identifiers": .array([.string("edge-agent_" + node)]), "name": .string(config.deviceID),
            "model": .string(config.led.board ?? "edge gateway"), "manufacturer": .string("edge-agent"),
            "sw_version": .string(EdgeAgentVersion.current),
        ])
    }

    private func makeEntities() -> [Entity] {
        var all: [Entity] = [
            entity(
                "binary_sensor", "connectivity", name: "Connectivity", available: false,
                [
                    "state_topic": .string(statusTopic), "payload_on": .string("online"), "payload_off": .string("offline"),
                    "device_class": .string("connectivity"), "entity_category": .string("diagnostic"),
                ])
        ]
        for s in config.sources where !Self.eventTypes(s).isEmpty {
            all.append(
                entity(
                    "event", "events_" + Self.safe(s.name), name: "\(s.name) events",
                    [
                        "state_topic": .string(config.topic(config.topics.events)),
                        "event_types": .array(Self.eventTypes(s).map(JSONValue.string)),
                        // One events topic for all sources: each entity takes its own; `{}` is ignored.
                        "value_template": .string(
                            "{% if value_json.source == '\(Self.jinjaQuoted(s.name))' %}{{ value }}{% else %}{}{% endif %}"),
                    ]))
        }
        let info = { (object: String, name: String, template: String, more: [String: JSONValue]) -> Entity in
            entity(
                "sensor", object, name: name,
                ["state_topic": .string(infoTopic), "value_template": .string(template), "entity_category": .string("diagnostic")]
                    .merging(more) { $1 })
        }
        if config.store.enabled {
            all.append(
                info(
                    "buffer_pending", "Buffered messages", "{{ value_json.buffer.pending if value_json.buffer is defined else 0 }}",
                    ["state_class": .string("measurement"), "unit_of_measurement": .string("messages")]))
            all.append(
                info(
                    "buffer_fill", "Buffer fill",
                    "{{ ((value_json.buffer.fill * 100) | round(1)) if value_json.buffer is defined else 0 }}",
                    ["state_class": .string("measurement"), "unit_of_measurement": .string("%")]))
        }
        all.append(
            info(
                "reconnects", "Reconnects", "{{ value_json.connection.reconnects }}", ["state_class": .string("total_increasing")]))
        all.append(
            info(
                "uptime", "Uptime", "{{ value_json.uptime_s }}",
                ["device_class": .string("duration"), "unit_of_measurement": .string("s"), "state_class": .string("measurement")]))
        all.append(
            info(
                "events_published", "Events published", "{{ value_json.events.published }}",
                ["state_class": .string("total_increasing")]))
        all.append(
            info(
                "last_event", "Last event", "{{ value_json.events.last_at if value_json.events.last_at is defined else None }}",
                ["device_class": .string("timestamp")]))
        for s in config.sources {
            let pick = "(value_json.sources | selectattr('name', 'equalto', '\(Self.jinjaQuoted(s.name))') | first)"
            all.append(
                info(
                    "source_" + Self.safe(s.name), "\(s.name) source", "{{ \(pick).state }}",
                    ["json_attributes_topic": .string(infoTopic), "json_attributes_template": .string("{{ \(pick).counters | tojson }}")]))
        }
        if config.sources.contains(where: { $0.type == .directory && $0.maxImageBytes > 0 }) {
            // JPEG is the entity's type; a browser shows a PNG sent under it as well.
            all.append(
                entity(
                    "image", "snapshot", name: "Snapshot",
                    ["image_topic": .string(config.topic(config.topics.snapshot)), "content_type": .string("image/jpeg")]))
        }
        if config.commands.enabled {
            let allow = Set(config.commands.allow)
            if allow.contains("led/identify") && config.led.enabled {
                all.append(
                    entity(
                        "button", "identify", name: "Identify",
                        [
                            "command_topic": .string(pressTopic("led/identify")), "payload_press": .string("PRESS"),
                            "device_class": .string("identify"), "entity_category": .string("config"), "qos": .int(0),
                        ]))
            }
            if allow.contains("agent/restart") {
                all.append(
                    entity(
                        "button", "restart", name: "Restart agent",
                        [
                            "command_topic": .string(pressTopic("agent/restart")), "payload_press": .string("PRESS"),
                            "device_class": .string("restart"), "entity_category": .string("config"), "qos": .int(0),
                        ]))
            }
        }
        return all
    }

    private func entity(
        _ component: String, _ object: String, name: String, available: Bool = true, _ fields: [String: JSONValue]
    )
        -> Entity
    {
        var c = fields
        c["name"] = .string(name)
        c["unique_id"] = .string("edge-agent_\(node)_\(object)")
        c["device"] = device
        c["origin"] = .object(["name": .string("edge-agent"), "sw_version": .string(EdgeAgentVersion.current)])
        if c["qos"] == nil { c["qos"] = .int(1) }  // a button's is 0: a press while the agent is away is not queued for it
        if available {
            c["availability_topic"] = .string(statusTopic)
            c["payload_available"] = .string("online")
            c["payload_not_available"] = .string("offline")
        }
        return Entity(component: component, object: object, config: c)
    }
}
