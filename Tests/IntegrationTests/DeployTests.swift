import Foundation
import NIOConcurrencyHelpers
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What deploys the agent: the systemd notify protocol, the unit, the Debian package, the
/// install script.
@Suite("Deployment")
struct DeployTests {
    static var root: String { OfflineStoreIntegrationTests.packageRoot.path }

    /// A datagram socket standing in for systemd's NOTIFY_SOCKET; records what arrives, with times.
    final class NotifySocket: @unchecked Sendable {
        let path: String
        let fd: Int32
        private let messages = NIOLockedValueBox<[(at: Double, text: String)]>([])
        private let start = ProcessInfo.processInfo.systemUptime

        init() throws {
            let path = TestFiles.makeTempDir("notify").appendingPathComponent("notify.sock").path
            let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
            self.path = path
            self.fd = fd
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
            let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
            guard rc == 0 else { throw TestFailure("cannot bind \(path): errno \(errno)") }
            let (messages, start) = (messages, start)
            Thread.detachNewThread {
                var buf = [UInt8](repeating: 0, count: 4096)
                while true {
                    let n = recv(fd, &buf, buf.count, 0)
                    if n <= 0 { return }
                    let text = String(decoding: buf[0..<n], as: UTF8.self)
                    messages.withLockedValue { $0.append((ProcessInfo.processInfo.systemUptime - start, text)) }
                }
            }
        }

        var all: [(at: Double, text: String)] { messages.withLockedValue { $0 } }

        deinit {
            shutdown(fd, Int32(SHUT_RDWR))
            close(fd)
        }
    }

    @Test("the agent speaks the notify protocol: READY after the first connection attempt, WATCHDOG at half the interval, STOPPING on SIGTERM",
          arguments: [true, false])
    func notifyProtocol(brokerUp: Bool) throws {
        let broker = brokerUp ? try SharedBroker.get() : nil
        let layout = try AgentEndToEndTests.Layout()
        try layout.write(port: broker?.port ?? Broker.freePort(), sources: CommandTests.quietSources)
        let notify = try NotifySocket()
        let agent = try layout.start(["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"])
        defer { agent.stop(signal: SIGKILL) }
        try waitUntil(timeout: 30, "READY") { notify.all.contains { $0.text.hasPrefix("READY=1") } }
        let ready = notify.all.first { $0.text.hasPrefix("READY=1") }!
        #expect(ready.text.contains(brokerUp ? "STATUS=connected" : "STATUS=offline"), "\(ready.text)")
        try waitUntil(timeout: 10, "watchdog pings") { notify.all.filter { $0.text == "WATCHDOG=1" }.count >= 5 }
        let pings = notify.all.filter { $0.text == "WATCHDOG=1" }.map(\.at)
        let gaps = zip(pings, pings.dropFirst()).map { $1 - $0 }.sorted()
        #expect((0.3...0.9).contains(gaps[gaps.count / 2]), "WATCHDOG every half second: \(gaps)")
        #expect(pings.first! >= ready.at, "no WATCHDOG before READY")
        agent.stop(signal: SIGTERM)
        #expect(notify.all.contains { $0.text == "STOPPING=1" })
        #expect(agent.output.contains("systemd: READY"))
    }

    @Test("the unit is hardened: systemd-analyze rates it OK or better")
    func unitSecurity() throws {
        let out = try Broker.run("/usr/bin/systemd-analyze", ["security", "--offline=true", Self.root + "/deploy/edge-agent.service"])
        let line = try #require(out.split(separator: "\n").first { $0.contains("Overall exposure level") })
        // "→ Overall exposure level for edge-agent.service: 1.6 OK :-)" (newer systemd adds the ":-)").
        let number = try #require(line.range(of: #"[0-9]+\.[0-9]+"#, options: .regularExpression), "no score in \(line)")
        let score = try #require(Double(line[number]))
        print("systemd-analyze security: \(line)")
        #expect(score <= 3.0 && (line.contains("OK") || line.contains("SAFE")), "\(line)")
    }

    static func buildDeb(version: String, out: String) throws -> String {
        let script = Self.root + "/deploy/build-deb.sh"
        let log = TestFiles.makeTempDir("deb").appendingPathComponent("log").path
        let child = try Child.spawn(
            "/bin/bash", [script, "--binary", AgentEndToEndTests.binary, "--version", version, "--out", out], output: log,
            environment: ["EDGE_AGENT_ALLOW_TOOLCHAIN_RUNTIME": "1"])
        guard try child.wait(timeout: 120) == 0 else { throw TestFailure("build-deb.sh failed: \(child.output)") }
        return child.output.split(separator: "\n").last.map(String.init) ?? ""
    }

    @Test("the package holds the binary, the unit, the conffile configuration, profiles and docs")
    func packageContents() throws {
        let out = TestFiles.makeTempDir("deb").path
        let deb = try Self.buildDeb(version: "0.1.0", out: out)
        let contents = try Broker.run("/usr/bin/dpkg-deb", ["--contents", deb])
        for path in ["./usr/bin/edge-agent", "./lib/systemd/system/edge-agent.service", "./etc/edge-agent/config.yaml",
                     "./usr/share/edge-agent/hardware/raspberry-pi-4.yaml", "./usr/share/edge-agent/hardware/simulated.yaml",
                     "./usr/share/doc/edge-agent/COMMANDS.md"] {
            #expect(contents.contains(path), "\(path) missing from the package")
        }
        // The package root is 0755 like every directory in it (a 0700 "./" is what mktemp gives).
        #expect(contents.split(separator: "\n").allSatisfy { !$0.hasPrefix("d") || $0.hasPrefix("drwxr-xr-x") }, "\(contents)")
        let info = try Broker.run("/usr/bin/dpkg-deb", ["--info", deb])
        #expect(info.contains("Package: edge-agent") && info.contains("Version: 0.1.0") && (info.contains("libgpiod2") || info.contains("libgpiod3")), "\(info)")
        let control = out + "/control"
        try Broker.run("/usr/bin/dpkg-deb", ["-e", deb, control])
        #expect(try String(contentsOfFile: control + "/conffiles", encoding: .utf8) == "/etc/edge-agent/config.yaml\n")
        #expect(FileManager.default.isExecutableFile(atPath: control + "/postinst") && FileManager.default.isExecutableFile(atPath: control + "/postrm"))
        let check = try Child.spawn(AgentEndToEndTests.binary, ["check-config", Self.root + "/deploy/config.yaml"], output: out + "/check.out")
        #expect(try check.wait() == 0, "the packaged configuration must be valid: \(check.output)")
    }

