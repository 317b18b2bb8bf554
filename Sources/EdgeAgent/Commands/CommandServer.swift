import Communicator
import DeviceAdapters
import Dispatch
import FoundationEssentials
import Logging
import NIOConcurrencyHelpers
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Remote management over MQTT (docs/COMMANDS.md). Requests arrive on `<commands.topic>/<name>`
/// (and on the optional fleet-wide broadcast topic) as JSON `{"id": "...", "args": {...}}`; every
/// request gets exactly one answer `{"id", "status": "ok"|"error", "result" | "error": {"code",
/// "message"}}`, on the request's MQTT 5 Response Topic with its Correlation Data, else on the
/// `response_topic` of the JSON (3.1.1), else on `commands.response_topic`.
/// Commands run one at a time per name, off the network thread, with a timeout; at most
/// `commands.max_queued` per name wait or run, more are refused as `busy`.
final class CommandServer: @unchecked Sendable {
    unowned let agent: Agent
    let logger: Logger
    let prefix: String
    let broadcastPrefix: String?
    let defaultResponseTopic: String
    let recent: RecentRequests<ReplyTo>
    private let queues = NIOLockedValueBox<[String: DispatchQueue]>([:])
    /// Requests per name waiting or running (bounded by commands.max_queued).
    private let queued = NIOLockedValueBox<[String: Int]>([:])
    private let counts = NIOLockedValueBox<[String: Int]>([:])
    let allow: NIOLockedValueBox<Set<String>>

    init(agent: Agent) {
        self.agent = agent
        let c = agent.config
        logger = agent.logger
        prefix = c.topic(c.commands.topic)
        broadcastPrefix = c.commands.broadcastTopic.map { c.topic($0) }
        defaultResponseTopic = c.topic(c.commands.responseTopic)
        recent = RecentRequests(path: c.stateDirectory + "/command-answers.json", capacity: c.commands.remember)
        allow = NIOLockedValueBox(Set(c.commands.allow))
    }

    var counters: [String: Int] { counts.withLockedValue { $0 } }

    func start() throws {
        // Subscribed before the first connect: the client restores subscriptions on every connect.
        for p in [prefix] + (broadcastPrefix.map { [$0] } ?? []) {
            try agent.mqtt.subscribe(p + "/#", qos: 1) { [weak self] m in self?.received(m, prefix: p) }
        }
        logger.info(
            "commands on \(prefix)/<name>\(broadcastPrefix.map { " and \($0)/<name>" } ?? ""); allowed: \(allow.withLockedValue { $0.sorted() }.joined(separator: ", "))"
        )
    }

    struct Failure: Error {
        var code: String
        var message: String
    }

    /// Where and how to answer one request.
    struct ReplyTo: Sendable, Equatable {
        var topic: String
        var correlation: ByteBuffer?
        var jsonCorrelation: JSONValue?
    }

    private func count(_ key: String) { counts.withLockedValue { $0[key, default: 0] += 1 } }

    func received(_ m: MQTTMessage, prefix: String) {
        let name = String(m.topic.dropFirst(prefix.count + 1))
        var reply = ReplyTo(topic: defaultResponseTopic, correlation: m.properties.correlationData)
        if let t = m.properties.responseTopic, Topic.nameProblem(t) == nil { reply.topic = t }
        let request = CommandRequest(
            payload: m.payload.readableBytesView, maxPayloadBytes: agent.config.commands.maxPayloadBytes,
            hasResponseTopicProperty: m.properties.responseTopic != nil)
        if let t = request.responseTopic { reply.topic = t }
        reply.jsonCorrelation = request.correlation
        let (id, args): (String, [String: JSONValue])
        switch request.parsed {
        case .failure(let refusal):
            respond(id: refusal.id, name: name, reply, .failure(refusal.failure))
            return
        case .success(let r):
            (id, args) = r
        }
        switch recent.begin(id, waiter: reply) {
        case .answered(let previous):
            count("duplicates")
            logger.info("command \(name) id \(id): repeated request, answered with the first answer")
            publish(previous, reply)
            return
        case .running(let waits):
            count("duplicates")
            logger.info(
                "command \(name) id \(id): repeated while running; \(waits ? "this requester gets the run's answer too" : "the first run answers")"
            )
            return
        case .new:
            break
        }
        guard AgentConfig.knownCommands.contains(name) else {
            respond(
                id: id, name: name, reply,
                .failure(
                    Failure(
                        code: "unknown_command",
                        message: "no command \"\(name)\" (known: \(AgentConfig.knownCommands.joined(separator: ", ")))")))
            return
        }
        guard allow.withLockedValue({ $0.contains(name) }) else {
            respond(
                id: id, name: name, reply,
                .failure(Failure(code: "forbidden", message: "command \"\(name)\" is not allowed on this device (commands.allow)")))
            return
        }
        run(name, id: id, args: args, reply)
    }

