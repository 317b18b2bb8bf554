import Testing

@testable import Communicator

/// The connection lifecycle, event by event: no sockets, no timers, a seeded generator.
struct ConnectionDriver {
    typealias Machine = ConnectionMachine
    var machine: Machine
    var now: UInt64 = 0

    init(_ settings: Machine.Settings, seed: UInt64 = 1) { machine = Machine(settings: settings, seed: seed) }

    mutating func on(_ event: Machine.Event) -> [Machine.Action] {
        var out: [Machine.Action] = []
        machine.handle(event, now: now, into: &out)
        return out
    }

    mutating func fail(_ message: String? = nil, versionRefused: Bool = false, auth: Bool = false) -> [Machine.Action] {
        let error: (any CommunicatorError)? = message.map {
            if auth { return ProtocolAuthenticationError($0) }
            // As the client maps a 5.0 CONNACK "unsupported protocol version".
            if versionRefused { return ProtocolError($0, reason: .connackRefused(.unsupportedProtocolVersion)) }
            return ProtocolConnectionError($0)
        }
        return on(.ended(.init(error: error)))
    }

    static func broker(_ n: Int) -> BrokerEndpoint { BrokerEndpoint(host: "b\(n)", port: 1883) }
}

extension Array where Element == ConnectionMachine.Action {
    var dials: [ConnectionMachine.Dial] { compactMap { if case .dial(let d) = $0 { d } else { nil } } }
    var dialed: [String] { dials.map(\.broker.host) }
    var reports: [ConnectionState] { compactMap { if case .report(let s) = $0 { s } else { nil } } }
    var retryDelay: Double? { lazy.compactMap { if case .scheduleRetry(let d) = $0 { d } else { nil } }.first }
    var connectError: String? { lazy.compactMap { if case .connectFailed(let e) = $0 { e.message } else { nil } }.first }
    var succeeded: Bool { contains { if case .connectSucceeded = $0 { true } else { false } } }
    var gaveUp: String? { lazy.compactMap { if case .gaveUp(let e) = $0 { e.message } else { nil } }.first }
    var logs: [String] { compactMap { if case .log(_, let m) = $0 { m } else { nil } } }
    func has(_ probe: (ConnectionMachine.Action) -> Bool) -> Bool { contains(where: probe) }
}

@Suite("Connection machine: failover, Server Reference, session hop, fallback, back-off")
struct ConnectionMachineTests {
    static let three = ConnectionMachine.Settings(brokers: [
        ConnectionDriver.broker(1), ConnectionDriver.broker(2), ConnectionDriver.broker(3),
    ])

    @Test("connect: the first broker; CONNACK: up, connected, the callers done; a second connect() is answered at once")
    func connects() {
        var d = ConnectionDriver(Self.three)
        let first = d.on(.connect)
        #expect(first.dialed == ["b1"] && first.reports == [.connecting])
        #expect(d.on(.connect).isEmpty, "an attempt under way: the caller waits for it")
        let up = d.on(.accepted)
        #expect(up.has { if case .up = $0 { true } else { false } } && up.reports == [.connected] && up.succeeded)
        #expect(d.on(.connect).succeeded)
        #expect(d.machine.cleanStart == false, "later connects resume the session")
    }

    @Test("failover: a failed attempt moves on to the next broker at once; when all fail, one error names each broker")
    func failover() {
        var d = ConnectionDriver(Self.three)
        _ = d.on(.connect)
        let second = d.fail("refused")
        #expect(second.dialed == ["b2"] && second.retryDelay == nil)
        #expect(second.logs == ["broker b1:1883 failed (refused); trying b2:1883"])
        #expect(d.fail("timeout").dialed == ["b3"])
        let last = d.fail("reset")
        #expect(last.dialed.isEmpty)
        #expect(last.connectError == "no broker accepted the connection: b1:1883: refused; b2:1883: timeout; b3:1883: reset")
        #expect(d.machine.state == .stopped(reason: last.connectError!))
        #expect(last.reports == [.disconnected(reason: last.connectError!)])
    }

