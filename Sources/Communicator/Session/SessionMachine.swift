import NIOCore

/// The MQTT session as a value-type state machine (sans-I/O): it takes events (connection up,
/// packet received, publish requested, timer tick, connection lost) and appends actions (send
/// packets, deliver a message, complete a request, close). It owns packet identifiers, the
/// in-flight window, the QoS 1/2 handshakes in both directions, keep-alive and resend on resume.
/// It holds no sockets and reads no clock: time comes in with each event, in nanoseconds.
///
/// `Token` is whatever the caller wants back when a request completes (a promise, a test id).
public struct SessionMachine<Token> {
    public struct Options: Sendable {
        public var version: MQTTVersion
        public var clientID: String
        public var cleanStart: Bool
        public var keepAliveSeconds: UInt16
        public var heartbeatCheckRatio: Double
        public var username: String?
        public var password: ByteBuffer?
        public var will: MQTTPacket.Will?
        public var sessionExpirySeconds: UInt32
        /// Our own limit on unacknowledged outgoing QoS 1/2 publishes; nil = the broker's Receive
        /// Maximum on 5.0, 20 on 3.1.1.
        public var maxInflight: Int?
        /// Largest packet we accept (announced as Maximum Packet Size on 5.0); the frame reader is
        /// given the same limit.
        public var maxPacketSize: Int
        /// Bound on publishes waiting for the connection or for room in the in-flight window.
        public var queueLimit: Int
        /// Whether QoS 0 publishes wait for the connection too (otherwise they fail while down).
        public var queueQoS0WhileDisconnected: Bool
        /// With a full queue: refuse the new message (false) or drop the oldest waiting one (true).
        public var dropOldestWhenFull: Bool
        /// 5.0: incoming QoS 1/2 publishes the broker may leave unacknowledged at once (our Receive
        /// Maximum, announced in CONNECT below 65,535 and enforced: more is DISCONNECT 0x93).
        public var receiveMaximum: UInt16
        /// 5.0: topic aliases the broker may use towards us (announced in CONNECT; 0 = none).
        public var topicAliasMaximum: UInt16
        /// 5.0: give frequently used topics an alias on the way out, within the broker's maximum.
        public var outgoingTopicAliases: Bool
        /// 5.0 enhanced authentication (AUTH exchanges); nil = user name and password only.
        public var authenticator: (any MQTTAuthenticator)?
        /// Sees each message at its first transmission and may change its payload; nil = none.
        public var preparer: (any MQTTPublishPreparer)?
        /// Report round trips (`roundTrip` actions): PINGREQ to PINGRESP, and one publish at a
        /// time from PUBLISH to its PUBACK or PUBREC (for metrics; off, nothing is timed).
        public var timeRoundTrips: Bool

        public init(
            version: MQTTVersion = .v5_0, clientID: String, cleanStart: Bool = true, keepAliveSeconds: UInt16 = 60,
            heartbeatCheckRatio: Double = 0.5, username: String? = nil, password: ByteBuffer? = nil,
            will: MQTTPacket.Will? = nil, sessionExpirySeconds: UInt32 = 0, maxInflight: Int? = nil,
            maxPacketSize: Int = 268_435_460, queueLimit: Int = 1000, queueQoS0WhileDisconnected: Bool = false,
            dropOldestWhenFull: Bool = false, receiveMaximum: UInt16 = 65_535, topicAliasMaximum: UInt16 = 16,
            outgoingTopicAliases: Bool = true, authenticator: (any MQTTAuthenticator)? = nil,
            preparer: (any MQTTPublishPreparer)? = nil, timeRoundTrips: Bool = false
        ) {
            self.version = version
            self.clientID = clientID
            self.cleanStart = cleanStart
            self.keepAliveSeconds = keepAliveSeconds
            self.heartbeatCheckRatio = heartbeatCheckRatio
            self.username = username
            self.password = password
            self.will = will
            self.sessionExpirySeconds = sessionExpirySeconds
            self.maxInflight = maxInflight
            self.maxPacketSize = maxPacketSize
            self.queueLimit = queueLimit
            self.queueQoS0WhileDisconnected = queueQoS0WhileDisconnected
            self.dropOldestWhenFull = dropOldestWhenFull
            self.receiveMaximum = receiveMaximum
            self.topicAliasMaximum = topicAliasMaximum
            self.outgoingTopicAliases = outgoingTopicAliases
            self.authenticator = authenticator
            self.preparer = preparer
            self.timeRoundTrips = timeRoundTrips
        }
    }

    public typealias ConnectionInfo = MQTTConnectionInfo

    public enum Failure: Error, Equatable, Sendable {
        /// CONNACK refused the connection with this code.
        case connectionRefused(code: UInt8, properties: MQTTProperties)
        /// The broker broke the protocol (unexpected packet, unknown identifier, ...); on 5.0 we
        /// sent DISCONNECT with `code` first.
        case protocolViolation(String, code: UInt8 = 0x82)
        /// A PUBACK/PUBREC/PUBCOMP or SUBACK/UNSUBACK reported failure.
        case rejected(packet: PacketType, code: UInt8, reason: String?)
        /// No PINGRESP (or anything else) within the allowed time.
        case keepAliveTimeout(seconds: Double)
        /// The broker sent DISCONNECT (with a Server Reference on "use another server" / "server moved").
        case serverDisconnected(code: UInt8, reason: String?, serverReference: String? = nil)
        /// The request cannot be carried (no packet identifier left).
        case refused(String)
        /// A QoS 0 message while offline, and QoS 0 is not queued then.
        case notConnected
        /// The session's queue holds `limit` messages already.
        case queueFull(limit: Int)
        /// Beyond what this broker announced in CONNACK (Maximum QoS, Retain Available, Maximum
        /// Packet Size): another broker, or this one with other settings, may take it.
        case brokerLimit(String)
        /// The connection ended before the request completed.
        case connectionLost
        /// Dropped from a full queue to make room for a newer message.
        case dropped(queueLimit: Int)
        /// Its 5.0 Message Expiry Interval ran out while it waited: not sent.
        case expired(seconds: UInt32)
        /// The enhanced authentication exchange failed on our side (the authenticator threw, or
        /// the broker answered with another method).
        case authentication(String)

