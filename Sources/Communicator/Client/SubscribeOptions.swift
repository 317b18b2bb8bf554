/// 5.0 subscription options (§3.8.3.1); on 3.1.1 they are not sent.
public struct SubscribeOptions: Sendable, Equatable {
    /// Messages this client publishes are not sent back to it on this subscription.
    public var noLocal: Bool
    /// The RETAIN flag reaches the callback as the publisher set it (otherwise only retained
    /// messages sent because of the subscription carry it).
    public var retainAsPublished: Bool
    /// Whether retained messages are sent when the subscription is made.
    public var retainHandling: MQTTPacket.Subscription.RetainHandling

    public init(
        noLocal: Bool = false, retainAsPublished: Bool = false, retainHandling: MQTTPacket.Subscription.RetainHandling = .sendOnSubscribe
    ) {
        self.noLocal = noLocal
        self.retainAsPublished = retainAsPublished
        self.retainHandling = retainHandling
    }
}