    @Test("a lost link: back-off (no failover without waiting), then a new round from the first broker; the delay doubles to the cap, ±20%")
    func backoff() {
        var s = Self.three
        s.reconnectInitialDelay = 1
        s.reconnectMaxDelay = 5
        var d = ConnectionDriver(s)
        _ = d.on(.connect)
        _ = d.on(.accepted)
        var delays: [Double] = []
        var lost = d.fail("reset by peer")
        for _ in 0..<5 {
            #expect(lost.dialed.isEmpty, "a link that was up goes to the back-off, not the next broker")
            #expect(lost.logs.contains("MQTT connection lost: reset by peer"))
            guard let delay = lost.retryDelay else {
                Issue.record("no back-off: \(lost)")
                return
            }
            delays.append(delay)
            #expect(lost.reports == [.reconnecting(attempt: delays.count, nextDelay: delay)])
            let retry = d.on(.backoffElapsed)
            #expect(retry.dialed == ["b1"], "a new round")
            // The round's brokers fail one by one; the last one's failure backs off again.
            _ = d.fail("down")
            _ = d.fail("down")
            lost = d.fail("reset by peer")
        }
        let bases: [Double] = [1, 2, 4, 5, 5]
        for (delay, base) in zip(delays, bases) { #expect(delay >= base * 0.8 && delay <= base * 1.2, "\(delays)") }
        // Connected again: the count starts over.
        _ = d.on(.backoffElapsed)
        _ = d.on(.accepted)
        let again = d.fail("x")
        #expect(again.reports == [.reconnecting(attempt: 1, nextDelay: again.retryDelay ?? -1)])
    }

    @Test("max_reconnect_attempts: after that many reconnects the machine gives up, fails what waits and says why")
    func givesUp() {
        var s = ConnectionMachine.Settings(brokers: [ConnectionDriver.broker(1)])
        s.maxReconnectAttempts = 2
        var d = ConnectionDriver(s)
        _ = d.on(.connect)
        _ = d.on(.accepted)
        _ = d.fail("lost")
        _ = d.on(.backoffElapsed)
        _ = d.fail("refused")
        _ = d.on(.backoffElapsed)
        let end = d.fail("refused")
        #expect(end.gaveUp == "gave up after 2 reconnect attempts to b1:1883; last error: refused")
        #expect(end.connectError == end.gaveUp && end.retryDelay == nil)
        #expect(!d.machine.wantsConnection)
    }

    @Test("a refused password after a loss is not retried: someone must act")
    func authenticationStops() {
        var d = ConnectionDriver(ConnectionMachine.Settings(brokers: [ConnectionDriver.broker(1)]))
        _ = d.on(.connect)
        _ = d.on(.accepted)
        _ = d.fail("lost")
        _ = d.on(.backoffElapsed)
        let refused = d.fail("bad user name or password", auth: true)
        #expect(refused.gaveUp == "bad user name or password" && refused.retryDelay == nil)
    }

    @Test(
        "keepConnecting: a failed first connect backs off and tries again (its callers get the error after the state), and so does a refused password"
    )
    func keepConnecting() {
        var s = ConnectionMachine.Settings(brokers: [ConnectionDriver.broker(1)])
        s.keepConnecting = true
        var d = ConnectionDriver(s)
        _ = d.on(.connect)
        let first = d.fail("connection refused")
        #expect(first.connectError == "connection refused" && first.retryDelay != nil)
        let order = first.compactMap { a -> String? in
            switch a {
            case .report: "report"
            case .connectFailed: "failed"
            default: nil
            }
        }
        #expect(order == ["report", "failed"], "STATUS is offline before the caller hears of the failure: \(first)")
        #expect(first.logs == ["MQTT cannot connect: connection refused"])
        _ = d.on(.backoffElapsed)
        let refused = d.fail("bad user name or password", auth: true)
        #expect(refused.gaveUp == nil && refused.retryDelay != nil, "a password fixed on the broker is found on the next try")
        _ = d.on(.backoffElapsed)
        #expect(d.on(.accepted).succeeded)
        // Without it, the first failure is final (the seed's behaviour).
        var e = ConnectionDriver(ConnectionMachine.Settings(brokers: [ConnectionDriver.broker(1)]))
        _ = e.on(.connect)
        let once = e.fail("connection refused")
        #expect(once.retryDelay == nil && once.connectError == "connection refused" && !e.machine.wantsConnection)
    }

    @Test(
        "Server Reference 0x9C: the referred broker next, once; 0x9D: also first in later rounds; one not configured or allowed is ignored")
    func serverReference() {
        var s = Self.three
        s.serverReferenceAllowList = ["standby"]
        var d = ConnectionDriver(s)
        _ = d.on(.connect)
        #expect(
            d.on(.referred(to: "elsewhere:1883", moved: false)).logs.first?.contains(
                "neither a configured broker nor in server_reference_allow_list: ignored") == true)
        _ = d.on(.referred(to: "standby:1999", moved: false))
        #expect(d.fail("use another server").dialed == ["standby"])
        #expect(d.machine.broker == BrokerEndpoint(host: "standby", port: 1999))
        // The standby says the service moved to b3: b3 now, and b3 first from now on.
        _ = d.on(.accepted)
        let moved = d.on(.referred(to: "b3:1883", moved: true))  // without a port: the current broker's
        #expect(moved.logs == ["broker standby:1999 has moved to b3:1883 (0x9D): connecting there, now and on later rounds"])
        #expect(d.fail("server moved").dialed == ["b3"], "a redirect is followed at once, even from a link that was up")
        #expect(d.machine.preferred.map(\.host) == ["b3", "b1", "b2"])
    }