        /// The failure as a metric label: snake case, one per case.
        public var metricName: String {
            switch self {
            case .connectionRefused: "connection_refused"
            case .protocolViolation: "protocol_violation"
            case .rejected: "rejected"
            case .keepAliveTimeout: "keepalive_timeout"
            case .serverDisconnected: "server_disconnected"
            case .refused: "refused"
            case .notConnected: "not_connected"
            case .queueFull: "queue_full"
            case .brokerLimit: "broker_limit"
            case .connectionLost: "connection_lost"
            case .dropped: "dropped"
            case .expired: "expired"
            case .authentication: "authentication"
            }
        }
    }

    /// What `roundTrip` timed.
    public enum RoundTrip: String, Sendable {
        /// PINGREQ to PINGRESP.
        case ping
        /// A QoS 1 PUBLISH to its PUBACK, or a QoS 2 PUBLISH to its PUBREC.
        case publish
    }

    public enum Action {
        case send(MQTTPacket)
        /// Write everything sent so far.
        case flush
        case deliver(MQTTPacket.Publish)
        /// CONNACK accepted the connection.
        case connected(ConnectionInfo)
        /// `qos`: the message's (for the owner's counts).
        case publishCompleted(Token, Result<Void, Failure>, qos: QoS)
        /// A QoS 0 publish was handed to `send`: it is complete once those bytes are written.
        case qos0Sent(Token)
        /// A QoS 2 publish got its packet identifier; the `send` of it follows in the same batch.
        /// An owner that keeps messages across restarts makes the identity durable before the
        /// bytes leave (exactly once across a restart needs the same identifier on resend).
        case assigned(Token, packetID: UInt16)
        /// Granted QoS or failure code per filter.
        case subscribeCompleted(Token, Result<[UInt8], Failure>)
        case unsubscribeCompleted(Token, Result<Void, Failure>)
        /// Close the connection; the failure says why (nil: a clean, requested disconnect).
        case close(Failure?)
        /// A re-authentication (AUTH 0x19) completed with AUTH 0x00.
        case reauthenticated
        /// A 5.0 acknowledgement succeeded with a reason code other than 0 (e.g. PUBACK 0x10 "no
        /// matching subscribers"), with its reason string.
        case acknowledgedWithReason(PacketType, code: UInt8, reason: String?)
        /// An incoming PUBLISH above our maximum packet size was skipped (3.1.1, which cannot
        /// announce the limit); it was acknowledged like a delivered one, so the broker does not
        /// send it again.
        case droppedIncoming(DroppedPublish)
        /// A round trip took this long (only with `Options.timeRoundTrips`).
        case roundTrip(RoundTrip, nanoseconds: UInt64)
    }

    enum OutState { case awaitingPuback, awaitingPubrec, awaitingPubcomp }

    struct OutFlow {
        var publish: MQTTPacket.Publish
        var state: OutState
        var token: Token
        var order: UInt64
    }

    struct Pending {
        var publish: MQTTPacket.Publish
        var token: Token
        /// When it was accepted, for the Message Expiry Interval.
        var acceptedAt: UInt64
    }

    enum ConnectionState { case down, awaitingConnack, up, closing }

    public var options: Options {
        didSet { hasPreparer = options.preparer != nil }
    }
    /// Whether a preparer is set (checked per message without copying the existential).
    private var hasPreparer: Bool
    private(set) var state: ConnectionState = .down
    private var info: ConnectionInfo?
    private var nextID: UInt16 = 1
    private var order: UInt64 = 0
    private var outgoing: [UInt16: OutFlow] = [:]
    private var pending = CircularBuffer<Pending>()
    /// Incoming QoS 2 identifiers between PUBREC and PUBREL: a repeat of one is not delivered again.
    private var incomingQoS2: Set<UInt16> = []
    private var subscribes: [UInt16: Token] = [:]
    private var unsubscribes: [UInt16: Token] = [:]
    private var lastSent: UInt64 = 0
    private var lastReceived: UInt64 = 0
    private var pingSentAt: UInt64?
    /// 5.0 topic aliases of this network connection (they never outlive it, §3.3.2.3.4).
    private var incomingAliases: [UInt16: String] = [:]
    private var outgoingAliases: [String: UInt16] = [:]
    /// Uses of topics without an alias yet: a topic gets one on its second use.
    private var topicUses: [String: Int] = [:]
    /// An AUTH 0x19 exchange we started is under way.
    private var reauthenticating = false
    /// Messages dropped from a full queue (drop-oldest policy) since the start.
    public private(set) var droppedCount = 0
    /// The one outgoing publish being timed (`Options.timeRoundTrips`): its identifier and when
    /// it was sent. A resent one is never timed (its ack may answer either transmission).
    private var timed: (id: UInt16, sentAt: UInt64)?

    public init(options: Options) {
        self.options = options
        hasPreparer = options.preparer != nil
    }

    public var isConnected: Bool { state == .up }
    public var inflightCount: Int { outgoing.count }
    public var queuedCount: Int { pending.count }
    public var connectionInfo: ConnectionInfo? { info }

