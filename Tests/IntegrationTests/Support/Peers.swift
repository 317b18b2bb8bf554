import Communicator
import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// An independent subscriber (mosquitto_sub) that records "topic|qos|retain|payload" lines.
final class ExternalSubscriber: @unchecked Sendable {
    let process: Child
    let id: String

    /// Starts mosquitto_sub and returns once the broker has acknowledged its subscription.
    init(broker: Broker, topic: String, qos: Int = 2, format: String = "%t|%q|%r|%p", extraArgs: [String] = []) throws {
        id = "ext-sub-\(UUID().uuidString.prefix(8))"
        let out = TestFiles.makeTempDir("sub").appendingPathComponent("out").path
        process = try Child.spawn(
            "/usr/bin/mosquitto_sub",
            ["-h", "127.0.0.1", "-p", "\(broker.port)", "-i", id, "-t", topic, "-q", "\(qos)", "-F", format] + extraArgs,
            output: out)
        try waitUntil(timeout: 5, "mosquitto_sub \(id) subscribed") { broker.log.contains("Sending SUBACK to \(self.id)") }
    }

    var lines: [String] { process.output.split(separator: "\n").map(String.init) }

    func waitForLines(_ n: Int, timeout: Double = 10) throws -> [String] {
        do { try waitUntil(timeout: timeout, "\(n) lines at mosquitto_sub") { self.lines.count >= n } } catch {
            throw TestFailure("\(error) (it has \(lines.count))")
        }
        return lines
    }

    func stop() { process.stop() }

    deinit { stop() }
}

/// Waits in the tests are written for native speed. Under emulation (qemu-user in
/// deploy/cross/aarch64.sh) everything is several times slower: EDGE_TEST_TIME_SCALE stretches
/// every timeout of the test tooling by that factor. It never shortens one, and no assertion
/// about a duration uses it.
enum TestTiming {
    static let scale: Double = max(1, Double(ProcessInfo.processInfo.environment["EDGE_TEST_TIME_SCALE"] ?? "") ?? 1)
}

/// Polls `condition` every 10 ms until it holds or `timeout` seconds (× TestTiming.scale) pass.
func waitUntil(timeout unscaled: Double, _ what: String, _ condition: () -> Bool) throws {
    let timeout = unscaled * TestTiming.scale
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if condition() { return }
        usleep(10_000)
    }
    if condition() { return }
    throw TestFailure("timed out after \(timeout) s waiting for: \(what)")
}

/// Collects messages delivered to a callback, thread-safely.
final class Inbox: @unchecked Sendable {
    private let box = NIOLockedValueBox<[(topic: String, payload: String)]>([])
    private let messages = NIOLockedValueBox<[MQTTMessage]>([])

    func add(_ topic: String, _ payload: String) { box.withLockedValue { $0.append((topic, payload)) } }
    func add(_ m: MQTTMessage) {
        messages.withLockedValue { $0.append(m) }
        add(m.topic, m.string)
    }

    var all: [(topic: String, payload: String)] { box.withLockedValue { $0 } }
    var full: [MQTTMessage] { messages.withLockedValue { $0 } }
    var count: Int { box.withLockedValue { $0.count } }

    func wait(for n: Int, timeout: Double = 10) throws -> [(topic: String, payload: String)] {
        try waitUntil(timeout: timeout, "\(n) messages (have \(count))") { self.count >= n }
        return all
    }
}

/// Test certificates made with openssl for each run: never committed.
struct TestPKI {
    let dir: URL
    var caCert: String { dir.appendingPathComponent("ca.crt").path }
    var serverCert: String { dir.appendingPathComponent("server.crt").path }
    var serverKey: String { dir.appendingPathComponent("server.key").path }
    var clientCert: String { dir.appendingPathComponent("client.crt").path }
    var clientKey: String { dir.appendingPathComponent("client.key").path }
    var otherCACert: String { dir.appendingPathComponent("other-ca.crt").path }

    private static let shared = NIOLockedValueBox<TestPKI?>(nil)

    static func get() throws -> TestPKI {
        try shared.withLockedValue { cached in
            if let cached { return cached }
            let pki = try TestPKI(dir: TestFiles.makeTempDir("pki"))
            cached = pki
            return pki
        }
    }

    private init(dir: URL) throws {
        self.dir = dir
        let o = "/usr/bin/openssl"
        func p(_ name: String) -> String { dir.appendingPathComponent(name).path }
        for ca in ["ca", "other-ca"] {
            try Broker.run(
                o,
                [
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=edge-agent test \(ca)",
                    "-keyout", p("\(ca).key"), "-out", p("\(ca).crt"),
                ])
        }
        // Server: valid for the name "localhost" only (no IP SAN, so a wrong name cannot pass on the IP).
        try "subjectAltName=DNS:localhost\n".write(toFile: p("server.ext"), atomically: true, encoding: .utf8)
        try Broker.run(
            o, ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", p("server.key"), "-out", p("server.csr")])
        try Broker.run(
            o,
            [
                "x509", "-req", "-in", p("server.csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"), "-CAcreateserial",
                "-days", "2", "-extfile", p("server.ext"), "-out", p("server.crt"),
            ])
        try Broker.run(
            o,
            ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=edge-test-client", "-keyout", p("client.key"), "-out", p("client.csr")])
        try Broker.run(
            o,
            [
                "x509", "-req", "-in", p("client.csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"), "-CAcreateserial",
                "-days", "2", "-out", p("client.crt"),
            ])
    }
}

func uniqueTopic(_ base: String) -> String { "test/\(base)/\(UUID().uuidString.prefix(8))" }
func uniqueID(_ base: String) -> MQTTConfig.ClientID { .fixed("\(base)-\(UUID().uuidString.prefix(8))") }
