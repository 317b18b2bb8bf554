import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// A real mosquitto started by the tests on a free loopback port, stopped at the end.
/// Every process the tests start is remembered and killed when the test process exits.
final class Broker: @unchecked Sendable {
    let port: Int
    let dir: URL
    let process: Child
    let logPath: URL
    let options: Options

    struct Options {
        var extraConfig = ""
        var users: [String: String] = [:]
        /// TLS listener: (ca, cert, key, requireClientCert)
        var tls: (ca: String, cert: String, key: String, requireClientCert: Bool)?
        var persistence = false

        init(
            extraConfig: String = "", users: [String: String] = [:],
            tls: (ca: String, cert: String, key: String, requireClientCert: Bool)? = nil, persistence: Bool = false
        ) {
            self.extraConfig = extraConfig
            self.users = users
            self.tls = tls
            self.persistence = persistence
        }
    }

    static func start(_ options: Options = Options(), port fixedPort: Int? = nil, dir existing: URL? = nil) throws -> Broker {
        let dir = existing ?? TestFiles.makeTempDir("broker")
        let port = fixedPort ?? freePort()
        var conf = """
            per_listener_settings false
            user root
            log_dest file \(dir.path)/mosquitto.log
            log_type all
            listener \(port) 127.0.0.1

            """
        if options.users.isEmpty {
            conf += "allow_anonymous true\n"
        } else {
            let pw = dir.appendingPathComponent("passwd")
            _ = FileManager.default.createFile(atPath: pw.path, contents: Data())
            for (u, p) in options.users {
                try run("/usr/bin/mosquitto_passwd", ["-b", pw.path, u, p])
            }
            conf += "allow_anonymous false\npassword_file \(pw.path)\n"
        }
        if let tls = options.tls {
            conf += "cafile \(tls.ca)\ncertfile \(tls.cert)\nkeyfile \(tls.key)\n"
            conf += "require_certificate \(tls.requireClientCert ? "true" : "false")\n"
        }
        if options.persistence {
            conf += "persistence true\npersistence_location \(dir.path)/\nautosave_interval 1\n"
        }
        conf += options.extraConfig + "\n"
        let confPath = dir.appendingPathComponent("mosquitto.conf")
        try conf.write(to: confPath, atomically: true, encoding: .utf8)
        let p = try Child.spawn("/usr/sbin/mosquitto", ["-c", confPath.path], output: dir.appendingPathComponent("stdout.log").path)
        let broker = Broker(port: port, dir: dir, process: p, logPath: dir.appendingPathComponent("mosquitto.log"), options: options)
        try broker.waitListening()
        return broker
    }

    private init(port: Int, dir: URL, process: Child, logPath: URL, options: Options) {
        self.port = port
        self.dir = dir
        self.process = process
        self.logPath = logPath
        self.options = options
    }

    /// A new broker process on the same port and folder (so a persistent database carries over),
    /// with these options or the same ones. Stop or kill this one first.
    func restarted(_ newOptions: Options? = nil) throws -> Broker {
        try Broker.start(newOptions ?? options, port: port, dir: dir)
    }

    private func waitListening() throws {
        for _ in 0..<Int(200 * TestTiming.scale) {
            if Self.canConnect(port: port) { return }
            if let status = process.poll() {
                throw TestFailure("mosquitto exited at start (status \(status)); log:\n\(log)\n\(process.output)")
            }
            usleep(25_000)
        }
        throw TestFailure("mosquitto did not listen on \(port) within 5 s; log:\n\(log)")
    }

    var log: String { (try? String(contentsOf: logPath, encoding: .utf8)) ?? "" }

    func stop() { process.stop() }

    /// kill -9: no persistence flush, no goodbye.
    func kill9() { process.stop(signal: SIGKILL) }

    deinit { stop() }

    static func canConnect(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return r == 0
    }

    /// Ports handed out in this process: never twice, so a test that reserves a port and starts
    /// its broker later cannot collide with another test's broker.
    private static let handedOut = NIOLockedValueBox<Set<Int>>([])

    static func freePort() -> Int {
        while true {
            let p = unusedPort()
            if handedOut.withLockedValue({ $0.insert(p).inserted }) { return p }
        }
    }

    private static func unusedPort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Runs a program to completion; throws with its output if it fails.
    @discardableResult
    static func run(_ path: String, _ args: [String], timeout: Double = 60) throws -> String {
        let out = TestFiles.makeTempDir("run").appendingPathComponent("out").path
        let child = try Child.spawn(path, args, output: out)
        let status = try child.wait(timeout: timeout)
        let text = child.output
        guard status == 0 else {
            throw TestFailure("\(path) \(args.joined(separator: " ")) exited \(status): \(text)")
        }
        return text
    }
}

/// One broker shared by the tests that need nothing special.
enum SharedBroker {
    private static let box = NIOLockedValueBox<Broker?>(nil)
    static func get() throws -> Broker {
        try box.withLockedValue { b in
            if let b, b.process.isRunning { return b }
            let nb = try Broker.start()
            b = nb
            return nb
        }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Child processes to kill if the test process ends with them still running.
enum ChildProcesses {
    private static let pids = NIOLockedValueBox<Set<Int32>>([])
    private static let installed = NIOLockedValueBox(false)

    static func register(_ pid: Int32) {
        installed.withLockedValue { done in
            if !done {
                done = true
                atexit { ChildProcesses.killAll() }
            }
        }
        pids.withLockedValue { _ = $0.insert(pid) }
    }

    static func unregister(_ pid: Int32) {
        pids.withLockedValue { _ = $0.remove(pid) }
    }

    static func killAll() {
        for pid in pids.withLockedValue({ $0 }) { kill(pid, SIGKILL) }
    }
}

enum TestFiles {
    /// The folder with the products under test (edge-agent, offline-probe): the one the test
    /// bundle itself was built into, so a cross build (`.build-cross-arm64/debug`, run under qemu)
    /// tests its own binaries.
    static let products: String = {
        let bundleDir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        if FileManager.default.isExecutableFile(atPath: bundleDir + "/edge-agent") { return bundleDir }
        return OfflineStoreIntegrationTests.packageRoot.appendingPathComponent(".build/debug").path
    }()

    static func product(_ name: String) -> String { products + "/" + name }

    static func makeTempDir(_ prefix: String) -> URL {
        let base = ProcessInfo.processInfo.environment["EDGE_TEST_TMP"] ?? NSTemporaryDirectory()
        let url = URL(fileURLWithPath: base).appendingPathComponent("edge-\(prefix)-\(UUID().uuidString.prefix(8))")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}
