import FoundationEssentials
import Logging
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// How the `reboot` command reboots the board. The packaged unit forbids the agent to reboot
/// (no privileges, `@reboot` filtered), so by default it asks systemd: it writes
/// `reboot-requested` into its runtime directory (`RUNTIME_DIRECTORY`, /run/edge-agent), and
/// `edge-agent-reboot.path` starts a root oneshot that reboots cleanly; the agent is stopped
/// like every service, publishing `offline` on the way. `commands.reboot_command`, when set, is
/// run instead (`/bin/sh -c`). Either way the agent keeps running until the system stops it, so
/// a reboot that does not happen leaves a working agent and an error in the log, never a
/// stopped one.
enum RebootRequest: Sendable, CustomStringConvertible {
    case requestFile(String)
    case command(String)

    static let fileName = "reboot-requested"
    /// How long a request file may wait for edge-agent-reboot.path before it is called lost.
    static let helperTimeout = 120.0

    /// The way this agent can reboot, checked before the command is answered.
    init(command: String, environment: [String: String]) throws(CommandServer.Failure) {
        if !command.isEmpty {
            self = .command(command)
            return
        }
        // systemd passes a colon-separated list when a unit has several runtime directories.
        guard let runtime = environment["RUNTIME_DIRECTORY"]?.split(separator: ":").first.map(String.init), !runtime.isEmpty else {
            throw CommandServer.Failure(
                code: "unavailable",
                message: "cannot reboot: commands.reboot_command is empty and the agent was not started by edge-agent.service "
                    + "(RUNTIME_DIRECTORY is not set); set commands.reboot_command, e.g. \"/bin/systemctl reboot\" for an agent running as root"
            )
        }
        guard access(runtime, W_OK) == 0 else {
            throw CommandServer.Failure(
                code: "unavailable",
                message: "cannot reboot: the runtime directory \(runtime) is not writable (\(String(cString: strerror(errno))))")
        }
        self = .requestFile(runtime + "/" + Self.fileName)
    }

    var description: String {
        switch self {
        case .requestFile(let path): return "request file \(path) (edge-agent-reboot.path)"
        case .command(let command): return "command \"\(command)\""
        }
    }

    /// Asks for the reboot; what fails is logged, and the agent goes on.
    func perform(id: String, logger: Logger, timers: EventLoop) {
        switch self {
        case .requestFile(let path):
            let text = "command id \(id)\n"
            do { try AtomicFile.write(Array(text.utf8), to: path) } catch {
                logger.error("reboot requested (id \(id)) but \(error): the board is not rebooted")
                return
            }
            logger.notice("reboot requested (id \(id)): \(path) written; edge-agent-reboot.path reboots the board")
            timers.scheduleTask(in: .seconds(Int64(Self.helperTimeout))) {
                // Only this request's file: a later request has its own timer.
                guard let left = try? String(contentsOfFile: path, encoding: .utf8), left == text else { return }
                unlink(path)
                logger.error(
                    "reboot requested \(Int(Self.helperTimeout)) s ago (id \(id)) and nothing took the request: enable the helper (systemctl enable --now edge-agent-reboot.path)"
                )
            }
        case .command(let command):
            logger.notice("reboot requested (id \(id)): running \(command)")
            let status = system(command)  // /bin/sh -c COMMAND, waited for
            if status != 0 {
                let code = status == -1 ? "could not be started" : "exited with status \((status >> 8) & 0xff)"
                logger.error("reboot command \"\(command)\" \(code): the board is not rebooted (commands.reboot_command)")
            }
        }
    }
}
