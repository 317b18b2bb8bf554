import Foundation
import NIOConcurrencyHelpers
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Remote commands against the running `edge-agent`, with mosquitto_pub / mosquitto_sub as the
/// operator (an independent client), MQTT 5 and 3.1.1.
@Suite("edge-agent commands over MQTT")
struct CommandTests {
    typealias Layout = AgentEndToEndTests.Layout

    static let quietSources = "  - type: simulated\n    name: cam0\n    rate: 0.2"

    /// Starts an agent (commands allowed as given) and waits until it is online.
    static func agent(
        _ broker: Broker, port: Int? = nil, allow: [String]? = nil, extra: String = "", environment: [String: String] = [:]
    ) throws -> (Layout, Child) {
        let layout = try Layout()
        var more = "commands:\n  max_payload_bytes: 2048\n  timeout: 2\n"
        if let allow { more += "  allow: [\(allow.joined(separator: ", "))]\n" }
        try layout.write(port: port ?? broker.port, extra: more + extra, sources: quietSources)
        let status = try ExternalSubscriber(broker: broker, topic: layout.statusTopic, qos: 1, format: "%p")
        let child = try layout.start(environment)
        try waitUntil(timeout: 30, "agent online") { status.lines.contains("online") }
        try waitUntil(timeout: 10, "commands subscribed") { child.output.contains("commands on devices/") }
        usleep(200_000)
        return (layout, child)
    }

    /// Sends one request with mosquitto_pub.
    static func send(
        _ broker: Broker, _ topic: String, _ payload: String, v5: Bool = true, responseTopic: String? = nil, correlation: String? = nil,
        auth: [String] = [], retain: Bool = false
    ) throws {
        var args =
            ["-h", "127.0.0.1", "-p", "\(broker.port)", "-q", "1", "-t", topic, "-m", payload, "-V", v5 ? "mqttv5" : "mqttv311"] + auth
        if retain { args.append("-r") }
        if let responseTopic { args += ["-D", "publish", "response-topic", responseTopic] }
        if let correlation { args += ["-D", "publish", "correlation-data", correlation] }
        try Broker.run("/usr/bin/mosquitto_pub", args)
    }

