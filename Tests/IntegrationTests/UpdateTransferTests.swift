import Communicator
import Foundation
import NIOCore
import NIOPosix
import Testing

import enum EdgeAgent.UpdateKeys
import struct EdgeAgent.UpdateManifest
import struct EdgeAgent.UpdateSender

#if canImport(Glibc)
import Glibc
#endif

/// Signed updates over MQTT against the running agent and a real mosquitto, without a VM: the
/// operator's `edge-agent send ... agent/update --package`, the checks that refuse a package,
/// and a transfer cut short, resumed after the agent was killed, and finished through link cuts.
/// What the privileged helper does with the package is tested in the board-in-a-box VMs.
@Suite("Signed updates over MQTT")
struct UpdateTransferTests {
    typealias Layout = AgentEndToEndTests.Layout

    /// A key pair made with `edge-agent update keygen` in `dir`: (private key file, public key).
    static func keygen(_ dir: String, _ name: String = "fleet") throws -> (key: String, pub: String) {
        let k = try Child.spawn(AgentEndToEndTests.binary, ["update", "keygen", "--out", dir + "/" + name], output: dir + "/keygen.out")
        #expect(try k.wait() == 0, "\(k.output)")
        let pub = try String(contentsOfFile: dir + "/\(name).pub", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        return (dir + "/\(name).key", pub)
    }

    static func package(_ dir: String, bytes: Int) throws -> (path: String, data: [UInt8]) {
        var g = SystemRandomNumberGenerator()
        let data = (0..<bytes).map { _ in UInt8.random(in: 0...255, using: &g) }
        let path = dir + "/edge-agent_0.2.0_test.deb"
        try Data(data).write(to: URL(fileURLWithPath: path))
        return (path, data)
    }

    static func updateConfig(_ pub: String, more: String = "") -> String {
        "update:\n  trusted_keys: [\"\(pub)\"]\n" + more
    }

    /// `edge-agent send` with the agent's own configuration (its broker and topics).
    static func send(_ layout: Layout, _ args: [String], timeout: Double = 120) throws -> (status: Int32, output: String) {
        let child = try Child.spawn(
            AgentEndToEndTests.binary, ["send", "--config", layout.config, "--device", layout.device] + args,
            output: layout.dir + "/send-\(UUID().uuidString.prefix(4)).out")
        return (try child.wait(timeout: timeout), child.output)
    }

    static func retainedInfo(_ broker: Broker, _ layout: Layout) throws -> [String: Any] {
        let out = try Broker.run(
            "/usr/bin/mosquitto_sub", ["-h", "127.0.0.1", "-p", "\(broker.port)", "-t", layout.infoTopic, "-C", "1", "-W", "5"])
        return CommandTests.json(out)
    }

    static func updateDir(_ layout: Layout) -> String { layout.dir + "/state/update" }

    @Test(
        "edge-agent send ... agent/update: a signed package goes over MQTT in chunks, arrives whole and checked, and is handed to the helper; its result is reported"
    )
    func sendAndHandOver() throws {
        let broker = try SharedBroker.get()
        let dir = TestFiles.makeTempDir("update").path
        let (key, pub) = try Self.keygen(dir)
        let (layout, child) = try CommandTests.agent(broker, allow: ["ping", "agent/update"], extra: Self.updateConfig(pub))
        defer { child.stop(signal: SIGTERM) }
        let (path, data) = try Self.package(dir, bytes: 1_500_000)
        let started = Date()
        let sender = try Child.spawn(
            AgentEndToEndTests.binary,
            [
                "send", "--config", layout.config, "--device", layout.device, "agent/update", "--package", path, "--key", key,
                "--package-version", "0.2.0", "--follow", "60",
            ],
            output: dir + "/send.out")
        let request = Self.updateDir(layout) + "/request.json"
        try waitUntil(timeout: 60, "the package handed to the helper") { FileManager.default.fileExists(atPath: request) }
        let seconds = Date().timeIntervalSince(started)
        print("update over MQTT (loopback, debug agent): \(data.count) bytes in \(String(format: "%.2f", seconds)) s")
        let delivered = try Data(contentsOf: URL(fileURLWithPath: Self.updateDir(layout) + "/package.deb"))
        #expect(Array(delivered) == data, "the package arrived whole")
        let manifest = try JSONDecoder().decode(UpdateManifest.self, from: Data(contentsOf: URL(fileURLWithPath: request)))
        #expect(manifest.version == "0.2.0" && manifest.size == data.count)
        for gone in ["transfer.json", "package.part"] {
            #expect(!FileManager.default.fileExists(atPath: Self.updateDir(layout) + "/" + gone), "\(gone) left behind")
        }
        try waitUntil(timeout: 10, "info says installing") {
            ((try? Self.retainedInfo(broker, layout))?["update"] as? [String: Any])?["state"] as? String == "installing"
        }
        // The helper's part, as it ends (deploy/edge-agent-update-helper): it takes the request
        // and writes its result.
        try FileManager.default.removeItem(atPath: request)
        let result =
            #"{"result":"installed","version":"0.2.0","sha256":"\#(manifest.sha256)","previous":"0.1.0","at":"2026-12-03T17:00:00Z"}"#
        try result.write(toFile: Self.updateDir(layout) + "/result.json", atomically: true, encoding: .utf8)
        #expect(try sender.wait(timeout: 60) == 0, "\(sender.output)")
        #expect(
            sender.output.contains("device has 0 of 87 chunks"),
            "chunks of 17,408 bytes: the agent's max_incoming_packet_size\n\(sender.output)")
        #expect(sender.output.contains("\"result\":\"installed\""), "\(sender.output)")
        let info = try Self.retainedInfo(broker, layout)
        let update = info["update"] as? [String: Any]
        #expect(
            update?["state"] as? String == "idle" && (update?["last"] as? [String: Any])?["result"] as? String == "installed", "\(info)")
        #expect(child.output.contains("update: 0.2.0 received and checked (1500000 bytes"), "\(child.output)")
    }

    @Test(
        "refused with the reason and nothing kept: a key that is not trusted, a version that is not newer, a package too large, no trusted keys, updates not allowed"
    )
    func refusals() throws {
        let broker = try SharedBroker.get()
        let dir = TestFiles.makeTempDir("update").path
        let (key, pub) = try Self.keygen(dir)
        let (stranger, _) = try Self.keygen(dir, "stranger")
        let (layout, child) = try CommandTests.agent(
            broker, allow: ["ping", "agent/update"], extra: Self.updateConfig(pub, more: "  max_bytes: 400000\n"))
        defer { child.stop(signal: SIGTERM) }
        let (path, _) = try Self.package(dir, bytes: 300_000)
        let cases: [(args: [String], code: String, says: String)] = [
            (["--key", stranger, "--package-version", "0.2.0"], "bad_signature", "is not made by any key in update.trusted_keys"),
            (["--key", key, "--package-version", "0.0.9"], "not_newer", "is not newer than the running 0.1.0"),
            (["--key", key, "--package-version", "0.1.0"], "not_newer", "update.allow_downgrade"),
        ]
        for c in cases {
            let (status, output) = try Self.send(layout, ["agent/update", "--package", path, "--follow", "0"] + c.args)
            #expect(status == 1, "\(output)")
            #expect(output.contains("update refused or failed: \(c.code): ") && output.contains(c.says), "\(output)")
        }
        let (big, _) = try Self.package(dir + "/..", bytes: 500_000)
        let (status, output) = try Self.send(
            layout, ["agent/update", "--package", big, "--key", key, "--package-version", "0.2.0", "--follow", "0"])
        #expect(status == 1 && output.contains("too_large: the package is 500000 bytes, more than update.max_bytes 400000"), "\(output)")
        // A signed announcement with arguments of its own that are wrong: named, nothing kept.
        let seed = try UpdateKeys.privateKey(String(contentsOfFile: key, encoding: .utf8)).get()
        let sha = String(try Broker.run("/usr/bin/sha256sum", [path]).prefix(64))
        let m = try UpdateManifest.signed(version: "0.2.0", size: 300_000, sha256: sha, seed: seed)
        let replies = try ExternalSubscriber(
            broker: broker, topic: "devices/\(layout.device)/response", qos: 1, format: "%D|%p", extraArgs: ["-V", "mqttv5"])
        let signed = #""version":"0.2.0","size":300000,"sha256":"\#(m.sha256)","signature":"\#(m.signature)""#
        for (id, extra, says) in [
            ("cs", #""chunk_size":10"#, "\"chunk_size\" must be a whole number in 1024..."),
            ("ct", #""chunk_topic":"fleet/#""#, "\"chunk_topic\" must be a topic name without wildcards"),
        ] {
            try CommandTests.send(
                broker, "devices/\(layout.device)/commands/agent/update", #"{"id":"\#(id)","args":{\#(signed),\#(extra)}}"#)
            let (_, body) = try CommandTests.answer(replies, id: id)
            let error = body["error"] as? [String: Any]
            #expect(error?["code"] as? String == "bad_arguments" && (error?["message"] as? String)?.contains(says) == true, "\(body)")
        }
        let left = (try? FileManager.default.contentsOfDirectory(atPath: Self.updateDir(layout))) ?? []
        #expect(left.isEmpty, "a refused update leaves nothing: \(left)")

        // A device that trusts no key, and one that does not allow updates.
        let (bare, bareChild) = try CommandTests.agent(broker, allow: ["ping", "agent/update"])
        defer { bareChild.stop(signal: SIGTERM) }
        let r1 = try Self.send(bare, ["agent/update", "--package", path, "--key", key, "--package-version", "0.2.0", "--follow", "0"])
        #expect(r1.status == 1 && r1.output.contains("no_trusted_keys: this device trusts no update key"), "\(r1.output)")
        let (closed, closedChild) = try CommandTests.agent(broker, allow: ["ping"], extra: Self.updateConfig(pub))
        defer { closedChild.stop(signal: SIGTERM) }
        let r2 = try Self.send(closed, ["agent/update", "--package", path, "--key", key, "--package-version", "0.2.0", "--follow", "0"])
        #expect(r2.status == 1 && r2.output.contains("forbidden"), "\(r2.output)")
    }

    @Test(
        "a transfer cut short waits, survives a SIGKILL of the agent (it resumes from its last save), and finishes through link cuts; damaged chunks are refused"
    )
    func resumeThroughKillAndCuts() async throws {
        let broker = try SharedBroker.get()
        let dir = TestFiles.makeTempDir("update").path
        let (key, pub) = try Self.keygen(dir)
        let proxy = try TCPProxy(to: broker.port)
        let (layout, first) = try CommandTests.agent(
            broker, port: proxy.port, allow: ["ping", "agent/update"], extra: Self.updateConfig(pub))
        var agent = first
        defer { agent.stop(signal: SIGTERM) }
        let (_, data) = try Self.package(dir, bytes: 1_000_000)
        let seed = try UpdateKeys.privateKey(String(contentsOfFile: key, encoding: .utf8)).get()
        let sha = try Broker.run("/usr/bin/sha256sum", [dir + "/edge-agent_0.2.0_test.deb"]).prefix(64)
        let manifest = try UpdateManifest.signed(version: "0.2.0", size: data.count, sha256: String(sha), seed: seed)

        var config = MQTTConfig(
            brokerAddress: "127.0.0.1", port: broker.port, timeout: 5, clientID: uniqueID("operator"), protocolVersion: .v5_0)
        config.cleanStart = true
        let operatorClient = MQTTProtocol(config: config)
        try await operatorClient.connect()
        defer { Task { await operatorClient.disconnect() } }
        let commands = "devices/\(layout.device)/commands/agent/update"
        let sender = UpdateSender(
            client: operatorClient, loop: MultiThreadedEventLoopGroup.singleton.next(), commandTopic: commands, infoTopic: layout.infoTopic)

        var answer = try await sender.announce(manifest)
        let topic = try #require(answer["chunk_topic"].flatMap { if case .string(let s) = $0 { s } else { nil } })
        guard case .int(let size)? = answer["chunk_size"], case .int(let count)? = answer["chunks"] else {
            Issue.record("no chunk size in \(answer)")
            return
        }
        #expect(count == (data.count + size - 1) / size)
        // 40 chunks, one damaged on the way, then the operator stops: a truncated transfer.
        for i in 0..<40 {
            var chunk = UpdateSender.chunk(data, index: i, chunkSize: size)
            if i == 7 { chunk.setInteger(chunk.getInteger(at: 200, as: UInt8.self)! ^ 0xff, at: 200) }
            try await operatorClient.publish(topic, chunk, qos: 1)
        }
        answer = try await sender.announce(manifest)
        #expect(answer["received_chunks"] == .int(39), "\(answer)\n\(agent.output)")
        #expect(answer["missing"] == .array([.array([.int(7), .int(7)]), .array([.int(40), .int(count - 1)])]), "\(answer)")
        #expect(
            !FileManager.default.fileExists(atPath: Self.updateDir(layout) + "/request.json"), "an incomplete package is not handed over")
        try waitUntil(timeout: 10, "bad chunk counted in the info") {
            ((try? Self.retainedInfo(broker, layout))?["update"] as? [String: Any])?["bad_chunks"] as? Int == 1
        }

        // A power cut, as near as a process gets: SIGKILL. Progress is saved every 16 chunks.
        agent.stop(signal: SIGKILL)
        let status = try ExternalSubscriber(broker: broker, topic: layout.statusTopic, qos: 1, format: "%p")
        agent = try layout.start()
        try waitUntil(timeout: 30, "agent back online") {
            agent.output.contains("update: resuming the transfer of 0.2.0") && status.lines.last == "online"
        }
        answer = try await sender.announce(manifest)
        guard case .int(let kept)? = answer["received_chunks"] else {
            Issue.record("\(answer)")
            return
        }
        #expect(kept >= 32 - 1 && kept <= 39, "saved every 16 chunks: \(kept) of 39 kept\n\(agent.output)")

        // The rest through three cuts of the agent's link.
        let cutter = Task {
            for _ in 0..<3 {
                try await Task.sleep(for: .milliseconds(150))
                proxy.cutAll()
            }
        }
        var senderWithRetries = sender
        senderWithRetries.answerTimeout = 5
        let final = try await senderWithRetries.transfer(data, manifest) { print("operator: \($0)") }
        try await cutter.value
        #expect(final["state"] == .string("installing"), "\(final)")
        let delivered = try Data(contentsOf: URL(fileURLWithPath: Self.updateDir(layout) + "/package.deb"))
        #expect(Array(delivered) == data, "the package arrived whole")
        #expect(agent.output.contains("update: 0.2.0 received and checked"), "\(agent.output)")
    }
}
