import CoreMetrics

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Every parameter of the seed's `MQTTConfig`, with the seed's defaults, plus what a real
/// deployment needs. Times are in seconds.
public struct MQTTConfig: Sendable {
    /// Where the network loop runs (seed: `mode`).
    public enum Mode: String, Sendable {
        /// The network runs on a thread of its own; calls return at once (seed default).
        case nonBlocking = "non-blocking"
        /// `loopForever()` runs the network on the calling thread until `stopLoop()`.
        case blocking
    }

    /// Minimum TLS version (seed: `tls_version`; its default `ssl.PROTOCOL_TLS` negotiates the
    /// highest both sides support, which is what `.tls1_2` as a floor does here).
    public enum TLSVersion: String, Sendable {
        case tls1_2 = "1.2"
        case tls1_3 = "1.3"
    }

    /// How the client identifier is chosen.
    public enum ClientID: Sendable, Equatable {
        /// Exactly this identifier, on every (re)connect.
        case fixed(String)
        /// Derived from the program name and the machine id (/etc/machine-id or the host name):
        /// the same on every start of the same program on the same machine. A second client in
        /// the same process gets "-2", a third "-3", and so on.
        case stable
        /// A new random identifier per `MQTTProtocol` (sessions cannot be resumed after a restart).
        case random
        /// Empty: a 5.0 broker assigns one (used for later reconnects); 3.1.1 needs cleanStart.
        case brokerAssigned
    }

    // Seed: basic connection settings
    public var brokerAddress: String
    /// 1883 plain, 8883 TLS.
    public var port: Int
    /// Connection timeout: TCP, TLS and CONNACK together, and the wait of blocking calls (the
    /// seed's `timeout` seconds in the initialiser).
    public var timeout: Duration
    /// Keep-alive interval; 0 disables keep-alive.
    public var keepalive: Int
    public var mode: Mode

    // Seed: security
    public var username: String?
    public var password: String?
    /// CA certificate file (PEM) for verifying the broker. Setting it turns TLS on.
    public var caCerts: String?
    public var tlsVersion: TLSVersion

    // Seed: advanced
    /// 5.0 Session Expiry Interval: how long the broker keeps our session after a disconnect.
    public var sessionExpiryInterval: UInt32
    /// Reconnect attempts after a lost connection before giving up; 0 means forever.
    public var maxReconnectAttempts: Int
    /// The client does not stop trying by itself: a failed first `connect()` (whose caller still
    /// gets the error at once) and a refused user name or password go to the reconnect back-off
    /// like a lost link, within `maxReconnectAttempts`. For a program that must come back on its
    /// own when the broker, or its password on the broker, is fixed. Off by default (the seed's
    /// behaviour: `connect()` fails and stays failed).
    public var keepConnecting = false
    /// The back-off after a lost connection or a failed attempt: it starts here and doubles ...
    public var reconnectInitialDelay: Duration
    /// ... up to this (jittered by ±20 %).
    public var reconnectMaxDelay: Duration
    /// A PINGREQ left unanswered for `keepalive × heartbeatCheckRatio` means the link is dead.
    public var heartbeatCheckRatio: Double
    /// Messages accepted and not yet completed (waiting or in flight) at most; beyond it publish
    /// throws `ProtocolValidationError` (or, with `queueFullPolicy = .dropOldest`, the oldest
    /// waiting message is dropped).
    public var publishQueueMaxsize: Int