    /// One at a time per name, off the network thread; the answer goes out at the timeout if the
    /// command is still running (its late result is then only logged).
    private func run(_ name: String, id: String, args: [String: JSONValue], _ reply: ReplyTo) {
        let limit = agent.config.commands.maxQueued
        let admitted = queued.withLockedValue { q in
            guard q[name, default: 0] < limit else { return false }
            q[name, default: 0] += 1
            return true
        }
        guard admitted else {
            respond(
                id: id, name: name, reply,
                .failure(
                    Failure(
                        code: "busy",
                        message: "\(limit) requests of \"\(name)\" are waiting or running (commands.max_queued): send it again later")),
                remember: false)
            return
        }
        let queue = queues.withLockedValue { q in
            if let existing = q[name] { return existing }
            let n = DispatchQueue(label: "edge-agent.command.\(name)")
            q[name] = n
            return n
        }
        let answered = NIOLockedValueBox(false)
        let timeout = agent.config.commands.timeout
        agent.timers.scheduleTask(in: .nanoseconds(Int64(timeout * 1e9))) { [self] in
            guard
                answered.withLockedValue({ a in
                    defer { a = true }
                    return !a
                })
            else { return }
            respond(
                id: id, name: name, reply,
                .failure(Failure(code: "timeout", message: "command \"\(name)\" did not finish within \(timeout) s (commands.timeout)")))
        }
        queue.async { [self] in
            defer { queued.withLockedValue { $0[name, default: 1] -= 1 } }
            let result: Result<JSONValue, Failure>
            do { result = .success(try execute(name, id: id, args)) } catch let f as Failure { result = .failure(f) } catch {
                result = .failure(Failure(code: "failed", message: "\(error)"))
            }
            guard
                answered.withLockedValue({ a in
                    defer { a = true }
                    return !a
                })
            else {
                logger.warning("command \(name) id \(id) finished after its timeout: \(result)")
                return
            }
            respond(id: id, name: name, reply, result, durable: true)
            if case .success = result,
                let after = afterAnswer.withLockedValue({ a in
                    defer { a = nil }
                    return a
                })
            {
                after()
            }
        }
    }

    /// Work to do once the answer is out (a restart).
    private let afterAnswer = NIOLockedValueBox<(@Sendable () -> Void)?>(nil)

    struct Response: Encodable {
        var id: String?
        var status: String
        var result: JSONValue?
        var error: ErrorBody?
        var correlation_data: JSONValue?
        struct ErrorBody: Encodable {
            var code: String
            var message: String
        }

        enum CodingKeys: String, CodingKey { case id, status, result, error, correlation_data }

