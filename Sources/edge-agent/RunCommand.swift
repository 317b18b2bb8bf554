import ArgumentParser
import EdgeAgent
import FoundationEssentials
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Exit codes systemd can tell apart (deploy/edge-agent.service does not restart on 78).
enum Exit {
    static let configuration: Int32 = 78  // EX_CONFIG
    static let failure: Int32 = 1
}

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Runs the agent until SIGTERM or SIGINT, then stops cleanly (status offline, DISCONNECT).",
        discussion: """
            Environment variables override any key of the file: EDGE_AGENT_MQTT__PASSWORD sets mqtt.password
            (path parts joined by "__"). Exit codes: 0 stopped cleanly, 1 could not run, 78 bad configuration.
            """)

    @Option(name: .shortAndLong, help: "The configuration file (YAML); see config/edge-agent.example.yaml.")
    var config: String = "/etc/edge-agent/config.yaml"

    func run() async throws {
        let cfg = try loadConfiguration(config)
        let level = cfg.logLevel
        LogRing.shared.resize(cfg.logRingLines)
        LoggingSystem.bootstrap { AgentLogHandler(label: $0, level: level) }
        let logger = Logger(label: "edge-agent")
        logger.info(
            "edge-agent \(EdgeAgentVersion.current) starting: device \(cfg.deviceID), broker \(cfg.mqtt.host):\(cfg.mqtt.port), config \(config)"
        )
        if cfg.fromCredential.contains("mqtt.password") {
            logger.info("mqtt.password: from the systemd credential \(AgentConfig.passwordCredential)")
        } else if cfg.fromEnvironment.contains("mqtt.password") {
            logger.notice("mqtt.password: from the environment; under systemd, a credential (LoadCredential=) keeps it from other users")
        }
        let code: Int32
        do { code = try await AgentRuntime.run(config: cfg, logger: logger, configPath: config) } catch {
            logger.critical("cannot run: \(error)")
            throw ExitCode(Exit.failure)
        }
        if code != 0 {
            logger.notice("exiting with \(code) (restart requested)")
            throw ExitCode(code)
        }
    }
}

struct CheckConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validates a configuration file and prints the effective configuration (secrets masked).",
        discussion: "Exits 78 with every problem listed when the file is not valid.")

    @Argument(help: "The configuration file (YAML).")
    var path: String?

    @Flag(help: "Print every key with its default and its documentation (config/edge-agent.example.yaml is this output).")
    var example = false

    func run() throws {
        if example { return print(AgentConfig.example(), terminator: "") }
        guard let path else { throw ValidationError("name the configuration file to check, or pass --example") }
        do {
            let cfg = try AgentConfig.load(path: path)
            print("# \(path): valid. Effective configuration (defaults filled in, secrets masked):")
            print(cfg.rendered(), terminator: "")
        } catch {
            printError("edge-agent: \(path): \(error)")
            throw ExitCode(Exit.configuration)
        }
    }
}
