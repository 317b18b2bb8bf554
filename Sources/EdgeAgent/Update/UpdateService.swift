import Communicator
import DeviceAdapters
import FoundationEssentials
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// What the info document (`update`) and the answers of `agent/update` say about updates.
struct UpdateStatus: Encodable, Equatable, Sendable {
    /// idle, receiving, installing (handed to the helper), or confirming (this agent was just
    /// installed and has not been confirmed yet).
    var state = "idle"
    var version: String?
    var sha256: String?
    var size: Int?
    var received_bytes: Int?
    var chunks: Int?
    var received_chunks: Int?
    var bad_chunks: Int?
    var dropped_chunks: Int?
    var last: UpdateResult?
}

/// Signed agent updates over MQTT (docs/UPDATES.md): the `agent/update` command announces a
/// package (checked: size, signature, version, free space), its chunks arrive on the transfer's
/// chunk topic and go to `package.part`, a complete package whose size and SHA-256 match is handed
/// to the privileged helper through `request.json`, and the helper's `result.json` is reported.
/// One task owns the transfer: announcements, chunks, connects and polls are events it takes in
/// order; its blocking file work runs on the thread pool. At most `queuedChunks` chunks wait:
/// more are dropped (and counted), and the operator's next announcement lists them as missing.
/// The answer names that bound (`window`): the operator sends at most so many chunks between two
/// announcements, and an announcement is answered after the chunks before it were written, so
/// the agent's disk, not the broker, sets the pace.
final class UpdateService: Service {
    enum Event: Sendable {
        case announce([String: JSONValue], CheckedContinuation<JSONValue, any Error>)
        case chunk(ByteBuffer)
        case connected
        case poll
    }

    let agent: Agent
    let files: UpdateFiles
    let logger: Logger
    private let events: AsyncStream<Event>
    private let add: AsyncStream<Event>.Continuation
    private let droppedChunks = NIOLockedValueBox(0)
    /// Chunks waiting in `events` (announcements, connects and polls are never dropped).
    private let waitingChunks = NIOLockedValueBox(0)

    static let queuedChunks = 32
    /// Chunks written between two syncs of the package file and saves of the progress.
    static let chunksPerSave = 16
    /// How long a request may wait for the helper before the log says nobody took it.
    static let helperTimeout = 60.0

    init(agent: Agent) {
        self.agent = agent
        files = UpdateFiles(stateDirectory: agent.config.stateDirectory)
        logger = agent.logger
        (events, add) = AsyncStream.makeStream(of: Event.self)
    }

    /// The answer to an `agent/update` request (or the refusal, an `UpdateRefusal`).
    func announce(_ args: [String: JSONValue]) async throws -> JSONValue {
        try await withCheckedThrowingContinuation { c in
            if case .terminated = add.yield(.announce(args, c)) {
                c.resume(throwing: UpdateRefusal(.busy, "the agent is stopping: send it again"))
            }
        }
    }

    private struct Receiving {
        var transfer: UpdateTransfer
        var fd: Int32
        var unsaved = 0
        var startedAt = NIODeadline.now()
        var reportedTenths = 0
    }

    private enum Phase {
        case idle
        case receiving(Receiving)
        case installing(UpdateManifest, since: NIODeadline, warned: Bool)
    }

    private struct State {
        var phase = Phase.idle
        var last: UpdateResult?
        var confirmed = false
        /// This start is an install the helper has not decided on yet (its `confirm` is there).
        var awaitingResult = false
        var poll: RepeatedTask?
    }

    func run() async {
        agent.mqtt.onStateChange { [add] s in if s == .connected { add.yield(.connected) } }
        await cancelWhenGracefulShutdown {
            var state = State()
            await self.load(&state)
            self.publishStatus(state)
            // The info document of the first connect may have gone out before this was read.
            if state.last != nil { self.agent.publishInfo() }
            if self.agent.mqtt.state == .connected { await self.handle(.connected, &state) }
            for await event in self.events { await self.handle(event, &state) }
            state.poll?.cancel()
            if case .receiving(let r) = state.phase {
                _ = try? await self.pool { fdatasync(r.fd) }
                _ = try? await self.save(r.transfer)
                close(r.fd)
            }
        }
    }

