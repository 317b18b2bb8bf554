import Communicator
import DeviceAdapters
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// `edge-agent ha remove`: an empty retained message on each of the device's discovery topics, on
/// which Home Assistant drops the entities and then the device.
public enum HomeAssistantRemoval {
    /// Connects with the configuration's broker and credentials (a client id of its own, no
    /// session, no store), empties the topics and disconnects; returns the topics emptied: every
    /// one this configuration can make, and every retained config the broker holds under the
    /// device's node (a source removed from the file since, say).
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
        let group = MultiThreadedEventLoopGroup.singleton
        let client = MQTTProtocol(config: mqtt, logger: logger, eventLoopGroup: group)
        let discovery = HomeAssistantDiscovery(config: config)
        let held = NIOLockedValueBox<Set<String>>([])
        try await client.connect()
        var topics: [String] = []
        do {
            // What the broker holds under the node comes right after the SUBACK, before a marker
            // sent after it comes back (or 5 s). A broker that refuses the subscription (an ACL
            // without read on the configs) leaves the topics this configuration makes.
            do {
                try await client.subscribe("\(discovery.prefix)/+/\(discovery.node)/+/config", qos: 1) { m in
                    if m.retain && m.payload.readableBytes > 0 { held.withLockedValue { _ = $0.insert(m.topic) } }
                }
                let marker = "edge-agent/ha-remove/" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
                _ = try await calledBack(within: .seconds(5), on: group.next()) { back in
                    try client.subscribe(marker, qos: 1) { _ in back() }
                    try client.publish(marker, "done", qos: 1)
                }
            } catch {
                logger.notice("the broker's retained configs not looked at: \(error)")
            }
            topics = Array(Set(discovery.everyTopic).union(held.withLockedValue { $0 })).sorted()
            for topic in topics { try await client.publish(topic, ByteBuffer(), qos: 1, retain: true) }
        } catch {
            await client.disconnect()
            throw error
        }
        await client.disconnect()
        return topics
    }
}
