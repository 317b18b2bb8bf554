import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The wall clock of a board without a battery-backed clock is stepped by NTP, `date -s` or a bad
/// time server, both ways, by days or years. The agent runs under libfaketime (Debian's
/// `faketime`) with only `CLOCK_REALTIME` moved (`FAKETIME_DONT_FAKE_MONOTONIC`), its offset
/// read from a file the test rewrites: nothing it schedules may stall, hurry or burst.
@Suite("Wall-clock steps (libfaketime): only the monotonic clock schedules")
struct ClockStepTests {
    typealias Layout = AgentEndToEndTests.Layout

    static let library: String? = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    ].first { FileManager.default.fileExists(atPath: $0) }

    /// The offset of the agent's wall clock: "+0", "-1d", "+365d" (libfaketime's relative format).
    struct SteppedClock {
        let file: String

        init(in dir: String) throws {
            file = dir + "/faketime"
            try step("+0")
        }

        func step(_ offset: String) throws {
            try offset.write(toFile: file, atomically: true, encoding: .utf8)
            usleep(1_200_000)  // libfaketime reads the file again after FAKETIME_CACHE_DURATION (1 s)
        }

        var environment: [String: String] {
            [
                "LD_PRELOAD": ClockStepTests.library!, "FAKETIME_TIMESTAMP_FILE": file, "FAKETIME_CACHE_DURATION": "1",
                "FAKETIME_DONT_FAKE_MONOTONIC": "1", "FAKETIME_DONT_RESET": "1",
            ]
        }

        /// The agent with this clock. Through /usr/bin/env: libfaketime's constructor calls setenv
        /// (FAKETIME_SHARED) in the first process it loads into, which moves `environ`, from which
        /// the Swift runtime finds argv; a program started directly then sees no arguments. In
        /// env's child the variable is already there.
        func start(_ layout: Layout) throws -> Child {
            try Child.spawn(
                "/usr/bin/env", [AgentEndToEndTests.binary, "run", "--config", layout.config],
                output: layout.dir + "/agent-faketime.log", environment: environment)
        }
    }

    /// How many lines `sub` gets in the next `seconds`.
    static func count(_ sub: ExternalSubscriber, during seconds: Double) -> Int {
        let before = sub.lines.count
        usleep(UInt32(seconds * 1e6))
        return sub.lines.count - before
    }

    @Test(
        "connected: after a step back by a day and forward by a year, events come at their rate, info documents on time, commands are answered, the link stays up",
        .enabled(if: library != nil))
    func connected() throws {
        let broker = try Broker.start()
        defer { broker.stop() }
        let layout = try Layout()
        try layout.write(
            port: broker.port, extra: "commands:\n  timeout: 2\n", sources: "  - type: simulated\n    name: cam0\n    rate: 10")
        let clock = try SteppedClock(in: layout.dir)
        let status = try ExternalSubscriber(broker: broker, topic: layout.statusTopic, qos: 1, format: "%p")
        let events = try ExternalSubscriber(broker: broker, topic: layout.eventsTopic, qos: 1, format: "%p")
        let info = try ExternalSubscriber(broker: broker, topic: layout.infoTopic, qos: 1, format: "%p")
        let replies = try ExternalSubscriber(
            broker: broker, topic: "devices/\(layout.device)/response", qos: 1, format: "%D|%p", extraArgs: ["-V", "mqttv5"])
        let agent = try clock.start(layout)
        defer { agent.stop() }
        try waitUntil(timeout: 30, "online") { status.lines.contains("online") }
        try waitUntil(timeout: 10, "commands subscribed") { agent.output.contains("commands on devices/") }
        let base = Self.count(events, during: 3)
        #expect(base >= 20, "10 events/s before any step: \(base) in 3 s")
        for offset in ["-1d", "+365d", "+0"] {
            try clock.step(offset)
            let n = Self.count(events, during: 3)
            #expect(n >= 20 && n <= 45, "after the step to \(offset): \(n) events in 3 s at 10/s (a stall or a burst)")
            let docs = Self.count(info, during: 2.5)
            #expect(docs >= 1, "after the step to \(offset): \(docs) info documents in 2.5 s at an interval of 1 s")
            let id = "clock\(offset)"
            try CommandTests.send(broker, "devices/\(layout.device)/commands/ping", #"{"id":"\#(id)"}"#)
            #expect(try CommandTests.answer(replies, id: id, timeout: 10).body["status"] as? String == "ok")
        }
        #expect(status.lines == ["online"], "the link stayed up (no offline, no reconnect): \(status.lines)")
        // The events are stamped with the (stepped) wall clock, which is what a stamp is for.
        let years = Set(AgentEndToEndTests.events(events).compactMap { ($0["timestamp"] as? String)?.prefix(4) })
        #expect(years.count >= 2, "timestamps follow the wall clock: \(years)")
    }

    @Test(
        "offline: across steps both ways the LED keeps its slow blink, events are buffered at their rate, and the back-off finds the broker back",
        .enabled(if: library != nil))
    func offline() throws {
        var broker = try Broker.start()
        defer { broker.stop() }
        let layout = try Layout()
        try layout.write(port: broker.port, sources: "  - type: simulated\n    name: cam0\n    rate: 5")
        let clock = try SteppedClock(in: layout.dir)
        let first = try ExternalSubscriber(broker: broker, topic: layout.statusTopic, qos: 1, format: "%p")
        let agent = try clock.start(layout)
        defer { agent.stop(signal: SIGKILL) }
        try waitUntil(timeout: 30, "online") { first.lines.contains("online") }
        broker.stop()
        let downAt = layout.led.last?.ms ?? 0
        try waitUntil(timeout: 15, "the offline pattern") { AgentEndToEndTests.intervals(layout.led, after: downAt + 1).count >= 3 }
        let started = Date()
        for offset in ["-1d", "+365d"] {
            let at = layout.led.last?.ms ?? 0
            try clock.step(offset)
            usleep(4_000_000)
            let gaps = AgentEndToEndTests.intervals(layout.led, after: at)
            #expect(gaps.count >= 3 && gaps.allSatisfy { $0 >= 700 && $0 <= 1600 }, "the slow blink after the step to \(offset): \(gaps)")
        }
        try clock.step("+0")
        let outage = Date().timeIntervalSince(started)  // the test's own clock is not stepped
        broker = try broker.restarted()
        let status = try ExternalSubscriber(broker: broker, topic: layout.statusTopic, qos: 1, format: "%p")
        let events = try ExternalSubscriber(broker: broker, topic: layout.eventsTopic, qos: 1, format: "%p")
        try waitUntil(timeout: 10, "online again within the back-off (reconnect_max_delay 0.5 s)") { status.lines.contains("online") }
        // What was buffered during the steps: about 5 per second, neither stalled nor a burst.
        try waitUntil(timeout: 20, "the buffered events") { events.lines.count >= Int(outage * 5 * 0.6) }
        usleep(500_000)
        let seqs = AgentEndToEndTests.events(events).compactMap { $0["seq"] as? Int }
        #expect(seqs == seqs.sorted() && Set(seqs).count == seqs.count, "in order, once each")
        #expect(Double(seqs.count) <= (outage + 10) * 5 * 1.5, "\(seqs.count) events for \(Int(outage)) s offline at 5/s: a burst")
    }

    @Test(
        "a quiet connection: keep-alive pings go on across a step back, so the broker keeps the link",
        .enabled(if: library != nil))
    func keepAlive() throws {
        let broker = try Broker.start()
        defer { broker.stop() }
        let layout = try Layout()
        // keepalive 5 (the layout's): without a PINGREQ the broker drops the link after 7.5 s.
        try layout.write(port: broker.port, sources: "  - type: simulated\n    name: cam0\n    rate: 0.001")
        let quiet = try String(contentsOfFile: layout.config, encoding: .utf8).replacingOccurrences(
            of: "info_interval: 1\n", with: "info_interval: 3600\n")
        try quiet.write(toFile: layout.config, atomically: true, encoding: .utf8)
        let clock = try SteppedClock(in: layout.dir)
        let status = try ExternalSubscriber(broker: broker, topic: layout.statusTopic, qos: 1, format: "%p")
        let agent = try clock.start(layout)
        defer { agent.stop() }
        try waitUntil(timeout: 30, "online") { status.lines.contains("online") }
        try clock.step("-1d")
        usleep(12_000_000)
        #expect(status.lines == ["online"], "the broker dropped the quiet link: \(status.lines)")
        #expect(!agent.output.contains("connection lost"), "\(agent.output)")
    }

    @Test(
        "a board that starts offline with its clock in 2024: once NTP sets it, the buffered events carry the time of their uptime, with clock_corrected",
        .enabled(if: library != nil))
    func correctedTimestamps() throws {
        let broker = try Broker.start()
        defer { broker.stop() }
        // The agent goes through a proxy that first leads nowhere: it is offline from the start,
        // and every event waits in the offline store; the subscriber is on the broker already.
        let proxy = try TCPProxy(to: 1)
        let layout = try Layout()
        try layout.write(port: proxy.port, sources: "  - type: simulated\n    name: cam0\n    rate: 5")
        let events = try ExternalSubscriber(broker: broker, topic: layout.eventsTopic, qos: 1, format: "%p")
        let clock = try SteppedClock(in: layout.dir)
        try clock.step("-800d")  // 2024: before the 2025 floor, so not trusted
        let agent = try clock.start(layout)
        defer { agent.stop() }
        try waitUntil(timeout: 20, "the agent running offline") { agent.output.contains("state: offline") }
        let offlineFrom = Date()
        usleep(3_000_000)  // events at 5/s, stamped in 2024
        let linesBefore = agent.output.split(separator: "\n").count
        try clock.step("+0")  // NTP: the clock is right again
        // libfaketime reads the file again only when its cache is over a second old (in whole
        // seconds: up to two); until then the agent's clock is still in 2024. Its log lines (one
        // per reconnect attempt) carry its wall clock: the first stamped this year says it moved.
        let thisYear = String(Date().ISO8601Format().prefix(5))
        try waitUntil(timeout: 10, "the agent's clock right again") {
            agent.output.split(separator: "\n").dropFirst(linesBefore).contains { $0.hasPrefix(thisYear) }
        }
        proxy.upstreamPort.withLockedValue { $0 = broker.port }
        try waitUntil(timeout: 20, "buffered events and new ones") {
            let e = AgentEndToEndTests.events(events)
            return e.count >= 12 && e.contains { $0["clock_trusted"] as? Bool == true }
        }
        let received = Date()
        let all = AgentEndToEndTests.events(events)
        let boot = try String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8).trimmingCharacters(
            in: .whitespacesAndNewlines)
        #expect(all.allSatisfy { $0["boot_id"] as? String == boot }, "every event names this boot: \(all.prefix(1))")
        let stale = all.filter { $0["clock_trusted"] as? Bool == false }
        #expect(stale.count >= 8, "events stamped in 2024 while offline: \(stale.count)")
        let parse = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        for e in stale {
            let stamp = e["timestamp"] as? String ?? ""
            let when = try? parse.parse(stamp)
            #expect(e["clock_corrected"] as? Bool == true, "\(e)")
            #expect(
                when.map { $0 >= offlineFrom.addingTimeInterval(-2) && $0 <= received } == true,
                "the time it happened, from its uptime (offline since \(offlineFrom)): \(stamp)")
        }
        let fresh = all.filter { $0["clock_trusted"] as? Bool == true }
        #expect(fresh.allSatisfy { $0["clock_corrected"] == nil }, "a trusted stamp is not touched")
        let stamps = all.sorted { ($0["seq"] as? Int ?? 0) < ($1["seq"] as? Int ?? 0) }.compactMap { $0["timestamp"] as? String }
        #expect(stamps == stamps.sorted(), "in seq order the corrected and the new stamps run forward: \(stamps)")
    }

    @Test("no code schedules by the wall clock: deadlines, waits and intervals are monotonic (a scan of Sources/)")
    func noWallClockScheduling() throws {
        // What reads the wall clock to wait or to compare against a deadline. A stamp (Date() put
        // into an event or a log line) is fine; these are not.
        let forbidden = [
            #"Date\(\)\.addingTimeInterval"#, #"timeIntervalSinceNow"#, #"wait\(until: *Date"#, #"Date\(\) *[<>]"#,
            #"DispatchWallTime"#, #"\.walltime"#, #"Thread\.sleep\(until"#, #"pthread_cond_init\([^,]+, *nil\)"#,
            // Dispatch's timers arm absolute timerfds that libfaketime moves with the wall clock, so
            // the tests above could not show them right: the agent's timers are NIO's.
            #"asyncAfter\("#, #"makeTimerSource"#,
        ]
        let root = OfflineStoreIntegrationTests.packageRoot.appendingPathComponent("Sources").path
        var found: [String] = []
        let files = try #require(FileManager.default.enumerator(atPath: root)).compactMap { $0 as? String }.filter {
            $0.hasSuffix(".swift") || $0.hasSuffix(".c")
        }
        #expect(files.count > 40, "the scan found the sources: \(files.count) files")
        for file in files {
            let text = try String(contentsOfFile: root + "/" + file, encoding: .utf8)
            for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                if forbidden.contains(where: { line.range(of: $0, options: .regularExpression) != nil }) {
                    found.append("Sources/\(file):\(n + 1): \(line.trimmingCharacters(in: .whitespaces))")
                }
            }
        }
        #expect(
            found.isEmpty,
            "wall-clock scheduling (use NIODeadline, NIO scheduled tasks or EventLoop.sleep(until:)):\n\(found.joined(separator: "\n"))")
    }

    @Test(
        "the agent's runtime is services on one event-loop group: no thread, Dispatch queue, sleep or loop group of its own in Sources/EdgeAgent, Sources/DeviceAdapters or Sources/edge-agent; at most three @unchecked Sendable, each saying why"
    )
    func runtimeShape() throws {
        let forbidden = [
            #"\bThread\b"#, #"pthread_create"#, #"import Dispatch"#, #"Dispatch(Queue|Semaphore|Source|Group)"#, #"\busleep\("#,
            #"^\s*[^/]*\bsleep\(\d"#, #"Task\.sleep"#, #"MultiThreadedEventLoopGroup\(numberOfThreads"#, #"NIOThreadPool\(numberOfThreads"#,
        ]
        let root = OfflineStoreIntegrationTests.packageRoot.appendingPathComponent("Sources").path
        var found: [String] = []
        var unchecked: [String] = []
        for folder in ["EdgeAgent", "DeviceAdapters", "edge-agent"] {
            let files = try #require(FileManager.default.enumerator(atPath: root + "/" + folder)).compactMap { $0 as? String }.filter {
                $0.hasSuffix(".swift")
            }
            #expect(!files.isEmpty, "\(folder): the scan found its sources")
            for file in files {
                let path = "\(folder)/\(file)"
                let lines = try String(contentsOfFile: root + "/" + path, encoding: .utf8).split(
                    separator: "\n", omittingEmptySubsequences: false)
                for (n, line) in lines.enumerated() where !line.trimmingCharacters(in: .whitespaces).hasPrefix("//") {
                    // The one group and the one pool are made where the runtime is built.
                    let allowed = path == "EdgeAgent/Runtime/AgentRuntime.swift" && line.contains("(numberOfThreads:")
                    if !allowed && forbidden.contains(where: { line.range(of: $0, options: .regularExpression) != nil }) {
                        found.append("Sources/\(path):\(n + 1): \(line.trimmingCharacters(in: .whitespaces))")
                    }
                    if line.contains("@unchecked Sendable") {
                        let said = lines[..<n].suffix(4).contains { $0.contains("`@unchecked Sendable`:") }
                        unchecked.append("Sources/\(path):\(n + 1)\(said ? "" : " (no comment above says why)")")
                    }
                }
            }
        }
        #expect(found.isEmpty, "hand-made threads, Dispatch or sleeps in the agent's runtime:\n\(found.joined(separator: "\n"))")
        #expect(unchecked.count <= 3 && unchecked.allSatisfy { !$0.contains("no comment") }, "\(unchecked)")
    }
}
