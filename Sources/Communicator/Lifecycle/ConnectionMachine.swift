import Logging

/// The connection's lifecycle as a value: which broker to dial next, when to wait and how long,
/// when to give up. Events in (`handle`), actions out; no sockets, no timers, no clock of its own
/// (time comes with each event, randomness from a seeded generator). `ClientCore` carries out
/// the actions: it dials, runs the back-off timer, and drives the `SessionMachine` on each link.
///
/// What it owns: the rounds over the configured brokers (failover), 5.0 Server Reference
/// (§4.11: 0x9C "use another server", 0x9D "server moved"), the 3.1.1 session hop
/// ([MQTT-3.1.2-6]: a clean session that must outlive a dropped link is opened clean, left, and
/// resumed with Clean Session 0), the fallback from 5.0 to 3.1.1, the reconnect back-off
/// (exponential, jittered) and `maxReconnectAttempts`.
struct ConnectionMachine {
    struct Settings: Sendable {
        var brokers: [BrokerEndpoint]
        var order: MQTTConfig.BrokerOrder = .inOrder
        var serverReferenceAllowList: [String] = []
        /// 0 = forever.
        var maxReconnectAttempts: Int = 0
        var reconnectInitialDelay: Double = 1
        var reconnectMaxDelay: Double = 60
        var fallbackToV311: Bool = false
        /// A failed first connect and a refused password back off and try again.
        var keepConnecting: Bool = false
        var version: MQTTVersion = .v5_0
        var cleanStart: Bool = true
        var sessionExpiryInterval: UInt32 = 0
    }

    /// One connection attempt's target and the session options it connects with.
    struct Dial: Equatable, Sendable {
        var broker: BrokerEndpoint
        var version: MQTTVersion
        var cleanStart: Bool
    }

    /// A round tries each broker once, without waiting in between.
    struct Round: Equatable {
        var order: [BrokerEndpoint]
        var index = 0
        /// "broker: why" of each broker of this round that failed before the current one.
        var errors: [String] = []
        /// A Server Reference to try next, and how many were followed this round.
        var redirect: BrokerEndpoint?
        var redirects = 0
    }

    enum Hop: Equatable {
        case none
        /// Connect clean first, then hop to a persistent session.
        case pending
        /// Left the clean session; the next dial resumes it.
        case hopping
    }

    /// One run of `connect()`: from the first dial until given up or disconnected.
    struct Run: Equatable {
        var dial: Dial
        var round: Round
        var hop: Hop
        /// Reconnect attempts since the last CONNACK accepted (0 until the first loss).
        var reconnects = 0
        /// A CONNACK was accepted since `connect()`: failures from now on reconnect.
        var everConnected = false
        var triedFallback = false
    }

    enum State: Equatable {
        /// Not asked to connect, or disconnected on request.
        case idle
        case connecting(Run)
        case connected(Run)
        /// Waiting before the next round; `until` in the caller's nanoseconds.
        case backingOff(Run, until: UInt64)
        /// Asked to disconnect; the link is closing.
        case disconnecting
        /// Given up, or the first connect failed (`connect()` can start again).
        case stopped(reason: String)
    }

    /// Why an attempt or a link ended, as the driver saw it.
    struct Ending {
        /// nil: the broker closed the connection without saying why.
        var error: (any CommunicatorError)?

        /// The broker refused the protocol version (5.0 CONNACK "unsupported protocol version").
        var versionRefused: Bool { error?.reason == .connackRefused(.unsupportedProtocolVersion) }
    }

    enum Event {
        case connect
        /// `linkOpen`: a channel exists (it gets a DISCONNECT and is closed); else the attempt is abandoned.
        case disconnect(linkOpen: Bool)
        /// CONNACK accepted the session.
        case accepted
        /// A Server Reference in a CONNACK or DISCONNECT (0x9D: `moved`), before the link ends.
        case referred(to: String, moved: Bool)
        /// The attempt failed or the link closed.
        case ended(Ending)
        case backoffElapsed
    }

    enum Action {
        /// Connect the session with these options (and arm the connect timeout).
        case dial(Dial)
        /// The clean 3.1.1 session is open: leave it (DISCONNECT) to come back with Clean Session 0.
        case hop
        /// The session is up: start it (keep-alive, subscriptions, queued messages).
        case up
        case report(ConnectionState)
        case scheduleRetry(after: Double)
        case cancelRetry
        /// Send DISCONNECT and close the link (a user disconnect).
        case closeLink
        /// Forget the attempt under way (its late result is closed) and its timeout.
        case abandonAttempt
        /// Fail every message waiting in the session (no connection will take them).
        case failQueued
        /// The callers of `connect()` waiting: connected.
        case connectSucceeded
        /// The callers of `connect()` waiting: not connected, for this reason.
        case connectFailed(any CommunicatorError)
        /// The callers of `disconnect()` waiting: done.
        case disconnectFinished
        /// Stopped reconnecting for good with this error.
        case gaveUp(any CommunicatorError)
        case log(Logger.Level, String)
    }