        /// `id` is always there: null when the request had none that could be read.
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(id, forKey: .id)
            try c.encode(status, forKey: .status)
            try c.encodeIfPresent(result, forKey: .result)
            try c.encodeIfPresent(error, forKey: .error)
            try c.encodeIfPresent(correlation_data, forKey: .correlation_data)
        }
    }

    /// `durable`: the remembered answer is on the disk before the answer goes out (for commands
    /// that ran; not on the network thread). `remember: false`: a refusal that the same id sent
    /// again should not get (busy). Requesters of the same id that waited are answered as well.
    private func respond(
        id: String?, name: String, _ reply: ReplyTo, _ result: Result<JSONValue, Failure>, durable: Bool = false, remember: Bool = true
    ) {
        var r = Response(id: id, status: "ok")
        switch result {
        case .success(let v):
            r.result = v
            count("ok")
            logger.info("command \(name) id \(id ?? "-"): ok")
        case .failure(let f):
            r.status = "error"
            r.error = .init(code: f.code, message: f.message)
            count(f.code)
            logger.warning("command \(name.isEmpty ? "(none)" : name) id \(id ?? "-"): \(f.code): \(f.message)")
        }
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        func text(for reply: ReplyTo) -> String {
            r.correlation_data = reply.jsonCorrelation
            return (try? e.encode(r)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        }
        let first = text(for: reply)
        var others: [ReplyTo] = []
        if let id { others = remember ? recent.finish(id, response: first, durable: durable) : recent.abandon(id) }
        publish(first, reply)
        for o in others { publish(text(for: o), o) }
    }

    private func publish(_ text: String, _ reply: ReplyTo) {
        var props = MQTTProperties()
        props.correlationData = reply.correlation
        props.contentType = "application/json"
        do { try agent.mqtt.publish(reply.topic, ByteBuffer(string: text), qos: 1, properties: props) } catch {
            logger.error("command answer to \(reply.topic) not sent: \(error)")
        }
    }

    // MARK: - The commands

    private func string(_ args: [String: JSONValue], _ key: String) throws(Failure) -> String {
        guard let v = args[key] else { throw Failure(code: "bad_arguments", message: "missing argument \"\(key)\"") }
        guard case .string(let s) = v else { throw Failure(code: "bad_arguments", message: "argument \"\(key)\" must be a string") }
        return s
    }

    private func source(_ args: [String: JSONValue]) throws(Failure) -> EventSource {
        let name = try string(args, "name")
        guard let s = agent.sources.first(where: { $0.name == name }) else {
            throw Failure(
                code: "bad_arguments", message: "no source \"\(name)\" (sources: \(agent.sources.map(\.name).joined(separator: ", ")))")
        }
        return s
    }

    private func json<T: Encodable>(_ value: T) -> JSONValue {
        guard let data = try? JSONEncoder().encode(value), let v = JSONValue.parse(Array(data)) else { return .null }
        return v
    }

    func execute(_ name: String, id: String, _ args: [String: JSONValue]) throws -> JSONValue {
        switch name {
        case "ping":
            return .object(["pong": .bool(true), "device_id": .string(agent.config.deviceID), "version": .string(EdgeAgentVersion.current)])
        case "status":
            return json(agent.info())
        case "buffer/stats":
            guard let s = agent.mqtt.offlineStoreStatus else { return .object(["enabled": .bool(false)]) }
            var o: [String: JSONValue] = [
                "enabled": .bool(true), "directory": .string(s.directory), "pending": .int(s.pending), "fill": .number(s.fill),
                "dropped": .int(s.dropped), "corrupt_skipped": .int(s.corruptSkipped), "held": .int(s.held),
            ]
            if let d = s.degraded { o["degraded"] = .string(d) }
            return .object(o)
        case "config/get":
            return .object(["config": .string(agent.effective.withLockedValue { $0 }.rendered())])
        case "config/set":
            return try ConfigUpdate(agent: agent).apply(args)
        case "led/set":
            if args["auto"] == .bool(true) {
                agent.overrideLED(nil, seconds: 0)
                return .object(["led": .string("automatic")])
            }
            let text = try string(args, "pattern")
            let pattern: LightPattern
            do { pattern = try LightPattern(parsing: text) } catch { throw Failure(code: "bad_arguments", message: "\(error)") }
            var seconds = 60.0
            if let s = args["seconds"] {
                switch s {
                case .int(let i) where (1...86_400).contains(i): seconds = Double(i)
                case .number(let d) where (1...86_400).contains(d): seconds = d
                default: throw Failure(code: "bad_arguments", message: "\"seconds\" must be a number in 1...86400")
                }
            }
            guard agent.player != nil else { throw Failure(code: "unavailable", message: "this agent runs without a status LED") }
            agent.overrideLED(pattern, seconds: seconds)
            return .object(["led": .string("\(pattern)"), "seconds": .number(seconds)])
        case "source/enable", "source/disable", "source/restart":
            let s = try source(args)
            let running = agent.runtime.withLockedValue { $0.sourceRunning[s.name] ?? false }
            if name != "source/enable" && running { agent.stopSource(s) }
            if name != "source/disable" && (name == "source/restart" || !running) {
                do { try agent.startSource(s) } catch { throw Failure(code: "failed", message: "source \(s.name) cannot start: \(error)") }
            }
            return .object([
                "source": .string(s.name), "running": .bool(agent.runtime.withLockedValue { $0.sourceRunning[s.name] ?? false }),
            ])
        case "log/level":
            let text = try string(args, "level")
            guard let level = Logger.Level(rawValue: text) else {
                throw Failure(
                    code: "bad_arguments", message: "\"level\" must be one of trace, debug, info, notice, warning, error, critical")
            }
            AgentLogHandler.level.withLockedValue { $0 = level }
            return .object(["level": .string(text)])
        case "agent/restart":
            let agent = self.agent
            afterAnswer.withLockedValue {
                $0 = {
                    agent.timers.scheduleTask(in: .milliseconds(300)) {
                        DispatchQueue.global().async { agent.onExitRequest?(Agent.restartExitCode) }
                    }
                }
            }
            return .object(["restarting": .bool(true), "exit_code": .int(Int(Agent.restartExitCode))])
        case "reboot":
            let request = try RebootRequest(command: agent.config.commands.rebootCommand, environment: ProcessInfo.processInfo.environment)
            let (logger, timers) = (self.logger, agent.timers)
            afterAnswer.withLockedValue {
                $0 = {
                    timers.scheduleTask(in: .milliseconds(300)) {
                        DispatchQueue.global().async { request.perform(id: id, logger: logger, timers: timers) }
                    }
                }
            }
            return .object(["rebooting": .bool(true), "via": .string(request.description)])
        default:
            throw Failure(code: "unknown_command", message: "no command \"\(name)\"")
        }
    }
}