    /// Packet identifiers the publish window never takes, so that SUBSCRIBE and UNSUBSCRIBE
    /// find one even when a 5.0 broker omits Receive Maximum (65,535) and the offline store fills
    /// the window: identifiers run 1...65535 and are not reused while in flight ([MQTT-2.3.1-2]).
    static var identifiersKeptForControl: Int { 512 }

    /// The effective in-flight window for outgoing QoS 1/2.
    var window: Int {
        let serverMax = min(info?.receiveMaximum ?? 65_535, Int(UInt16.max) - Self.identifiersKeptForControl)
        if let own = options.maxInflight { return min(own, serverMax) }
        return options.version == .v5_0 ? serverMax : 20
    }

    /// Identifiers of open flows: publishes in flight, SUBSCRIBEs and UNSUBSCRIBEs unanswered.
    private var identifiersInUse: Int { outgoing.count + subscribes.count + unsubscribes.count }

    public mutating func setWill(_ will: MQTTPacket.Will?) { options.will = will }

    // MARK: - Connection lifecycle

    /// The transport is up: send CONNECT.
    public mutating func connectionEstablished(now: UInt64, into actions: inout [Action]) {
        state = .awaitingConnack
        info = nil
        lastSent = now
        lastReceived = now
        pingSentAt = nil
        timed = nil
        incomingAliases.removeAll()
        outgoingAliases.removeAll()
        topicUses.removeAll()
        var props = MQTTProperties()
        if options.version == .v5_0 {
            // Our own limits (§3.1.2.11): absent means the largest value.
            if options.sessionExpirySeconds > 0 { props.sessionExpiryInterval = options.sessionExpirySeconds }
            if options.maxPacketSize < 268_435_460 { props.maximumPacketSize = UInt32(options.maxPacketSize) }
            if options.receiveMaximum < 65_535 { props.receiveMaximum = max(options.receiveMaximum, 1) }
            if options.topicAliasMaximum > 0 { props.topicAliasMaximum = options.topicAliasMaximum }
            if let auth = options.authenticator {
                // §4.12: the method (and first data) go in CONNECT.
                props.authenticationMethod = auth.method
                do {
                    props.authenticationData = try auth.start().map { ByteBuffer(bytes: $0) }
                } catch {
                    state = .closing
                    actions.append(.close(.authentication("authenticator \(auth.method) could not start: \(error)")))
                    return
                }
            }
        }
        reauthenticating = false
        let connect = MQTTPacket.Connect(
            version: options.version, clientID: options.clientID, cleanStart: options.cleanStart,
            keepAliveSeconds: options.keepAliveSeconds, username: options.username, password: options.password,
            will: options.will, properties: props)
        actions.append(.send(.connect(connect)))
        actions.append(.flush)
    }

    /// The transport is gone (for whatever reason). In-flight QoS 1/2 flows stay for the next
    /// connection; subscribe/unsubscribe requests fail; QoS 0 has nothing to keep.
    public mutating func connectionLost(into actions: inout [Action]) {
        state = .down
        pingSentAt = nil
        timed = nil
        for (_, token) in subscribes { actions.append(.subscribeCompleted(token, .failure(.connectionLost))) }
        for (_, token) in unsubscribes { actions.append(.unsubscribeCompleted(token, .failure(.connectionLost))) }
        subscribes.removeAll()
        unsubscribes.removeAll()
    }

    /// A clean disconnect: DISCONNECT (normal, so the Will is discarded [MQTT-3.14.4-3]) then close.
    /// DISCONNECT, then close [MQTT-3.14.4-1]. `awaitClose`: leave the close to the broker (which
    /// closes on DISCONNECT) and to the owner's deadline, so that nothing sent after it, on another
    /// connection, can reach the broker before the DISCONNECT (the 3.1.1 session hop).
    public mutating func disconnect(now: UInt64, awaitClose: Bool = false, into actions: inout [Action]) {
        guard state == .up || state == .awaitingConnack else { return }
        state = .closing
        if info != nil {
            actions.append(.send(.disconnect(.init())))
            actions.append(.flush)
        }
        if !awaitClose { actions.append(.close(nil)) }
    }

    /// Fails everything still waiting (used when the client gives up for good).
    public mutating func failAll(_ failure: Failure, into actions: inout [Action]) {
        let flows = outgoing.values.sorted { $0.order < $1.order }
        outgoing.removeAll()
        timed = nil
        for f in flows { finish(f.token, qos: f.publish.qos, .failure(failure), into: &actions) }
        while let p = pending.popFirst() {
            finish(p.token, qos: p.publish.qos, .failure(failure), into: &actions)
        }
    }

    /// Puts back a QoS 1/2 flow of an earlier run, kept in durable storage with its packet
    /// identifier: on the next connection it is resent as [MQTT-4.4.0-1] asks (PUBLISH with DUP
    /// set, or PUBREL when `released`), before anything queued.
    public mutating func restoreOutgoing(_ publish: MQTTPacket.Publish, released: Bool, token: Token) {
        guard let id = publish.packetID, publish.qos != .atMostOnce, outgoing[id] == nil else { return }
        var p = publish
        p.dup = true
        prepare(&p)
        order &+= 1
        let state: OutState = publish.qos == .atLeastOnce ? .awaitingPuback : (released ? .awaitingPubcomp : .awaitingPubrec)
        outgoing[id] = OutFlow(publish: p, state: state, token: token, order: order)
    }

    // MARK: - Requests

