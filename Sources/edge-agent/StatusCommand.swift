import ArgumentParser
import EdgeAgent
import FoundationEssentials

#if canImport(Glibc)
import Glibc
#endif

/// `edge-agent status`: what the running agent is doing, from its metrics endpoint.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Shows what the running agent is doing: connection, buffer, sources, commands, LED (from its metrics endpoint).",
        discussion: """
            Reads http://<metrics.listen>/metrics twice, a second apart (for the buffer's drain rate). The endpoint comes \
            from --endpoint, else from --config, else the default 127.0.0.1:9464. Exit status 69 when no agent answers.
            """)

    @Option(help: "The configuration file (YAML), for metrics.listen.")
    var config: String?

    @Option(help: "The metrics endpoint, address:port (overrides the configuration).")
    var endpoint: String?

    @Flag(help: "Print the status as one JSON object, for scripts.")
    var json = false

    @Option(help: "Seconds between the two reads (0: one read, no rates).")
    var interval: Double = 1

    func run() async throws {
        var metrics = AgentConfig.Metrics()
        if let endpoint {
            metrics.listen = endpoint
        } else if let config {
            metrics = try loadConfiguration(config).metrics
            guard metrics.enabled else {
                printError("edge-agent: \(config) turns the metrics endpoint off (metrics.enabled: false); status reads it: turn it on")
                throw ExitCode(Exit.configuration)
            }
        } else if let cfg = try? AgentConfig.load(path: "/etc/edge-agent/config.yaml") {
            metrics = cfg.metrics
        }
        guard let (host, port) = metrics.endpoint else {
            printError("edge-agent: \(metrics.listen) is not address:port with an IP address")
            throw ExitCode(Exit.configuration)
        }
        do {
            let clock = ContinuousClock()
            let start = clock.now
            let first = MetricsText(try MetricsFetch.get(host: host, port: port))
            if interval > 0 { try await clock.sleep(for: .milliseconds(Int(min(interval, 60) * 1000))) }
            let second = interval > 0 ? MetricsText(try MetricsFetch.get(host: host, port: port)) : first
            let elapsed = interval > 0 ? (clock.now - start) / .seconds(1) : 0
            let report = StatusReport(first: first, second: second, elapsed: elapsed, now: Date().timeIntervalSince1970)
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                print(String(decoding: try encoder.encode(report), as: UTF8.self))
            } else {
                print(report.render())
            }
        } catch let failure as MetricsFetch.Failure {
            printError("edge-agent: \(failure). Is the agent running (systemctl status edge-agent) with metrics.enabled?")
            throw ExitCode(69)
        }
    }
}
