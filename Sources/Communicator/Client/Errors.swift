/// The seed's four error types. Each carries a sentence a person can act on, and, when the
/// broker gave one, the broker's code (3.1.1 return code or 5.0 reason code).
public protocol CommunicatorError: Error, CustomStringConvertible, Sendable {
    var message: String { get }
    /// The broker's return/reason code, when the error came from the broker.
    var code: UInt8? { get }
}

extension CommunicatorError {
    public var description: String { "\(Self.self): \(message)" }
}

/// The broker cannot be reached: refused or timed-out TCP connection, name resolution, TLS
/// handshake or certificate failure, a connection lost before the request completed.
public struct ProtocolConnectionError: CommunicatorError {
    public let message: String
    public let code: UInt8?
    public init(_ message: String, code: UInt8? = nil) {
        self.message = message
        self.code = code
    }
}

/// The broker refused the credentials or the client's authority (3.1.1 return codes 4 and 5;
/// 5.0 `ReasonCode.badUserNameOrPassword`, `.notAuthorized`, `.banned`, `.badAuthenticationMethod`).
public struct ProtocolAuthenticationError: CommunicatorError {
    public let message: String
    public let code: UInt8?
    public init(_ message: String, code: UInt8? = nil) {
        self.message = message
        self.code = code
    }
}

/// Any other refusal or protocol violation: unacceptable protocol version, identifier rejected,
/// server unavailable, malformed packets from the broker, a DISCONNECT from the broker.
public struct ProtocolError: CommunicatorError {
    public let message: String
    public let code: UInt8?
    public init(_ message: String, code: UInt8? = nil) {
        self.message = message
        self.code = code
    }
}

/// The request itself cannot be carried: invalid topic or filter, wildcard in a publish topic,
/// QoS out of range, payload over the maximum packet size, full queue, or a SUBACK/PUBACK failure.
public struct ProtocolValidationError: CommunicatorError {
    public let message: String
    public let code: UInt8?
    public init(_ message: String, code: UInt8? = nil) {
        self.message = message
        self.code = code
    }
}
