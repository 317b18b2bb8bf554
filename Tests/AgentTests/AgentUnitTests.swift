import DeviceAdapters
import Foundation
import NIOPosix
import Testing

@testable import EdgeAgent

#if canImport(Glibc)
import Glibc
#endif

@Suite("Agent configuration")
struct ConfigTests {
    func parse(_ text: String, env: [String: String] = [:], base: String = "/nonexistent") throws -> AgentConfig {
        try AgentConfig.parse(text, source: "test.yaml", environment: env, baseDirectory: base)
    }

    @Test("a minimal file is a device id and a broker; everything else has its default")
    func minimal() throws {
        let c = try parse("device_id: cam-1\nmqtt:\n  host: broker.example\n")
        #expect(c.deviceID == "cam-1" && c.mqtt.host == "broker.example" && c.mqtt.port == 1883)
        #expect(c.topic(c.topics.status) == "device/status" && c.topics.events == "vision/events")
        #expect(c.store.enabled && c.store.capacityMB == 64 && c.store.whenFull == .dropOldest)
        #expect(c.led.patterns[.connected] == .on && c.led.patterns[.offline] == .blink(1000, 1000))
        let m = c.mqttConfig()
        #expect(m.clientID == .fixed("cam-1") && m.cleanStart == false && m.maxReconnectAttempts == 0)
        #expect(m.offlineStore?.capacity == 64 << 20 && m.offlineStore?.maxRefusals == 3)
        #expect(
            try parse("device_id: cam-1\nmqtt:\n  host: b\noffline_store:\n  max_refusals: 5\n").mqttConfig().offlineStore?.maxRefusals == 5
        )
    }

    @Test("the environment overrides any key, secrets included; templates fill in the device id")
    func environment() throws {
        let c = try parse(
            "device_id: cam-2\nmqtt: {host: a, username: u}\ntopics: {status: 'devices/{device_id}/status'}\n",
            env: [
                "EDGE_AGENT_MQTT__PASSWORD": "pw", "EDGE_AGENT_MQTT__PORT": "8883", "EDGE_AGENT_OFFLINE_STORE__ENABLED": "false",
                "OTHER": "x",
            ])
        #expect(c.mqtt.password == "pw" && c.mqtt.port == 8883 && !c.store.enabled)
        #expect(c.topic(c.topics.status) == "devices/cam-2/status")
        #expect(c.rendered().contains("password: \"********\"  # from the environment"))
        #expect(!c.rendered().contains("\"pw\""))
        // A wrong type from the environment is reported like one in the file.
        #expect(throws: ConfigError.self) { try parse("device_id: x\n", env: ["EDGE_AGENT_MQTT__PORT": "eighty"]) }
    }

    @Test("a password to a broker off this machine needs TLS, or mqtt.allow_password_without_tls")
    func passwordNeedsTLS() throws {
        let remote = "device_id: cam\nmqtt:\n  host: broker.fleet.example\n  username: cam\n"
        #expect(throws: ConfigError.self) { try parse(remote, env: ["EDGE_AGENT_MQTT__PASSWORD": "s3cret"]) }
        do { _ = try parse(remote, env: ["EDGE_AGENT_MQTT__PASSWORD": "s3cret"]) } catch {
            #expect("\(error)".contains("password would be sent unencrypted to broker.fleet.example:1883"), "\(error)")
        }
        _ = try parse(remote + "  allow_password_without_tls: true\n", env: ["EDGE_AGENT_MQTT__PASSWORD": "s3cret"])
        _ = try parse(remote + "  port: 8883\n", env: ["EDGE_AGENT_MQTT__PASSWORD": "s3cret"])
        _ = try parse("device_id: cam\nmqtt:\n  host: 127.0.0.1\n  username: cam\n", env: ["EDGE_AGENT_MQTT__PASSWORD": "s3cret"])
    }

    @Test("mqtt.max_incoming_packet_size follows commands.max_payload_bytes, goes to the library, and may not be smaller than a command")
    func incomingPacketLimit() throws {
        let base = "device_id: cam\nmqtt:\n  host: 127.0.0.1\n"
        #expect(try parse(base).mqttConfig().maxIncomingPacketSize == 65_536 + 16_384)
        #expect(try parse(base + "commands:\n  max_payload_bytes: 1024\n").mqttConfig().maxIncomingPacketSize == 1024 + 16_384)
        #expect(try parse(base + "  max_incoming_packet_size: 200000\n").mqttConfig().maxIncomingPacketSize == 200_000)
        #expect(try parse(base).mqttConfig().topicAliasMaximum == 0)
        do {
            _ = try parse(base + "  max_incoming_packet_size: 2000\n")
            Issue.record("accepted a limit below a command's size")
        } catch {
            #expect(
                "\(error)".contains("mqtt.max_incoming_packet_size: 2000 leaves no room for a command of commands.max_payload_bytes 65536"),
                "\(error)")
        }
    }

    @Test(
        "the broker password from the systemd credential mqtt-password: over file and environment; an empty one (as the package makes it) sets nothing"
    )
    func passwordCredential() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cred-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
            .path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = "device_id: cam\nmqtt:\n  host: 127.0.0.1\n  username: cam\n  password: from-file\n"
        let path = dir + "/" + AgentConfig.passwordCredential
        try "s3cret\n".write(toFile: path, atomically: true, encoding: .utf8)
        let c = try parse(file, env: ["CREDENTIALS_DIRECTORY": dir, "EDGE_AGENT_MQTT__PASSWORD": "from-env"])
        #expect(c.mqtt.password == "s3cret")
        #expect(c.rendered().contains("password: \"********\"  # from the systemd credential mqtt-password"))
        #expect(!c.rendered().contains("s3cret"))
        try "".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try parse(file, env: ["CREDENTIALS_DIRECTORY": dir]).mqtt.password == "from-file")
        try FileManager.default.removeItem(atPath: path)
        #expect(try parse(file, env: ["CREDENTIALS_DIRECTORY": dir]).mqtt.password == "from-file")
        // Over 4096 bytes: refused with the key and the file named, not read.
        try String(repeating: "x", count: 5000).write(toFile: path, atomically: true, encoding: .utf8)
        do {
            _ = try parse(file, env: ["CREDENTIALS_DIRECTORY": dir])
            Issue.record("accepted a credential over 4096 bytes")
        } catch {
            #expect("\(error)".contains("mqtt.password: the systemd credential \(path) cannot be read or is over 4096 bytes"), "\(error)")
        }
        // A credential needs a user name like any password.
        try "pw".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: ConfigError.self) { try parse("device_id: cam\nmqtt:\n  host: 127.0.0.1\n", env: ["CREDENTIALS_DIRECTORY": dir]) }
    }

    /// Found by scripts/fuzz config: a value with a newline rendered as invalid YAML (config/get,
    /// check-config).
    @Test("the rendering reads back: strings with newlines, quotes, backslashes and control characters are escaped")
    func renderingReadsBack() throws {
        let id = "a\nb \"q\" \\ \t\u{1}\u{85}\u{2028}é"
        let c = try parse("device_id: cam\nmqtt:\n  host: 127.0.0.1\n  client_id: \(YAML.quote(id))\n")
        #expect(c.mqtt.clientID == id)
        let again = try parse(c.rendered())
        #expect(again.mqtt.clientID == id && again.mqtt.host == "127.0.0.1")
    }

    @Test("every problem at once, each with its key")
    func problems() {
        do {
            _ = try parse(
                "mqtt:\n  port: 0\n  reconnect_initial_delay: 0\n  protocol_version: 4\ntopics:\n  events: 'a/#'\nled:\n  line: -1\n  patterns:\n    offline: fast\nsources:\n  - name: x\n"
            )
            Issue.record("accepted a bad file")
        } catch {
            let text = "\(error)"
            for needle in [
                "device_id: missing", "mqtt.port: 0 is out of range", "mqtt.reconnect_initial_delay: 0 is out of range 0.01...3600.0",
                "mqtt.protocol_version: \"4\" is not one of", "topics.events:",
                "led.line: -1 is out of range", "led.patterns.offline: \"fast\" is not a pattern", "sources[0].type: missing",
            ] {
                #expect(text.contains(needle), "no \"\(needle)\" in \(text)")
            }
        }
    }

    @Test("broken YAML names its line and column; alias bombs and runaway nesting are refused")
    func brokenYAML() {
        func problem(_ text: String) -> String {
            do {
                _ = try parse(text)
                return "accepted"
            } catch {
                return "\(error)"
            }
        }
        let unclosed = problem("device_id: a\nmqtt:\n  host: \"broker\n  port: 1883\n")
        #expect(unclosed.contains("test.yaml is not valid YAML: line") && unclosed.contains("column"), "\(unclosed)")
        let tab = problem("device_id: a\nmqtt:\n\thost: b\n")
        #expect(tab.contains("line 3"), "\(tab)")
        // Each level doubles: 2^20 scalars once the aliases are expanded.
        var bomb = "a0: &a0 [x, x]\n"
        for i in 1...20 { bomb += "a\(i): &a\(i) [*a\(i - 1), *a\(i - 1)]\n" }
        #expect(problem(bomb).contains("more than 100000 nodes"), "\(problem(bomb))")
        let deep = "device_id: a\nx: " + String(repeating: "[", count: 80) + String(repeating: "]", count: 80) + "\n"
        #expect(problem(deep).contains("nested deeper than 64"), "\(problem(deep))")
        #expect(problem("- a\n- b\n").contains("the top level must be a mapping"))
        #expect(problem("").contains("device_id: missing"), "an empty file is an empty mapping")
    }

    @Test("device ids and settable keys: what is allowed and what is refused")
    func namesAndKeys() {
        for good in ["cam-01", "a", "gw_7.site-b", String(repeating: "x", count: 64)] {
            #expect((try? parse("device_id: \(good)\n")) != nil, "\(good)")
        }
        for bad in ["\"a b\"", "\"ca/m\"", "\"cam+\"", String(repeating: "x", count: 65), "\"caméra\""] {
            do {
                _ = try parse("device_id: \(bad)\n")
                Issue.record("accepted device_id \(bad)")
            } catch {
                #expect("\(error)".contains("may use only letters, digits"), "\(error)")
            }
        }
        for key in ["mqtt.keepalive", "log_level", "status.info_interval", "led.patterns.offline"] {
            #expect(ConfigUpdate.settable.contains(key), "\(key)")
        }
        // Nothing that moves the device to another broker, widens what it obeys, or names a path.
        for key in [
            "mqtt.host", "mqtt.port", "mqtt.password", "mqtt.ca_certs", "mqtt.client_id", "device_id", "topics.status", "commands.allow",
            "commands.reboot_command", "led.simulated_log", "led.board", "led.chip", "state_dir", "hardware_dir", "offline_store.directory",
            "sources",
        ] {
            #expect(!ConfigUpdate.settable.contains(key), "\(key) must not be settable remotely")
        }
    }

    @Test("the YAML the agent writes back reads as the same tree: quotes, escapes, lists of mappings, empty values")
    func yamlRoundTrip() throws {
        let text = """
            device_id: "dev \\"one\\"\\ttab"
            plain: 42
            empty: ""
            nothing: ~
            list:
              - type: simulated
                name: cam0
              - "x: y # not a comment"
              - []
            map: {}
            "odd key: 1": yes
            unicode: "caméra ✓\\u0001"
            """
        let tree = try ConfigTree(yaml: text, source: "t.yaml")
        let written = tree.yaml()
        let again = try ConfigTree(yaml: written, source: "written.yaml")
        #expect("\(again.root)" == "\(tree.root)", "\(written)")
        #expect(written.contains("device_id: \"dev \\\"one\\\"\\ttab\""), "\(written)")
        #expect(written.contains("plain: 42\n"), "plain scalars stay plain: \(written)")
    }

    @Test("failover brokers, their order and the Server Reference allow-list reach the MQTT client; a bad entry names its index")
    func failoverConfig() throws {
        let c = try parse(
            """
            device_id: d1
            mqtt:
              host: a.example
              port: 8883
              failover: ["b.example:1884", "c.example", "[fd00::5]:1885"]
              broker_order: random
              server_reference_allow: [d.example]
            """)
        let m = c.mqttConfig()
        #expect(m.brokers.map(\.description) == ["a.example:8883", "b.example:1884", "c.example:8883", "[fd00::5]:1885"])
        #expect(m.brokerOrder == .random)
        #expect(m.serverReferenceAllowList == ["d.example"])
        #expect(c.rendered().contains("failover: [\"b.example:1884\", \"c.example:8883\", \"[fd00::5]:1885\"]"))
        do {
            _ = try parse("device_id: d1\nmqtt:\n  failover: [\"b:99999\", \"ok\"]\n  broker_order: sideways\n")
            Issue.record("accepted a bad failover list")
        } catch {
            #expect("\(error)".contains("mqtt.failover[0]"), "\(error)")
            #expect("\(error)".contains("mqtt.broker_order: \"sideways\" is not one of"), "\(error)")
        }
    }

    @Test("a board profile sets the LED's chip and line; the file's own keys win")
    func boardProfile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("hw-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "name: b\nled:\n  chip: gpiochip4\n  line: 17\n  active_low: true\n".write(
            toFile: dir + "/board-x.yaml", atomically: true, encoding: .utf8)
        let c = try parse("device_id: d\nhardware_dir: \(dir)\nled:\n  board: board-x\n")
        #expect(c.led.chip == "gpiochip4" && c.led.line == 17 && c.led.activeLow)
        let d = try parse("device_id: d\nhardware_dir: \(dir)\nled:\n  board: board-x\n  line: 5\n")
        #expect(d.led.chip == "gpiochip4" && d.led.line == 5)
        #expect(throws: ConfigError.self) { try parse("device_id: d\nhardware_dir: \(dir)\nled:\n  board: nope\n") }
    }

    @Test("the shipped example and the repository's board profiles are valid")
    func shippedFiles() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        _ = try AgentConfig.load(path: root + "/config/edge-agent.example.yaml", environment: [:])
        _ = try AgentConfig.load(path: root + "/config/dev.yaml", environment: [:])
        for board in ["generic", "raspberry-pi-4", "raspberry-pi-5", "jetson-orin-nano"] {
            let c = try parse("device_id: d\nhardware_dir: \(root)/hardware\nled:\n  board: \(board)\n")
            #expect(c.led.board == board)
        }
    }
}

