/// 5.0 enhanced authentication (§4.12): a challenge/response exchange (SCRAM, Kerberos, a
/// device token with a nonce, ...) carried by AUTH packets, at connect and when re-authenticating.
/// The client calls it on its network thread, one exchange at a time.
public protocol MQTTAuthenticator: Sendable {
    /// The Authentication Method named in CONNECT and in every AUTH (e.g. "SCRAM-SHA-256").
    var method: String { get }
    /// Starts an exchange (in CONNECT, or in AUTH 0x19 "re-authenticate"): the first data.
    func start() throws -> [UInt8]?
    /// The broker's challenge (AUTH 0x18 "continue authentication"): the answer to send.
    func respond(to challenge: [UInt8]) throws -> [UInt8]?
    /// The exchange succeeded (CONNACK 0x00 or AUTH 0x00) with the broker's final data. A client
    /// that checks the broker (a SCRAM server signature) throws here to end the connection.
    func finish(_ data: [UInt8]?) throws
}
