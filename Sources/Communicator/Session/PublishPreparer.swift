import NIOCore

/// Looks at a QoS 1/2 or QoS 0 message once, as it leaves the queue or the offline store for the
/// network (its first transmission), and may give it another payload: for what could only be
/// known at sending time (the agent recomputes the timestamps of events stamped while the wall
/// clock was wrong). A resend with DUP carries what the first transmission carried; after a
/// restart, a message from the store is prepared again. Called on the network thread, for every
/// message: return nil at once for those it leaves alone.
public protocol MQTTPublishPreparer: Sendable {
    /// The payload to send instead, or nil to send the message as it is.
    func prepare(topic: String, payload: ByteBuffer) -> ByteBuffer?
}
