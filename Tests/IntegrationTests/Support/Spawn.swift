import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Child processes for the tests, with posix_spawn and waitpid (Foundation's Process can hang in
/// waitUntilExit on Linux when many children come and go). Output goes to a file.
struct Child: @unchecked Sendable {
    let pid: pid_t
    let outputPath: String

    static func spawn(
        _ path: String, _ args: [String], output: String, stdin inputPath: String? = nil, environment: [String: String] = [:]
    ) throws -> Child {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, inputPath ?? "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + args).map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        // The child must not inherit this thread's blocked signals (test threads block some),
        // or SIGTERM would not stop it.
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGTERM, SIGINT, SIGPIPE, SIGHUP] { sigaddset(&defaults, sig) }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        let envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for e in envp { free(e) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attr, argv, envp)
        guard rc == 0 else { throw TestFailure("cannot start \(path): errno \(rc)") }
        ChildProcesses.register(pid)
        return Child(pid: pid, outputPath: output)
    }

    var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }

    /// The exit status once the child has ended, or nil while it runs.
    func poll() -> Int32? {
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid {
            ChildProcesses.unregister(pid)
            return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        }
        return r < 0 ? -1 : nil
    }

    @discardableResult
    func wait(timeout unscaled: Double = 30) throws -> Int32 {
        let timeout = unscaled * TestTiming.scale
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let s = poll() { return s }
            usleep(5_000)
        }
        stop(signal: SIGKILL)
        throw TestFailure("process \(pid) did not end within \(timeout) s")
    }

    /// Sends `signal` and reaps the child (SIGKILL after 5 s).
    func stop(signal: Int32 = SIGTERM) {
        guard poll() == nil else { return }
        kill(pid, signal)
        for _ in 0..<1000 {
            if poll() != nil { return }
            usleep(5_000)
        }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        ChildProcesses.unregister(pid)
    }

    var isRunning: Bool { poll() == nil }
}
