/// What the application reads of the client, as one value the network loop publishes after each
/// change: a reader never sees a state, a broker and an error that did not hold together.
/// `MQTTProtocol.snapshot` returns it; the single properties (`state`, `broker`, ...) read from it.
public struct MQTTClientSnapshot: Sendable {
    public var state: ConnectionState = .idle
    /// The client identifier: the configured one, or the one the broker assigned (5.0, empty
    /// configured id) once it did.
    public var clientID: String
    /// The broker of the current connection, or of the last attempt.
    public var broker: BrokerEndpoint
    /// Why the last attempt or connection ended (nil if none has failed).
    public var lastError: (any CommunicatorError)?
    /// Whether the broker resumed a stored session on the last connect (nil before the first).
    public var sessionPresent: Bool?
    /// What the broker granted in the last CONNACK (nil before the first connection).
    public var connectionInfo: MQTTConnectionInfo?
    /// The offline store (nil without one).
    public var store: OfflineStoreStatus?
    /// A reject_newest store refused its last message: QoS 1/2 publishes are refused at once.
    public var storeRefusing = false
    /// Messages dropped from a full queue under `queueFullPolicy = .dropOldest`.
    public var droppedMessages = 0
    /// Incoming messages skipped as larger than `maxIncomingPacketSize`.
    public var droppedIncomingMessages = 0

    init(broker: BrokerEndpoint, clientID: String) {
        self.broker = broker
        self.clientID = clientID
    }
}