    let settings: Settings
    private(set) var state: State = .idle
    /// The brokers in the order a round tries them (a 0x9D "server moved" puts its target first).
    private(set) var preferred: [BrokerEndpoint]
    /// The session's options for the next dial: 3.1.1 after a fallback; Clean Start 0 once a
    /// session was accepted ([MQTT-3.1.2-4] / 5.0 §3.1.2.4: later connects resume it).
    private(set) var version: MQTTVersion
    private(set) var cleanStart: Bool
    private var random: SplitMix64

    init(settings: Settings, seed: UInt64) {
        precondition(!settings.brokers.isEmpty, "at least one broker")
        self.settings = settings
        preferred = settings.brokers
        version = settings.version
        cleanStart = settings.cleanStart
        random = SplitMix64(seed: seed)
    }

    /// The broker of the current (or last) attempt.
    var broker: BrokerEndpoint? {
        switch state {
        case .connecting(let r), .connected(let r), .backingOff(let r, _): r.dial.broker
        default: nil
        }
    }

    var wantsConnection: Bool {
        switch state {
        case .connecting, .connected, .backingOff: true
        default: false
        }
    }

    private var needsSessionHop: Bool { version == .v3_1_1 && cleanStart && settings.sessionExpiryInterval > 0 }

    mutating func handle(_ event: Event, now: UInt64, into actions: inout [Action]) {
        switch (event, state) {
        case (.connect, .connected):
            actions.append(.connectSucceeded)
        case (.connect, .connecting), (.connect, .backingOff):
            break  // an attempt or a back-off is under way: the caller waits for it
        case (.connect, _):
            let round = newRound()
            let run = Run(
                dial: Dial(broker: round.order[0], version: version, cleanStart: cleanStart), round: round,
                hop: needsSessionHop ? .pending : .none)
            dial(run, into: &actions)

        case (.disconnect(let linkOpen), let s):
            if case .backingOff = s { actions.append(.cancelRetry) }
            if linkOpen {
                state = .disconnecting
                actions.append(.closeLink)
                return
            }
            state = .idle
            actions.append(.abandonAttempt)
            if case .backingOff = s { actions.append(.failQueued) }
            finishDisconnect(into: &actions)

        case (.accepted, .connecting(var run)):
            if run.hop == .pending {
                run.hop = .hopping
                cleanStart = false
                state = .connecting(run)
                actions.append(.hop)
                return
            }
            run.hop = .none
            run.everConnected = true
            run.reconnects = 0
            cleanStart = false
            state = .connected(run)
            actions.append(contentsOf: [.up, .report(.connected), .connectSucceeded])
        case (.accepted, _):
            break

        case (.referred(let reference, let moved), .connecting(var run)), (.referred(let reference, let moved), .connected(var run)):
            let wasConnected = if case .connected = state { true } else { false }
            refer(&run, to: reference, moved: moved, into: &actions)
            state = wasConnected ? .connected(run) : .connecting(run)
        case (.referred, _):
            break

        case (.ended, .disconnecting):
            state = .idle
            finishDisconnect(into: &actions)
        case (.ended(let ending), .connecting(var run)):
            if run.hop == .hopping {
                run.hop = .none
                run.dial.cleanStart = cleanStart
                dial(run, into: &actions)
                return
            }
            ended(run, ending, connected: false, now: now, into: &actions)
        case (.ended(let ending), .connected(let run)):
            ended(run, ending, connected: true, now: now, into: &actions)
        case (.ended, _):
            break

        case (.backoffElapsed, .backingOff(var run, _)):
            run.round = newRound()
            run.dial = Dial(broker: run.round.order[0], version: version, cleanStart: cleanStart)
            dial(run, into: &actions)
        case (.backoffElapsed, _):
            break
        }
    }

    // MARK: - Steps

    private mutating func newRound() -> Round {
        var order = preferred
        if settings.order == .random { order.shuffle(using: &random) }
        return Round(order: order)
    }

    private mutating func dial(_ run: Run, into actions: inout [Action]) {
        var run = run
        run.dial.version = version
        run.dial.cleanStart = cleanStart
        state = .connecting(run)
        actions.append(.report(.connecting))
        actions.append(.dial(run.dial))
    }

    private mutating func finishDisconnect(into actions: inout [Action]) {
        actions.append(
            .connectFailed(ProtocolConnectionError("disconnect() was called before the connection was up", reason: .notConnected)))
        actions.append(.report(.disconnected(reason: "disconnect requested")))
        actions.append(.disconnectFinished)
    }