    /// Queues a publish; it goes out at once when connected and the window has room.
    public mutating func publish(_ publish: MQTTPacket.Publish, token: Token, now: UInt64, into actions: inout [Action]) {
        if state != .up {
            if publish.qos == .atMostOnce && !options.queueQoS0WhileDisconnected {
                finish(token, qos: publish.qos, .failure(.notConnected), into: &actions)
                return
            }
        } else if let problem = violatesBrokerLimits(publish) {
            finish(token, qos: publish.qos, .failure(.brokerLimit(problem)), into: &actions)
            return
        }
        if pending.count >= options.queueLimit {
            guard options.dropOldestWhenFull, let oldest = pending.popFirst() else {
                finish(token, qos: publish.qos, .failure(.queueFull(limit: options.queueLimit)), into: &actions)
                return
            }
            droppedCount += 1
            finish(oldest.token, qos: oldest.publish.qos, .failure(.dropped(queueLimit: options.queueLimit)), into: &actions)
        }
        var p = Pending(publish: publish, token: token, acceptedAt: now)
        if state == .up && pending.isEmpty && hasRoom(for: publish.qos) {
            // Nothing waits ahead of it and the window has room: out now, not through the queue
            // (its limits were checked above, and are again only if a preparer changes it).
            if send(&p, now: now, limitsChecked: true, into: &actions) { actions.append(.flush) }
            return
        }
        pending.append(p)
        if state == .up { sendPending(now: now, into: &actions) }
    }

    public mutating func subscribe(
        _ subscriptions: [MQTTPacket.Subscription], properties: MQTTProperties = .init(), token: Token, now: UInt64,
        into actions: inout [Action]
    ) {
        guard state == .up else {
            actions.append(.subscribeCompleted(token, .failure(.connectionLost)))
            return
        }
        guard let id = allocateID() else {
            actions.append(.subscribeCompleted(token, .failure(.refused(Self.exhausted))))
            return
        }
        subscribes[id] = token
        send(.subscribe(.init(packetID: id, subscriptions: subscriptions, properties: properties)), now: now, into: &actions)
        actions.append(.flush)
    }

    public mutating func unsubscribe(_ filters: [String], token: Token, now: UInt64, into actions: inout [Action]) {
        guard state == .up else {
            actions.append(.unsubscribeCompleted(token, .failure(.connectionLost)))
            return
        }
        guard let id = allocateID() else {
            actions.append(.unsubscribeCompleted(token, .failure(.refused(Self.exhausted))))
            return
        }
        unsubscribes[id] = token
        send(.unsubscribe(.init(packetID: id, filters: filters)), now: now, into: &actions)
        actions.append(.flush)
    }

    // MARK: - Timer

    /// Keep-alive: PINGREQ after `keepAlive` of silence in either direction ([MQTT-3.1.2-23] requires
    /// it for send-silence; receive-silence also pings, which catches half-open links while we
    /// are busy sending). No answer within keepAlive × heartbeatCheckRatio: the link is dead.
    public mutating func tick(now: UInt64, into actions: inout [Action]) {
        guard state == .up, let info, info.keepAliveSeconds > 0 else { return }
        let ka = UInt64(info.keepAliveSeconds) * 1_000_000_000
        if let sent = pingSentAt {
            let grace = UInt64(Double(ka) * max(options.heartbeatCheckRatio, 0.05))
            if now >= sent + grace && lastReceived <= sent {
                state = .closing
                actions.append(.close(.keepAliveTimeout(seconds: Double(now - lastReceived) / 1e9)))
            }
            return
        }
        if now >= lastSent + ka || now >= lastReceived + ka {
            pingSentAt = now
            send(.pingreq, now: now, into: &actions)
            actions.append(.flush)
        }
    }

    /// How often the owner should call `tick`.
    public var tickIntervalNanoseconds: UInt64 {
        let ka = Double(info?.keepAliveSeconds ?? options.keepAliveSeconds)
        let step = ka * max(options.heartbeatCheckRatio, 0.05) / 4
        return UInt64(min(max(step, 0.05), 1.0) * 1e9)
    }

    // MARK: - Incoming packets

    public mutating func received(_ packet: MQTTPacket, now: UInt64, into actions: inout [Action]) {
        lastReceived = now
        if let sent = pingSentAt, packet == .pingresp {
            pingSentAt = nil
            if options.timeRoundTrips { actions.append(.roundTrip(.ping, nanoseconds: now &- sent)) }
        }
        switch state {
        case .awaitingConnack:
            guard case .connack(let c) = packet else {
                if case .auth(let a) = packet {
                    handleAuth(a, now: now, into: &actions)
                } else {
                    protocolViolation("expected CONNACK, received \(packet.type)", into: &actions)  // [MQTT-3.2.0-1]
                }
                return
            }
            handleConnack(c, now: now, into: &actions)
        case .up:
            handleConnected(packet, now: now, into: &actions)
        case .down, .closing:
            return
        }
    }

