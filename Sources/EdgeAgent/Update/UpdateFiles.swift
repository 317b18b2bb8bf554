import DeviceAdapters
import FoundationEssentials

#if canImport(Glibc)
import Glibc
#endif

/// The update folder, `<state_dir>/update`, and the files the agent and the privileged helper
/// (`edge-agent-update`, started by edge-agent-update.path) hand each other. The agent writes:
/// `transfer.json` and `package.part` while a package arrives, then `package.deb` and, last,
/// `request.json` (the manifest: the path unit's trigger). The helper writes `confirm` before it
/// installs, `result.json` when it is done, and reads `confirmed`, which the new agent writes
/// (its systemd invocation id) once it is online. docs/UPDATES.md has the whole sequence.
struct UpdateFiles: Sendable {
    let directory: String

    init(stateDirectory: String) { directory = stateDirectory + "/update" }

    var transfer: String { directory + "/transfer.json" }
    var part: String { directory + "/package.part" }
    var package: String { directory + "/package.deb" }
    var request: String { directory + "/request.json" }
    var confirm: String { directory + "/confirm" }
    var confirmed: String { directory + "/confirmed" }
    var result: String { directory + "/result.json" }

    func makeDirectory() throws(AgentError) {
        if mkdir(directory, 0o750) != 0 && errno != EEXIST {
            throw AgentError("cannot make \(directory): \(String(cString: strerror(errno)))")
        }
    }

    /// A small file the agent or the helper wrote (nil: none, or not readable).
    static func read(_ path: String) -> Data? { FileManager.default.contents(atPath: path) }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    static func remove(_ paths: String...) { for p in paths { unlink(p) } }

    /// Bytes free for this (unprivileged) user on the file system of `path`.
    static func freeBytes(_ path: String) -> Int? {
        var s = statvfs()
        guard statvfs(path, &s) == 0 else { return nil }
        return Int(s.f_bavail) * Int(s.f_frsize)
    }

    /// The SHA-256 (hex) and size of a file.
    static func hash(_ path: String) throws(AgentError) -> (sha256: String, size: Int) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw AgentError("cannot read \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard let d = try? SHA256.digest(of: fd) else { throw AgentError("cannot read \(path): \(String(cString: strerror(errno)))") }
        return (d.digest, d.size)
    }
}

/// How the last update ended, as the helper (or the agent, for a package that failed its
/// checks after the transfer) wrote it in `result.json`.
struct UpdateResult: Codable, Equatable, Sendable {
    /// installed, rolled_back, refused
    var result: String
    var version: String
    var sha256: String?
    var previous: String?
    var reason: String?
    var at: String?
}
