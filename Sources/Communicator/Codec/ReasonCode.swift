/// A reason code of 5.0 (§2.4), by name: `ReasonCode.serverMoved` rather than 0x9D. Any byte a
/// broker sends is representable (an unknown one keeps its number); `name` and `describe` give
/// the words of the standard. 3.1.1 CONNACK return codes are plain numbers (`connackName311`).
public struct ReasonCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public init(_ rawValue: UInt8) { self.rawValue = rawValue }

    /// 0x80 and above: a failure (§2.4).
    public var isFailure: Bool { rawValue >= 0x80 }
    /// "0x9d server moved".
    public var description: String { "\(hexByte(rawValue)) \(Self.name(rawValue))" }

    /// 0x00 success
    public static let success = ReasonCode(0x00)
    /// 0x01 granted QoS 1
    public static let grantedQoS1 = ReasonCode(0x01)
    /// 0x02 granted QoS 2
    public static let grantedQoS2 = ReasonCode(0x02)
    /// 0x04 disconnect with Will message
    public static let disconnectWithWill = ReasonCode(0x04)
    /// 0x10 no matching subscribers
    public static let noMatchingSubscribers = ReasonCode(0x10)
    /// 0x11 no subscription existed
    public static let noSubscriptionExisted = ReasonCode(0x11)
    /// 0x18 continue authentication
    public static let continueAuthentication = ReasonCode(0x18)
    /// 0x19 re-authenticate
    public static let reAuthenticate = ReasonCode(0x19)
    /// 0x80 unspecified error
    public static let unspecifiedError = ReasonCode(0x80)
    /// 0x81 malformed packet
    public static let malformedPacket = ReasonCode(0x81)
    /// 0x82 protocol error
    public static let protocolError = ReasonCode(0x82)
    /// 0x83 implementation specific error
    public static let implementationSpecificError = ReasonCode(0x83)
    /// 0x84 unsupported protocol version
    public static let unsupportedProtocolVersion = ReasonCode(0x84)
    /// 0x85 client identifier not valid
    public static let clientIdentifierNotValid = ReasonCode(0x85)
    /// 0x86 bad user name or password
    public static let badUserNameOrPassword = ReasonCode(0x86)
    /// 0x87 not authorized
    public static let notAuthorized = ReasonCode(0x87)
    /// 0x88 server unavailable
    public static let serverUnavailable = ReasonCode(0x88)
    /// 0x89 server busy
    public static let serverBusy = ReasonCode(0x89)
    /// 0x8A banned
    public static let banned = ReasonCode(0x8A)
    /// 0x8B server shutting down
    public static let serverShuttingDown = ReasonCode(0x8B)
    /// 0x8C bad authentication method
    public static let badAuthenticationMethod = ReasonCode(0x8C)
    /// 0x8D keep alive timeout
    public static let keepAliveTimeout = ReasonCode(0x8D)
    /// 0x8E session taken over
    public static let sessionTakenOver = ReasonCode(0x8E)
    /// 0x8F topic filter invalid
    public static let topicFilterInvalid = ReasonCode(0x8F)
    /// 0x90 topic name invalid
    public static let topicNameInvalid = ReasonCode(0x90)
    /// 0x91 packet identifier in use
    public static let packetIdentifierInUse = ReasonCode(0x91)
    /// 0x92 packet identifier not found
    public static let packetIdentifierNotFound = ReasonCode(0x92)
    /// 0x93 receive maximum exceeded
    public static let receiveMaximumExceeded = ReasonCode(0x93)
    /// 0x94 topic alias invalid
    public static let topicAliasInvalid = ReasonCode(0x94)
    /// 0x95 packet too large
    public static let packetTooLarge = ReasonCode(0x95)
    /// 0x96 message rate too high
    public static let messageRateTooHigh = ReasonCode(0x96)
    /// 0x97 quota exceeded
    public static let quotaExceeded = ReasonCode(0x97)
    /// 0x98 administrative action
    public static let administrativeAction = ReasonCode(0x98)
    /// 0x99 payload format invalid
    public static let payloadFormatInvalid = ReasonCode(0x99)
    /// 0x9A retain not supported
    public static let retainNotSupported = ReasonCode(0x9A)
    /// 0x9B QoS not supported
    public static let qosNotSupported = ReasonCode(0x9B)
    /// 0x9C use another server
    public static let useAnotherServer = ReasonCode(0x9C)
    /// 0x9D server moved
    public static let serverMoved = ReasonCode(0x9D)
    /// 0x9E shared subscriptions not supported
    public static let sharedSubscriptionsNotSupported = ReasonCode(0x9E)
    /// 0x9F connection rate exceeded
    public static let connectionRateExceeded = ReasonCode(0x9F)
    /// 0xA0 maximum connect time
    public static let maximumConnectTime = ReasonCode(0xA0)
    /// 0xA1 subscription identifiers not supported
    public static let subscriptionIdentifiersNotSupported = ReasonCode(0xA1)
    /// 0xA2 wildcard subscriptions not supported
    public static let wildcardSubscriptionsNotSupported = ReasonCode(0xA2)

    static let subackCodes: Set<UInt8> = [0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2]

    /// The 3.1.1 CONNACK return code's name.
    public static func connackName311(_ code: UInt8) -> String {
        switch code {
        case 0: "connection accepted"
        case 1: "unacceptable protocol version"
        case 2: "identifier rejected"
        case 3: "server unavailable"
        case 4: "bad user name or password"
        case 5: "not authorized"
        default: "unknown return code"
        }
    }

    /// The 5.0 reason code's name as the standard spells it.
    public static func name(_ code: UInt8) -> String {
        switch code {
        case 0x00: "success"
        case 0x01: "granted QoS 1"
        case 0x02: "granted QoS 2"
        case 0x04: "disconnect with Will message"
        case 0x10: "no matching subscribers"
        case 0x11: "no subscription existed"
        case 0x18: "continue authentication"
        case 0x19: "re-authenticate"
        case 0x80: "unspecified error"
        case 0x81: "malformed packet"
        case 0x82: "protocol error"
        case 0x83: "implementation specific error"
        case 0x84: "unsupported protocol version"
        case 0x85: "client identifier not valid"
        case 0x86: "bad user name or password"
        case 0x87: "not authorized"
        case 0x88: "server unavailable"
        case 0x89: "server busy"
        case 0x8A: "banned"
        case 0x8B: "server shutting down"
        case 0x8C: "bad authentication method"
        case 0x8D: "keep alive timeout"
        case 0x8E: "session taken over"
        case 0x8F: "topic filter invalid"
        case 0x90: "topic name invalid"
        case 0x91: "packet identifier in use"
        case 0x92: "packet identifier not found"
        case 0x93: "receive maximum exceeded"
        case 0x94: "topic alias invalid"
        case 0x95: "packet too large"
        case 0x96: "message rate too high"
        case 0x97: "quota exceeded"
        case 0x98: "administrative action"
        case 0x99: "payload format invalid"
        case 0x9A: "retain not supported"
        case 0x9B: "QoS not supported"
        case 0x9C: "use another server"
        case 0x9D: "server moved"
        case 0x9E: "shared subscriptions not supported"
        case 0x9F: "connection rate exceeded"
        case 0xA0: "maximum connect time"
        case 0xA1: "subscription identifiers not supported"
        case 0xA2: "wildcard subscriptions not supported"
        default: "unknown reason code"
        }
    }

    /// "0x86 bad user name or password" / "5 not authorized".
    static func describe(_ code: UInt8, version: MQTTVersion, connack: Bool = false) -> String {
        if version == .v3_1_1 && connack { return "return code \(code) \(connackName311(code))" }
        if version == .v3_1_1 && code == 0x80 { return "0x80 failure" }
        return "\(hexByte(code)) \(name(code))"
    }
}