    // Additions for deployments
    public var clientID: ClientID
    public var protocolVersion: MQTTVersion
    /// If a 5.0 CONNECT is refused as an unsupported protocol version, try again with 3.1.1.
    public var fallbackToV311: Bool
    /// Whether the first CONNECT of this client starts a clean session. Reconnects of the same
    /// client always resume (Clean Start 0), so in-flight messages survive a dropped link. Set it
    /// to false to resume a session left by an earlier run of the program.
    public var cleanStart: Bool
    /// TLS on or off; nil = on when `caCerts` or a client certificate is set, or port is 8883.
    public var tls: Bool?
    /// Client certificate and key (PEM) for mutual TLS.
    public var clientCertificate: String?
    public var clientKey: String?
    /// Name checked against the broker's certificate (default: `brokerAddress`).
    public var tlsServerName: String?
    /// Skips certificate verification. Off by default; logged as a warning on every connect.
    public var tlsInsecureSkipVerify: Bool
    /// A password may go over plain TCP (no TLS) to a broker that is not on this machine. Off (the
    /// default): such a configuration is refused, since the password would cross the network in
    /// clear text. A broker on a loopback address needs no TLS for it.
    public var allowPasswordWithoutTLS = false
    /// Largest packet sent to the broker and, unless `maxIncomingPacketSize` says otherwise,
    /// accepted from it, in bytes.
    public var maxPacketSize: Int
    /// Largest packet accepted from the broker; nil = `maxPacketSize`. Announced as Maximum Packet
    /// Size in a 5.0 CONNECT (the broker then never sends more; one that does is disconnected with
    /// `ReasonCode.packetTooLarge`). On 3.1.1 a larger PUBLISH is acknowledged and skipped as it streams in, never
    /// buffered (`droppedIncomingMessages` counts them), and the connection stays.
    public var maxIncomingPacketSize: Int?
    var incomingPacketLimit: Int { maxIncomingPacketSize ?? maxPacketSize }
    /// Unacknowledged outgoing QoS 1/2 publishes at most; nil = 20 on 3.1.1 (mosquitto's default
    /// `max_inflight_messages`; more silently loses QoS 2 messages there), the broker's Receive
    /// Maximum on 5.0.
    public var maxInflight: Int?
    /// Whether QoS 0 publishes wait in the queue while disconnected (otherwise they fail).
    public var queueQoS0WhileDisconnected: Bool
    /// What a full publish queue does with a new message.
    public var queueFullPolicy: QueueFullPolicy
    /// Keeps QoS 1/2 messages on flash while the broker is unreachable (and across restarts and
    /// power cuts); nil = memory only.
    public var offlineStore: OfflineStoreConfig?
    /// Further brokers (a cluster, a standby). A failed connection attempt moves on to the next
    /// one at once; only after every broker failed does the reconnect back-off wait. Each round
    /// starts again with the first (preferred) one, so the client returns to it when it is back.
    public var failoverBrokers: [BrokerEndpoint]
    /// Order of the brokers in each round.
    public var brokerOrder: BrokerOrder
    /// Hosts (or host:port) a 5.0 broker may send us to with a Server Reference (CONNACK or
    /// DISCONNECT `ReasonCode.useAnotherServer` or `.serverMoved`), besides the configured brokers.
    /// A reference to anything else is logged and ignored: never followed blindly.
    public var serverReferenceAllowList: [String]

    /// 5.0: QoS 1/2 publishes the broker may send us without waiting for our acknowledgement
    /// (announced in CONNECT below 65,535; a broker that sends more is disconnected with
    /// `ReasonCode.receiveMaximumExceeded`).
    public var receiveMaximum: UInt16 = 65_535
    /// 5.0: topic aliases the broker may use towards us (announced in CONNECT; 0 = none).
    /// With mosquitto 2.1 and a small `maxPacketSize`, set 0: that broker gives a topic an alias
    /// in a PUBLISH it then drops as too large for us, and sends the alias alone next (seen with
    /// 2.1.2 and mosquitto_sub too), which is a protocol error the client must disconnect on.
    public var topicAliasMaximum: UInt16 = 16
    /// 5.0: topics used more than once get an alias on the way out, within the broker's Topic
    /// Alias Maximum (saves their bytes on every later message; reset on each connection).
    public var outgoingTopicAliases = true

    /// 5.0 enhanced authentication (AUTH challenge/response, re-authentication); nil = none.
    public var authenticator: (any MQTTAuthenticator)?
    /// Sees each message as it first leaves the queue or the offline store for the network, and
    /// may give it another payload (`MQTTPublishPreparer`); nil = messages go as published.
    public var publishPreparer: (any MQTTPublishPreparer)?
    /// Where answers to `request(...)` arrive (5.0 Response Topic); nil = responses/<client id>.
    public var responseTopic: String?

    /// Where the client's metrics go (swift-metrics; the names are `MQTTClientMetrics.help`'s).
    /// nil: the application's `MetricsSystem` if it bootstrapped one, else none is made and
    /// nothing is counted beyond the plain integers the snapshot has anyway.
    public var metricsFactory: (any MetricsFactory)?
    /// How often the counters and gauges are brought up to date (also on
    /// `MQTTProtocol.reportMetrics`); the hot path only counts in plain integers.
    public var metricsInterval: Duration = .seconds(1)

