import DeviceAdapters
import Foundation
import Testing

@testable import EdgeAgent

/// The discovery configs as values: what Home Assistant is told, without a broker.
@Suite("Home Assistant discovery")
struct HomeAssistantDiscoveryTests {
    func config(_ extra: String = "") throws -> AgentConfig {
        try AgentConfig.parse(
            """
            device_id: gw.7
            home_assistant:
              enabled: true
            topics:
              status: devices/{device_id}/status
              events: devices/{device_id}/events
            sources:
              - {type: simulated, name: cam0}
              - {type: socket, name: pipeline, event_types: [person_seen, car_seen]}
              - {type: v4l2, name: cameras}
              - {type: directory, name: snapshots, path: /tmp}
            \(extra)
            """, source: "test.yaml", environment: [:], baseDirectory: "/nonexistent")
    }

    func json(_ bytes: [UInt8]) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
    }

    @Test(
        "one retained config per entity under <prefix>/<component>/<node>/<object>/config, each with a unique id, the same device and an origin"
    )
    func configs() throws {
        let d = HomeAssistantDiscovery(config: try config())
        // Letters, digits, _ and - only; what was changed gets a hash, so gw.7 and gw_7 differ.
        let node = d.node
        #expect(node.hasPrefix("gw_7_") && node.count == 9 && node == HomeAssistantDiscovery.safe("gw.7"), "\(node)")
        #expect(HomeAssistantDiscovery.safe("gw_7") == "gw_7" && HomeAssistantDiscovery.safe("gw-7") == "gw-7")
        let topics = d.entities.map(d.topic)
        #expect(Set(topics).count == topics.count && topics.allSatisfy { $0.hasPrefix("homeassistant/") && $0.hasSuffix("/config") })
        #expect(topics.contains("homeassistant/binary_sensor/\(node)/connectivity/config"))
        #expect(topics.contains("homeassistant/event/\(node)/events_pipeline/config"))
        let payloads = try d.entities.map { try json(d.payload($0)) }
        let ids = payloads.compactMap { $0["unique_id"] as? String }
        #expect(ids.count == payloads.count && Set(ids).count == ids.count, "\(ids)")
        let devices = payloads.compactMap { $0["device"] as? [String: Any] }
        #expect(devices.count == payloads.count)
        #expect(devices.allSatisfy { ($0["identifiers"] as? [String]) == ["edge-agent_\(node)"] && $0["name"] as? String == "gw.7" })
        #expect(devices.allSatisfy { $0["sw_version"] as? String == EdgeAgentVersion.current && $0["model"] != nil })
        #expect(payloads.allSatisfy { ($0["origin"] as? [String: Any])?["name"] as? String == "edge-agent" && $0["name"] != nil })
        // Availability follows the status topic, except on the sensor that shows it.
        for (e, p) in zip(d.entities, payloads) {
            let available = p["availability_topic"] as? String
            #expect(e.object == "connectivity" ? available == nil : available == "devices/gw.7/status", "\(e.object)")
        }
        let connectivity = try #require(payloads.first { $0["device_class"] as? String == "connectivity" })
        #expect(connectivity["state_topic"] as? String == "devices/gw.7/status" && connectivity["payload_on"] as? String == "online")
    }

    @Test("an event entity per source with the types it can emit, each taking only its own source's events from the one events topic")
    func events() throws {
        let d = HomeAssistantDiscovery(config: try config())
        let events = try d.entities.filter { $0.component == "event" }.map { ($0.object, try json(d.payload($0))) }
        let types = Dictionary(uniqueKeysWithValues: events.map { ($0.0, $0.1["event_types"] as? [String] ?? []) })
        #expect(
            types == [
                "events_cam0": ["detection", "motion"], "events_pipeline": ["person_seen", "car_seen"],
                "events_cameras": ["camera_online", "camera_offline"], "events_snapshots": ["snapshot"],
            ])
        #expect(events.allSatisfy { $0.1["state_topic"] as? String == "devices/gw.7/events" })
        let template = try #require(events.first { $0.0 == "events_cam0" }?.1["value_template"] as? String)
        #expect(template.contains("value_json.source == 'cam0'") && template.contains("{}"), "\(template)")
    }

    @Test("sensors read the info document; the identify button is there by default, restart only when commands.allow has it")
    func sensorsAndButtons() throws {
        let d = HomeAssistantDiscovery(config: try config())
        let objects = Set(d.entities.map(\.object))
        #expect(objects.isSuperset(of: ["buffer_pending", "buffer_fill", "reconnects", "uptime", "last_event", "source_cam0", "identify"]))
        #expect(!objects.contains("restart"))
        for e in d.entities where e.component == "sensor" {
            #expect(e.config["state_topic"] == .string("device/info"), "\(e.object)")
        }
        let identify = try json(d.payload(try #require(d.entities.first { $0.object == "identify" })))
        #expect(
            identify["command_topic"] as? String == "devices/gw.7/commands/press/led/identify"
                && identify["payload_press"] as? String == "PRESS")
        let allowed = HomeAssistantDiscovery(config: try config("commands:\n  allow: [ping, agent/restart]"))
        #expect(allowed.entities.contains { $0.object == "restart" } && !allowed.entities.contains { $0.object == "identify" })
        // A removal clears every topic the device may have used, the restart button's too.
        #expect(
            Set(d.everyTopic).isSuperset(of: d.entities.map(d.topic)) && d.everyTopic.contains { $0.contains("/button/\(d.node)/restart/") }
        )
    }

    @Test("a source's name goes into the templates quoted: a quote or a backslash in it cannot break them")
    func quotedNames() throws {
        let c = try AgentConfig.parse(
            "device_id: d\nhome_assistant:\n  enabled: true\nsources:\n  - {type: simulated, name: \"bob's \\\\ cam\"}\n", source: "t",
            environment: [:], baseDirectory: "/x")
        let d = HomeAssistantDiscovery(config: c)
        let template = try #require(d.entities.first { $0.component == "event" }?.config["value_template"]?.stringValue)
        #expect(template.contains(#"value_json.source == 'bob\'s \\ cam'"#), "\(template)")
        #expect(d.entities.allSatisfy { !$0.object.contains("'") && !$0.object.contains(" ") })
    }

    @Test("the discovery prefix and a socket source's event types are checked like every key")
    func badKeys() {
        #expect(throws: ConfigError.self) {
            try AgentConfig.parse(
                "device_id: d\nhome_assistant:\n  discovery_prefix: \"ha/#\"\n", source: "t", environment: [:], baseDirectory: "/x")
        }
        #expect(throws: ConfigError.self) {
            try AgentConfig.parse(
                "device_id: d\nsources:\n  - {type: socket, name: s, event_types: nope}\n", source: "t", environment: [:],
                baseDirectory: "/x")
        }
    }
}