    @Test("redirects that go round stop after a bound and wait for the next round")
    func redirectLoop() {
        var d = ConnectionDriver(ConnectionMachine.Settings(brokers: [ConnectionDriver.broker(1), ConnectionDriver.broker(2)]))
        _ = d.on(.connect)
        _ = d.on(.accepted)
        var followed = 0
        var stopped = false
        for i in 0..<20 {
            _ = d.on(.referred(to: i % 2 == 0 ? "b2" : "b1", moved: false))
            let next = d.fail("use another server")
            if next.logs.contains(where: { $0.hasPrefix("broker redirects keep going round") }) {
                stopped = true
                #expect(next.dialed != [i % 2 == 0 ? "b2" : "b1"] || next.logs.contains { $0.contains("trying") }, "not followed: \(next)")
                break
            }
            #expect(next.dialed == [i % 2 == 0 ? "b2" : "b1"])
            followed += 1
        }
        #expect(stopped && followed == 2 * 2 + 2, "\(followed) redirects followed in one round")
    }

    @Test("3.1.1, clean start and a session expiry: connect clean, leave, resume with Clean Session 0 (the hop), then up")
    func sessionHop() {
        var s = ConnectionMachine.Settings(brokers: [ConnectionDriver.broker(1)])
        s.version = .v3_1_1
        s.sessionExpiryInterval = 3600
        var d = ConnectionDriver(s)
        #expect(d.on(.connect).dials == [.init(broker: ConnectionDriver.broker(1), version: .v3_1_1, cleanStart: true)])
        let clean = d.on(.accepted)
        #expect(clean.has { if case .hop = $0 { true } else { false } } && !clean.succeeded, "not up yet: the hop first")
        let back = d.fail()
        #expect(back.dials == [.init(broker: ConnectionDriver.broker(1), version: .v3_1_1, cleanStart: false)])
        #expect(d.on(.accepted).succeeded)
        // 5.0 has Session Expiry: no hop.
        var five = s
        five.version = .v5_0
        var e = ConnectionDriver(five)
        _ = e.on(.connect)
        #expect(e.on(.accepted).succeeded)
    }

    @Test(
        "5.0 refused as unsupported (0x84) with fallback_to_v311: 3.1.1 once, with the hop if it needs one; without fallback the connect fails"
    )
    func fallback() {
        var s = ConnectionMachine.Settings(brokers: [ConnectionDriver.broker(1)])
        s.fallbackToV311 = true
        s.sessionExpiryInterval = 60
        var d = ConnectionDriver(s)
        _ = d.on(.connect)
        let again = d.fail("unsupported protocol version", versionRefused: true)
        #expect(again.dials.map(\.version) == [.v3_1_1])
        #expect(again.logs == ["broker refused MQTT 5.0 (unsupported protocol version); falling back to 3.1.1 as configured"])
        #expect(d.on(.accepted).has { if case .hop = $0 { true } else { false } })
        _ = d.fail()
        #expect(d.on(.accepted).succeeded)
        #expect(d.machine.version == .v3_1_1, "kept for later reconnects")
        s.fallbackToV311 = false
        var e = ConnectionDriver(s)
        _ = e.on(.connect)
        #expect(e.fail("unsupported protocol version", versionRefused: true).connectError == "unsupported protocol version")
    }

    @Test("disconnect: with a link, DISCONNECT and wait for it to close; while backing off, cancel the timer and fail what waits")
    func disconnect() {
        var d = ConnectionDriver(Self.three)
        _ = d.on(.connect)
        _ = d.on(.accepted)
        let closing = d.on(.disconnect(linkOpen: true))
        #expect(closing.has { if case .closeLink = $0 { true } else { false } } && closing.reports.isEmpty)
        let closed = d.fail()
        #expect(
            closed.reports == [.disconnected(reason: "disconnect requested")]
                && closed.has { if case .disconnectFinished = $0 { true } else { false } })
        #expect(closed.retryDelay == nil && d.machine.state == .idle)
        // Offline, waiting for the next round.
        _ = d.on(.connect)
        _ = d.on(.accepted)
        _ = d.fail("lost")
        let stop = d.on(.disconnect(linkOpen: false))
        for probe: (ConnectionMachine.Action) -> Bool in [
            { if case .cancelRetry = $0 { true } else { false } }, { if case .abandonAttempt = $0 { true } else { false } },
            { if case .failQueued = $0 { true } else { false } }, { if case .disconnectFinished = $0 { true } else { false } },
        ] { #expect(stop.has(probe), "\(stop)") }
        #expect(stop.connectError == "disconnect() was called before the connection was up")
        #expect(d.on(.backoffElapsed).isEmpty, "a timer that fired anyway does nothing")
    }

    @Test("broker_order random: each round a new order from the seeded generator, every broker once")
    func randomOrder() {
        var s = Self.three
        s.order = .random
        var d = ConnectionDriver(s, seed: 42)
        var firsts: Set<String> = []
        for _ in 0..<20 {
            var round = d.on(.connect).dialed
            round += d.fail("x").dialed
            round += d.fail("x").dialed
            #expect(Set(round) == ["b1", "b2", "b3"] && round.count == 3)
            _ = d.fail("x")
            firsts.insert(round[0])
        }
        #expect(firsts.count > 1, "the order changes between rounds")
    }
}