@Suite("Event sequence")
struct SequenceCounterTests {
    static func dir() -> String {
        let d = NSTemporaryDirectory() + "edge-seq-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    @Test("a clean stop continues the count at the next number; a crash skips to the end of the lease; a number is never reused")
    func cleanStopAndCrash() throws {
        let d = Self.dir()
        let a = try SequenceCounter(directory: d, lease: 10)
        #expect(try (0..<4).map { _ in try a.take() } == [1, 2, 3, 4])
        try a.close()
        let b = try SequenceCounter(directory: d, lease: 10)
        #expect(try b.take() == 5, "a clean stop leaves no gap")
        for _ in 0..<12 { _ = try b.take() }  // 6...17: a second lease began at 15
        // No close: a crash. The next start resumes at the end of the lease, above every number taken.
        let c = try SequenceCounter(directory: d, lease: 10)
        #expect(try c.take() == 25)
        try c.close()
        try c.close()  // twice is harmless
        #expect(try SequenceCounter(directory: d, lease: 10).take() == 26)
    }

    @Test(
        "an empty, truncated or garbled sequence file never stops the start and never makes a number come again: the backup, else the milliseconds since 2025"
    )
    func damagedFile() throws {
        for damage in ["", "\n", "12ab\n", "\u{0}\u{0}\u{0}", "-5\n"] {
            let d = Self.dir()
            let a = try SequenceCounter(directory: d, lease: 10)
            for _ in 0..<13 { _ = try a.take() }  // 1...13: the second lease ends at 21
            try damage.write(toFile: d + "/event-sequence", atomically: true, encoding: .utf8)
            let b = try SequenceCounter(directory: d, lease: 10)
            #expect(try b.take() >= 14, "damage \(damage.debugDescription): a number below 14 would come again")
            #expect(b.recovery?.contains("went on from its backup") == true, "\(b.recovery ?? "nil")")
            // Both files damaged: above any number used, counted from 2025 in milliseconds.
            try damage.write(toFile: d + "/event-sequence", atomically: true, encoding: .utf8)
            try "x".write(toFile: d + "/event-sequence.bak", atomically: true, encoding: .utf8)
            let now = Date(timeIntervalSince1970: 1_764_547_200)  // 2025-12-01
            let c = try SequenceCounter(directory: d, lease: 10, now: now)
            #expect(try c.take() == UInt64(now.timeIntervalSince(EventPipeline.clockFloor) * 1000))
            #expect(c.recovery?.contains("milliseconds since 2025") == true)
        }
        // Untrusted clock and no readable file: from 1, and the log says event ids may repeat.
        let d = Self.dir()
        try "?".write(toFile: d + "/event-sequence", atomically: true, encoding: .utf8)
        let e = try SequenceCounter(directory: d, lease: 10, now: Date(timeIntervalSince1970: 0))
        #expect(try e.take() == 1 && e.recovery?.contains("may repeat") == true)
    }
}

@Suite("Remembered command answers")
struct RecentRequestsTests {
    static func recent(_ path: String, capacity: Int) -> RecentRequests<String> {
        RecentRequests(path: path, capacity: capacity, threadPool: .singleton, loop: MultiThreadedEventLoopGroup.singleton.next())
    }

