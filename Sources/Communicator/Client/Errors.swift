/// The seed's four error types. Each carries a sentence a person can act on, and, when the
/// broker gave one, the broker's code (3.1.1 return code or 5.0 reason code).
public protocol CommunicatorError: Error, CustomStringConvertible, Sendable {
    var message: String { get }
    /// The broker's return/reason code, when the error came from the broker.
    var code: UInt8? { get }
    /// What went wrong, for code to switch on (`message` says it for people).
    var reason: MQTTErrorReason { get }
}

/// Why a call or the connection failed. The four seed error types say who must act (the network,
/// the credentials, the broker, the caller); this says what happened.
public enum MQTTErrorReason: Sendable, Equatable {
    // The link
    /// TCP refused or timed out, the name did not resolve, nothing listens there.
    case unreachable
    /// The TLS handshake or the broker's certificate failed, or TLS could not be set up.
    case tls
    /// No answer within `timeout`: CONNACK, a blocking call, a request's response.
    case timeout
    /// The connection went before the request completed.
    case connectionLost
    /// The broker stopped answering PINGREQ (keep-alive): the link is dead.
    case keepAliveTimeout
    /// Not connected: QoS 0 while offline, or `disconnect()` before the connection was up.
    case notConnected
    /// `maxReconnectAttempts` reconnects failed.
    case gaveUp
    // The broker's answers
    /// CONNACK refused (3.1.1 return code or 5.0 reason code).
    case connackRefused(ReasonCode)
    /// The broker sent DISCONNECT with this reason.
    case brokerDisconnected(ReasonCode)
    /// The broker broke the protocol (or sent bytes the decoder refused).
    case protocolViolation
    /// PUBACK, PUBREC, SUBACK or UNSUBACK refused the request.
    case refused(ReasonCode)
    /// 5.0 enhanced authentication failed on our side or the broker's.
    case authentication
    // Refused here, before the broker
    /// `publishQueueMaxsize` messages wait or are in flight.
    case queueFull
    /// The offline store is full (`reject_newest`).
    case storeFull
    /// Dropped to make room (`dropOldest`: the queue or the store was full).
    case dropped
    /// Its Message Expiry Interval ran out before it could be sent.
    case expired
    /// Above what the broker announced (Maximum Packet Size, Maximum QoS, Retain Available, ...).
    case brokerLimit
    /// A topic, filter, QoS, size, property or setting the standard or the configuration forbids.
    case invalidArgument
    /// The call cannot be made here (a blocking call on the network thread, a mode mismatch).
    case misuse
    case other
}

extension CommunicatorError {
    public var description: String { "\(Self.self): \(message)" }
}

/// The broker cannot be reached: refused or timed-out TCP connection, name resolution, TLS
/// handshake or certificate failure, a connection lost before the request completed.
public struct ProtocolConnectionError: CommunicatorError {
    public let message: String
    public let code: UInt8?
    public let reason: MQTTErrorReason
    public init(_ message: String, code: UInt8? = nil, reason: MQTTErrorReason = .other) {
        self.message = message
        self.code = code
        self.reason = reason
    }
}

/// The broker refused the credentials or the client's authority (3.1.1 return codes 4 and 5;
/// 5.0 `ReasonCode.badUserNameOrPassword`, `.notAuthorized`, `.banned`, `.badAuthenticationMethod`).
public struct ProtocolAuthenticationError: CommunicatorError {
    public let message: String
    public let code: UInt8?
    public let reason: MQTTErrorReason
    public init(_ message: String, code: UInt8? = nil, reason: MQTTErrorReason = .other) {
        self.message = message
        self.code = code
        self.reason = reason
    }
}

/// Any other refusal or protocol violation: unacceptable protocol version, identifier rejected,
/// server unavailable, malformed packets from the broker, a DISCONNECT from the broker.
public struct ProtocolError: CommunicatorError {
    public let message: String
    public let code: UInt8?
    public let reason: MQTTErrorReason
    public init(_ message: String, code: UInt8? = nil, reason: MQTTErrorReason = .other) {
        self.message = message
        self.code = code
        self.reason = reason
    }
}

/// The request itself cannot be carried: invalid topic or filter, wildcard in a publish topic,
/// QoS out of range, payload over the maximum packet size, full queue, or a SUBACK/PUBACK failure.
public struct ProtocolValidationError: CommunicatorError {
    public let message: String
    public let code: UInt8?
    public let reason: MQTTErrorReason
    public init(_ message: String, code: UInt8? = nil, reason: MQTTErrorReason = .other) {
        self.message = message
        self.code = code
        self.reason = reason
    }
}
