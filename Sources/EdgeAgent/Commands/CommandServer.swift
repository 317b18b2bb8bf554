import Communicator
import DeviceAdapters
import FoundationEssentials
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

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
/// Commands run one at a time per name, off the network thread, with a timeout: each name has a
/// lane, a child task of this service reading that name's queue; at most `commands.max_queued`
/// per name wait or run, more are refused as `busy`. At the shutdown the lanes finish what they
/// hold and the remembered answers are written out.
final class CommandServer: Service {
    typealias Job = @Sendable () async -> Void
    let agent: Agent
    let logger: Logger
    let prefix: String
    let broadcastPrefix: String?
    let defaultResponseTopic: String
    let recent: RecentRequests<ReplyTo>
    private let lanes: [String: (jobs: AsyncStream<Job>, add: AsyncStream<Job>.Continuation)]
    /// Requests per name waiting or running (bounded by commands.max_queued).
    private let queued = NIOLockedValueBox<[String: Int]>([:])
    let allow: NIOLockedValueBox<Set<String>>
    /// `agent/update` (nil when commands.allow does not have it).
    let updates: UpdateService?

    init(agent: Agent, updates: UpdateService? = nil) {
        self.agent = agent
        self.updates = updates
        let c = agent.config
        logger = agent.logger
        prefix = c.topic(c.commands.topic)
        broadcastPrefix = c.commands.broadcastTopic.map { c.topic($0) }
        defaultResponseTopic = c.topic(c.commands.responseTopic)
        recent = RecentRequests(
            path: c.stateDirectory + "/command-answers.json", capacity: c.commands.remember, threadPool: agent.threadPool,
            loop: agent.loop)
        allow = NIOLockedValueBox(Set(c.commands.allow))
        lanes = Dictionary(
            uniqueKeysWithValues: AgentConfig.knownCommands.map { name in
                let (jobs, add) = AsyncStream.makeStream(of: Job.self)
                return (name, (jobs: jobs, add: add))
            })
    }

    func run() async {
        await withDiscardingTaskGroup { group in
            for lane in lanes.values {
                group.addTask {
                    for await job in lane.jobs { await job() }
                }
            }
            try? await gracefulShutdown()
            for lane in lanes.values { lane.add.finish() }
        }
        await recent.flush()
    }

    /// Answers not worth the flash: `log/tail`'s is large and a repeat of it harms nothing.
    static let notRemembered: Set<String> = ["log/tail"]

    /// What `log/tail` answers at most (the broker's packet limits and the operator's screen).
    static let maxTailBytes = 48 * 1024

