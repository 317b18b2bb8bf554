import NIOCore
import NIOPosix
import NIOSSL

/// Errors of the session machine and of NIO turned into the seed's four error types, with a
/// message that names the broker, the cause and the fix, and a reason code can switch on.
struct ErrorMapping {
    /// The version of the link the failure happened on, and its broker.
    let v: MQTTVersion
    let brokerEndpoint: BrokerEndpoint
    let config: MQTTConfig

    static let authenticationRefusals: Set<ReasonCode> = [.badUserNameOrPassword, .notAuthorized, .banned, .badAuthenticationMethod]

    func failure<Token>(_ f: SessionMachine<Token>.Failure) -> any CommunicatorError {
        let broker = brokerEndpoint.description
        switch f {
        case .connectionRefused(let code, let props):
            let what = ReasonCode.describe(code, version: v, connack: true)
            let extra = props.reasonString.map { " (\($0))" } ?? ""
            let isAuth = v == .v3_1_1 ? (code == 4 || code == 5) : ErrorMapping.authenticationRefusals.contains(ReasonCode(code))
            if isAuth {
                let who = config.username.map { "user \"\($0)\"" } ?? "an anonymous client"
                return ProtocolAuthenticationError(
                    "broker \(broker) refused \(who) (CONNACK \(what))\(extra): check username/password and the broker's ACL",
                    code: code, reason: .connackRefused(ReasonCode(code)))
            }
            let isVersion = v == .v3_1_1 ? code == 1 : ReasonCode(code) == .unsupportedProtocolVersion
            if isVersion {
                return ProtocolError(
                    "broker \(broker) does not accept MQTT \(v) (CONNACK \(what))\(extra): set protocol_version to 3.1.1 or enable fallback",
                    code: code, reason: .connackRefused(ReasonCode(code)))
            }
            return ProtocolError(
                "broker \(broker) refused the connection (CONNACK \(what))\(extra)", code: code, reason: .connackRefused(ReasonCode(code)))
        case .protocolViolation(let what, let code):
            return ProtocolError(
                "broker \(broker) broke the MQTT protocol: \(what)"
                    + (v == .v5_0 ? " (we sent DISCONNECT \(ReasonCode.describe(code, version: v)))" : ""),
                code: code, reason: .protocolViolation)
        case .rejected(let packet, let code, let reason):
            return ProtocolValidationError(
                "broker refused the message (\(packet) \(ReasonCode.describe(code, version: v)))" + (reason.map { ": \($0)" } ?? ""),
                code: code, reason: .refused(ReasonCode(code)))
        case .keepAliveTimeout(let seconds):
            return ProtocolConnectionError(
                "no answer from broker \(broker) for \((seconds * 10).rounded() / 10) s (keep-alive): link considered dead",
                reason: .keepAliveTimeout)
        case .serverDisconnected(let code, let reason, _):
            return ProtocolError(
                "broker \(broker) sent DISCONNECT (\(ReasonCode.describe(code, version: v)))" + (reason.map { ": \($0)" } ?? ""),
                code: code, reason: .brokerDisconnected(ReasonCode(code)))
        case .refused(let what):
            return ProtocolValidationError(what, reason: .other)
        case .notConnected:
            return ProtocolConnectionError("not connected: QoS 0 messages are not queued while offline", reason: .notConnected)
        case .queueFull(let limit):
            return ProtocolValidationError("publish queue is full (\(limit) messages waiting)", reason: .queueFull)
        case .brokerLimit(let what):
            return ProtocolValidationError(what, reason: .brokerLimit)
        case .connectionLost:
            return ProtocolConnectionError("connection to \(broker) was lost before the request completed", reason: .connectionLost)
        case .dropped(let limit):
            return ProtocolValidationError(
                "message dropped: the publish queue was full (\(limit) waiting) and queue_full_policy is drop_oldest", reason: .dropped)
        case .authentication(let what):
            return ProtocolAuthenticationError("enhanced authentication with \(broker) failed: \(what)", reason: .authentication)
        case .expired(let seconds):
            return ProtocolValidationError(
                "message not sent: its Message Expiry Interval\(seconds > 0 ? " of \(seconds) s" : "") ran out while it waited for the broker",
                reason: .expired)
        }
    }

    func transport(_ error: Error) -> any CommunicatorError {
        if let e = error as? any CommunicatorError { return e }
        let broker = brokerEndpoint.description
        if let d = error as? MQTTDecodeError {
            return ProtocolError("broker \(broker) sent a \(d)", reason: .protocolViolation)
        }
        if let e = error as? NIOSSLError, case .uncleanShutdown = e {
            return ProtocolConnectionError("broker \(broker) closed the TLS connection without close_notify", reason: .tls)
        }
        if error is NIOSSLError || error is BoringSSLError || error is NIOSSLExtraError || error is NIOSSLCloseTimedOutError
            || error is NIOTLSUnwrappingError
        {
            return ProtocolConnectionError(
                "TLS handshake with \(broker) failed: \(error). Check ca_certs, the broker's certificate and its host name (tls_server_name)",
                reason: .tls)
        }
        if let c = error as? NIOConnectionError {
            let causes = c.connectionErrors.map { "\($0.error)" }
            let cause = causes.first ?? (c.dnsAError.map { "\($0)" } ?? c.dnsAAAAError.map { "\($0)" } ?? "\(error)")
            return ProtocolConnectionError(
                "cannot reach broker \(broker): \(cause). Is the broker running and listening there?", reason: .unreachable)
        }
        if error is ChannelError, case .connectTimeout = error as! ChannelError {
            return ProtocolConnectionError(
                "TCP connection to \(broker) timed out after \(config.timeout.inSeconds) s", reason: .unreachable)
        }
        return ProtocolConnectionError("connection to \(broker) failed: \(error)", reason: .unreachable)
    }
}