    static func json(_ line: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]) ?? [:]
    }

    /// The answer with this id among "correlation|payload" lines.
    static func answer(_ sub: ExternalSubscriber, id: String?, timeout: Double = 10) throws -> (correlation: String, body: [String: Any]) {
        var found: (String, [String: Any])?
        try waitUntil(timeout: timeout, "answer to \(id ?? "(no id)")") {
            for line in sub.lines {
                let parts = line.split(separator: "|", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
                guard parts.count == 2 else { continue }
                let body = json(parts[1])
                if (body["id"] as? String) == id, id != nil || body["id"] == nil || body["id"] is NSNull {
                    found = (parts[0], body)
                    return true
                }
            }
            return false
        }
        return found!
    }

    @Test("edge-agent send: an operator's command through MQTT 5 request/response, answered by the running agent")
    func sendSubcommand() throws {
        let broker = try SharedBroker.get()
        let (layout, child) = try Self.agent(broker)
        defer { child.stop(signal: SIGTERM) }
        let out = layout.dir + "/send.out"
        let ping = try Child.spawn(
            AgentEndToEndTests.binary, ["send", "--config", layout.config, "--device", layout.device, "ping"], output: out)
        #expect(try ping.wait(timeout: 30) == 0, "\(ping.output)")
        let answer = Self.json(ping.output.split(separator: "\n").first { $0.hasPrefix("{") }.map(String.init) ?? "")
        #expect(answer["status"] as? String == "ok", "\(ping.output)")
        #expect((answer["result"] as? [String: Any])?["device_id"] as? String == layout.device)
        // An error answer and a device that does not answer both exit 1, saying why.
        let bad = try Child.spawn(
            AgentEndToEndTests.binary, ["send", "--config", layout.config, "--device", layout.device, "no/such/command"], output: out + "2")
        #expect(try bad.wait(timeout: 30) == 1)
        #expect(bad.output.contains("unknown_command"), "\(bad.output)")
        let nobody = try Child.spawn(
            AgentEndToEndTests.binary, ["send", "--config", layout.config, "--device", "not-there", "ping", "--timeout", "1"],
            output: out + "3")
        #expect(try nobody.wait(timeout: 30) == 1)
        #expect(nobody.output.contains("no answer from not-there"), "\(nobody.output)")
    }

    @Test("MQTT 5: the answer goes to the request's response topic with its correlation data; 3.1.1: to the response topic, id inside")
    func requestResponse() throws {
        let broker = try Broker.start()
        defer { broker.stop() }
        let (layout, agent) = try Self.agent(broker)
        defer { agent.stop() }
        let replies = try ExternalSubscriber(broker: broker, topic: "op/replies", qos: 1, format: "%D|%p", extraArgs: ["-V", "mqttv5"])
        let fallback = try ExternalSubscriber(
            broker: broker, topic: "devices/\(layout.device)/response", qos: 1, format: "%D|%p", extraArgs: ["-V", "mqttv5"])
        let commands = "devices/\(layout.device)/commands"
        try Self.send(broker, commands + "/ping", #"{"id":"p-1"}"#, responseTopic: "op/replies", correlation: "corr-77")
        let (corr, ping) = try Self.answer(replies, id: "p-1")
        #expect(corr == "corr-77")
        #expect(ping["status"] as? String == "ok" && (ping["result"] as? [String: Any])?["pong"] as? Bool == true)
        // 3.1.1: no properties; the answer goes to the documented topic.
        try Self.send(broker, commands + "/status", #"{"id":"s-1"}"#, v5: false)
        let (_, status) = try Self.answer(fallback, id: "s-1")
        let result = try #require(status["result"] as? [String: Any])
        #expect(result["device_id"] as? String == layout.device && result["state"] as? String == "connected" && result["version"] != nil)
        // 3.1.1 with the fields inside the JSON.
        try Self.send(
            broker, commands + "/buffer/stats", #"{"id":"b-1","response_topic":"op/replies","correlation_data":"c-9"}"#, v5: false)
        let (_, stats) = try Self.answer(replies, id: "b-1")
        #expect(stats["correlation_data"] as? String == "c-9" && (stats["result"] as? [String: Any])?["enabled"] as? Bool == true)
        // config/get masks secrets; log/level and led/set work; sources can be stopped and started.
        try Self.send(broker, commands + "/config/get", #"{"id":"g-1"}"#, responseTopic: "op/replies")
        let (_, got) = try Self.answer(replies, id: "g-1")
        #expect(((got["result"] as? [String: Any])?["config"] as? String)?.contains("device_id: \"\(layout.device)\"") == true)
        try Self.send(
            broker, commands + "/led/set", #"{"id":"l-1","args":{"pattern":"blink 300/300","seconds":30}}"#, responseTopic: "op/replies")
        #expect(try Self.answer(replies, id: "l-1").body["status"] as? String == "ok")
        try waitUntil(timeout: 5, "LED overridden") {
            AgentEndToEndTests.intervals(layout.led, after: 0).suffix(3).allSatisfy { $0 >= 200 && $0 <= 500 } && layout.led.count > 4
        }
        try Self.send(broker, commands + "/source/disable", #"{"id":"d-1","args":{"name":"cam0"}}"#, responseTopic: "op/replies")
        #expect((try Self.answer(replies, id: "d-1").body["result"] as? [String: Any])?["running"] as? Bool == false)
        try Self.send(broker, commands + "/source/enable", #"{"id":"e-1","args":{"name":"cam0"}}"#, responseTopic: "op/replies")
        #expect((try Self.answer(replies, id: "e-1").body["result"] as? [String: Any])?["running"] as? Bool == true)
        try Self.send(broker, commands + "/log/level", #"{"id":"v-1","args":{"level":"debug"}}"#, responseTopic: "op/replies")
        #expect(try Self.answer(replies, id: "v-1").body["status"] as? String == "ok")
        // log/tail: the board's last log lines over MQTT, filtered by level.
        try Self.send(broker, commands + "/log/tail", #"{"id":"t-1","args":{"lines":200}}"#, responseTopic: "op/replies")
        let tail = try #require((try Self.answer(replies, id: "t-1").body["result"] as? [String: Any])?["lines"] as? [String])
        #expect(tail.contains { $0.contains("info edge-agent: commands on devices/") } && tail.count <= 200, "\(tail.suffix(3))")
        try Self.send(broker, commands + "/ping", "not json", responseTopic: "op/replies")  // a warning to find
        try waitUntil(timeout: 5, "the warning") { agent.output.contains(" warning edge-agent: command ping") }
        try Self.send(broker, commands + "/log/tail", #"{"id":"t-2","args":{"lines":5,"level":"warning"}}"#, responseTopic: "op/replies")
        let warnings = try #require((try Self.answer(replies, id: "t-2").body["result"] as? [String: Any])?["lines"] as? [String])
        #expect(
            warnings.contains { $0.contains("command ping") } && warnings.count <= 5
                && warnings.allSatisfy { $0.contains(" warning ") || $0.contains(" error ") || $0.contains(" critical ") },
            "\(warnings)")
    }

    /// The process's open descriptors and threads, from /proc.
    static func resources(_ pid: pid_t) -> (fds: Int, threads: Int) {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let threads = status.split(separator: "\n").first { $0.hasPrefix("Threads:") }.flatMap {
            Int($0.dropFirst(8).trimmingCharacters(in: .whitespaces))
        }
        return (fds, threads ?? -1)
    }

    @Test("source/restart 100 times in a row for each kind of source leaks no thread and no file descriptor; each comes back running")
    func hundredRestarts() throws {
        let broker = try Broker.start()
        defer { broker.stop() }
        let layout = try Layout()
        try layout.write(port: broker.port, extra: "commands:\n  timeout: 10\n")
        let status = try ExternalSubscriber(broker: broker, topic: layout.statusTopic, qos: 1, format: "%p")
        let agent = try layout.start()
        defer { agent.stop() }
        try waitUntil(timeout: 30, "agent online") { status.lines.contains("online") }
        try waitUntil(timeout: 10, "sources started") { agent.output.contains("source snapshots (directory) started") }
        let replies = try ExternalSubscriber(broker: broker, topic: "op/restarts", qos: 1, format: "%p", extraArgs: ["-V", "mqttv5"])
        let names = ["cam0", "pipeline", "cameras", "snapshots"]
        var answered = 0
        /// One request per source in one mosquitto_pub, then all four answers.
        func restartAll(_ round: Int) throws {
            let batch = TestFiles.makeTempDir("batch").appendingPathComponent("lines").path
            try names.map { #"{"id":"r-\#(round)-\#($0)","args":{"name":"\#($0)"}}"# }.joined(separator: "\n").appending("\n")
                .write(toFile: batch, atomically: true, encoding: .utf8)
            let pub = try Child.spawn(
                "/usr/bin/mosquitto_pub",
                [
                    "-h", "127.0.0.1", "-p", "\(broker.port)", "-q", "1", "-V", "mqttv5", "-t",
                    "devices/\(layout.device)/commands/source/restart",
                    "-D", "publish", "response-topic", "op/restarts", "-l",
                ],
                output: batch + ".out", stdin: batch)
            #expect(try pub.wait() == 0)
            answered += names.count
            try waitUntil(timeout: 20, "answers of round \(round)") { replies.lines.count >= answered }
        }
        try restartAll(0)  // every part of the runtime has run once
        let before = Self.resources(agent.pid)
        for round in 1...100 { try restartAll(round) }
        let after = Self.resources(agent.pid)
        let bodies = replies.lines.map(Self.json)
        let results = bodies.compactMap { $0["result"] as? [String: Any] }
        #expect(
            results.count == 404 && results.allSatisfy { $0["running"] as? Bool == true },
            "\(bodies.filter { $0["status"] as? String != "ok" }.prefix(3))")
        #expect(Set(results.suffix(4).compactMap { $0["restarts"] as? Int }) == [101], "\(results.suffix(4))")
        #expect(after.fds == before.fds, "file descriptors before and after 400 restarts: \(before.fds) → \(after.fds)")
        #expect(after.threads <= before.threads, "threads before and after: \(before.threads) → \(after.threads)")
        print("100 restarts of 4 sources: fds \(before.fds) → \(after.fds), threads \(before.threads) → \(after.threads)")
        // And the sources still work: a line on the socket is an event.
        let events = try ExternalSubscriber(broker: broker, topic: layout.eventsTopic, qos: 1, format: "%p")
        try AgentEndToEndTests.writeSocket(layout.socket, [#"{"type":"after_restarts"}"#])
        try waitUntil(timeout: 10, "an event after the restarts") { events.lines.contains { $0.contains("after_restarts") } }
    }

    @Test("forbidden, unknown, malformed and oversized requests get a precise error, a log line and a counter; the agent goes on")
    func badRequests() throws {
        let broker = try Broker.start()
        defer { broker.stop() }
        let (layout, agent) = try Self.agent(broker)
        defer { agent.stop() }
        let replies = try ExternalSubscriber(
            broker: broker, topic: "devices/\(layout.device)/response", qos: 1, format: "%D|%p", extraArgs: ["-V", "mqttv5"])
        let commands = "devices/\(layout.device)/commands"
        let cases: [(String, String, String, String)] = [  // name, payload, expected code, part of the message
            ("reboot", #"{"id":"x-1"}"#, "forbidden", "not allowed on this device"),
            ("config/set", #"{"id":"x-2","args":{"values":{"log_level":"debug"}}}"#, "forbidden", "commands.allow"),
            ("agent/restart", #"{"id":"x-3"}"#, "forbidden", "not allowed"),
            ("self/destruct", #"{"id":"x-4"}"#, "unknown_command", "no command \"self/destruct\""),
            ("ping", #"{"id":"x-5","args":[1,2]}"#, "bad_arguments", "\"args\" must be a JSON object"),
            ("led/set", #"{"id":"x-6","args":{"pattern":7}}"#, "bad_arguments", "argument \"pattern\" must be a string"),
            ("led/set", #"{"id":"x-7","args":{"pattern":"strobe"}}"#, "bad_arguments", "is not a pattern"),
            ("source/restart", #"{"id":"x-8","args":{"name":"nope"}}"#, "bad_arguments", "no source \"nope\""),
            ("log/level", #"{"id":"x-9","args":{"level":"loud"}}"#, "bad_arguments", "\"level\" must be one of"),
            ("log/tail", #"{"id":"x-10","args":{"lines":0}}"#, "bad_arguments", "\"lines\" must be a whole number in 1...1000"),
            ("log/tail", #"{"id":"x-11","args":{"level":"loud"}}"#, "bad_arguments", "\"level\" must be one of"),
        ]
        for (name, payload, code, text) in cases {
            try Self.send(broker, commands + "/" + name, payload)
            let id = Self.json(payload)["id"] as? String
            let body = try Self.answer(replies, id: id).body
            let err = body["error"] as? [String: Any]
            #expect(body["status"] as? String == "error" && err?["code"] as? String == code, "\(name): \(body)")
            #expect((err?["message"] as? String)?.contains(text) == true, "\(name): \(body)")
        }
        // No usable id: answered with id null.
        for (payload, text) in [
            ("this is not json", "not valid JSON"), ("[1,2,3]", "must be a JSON object"), (#"{"id":42}"#, "\"id\" must be a string"),
            (String(repeating: "x", count: 3000), "over commands.max_payload_bytes"),
        ] {
            let before = replies.lines.count
            try Self.send(broker, commands + "/ping", payload)
            try waitUntil(timeout: 10, "an answer to \(payload.prefix(20))") { replies.lines.count > before }
            let body = Self.json(String(replies.lines.last!.split(separator: "|", maxSplits: 1, omittingEmptySubsequences: false)[1]))
            #expect(body["id"] is NSNull && body["status"] as? String == "error", "\(body)")
            #expect(((body["error"] as? [String: Any])?["message"] as? String)?.contains(text) == true, "\(body)")
        }
        #expect(agent.output.contains("command reboot id x-1: forbidden"))
        // Still serving, and counting.
        try Self.send(broker, commands + "/status", #"{"id":"after"}"#)
        let counters = try #require((try Self.answer(replies, id: "after").body["result"] as? [String: Any])?["commands"] as? [String: Any])
        #expect(
            counters["forbidden"] as? Int == 3 && counters["bad_request"] as? Int == 3 && counters["too_large"] as? Int == 1
                && counters["bad_arguments"] as? Int == 7, "\(counters)")
        #expect(agent.isRunning)
    }

    @Test("a repeated request id is answered with the first answer, also after a restart, and the command does not run twice")
    func duplicates() throws {
        let broker = try Broker.start()
        defer { broker.stop() }
        let (layout, agent) = try Self.agent(broker)
        let replies = try ExternalSubscriber(
            broker: broker, topic: "devices/\(layout.device)/response", qos: 1, format: "%D|%p", extraArgs: ["-V", "mqttv5"])
        let topic = "devices/\(layout.device)/commands/led/set"
        try Self.send(broker, topic, #"{"id":"same","args":{"pattern":"blink 200/200","seconds":60}}"#)
        let first = try Self.answer(replies, id: "same").body
        try Self.send(broker, topic, #"{"id":"same","args":{"pattern":"blink 900/900","seconds":60}}"#)
        try waitUntil(timeout: 10, "second answer") { replies.lines.count >= 2 }
        #expect(replies.lines[0] == replies.lines[1], "the repeat got another answer")
        #expect(((first["result"] as? [String: Any])?["led"] as? String) == "blink 200/200")
        #expect(agent.output.components(separatedBy: "command led/set id same: ok").count == 2, "ran once")
        agent.stop()
        let again = try layout.start()
        defer { again.stop() }
        try waitUntil(timeout: 30, "restarted") { again.output.contains("commands on devices/") }
        usleep(300_000)
        try Self.send(broker, topic, #"{"id":"same","args":{"pattern":"on"}}"#)
        try waitUntil(timeout: 10, "third answer") { replies.lines.count >= 3 }
        #expect(replies.lines[2] == replies.lines[0], "after a restart the repeat got another answer")
        #expect(!again.output.contains("command led/set id same: ok"))
    }

    @Test(
        "a request id repeated by another requester while the first is still waiting to run: the command runs once and both requesters get its answer"
    )
    func repeatedWhileRunning() throws {
        let broker = try Broker.start()
        defer { broker.stop() }
        let (layout, agent) = try Self.agent(broker)
        defer { agent.stop() }
        let a = try ExternalSubscriber(broker: broker, topic: "op/a", qos: 1, format: "%D|%p", extraArgs: ["-V", "mqttv5"])
        let b = try ExternalSubscriber(broker: broker, topic: "op/b", qos: 1, format: "%D|%p", extraArgs: ["-V", "mqttv5"])
        let topic = "devices/\(layout.device)/commands/status"
        // The agent stopped: the requests reach it together when it goes on, and "twice" waits
        // behind five others of the same name (one at a time per name) when its repeat arrives.
        kill(agent.pid, SIGSTOP)
        for i in 1...5 { try Self.send(broker, topic, #"{"id":"q\#(i)"}"#, responseTopic: "op/a") }
        try Self.send(broker, topic, #"{"id":"twice"}"#, responseTopic: "op/a", correlation: "from-a")
        try Self.send(broker, topic, #"{"id":"twice"}"#, responseTopic: "op/b", correlation: "from-b")
        kill(agent.pid, SIGCONT)
        let first = try Self.answer(a, id: "twice")
        let second = try Self.answer(b, id: "twice")
        #expect(first.correlation == "from-a" && second.correlation == "from-b", "each with its own correlation data")
        #expect(first.body["status"] as? String == "ok" && second.body["status"] as? String == "ok")
        #expect(
            (first.body["result"] as? NSDictionary).map { $0 == second.body["result"] as? NSDictionary } == true,
            "one run's answer: \(first.body) \(second.body)")
        for i in 1...5 { _ = try Self.answer(a, id: "q\(i)") }
        #expect(
            agent.output.contains("command status id twice: repeated while running; this requester gets the run's answer too"),
            "\(agent.output)")
        #expect(agent.output.components(separatedBy: "command status id twice: ok").count == 2, "ran once")
        usleep(300_000)
        #expect(a.lines.count == 6 && b.lines.count == 1, "one answer per request: \(a.lines.count) on op/a, \(b.lines.count) on op/b")
    }

    @Test(
        "config/set: only settable keys; one bad value leaves the running configuration and the file untouched; a good change is written and applied"
    )
    func configSet() throws {
        let broker = try Broker.start()
        defer { broker.stop() }
        let allow = ["ping", "status", "config/get", "config/set"]
        let (layout, agent) = try Self.agent(broker, allow: allow)
        defer { agent.stop() }
        let replies = try ExternalSubscriber(
            broker: broker, topic: "devices/\(layout.device)/response", qos: 1, format: "%D|%p", extraArgs: ["-V", "mqttv5"])
        let commands = "devices/\(layout.device)/commands"
        let original = try Data(contentsOf: URL(fileURLWithPath: layout.config))
        try Self.send(
            broker, commands + "/config/set", #"{"id":"c-1","args":{"values":{"status.info_interval":5,"mqtt.keepalive":"abc"}}}"#)
        let bad = try Self.answer(replies, id: "c-1").body
        let err = bad["error"] as? [String: Any]
        #expect(err?["code"] as? String == "invalid_config", "\(bad)")
        let message = err?["message"] as? String ?? ""
        #expect(message.contains("mqtt.keepalive: expected a whole number"), "\(message)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: layout.config)) == original, "the file changed")
        // Keys a command must not change: another broker, more commands, a path to write to.
        try Self.send(
            broker, commands + "/config/set",
            #"{"id":"c-1b","args":{"values":{"status.info_interval":5,"mqtt.host":"evil.example","commands.allow":["reboot"],"led.simulated_log":"/etc/x","mqtt.keepalve":3}}}"#
        )
        let refused = try #require(try Self.answer(replies, id: "c-1b").body["error"] as? [String: Any])
        let why = refused["message"] as? String ?? ""
        #expect(refused["code"] as? String == "bad_arguments", "\(refused)")
        for key in [
            "\"commands.allow\"", "\"led.simulated_log\"", "\"mqtt.host\"", "\"mqtt.keepalve\" (did you mean mqtt.keepalive?)",
            "nothing changed",
        ] {
            #expect(why.contains(key), "\(key) in \(why)")
        }
        // Too many keys, or a value too large, are refused before anything else.
        let many = (0..<40).map { "\"k\($0)\":1" }.joined(separator: ",")
        try Self.send(broker, commands + "/config/set", #"{"id":"c-1c","args":{"values":{"# + many + "}}}")
        #expect(
            (try Self.answer(replies, id: "c-1c").body["error"] as? [String: Any])?["message"] as? String ?? ""
                == "\"values\" must be an object of 1 to 32 dotted keys and values, e.g. {\"status.info_interval\": 10}")
        try Self.send(
            broker, commands + "/config/set",
            #"{"id":"c-1d","args":{"values":{"led.patterns.offline":""# + String(repeating: "x", count: 300) + "\"}}}")
        #expect(
            ((try Self.answer(replies, id: "c-1d").body["error"] as? [String: Any])?["message"] as? String)?.contains(
                "a value of 300 bytes; at most 256") == true)
        #expect(try Data(contentsOf: URL(fileURLWithPath: layout.config)) == original, "the file changed")
        try Self.send(broker, commands + "/config/get", #"{"id":"c-2"}"#)
        let running = (try Self.answer(replies, id: "c-2").body["result"] as? [String: Any])?["config"] as? String ?? ""
        #expect(running.contains("info_interval: 1\n"), "\(running)")
        // A good change: written, validated at the next start, applied now where possible.
        try Self.send(broker, commands + "/config/set", #"{"id":"c-3","args":{"values":{"status.info_interval":7,"mqtt.keepalive":30}}}"#)
        let good = try Self.answer(replies, id: "c-3").body
        let r = try #require(good["result"] as? [String: Any], "\(good)")
        #expect(r["applied"] as? [String] == ["status.info_interval"] && r["restart_required"] as? [String] == ["mqtt.keepalive"])
        let check = try Child.spawn(AgentEndToEndTests.binary, ["check-config", layout.config], output: layout.dir + "/check.out")
        #expect(try check.wait() == 0)
        #expect(check.output.contains("info_interval: 7\n") && check.output.contains("keepalive: 30"), "\(check.output)")
        try Self.send(broker, commands + "/config/get", #"{"id":"c-4"}"#)
        #expect(
            ((try Self.answer(replies, id: "c-4").body["result"] as? [String: Any])?["config"] as? String)?.contains("info_interval: 7\n")
                == true)
    }

    @Test("commands while the broker link flaps: every request is answered, each command runs once")
    func linkFlaps() throws {
        let broker = try Broker.start()
        defer { broker.stop() }
        let proxy = try TCPProxy(to: broker.port)
        let (layout, agent) = try Self.agent(broker, port: proxy.port)
        defer { agent.stop() }
        let replies = try ExternalSubscriber(
            broker: broker, topic: "devices/\(layout.device)/response", qos: 1, format: "%D|%p", extraArgs: ["-V", "mqttv5"])
        let topic = "devices/\(layout.device)/commands/ping"
        let n = 20
        for i in 0..<n {
            try Self.send(broker, topic, "{\"id\":\"f-\(i)\"}")
            if i % 4 == 1 { proxy.cutAll() }
            usleep(150_000)
        }
        try waitUntil(timeout: 60, "an answer for every request") {
            let ids = Set(
                replies.lines.compactMap {
                    Self.json(String($0.split(separator: "|", maxSplits: 1, omittingEmptySubsequences: false).last ?? ""))["id"] as? String
                })
            return ids.count == n
        }
        for i in 0..<n {
            let answers = Set(replies.lines.filter { $0.contains("\"f-\(i)\"") })
            #expect(answers.count == 1, "f-\(i): answers differ: \(answers)")
            #expect(agent.output.components(separatedBy: "command ping id f-\(i): ok").count == 2, "f-\(i) ran more than once")
        }
    }

    @Test("the shipped mosquitto ACL: only the fleet service can command a device")
    func acl() throws {
        let root = OfflineStoreIntegrationTests.packageRoot.path
        let layout = try Layout()
        let broker = try Broker.start(
            Broker.Options(
                extraConfig: "acl_file \(root)/config/mosquitto-acl.example",
                users: [layout.device: "device-pw", "fleet": "fleet-pw", "intruder": "x-pw"]))
        defer { broker.stop() }
        try layout.write(port: broker.port, sources: Self.quietSources)
        var text = try String(contentsOfFile: layout.config, encoding: .utf8)
        text = text.replacingOccurrences(of: "  keepalive: 5", with: "  keepalive: 5\n  username: \(layout.device)")
        try text.write(toFile: layout.config, atomically: true, encoding: .utf8)
        let fleet = ["-u", "fleet", "-P", "fleet-pw"]
        let replies = try ExternalSubscriber(
            broker: broker, topic: "devices/\(layout.device)/response", qos: 1, format: "%D|%p", extraArgs: ["-V", "mqttv5"] + fleet)
        let agent = try layout.start(["EDGE_AGENT_MQTT__PASSWORD": "device-pw"])
        defer { agent.stop() }
        try waitUntil(timeout: 30, "agent connected") {
            agent.output.contains("state: connected") && agent.output.contains("commands on devices/")
        }
        usleep(300_000)
        let topic = "devices/\(layout.device)/commands/ping"
        try Self.send(broker, topic, #"{"id":"from-intruder"}"#, auth: ["-u", "intruder", "-P", "x-pw"])
        try Self.send(broker, topic, #"{"id":"from-fleet"}"#, auth: fleet)
        #expect(try Self.answer(replies, id: "from-fleet").body["status"] as? String == "ok")
        usleep(500_000)
        #expect(!replies.lines.contains { $0.contains("from-intruder") }, "the broker let another user command the device")
        #expect(!agent.output.contains("from-intruder"))
    }

    @Test("agent/restart: the answer, a clean stop with the status offline, and the exit code systemd restarts on")
    func restart() throws {
        let broker = try Broker.start()
        defer { broker.stop() }
        let (layout, agent) = try Self.agent(broker, allow: ["ping", "agent/restart"])
        let replies = try ExternalSubscriber(
            broker: broker, topic: "devices/\(layout.device)/response", qos: 1, format: "%D|%p", extraArgs: ["-V", "mqttv5"])
        let status = try ExternalSubscriber(broker: broker, topic: layout.statusTopic, qos: 1, format: "%p")
        try Self.send(broker, "devices/\(layout.device)/commands/agent/restart", #"{"id":"r-1"}"#)
        #expect(try Self.answer(replies, id: "r-1").body["status"] as? String == "ok")
        #expect(try agent.wait(timeout: 20) == 3)
        try waitUntil(timeout: 10, "offline") { status.lines.last == "offline" }
        #expect(agent.output.contains("exiting with 3 (restart requested)"))
    }

    @Test(
        "reboot: a request file for edge-agent-reboot.path, or commands.reboot_command; refused when neither can work; a failed reboot is logged and the agent runs on"
    )
    func reboot() throws {
        let broker = try Broker.start()
        defer { broker.stop() }
        // Under the unit (RUNTIME_DIRECTORY set) with no reboot_command: the request file.
        let runtime = TestFiles.makeTempDir("runtime").path
        let (layout, agent) = try Self.agent(broker, allow: ["ping", "reboot"], environment: ["RUNTIME_DIRECTORY": runtime])
        defer { agent.stop() }
        let replies = try ExternalSubscriber(
            broker: broker, topic: "devices/\(layout.device)/response", qos: 1, format: "%D|%p", extraArgs: ["-V", "mqttv5"])
        try Self.send(broker, "devices/\(layout.device)/commands/reboot", #"{"id":"rb-1"}"#)
        let answer = try Self.answer(replies, id: "rb-1").body
        #expect(answer["status"] as? String == "ok", "\(answer)")
        #expect(((answer["result"] as? [String: Any])?["via"] as? String)?.contains("edge-agent-reboot.path") == true, "\(answer)")
        let request = runtime + "/reboot-requested"
        try waitUntil(timeout: 5, "the request file") { FileManager.default.fileExists(atPath: request) }
        #expect(try String(contentsOfFile: request, encoding: .utf8).contains("rb-1"))
        try Self.send(broker, "devices/\(layout.device)/commands/ping", #"{"id":"rb-2"}"#)
        #expect(try Self.answer(replies, id: "rb-2").body["status"] as? String == "ok", "the agent goes on until the system stops it")

        // Neither a runtime directory nor a command: refused before anything happens, with the fix.
        let (plain, plainAgent) = try Self.agent(broker, allow: ["reboot"])
        defer { plainAgent.stop() }
        let plainReplies = try ExternalSubscriber(
            broker: broker, topic: "devices/\(plain.device)/response", qos: 1, format: "%D|%p", extraArgs: ["-V", "mqttv5"])
        try Self.send(broker, "devices/\(plain.device)/commands/reboot", #"{"id":"rb-3"}"#)
        let refused = try #require(try Self.answer(plainReplies, id: "rb-3").body["error"] as? [String: Any])
        #expect(
            refused["code"] as? String == "unavailable" && (refused["message"] as? String)?.contains("commands.reboot_command") == true,
            "\(refused)")

        // A reboot_command that fails: logged with its status; the agent still answers.
        let (failing, failingAgent) = try Self.agent(broker, allow: ["ping", "reboot"], extra: "  reboot_command: \"exit 7\"\n")
        defer { failingAgent.stop() }
        let failingReplies = try ExternalSubscriber(
            broker: broker, topic: "devices/\(failing.device)/response", qos: 1, format: "%D|%p", extraArgs: ["-V", "mqttv5"])
        try Self.send(broker, "devices/\(failing.device)/commands/reboot", #"{"id":"rb-4"}"#)
        #expect(try Self.answer(failingReplies, id: "rb-4").body["status"] as? String == "ok")
        try waitUntil(timeout: 10, "the failure in the log") {
            failingAgent.output.contains("reboot command \"exit 7\" exited with status 7")
        }
        try Self.send(broker, "devices/\(failing.device)/commands/ping", #"{"id":"rb-5"}"#)
        #expect(try Self.answer(failingReplies, id: "rb-5").body["status"] as? String == "ok")
    }
}