    private mutating func handleConnack(_ c: MQTTPacket.Connack, now: UInt64, into actions: inout [Action]) {
        guard c.returnCode == 0 else {
            state = .closing
            actions.append(.close(.connectionRefused(code: c.returnCode, properties: c.properties)))
            return
        }
        let p = c.properties
        let v5 = options.version == .v5_0
        if v5, let auth = options.authenticator {
            do {
                try auth.finish(p.authenticationData.map { Array($0.readableBytesView) })
            } catch {
                // Accepted by the broker, but the broker failed our check of it (e.g. its SCRAM
                // signature): we leave with DISCONNECT 0x80 and our reason.
                state = .up
                info = nil
                failAuthentication("authenticator \(auth.method) rejected the broker's final data: \(error)", into: &actions)
                return
            }
        }
        let newInfo = ConnectionInfo(
            sessionPresent: c.sessionPresent,
            // 5.0 §3.2.2.3.14: Server Keep Alive replaces ours.
            keepAliveSeconds: v5 ? (p.serverKeepAlive ?? options.keepAliveSeconds) : options.keepAliveSeconds,
            receiveMaximum: Int(p.receiveMaximum ?? 65_535),
            maximumPacketSize: Int(p.maximumPacketSize ?? 268_435_460),
            maximumQoS: QoS(rawValue: p.maximumQoS ?? 2) ?? .exactlyOnce,
            retainAvailable: (p.retainAvailable ?? 1) == 1,
            assignedClientID: p.assignedClientIdentifier,
            properties: p)
        info = newInfo
        state = .up
        if let assigned = p.assignedClientIdentifier, options.clientID.isEmpty {
            // 5.0 §3.2.2.3.7: reconnect with the identifier the server assigned.
            options.clientID = assigned
        }
        if !c.sessionPresent {
            // The broker has no state for us: incoming QoS 2 ids are forgotten on its side too.
            incomingQoS2.removeAll()
        }
        // Unacknowledged flows first ([MQTT-4.4.0-1]); the owner then restores its subscriptions
        // and calls `sendQueued`, so queued messages never overtake the subscriptions.
        resend(sessionPresent: c.sessionPresent, now: now, into: &actions)
        actions.append(.connected(newInfo))
        actions.append(.flush)
    }

    /// Sends queued publishes as far as the in-flight window allows (after `.connected`).
    public mutating func sendQueued(now: UInt64, into actions: inout [Action]) {
        guard state == .up else { return }
        sendPending(now: now, into: &actions)
    }

    /// [MQTT-4.4.0-1] with a session present, unacknowledged PUBLISH (DUP set, [MQTT-3.3.1-1]) and
    /// PUBREL are resent with their original identifiers, in their original order [MQTT-4.6.0-1..4].
    /// Without a session the broker forgot them, and every flow is sent again as a new
    /// publication, QoS 2 flows past PUBREC included: a broker that releases QoS 2 messages at
    /// PUBREL (mosquitto does) lost those with the session, and a duplicate is better than a loss.
    private mutating func resend(sessionPresent: Bool, now: UInt64, into actions: inout [Action]) {
        guard !outgoing.isEmpty else { return }
        timed = nil
        let flows = outgoing.sorted { $0.value.order < $1.value.order }
        for (id, flow) in flows {
            switch flow.state {
            case .awaitingPuback, .awaitingPubrec:
                var p = flow.publish
                p.dup = sessionPresent
                outgoing[id]!.publish.dup = true
                send(.publish(aliased(p)), now: now, into: &actions)
            case .awaitingPubcomp:
                if sessionPresent {
                    send(.ack(.init(.pubrel, packetID: id)), now: now, into: &actions)
                } else {
                    var p = flow.publish
                    p.dup = false
                    outgoing[id]!.state = .awaitingPubrec
                    send(.publish(aliased(p)), now: now, into: &actions)
                }
            }
        }
    }

    private func violatesBrokerLimits(_ p: MQTTPacket.Publish) -> String? {
        guard let info else { return nil }
        // The owner checks its own limit when the message is accepted; the size is worked out
        // again only when the broker announced a limit (not on the hot path: mosquitto does not).
        if info.maximumPacketSize < 268_435_460,
            case let size = MQTTPacket.publish(p).encodedSize(version: options.version) + (p.qos == .atMostOnce ? 2 : 0),
            size > info.maximumPacketSize
        {
            return "message of \(size) bytes on \"\(p.topic)\" exceeds the broker's Maximum Packet Size \(info.maximumPacketSize)"
        }
        if p.qos > info.maximumQoS {
            return "broker accepts at most \(info.maximumQoS), message on \"\(p.topic)\" asked for \(p.qos)"
        }
        if p.retain && !info.retainAvailable {
            return "broker does not support retained messages (Retain Available 0); publish on \"\(p.topic)\" with retain false"
        }
        return nil
    }

    /// A QoS 1/2 message can take a packet identifier now ([MQTT-4.9.0-2] the receive maximum:
    /// at most `window` in flight); a QoS 0 message always can.
    private func hasRoom(for qos: QoS) -> Bool {
        qos == .atMostOnce || (outgoing.count < window && identifiersInUse < Int(UInt16.max))
    }

    private mutating func sendPending(now: UInt64, into actions: inout [Action]) {
        var sent = false
        // Taken off the queue and put back if the window is full: `pending.first` copied every
        // message once more just to look at its QoS.
        while var p = pending.popFirst() {
            guard hasRoom(for: p.publish.qos) else {
                pending.prepend(p)
                break
            }
            if send(&p, now: now, limitsChecked: false, into: &actions) { sent = true }
        }
        if sent { actions.append(.flush) }
    }

