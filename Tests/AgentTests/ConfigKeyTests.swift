import Foundation
import Testing

@testable import EdgeAgent

/// The key table is the one declaration of each key: the example file, check-config's output and
/// what `config/set` may change all come from it.
@Suite("Configuration keys")
struct ConfigKeyTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .path

    func parse(_ text: String) throws -> AgentConfig {
        try AgentConfig.parse(text, source: "test.yaml", environment: [:], baseDirectory: "/nonexistent")
    }

    @Test("config/edge-agent.example.yaml is what the table generates, and it reads back as the defaults")
    func exampleFile() throws {
        let path = Self.root + "/config/edge-agent.example.yaml"
        let file = try String(contentsOfFile: path, encoding: .utf8)
        let generated = AgentConfig.example()
        #expect(
            file == generated,
            "config/edge-agent.example.yaml differs from the key table: run `swift run edge-agent check-config --example > config/edge-agent.example.yaml`"
        )
        let c = try AgentConfig.parse(generated, source: "example.yaml", environment: [:], baseDirectory: Self.root + "/config")
        var expected = AgentConfig()
        expected.deviceID = "cam-0042"
        expected.sources = AgentConfig.Source.samples
        expected.hardwareDirectory = c.hardwareDirectory
        #expect(c.rendered() == expected.rendered(), "the example holds every default")
        #expect(c.sources.map(\.type) == SourceKind.allCases, "one source of each kind")
    }

    @Test("every key is declared once, and every source key belongs to a kind")
    func everyKeyOnce() {
        let paths = AgentConfig.keys.map(\.path)
        #expect(Set(paths).count == paths.count, "a key declared twice: \(paths)")
        let sourceKeys = AgentConfig.Source.keys.map(\.name)
        #expect(Set(sourceKeys).count == sourceKeys.count && AgentConfig.Source.keys.allSatisfy { !$0.kinds.isEmpty })
    }

    @Test("a value of every kind other than its default survives rendering and reading back")
    func everyKeyRoundTrips() throws {
        let text = """
            device_id: cam-7
            mqtt:
              host: broker.example
              port: 8883
              username: u
              password: pw
              protocol_version: "3.1.1"
              timeout: 2.5
              failover: ["b:1884", c]
              broker_order: random
              server_reference_allow: [d.example]
              max_incoming_packet_size: 100000
            offline_store: {sync: none, when_full: reject_newest, persist: always}
            led: {driver: gpiod, patterns: {offline: "blink 200/300"}}
            log_level: debug
            sources:
              - {type: socket, name: s, max_connections: 5, max_lines_per_second: 7}
              - {type: simulated, name: cam, rate: 0.5, labels: [cat]}
            commands: {allow: [ping, reboot], broadcast_topic: fleet/cmd}
            """
        let c = try parse(text)
        #expect(c.mqtt.protocolVersion == .v3_1_1 && c.mqtt.brokerOrder == .random && c.store.sync == .none)
        #expect(c.store.whenFull == .rejectNewest && c.store.persist == .always && c.led.driver == .gpiod && c.logLevel == .debug)
        #expect(c.mqtt.maxIncomingPacketSize == 100_000 && c.incomingPacketLimit == 100_000)
        // The password is masked, so it comes back from the environment as a user would give it.
        let again = try AgentConfig.parse(c.rendered(), source: "r", environment: ["EDGE_AGENT_MQTT__PASSWORD": "pw"], baseDirectory: "/x")
        #expect(again.rendered().replacing("  # from the environment", with: "") == c.rendered())
        #expect(again.sources[0].maxConnections == 5 && again.sources[0].maxLinesPerSecond == 7, "every key of a socket source is shown")
        #expect(again.sources[1].rate == 0.5 && again.sources[1].labels == ["cat"])
        #expect(again.mqtt.failover.map(\.description) == ["b:1884", "c:8883"] && again.commands.allow == ["ping", "reboot"])
        #expect(!c.rendered().contains("pw"))
    }

    @Test("what config/set may change is what the table marks remote")
    func remoteKeys() {
        #expect(ConfigUpdate.settable == Set(AgentConfig.keys.filter(\.remote).map(\.path)))
        #expect(ConfigUpdate.settable.contains("led.patterns.error") && !ConfigUpdate.settable.contains("commands.allow"))
    }

    @Test("a wrong choice or list item names the key, the value and what is allowed")
    func choiceProblems() {
        do {
            _ = try parse(
                "device_id: a\nlog_level: loud\nled: {driver: pwm}\ncommands: {allow: [ping, format-disk]}\nsources: [{type: usb}]\n")
            Issue.record("accepted")
        } catch {
            let text = "\(error)"
            for needle in [
                "log_level: \"loud\" is not one of trace, debug, info, notice, warning, error, critical",
                "led.driver: \"pwm\" is not one of simulated, gpiod", "commands.allow[1]: expected a command (known: ping,",
                "found \"format-disk\"", "sources[0].type: \"usb\" is not one of simulated, socket, v4l2, directory",
            ] {
                #expect(text.contains(needle), "no \"\(needle)\" in \(text)")
            }
        }
    }

    @Test("a bad list item, template or source type names its key and is refused; nothing else is taken from it")
    func listAndTemplateProblems() {
        do {
            _ = try parse(
                """
                device_id: a
                mqtt: {failover: ["b:99999", c], server_reference_allow: [""]}
                topics: {status: "s/{device}/#"}
                commands: {broadcast_topic: "fleet/+"}
                sources: [{type: [socket]}, {name: x}]
                """)
            Issue.record("accepted")
        } catch {
            let text = "\(error)"
            for needle in [
                "mqtt.failover[0]: expected \"host\" or \"host:port\" (port 1...65535), found \"b:99999\"",
                "mqtt.server_reference_allow[0]: expected a host name", "topics.status:",
                "only {device_id} may be used in a topic template",
                "commands.broadcast_topic:", "(the agent appends /<command name> itself)", "sources[0].type: expected a text value",
                "sources[1].type: missing",
            ] {
                #expect(text.contains(needle), "no \"\(needle)\" in \(text)")
            }
            #expect(!text.contains("mqtt.failover[1]"), "a good item next to a bad one is taken")
        }
    }
}
