import NIOCore

/// A message delivered to a subscription.
public struct MQTTMessage: Sendable {
    public let topic: String
    public let payload: ByteBuffer
    public let qos: QoS
    public let retain: Bool
    /// 5.0 properties of the PUBLISH (empty on 3.1.1).
    public let properties: MQTTProperties

    public var bytes: [UInt8] { Array(payload.readableBytesView) }
    /// The payload as UTF-8 text (invalid sequences replaced).
    public var string: String { String(decoding: payload.readableBytesView, as: UTF8.self) }
}

typealias MessageHandler = @Sendable (MQTTMessage) -> Void
