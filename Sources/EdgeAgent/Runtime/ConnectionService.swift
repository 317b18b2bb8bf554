import Communicator
import NIOCore
import ServiceLifecycle

/// The MQTT session: the Will (`offline`, retained), the first connect in the background (a
/// broker that is down at boot, or a password the broker refuses until someone fixes it, is
/// retried by the client for ever: `max_reconnect_attempts` 0), READY after that first attempt.
/// At the shutdown, after the sources and commands have stopped: the event sequence is saved,
/// the retained `offline` published (a clean DISCONNECT suppresses the Will, so the agent says
/// it itself) and waited for up to 3 s, then DISCONNECT; what is still queued stays in the
/// offline store for the next start.
struct ConnectionService: Service {
    let agent: Agent

    func run() async throws {
        agent.setState(.connecting)
        let config = agent.config
        try agent.mqtt.setWill(topic: config.topic(config.topics.status), payload: "offline", qos: 1, retain: true)
        agent.mqtt.onStateChange { [weak agent] s in agent?.connectionChanged(s) }
        await withDiscardingTaskGroup { group in
            group.addTask {
                do { try await agent.mqtt.connect() } catch {
                    agent.logger.warning(
                        "cannot connect to \(config.mqtt.host):\(config.mqtt.port): \(error); trying again with back-off")
                }
                agent.sendReady()
            }
            try? await gracefulShutdown()
            await stop()  // ends a first connect still under way, too
        }
    }

    private func stop() async {
        let (mqtt, logger, config) = (agent.mqtt, agent.logger, agent.config)
        do { try agent.pipeline.sequence.close() } catch { logger.warning("event sequence not saved: \(error)") }
        if mqtt.state == .connected {
            do {
                let acknowledged = try await calledBack(within: .seconds(3), on: agent.loop) { done in
                    try mqtt.publish(
                        config.topic(config.topics.status), ByteBuffer(string: "offline"), qos: 1, retain: true, waitForRoom: false
                    ) { _ in done() }
                }
                if !acknowledged { logger.warning("status offline not acknowledged within 3 s") }
            } catch {
                logger.warning("status offline not published: \(error)")
            }
        }
        await mqtt.disconnect()
    }
}