    /// Sends one message that has room in the window (or ends it, if the broker's limits or its
    /// expiry say so); true when it went out. `limitsChecked`: the broker's limits were checked
    /// against it as it is now (again only if the preparer changes its payload).
    private mutating func send(_ p: inout Pending, now: UInt64, limitsChecked: Bool, into actions: inout [Action]) -> Bool {
        if hasPreparer { prepare(&p.publish) }
        if !limitsChecked || hasPreparer, let problem = violatesBrokerLimits(p.publish) {
            finish(p.token, qos: p.publish.qos, .failure(.brokerLimit(problem)), into: &actions)
            return false
        }
        if let expiry = p.publish.properties.messageExpiryInterval {
            // 5.0 §3.3.2.3.3: a message past its expiry is not sent; one sent later than
            // accepted carries the time it has left.
            let waited = UInt32(clamping: (now &- p.acceptedAt) / 1_000_000_000)
            if waited >= expiry {
                finish(p.token, qos: p.publish.qos, .failure(.expired(seconds: expiry)), into: &actions)
                return false
            }
            p.publish.properties.messageExpiryInterval = expiry - waited
        }
        if p.publish.qos == .atMostOnce {
            send(.publish(aliased(p.publish)), now: now, into: &actions)
            actions.append(.qos0Sent(p.token))
        } else {
            let id = allocateID()!  // `hasRoom`: an identifier is free
            p.publish.packetID = id
            p.publish.dup = false
            order &+= 1
            outgoing[id] = OutFlow(
                publish: p.publish, state: p.publish.qos == .atLeastOnce ? .awaitingPuback : .awaitingPubrec,
                token: p.token, order: order)
            if p.publish.qos == .exactlyOnce { actions.append(.assigned(p.token, packetID: id)) }
            if options.timeRoundTrips && timed == nil { timed = (id, now) }
            send(.publish(aliased(p.publish)), now: now, into: &actions)
        }
        return true
    }

    /// The preparer's payload, if it has one for this message (once, before its first transmission).
    private func prepare(_ p: inout MQTTPacket.Publish) {
        guard let preparer = options.preparer, let payload = preparer.prepare(topic: p.topic, payload: p.payload) else { return }
        p.payload = payload
    }

    /// [MQTT-2.3.1-2] an identifier is not reused while its flow is open; ids run 1...65535.
    /// nil when every one is in use (never a search without end).
    private mutating func allocateID() -> UInt16? {
        guard identifiersInUse < Int(UInt16.max) else { return nil }
        while true {
            let id = nextID
            nextID = nextID == .max ? 1 : nextID + 1
            // `index(forKey:)`: a lookup without copying the flow out
            if outgoing.index(forKey: id) == nil && subscribes.index(forKey: id) == nil && unsubscribes.index(forKey: id) == nil {
                return id
            }
        }
    }

    static var exhausted: String {
        "all 65,535 packet identifiers are in use by unanswered SUBSCRIBE/UNSUBSCRIBE and in-flight publishes; retry when the broker has answered"
    }

    private mutating func send(_ packet: MQTTPacket, now: UInt64, into actions: inout [Action]) {
        lastSent = now
        actions.append(.send(packet))
    }

    /// 5.0 [MQTT-4.13.2-1]: a protocol error we detect is answered with DISCONNECT carrying the
    /// reason code (and our reason string) before the connection closes.
    /// The decoder refused what the broker sent. 5.0: DISCONNECT with the reason before the close
    /// [MQTT-4.13.2-1]: packet too large for a packet above the Maximum Packet Size we announced,
    /// else malformed packet.
    public mutating func decodeFailed(_ error: MQTTDecodeError, into actions: inout [Action]) {
        let code: ReasonCode = if case .packetTooLarge = error { .packetTooLarge } else { .malformedPacket }
        protocolViolation("\(error)", code: code.rawValue, into: &actions)
    }

    private mutating func protocolViolation(_ what: String, code: UInt8 = 0x82, into actions: inout [Action]) {
        if options.version == .v5_0 && state == .up {
            var props = MQTTProperties()
            props.reasonString = String(what.prefix(200))
            actions.append(.send(.disconnect(.init(reasonCode: code, properties: props))))
            actions.append(.flush)
        }
        state = .closing
        actions.append(.close(.protocolViolation(what, code: code)))
    }

    /// The wire form of an outgoing PUBLISH with a 5.0 topic alias (§3.3.2.3.4): a topic used a
    /// second time gets the next free alias (sent once with the topic), later uses send the alias
    /// and an empty topic. Aliases stay within the broker's Topic Alias Maximum [MQTT-3.3.2-9] and
    /// belong to this connection only [MQTT-3.3.2-7]; what is kept for resending has the topic.
    private mutating func aliased(_ publish: MQTTPacket.Publish) -> MQTTPacket.Publish {
        guard options.outgoingTopicAliases, options.version == .v5_0, let info,
            let maximum = info.properties.topicAliasMaximum, maximum > 0
        else { return publish }
        var p = publish
        if let alias = outgoingAliases[p.topic] {
            p.properties.topicAlias = alias
            p.topic = ""
            return p
        }
        guard outgoingAliases.count < Int(maximum) else { return publish }
        let uses = topicUses[p.topic, default: 0] + 1
        guard uses >= 2 else {
            if topicUses.count >= 4 * Int(maximum) + 64 { topicUses.removeAll() }  // bounded memory
            topicUses[p.topic] = uses
            return publish
        }
        topicUses[p.topic] = nil
        let alias = UInt16(outgoingAliases.count + 1)
        outgoingAliases[p.topic] = alias
        p.properties.topicAlias = alias
        return p
    }

