import ServiceLifecycle

/// The status LED: its pattern follows the agent's state (`Agent.refreshLED`); this service is the
/// last to stop, turning the light off after the connection has closed.
struct StatusLEDService: Service {
    let agent: Agent

    func run() async {
        agent.refreshLED()
        try? await gracefulShutdown()
        agent.setState(.stopped)
        try? await agent.player?.stop().get()
        agent.logger.info("stopped")
    }
}