    /// The factory metrics go to: the configured one, or the bootstrapped system's (nil: none).
    var metricsDestination: (any MetricsFactory)? {
        if let metricsFactory { return metricsFactory }
        let system = MetricsSystem.factory
        return system is NOOPMetricsHandler ? nil : system
    }

    public enum BrokerOrder: String, Sendable {
        /// `brokerAddress` first, then `failoverBrokers` in the order given.
        case inOrder = "in_order"
        /// A new random order for every round (spreads a fleet over a cluster).
        case random
    }

    /// `brokerAddress:port` followed by `failoverBrokers`.
    public var brokers: [BrokerEndpoint] { [BrokerEndpoint(host: brokerAddress, port: port)] + failoverBrokers }

    public enum QueueFullPolicy: String, Sendable {
        /// `publish` throws `ProtocolValidationError`; nothing already accepted is lost.
        case reject
        /// The oldest message still waiting is dropped (counted and logged) to make room.
        case dropOldest = "drop_oldest"
    }

    public init(
        brokerAddress: String,
        port: Int = 1883,
        timeout: Double = 60,
        keepalive: Int = 60,
        mode: Mode = .nonBlocking,
        username: String? = nil,
        password: String? = nil,
        caCerts: String? = nil,
        tlsVersion: TLSVersion = .tls1_2,
        sessionExpiryInterval: UInt32 = 3600,
        maxReconnectAttempts: Int = 10,
        reconnectInitialDelay: Double = 1,
        reconnectMaxDelay: Double = 60,
        heartbeatCheckRatio: Double = 0.5,
        publishQueueMaxsize: Int = 1000,
        clientID: ClientID = .stable,
        protocolVersion: MQTTVersion = .v5_0,
        fallbackToV311: Bool = false,
        cleanStart: Bool = true,
        tls: Bool? = nil,
        clientCertificate: String? = nil,
        clientKey: String? = nil,
        tlsServerName: String? = nil,
        tlsInsecureSkipVerify: Bool = false,
        maxPacketSize: Int = 268_435_460,
        maxInflight: Int? = nil,
        queueQoS0WhileDisconnected: Bool = false,
        queueFullPolicy: QueueFullPolicy = .reject,
        offlineStore: OfflineStoreConfig? = nil,
        failoverBrokers: [BrokerEndpoint] = [],
        brokerOrder: BrokerOrder = .inOrder,
        serverReferenceAllowList: [String] = []
    ) {
        self.brokerAddress = brokerAddress
        self.port = port
        self.timeout = Duration(seedSeconds: timeout)
        self.keepalive = keepalive
        self.mode = mode
        self.username = username
        self.password = password
        self.caCerts = caCerts
        self.tlsVersion = tlsVersion
        self.sessionExpiryInterval = sessionExpiryInterval
        self.maxReconnectAttempts = maxReconnectAttempts
        self.reconnectInitialDelay = Duration(seedSeconds: reconnectInitialDelay)
        self.reconnectMaxDelay = Duration(seedSeconds: reconnectMaxDelay)
        self.heartbeatCheckRatio = heartbeatCheckRatio
        self.publishQueueMaxsize = publishQueueMaxsize
        self.clientID = clientID
        self.protocolVersion = protocolVersion
        self.fallbackToV311 = fallbackToV311
        self.cleanStart = cleanStart
        self.tls = tls
        self.clientCertificate = clientCertificate
        self.clientKey = clientKey
        self.tlsServerName = tlsServerName
        self.tlsInsecureSkipVerify = tlsInsecureSkipVerify
        self.maxPacketSize = maxPacketSize
        self.maxInflight = maxInflight
        self.queueQoS0WhileDisconnected = queueQoS0WhileDisconnected
        self.queueFullPolicy = queueFullPolicy
        self.offlineStore = offlineStore
        self.failoverBrokers = failoverBrokers
        self.brokerOrder = brokerOrder
        self.serverReferenceAllowList = serverReferenceAllowList
    }

    var usesTLS: Bool { tls ?? (caCerts != nil || clientCertificate != nil || port == 8883) }

