import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The running agent: one event-loop group (one thread) for all network and timer work, one
/// thread pool for blocking work (hashing a snapshot, writing state files, a reboot command: two
/// threads, so that a slow reboot command cannot hold up the rest), and the services in
/// one `ServiceGroup`, which starts them together and stops them in reverse order on SIGTERM or
/// SIGINT or `agent/restart`:
///
///   1. systemd (STOPPING=1; the watchdog ends)
///   2. commands (no new ones; the remembered answers are on the disk)
///   3. the sources, each cancelled with everything it opened
///   4. the info document's timer
///   5. the connection: the sequence saved, `offline` published, DISCONNECT
///   6. the status LED, off
public enum AgentRuntime {
    /// The longest a clean stop may take before what is left is cancelled.
    static let maximumStop: Duration = .seconds(15)

    /// Runs the agent until it is stopped; returns the exit code (0, or `Agent.restartExitCode`).
    public static func run(config: AgentConfig, logger: Logger, configPath: String?) async throws -> Int32 {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let threadPool = NIOThreadPool(numberOfThreads: 2)
        threadPool.start()
        let outcome: Result<Int32, any Error>
        do {
            outcome = .success(try await run(config: config, logger: logger, configPath: configPath, group: group, threadPool: threadPool))
        } catch {
            outcome = .failure(error)
        }
        try? await threadPool.shutdownGracefully()
        try? await group.shutdownGracefully()
        return try outcome.get()
    }

    static func run(
        config: AgentConfig, logger: Logger, configPath: String?, group: MultiThreadedEventLoopGroup, threadPool: NIOThreadPool
    ) async throws -> Int32 {
        let agent = try Agent(config: config, logger: logger, configPath: configPath, group: group, threadPool: threadPool)
        let updates = config.commands.enabled && config.commands.allow.contains("agent/update") ? UpdateService(agent: agent) : nil
        let commands = config.commands.enabled ? CommandServer(agent: agent, updates: updates) : nil
        // Subscribed before the first connect: the client restores subscriptions on every connect.
        try commands?.subscribe()
        let homeAssistant = config.homeAssistant.enabled ? HomeAssistantService(agent: agent) : nil
        try homeAssistant?.subscribe()
        let loop = agent.loop
        var probes: [(name: String, probe: @Sendable (@escaping @Sendable () -> Void) -> Void)] = [
            ("the event loop", { done in loop.execute(done) }),
            ("the MQTT client", { [mqtt = agent.mqtt] done in mqtt.probe(then: done) }),
        ]
        for s in agent.sources { probes.append(("source \(s.name)", { done in s.probe(done) })) }
        var services: [any Service] = [StatusLEDService(agent: agent), ConnectionService(agent: agent), InfoService(agent: agent)]
        if let export = agent.export, let metrics = agent.metrics {
            services.append(MetricsService(agent: agent, export: export, metrics: metrics))
        }
        if let homeAssistant { services.append(homeAssistant) }
        services += agent.sources as [any Service]
        if let updates { services.append(updates) }
        if let commands { services.append(commands) }
        services.append(SystemdService(agent: agent, probes: probes))
        var configuration = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        configuration.maximumGracefulShutdownDuration = maximumStop
        let serviceGroup = ServiceGroup(configuration: configuration)
        agent.onExitRequest { Task { await serviceGroup.triggerGracefulShutdown() } }
        try await serviceGroup.run()
        return agent.exitCode
    }
}
