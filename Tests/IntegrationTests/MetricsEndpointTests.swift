import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The agent's Prometheus endpoint as Prometheus and a person use it: scraped over HTTP while
/// the broker link is cut, checked by `promtool`, its counters held against what the broker
/// saw; hostile and surplus HTTP clients; a port already taken; `edge-agent status`.
@Suite("Metrics endpoint")
struct MetricsEndpointTests {
    typealias Layout = AgentEndToEndTests.Layout

    /// One HTTP/1.0 request: the status code and the body.
    static func http(_ port: Int, _ path: String = "/metrics", method: String = "GET") throws -> (status: Int, body: String) {
        guard let fd = Sock.connect(port: port) else { throw TestFailure("nothing listens on \(port)") }
        defer { close(fd) }
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        _ = Sock.writeAll(fd, Array("\(method) \(path) HTTP/1.0\r\nHost: x\r\n\r\n".utf8))
        let text = String(decoding: readAll(fd), as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n"), let code = Int(text.split(separator: " ").dropFirst().first ?? "") else {
            throw TestFailure("not an HTTP answer: \(text.prefix(200))")
        }
        return (code, String(text[split.upperBound...]))
    }

    /// Everything until the peer closes (or the receive timeout).
    static func readAll(_ fd: Int32) -> [UInt8] {
        var all: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return all }
            all += chunk[..<n]
        }
    }

    /// A sample's value in a scrape (the first line of `series`, which includes its labels).
    static func value(_ scrape: String, _ series: String) -> Double? {
        scrape.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ")[1]) }
    }

    /// `promtool check metrics` on a scrape: its complaints, empty when there are none.
    static func promtool(_ scrape: String) throws -> String {
        let dir = TestFiles.makeTempDir("promtool")
        let file = dir.appendingPathComponent("scrape.txt").path
        try scrape.write(toFile: file, atomically: true, encoding: .utf8)
        let p = try Child.spawn("/usr/bin/promtool", ["check", "metrics"], output: dir.appendingPathComponent("out").path, stdin: file)
        let status = try p.wait(timeout: 30)
        let said = p.output.trimmingCharacters(in: .whitespacesAndNewlines)
        return status == 0 && said.isEmpty ? "" : "exit \(status): \(said)"
    }

    @Test(
        "scraped through broker cuts: promtool accepts it; events, connections and acknowledged publishes agree with what the broker saw; edge-agent status shows it"
    )
    func countersAgreeWithTheBroker() throws {
        let broker = try Broker.start()
        defer { broker.stop() }
        let proxy = try TCPProxy(to: broker.port)
        let layout = try Layout()
        try layout.write(port: proxy.port, sources: "  - type: socket\n    name: pipeline\n    path: \(layout.socket)")
        let events = try ExternalSubscriber(broker: broker, topic: layout.eventsTopic, qos: 1, format: "%p")
        let agent = try layout.start()
        defer { agent.stop() }
        try waitUntil(timeout: 30, "the agent's first connection") { agent.output.contains("connected to 127.0.0.1") }
        let batches = 4
        let perBatch = 50
        for b in 0..<batches {
            try AgentEndToEndTests.writeSocket(layout.socket, (0..<perBatch).map { #"{"type":"detection","n":\#(b * perBatch + $0)}"# })
            // Scraped while the link is down too: the endpoint does not depend on the broker.
            if b < batches - 1 {
                proxy.cutAll()
                #expect(try Self.http(layout.metricsPort).status == 200)
            }
            usleep(300_000)
        }
        let total = batches * perBatch
        func seqs() -> Set<Int> { Set(AgentEndToEndTests.events(events).compactMap { $0["seq"] as? Int }) }
        try waitUntil(timeout: 60, "every event at the broker's subscriber") { seqs().count >= total }
        var scrape = ""
        try waitUntil(timeout: 20, "the buffer empty in the scrape") {
            scrape = (try? Self.http(layout.metricsPort).body) ?? ""
            return Self.value(scrape, "edge_agent_buffer_pending_messages") == 0
                && Self.value(scrape, "edge_agent_events_total{source=\"pipeline\"}") == Double(total)
        }
        #expect(try Self.promtool(scrape) == "", "promtool check metrics")
        #expect(seqs().count == total)
        // What the broker saw of this client: its connections, and the PUBLISH packets it received.
        let id = layout.device
        let log = broker.log
        let connects = log.components(separatedBy: "New client connected from").filter { $0.contains(" as \(id) ") }.count
        let received = log.components(separatedBy: "Received PUBLISH from \(id) ").count - 1
        #expect(connects >= 2 && Self.value(scrape, "mqtt_client_connections_total") == Double(connects), "broker saw \(connects)")
        #expect(Self.value(scrape, "mqtt_client_reconnects_total") == Double(connects - 1))
        let ok = try #require(Self.value(scrape, "mqtt_client_publishes_total{qos=\"1\",result=\"ok\"}"))
        // Each acknowledged publish reached the broker at least once; events and the retained
        // online and info documents are all QoS 1.
        #expect(ok >= Double(total + connects) && ok <= Double(received), "ok \(ok), the broker received \(received)")
        #expect((Self.value(scrape, "mqtt_client_sent_bytes_total") ?? 0) > Double(total * 100))
        #expect(Self.value(scrape, "edge_agent_state{state=\"connected\"}") == 1)
        #expect(scrape.contains("mqtt_client_round_trip_seconds_count{packet=\"publish\"}"))

        // The terminal's view of the same agent.
        let status = try Broker.run(AgentEndToEndTests.binary, ["status", "--config", layout.config])
        for part in [
            "connected to 127.0.0.1:\(proxy.port)", "pipeline: running, \(total) events", "buffer      0 messages", "client id \(id)",
        ] {
            #expect(status.contains(part), "missing \"\(part)\" in:\n\(status)")
        }
        let json = try Broker.run(AgentEndToEndTests.binary, ["status", "--config", layout.config, "--json", "--interval", "0"])
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any], "\(json)")
        #expect((doc["connection"] as? [String: Any])?["state"] as? String == "connected" && doc["device_id"] as? String == id)
        #expect(((doc["sources"] as? [[String: Any]])?.first?["events"] as? Int) == total)
    }

    @Test(
        "hostile HTTP clients: silent connections fill metrics.max_connections and are closed at metrics.timeout, one more is closed at once, a huge header is refused, other methods and paths get 405 and 404; events flow throughout"
    )
    func hostileClients() throws {
        let broker = try SharedBroker.get()
        let layout = try Layout()
        try layout.write(
            port: broker.port, sources: "  - type: simulated\n    name: cam0\n    rate: 20",
            metrics: "  listen: 127.0.0.1:\(layout.metricsPort)\n  max_connections: 2\n  timeout: 1")
        let events = try ExternalSubscriber(broker: broker, topic: layout.eventsTopic, qos: 1, format: "%p")
        let agent = try layout.start()
        defer { agent.stop() }
        try waitUntil(timeout: 30, "the endpoint") { agent.output.contains("metrics: http://127.0.0.1:\(layout.metricsPort)/metrics") }
        try waitUntil(timeout: 30, "events flowing") { events.lines.count > 5 }
        // Three at once for two places: whichever comes third is closed at once, the other two when
        // metrics.timeout (1 s) ends them, whatever order the agent accepts them in.
        let before = events.lines.count
        let start = Date()
        let fds = try (0..<3).map { _ in try #require(Sock.connect(port: layout.metricsPort)) }
        defer { fds.forEach { close($0) } }
        var closedAfter: [Int32: Double] = [:]
        var polls = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        while closedAfter.count < 3 && Date().timeIntervalSince(start) < 6 {
            _ = poll(&polls, nfds_t(polls.count), 100)
            for p in polls where p.revents != 0 && closedAfter[p.fd] == nil {
                var byte: UInt8 = 0
                if recv(p.fd, &byte, 1, Int32(MSG_DONTWAIT)) <= 0 { closedAfter[p.fd] = Date().timeIntervalSince(start) }
            }
        }
        let times = closedAfter.values.sorted()
        #expect(times.count == 3, "every connection closed by the agent: \(times)")
        #expect(times.first.map { $0 < 0.9 } == true, "the one over max_connections at once: \(times)")
        #expect(times.dropFirst().allSatisfy { $0 > 0.8 && $0 < 4 }, "the admitted ones at metrics.timeout: \(times)")
        #expect(events.lines.count > before + 5, "events went on while the endpoint was full")
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        // A header of 200 KiB: refused (llhttp's limit), the agent unharmed.
        if let fd = Sock.connect(port: layout.metricsPort) {
            _ = Sock.writeAll(fd, Array("GET /metrics HTTP/1.1\r\nX-Big: \(String(repeating: "a", count: 200_000))\r\n\r\n".utf8))
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            let answer = String(decoding: Self.readAll(fd), as: UTF8.self)
            #expect(answer.isEmpty || answer.hasPrefix("HTTP/1.1 4"), "\(answer.prefix(100))")
            close(fd)
        }
        #expect(try Self.http(layout.metricsPort, method: "POST").status == 405)
        #expect(try Self.http(layout.metricsPort, "/secret").status == 404)
        let head = try Self.http(layout.metricsPort, method: "HEAD")
        #expect(head.status == 200 && head.body.isEmpty)
        let scrape = try Self.http(layout.metricsPort)
        #expect(scrape.status == 200 && Self.value(scrape.body, "edge_agent_source_up{source=\"cam0\"}") == 1)
    }

    @Test("the metrics port already taken: logged with the fix, the agent runs on without the endpoint; status says nothing answers")
    func portInUse() throws {
        let broker = try SharedBroker.get()
        let (fd, port) = try Sock.listen()
        defer { close(fd) }
        let layout = try Layout()
        try layout.write(
            port: broker.port, sources: "  - type: simulated\n    name: cam0\n    rate: 5", metrics: "  listen: 127.0.0.1:\(port)")
        let status = try ExternalSubscriber(broker: broker, topic: layout.statusTopic, qos: 1, format: "%p")
        let agent = try layout.start()
        defer { agent.stop() }
        try waitUntil(timeout: 30, "online") { status.lines.contains("online") }
        try waitUntil(timeout: 10, "the endpoint's error") { agent.output.contains("metrics: cannot listen on 127.0.0.1:\(port)") }
        #expect(agent.output.contains("The agent runs on without the endpoint; free the port or choose another (metrics.listen)"))
        #expect(agent.poll() == nil)
        let off = try Layout()
        try off.write(port: broker.port, metrics: "  enabled: false")
        let p = try Child.spawn(
            AgentEndToEndTests.binary, ["status", "--endpoint", "127.0.0.1:\(off.metricsPort)"], output: off.dir + "/status.out")
        #expect(try p.wait(timeout: 30) == 69 && p.output.contains("nothing answers on http://127.0.0.1:\(off.metricsPort)/metrics"))
        let q = try Child.spawn(AgentEndToEndTests.binary, ["status", "--config", off.config], output: off.dir + "/status2.out")
        #expect(try q.wait(timeout: 30) == 78 && q.output.contains("metrics.enabled: false"), "\(q.output)")
        // Something that is not HTTP (the broker), and an endpoint that is no address.
        let mqtt = try Child.spawn(
            AgentEndToEndTests.binary, ["status", "--endpoint", "127.0.0.1:\(broker.port)", "--interval", "0"],
            output: off.dir + "/status3.out")
        #expect(
            try mqtt.wait(timeout: 30) == 69
                && (mqtt.output.contains("not an HTTP answer") || mqtt.output.contains("the answer broke off")), "\(mqtt.output)")
        let bad = try Child.spawn(AgentEndToEndTests.binary, ["status", "--endpoint", "gateway:9464"], output: off.dir + "/status4.out")
        #expect(
            try bad.wait(timeout: 30) == 78 && bad.output.contains("gateway:9464 is not address:port with an IP address"), "\(bad.output)")
    }
}