    @Test("a file with an id twice keeps the later answer and never traps; answers from many threads at once leave a valid file")
    func duplicatesAndConcurrency() async throws {
        let dir = SequenceCounterTests.dir()
        let path = dir + "/command-answers.json"
        // Hand-written or damaged: "a" twice.
        try #"[{"id":"z","response":"0"},{"id":"b","response":"2"},{"id":"a","response":"1"},{"id":"a","response":"3"}]"#
            .write(toFile: path, atomically: true, encoding: .utf8)
        let recent = Self.recent(path, capacity: 3)
        guard case .answered(let a) = recent.begin("a", waiter: "r") else {
            Issue.record("a forgotten")
            return
        }
        #expect(a == "3", "the later answer")
        #expect({ if case .answered("2") = recent.begin("b", waiter: "r") { true } else { false } }())
        // Before the fix, evicting the first "a" left the second without an answer: a trap.
        for i in 0..<5 { recent.finish("x\(i)", response: "\(i)") }
        // Many threads answering at once: one write at a time, the newest state last.
        DispatchQueue.concurrentPerform(iterations: 64) { i in recent.finish("t\(i)", response: "\(i)") }
        await recent.flush()
        let saved = try JSONDecoder().decode([RecentRequests<String>.Entry].self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(saved.count == 3 && Set(saved.map(\.id)).count == 3, "\(saved.map(\.id))")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.contains(".new") }
        #expect(leftovers.isEmpty, "temporary files left: \(leftovers)")
        let reopened = Self.recent(path, capacity: 3)
        #expect(saved.allSatisfy { e in if case .answered(e.response) = reopened.begin(e.id, waiter: "r") { true } else { false } })
    }

