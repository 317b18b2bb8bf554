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
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
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

    @Test(
        "the agent speaks the notify protocol: READY after the first connection attempt, WATCHDOG at half the interval, STOPPING on SIGTERM",
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

    @Test("the unit gives the password as a credential (a file the package makes empty), never through Environment=")
    func unitPasswordCredential() throws {
        let unit = try String(contentsOfFile: Self.root + "/deploy/edge-agent.service", encoding: .utf8)
        let lines = unit.split(separator: "\n").map(String.init)
        #expect(lines.contains("LoadCredential=mqtt-password:/etc/edge-agent/mqtt-password"))
        let postinst = try String(contentsOfFile: Self.root + "/deploy/debian/postinst", encoding: .utf8)
        #expect(postinst.contains("install -m 0600 -o root -g root /dev/null /etc/edge-agent/mqtt-password"))
        #expect(
            !lines.contains { $0.hasPrefix("Environment") },
            "the unit sets the environment: \(lines.filter { $0.hasPrefix("Environment") })")
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

    @Test("the package holds the binary, the units, the default configuration (not a conffile), profiles and docs")
    func packageContents() throws {
        let out = TestFiles.makeTempDir("deb").path
        let deb = try Self.buildDeb(version: "0.1.0", out: out)
        let contents = try Broker.run("/usr/bin/dpkg-deb", ["--contents", deb])
        for path in [
            "./usr/bin/edge-agent", "./lib/systemd/system/edge-agent.service", "./usr/share/edge-agent/config.yaml",
            "./usr/share/edge-agent/hardware/raspberry-pi-4.yaml", "./usr/share/edge-agent/hardware/simulated.yaml",
            "./usr/share/doc/edge-agent/COMMANDS.md",
        ] {
            #expect(contents.contains(path), "\(path) missing from the package")
        }
        // The package root is 0755 like every directory in it (a 0700 "./" is what mktemp gives).
        #expect(contents.split(separator: "\n").allSatisfy { !$0.hasPrefix("d") || $0.hasPrefix("drwxr-xr-x") }, "\(contents)")
        for path in [
            "./lib/systemd/system/edge-agent-reboot.path", "./lib/systemd/system/edge-agent-reboot.service",
            "./lib/udev/rules.d/60-edge-agent-gpio.rules", "./lib/systemd/system/edge-agent-update.path",
            "./lib/systemd/system/edge-agent-update.service", "./usr/lib/edge-agent/update-helper", "./usr/share/edge-agent/version",
            "./usr/share/doc/edge-agent/UPDATES.md",
        ] {
            #expect(contents.contains(path), "\(path) missing from the package")
        }
        let info = try Broker.run("/usr/bin/dpkg-deb", ["--info", deb])
        #expect(info.contains("Package: edge-agent") && info.contains("Version: 0.1.0"), "\(info)")
        // Depends resolve on Debian 12 and 13: libgpiod is loaded at run time, either soname;
        // libc6 at least the highest glibc version the binary needs.
        let depends = try #require(info.split(separator: "\n").first { $0.contains("Depends:") }.map(String.init))
        #expect(depends.contains("libgpiod3 | libgpiod2") && depends.contains("libyaml-0-2") && depends.contains("adduser"), "\(depends)")
        // libcrypto (Ed25519 of signed updates), loaded at run time: its package on every release.
        #expect(depends.contains("libssl3t64 | libssl3 | libssl1.1"), "\(depends)")
        #expect(depends.range(of: #"libc6 \(>= 2\.[0-9]+\)"#, options: .regularExpression) != nil, "\(depends)")
        #expect(!contents.contains("./etc/"), "config/set rewrites the configuration: as a conffile an upgrade would stop at dpkg's prompt")
        let control = out + "/control"
        try Broker.run("/usr/bin/dpkg-deb", ["-e", deb, control])
        #expect(!FileManager.default.fileExists(atPath: control + "/conffiles"))
        #expect(
            FileManager.default.isExecutableFile(atPath: control + "/postinst")
                && FileManager.default.isExecutableFile(atPath: control + "/postrm"))
        let check = try Child.spawn(
            AgentEndToEndTests.binary, ["check-config", Self.root + "/deploy/config.yaml"], output: out + "/check.out")
        #expect(try check.wait() == 0, "the packaged configuration must be valid: \(check.output)")
    }

    @Test("the reboot and update helper units are valid systemd units (systemd-analyze verify); the helper is valid sh")
    func helperUnits() throws {
        let dir = TestFiles.makeTempDir("units").path
        let units = ["edge-agent-reboot.path", "edge-agent-reboot.service", "edge-agent-update.path", "edge-agent-update.service"]
        for unit in units {
            var text = try String(contentsOfFile: Self.root + "/deploy/" + unit, encoding: .utf8)
            // verify wants the ExecStart binary to exist: the helper's place in the package.
            text = text.replacingOccurrences(of: "/usr/lib/edge-agent/update-helper", with: Self.root + "/deploy/edge-agent-update-helper")
            try text.write(toFile: dir + "/" + unit, atomically: true, encoding: .utf8)
        }
        let out = try Broker.run("/usr/bin/systemd-analyze", ["verify"] + units.map { dir + "/" + $0 })
        #expect(out.isEmpty, "\(out)")
        let path = try String(contentsOfFile: dir + "/edge-agent-reboot.path", encoding: .utf8)
        #expect(path.contains("PathExists=/run/edge-agent/reboot-requested"), "the agent writes RUNTIME_DIRECTORY/reboot-requested")
        let update = try String(contentsOfFile: dir + "/edge-agent-update.path", encoding: .utf8)
        #expect(update.contains("PathExists=/var/lib/edge-agent/update/request.json"), "the agent writes <state_dir>/update/request.json")
        #expect(try Broker.run("/bin/sh", ["-n", Self.root + "/deploy/edge-agent-update-helper"]).isEmpty)
    }

    // MARK: - The floor: what a binary needs of the system it runs on (deploy/check-abi.sh)

    /// Compiles C with this machine's compiler (the floor here is this Debian 12 itself).
    static func cc(_ args: [String]) throws { try Broker.run("/usr/bin/cc", args, timeout: 120) }

    static func checkABI(_ binary: String, floor: String = "/") throws -> (status: Int32, output: String) {
        let out = TestFiles.makeTempDir("abi").appendingPathComponent("out").path
        let child = try Child.spawn("/bin/bash", [Self.root + "/deploy/check-abi.sh", binary, "--floor", floor], output: out)
        return (try child.wait(timeout: 60), child.output)
    }

    @Test("check-abi: a binary built here runs on this Debian 12; the highest version each library is needed at is printed")
    func abiOfBinaryBuiltHere() throws {
        let dir = TestFiles.makeTempDir("abi").path
        try
            "#include <math.h>\n#include <stdio.h>\n#include <stdlib.h>\nint main(int c, char **v) { printf(\"%u %f\\n\", arc4random(), sqrt(c)); return 0; }\n"
            .write(toFile: dir + "/p.c", atomically: true, encoding: .utf8)
        try Self.cc([dir + "/p.c", "-o", dir + "/p", "-lm"])
        let (status, out) = try Self.checkABI(dir + "/p")
        print(out)
        #expect(status == 0, "\(out)")
        // arc4random is GLIBC_2.36, Debian 12's own (a newer build machine has more).
        #expect(out.contains("libc.so.6: needs at most GLIBC_2.36 (the floor has up to GLIBC_2."), "\(out)")
        #expect(out.split(separator: "\n").last?.hasPrefix("abi: ok") == true, "\(out)")
    }

    @Test("check-abi refuses a binary that needs a newer symbol version, a symbol or a library the floor lacks, naming each")
    func abiRefusals() throws {
        let dir = TestFiles.makeTempDir("abi").path
        let multiarch = try Broker.run("/usr/bin/cc", ["-print-multiarch"]).trimmingCharacters(in: .whitespacesAndNewlines)
        // libfloor 1 defines FLOOR_1; libfloor 2 (what the binary is linked against) also FLOOR_2.
        try "FLOOR_1 { global: old_call; local: *; };\n".write(toFile: dir + "/v1.map", atomically: true, encoding: .utf8)
        try "FLOOR_1 { global: old_call; local: *; };\nFLOOR_2 { global: new_call; } FLOOR_1;\n".write(
            toFile: dir + "/v2.map", atomically: true, encoding: .utf8)
        try "int old_call(void) { return 1; }\n".write(toFile: dir + "/l1.c", atomically: true, encoding: .utf8)
        try "int old_call(void) { return 1; }\nint new_call(void) { return 2; }\n".write(
            toFile: dir + "/l2.c", atomically: true, encoding: .utf8)
        let floor = dir + "/floor/lib/" + multiarch
        try FileManager.default.createDirectory(atPath: floor, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir + "/new", withIntermediateDirectories: true)
        try Self.cc([
            "-shared", "-fPIC", dir + "/l1.c", "-Wl,--version-script=" + dir + "/v1.map", "-Wl,-soname,libfloor.so.1", "-o",
            floor + "/libfloor.so.1",
        ])
        try Self.cc([
            "-shared", "-fPIC", dir + "/l2.c", "-Wl,--version-script=" + dir + "/v2.map", "-Wl,-soname,libfloor.so.1", "-o",
            dir + "/new/libfloor.so",
        ])
        try FileManager.default.copyItem(atPath: "/lib/\(multiarch)/libc.so.6", toPath: floor + "/libc.so.6")
        // libplain has no symbol versions (as libyaml); the floor's copy lacks a function the new one has.
        try "int plain_old(void) { return 3; }\n".write(toFile: dir + "/p1.c", atomically: true, encoding: .utf8)
        try "int plain_old(void) { return 3; }\nint plain_new(void) { return 4; }\n".write(
            toFile: dir + "/p2.c", atomically: true, encoding: .utf8)
        try Self.cc(["-shared", "-fPIC", dir + "/p1.c", "-Wl,-soname,libplain.so.1", "-o", floor + "/libplain.so.1"])
        try Self.cc(["-shared", "-fPIC", dir + "/p2.c", "-Wl,-soname,libplain.so.1", "-o", dir + "/new/libplain.so"])
        // Needs FLOOR_2 of libfloor, and plain_new, which the floor's libplain does not export.
        try
            "int new_call(void); int plain_old(void); int plain_new(void);\nint main(void) { return new_call() + plain_old() + plain_new(); }\n"
            .write(toFile: dir + "/p.c", atomically: true, encoding: .utf8)
        try Self.cc([dir + "/p.c", "-o", dir + "/p", "-L" + dir + "/new", "-lfloor", "-lplain"])
        let (status, out) = try Self.checkABI(dir + "/p", floor: dir + "/floor")
        #expect(status == 1, "\(out)")
        #expect(out.contains("libfloor.so.1: the binary needs FLOOR_2, which the floor's libfloor.so.1 does not define"), "\(out)")
        #expect(
            out.contains("plain_new is needed without a version and none of libfloor.so.1 libplain.so.1 libc.so.6 exports it"), "\(out)")
        #expect(out.split(separator: "\n").last?.hasPrefix("abi: 2 problems") == true, "\(out)")
        // A floor without the library at all.
        try FileManager.default.removeItem(atPath: floor + "/libfloor.so.1")
        let (status2, out2) = try Self.checkABI(dir + "/p", floor: dir + "/floor")
        #expect(status2 == 1 && out2.contains("libfloor.so.1 is needed but the floor (\(dir)/floor) has no such library"), "\(out2)")
    }

    @Test("the glibc 2.38+ functions the arm64 release links for Debian 12 behave as glibc's (C23 0b prefixes, strlcpy/strlcat)")
    func glibcCompat() throws {
        let dir = TestFiles.makeTempDir("compat").path
        try #"""
        #include <errno.h>
        #include <limits.h>
        #include <stdio.h>
        #include <string.h>
        long __isoc23_strtol(const char *, char **, int);
        long long __isoc23_strtoll(const char *, char **, int);
        unsigned long __isoc23_strtoul(const char *, char **, int);
        unsigned long long __isoc23_strtoull(const char *, char **, int);
        int __isoc23_sscanf(const char *, const char *, ...);
        size_t strlcpy(char *, const char *, size_t);
        size_t strlcat(char *, const char *, size_t);
        static int failures;
        #define EXPECT(c) do { if (!(c)) { printf("FAILED: %s (line %d)\n", #c, __LINE__); failures++; } } while (0)
        int main(void) {
            char *end;
            EXPECT(__isoc23_strtol("0b101", &end, 0) == 5 && *end == 0);
            EXPECT(__isoc23_strtol("  -0b11z", &end, 2) == -3 && *end == 'z');
            EXPECT(__isoc23_strtol("0x1f", &end, 0) == 31 && *end == 0);
            EXPECT(__isoc23_strtol("0b", &end, 0) == 0 && *end == 'b');  /* no binary digit: "0" */
            EXPECT(__isoc23_strtol("0b12", &end, 10) == 0 && *end == 'b'); /* base 10: as C11 */
            EXPECT(__isoc23_strtol("017", &end, 0) == 15);
            errno = 0;
            EXPECT(__isoc23_strtoll("0b1000000000000000000000000000000000000000000000000000000000000000", &end, 0) == LLONG_MAX && errno == ERANGE);
            errno = 0;
            EXPECT(__isoc23_strtoll("-0b1000000000000000000000000000000000000000000000000000000000000000", &end, 0) == LLONG_MIN && errno == 0);
            EXPECT(__isoc23_strtoul("0B1111", &end, 0) == 15 && __isoc23_strtoull("42", &end, 10) == 42);
            int a = 0, b = 0;
            EXPECT(__isoc23_sscanf("12 34", "%d %d", &a, &b) == 2 && a == 12 && b == 34);
            char buf[8];
            EXPECT(strlcpy(buf, "abcdefghij", sizeof buf) == 10 && strcmp(buf, "abcdefg") == 0);
            EXPECT(strlcpy(buf, "xy", sizeof buf) == 2 && strcmp(buf, "xy") == 0);
            EXPECT(strlcat(buf, "12345678", sizeof buf) == 10 && strcmp(buf, "xy12345") == 0);
            EXPECT(strlcat(buf, "z", 3) == 3 + 1);  /* dst longer than size: size + strlen(src) */
            printf("%d failures\n", failures);
            return failures != 0;
        }
        """#.write(toFile: dir + "/t.c", atomically: true, encoding: .utf8)
        try Self.cc(["-Wall", "-Werror", dir + "/t.c", "-std=c11", Self.root + "/deploy/cross/glibc-compat.c", "-o", dir + "/t"])
        let out = dir + "/out"
        let run = try Child.spawn(dir + "/t", [], output: out)
        #expect(try run.wait(timeout: 30) == 0, "\(run.output)")
        #expect(run.output.contains("0 failures"), "\(run.output)")
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
        let service = "/etc/systemd/system/multi-user.target.wants/edge-agent.service"
        let helper = "/etc/systemd/system/paths.target.wants/edge-agent-reboot.path"
        #expect(
            FileManager.default.fileExists(atPath: service) && FileManager.default.fileExists(atPath: helper), "enabled at installation")
        #expect(
            try Broker.run(
                "/usr/bin/stat", ["-c", "%U:%G %a", "/etc/edge-agent", "/etc/edge-agent/config.yaml", "/etc/edge-agent/mqtt-password"])
                == "root:edge-agent 770\nroot:edge-agent 660\nroot:root 600\n")
        // The operator disables the reboot helper; an upgrade must not enable it again.
        _ = try Broker.run("/bin/systemctl", ["disable", "edge-agent-reboot.path"])
        #expect(!FileManager.default.fileExists(atPath: helper))
        // The operator edits the configuration; an upgrade keeps the edit.
        var config = try String(contentsOfFile: "/etc/edge-agent/config.yaml", encoding: .utf8)
        config = config.replacingOccurrences(of: "host: 127.0.0.1", with: "host: broker.fleet.example")
        try config.write(toFile: "/etc/edge-agent/config.yaml", atomically: false, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: "/var/lib/edge-agent/keep-me", contents: Data("buffered".utf8))
        try Broker.run("/usr/bin/dpkg", ["-i", v2])  // no conffile prompt: the configuration is the operator's
        #expect(try Broker.run("/usr/bin/dpkg-query", ["-W", "-f", "${Version}", "edge-agent"]) == "0.1.1")
        #expect(try String(contentsOfFile: "/etc/edge-agent/config.yaml", encoding: .utf8).contains("broker.fleet.example"))
        #expect(
            FileManager.default.fileExists(atPath: service) && !FileManager.default.fileExists(atPath: helper),
            "the upgrade kept what the operator chose")
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

    @Test(
        "the install script for boards without dpkg lays out the files, keeps an existing configuration; uninstall keeps data unless purged"
    )
    func installScript() throws {
        let target = TestFiles.makeTempDir("rootfs").path
        try Broker.run("/bin/bash", [Self.root + "/deploy/install.sh", "--binary", AgentEndToEndTests.binary, "--root", target])
        for path in [
            "/usr/local/bin/edge-agent", "/etc/systemd/system/edge-agent.service", "/etc/edge-agent/config.yaml",
            "/usr/local/share/edge-agent/hardware/generic.yaml", "/etc/edge-agent/mqtt-password",
        ] {
            #expect(FileManager.default.fileExists(atPath: target + path), "\(path) not installed")
        }
        #expect(
            try String(contentsOfFile: target + "/etc/systemd/system/edge-agent.service", encoding: .utf8).contains(
                "ExecStart=/usr/local/bin/edge-agent run"))
        try "device_id: mine\n".write(toFile: target + "/etc/edge-agent/config.yaml", atomically: true, encoding: .utf8)
        let again = try Broker.run(
            "/bin/bash", [Self.root + "/deploy/install.sh", "--binary", AgentEndToEndTests.binary, "--root", target])
        #expect(again.contains("keeping the existing"))
        #expect(try String(contentsOfFile: target + "/etc/edge-agent/config.yaml", encoding: .utf8) == "device_id: mine\n")
        try Broker.run("/bin/bash", [Self.root + "/deploy/uninstall.sh", "--root", target])
        #expect(!FileManager.default.fileExists(atPath: target + "/usr/local/bin/edge-agent"))
        #expect(FileManager.default.fileExists(atPath: target + "/etc/edge-agent/config.yaml"))
        try Broker.run("/bin/bash", [Self.root + "/deploy/uninstall.sh", "--purge", "--root", target])
        #expect(!FileManager.default.fileExists(atPath: target + "/etc/edge-agent"))
    }
}
