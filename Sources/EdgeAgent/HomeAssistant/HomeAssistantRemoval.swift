import Communicator
import Logging
import NIOCore

/// `edge-agent ha remove`: an empty retained message on each of the device's discovery topics, on
/// which Home Assistant drops the entities and then the device.
public enum HomeAssistantRemoval {
    /// Connects with the configuration's broker and credentials (a client id of its own, no
    /// session, no store), empties the topics and disconnects; returns the topics emptied.
    public static func run(config: AgentConfig) async throws -> [String] {
        var mqtt = config.mqttConfig()
        mqtt.clientID = .random
        mqtt.cleanStart = true
        mqtt.sessionExpiryInterval = 0
        mqtt.offlineStore = nil
        mqtt.keepConnecting = false
        mqtt.maxReconnectAttempts = 1
        mqtt.publishPreparer = nil
        var logger = Logger(label: "edge-agent.ha")
        logger.logLevel = .error
        let client = MQTTProtocol(config: mqtt, logger: logger)
        let topics = HomeAssistantDiscovery(config: config).everyTopic
        try await client.connect()
        do {
            for topic in topics { try await client.publish(topic, ByteBuffer(), qos: 1, retain: true) }
        } catch {
            await client.disconnect()
            throw error
        }
        await client.disconnect()
        return topics
    }
}
