import NIOCore

// What the two machines take from the application's configuration.

extension ConnectionMachine.Settings {
    init(_ config: MQTTConfig) {
        self.init(
            brokers: config.brokers, order: config.brokerOrder, serverReferenceAllowList: config.serverReferenceAllowList,
            maxReconnectAttempts: config.maxReconnectAttempts, reconnectInitialDelay: config.reconnectInitialDelay.inSeconds,
            reconnectMaxDelay: config.reconnectMaxDelay.inSeconds, fallbackToV311: config.fallbackToV311,
            keepConnecting: config.keepConnecting,
            version: config.protocolVersion, cleanStart: config.cleanStart, sessionExpiryInterval: config.sessionExpiryInterval)
    }
}

extension SessionMachine.Options {
    init(_ config: MQTTConfig, clientID: String) {
        self.init(
            version: config.protocolVersion, clientID: clientID, cleanStart: config.cleanStart,
            keepAliveSeconds: UInt16(clamping: config.keepalive), heartbeatCheckRatio: config.heartbeatCheckRatio,
            username: config.username, password: config.password.map { ByteBuffer(string: $0) }, will: nil,
            sessionExpirySeconds: config.sessionExpiryInterval, maxInflight: config.maxInflight,
            maxPacketSize: config.incomingPacketLimit, queueLimit: config.publishQueueMaxsize,
            queueQoS0WhileDisconnected: config.queueQoS0WhileDisconnected,
            dropOldestWhenFull: config.queueFullPolicy == .dropOldest, receiveMaximum: config.receiveMaximum,
            topicAliasMaximum: config.topicAliasMaximum, outgoingTopicAliases: config.outgoingTopicAliases,
            authenticator: config.authenticator, preparer: config.publishPreparer)
    }
}