    private mutating func handleConnected(_ packet: MQTTPacket, now: UInt64, into actions: inout [Action]) {
        let v5 = options.version == .v5_0
        switch packet {
        case .publish(var p):
            if let alias = p.properties.topicAlias {
                // §3.3.2.3.4: 0 or above the maximum we announced is 0x94 [MQTT-3.3.2-10];
                // an alias with an empty topic must have been set on this connection.
                guard v5, alias >= 1, alias <= options.topicAliasMaximum else {
                    protocolViolation(
                        "topic alias \(alias) outside 1...\(options.topicAliasMaximum), the maximum we announced", code: 0x94,
                        into: &actions)
                    return
                }
                if p.topic.isEmpty {
                    guard let topic = incomingAliases[alias] else {
                        protocolViolation("PUBLISH with topic alias \(alias), which was never set on this connection", into: &actions)
                        return
                    }
                    p.topic = topic
                } else {
                    incomingAliases[alias] = p.topic
                }
            }
            if v5, p.qos == .exactlyOnce, !incomingQoS2.contains(p.packetID!), incomingQoS2.count >= Int(options.receiveMaximum) {
                // §3.3.4: more unacknowledged QoS 2 publishes than our Receive Maximum.
                protocolViolation(
                    "more than \(options.receiveMaximum) QoS 2 publishes without PUBREL (our Receive Maximum)", code: 0x93, into: &actions)
                return
            }
            switch p.qos {
            case .atMostOnce:
                actions.append(.deliver(p))
            case .atLeastOnce:
                // [MQTT-4.3.2-2] PUBACK with the same identifier, after the message is handed over.
                actions.append(.deliver(p))
                send(.ack(.init(.puback, packetID: p.packetID!)), now: now, into: &actions)
                actions.append(.flush)
            case .exactlyOnce:
                // [MQTT-4.3.3-2] PUBREC; deliver only the first time the identifier is seen until
                // PUBREL releases it (method B of 4.3.3: exactly once to the application).
                let id = p.packetID!
                if incomingQoS2.insert(id).inserted { actions.append(.deliver(p)) }
                send(.ack(.init(.pubrec, packetID: id)), now: now, into: &actions)
                actions.append(.flush)
            }
        case .ack(let a):
            handleAck(a, v5: v5, now: now, into: &actions)
        case .suback(let s):
            guard let token = subscribes.removeValue(forKey: s.packetID) else {
                protocolViolation("SUBACK for unknown packet identifier \(s.packetID)", into: &actions)
                return
            }
            actions.append(.subscribeCompleted(token, .success(s.reasonCodes)))
        case .unsuback(let u):
            guard let token = unsubscribes.removeValue(forKey: u.packetID) else {
                protocolViolation("UNSUBACK for unknown packet identifier \(u.packetID)", into: &actions)
                return
            }
            if let bad = u.reasonCodes.first(where: { $0 >= 0x80 }) {
                actions.append(
                    .unsubscribeCompleted(token, .failure(.rejected(packet: .unsuback, code: bad, reason: u.properties.reasonString))))
            } else {
                actions.append(.unsubscribeCompleted(token, .success(())))
            }
        case .pingresp:
            break
        case .disconnect(let d):
            state = .closing
            actions.append(
                .close(
                    .serverDisconnected(
                        code: d.reasonCode, reason: d.properties.reasonString, serverReference: d.properties.serverReference)))
        case .auth(let a):
            handleAuth(a, now: now, into: &actions)
        case .connect, .connack, .subscribe, .unsubscribe, .pingreq:
            // [MQTT-3.2.0-2] a second CONNACK, or a client-only packet, is a protocol violation.
            protocolViolation("broker sent \(packet.type), which a server never sends to a connected client", into: &actions)
        }
    }

    /// A PUBLISH the frame reader skipped as too large (3.1.1 only). Acknowledged as if delivered:
    /// left unacknowledged it would hold one of the broker's in-flight slots and come back after
    /// every reconnect, never fitting. QoS 2 keeps its identifier until PUBREL like any other.
    public mutating func droppedPublish(_ d: DroppedPublish, now: UInt64, into actions: inout [Action]) {
        lastReceived = now
        guard state == .up else {
            if state == .awaitingConnack { protocolViolation("expected CONNACK, received PUBLISH", into: &actions) }  // [MQTT-3.2.0-1]
            return
        }
        actions.append(.droppedIncoming(d))
        switch d.qos {
        case .atMostOnce: return
        case .atLeastOnce: send(.ack(.init(.puback, packetID: d.packetID!)), now: now, into: &actions)
        case .exactlyOnce:
            incomingQoS2.insert(d.packetID!)
            send(.ack(.init(.pubrec, packetID: d.packetID!)), now: now, into: &actions)
        }
        actions.append(.flush)
    }

    private mutating func handleAck(_ a: MQTTPacket.Ack, v5: Bool, now: UInt64, into actions: inout [Action]) {
        switch a.kind {
        case .pubrel:
            // 3.1.1 [MQTT-4.3.3-2] / 5.0 [MQTT-4.3.3-11]: answer PUBREL with PUBCOMP of the same
            // identifier; after it the identifier is free for a new message [5.0 MQTT-4.3.3-12].
            let known = incomingQoS2.remove(a.packetID) != nil
            let code: UInt8 = (known || !v5) ? 0 : 0x92  // 5.0: packet identifier not found
            send(.ack(.init(.pubcomp, packetID: a.packetID, reasonCode: code)), now: now, into: &actions)
            actions.append(.flush)
            return
        case .puback, .pubrec, .pubcomp:
            break
        }
        // Found once; read, changed and removed through its index (each subscript by key hashed
        // the identifier again).
        guard let slot = outgoing.index(forKey: a.packetID) else {
            // A stale ack after a resend is harmless for QoS 1; for QoS 2 a PUBREC for an unknown id
            // is answered with PUBREL so the broker can finish ([MQTT-4.3.3] / 5.0 0x92).
            if a.kind == .pubrec {
                send(.ack(.init(.pubrel, packetID: a.packetID, reasonCode: v5 ? 0x92 : 0)), now: now, into: &actions)
                actions.append(.flush)
            }
            return
        }
        let flow = outgoing.values[slot]
        if let t = timed, t.id == a.packetID {
            timed = nil
            actions.append(.roundTrip(.publish, nanoseconds: now &- t.sentAt))
        }
        let failed = a.reasonCode >= 0x80
        switch (a.kind, flow.state) {
        case (.puback, .awaitingPuback):
            outgoing.remove(at: slot)
            complete(flow, code: a.reasonCode, reason: a.properties.reasonString, packet: .puback, into: &actions)
        case (.pubrec, .awaitingPubrec), (.pubrec, .awaitingPubcomp):
            if failed {
                // 5.0 [MQTT-4.3.3-4]: a PUBREC with a failure code ends the flow: no PUBREL.
                outgoing.remove(at: slot)
                complete(flow, code: a.reasonCode, reason: a.properties.reasonString, packet: .pubrec, into: &actions)
            } else {
                // 3.1.1 [MQTT-4.3.3-1] / 5.0 [MQTT-4.3.3-4]: on PUBREC send PUBREL with the same
                // identifier; the message is not sent again from now on, only the PUBREL.
                outgoing.values[slot].state = .awaitingPubcomp
                send(.ack(.init(.pubrel, packetID: a.packetID)), now: now, into: &actions)
                actions.append(.flush)
            }
        case (.pubcomp, .awaitingPubcomp):
            outgoing.remove(at: slot)
            complete(flow, code: a.reasonCode, reason: a.properties.reasonString, packet: .pubcomp, into: &actions)
        default:
            protocolViolation(
                "\(a.kind.packetType) for packet identifier \(a.packetID), which is waiting for \(flow.state)", into: &actions)
            return
        }
        // A slot in the window opened: send what waits.
        if !pending.isEmpty { sendPending(now: now, into: &actions) }
    }