    /// Before: a repeat while running was dropped, so a second requester asking on its own
    /// response topic got no answer at all.
    @Test("a repeat while running: the same requester is answered once, another requester gets the answer too; busy is not remembered")
    func repeatsWhileRunning() throws {
        let path = SequenceCounterTests.dir() + "/command-answers.json"
        let recent = Self.recent(path, capacity: 10)
        #expect({ if case .new = recent.begin("r1", waiter: "topic-a") { true } else { false } }())
        #expect({ if case .running(waits: false) = recent.begin("r1", waiter: "topic-a") { true } else { false } }())
        #expect({ if case .running(waits: true) = recent.begin("r1", waiter: "topic-b") { true } else { false } }())
        #expect({ if case .running(waits: false) = recent.begin("r1", waiter: "topic-b") { true } else { false } }())
        #expect(recent.finish("r1", response: "done") == ["topic-b"])
        #expect({ if case .answered("done") = recent.begin("r1", waiter: "topic-c") { true } else { false } }())
        // Bounded: beyond maxWaiters further requesters are not queued.
        _ = recent.begin("r2", waiter: "w0")
        var waiting = 0
        for i in 1...20 { if case .running(waits: true) = recent.begin("r2", waiter: "w\(i)") { waiting += 1 } }
        #expect(waiting == RecentRequests<String>.maxWaiters)
        #expect(recent.finish("r2", response: "x").count == RecentRequests<String>.maxWaiters)
        // Refused as busy: forgotten, so the same id runs when sent again.
        _ = recent.begin("r3", waiter: "a")
        _ = recent.begin("r3", waiter: "b")
        #expect(recent.abandon("r3") == ["b"])
        #expect({ if case .new = recent.begin("r3", waiter: "a") { true } else { false } }())
    }
}

@Suite("JSON values")
struct JSONValueTests {
    @Test(
        "nesting deeper than maxDepth is refused before decoding (its cost grows with the cube of the depth); brackets in strings do not count"
    )
    func depth() {
        let ok = String(repeating: "[", count: JSONValue.maxDepth) + String(repeating: "]", count: JSONValue.maxDepth)
        #expect(JSONValue.parse(Array(ok.utf8)) != nil)
        let deep = "[" + ok + "]"
        #expect(JSONValue.parse(Array(deep.utf8)) == nil)
        #expect(JSONValue.depth(of: Array(#"{"a":"[[[[\"{{{{","b":[1,{"c":2}]}"#.utf8)) == 3)
        let request = CommandRequest(payload: Array(deep.utf8), maxPayloadBytes: 4096, hasResponseTopicProperty: false)
        guard case .failure(let refusal) = request.parsed else {
            Issue.record("accepted")
            return
        }
        #expect(refusal.failure.code == "bad_request" && refusal.failure.message.contains("deeper than 64 levels"))
        guard case .rejected(let reason, let message) = SocketLine.parse(Array(("{\"v\":" + deep + "}").utf8)) else {
            Issue.record("socket line accepted")
            return
        }
        #expect(reason == "invalid_json" && message.contains("deeper than 64"))
    }

    @Test("a whole number written as a fraction past a Double's precision reads as an int, and reads back the same once written")
    func wholeNumbers() throws {
        let v = try #require(JSONValue.parse(Array(#"{"n":71111111111111111.1,"f":0.5,"i":3}"#.utf8)))
        guard case .object(let o) = v, case .int? = o["n"] else {
            Issue.record("not an int: \(v)")
            return
        }
        #expect(o["f"] == .number(0.5) && o["i"] == .int(3))
        let again = JSONValue.parse(Array(try JSONEncoder().encode(v)))
        #expect(again == v)
    }
}
