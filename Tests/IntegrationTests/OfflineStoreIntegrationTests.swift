import Foundation
import NIOConcurrencyHelpers
import NIOCore
import OfflineStore
import Testing

@testable import Communicator

#if canImport(Glibc)
import Glibc
#endif

/// The publish queue with the offline store behind it, against real mosquitto brokers (and a
/// scripted one where a handshake must stop at an exact step).
@Suite("Offline store behind the publish queue")
struct OfflineStoreIntegrationTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static var probe: String { TestFiles.product("offline-probe") }

    func config(port: Int, store: OfflineStoreConfig) -> MQTTConfig {
        MQTTConfig(
            brokerAddress: "127.0.0.1", port: port, timeout: 3, maxReconnectAttempts: 0, reconnectInitialDelay: 0.05,
            reconnectMaxDelay: 0.3, clientID: uniqueID("store"), cleanStart: false, offlineStore: store)
    }

    static func payload(_ i: Int) -> String { String(format: "%012d ", i) + String(repeating: "x", count: i % 97 + 20) }

    /// What offline-probe sends as message `seq` (Sources/offline-probe).
    static func probePayload(_ seq: Int) -> String {
        String(format: "%012d ", seq) + String(repeating: Character(UnicodeScalar(UInt8(97 + seq % 26))), count: seq % 97 + 20)
    }

    /// The store's files: name → size.
    static func listing(_ dir: String) -> [String: Int] {
        var out: [String: Int] = [:]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            out[name] = (try? FileManager.default.attributesOfItem(atPath: dir + "/" + name)[.size] as? Int) ?? -1
        }
        return out
    }

    @Test(
        "broker down: QoS 1/2 messages wait in the store, then arrive in order and byte-identical; the store ends empty",
        arguments: [OfflineStoreConfig.Persist.offline, .always], [1, 2])
    func offlineThenDrain(persist: OfflineStoreConfig.Persist, qos: Int) throws {
        let port = Broker.freePort()
        var store = OfflineStoreConfig(directory: TestFiles.makeTempDir("store").path, capacity: 4 << 20, persist: persist)
        store.sync = persist == .always ? .always : .default
        let client = MQTTProtocol(config: config(port: port, store: store))
        #expect(throws: ProtocolConnectionError.self) { try client.connect() }
        let n = 400
        for i in 1...n { try client.publish("offline/drain", Self.payload(i), qos: qos) }
        try waitUntil(timeout: 5, "\(n) messages in the store") { client.offlineStoreStatus?.pending == n }
        let broker = try Broker.start(port: port)
        defer { broker.stop() }
        let sub = try ExternalSubscriber(broker: broker, topic: "offline/drain", qos: 2, format: "%q|%p")
        try client.connect()
        let lines = try sub.waitForLines(n, timeout: 20)
        #expect(lines == (1...n).map { "\(qos)|\(Self.payload($0))" })
        try waitUntil(timeout: 5, "store empty") { client.offlineStoreStatus?.pending == 0 }
        // While the broker takes them promptly, persist: offline keeps new messages in memory.
        for i in (n + 1)...(n + 50) { try client.publish("offline/drain", Self.payload(i), qos: qos) }
        let more = try sub.waitForLines(n + 50, timeout: 10)
        #expect(more.suffix(50) == ((n + 1)...(n + 50)).map { "\(qos)|\(Self.payload($0))" })
        client.disconnect()
        #expect(client.offlineStoreStatus?.degraded == nil)
    }

    /// Before: the store removed every message the first broker could not carry.
    @Test(
        "a broker that cannot carry the stored messages (Maximum QoS 1) does not empty the store: they are held, counted, and arrive through the next broker that can"
    )
    func heldAfterBrokerRefusal() throws {
        let port = Broker.freePort()
        let store = OfflineStoreConfig(directory: TestFiles.makeTempDir("held").path, capacity: 4 << 20)
        let client = MQTTProtocol(config: config(port: port, store: store))
        #expect(throws: ProtocolConnectionError.self) { try client.connect() }
        let n = 20
        for i in 1...n { try client.publish("held/qos2", Self.payload(i), qos: 2) }
        try waitUntil(timeout: 5, "\(n) messages in the store") { client.offlineStoreStatus?.pending == n }
        let limited = try Broker.start(.init(extraConfig: "max_qos 1\n"), port: port)
        try client.connect()
        try waitUntil(timeout: 10, "\(n) messages held") { client.offlineStoreStatus?.held == n }
        #expect(client.offlineStoreStatus?.pending == n, "the store lost messages the broker could not carry")
        client.disconnect()
        limited.stop()
        let broker = try limited.restarted(.init())
        defer { broker.stop() }
        let sub = try ExternalSubscriber(broker: broker, topic: "held/qos2", qos: 2, format: "%q|%p")
        try client.connect()
        defer { client.disconnect() }
        let lines = try sub.waitForLines(n, timeout: 20)
        #expect(lines == (1...n).map { "2|\(Self.payload($0))" })
        try waitUntil(timeout: 5, "store empty") { client.offlineStoreStatus?.pending == 0 && client.offlineStoreStatus?.held == 0 }
    }

    @Test("reject_newest: a full store refuses with a clear error, and what it accepted is all delivered")
    func rejectNewest() throws {
        let port = Broker.freePort()
        let store = OfflineStoreConfig(directory: TestFiles.makeTempDir("store").path, capacity: 16 * 8192, whenFull: .rejectNewest)
        let client = MQTTProtocol(config: config(port: port, store: store))
        let failures = NIOLockedValueBox<[Int: String]>([:])
        var thrown: String?
        var sent = 0
        let body = String(repeating: "r", count: 1500)
        for i in 1...500 {
            do {
                try client.publish("offline/reject", ByteBuffer(string: "\(i) \(body)"), qos: 1) { result in
                    if case .failure(let e) = result { failures.withLockedValue { $0[i] = "\(e)" } }
                }
                sent = i
                usleep(200)
            } catch {
                thrown = "\(error)"
                break
            }
        }
        // Every message is either stored or refused (a refusal's callback may come a moment after
        // the throw that the refusal caused).
        try waitUntil(timeout: 10, "stored + refused = sent") {
            (client.offlineStoreStatus?.pending ?? 0) + failures.withLockedValue { $0.count } == sent
        }
        let refusedLater = failures.withLockedValue { $0 }
        #expect(thrown?.contains("reject_newest") == true, "publish never refused: \(String(describing: thrown))")
        #expect(refusedLater.values.allSatisfy { $0.contains("reject_newest") }, "\(refusedLater)")
        let accepted = (1...sent).filter { refusedLater[$0] == nil }
        #expect(accepted.count > 50 && accepted.count < 130)
        let broker = try Broker.start(port: port)
        defer { broker.stop() }
        let sub = try ExternalSubscriber(broker: broker, topic: "offline/reject", qos: 1, format: "%p")
        try client.connect()
        let lines = try sub.waitForLines(accepted.count, timeout: 20)
        #expect(lines.map { Int($0.split(separator: " ")[0])! } == accepted)
        client.disconnect()
    }

    @Test("drop_oldest: a full store drops the oldest, counts each, and the newest arrive in order")
    func dropOldest() throws {
        let port = Broker.freePort()
        let store = OfflineStoreConfig(directory: TestFiles.makeTempDir("store").path, capacity: 16 * 8192, whenFull: .dropOldest)
        let client = MQTTProtocol(config: config(port: port, store: store))
        let n = 1000
        let body = String(repeating: "d", count: 700)
        for i in 1...n {
            try client.publish("offline/drop", "\(i) \(body)", qos: 1)
            if i % 100 == 0 { usleep(20_000) }
        }
        try waitUntil(timeout: 5, "store settled") {
            (client.offlineStoreStatus?.pending ?? 0) + (client.offlineStoreStatus?.dropped ?? 0) == n
        }
        let status = client.offlineStoreStatus!
        #expect(status.dropped > 0 && status.fill > 0.9)
        let broker = try Broker.start(port: port)
        defer { broker.stop() }
        let sub = try ExternalSubscriber(broker: broker, topic: "offline/drop", qos: 1, format: "%p")
        try client.connect()
        let lines = try sub.waitForLines(status.pending, timeout: 20)
        let got = lines.map { Int($0.split(separator: " ")[0])! }
        #expect(got == Array((n - status.pending + 1)...n), "the newest, in order")
        #expect(status.dropped + got.count == n)
        client.disconnect()
    }

    /// Fails every write and sync with EIO while `broken` is set.
    final class FlakyFileSystem: StoreFileSystem, @unchecked Sendable {
        let broken = NIOLockedValueBox(false)
        final class File: StoreFile {
            let inner: StoreFile
            let broken: NIOLockedValueBox<Bool>
            init(_ inner: StoreFile, _ broken: NIOLockedValueBox<Bool>) {
                self.inner = inner
                self.broken = broken
            }
            var size: Int { inner.size }
            func read(at offset: Int, count: Int) throws(StoreError) -> [UInt8] { try inner.read(at: offset, count: count) }
            func write(_ bytes: [UInt8], at offset: Int) throws(StoreError) {
                if broken.withLockedValue({ $0 }) { throw .io(operation: "pwrite", path: "flaky", errno: EIO) }
                try inner.write(bytes, at: offset)
            }
            func sync() throws(StoreError) {
                if broken.withLockedValue({ $0 }) { throw .io(operation: "fdatasync", path: "flaky", errno: EIO) }
                try inner.sync()
            }
        }
        func open(directory: String, name: String, size: Int) throws(StoreError) -> StoreFile {
            File(try PosixFileSystem().open(directory: directory, name: name, size: size), broken)
        }
        func size(directory: String, name: String) -> Int? { PosixFileSystem().size(directory: directory, name: name) }
        func remove(directory: String, name: String) throws(StoreError) { try PosixFileSystem().remove(directory: directory, name: name) }
        func syncDirectory(_ directory: String) throws(StoreError) { try PosixFileSystem().syncDirectory(directory) }
    }

    @Test("a disk error gives the degraded mode: messages kept in memory, the error exposed, the disk retried; nothing lost")
    func degradedMode() throws {
        let port = Broker.freePort()
        let fs = FlakyFileSystem()
        let store = OfflineStoreConfig(
            directory: TestFiles.makeTempDir("store").path, capacity: 1 << 20, retryInterval: 0.5, fileSystem: fs)
        let client = MQTTProtocol(config: config(port: port, store: store))
        for i in 1...50 { try client.publish("offline/degraded", "\(i)", qos: 1) }
        try waitUntil(timeout: 5, "50 stored") { client.offlineStoreStatus?.pending == 50 }
        fs.broken.withLockedValue { $0 = true }
        for i in 51...100 { try client.publish("offline/degraded", "\(i)", qos: 1) }
        try waitUntil(timeout: 5, "degraded") { client.offlineStoreStatus?.degraded != nil }
        let reason = client.offlineStoreStatus!.degraded!
        #expect(reason.contains("Input/output error") && reason.contains("errno 5"), "\(reason)")
        fs.broken.withLockedValue { $0 = false }
        try waitUntil(timeout: 5, "healthy again") { client.offlineStoreStatus?.degraded == nil }
        let broker = try Broker.start(port: port)
        defer { broker.stop() }
        let sub = try ExternalSubscriber(broker: broker, topic: "offline/degraded", qos: 1, format: "%p")
        try client.connect()
        let lines = try sub.waitForLines(100, timeout: 20)
        // Messages kept in memory during the outage may overtake the store's backlog (documented).
        #expect(Set(lines.map { Int($0)! }) == Set(1...100))
        try waitUntil(timeout: 5, "store empty") { client.offlineStoreStatus?.pending == 0 }
        client.disconnect()
    }

    @Test("a store that cannot be opened: the client runs from memory and says why")
    func unopenableStore() throws {
        let dir = TestFiles.makeTempDir("store").path
        let first = try RingStore(directory: dir, options: .init(capacity: 16 * 8192))  // holds the lock
        let store = OfflineStoreConfig(directory: dir, capacity: 16 * 8192)
        let broker = try SharedBroker.get()
        let client = MQTTProtocol(config: config(port: broker.port, store: store))
        #expect(client.offlineStoreStatus?.degraded?.contains("in use by another process") == true)
        let inbox = Inbox()
        try client.connect()
        let topic = uniqueTopic("unopenable")
        try client.subscribe(topic, qos: 1) { t, p in inbox.add(t, p) }
        try client.publish(topic, "still works", qos: 1)
        #expect(try inbox.wait(for: 1).first?.payload == "still works")
        client.disconnect()
        _ = first
    }

    @Test(
        "a full file system: the store cannot be created, the client runs degraded from memory, and takes the store once there is room",
        .enabled(if: getuid() == 0 && FileManager.default.fileExists(atPath: "/bin/mount")))
    func fullFileSystem() throws {
        let mountPoint = TestFiles.makeTempDir("tmpfs").path
        guard system("mount -t tmpfs -o size=512k tmpfs '\(mountPoint)'") == 0 else {
            Issue.record("cannot mount a tmpfs at \(mountPoint)")
            return
        }
        defer { _ = system("umount '\(mountPoint)'") }
        _ = system("dd if=/dev/zero of='\(mountPoint)/filler' bs=4k count=100 2>/dev/null")  // 400 of 512 KiB
        let store = OfflineStoreConfig(directory: mountPoint + "/store", capacity: 16 * 16384, retryInterval: 0.5)
        let broker = try SharedBroker.get()
        let client = MQTTProtocol(config: config(port: broker.port, store: store))
        let reason = client.offlineStoreStatus?.degraded ?? ""
        #expect(reason.contains("No space left on device"), "\(reason)")
        let inbox = Inbox()
        try client.connect()
        let topic = uniqueTopic("fullfs")
        try client.subscribe(topic, qos: 1) { t, p in inbox.add(t, p) }
        for i in 1...20 { try client.publish(topic, "\(i)", qos: 1) }
        #expect(try inbox.wait(for: 20).map(\.payload) == (1...20).map { "\($0)" })
        unlink(mountPoint + "/filler")
        try waitUntil(timeout: 5, "the store opened on a retry") { client.offlineStoreStatus?.degraded == nil }
        #expect(Self.listing(mountPoint + "/store").count == 17)
        client.disconnect()
    }

    // MARK: - Black box: a separate program, killed with SIGKILL

    struct ProbeRun {
        var accepted: [(seq: Int, at: UInt64)] = []
        var killedAt: UInt64 = 0
    }

    static func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    static func parseAccepted(_ output: String) -> [(seq: Int, at: UInt64)] {
        output.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ")
            guard f.count == 3, f[0] == "accepted", let s = Int(f[1]), let t = UInt64(f[2]) else { return nil }
            return (s, t)
        }
    }

    @Test(
        "SIGKILL at random moments, broker down: every message accepted more than a sync interval before a kill arrives, byte-identical; the file set never changes"
    )
    func sigkillBlackBox() throws {
        let port = Broker.freePort()
        let dir = TestFiles.makeTempDir("probe-store").path
        var rng = SystemRandomNumberGenerator()
        var runs: [ProbeRun] = []
        var next = 1
        var files: [String: Int]?
        for k in 0..<12 {
            let out = TestFiles.makeTempDir("probe").appendingPathComponent("out").path
            let child = try Child.spawn(
                Self.probe,
                [
                    "--port", "\(port)", "--store", dir, "--first", "\(next)", "--count", "1000000", "--interval-ms", "1", "--capacity",
                    "\(8 << 20)",
                ],
                output: out)
            // Kill at a random moment: early (while opening / recovering) now and then, mostly mid-stream.
            // (Longer under emulation, where the probe accepts fewer messages per second.)
            let delay =
                k % 4 == 0 ? Double.random(in: 0.05...0.4, using: &rng) : Double.random(in: 1.2...2.5, using: &rng) * TestTiming.scale
            usleep(UInt32(delay * 1e6))
            let killedAt = Self.monotonicNanos()
            child.stop(signal: SIGKILL)
            let accepted = Self.parseAccepted(child.output)
            #expect(!child.output.contains("error:"), "\(child.output.suffix(500))")
            runs.append(ProbeRun(accepted: accepted, killedAt: killedAt))
            if let last = accepted.last { next = last.seq + 1 }
            let now = Self.listing(dir)
            if files == nil, now.count == 17 { files = now }
            if let files, !now.isEmpty { #expect(now == files, "file set changed after kill \(k)") }
        }
        // Broker up, a subscriber, then the probe drains what the store holds.
        let broker = try Broker.start(port: port)
        defer { broker.stop() }
        let sub = try ExternalSubscriber(broker: broker, topic: "probe/seq", qos: 1, format: "%p")
        let out = TestFiles.makeTempDir("probe").appendingPathComponent("out").path
        let drainer = try Child.spawn(
            Self.probe, ["--port", "\(port)", "--store", dir, "--drain", "--capacity", "\(8 << 20)"], output: out)
        try waitUntil(timeout: 60, "probe drained") { drainer.output.contains("drained") }
        _ = try drainer.wait(timeout: 10)
        usleep(300_000)
        let received = sub.lines
        var got: [Int: String] = [:]
        for line in received { if let s = Int(line.prefix(12)) { got[s] = line } }
        // The loss window: the sync interval (1 s) plus the 0.1 s tick that applies it. Under
        // emulation the probe's loop runs the tick late (a SIGKILL keeps what was written, so a
        // loss is data the probe had not yet written), hence the window scales there too.
        let window = UInt64(1_150_000_000 * TestTiming.scale)
        var required = 0
        var missing: [Int] = []
        var lostInWindow = 0
        for run in runs {
            for a in run.accepted {
                if a.at + window < run.killedAt {
                    required += 1
                    if got[a.seq] == nil { missing.append(a.seq) }
                } else if got[a.seq] == nil {
                    lostInWindow += 1
                }
            }
        }
        let acceptedAll = runs.reduce(0) { $0 + $1.accepted.count }
        print(
            "offline store SIGKILL black box: \(runs.count) kills, \(acceptedAll) accepted, \(required) older than the sync interval, \(missing.count) of those missing, \(lostInWindow) lost inside the window, \(received.count) received"
        )
        #expect(required > 1000, "the runs were too short to prove anything")
        #expect(missing.isEmpty, "lost: \(missing.prefix(20))")
        for (s, line) in got { #expect(line == Self.probePayload(s), "message \(s) differs") }
        let acceptedSet = Set(runs.flatMap { $0.accepted.map(\.seq) })
        #expect(got.keys.allSatisfy { acceptedSet.contains($0) || $0 >= next }, "a message nobody accepted arrived")
        #expect(Self.listing(dir) == files)
    }

    static func runTool(_ args: [String]) throws -> (status: Int32, output: String) {
        let out = TestFiles.makeTempDir("tool").appendingPathComponent("out").path
        let child = try Child.spawn(TestFiles.product("edge-agent"), args, output: out)
        let status = try child.wait(timeout: 30)
        return (status, child.output)
    }

    @Test("edge-agent buffer inspect shows what waits, beside the running program; --dump gives every record as JSON")
    func bufferInspect() throws {
        let dir = TestFiles.makeTempDir("probe-store").path
        let out = TestFiles.makeTempDir("probe").appendingPathComponent("out").path
        let probe = try Child.spawn(
            Self.probe,
            ["--port", "\(Broker.freePort())", "--store", dir, "--count", "200", "--interval-ms", "0", "--capacity", "\(1 << 20)"],
            output: out)
        defer { probe.stop(signal: SIGKILL) }
        try waitUntil(timeout: 30, "200 accepted") { probe.output.contains("accepted 200 ") }
        usleep(1_400_000)  // one sync interval
        let (status, text) = try Self.runTool(["buffer", "inspect", dir])
        #expect(status == 0, "\(text)")
        #expect(text.contains("waiting:    200 messages"), "\(text)")
        #expect(text.contains("oldest:     #1  ") && text.contains("newest:     #200  ") && text.contains("probe/seq"), "\(text)")
        #expect(text.contains("corrupt:    0 records skipped"), "\(text)")
        let (dumpStatus, dump) = try Self.runTool(["buffer", "inspect", dir, "--dump"])
        #expect(dumpStatus == 0)
        let lines = dump.split(separator: "\n")
        #expect(lines.count == 200)
        for (i, line) in lines.enumerated() {
            let json = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(json?["seq"] as? Int == i + 1 && json?["kind"] as? String == "message" && json?["qos"] as? Int == 1)
            #expect(json?["payload"] as? String == Self.probePayload(i + 1))
        }
        let (limited, few) = try Self.runTool(["buffer", "inspect", dir, "--dump", "--limit", "3"])
        #expect(limited == 0 && few.split(separator: "\n").count == 3)
        let (bad, message) = try Self.runTool(["buffer", "inspect", dir + "/nothing-here"])
        #expect(bad == 1)
        #expect(
            message.contains("cannot read the offline store at \(dir)/nothing-here") && message.contains("No such file or directory"),
            "\(message)")
        #expect(probe.isRunning, "inspecting disturbed the running program")
    }

    enum QoS2Stop: String, CaseIterable, Sendable {
        case afterPublish = "after PUBLISH"
        case afterPubrel = "after PUBREL"
    }

    @Test(
        "QoS 2 across a SIGKILL: the restarted program resumes with the same packet identifier (PUBLISH with DUP, or PUBREL)",
        arguments: QoS2Stop.allCases)
    func qos2AcrossRestart(stop: QoS2Stop) throws {
        let dir = TestFiles.makeTempDir("probe-store").path
        let firstID = NIOLockedValueBox<UInt16?>(nil)
        let resumed = NIOLockedValueBox<[MQTTPacket]>([])
        let reachedStop = NIOLockedValueBox(false)
        let broker = try ScriptedBroker(connections: 2) { conn, n in
            guard case .connect(let c) = try conn.read(timeout: 30) else { throw TestFailure("expected CONNECT") }
            if n == 0 {
                conn.send(.connack(.init(sessionPresent: false, returnCode: 0)))
                guard case .publish(let p) = try conn.read(timeout: 30), p.qos == .exactlyOnce else {
                    throw TestFailure("expected a QoS 2 PUBLISH")
                }
                firstID.withLockedValue { $0 = p.packetID }
                if stop == .afterPubrel {
                    conn.send(.ack(.init(.pubrec, packetID: p.packetID!)))
                    guard case .ack(let rel) = try conn.read(timeout: 30), rel.kind == .pubrel else { throw TestFailure("expected PUBREL") }
                }
                reachedStop.withLockedValue { $0 = true }
                _ = try conn.read(timeout: 60)  // until the program is killed
                conn.close()
            } else {
                guard !c.cleanStart else { throw TestFailure("the restarted program asked for a clean session") }
                conn.send(.connack(.init(sessionPresent: true, returnCode: 0)))
                while let p = try conn.read(timeout: 30) {
                    resumed.withLockedValue { $0.append(p) }
                    switch p {
                    case .publish(let pub): conn.send(.ack(.init(.pubrec, packetID: pub.packetID!)))
                    case .ack(let a) where a.kind == .pubrel: conn.send(.ack(.init(.pubcomp, packetID: a.packetID)))
                    case .disconnect:
                        conn.close()
                        return
                    default: break
                    }
                }
            }
        }
        let out1 = TestFiles.makeTempDir("probe").appendingPathComponent("out").path
        let first = try Child.spawn(
            Self.probe, ["--port", "\(broker.port)", "--store", dir, "--count", "1", "--qos", "2", "--capacity", "\(1 << 20)"], output: out1
        )
        try waitUntil(timeout: 30, "the handshake reached \(stop)") { reachedStop.withLockedValue { $0 } }
        first.stop(signal: SIGKILL)
        let out2 = TestFiles.makeTempDir("probe").appendingPathComponent("out").path
        let second = try Child.spawn(
            Self.probe, ["--port", "\(broker.port)", "--store", dir, "--drain", "--capacity", "\(1 << 20)"], output: out2)
        try waitUntil(timeout: 30, "drained: \(second.output)") { second.output.contains("drained") }
        _ = try second.wait(timeout: 10)
        #expect(broker.scriptErrors.isEmpty, "\(broker.scriptErrors)")
        let id = try #require(firstID.withLockedValue { $0 })
        let packets = resumed.withLockedValue { $0 }
        switch stop {
        case .afterPublish:
            guard case .publish(let p) = packets.first else {
                Issue.record("expected PUBLISH first, got \(packets)")
                return
            }
            #expect(p.packetID == id && p.dup && p.qos == .exactlyOnce)
            #expect(p.payload == ByteBuffer(string: Self.probePayload(1)))
        case .afterPubrel:
            guard case .ack(let a) = packets.first else {
                Issue.record("expected PUBREL first, got \(packets)")
                return
            }
            #expect(a.kind == .pubrel && a.packetID == id)
            #expect(!packets.contains { if case .publish = $0 { true } else { false } }, "the message was published again")
        }
    }
}