    static var canInstall: Bool { getuid() == 0 && FileManager.default.fileExists(atPath: "/usr/bin/dpkg") }

    @Test("install, upgrade (the operator's configuration kept), remove (data kept) and purge on this machine", .enabled(if: canInstall))
    func installUpgradePurge() throws {
        let out = TestFiles.makeTempDir("deb").path
        let v1 = try Self.buildDeb(version: "0.1.0", out: out)
        let v2 = try Self.buildDeb(version: "0.1.1", out: out)
        defer { _ = try? Broker.run("/usr/bin/dpkg", ["--purge", "edge-agent"]) }
        try Broker.run("/usr/bin/dpkg", ["-i", v1])
        #expect(FileManager.default.isExecutableFile(atPath: "/usr/bin/edge-agent"))
        #expect(try Broker.run("/usr/bin/getent", ["passwd", "edge-agent"]).contains("/var/lib/edge-agent"))
        let owner = try Broker.run("/usr/bin/stat", ["-c", "%U:%G %a", "/var/lib/edge-agent"])
        #expect(owner.hasPrefix("edge-agent:edge-agent 750"), "\(owner)")
        #expect(try Broker.run("/usr/bin/systemd-analyze", ["verify", "/lib/systemd/system/edge-agent.service"]).isEmpty)
        // The operator edits the configuration; an upgrade keeps the edit.
        var config = try String(contentsOfFile: "/etc/edge-agent/config.yaml", encoding: .utf8)
        config = config.replacingOccurrences(of: "host: 127.0.0.1", with: "host: broker.fleet.example")
        try config.write(toFile: "/etc/edge-agent/config.yaml", atomically: false, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: "/var/lib/edge-agent/keep-me", contents: Data("buffered".utf8))
        try Broker.run("/usr/bin/dpkg", ["-i", "--force-confold", v2])
        #expect(try Broker.run("/usr/bin/dpkg-query", ["-W", "-f", "${Version}", "edge-agent"]) == "0.1.1")
        #expect(try String(contentsOfFile: "/etc/edge-agent/config.yaml", encoding: .utf8).contains("broker.fleet.example"))
        // Remove: binary gone, configuration and data kept.
        try Broker.run("/usr/bin/dpkg", ["-r", "edge-agent"])
        #expect(!FileManager.default.fileExists(atPath: "/usr/bin/edge-agent"))
        #expect(FileManager.default.fileExists(atPath: "/etc/edge-agent/config.yaml"))
        #expect(FileManager.default.fileExists(atPath: "/var/lib/edge-agent/keep-me"))
        // Purge: everything gone, the user too.
        try Broker.run("/usr/bin/dpkg", ["--purge", "edge-agent"])
        #expect(!FileManager.default.fileExists(atPath: "/etc/edge-agent"))
        #expect(!FileManager.default.fileExists(atPath: "/var/lib/edge-agent"))
        #expect((try? Broker.run("/usr/bin/getent", ["passwd", "edge-agent"])) == nil)
    }

    @Test("the install script for boards without dpkg lays out the files, keeps an existing configuration; uninstall keeps data unless purged")
    func installScript() throws {
        let target = TestFiles.makeTempDir("rootfs").path
        try Broker.run("/bin/bash", [Self.root + "/deploy/install.sh", "--binary", AgentEndToEndTests.binary, "--root", target])
        for path in ["/usr/local/bin/edge-agent", "/etc/systemd/system/edge-agent.service", "/etc/edge-agent/config.yaml",
                     "/usr/local/share/edge-agent/hardware/generic.yaml"] {
            #expect(FileManager.default.fileExists(atPath: target + path), "\(path) not installed")
        }
        #expect(try String(contentsOfFile: target + "/etc/systemd/system/edge-agent.service", encoding: .utf8).contains("ExecStart=/usr/local/bin/edge-agent run"))
        try "device_id: mine\n".write(toFile: target + "/etc/edge-agent/config.yaml", atomically: true, encoding: .utf8)
        let again = try Broker.run("/bin/bash", [Self.root + "/deploy/install.sh", "--binary", AgentEndToEndTests.binary, "--root", target])
        #expect(again.contains("keeping the existing"))
        #expect(try String(contentsOfFile: target + "/etc/edge-agent/config.yaml", encoding: .utf8) == "device_id: mine\n")
        try Broker.run("/bin/bash", [Self.root + "/deploy/uninstall.sh", "--root", target])
        #expect(!FileManager.default.fileExists(atPath: target + "/usr/local/bin/edge-agent"))
        #expect(FileManager.default.fileExists(atPath: target + "/etc/edge-agent/config.yaml"))
        try Broker.run("/bin/bash", [Self.root + "/deploy/uninstall.sh", "--purge", "--root", target])
        #expect(!FileManager.default.fileExists(atPath: target + "/etc/edge-agent"))
    }
}