    /// Starts a re-authentication (§4.12.1): AUTH 0x19 with the method and fresh data; the
    /// connection carries on meanwhile. Returns a reason when it cannot start.
    public mutating func reauthenticate(now: UInt64, into actions: inout [Action]) -> String? {
        guard options.version == .v5_0, let auth = options.authenticator else {
            return "re-authentication needs MQTT 5.0 and an authenticator (enhanced authentication)"
        }
        guard state == .up else { return "not connected" }
        guard !reauthenticating else { return "a re-authentication is already under way" }
        var props = MQTTProperties()
        props.authenticationMethod = auth.method
        do {
            props.authenticationData = try auth.start().map { ByteBuffer(bytes: $0) }
        } catch {
            return "authenticator \(auth.method) could not start: \(error)"
        }
        reauthenticating = true
        send(.auth(.init(reasonCode: 0x19, properties: props)), now: now, into: &actions)
        actions.append(.flush)
        return nil
    }

    /// AUTH from the broker: 0x18 carries a challenge while connecting or re-authenticating,
    /// 0x00 ends a re-authentication. Anything else, or another method, breaks §4.12.
    private mutating func handleAuth(_ a: MQTTPacket.Auth, now: UInt64, into actions: inout [Action]) {
        guard options.version == .v5_0, let auth = options.authenticator else {
            protocolViolation("AUTH received but no authentication method was configured", into: &actions)
            return
        }
        guard state == .awaitingConnack || reauthenticating else {
            protocolViolation("AUTH received outside an authentication exchange", into: &actions)
            return
        }
        // [MQTT-4.12.0-5] the method is the one of CONNECT.
        guard a.properties.authenticationMethod == auth.method else {
            protocolViolation(
                "AUTH with method \(a.properties.authenticationMethod ?? "none"), we use \(auth.method)", into: &actions)
            return
        }
        let data = a.properties.authenticationData.map { Array($0.readableBytesView) }
        switch a.reasonCode {
        case 0x18:
            do {
                var props = MQTTProperties()
                props.authenticationMethod = auth.method
                props.authenticationData = try auth.respond(to: data ?? []).map { ByteBuffer(bytes: $0) }
                send(.auth(.init(reasonCode: 0x18, properties: props)), now: now, into: &actions)
                actions.append(.flush)
            } catch {
                failAuthentication("authenticator \(auth.method) could not answer the broker's challenge: \(error)", into: &actions)
            }
        case 0x00 where reauthenticating:
            reauthenticating = false
            do {
                try auth.finish(data)
                actions.append(.reauthenticated)
            } catch {
                failAuthentication("authenticator \(auth.method) rejected the broker's final data: \(error)", into: &actions)
            }
        default:
            protocolViolation("AUTH with reason code \(hexByte(a.reasonCode)) in this state", into: &actions)
        }
    }

    private mutating func failAuthentication(_ what: String, into actions: inout [Action]) {
        if state == .up {
            var props = MQTTProperties()
            props.reasonString = String(what.prefix(200))
            actions.append(.send(.disconnect(.init(reasonCode: 0x80, properties: props))))
            actions.append(.flush)
        }
        state = .closing
        actions.append(.close(.authentication(what)))
    }

    private func complete(_ flow: OutFlow, code: UInt8, reason: String?, packet: PacketType, into actions: inout [Action]) {
        if code >= 0x80 {
            finish(flow.token, qos: flow.publish.qos, .failure(.rejected(packet: packet, code: code, reason: reason)), into: &actions)
        } else {
            if code != 0 { actions.append(.acknowledgedWithReason(packet, code: code, reason: reason)) }
            finish(flow.token, qos: flow.publish.qos, .success(()), into: &actions)
        }
    }

    /// A publish ended.
    private func finish(_ token: Token, qos: QoS, _ result: Result<Void, Failure>, into actions: inout [Action]) {
        actions.append(.publishCompleted(token, result, qos: qos))
    }
}

/// What the broker granted in CONNACK.
public struct MQTTConnectionInfo: Sendable, Equatable {
    public var sessionPresent: Bool
    public var keepAliveSeconds: UInt16
    public var receiveMaximum: Int
    public var maximumPacketSize: Int
    public var maximumQoS: QoS
    public var retainAvailable: Bool
    public var assignedClientID: String?
    public var properties: MQTTProperties
}