    private func pool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await agent.threadPool.runIfActive(work)
    }

    private func handle(_ event: Event, _ state: inout State) async {
        switch event {
        case .announce(let args, let answer):
            do { answer.resume(returning: try await announced(args, &state)) } catch { answer.resume(throwing: error) }
        case .chunk(let payload):
            waitingChunks.withLockedValue { $0 -= 1 }
            await chunk(payload, &state)
        case .connected:
            confirm(&state)
        case .poll:
            poll(&state)
        }
        publishStatus(state)
    }

    // MARK: - Announcements

    private func announced(_ args: [String: JSONValue], _ state: inout State) async throws -> JSONValue {
        let m = try UpdateManifest.parse(args)
        let c = agent.config.update
        switch state.phase {
        case .installing(let busy, _, _):
            if busy.sha256 == m.sha256 { return answer(state) }
            // Not taken by the helper yet (it is off, or slow): the newer announcement wins.
            guard UpdateFiles.exists(files.request) else {
                throw UpdateRefusal(.busy, "the update to \(busy.version) is being installed; send this one when it is done")
            }
        // (replaced below, once the new one has passed its checks)
        case .receiving(let r) where r.transfer.manifest == m:
            return answer(state)
        default:
            break
        }
        guard m.size <= c.maxBytes else {
            throw UpdateRefusal(.tooLarge, "the package is \(m.size) bytes, more than update.max_bytes \(c.maxBytes); nothing changed")
        }
        let signer = try m.signer(among: c.trustedKeys)
        try m.checkNewer(than: agent.packageVersion, allowDowngrade: c.allowDowngrade)
        let maxChunk = agent.config.incomingPacketLimit - 1024
        var chunkSize = min(c.chunkSize, maxChunk)
        if let asked = args["chunk_size"] {
            guard case .int(let n) = asked, (1024...maxChunk).contains(n) else {
                throw UpdateRefusal(
                    .badArguments, "\"chunk_size\" must be a whole number in 1024...\(maxChunk) (mqtt.max_incoming_packet_size)")
            }
            chunkSize = n
        }
        var topic = agent.config.topic(c.chunkTopic) + "/" + m.sha256.prefix(16)
        if let t = args["chunk_topic"] {
            guard case .string(let s) = t, Topic.nameProblem(s) == nil else {
                throw UpdateRefusal(.badArguments, "\"chunk_topic\" must be a topic name without wildcards")
            }
            topic = s
        }
        // The part file, then the helper's copy: twice the package, and room for the system.
        let needed = 2 * m.size + (8 << 20)
        if let free = UpdateFiles.freeBytes(agent.config.stateDirectory), free < needed {
            throw UpdateRefusal(
                .noSpace,
                "the package needs \(needed) bytes free in \(agent.config.stateDirectory) (twice its size and 8 MiB), \(free) are free; nothing changed"
            )
        }
        switch state.phase {
        case .receiving(let old):
            logger.notice("update: the transfer of \(old.transfer.manifest.version) is replaced by \(m.version)")
            await abandon(old, &state)
        case .installing(let pending, _, _):
            // Its request and package go when the new transfer's file is made, just below.
            logger.notice("update: \(pending.version), not taken by the helper yet, is replaced by \(m.version)")
            state.phase = .idle
        case .idle:
            break
        }
        let transfer = UpdateTransfer(manifest: m, chunkSize: chunkSize, chunkTopic: topic)
        let files = self.files
        let fd = try await pool { () throws -> Int32 in
            try files.makeDirectory()
            UpdateFiles.remove(files.part, files.package, files.request)
            let fd = open(files.part, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
            guard fd >= 0 else { throw UpdateRefusal(.storage, "cannot make \(files.part): \(String(cString: strerror(errno)))") }
            return fd
        }
        do { try await save(transfer) } catch {
            close(fd)
            throw UpdateRefusal(.storage, "\(error)")
        }
        state.phase = .receiving(Receiving(transfer: transfer, fd: fd))
        droppedChunks.withLockedValue { $0 = 0 }
        await subscribe(topic)
        logger.notice(
            "update: receiving \(m.version) (\(m.size) bytes, sha256 \(m.sha256.prefix(12))…, signed by \(signer.prefix(20))…) as \(transfer.chunkCount) chunks on \(topic)"
        )
        return answer(state)
    }

    private func answer(_ state: State) -> JSONValue {
        var o: [String: JSONValue] = ["state": .string(status(state).state)]
        switch state.phase {
        case .receiving(let r):
            let t = r.transfer
            o["version"] = .string(t.manifest.version)
            o["chunk_topic"] = .string(t.chunkTopic)
            o["chunk_size"] = .int(t.chunkSize)
            o["chunks"] = .int(t.chunkCount)
            o["window"] = .int(Self.queuedChunks)
            o["received_chunks"] = .int(t.receivedChunks)
            o["missing"] = .array(t.missing().map { .array($0.map(JSONValue.int)) })
        case .installing(let m, _, _):
            o["version"] = .string(m.version)
        case .idle:
            break
        }
        return .object(o)
    }

    private func subscribe(_ topic: String) async {
        let (add, dropped, waiting) = (self.add, droppedChunks, waitingChunks)
        let take: @Sendable (MQTTMessage) -> Void = { m in
            let room = waiting.withLockedValue { w in
                guard w < Self.queuedChunks else { return false }
                w += 1
                return true
            }
            if room { add.yield(.chunk(m.payload)) } else { dropped.withLockedValue { $0 += 1 } }
        }
        do {
            if agent.mqtt.state == .connected {
                try await agent.mqtt.subscribe(topic, qos: 1, onMessage: take)
            } else {
                try Self.queue { try $0.subscribe(topic, qos: 1, onMessage: take) }(agent.mqtt)
            }
        } catch {
            logger.error("update: cannot subscribe to \(topic): \(error)")
        }
    }

    private func unsubscribe(_ topic: String) async {
        if agent.mqtt.state == .connected {
            try? await agent.mqtt.unsubscribe(topic)
        } else {
            try? Self.queue { try $0.unsubscribe(topic) }(agent.mqtt)
        }
    }

    /// The client's synchronous call, which only queues the packet while not connected (the
    /// asynchronous one would wait for the broker's answer).
    private static func queue(_ call: @escaping (MQTTProtocol) throws -> Void) -> (MQTTProtocol) throws -> Void { call }

    private func abandon(_ r: Receiving, _ state: inout State) async {
        close(r.fd)
        await unsubscribe(r.transfer.chunkTopic)
        let files = self.files
        _ = try? await pool { UpdateFiles.remove(files.part, files.transfer) }
        state.phase = .idle
    }

    private func save(_ transfer: UpdateTransfer) async throws {
        let (files, bytes) = (self.files, Array(try JSONEncoder().encode(transfer)))
        try await pool { try AtomicFile.write(bytes, to: files.transfer) }
    }

    // MARK: - Chunks

    private func chunk(_ payload: ByteBuffer, _ state: inout State) async {
        guard case .receiving(var r) = state.phase else { return }
        switch r.transfer.check(payload) {
        case .refused(let why):
            r.transfer.badChunks += 1
            if r.transfer.badChunks <= 5 || r.transfer.badChunks % 100 == 0 {
                logger.warning("update: chunk refused (\(r.transfer.badChunks) so far): \(why)")
            }
        case .duplicate:
            break
        case .new(let index, let offset):
            let fd = r.fd
            let written = try? await pool { () -> Int in
                payload.withUnsafeReadableBytes { p in
                    pwrite(fd, p.baseAddress! + UpdateTransfer.headerBytes, p.count - UpdateTransfer.headerBytes, off_t(offset))
                }
            }
            guard written == payload.readableBytes - UpdateTransfer.headerBytes else {
                let why = String(cString: strerror(errno))
                await fail(r, .storage, "cannot write \(files.part): \(why); the transfer starts again when announced", &state)
                return
            }
            r.transfer.mark(index)
            r.unsaved += 1
            if r.unsaved >= Self.chunksPerSave || r.transfer.isComplete {
                do {
                    _ = try await pool { fdatasync(fd) }
                    try await save(r.transfer)
                    r.unsaved = 0
                } catch {
                    await fail(r, .storage, "cannot save the transfer's progress: \(error)", &state)
                    return
                }
            }
        }
        let tenths = r.transfer.receivedBytes * 10 / max(1, r.transfer.manifest.size)
        let report = tenths > r.reportedTenths
        if report { r.reportedTenths = tenths }
        state.phase = .receiving(r)
        if r.transfer.isComplete {
            await finish(r, &state)
        } else if report {
            publishStatus(state)
            agent.publishInfo()
        }
    }

    private func fail(_ r: Receiving, _ reason: UpdateRefusal.Reason, _ message: String, _ state: inout State) async {
        logger.error("update to \(r.transfer.manifest.version): \(message)")
        await abandon(r, &state)
        state.last = UpdateResult(
            result: "refused", version: r.transfer.manifest.version, sha256: r.transfer.manifest.sha256,
            reason: "\(reason.rawValue): \(message)",
            at: EventPipeline.timestamp(Date()))
        publishStatus(state)
        agent.publishInfo()
    }

    /// The last chunk is in: the whole file is checked against the manifest and handed over.
    private func finish(_ r: Receiving, _ state: inout State) async {
        let m = r.transfer.manifest
        close(r.fd)
        await unsubscribe(r.transfer.chunkTopic)
        let files = self.files
        do {
            let (sha, size) = try await pool { try UpdateFiles.hash(files.part) }
            guard size == m.size, sha == m.sha256 else {
                let (reason, message) =
                    size != m.size
                    ? (UpdateRefusal.Reason.sizeMismatch, "the package has \(size) bytes, not the announced \(m.size)")
                    : (.hashMismatch, "the package's SHA-256 is \(sha.prefix(12))…, not the announced \(m.sha256.prefix(12))…")
                await fail(r, reason, message + "; nothing installed, send it again", &state)
                return
            }
            let request = Array(try JSONEncoder().encode(m))
            try await pool { () throws in
                guard rename(files.part, files.package) == 0 else {
                    throw AgentError("cannot rename \(files.part): \(String(cString: strerror(errno)))")
                }
                // An older result of this same package must not be read as this one's.
                UpdateFiles.remove(files.confirmed, files.result)
                try AtomicFile.write(request, to: files.request)
                UpdateFiles.remove(files.transfer)
            }
        } catch {
            await fail(r, .storage, "\(error)", &state)
            return
        }
        let seconds = Double((NIODeadline.now() - r.startedAt).nanoseconds) / 1e9
        logger.notice(
            "update: \(m.version) received and checked (\(m.size) bytes in \(oneDecimal(seconds)) s, \(r.transfer.badChunks) bad chunks); handed to the helper (edge-agent-update.path)"
        )
        state.phase = .installing(m, since: .now(), warned: false)
        startPolling(&state)
        publishStatus(state)
        agent.publishInfo()
    }

    // MARK: - The helper's side

    private func readResult() -> UpdateResult? {
        UpdateFiles.read(files.result).flatMap { try? JSONDecoder().decode(UpdateResult.self, from: $0) }
    }

    /// At the start: the last result, a request the helper has not taken yet, a transfer to resume.
    private func load(_ state: inout State) async {
        let files = self.files
        state.last = readResult()
        if let last = state.last {
            logger.info("update: last update \(last.result) (\(last.version))\(last.reason.map { ": \($0)" } ?? "")")
        }
        if UpdateFiles.exists(files.confirm) {
            state.awaitingResult = true
            startPolling(&state)
        }
        if let r = UpdateFiles.read(files.request), let m = try? JSONDecoder().decode(UpdateManifest.self, from: r) {
            state.phase = .installing(m, since: .now(), warned: false)
            startPolling(&state)
            return
        }
        guard let saved = UpdateFiles.read(files.transfer) else { return }
        guard var transfer = try? JSONDecoder().decode(UpdateTransfer.self, from: saved),
            (try? transfer.manifest.signer(among: agent.config.update.trustedKeys)) != nil
        else {
            logger.warning("update: \(files.transfer) is unreadable or no longer signed by a trusted key; the transfer is dropped")
            UpdateFiles.remove(files.transfer, files.part)
            return
        }
        let fd = open(files.part, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else {
            UpdateFiles.remove(files.transfer)
            return
        }
        transfer.badChunks = 0
        state.phase = .receiving(Receiving(transfer: transfer, fd: fd))
        await subscribe(transfer.chunkTopic)
        logger.notice(
            "update: resuming the transfer of \(transfer.manifest.version): \(transfer.receivedChunks) of \(transfer.chunkCount) chunks are here"
        )
    }

    /// Online after an install: tells the helper this start is the one that came up.
    private func confirm(_ state: inout State) {
        guard !state.confirmed, UpdateFiles.exists(files.confirm) else { return }
        let id = ProcessInfo.processInfo.environment["INVOCATION_ID"] ?? "pid \(getpid())"
        do {
            try AtomicFile.write(Array((id + "\n").utf8), to: files.confirmed)
            state.confirmed = true
            logger.notice("update: online; the install is confirmed to the helper (\(files.confirmed))")
        } catch {
            logger.error("update: cannot confirm the install: \(error)")
        }
    }

    /// Once a second while the helper has the word: a request it may take, an install it confirms.
    private func startPolling(_ state: inout State) {
        guard state.poll == nil else { return }
        let add = self.add
        state.poll = agent.loop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in add.yield(.poll) }
    }

    private func poll(_ state: inout State) {
        if state.awaitingResult && !UpdateFiles.exists(files.confirm) {
            // The helper decided about this start (installed, or it is rolling back).
            state.awaitingResult = false
            if let r = readResult() {
                state.last = r
                logger.notice("update: the helper says \(r.result) (\(r.version))\(r.reason.map { ": \($0)" } ?? "")")
            }
            agent.publishInfo()
        }
        guard case .installing(let m, let since, let warned) = state.phase else {
            if !state.awaitingResult {
                state.poll?.cancel()
                state.poll = nil
            }
            return
        }
        if let r = readResult(), r.sha256 == m.sha256 {
            state.last = r
            state.phase = .idle
            if !state.awaitingResult {
                state.poll?.cancel()
                state.poll = nil
            }
            logger.notice("update to \(m.version): \(r.result)\(r.reason.map { ": \($0)" } ?? "")")
            agent.publishInfo()
        } else if !warned, NIODeadline.now() - since > TimeAmount(seconds: Self.helperTimeout), UpdateFiles.exists(files.request) {
            state.phase = .installing(m, since: since, warned: true)
            logger.error(
                "update to \(m.version): waiting \(Int(Self.helperTimeout)) s and no helper took \(files.request): enable it (systemctl enable --now edge-agent-update.path)"
            )
        }
    }

    // MARK: - Status

    private func status(_ state: State) -> UpdateStatus {
        var s = UpdateStatus(last: state.last)
        switch state.phase {
        case .idle:
            if state.awaitingResult { s.state = "confirming" }
        case .receiving(let r):
            let t = r.transfer
            s.state = "receiving"
            s.version = t.manifest.version
            s.sha256 = t.manifest.sha256
            s.size = t.manifest.size
            s.received_bytes = t.receivedBytes
            s.chunks = t.chunkCount
            s.received_chunks = t.receivedChunks
            s.bad_chunks = t.badChunks
            s.dropped_chunks = droppedChunks.withLockedValue { $0 }
        case .installing(let m, _, _):
            s.state = "installing"
            s.version = m.version
            s.sha256 = m.sha256
            s.size = m.size
        }
        return s
    }

    private func publishStatus(_ state: State) {
        let s = status(state)
        agent.updateStatus.withLockedValue { $0 = s }
    }
}
