/// Reason codes of 5.0 (§2.4) and CONNACK return codes of 3.1.1 (§3.2.2.3), with their names.
public enum ReasonCode {
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