    /// §4.11: only towards a configured broker or an allowed host, never followed blindly.
    private mutating func refer(_ run: inout Run, to reference: String, moved: Bool, into actions: inout [Action]) {
        let current = run.dial.broker
        let allowed = { (b: BrokerEndpoint) in
            // `preferred` holds every configured broker (a 0x9D only reorders it).
            self.preferred.contains(b) || self.settings.serverReferenceAllowList.contains { $0 == b.host || $0 == b.description }
        }
        guard let target = BrokerEndpoint.references(reference, defaultPort: current.port).first(where: allowed) else {
            actions.append(
                .log(
                    .error,
                    "broker \(current) sent Server Reference \"\(reference)\" (\(moved ? "server moved" : "use another server")), which is neither a configured broker nor in server_reference_allow_list: ignored"
                ))
            return
        }
        run.round.redirect = target
        if moved {
            preferred.removeAll { $0 == target }
            preferred.insert(target, at: 0)
            actions.append(.log(.warning, "broker \(current) has moved to \(target) (0x9D): connecting there, now and on later rounds"))
        } else {
            actions.append(.log(.warning, "broker \(current) asks to use \(target) instead (0x9C): connecting there"))
        }
    }

    /// The attempt or the link ended: the next broker at once, a fallback, a back-off, or the end.
    private mutating func ended(_ run: Run, _ ending: Ending, connected: Bool, now: UInt64, into actions: inout [Action]) {
        var run = run
        let current = run.dial.broker
        let reason = ending.error?.message ?? "connection closed by the broker"
        // A Server Reference first (a bounded number of them per round), then the round's next broker.
        if let target = run.round.redirect {
            run.round.redirect = nil
            if run.round.redirects < 2 * preferred.count + 2 {
                run.round.redirects += 1
                run.dial.broker = target
                dial(run, into: &actions)
                return
            }
            actions.append(.log(.error, "broker redirects keep going round (last to \(target)): waiting for the next round"))
        }
        if !connected, run.round.index + 1 < run.round.order.count {
            run.round.errors.append("\(current): \(reason)")
            run.round.index += 1
            let next = run.round.order[run.round.index]
            actions.append(.log(.warning, "broker \(current) failed (\(reason)); trying \(next)"))
            run.dial.broker = next
            dial(run, into: &actions)
            return
        }
        var firstFailure: (any CommunicatorError)?
        if !run.everConnected {
            if ending.versionRefused, settings.fallbackToV311, version == .v5_0, !run.triedFallback {
                run.triedFallback = true
                actions.append(.log(.warning, "broker refused MQTT 5.0 (\(reason)); falling back to 3.1.1 as configured"))
                version = .v3_1_1
                run.hop = needsSessionHop ? .pending : .none
                dial(run, into: &actions)
                return
            }
            var error = ending.error ?? ProtocolConnectionError("connection to \(current) closed before CONNACK", reason: .connectionLost)
            if !run.round.errors.isEmpty {
                error = ProtocolConnectionError(
                    "no broker accepted the connection: " + (run.round.errors + ["\(current): \(error.message)"]).joined(separator: "; "),
                    code: error.code, reason: error.reason)
            }
            guard settings.keepConnecting else {
                state = .stopped(reason: error.message)
                actions.append(.report(.disconnected(reason: error.message)))
                actions.append(.connectFailed(error))
                return
            }
            firstFailure = error
            actions.append(.log(.warning, "MQTT cannot connect: \(error.message)"))
        } else {
            actions.append(.log(.warning, "MQTT connection lost: \(reason)"))
        }
        if let error = ending.error, error is ProtocolAuthenticationError, !settings.keepConnecting {
            giveUp(error, into: &actions)
            return
        }
        run.reconnects += 1
        if settings.maxReconnectAttempts > 0 && run.reconnects > settings.maxReconnectAttempts {
            giveUp(
                ProtocolConnectionError(
                    "gave up after \(settings.maxReconnectAttempts) reconnect attempts to \(preferred.map(\.description).joined(separator: ", ")); last error: \(ending.error?.message ?? "connection lost")",
                    reason: .gaveUp),
                into: &actions)
            return
        }
        let delay = backoff(run.reconnects)
        state = .backingOff(run, until: now &+ UInt64(delay * 1e9))
        actions.append(.report(.reconnecting(attempt: run.reconnects, nextDelay: delay)))
        actions.append(.scheduleRetry(after: delay))
        // keepConnecting: the callers of connect() get the error after the state says what comes next.
        if let firstFailure { actions.append(.connectFailed(firstFailure)) }
    }

    /// Exponential from `reconnectInitialDelay`, capped at `reconnectMaxDelay`, ±20% so that a
    /// fleet that lost its broker at once does not come back at once.
    private mutating func backoff(_ attempt: Int) -> Double {
        let base = min(settings.reconnectMaxDelay, settings.reconnectInitialDelay * Double(1 << min(attempt - 1, 30)))
        return base * Double.random(in: 0.8...1.2, using: &random)
    }

    private mutating func giveUp(_ error: any CommunicatorError, into actions: inout [Action]) {
        state = .stopped(reason: error.message)
        actions.append(.log(.error, "MQTT stopped reconnecting: \(error.message)"))
        actions.append(.gaveUp(error))
        actions.append(.report(.disconnected(reason: error.message)))
        actions.append(.connectFailed(error))
    }
}

/// A small seeded generator (SplitMix64): the machine's jitter and random order are reproducible
/// in tests, which use it too; the client seeds it from the system's generator.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
