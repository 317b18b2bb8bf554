import Foundation
import NIOConcurrencyHelpers
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The `edge-agent` program as a user runs it: a real mosquitto, simulated hardware (LED, camera
/// devices, a vision pipeline writing to the socket), and independent subscribers.
@Suite("edge-agent end to end")
struct AgentEndToEndTests {
    static var binary: String { TestFiles.product("edge-agent") }

    /// A scratch layout for one agent: config, state, buffer, socket, fake /dev and sysfs, snapshots.
    struct Layout {
        let dir: String
        let device: String
        /// Every test agent serves its metrics on a port of its own (many run at once).
        let metricsPort = Broker.freePort()
        var config: String { dir + "/config.yaml" }
        var socket: String { dir + "/events.sock" }
        var dev: String { dir + "/dev" }
        var sysfs: String { dir + "/sys" }
        var snapshots: String { dir + "/snapshots" }
        var ledLog: String { dir + "/led.log" }
        var statusTopic: String { "devices/\(device)/status" }
        var infoTopic: String { "devices/\(device)/info" }
        var eventsTopic: String { "e2e/\(device)/events" }

        init() throws {
            dir = TestFiles.makeTempDir("agent").path
            device = "e2e-\(UUID().uuidString.prefix(6).lowercased())"
            for d in [dev, sysfs, snapshots] { try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true) }
        }

        func write(port: Int, extra: String = "", sources: String? = nil, led: String? = nil, metrics: String? = nil) throws {
            let text = """
                device_id: \(device)
                mqtt:
                  host: 127.0.0.1
                  port: \(port)
                  keepalive: 5
                  reconnect_initial_delay: 0.1
                  reconnect_max_delay: 0.5
                topics:
                  status: devices/{device_id}/status
                  info: devices/{device_id}/info
                  events: e2e/{device_id}/events
                status:
                  info_interval: 1
                offline_store:
                  directory: \(dir)/buffer
                  capacity_mb: 2
                led:
                \(led ?? "  driver: simulated\n  simulated_log: \(ledLog)")
                sources:
                \(sources ?? """
                  - type: simulated
                    name: cam0
                    rate: 20
                  - type: socket
                    name: pipeline
                    path: \(socket)
                    max_line_bytes: 1024
                  - type: v4l2
                    name: cameras
                    directory: \(dev)
                    sysfs: \(sysfs)
                    poll_interval: 0.1
                  - type: directory
                    name: snapshots
                    path: \(snapshots)
                """)
                state_dir: \(dir)/state
                metrics:
                \(metrics ?? "  listen: 127.0.0.1:\(metricsPort)")
                \(extra)
                """
            try text.write(toFile: config, atomically: true, encoding: .utf8)
        }

        func start(_ extraEnv: [String: String] = [:]) throws -> Child {
            try Child.spawn(
                AgentEndToEndTests.binary, ["run", "--config", config], output: dir + "/agent-\(UUID().uuidString.prefix(4)).log",
                environment: extraEnv)
        }

        /// The LED transitions the simulated light wrote: (ms, on).
        var led: [(ms: Int, on: Bool)] {
            ((try? String(contentsOfFile: ledLog, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { line in
                let f = line.split(separator: " ")
                guard f.count == 2, let ms = Int(f[0]) else { return nil }
                return (ms, f[1] == "on")
            }
        }
    }

    static func events(_ sub: ExternalSubscriber) -> [[String: Any]] {
        sub.lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// Writes lines to the agent's socket, as a vision pipeline would.
    static func writeSocket(_ path: String, _ lines: [String]) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in path.utf8.prefix(raw.count - 1).enumerated() { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { throw TestFailure("cannot connect to \(path): errno \(errno)") }
        let text = lines.joined(separator: "\n") + "\n"
        _ = text.withCString { send(fd, $0, strlen($0), 0) }
    }

    /// Changes between "on" and "off" durations longer than `ms` × 0.5 after `from` (a pattern's rhythm).
    static func intervals(_ led: [(ms: Int, on: Bool)], after from: Int) -> [Int] {
        let tail = led.filter { $0.ms >= from }
        return zip(tail, tail.dropFirst()).map { $1.ms - $0.ms }
    }

    @Test(
        "the agent runs: retained online, events from every source with the documented schema and rising sequence numbers, info, LED; SIGTERM says offline"
    )
    func fullRun() throws {
        let broker = try Broker.start()
        defer { broker.stop() }
        let layout = try Layout()
        try layout.write(port: broker.port)
        // A camera present before the start, with a sysfs name and driver.
        _ = FileManager.default.createFile(atPath: layout.dev + "/video0", contents: nil)
        try FileManager.default.createDirectory(atPath: layout.sysfs + "/video0/device", withIntermediateDirectories: true)
        try "Test Camera 0\n".write(toFile: layout.sysfs + "/video0/name", atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(
            atPath: layout.sysfs + "/video0/device/driver", withDestinationPath: "../../bus/usb/drivers/uvcvideo")
        let status = try ExternalSubscriber(broker: broker, topic: layout.statusTopic, qos: 1, format: "%r|%p")
        let events = try ExternalSubscriber(broker: broker, topic: layout.eventsTopic, qos: 1, format: "%p")
        let agent = try layout.start()
        defer { agent.stop(signal: SIGKILL) }
        _ = try status.waitForLines(1, timeout: 30)
        #expect(status.lines.first == "0|online", "\(status.lines) \(agent.output)")  // live: retain flag 0
        let early = try ExternalSubscriber(broker: broker, topic: layout.statusTopic, qos: 1, format: "%r|%p")
        _ = try early.waitForLines(1)
        #expect(early.lines.first == "1|online", "the status is retained")

        // The vision pipeline: valid lines, garbage, a line over max_line_bytes, from two writers.
        try Self.writeSocket(
            layout.socket,
            [
                #"{"type":"detection","label":"person","score":0.91,"bbox":{"x":1,"y":2,"w":3,"h":4}}"#,
                "this is not json",
                #"{"label":"untyped"}"#,
            ])
        try Self.writeSocket(layout.socket, [String(repeating: "x", count: 2000), #"{"type":"line_cross","line":"gate"}"#, "[1,2,3]"])
        // A camera appears and goes; a snapshot is written (temporary name, then renamed in).
        _ = FileManager.default.createFile(atPath: layout.dev + "/video7", contents: nil)
        let image = [UInt8]((0..<5000).map { UInt8($0 % 251) })
        _ = FileManager.default.createFile(atPath: layout.snapshots + "/.shot.tmp", contents: Data(image))
        rename(layout.snapshots + "/.shot.tmp", layout.snapshots + "/shot-1.jpg")
        usleep(600_000)
        unlink(layout.dev + "/video7")

        try waitUntil(timeout: 20, "events of every kind") {
            let types = Set(Self.events(events).compactMap { $0["type"] as? String })
            return types.isSuperset(of: ["detection", "motion", "camera_online", "camera_offline", "snapshot", "line_cross", "external"])
        }
        let all = Self.events(events)
        // Schema: every field, ids and sequence numbers.
        var lastSeq = 0
        for e in all {
            for key in ["event_id", "device_id", "source", "source_type", "type", "seq", "timestamp", "clock_trusted", "uptime_ms", "data"]
            {
                #expect(e[key] != nil, "event without \(key): \(e)")
            }
            let seq = e["seq"] as? Int ?? 0
            #expect(seq > lastSeq, "sequence numbers must rise: \(seq) after \(lastSeq)")
            lastSeq = seq
            #expect(e["event_id"] as? String == "\(layout.device)-\(seq)")
            #expect(e["device_id"] as? String == layout.device)
            #expect((e["timestamp"] as? String)?.hasSuffix("Z") == true && e["clock_trusted"] as? Bool == true)
        }
        func first(_ type: String) -> [String: Any]? { all.first { $0["type"] as? String == type } }
        let cam = try #require(first("camera_online")?["data"] as? [String: Any])
        #expect(
            cam["device"] as? String == layout.dev + "/video0" && cam["name"] as? String == "Test Camera 0"
                && cam["driver"] as? String == "uvcvideo")
        #expect((first("camera_offline")?["data"] as? [String: Any])?["device"] as? String == layout.dev + "/video7")
        let shot = try #require(first("snapshot")?["data"] as? [String: Any])
        #expect(shot["path"] as? String == layout.snapshots + "/shot-1.jpg" && shot["size"] as? Int == 5000)
        let sha = try Broker.run("/usr/bin/sha256sum", [layout.snapshots + "/shot-1.jpg"]).prefix(64)
        #expect(shot["sha256"] as? String == String(sha))
        #expect(all.filter { $0["source"] as? String == "pipeline" }.count == 3)
        let det = try #require(
            all.first { $0["source"] as? String == "pipeline" && $0["type"] as? String == "detection" }?["data"] as? [String: Any])
        #expect(det["label"] as? String == "person" && det["score"] as? Double == 0.91)

        // The info document counts what the socket rejected, and why.
        let info = try ExternalSubscriber(broker: broker, topic: layout.infoTopic, qos: 1, format: "%p")
        try waitUntil(timeout: 10, "an info document with the socket's counters") {
            info.lines.contains {
                $0.contains("rejected_too_large") && $0.contains("rejected_invalid_json") && $0.contains("rejected_not_object")
            }
        }
        let doc = try #require(info.lines.last.flatMap { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] })
        #expect(doc["state"] as? String == "connected" && doc["device_id"] as? String == layout.device && doc["version"] != nil)
        #expect((doc["buffer"] as? [String: Any])?["pending"] != nil)
        #expect(agent.output.contains("rejected a line: not valid JSON"))
        // The LED is solid on while connected.
        #expect(layout.led.last?.on == true)

        // SIGTERM: the agent's own retained offline, exit 0, LED off.
        agent.stop(signal: SIGTERM)
        _ = try status.waitForLines(2, timeout: 10)
        #expect(status.lines.last == "0|offline", "\(status.lines)")
        let late = try ExternalSubscriber(broker: broker, topic: layout.statusTopic, qos: 1, format: "%r|%p")
        _ = try late.waitForLines(1)
        #expect(late.lines.first == "1|offline", "retained status after a clean stop")
        #expect(layout.led.last?.on == false)
        // The clean stop's order (AgentRuntime): sources, then the connection, then the LED.
        let log = agent.output
        let order = [
            "stopping: SIGTERM or SIGINT", "source pipeline (socket) stopped", "MQTT disconnected", "state: stopped",
            "info edge-agent: stopped",
        ]
        let at = order.map { log.range(of: $0)?.lowerBound }
        #expect(at.allSatisfy { $0 != nil } && zip(at, at.dropFirst()).allSatisfy { $0! < $1! }, "the stop's log lines in order: \(order)")

        // The sequence goes on after a clean restart: never reused, and without a gap.
        let beforeRestart = Self.events(events).count
        let again = try layout.start()
        defer { again.stop() }
        try waitUntil(timeout: 20, "events after the restart") { Self.events(events).count > beforeRestart + 2 }
        let newSeqs = Self.events(events).dropFirst(all.count).compactMap { $0["seq"] as? Int }
        #expect(newSeqs.allSatisfy { $0 > lastSeq }, "after restart: \(newSeqs.prefix(3)) vs last \(lastSeq)")
        let every = Set(Self.events(events).compactMap { $0["seq"] as? Int }).sorted()
        #expect(
            every == Array(every.first!...every.last!),
            "a clean stop leaves no gap: \(zip(every, every.dropFirst()).filter { $1 != $0 + 1 }.prefix(3))")
    }

    @Test(
        "the directory source meets a FIFO, a symlink, a file over max_hash_bytes and its folder removed and made again without harm, each counted"
    )
    func hostileSnapshotFolder() throws {
        let broker = try SharedBroker.get()
        let layout = try Layout()
        try layout.write(
            port: broker.port, sources: "  - type: directory\n    name: snapshots\n    path: \(layout.snapshots)\n    max_hash_bytes: 4096")
        let events = try ExternalSubscriber(broker: broker, topic: layout.eventsTopic, qos: 1, format: "%p")
        let info = try ExternalSubscriber(broker: broker, topic: layout.infoTopic, qos: 1, format: "%p")
        let agent = try layout.start()
        defer { agent.stop() }
        try waitUntil(timeout: 30, "the source started") { agent.output.contains("source snapshots (directory) started") }
        let dir = layout.snapshots
        /// A file of `bytes` put in under a temporary name and renamed, as a camera does.
        func put(_ name: String, _ bytes: Int) {
            _ = FileManager.default.createFile(atPath: dir + "/.\(name).tmp", contents: Data(repeating: 7, count: bytes))
            rename(dir + "/.\(name).tmp", dir + "/" + name)
        }
        // A FIFO renamed in: opening it for reading used to block the source for ever.
        #expect(mkfifo(dir + "/.pipe.tmp", 0o644) == 0)
        rename(dir + "/.pipe.tmp", dir + "/pipe.jpg")
        // A symlink to a file the agent may read: not followed.
        #expect(symlink("/etc/hostname", dir + "/.link.tmp") == 0)
        rename(dir + "/.link.tmp", dir + "/link.jpg")
        put("small.jpg", 1000)
        put("large.jpg", 10_000)
        try waitUntil(timeout: 10, "the small and the large file") { Self.events(events).count >= 2 }
        let byPath = Dictionary(
            Self.events(events).map { (($0["data"] as? [String: Any])?["path"] as? String ?? "", $0["data"] as? [String: Any] ?? [:]) },
            uniquingKeysWith: { a, _ in a })
        #expect((byPath[dir + "/small.jpg"]?["sha256"] as? String)?.count == 64, "\(byPath)")
        let large = try #require(byPath[dir + "/large.jpg"], "\(byPath)")
        #expect(
            large["size"] as? Int == 10_000 && large["sha256"] == nil
                && (large["hash_skipped"] as? String)?.contains("max_hash_bytes") == true, "\(large)")
        #expect(byPath[dir + "/pipe.jpg"] == nil && byPath[dir + "/link.jpg"] == nil, "\(byPath.keys)")
        // The folder removed and made again: watched again, and what is in it is reported.
        try FileManager.default.removeItem(atPath: dir)
        usleep(300_000)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        put("after.jpg", 500)
        try waitUntil(timeout: 15, "the file in the folder made again") {
            Self.events(events).contains { (($0["data"] as? [String: Any])?["path"] as? String) == dir + "/after.jpg" }
        }
        try waitUntil(timeout: 10, "the counters in the info document") {
            guard let line = info.lines.last, let doc = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                let source = (doc["sources"] as? [[String: Any]])?.first(where: { $0["name"] as? String == "snapshots" }),
                let c = source["counters"] as? [String: Int]
            else { return false }
            return ["not_regular", "symlink", "hash_skipped", "folder_gone", "folder_back"].allSatisfy { (c[$0] ?? 0) >= 1 }
                && (c["snapshots"] ?? 0) >= 3
        }
    }

    @Test(
        "the directory source's event queue overflows (the agent stopped while 100 files arrive): the folder is scanned and every file reported",
        .enabled(if: getuid() == 0))
    func snapshotQueueOverflow() throws {
        let broker = try SharedBroker.get()
        let layout = try Layout()
        try layout.write(port: broker.port, sources: "  - type: directory\n    name: snapshots\n    path: \(layout.snapshots)")
        let events = try ExternalSubscriber(broker: broker, topic: layout.eventsTopic, qos: 1, format: "%p")
        let info = try ExternalSubscriber(broker: broker, topic: layout.infoTopic, qos: 1, format: "%p")
        // A queue of 16 events for the inotify instance the agent makes now (the limit is read
        // when an instance is made; the old one is back once the agent has its own).
        let limit = "/proc/sys/fs/inotify/max_queued_events"
        let old = try String(contentsOfFile: limit, encoding: .utf8)
        try "16\n".write(toFile: limit, atomically: false, encoding: .utf8)
        let agent: Child
        do {
            defer { try? old.write(toFile: limit, atomically: false, encoding: .utf8) }
            agent = try layout.start()
            try waitUntil(timeout: 30, "the source started") { agent.output.contains("source snapshots (directory) started") }
        }
        defer { agent.stop() }
        kill(agent.pid, SIGSTOP)
        let names = (0..<100).map { "burst-\($0).jpg" }
        for n in names {
            _ = FileManager.default.createFile(atPath: layout.snapshots + "/." + n + ".tmp", contents: Data(n.utf8))
            rename(layout.snapshots + "/." + n + ".tmp", layout.snapshots + "/" + n)
        }
        kill(agent.pid, SIGCONT)
        try waitUntil(timeout: 20, "every file of the burst") {
            Set(Self.events(events).compactMap { ($0["data"] as? [String: Any])?["path"] as? String }).count >= names.count
        }
        let paths = Set(Self.events(events).compactMap { ($0["data"] as? [String: Any])?["path"] as? String })
        #expect(paths == Set(names.map { layout.snapshots + "/" + $0 }))
        // It was the scan that found them: the kernel said it dropped events.
        try waitUntil(timeout: 10, "the overflow counted in the info document") {
            info.lines.contains { $0.contains("\"queue_overflow\":") }
        }
    }

    @Test("SIGKILL: the broker publishes the Will, offline, retained")
    func willOnKill() throws {
        let broker = try SharedBroker.get()
        let layout = try Layout()
        try layout.write(port: broker.port, sources: "  - type: simulated\n    name: cam0\n    rate: 1")
        let status = try ExternalSubscriber(broker: broker, topic: layout.statusTopic, qos: 1, format: "%r|%p")
        let agent = try layout.start()
        _ = try status.waitForLines(1, timeout: 30)
        #expect(status.lines.first == "0|online")
        agent.stop(signal: SIGKILL)
        _ = try status.waitForLines(2, timeout: 15)
        #expect(status.lines.last?.hasSuffix("|offline") == true, "\(status.lines)")
        let late = try ExternalSubscriber(broker: broker, topic: layout.statusTopic, qos: 1, format: "%r|%p")
        _ = try late.waitForLines(1)
        #expect(late.lines.first == "1|offline")
    }

    @Test(
        "broker down and back: the LED goes from solid to the slow blink and back, events are buffered and arrive in order, the status is online again"
    )
    func brokerOutage() throws {
        var broker = try Broker.start()
        defer { broker.stop() }
        let layout = try Layout()
        try layout.write(port: broker.port, sources: "  - type: simulated\n    name: cam0\n    rate: 20")
        let first = try ExternalSubscriber(broker: broker, topic: layout.statusTopic, qos: 1, format: "%p")
        let agent = try layout.start()
        defer { agent.stop(signal: SIGKILL) }
        _ = try first.waitForLines(1, timeout: 30)
        usleep(300_000)
        let solid = layout.led
        #expect(solid.last?.on == true, "LED solid on when connected: \(solid.suffix(3))")
        usleep(300_000)
        #expect(layout.led.count == solid.count, "a solid LED does not blink")
        broker.stop()
        let downAt = layout.led.last?.ms ?? 0
        // The slow blink: several transitions about 1 s apart.
        try waitUntil(timeout: 15, "the offline pattern") { Self.intervals(layout.led, after: downAt + 1).count >= 3 }
        let gaps = Self.intervals(layout.led, after: downAt + 1).dropFirst()
        #expect(gaps.allSatisfy { $0 >= 700 && $0 <= 1600 }, "slow blink intervals: \(Array(gaps))")
        broker = try broker.restarted()
        let status = try ExternalSubscriber(broker: broker, topic: layout.statusTopic, qos: 1, format: "%r|%p")
        let events = try ExternalSubscriber(broker: broker, topic: layout.eventsTopic, qos: 1, format: "%p")
        try waitUntil(timeout: 30, "online again") { status.lines.contains { $0.hasSuffix("|online") } }
        try waitUntil(timeout: 10, "LED solid again") { layout.led.last?.on == true }
        // The events of the outage come first, in order, with no gap in the sequence.
        try waitUntil(timeout: 20, "buffered events") { Self.events(events).count > 40 }
        let seqs = Self.events(events).compactMap { $0["seq"] as? Int }
        #expect(seqs == seqs.sorted(), "events out of order")
        #expect(Set(seqs).count == seqs.count)
        let gapsInSeq = zip(seqs, seqs.dropFirst()).filter { $1 != $0 + 1 }
        #expect(gapsInSeq.isEmpty, "missing events: \(gapsInSeq.prefix(5))")
        #expect(agent.output.contains("state: offline") && agent.output.contains("reconnected"), "\(agent.output)")
    }

    @Test("refused credentials: the error state and its LED pattern (three flashes, a pause); the password comes from the environment")
    func authenticationError() throws {
        let broker = try Broker.start(Broker.Options(users: ["cam": "right-password"]))
        defer { broker.stop() }
        let layout = try Layout()
        try layout.write(port: broker.port, extra: "", sources: "  - type: simulated\n    name: cam0\n    rate: 1")
        var text = try String(contentsOfFile: layout.config, encoding: .utf8)
        text = text.replacingOccurrences(of: "  keepalive: 5", with: "  keepalive: 5\n  username: cam")
        try text.write(toFile: layout.config, atomically: true, encoding: .utf8)
        let agent = try layout.start(["EDGE_AGENT_MQTT__PASSWORD": "wrong-password"])
        defer { agent.stop(signal: SIGKILL) }
        try waitUntil(timeout: 20, "state error") { agent.output.contains("state: error") }
        #expect(agent.output.contains("refused user \"cam\""), "\(agent.output)")
        let from = layout.led.last?.ms ?? 0
        try waitUntil(timeout: 10, "a few rounds of the error pattern") { Self.intervals(layout.led, after: from + 1).count >= 10 }
        let g = Self.intervals(layout.led, after: from + 1)
        #expect(g.contains { $0 >= 800 } && g.filter { $0 < 300 }.count >= 6, "error pattern intervals: \(g)")
        // Fixed credentials (the same environment variable) and a restart: connected.
        agent.stop()
        let fixed = try layout.start(["EDGE_AGENT_MQTT__PASSWORD": "right-password"])
        defer { fixed.stop() }
        try waitUntil(timeout: 20, "connected with the right password") { fixed.output.contains("state: connected") }
    }

    @Test("the LED: a missing GPIO chip is logged and the agent runs without it; with led.required it refuses to start")
    func missingChip() throws {
        let broker = try SharedBroker.get()
        let layout = try Layout()
        let led = "  driver: gpiod\n  chip: gpiochip-missing-\(getpid())\n  line: 3"
        try layout.write(port: broker.port, sources: "  - type: simulated\n    name: cam0\n    rate: 1", led: led)
        let status = try ExternalSubscriber(broker: broker, topic: layout.statusTopic, qos: 1, format: "%p")
        let agent = try layout.start()
        _ = try status.waitForLines(1, timeout: 30)
        #expect(agent.output.contains("status LED unavailable, going on without it: cannot open GPIO gpiochip-missing"), "\(agent.output)")
        #expect(agent.output.contains("No such file or directory"))
        agent.stop()
        try layout.write(port: broker.port, sources: "  - type: simulated\n    name: cam0\n    rate: 1", led: led + "\n  required: true")
        let refused = try layout.start()
        #expect(try refused.wait(timeout: 20) == 1)
        #expect(refused.output.contains("status LED required (led.required) but cannot open GPIO"), "\(refused.output)")
    }

    @Test("check-config lists every problem with its key and exits 78; a valid file prints the effective configuration with secrets masked")
    func checkConfig() throws {
        let layout = try Layout()
        try """
        device_id: "two words"
        mqtt:
          host: 127.0.0.1
          prot: 1883
          port: 70000
          keepalive: soon
          ca_certs: \(layout.dir)/missing-ca.pem
        offline_store:
          when_full: drop_newest
        sources:
          - type: socket
            name: s
            bogus: 1
        """.write(toFile: layout.config, atomically: true, encoding: .utf8)
        let out = layout.dir + "/check.out"
        let bad = try Child.spawn(Self.binary, ["check-config", layout.config], output: out)
        #expect(try bad.wait() == 78)
        let text = bad.output
        for needle in [
            "device_id: \"two words\" may use only", "mqtt.prot: unknown key (did you mean mqtt.port?)", "mqtt.port: 70000 is out of range",
            "mqtt.keepalive: expected a whole number", "mqtt.ca_certs: \(layout.dir)/missing-ca.pem cannot be read",
            "offline_store.when_full: \"drop_newest\" is not one of drop_oldest, reject_newest",
            "sources[0].bogus: unknown key for a socket source",
        ] {
            #expect(text.contains(needle), "missing \"\(needle)\" in:\n\(text)")
        }
        let missing = try Child.spawn(Self.binary, ["check-config", layout.dir + "/nope.yaml"], output: out + "2")
        #expect(try missing.wait() == 78)
        #expect(missing.output.contains("nope.yaml does not exist"))
        try layout.write(port: 1883, extra: "log_level: debug")
        let good = try Child.spawn(
            Self.binary, ["check-config", layout.config], output: out + "3",
            environment: ["EDGE_AGENT_MQTT__PASSWORD": "s3cret-pw", "EDGE_AGENT_MQTT__USERNAME": "cam"])
        #expect(try good.wait() == 0, "\(good.output)")
        #expect(good.output.contains("password: \"********\"  # from the environment"))
        #expect(!good.output.contains("s3cret-pw"))
        #expect(good.output.contains("status: \"devices/{device_id}/status\"  # \"devices/\(layout.device)/status\""), "\(good.output)")
        // A run with a bad file refuses to start, with the same list.
        try "device_id: x\nmqtt: {port: zero}\n".write(toFile: layout.config, atomically: true, encoding: .utf8)
        let run = try layout.start()
        #expect(try run.wait(timeout: 20) == 78)
        #expect(run.output.contains("mqtt.port: expected a whole number"))
    }
}