    /// The bytes a text takes as a JSON string in a list: quotes, comma, escapes.
    static func jsonLength(_ text: String) -> Int {
        3 + text.utf8.reduce(0) { n, b in n + (b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") ? 2 : b < 0x20 ? 6 : 1) }
    }

    /// `led/identify`: a fast blink for a while, to find the board in a rack.
    static let identify = LightPattern.blink(150, 150)
    static let identifySeconds = 10.0

    func subscribe() throws {
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

    /// One answer (or refusal) of command `name`, by result code, for the info document and the
    /// metrics. A name that is no command counts as `unknown`: a topic must not grow a table.
    private func count(_ result: String, _ name: String) {
        let command = AgentConfig.knownCommands.contains(name) ? name : "unknown"
        agent.commandCounts.withLockedValue { $0[command, default: [:]][result, default: 0] += 1 }
    }

    func received(_ m: MQTTMessage, prefix: String) {
        let name = String(m.topic.dropFirst(prefix.count + 1))
        if name.hasPrefix(Self.pressPrefix) { return pressed(String(name.dropFirst(Self.pressPrefix.count)), m, prefix: prefix) }
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
            count("duplicates", name)
            logger.info("command \(name) id \(id): repeated request, answered with the first answer")
            publish(previous, reply)
            return
        case .running(let waits):
            count("duplicates", name)
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
        guard admit(name) else {
            respond(id: id, name: name, reply, .failure(busy(name)), remember: false)
            return
        }
        // Answered once: by the run, or by the timeout (which the run's answer cancels).
        let answer = NIOLockedValueBox<(given: Bool, timer: Scheduled<Void>?)>((false, nil))
        @Sendable func claim() -> Bool {
            answer.withLockedValue { a in
                defer { a = (true, nil) }
                a.timer?.cancel()
                return !a.given
            }
        }
        let timeout = agent.config.commands.timeout
        let timer = agent.loop.scheduleTask(in: TimeAmount(seconds: timeout)) { [self] in
            guard claim() else { return }
            respond(
                id: id, name: name, reply,
                .failure(Failure(code: "timeout", message: "command \"\(name)\" did not finish within \(timeout) s (commands.timeout)")))
        }
        answer.withLockedValue { if !$0.given { $0.timer = timer } }
        let job: Job = { [self] in
            let after = AfterAnswer(nil)
            let result: Result<JSONValue, Failure>
            do { result = .success(try await execute(name, id: id, args, after: after)) } catch let f as Failure {
                result = .failure(f)
            } catch {
                result = .failure(Failure(code: "failed", message: "\(error)"))
            }
            guard claim() else {
                logger.warning("command \(name) id \(id) finished after its timeout: \(result)")
                return
            }
            if Self.notRemembered.contains(name) {
                respond(id: id, name: name, reply, result, remember: false)
            } else {
                await respondDurably(id: id, name: name, reply, result)
            }
            if case .success = result, let then = after.withLockedValue({ $0 }) { then() }
        }
        if !enqueue(name, job) {
            guard claim() else { return }
            respond(
                id: id, name: name, reply,
                .failure(Failure(code: "unavailable", message: "the agent is stopping: command \"\(name)\" not run; send it again later")),
                remember: false)
        }
    }

    /// Home Assistant's buttons send a fixed plain payload to `<commands.topic>/press/<command>`.
    static let pressPrefix = "press/"
    /// What a button may run: commands without arguments.
    static let pressable: Set<String> = ["ping", "led/identify", "agent/restart"]

    /// A button's press: runs each time (a press is not a redelivery: no JSON, no id, nothing
    /// remembered) and is not answered (a button reads no answer), under the same allow-list,
    /// lanes, log and counters as a request. Only on the device's own topic (not the fleet's
    /// broadcast topic), and never a retained message: a press left retained on the broker would
    /// run again at every connect.
    private func pressed(_ name: String, _ m: MQTTMessage, prefix: String) {
        let refusal: Failure? =
            if m.retain {
                Failure(
                    code: "bad_request",
                    message:
                        "a retained message is not a press (the broker keeps it: it would run at every connect); publish it without retain")
            } else if prefix != self.prefix {
                Failure(code: "bad_request", message: "presses are taken on the device's own topic only, not on the broadcast topic")
            } else if !Self.pressable.contains(name) {
                Failure(
                    code: "unknown_command", message: "not a command a button can run (\(Self.pressable.sorted().joined(separator: ", ")))")
            } else if !allow.withLockedValue({ $0.contains(name) }) {
                Failure(code: "forbidden", message: "command \"\(name)\" is not allowed on this device (commands.allow)")
            } else if !admit(name) {
                busy(name)
            } else {
                nil
            }
        if let refusal {
            count(refusal.code, name)
            logger.warning("button press \(name): \(refusal.message)")
            return
        }
        let job: Job = { [self] in
            let after = AfterAnswer(nil)
            do {
                _ = try await execute(name, id: "press", [:], after: after)
                count("ok", name)
                logger.info("button press \(name): ok")
                after.withLockedValue { $0 }?()
            } catch let f as Failure {
                count(f.code, name)
                logger.warning("button press \(name): \(f.code): \(f.message)")
            } catch {
                count("failed", name)
                logger.warning("button press \(name): failed: \(error)")
            }
        }
        if !enqueue(name, job) { logger.warning("button press \(name): the agent is stopping: not run") }
    }

    /// Takes one of the name's `commands.max_queued` places, or says no.
    private func admit(_ name: String) -> Bool {
        let limit = agent.config.commands.maxQueued
        return queued.withLockedValue { q in
            guard q[name, default: 0] < limit else { return false }
            q[name, default: 0] += 1
            return true
        }
    }

    private func busy(_ name: String) -> Failure {
        Failure(
            code: "busy",
            message:
                "\(agent.config.commands.maxQueued) requests of \"\(name)\" are waiting or running (commands.max_queued): send it again later"
        )
    }

    /// Hands an admitted job to its name's lane; the place is given back when it has run. False
    /// (and the place given back at once) when the lanes are closed: the agent is stopping.
    private func enqueue(_ name: String, _ job: @escaping Job) -> Bool {
        let release: @Sendable () -> Void = { [queued] in queued.withLockedValue { $0[name, default: 1] -= 1 } }
        if let lane = lanes[name],
            case .enqueued = lane.add.yield({
                defer { release() }
                await job()
            })
        {
            return true
        }
        release()
        return false
    }

    /// Work a command leaves for after its answer is out (a restart, a reboot).
    typealias AfterAnswer = NIOLockedValueBox<(@Sendable () -> Void)?>

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

    /// Answers at once (refusals, timeouts: also on the network thread); the remembered answer
    /// is written behind it. `remember: false`: a refusal that the same id sent again should not
    /// get (busy). Requesters of the same id that waited are answered as well.
    private func respond(id: String?, name: String, _ reply: ReplyTo, _ result: Result<JSONValue, Failure>, remember: Bool = true) {
        let answer = Answer(self, id: id, name: name, result)
        var others: [ReplyTo] = []
        if let id { others = remember ? recent.finish(id, response: answer.text(for: reply)) : recent.abandon(id) }
        answer.send(to: reply, others)
    }

    /// For commands that ran: the remembered answer is on the disk before the answer goes out, so
    /// that a crash in between cannot make the command run twice.
    private func respondDurably(id: String, name: String, _ reply: ReplyTo, _ result: Result<JSONValue, Failure>) async {
        let answer = Answer(self, id: id, name: name, result)
        let others = recent.finish(id, response: answer.text(for: reply))
        // The newest save holds this answer (an older save that a newer answer overtook writes
        // nothing: the newer one writes both).
        await recent.flush()
        answer.send(to: reply, others)
    }

    /// One answer, counted and logged once, encoded for each requester (their correlation data).
    private struct Answer {
        let server: CommandServer
        var response: Response

        init(_ server: CommandServer, id: String?, name: String, _ result: Result<JSONValue, Failure>) {
            self.server = server
            response = Response(id: id, status: "ok")
            switch result {
            case .success(let v):
                response.result = v
                server.count("ok", name)
                server.logger.info("command \(name) id \(id ?? "-"): ok")
            case .failure(let f):
                response.status = "error"
                response.error = .init(code: f.code, message: f.message)
                server.count(f.code, name)
                server.logger.warning("command \(name.isEmpty ? "(none)" : name) id \(id ?? "-"): \(f.code): \(f.message)")
            }
        }

        func text(for reply: ReplyTo) -> String {
            var r = response
            r.correlation_data = reply.jsonCorrelation
            return (try? EventPipeline.encoder.encode(r)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        }

        func send(to reply: ReplyTo, _ others: [ReplyTo]) {
            server.publish(text(for: reply), reply)
            for o in others { server.publish(text(for: o), o) }
        }
    }

    private func publish(_ text: String, _ reply: ReplyTo) {
        var props = MQTTProperties()
        props.correlationData = reply.correlation
        props.contentType = "application/json"
        do { try agent.mqtt.publish(reply.topic, ByteBuffer(string: text), qos: 1, properties: props, waitForRoom: false) } catch {
            logger.error("command answer to \(reply.topic) not sent: \(error)")
        }
    }

    // MARK: - The commands

    private func string(_ args: [String: JSONValue], _ key: String) throws(Failure) -> String {
        guard let v = args[key] else { throw Failure(code: "bad_arguments", message: "missing argument \"\(key)\"") }
        guard case .string(let s) = v else { throw Failure(code: "bad_arguments", message: "argument \"\(key)\" must be a string") }
        return s
    }

    private func source(_ args: [String: JSONValue]) throws(Failure) -> SourceService {
        let name = try string(args, "name")
        guard let s = agent.sources.first(where: { $0.name == name }) else {
            throw Failure(
                code: "bad_arguments", message: "no source \"\(name)\" (sources: \(agent.sources.map(\.name).joined(separator: ", ")))")
        }
        return s
    }

    private func level(_ args: [String: JSONValue]) throws(Failure) -> Logger.Level {
        guard let level = Logger.Level(rawValue: try string(args, "level")) else {
            throw Failure(code: "bad_arguments", message: "\"level\" must be one of trace, debug, info, notice, warning, error, critical")
        }
        return level
    }

    private func json<T: Encodable>(_ value: T) -> JSONValue {
        guard let data = try? JSONEncoder().encode(value), let v = JSONValue.parse(Array(data)) else { return .null }
        return v
    }

    func execute(_ name: String, id: String, _ args: [String: JSONValue], after: AfterAnswer) async throws -> JSONValue {
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
            // Validates and writes the file (fsync): on the thread pool.
            let agent = self.agent
            return try await agent.threadPool.runIfActive { try ConfigUpdate(agent: agent).apply(args) }
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
        case "led/identify":
            guard agent.player != nil else { throw Failure(code: "unavailable", message: "this agent runs without a status LED") }
            agent.overrideLED(Self.identify, seconds: Self.identifySeconds)
            return .object(["led": .string("\(Self.identify)"), "seconds": .number(Self.identifySeconds)])
        case "source/enable", "source/disable", "source/restart":
            let s = try source(args)
            let status: SourceStatus
            switch name {
            case "source/enable": status = await s.control { .enable($0) }
            case "source/disable": status = await s.control { .disable($0) }
            default: status = await s.control { .restart($0) }
            }
            if name != "source/disable" && !status.running {
                throw Failure(
                    code: "failed",
                    message: "source \(s.name) cannot start: \(status.lastError ?? status.state); it is tried again with back-off")
            }
            return .object(["source": .string(s.name), "running": .bool(status.running), "restarts": .int(status.restarts)])
        case "log/level":
            let level = try self.level(args)
            AgentLogHandler.level.withLockedValue { $0 = level }
            return .object(["level": .string(level.rawValue)])
        case "log/tail":
            var count = 50
            if let n = args["lines"] {
                guard case .int(let i) = n, (1...1000).contains(i) else {
                    throw Failure(code: "bad_arguments", message: "\"lines\" must be a whole number in 1...1000")
                }
                count = i
            }
            let level = args["level"] == nil ? Logger.Level.trace : try self.level(args)
            // The newest lines that fit in an answer of at most maxTailBytes.
            var lines: [String] = []
            var bytes = 0
            for line in LogRing.shared.tail(count, atLeast: level).reversed() {
                bytes += Self.jsonLength(line.text)
                if bytes > Self.maxTailBytes { break }
                lines.append(line.text)
            }
            return .object(["lines": .array(lines.reversed().map(JSONValue.string)), "kept": .int(LogRing.shared.capacity)])
        case "agent/restart":
            let agent = self.agent
            after.withLockedValue {
                $0 = { agent.loop.scheduleTask(in: .milliseconds(300)) { agent.requestExit(Agent.restartExitCode) } }
            }
            return .object(["restarting": .bool(true), "exit_code": .int(Int(Agent.restartExitCode))])
        case "reboot":
            let request = try RebootRequest(command: agent.config.commands.rebootCommand, environment: ProcessInfo.processInfo.environment)
            let (logger, loop, pool) = (self.logger, agent.loop, agent.threadPool)
            after.withLockedValue {
                $0 = {
                    loop.scheduleTask(in: .milliseconds(300)) {
                        // The command may take its time (a shell): on the pool, not the loop.
                        pool.submit { _ in request.perform(id: id, logger: logger, timers: loop) }
                    }
                }
            }
            return .object(["rebooting": .bool(true), "via": .string(request.description)])
        case "agent/update":
            guard let updates else { throw Failure(code: "forbidden", message: "updates are off on this device (commands.allow)") }
            do { return try await updates.announce(args) } catch let r as UpdateRefusal {
                throw Failure(code: r.reason.rawValue, message: r.message)
            }
        default:
            throw Failure(code: "unknown_command", message: "no command \"\(name)\"")
        }
    }
}
