import ArgumentParser
import EdgeAgent

#if canImport(Glibc)
import Glibc
#endif

func printError(_ line: String) {
    let text = line + "\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
}

/// The configuration file, or exit 78 (EX_CONFIG) with every problem on stderr.
func loadConfiguration(_ path: String) throws -> AgentConfig {
    do { return try AgentConfig.load(path: path) } catch {
        printError("edge-agent: \(path): \(error)")
        throw ExitCode(Exit.configuration)
    }
}

@main
struct EdgeAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edge-agent",
        abstract: "Runs on a camera gateway: keeps an MQTT session, publishes vision events and device status, buffers offline.",
        subcommands: [
            RunCommand.self, CheckConfigCommand.self, SendCommand.self, BufferCommand.self, HomeAssistantCommand.self, StatusCommand.self,
            UpdateCommand.self, VersionCommand.self,
        ])
}

struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Prints the version.")
    func run() {
        print("edge-agent \(EdgeAgentVersion.current)")
    }
}

struct BufferCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "buffer", abstract: "Looks into the offline store.", subcommands: [Inspect.self])

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Prints fill, counts, the oldest and newest waiting message; --dump prints every waiting record as JSON lines.",
            discussion: "Opens the store read-only: safe beside a running agent (it shows what the agent has synced).")

        @Argument(help: "The store's folder (offline_store.directory in the configuration).")
        var path: String

        @Flag(help: "Print every waiting record as one JSON object per line (oldest first) instead of the summary.")
        var dump = false

        @Option(help: "With --dump: at most this many records.")
        var limit: Int = .max

        func run() throws {
            do {
                if dump {
                    try BufferInspector.dump(directory: path, limit: limit) { print($0) }
                } else {
                    print(BufferInspector.format(try BufferInspector.summary(directory: path)))
                }
            } catch {
                printError("edge-agent: cannot read the offline store at \(path): \(error)")
                throw ExitCode.failure
            }
        }
    }
}