    /// This machine: what never crosses a network.
    static func isLoopback(_ host: String) -> Bool { host == "localhost" || host == "::1" || host.hasPrefix("127.") }

    /// Every problem with the configuration, each naming the parameter and the fix.
    public func problems() -> [String] {
        var p: [String] = []
        if brokerAddress.isEmpty { p.append("broker_address is empty: set the broker's host name or IP address") }
        if password != nil && !usesTLS && !allowPasswordWithoutTLS {
            let remote = brokers.filter { !Self.isLoopback($0.host) }
            if !remote.isEmpty {
                p.append(
                    "password would be sent unencrypted to \(remote.map(\.description).joined(separator: ", ")) (no TLS): set ca_certs for TLS (usually port 8883), or allow_password_without_tls for a network you trust"
                )
            }
        }
        if !(1...65_535).contains(port) { p.append("port \(port) is out of range 1...65535 (1883 plain, 8883 TLS)") }
        if !(timeout > .zero) { p.append("timeout \(timeout.inSeconds) must be greater than 0 seconds") }
        if metricsInterval < .milliseconds(10) {
            p.append("metricsInterval \(metricsInterval) is below 10 ms: the metrics would keep the network thread busy; use 1 s or so")
        }
        if !(0...65_535).contains(keepalive) { p.append("keepalive \(keepalive) is out of range 0...65535 seconds") }
        if !(heartbeatCheckRatio > 0 && heartbeatCheckRatio <= 10) {
            p.append("heartbeat_check_ratio \(heartbeatCheckRatio) must be in (0, 10]")
        }
        if publishQueueMaxsize < 1 { p.append("publish_queue_maxsize \(publishQueueMaxsize) must be at least 1") }
        if maxReconnectAttempts < 0 { p.append("max_reconnect_attempts \(maxReconnectAttempts) must be 0 (forever) or more") }
        if !(reconnectInitialDelay >= .milliseconds(10)) {
            p.append(
                "reconnect_initial_delay \(reconnectInitialDelay.inSeconds) must be at least 0.01 s: from 0 the back-off never grows, and a client would reconnect in a tight loop"
            )
        }
        if !(reconnectMaxDelay >= reconnectInitialDelay) {
            p.append(
                "reconnect_max_delay \(reconnectMaxDelay.inSeconds) must be at least reconnect_initial_delay \(reconnectInitialDelay.inSeconds)"
            )
        }
        if !(16...268_435_460).contains(maxPacketSize) { p.append("max_packet_size \(maxPacketSize) must be in 16...268435460 bytes") }
        if let m = maxIncomingPacketSize, !(16...268_435_460).contains(m) {
            p.append("max_incoming_packet_size \(m) must be in 16...268435460 bytes")
        }
        if let m = maxInflight, !(1...65_535).contains(m) { p.append("max_inflight \(m) must be in 1...65535") }
        if receiveMaximum == 0 { p.append("receive_maximum must be in 1...65535 (0 is a protocol error, §3.1.2.11.3)") }
        if protocolVersion == .v3_1_1 && password != nil && username == nil {
            p.append("password is set without username: MQTT 3.1.1 sends a password only with a user name [MQTT-3.1.2-22]")
        }
        if case .fixed(let id) = clientID {
            if id.utf8.count > 65_535 { p.append("client_id is longer than 65535 bytes") }
            if id.isEmpty { p.append("client_id is empty: use .brokerAssigned to let a 5.0 broker choose one") }
        }
        if clientID == .brokerAssigned && protocolVersion == .v3_1_1 && !cleanStart {
            p.append("a broker-assigned client id on 3.1.1 needs clean_start true [MQTT-3.1.3-7]")
        }
        if (clientCertificate == nil) != (clientKey == nil) {
            p.append("client_certificate and client_key go together for mutual TLS: set both or neither")
        }
        if let store = offlineStore { p += store.problems() }
        for b in failoverBrokers where b.host.isEmpty || !(1...65_535).contains(b.port) {
            p.append("failover broker \"\(b)\" needs a host and a port in 1...65535")
        }
        for (name, path) in [("ca_certs", caCerts), ("client_certificate", clientCertificate), ("client_key", clientKey)] {
            if let path, access(path, R_OK) != 0 {
                p.append("\(name) file \"\(path)\" cannot be read: check the path and its permissions")
            }
        }
        return p
    }
}
