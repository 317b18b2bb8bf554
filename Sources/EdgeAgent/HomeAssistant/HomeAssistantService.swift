import Communicator
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// Home Assistant's MQTT discovery (`home_assistant.enabled`): every discovery config, retained,
/// after each connect; and again, with the current state, when Home Assistant says it is
/// `online` on `<prefix>/status` (it restarted and forgot), after a random delay of up to
/// `home_assistant.republish_delay` so that a fleet does not answer at once (one republish
/// pending at a time, however often it says so; none once the agent is stopping).
struct HomeAssistantService: Service {
    let agent: Agent
    let discovery: HomeAssistantDiscovery
    private let pending = NIOLockedValueBox<Scheduled<Void>?>(nil)

    init(agent: Agent) {
        self.agent = agent
        discovery = HomeAssistantDiscovery(config: agent.config)
    }

    /// Subscribed before the first connect, like the commands.
    func subscribe() throws {
        let (agent, discovery, pending) = (self.agent, self.discovery, self.pending)
        agent.mqtt.onStateChange { state in
            if state == .connected { Self.publishAll(agent, discovery, state: false) }
        }
        try agent.mqtt.subscribe(discovery.birthTopic, qos: 1) { message in
            guard message.string == "online", !agent.isStopping else { return }
            let most = agent.config.homeAssistant.republishDelay
            let delay = TimeAmount(seconds: Double.random(in: min(1, most)...most))
            pending.withLockedValue { p in
                guard p == nil else { return }  // one is on its way
                agent.logger.info("home assistant came online: discovery again in \(Double(delay.nanoseconds) / 1e9) s")
                p = agent.loop.scheduleTask(in: delay) {
                    pending.withLockedValue { $0 = nil }
                    guard !agent.isStopping else { return }
                    Self.publishAll(agent, discovery, state: true)
                }
            }
        }
        agent.logger.info(
            "home assistant discovery: \(discovery.entities.count) entities under \(discovery.prefix)/+/\(discovery.node)/")
    }

    func run() async {
        try? await gracefulShutdown()
        pending.withLockedValue { p in
            p?.cancel()
            p = nil
        }
    }

    /// The configs, retained; with `state`, the status and the info document too (retained as well,
    /// but sent again for a Home Assistant that lost them).
    static func publishAll(_ agent: Agent, _ discovery: HomeAssistantDiscovery, state: Bool) {
        var failed: [String] = []
        for e in discovery.entities {
            do {
                try agent.mqtt.publish(
                    discovery.topic(e), ByteBuffer(bytes: discovery.payload(e)), qos: 1, retain: true, waitForRoom: false)
            } catch {
                failed.append("\(e.component) \(e.object): \(error)")
            }
        }
        if !failed.isEmpty { agent.logger.warning("home assistant discovery not all published: \(failed.joined(separator: "; "))") }
        guard state, agent.mqtt.state == .connected, !agent.isStopping else { return }
        agent.publishOnline()
    }
}
