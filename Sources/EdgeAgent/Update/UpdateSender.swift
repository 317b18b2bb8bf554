import Communicator
import DeviceAdapters
import FoundationEssentials
import NIOCore

/// The operator's side of an update (`edge-agent send --device D agent/update --package F --key K`):
/// announces the signed manifest, sends the chunks the device says are missing (QoS 1, a window
/// of `window` at once), asks again until the device has them all, then follows the device's
/// info document until the helper's result for this package is there.
public struct UpdateSender: Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public var code: String
        public var message: String
        public var description: String { "\(code): \(message)" }
    }

    public let client: MQTTProtocol
    /// Where the sender waits (between rounds, for the result): a loop's monotonic clock.
    public let loop: any EventLoop
    /// The device's `<commands.topic>/agent/update` and its info topic.
    public let commandTopic: String
    public let infoTopic: String
    /// Chunks in flight at once (QoS 1).
    public var window = 16
    /// Seconds for one answer of the device.
    public var answerTimeout = 30.0
    public var chunkSize: Int?
    public var chunkTopic: String?

    public init(client: MQTTProtocol, loop: any EventLoop, commandTopic: String, infoTopic: String) {
        self.client = client
        self.loop = loop
        self.commandTopic = commandTopic
        self.infoTopic = infoTopic
    }

    /// Announces and sends until the device holds the package; returns the device's last answer
    /// (its state: installing, or receiving when rounds ran out). `say` gets one line per step.
    public func transfer(
        _ package: [UInt8], _ manifest: UpdateManifest, say: @Sendable (String) -> Void
    ) async throws -> [String: JSONValue] {
        var stalled = 0
        var lastHave = -1
        while true {
            let answer = try await announceRetrying(manifest, say: say)
            guard case .string(let state)? = answer["state"], state == "receiving" else { return answer }
            guard case .string(let topic)? = answer["chunk_topic"], case .int(let size)? = answer["chunk_size"],
                case .int(let have)? = answer["received_chunks"], case .int(let count)? = answer["chunks"],
                case .array(let runs)? = answer["missing"]
            else { throw Failure(code: "bad_answer", message: "the device's answer lacks the transfer's fields: \(answer)") }
            if have != lastHave { say("device has \(have) of \(count) chunks") }
            if have <= lastHave {
                stalled += 1
                if stalled >= 5 {
                    throw Failure(code: "stalled", message: "the device took no new chunk in 5 rounds (\(have) of \(count))")
                }
            } else {
                stalled = 0
            }
            lastHave = have
            // At most the device's window between two announcements: it answers after it wrote them.
            var window = self.window * 2
            if case .int(let w)? = answer["window"], w > 0 { window = w }
            var indexes: [Int] = []
            for case .array(let r) in runs where indexes.count < window {
                guard r.count == 2, case .int(let a) = r[0], case .int(let b) = r[1], a <= b, b < count else { continue }
                indexes += Array(a...min(b, a + window - indexes.count - 1))
            }
            if indexes.isEmpty {
                // All there; the device is checking the package.
                try await loop.sleep(for: .milliseconds(500))
                continue
            }
            if await !send(indexes, of: package, size: size, to: topic) {
                say("some chunks did not go out (the connection dropped); asking the device what it has")
                try await loop.sleep(for: .seconds(2))
            }
        }
    }

    /// Answers that say "later", not "no": the command's timeout (the device was busy writing),
    /// its queue, an agent that is stopping.
    static let passing: Set<String> = ["timeout", "busy", "unavailable"]

    /// A device that is cut off for a while does not answer, a busy one says so: asked again, up
    /// to 5 times.
    private func announceRetrying(_ m: UpdateManifest, say: @Sendable (String) -> Void) async throws -> [String: JSONValue] {
        var attempt = 1
        while true {
            do { return try await announce(m) } catch let e
                where attempt < 5 && (e as? Failure).map({ Self.passing.contains($0.code) }) ?? true
            {
                let why = (e as? Failure)?.description ?? (e as? any CommunicatorError)?.message ?? "\(e)"
                say("no answer from the device (\(why)); asking again")
                attempt += 1
                try await loop.sleep(for: .seconds(1))
            }
        }
    }

    public func announce(_ m: UpdateManifest) async throws -> [String: JSONValue] {
        var args: [String: JSONValue] = [
            "version": .string(m.version), "size": .int(m.size), "sha256": .string(m.sha256), "signature": .string(m.signature),
        ]
        if let chunkSize { args["chunk_size"] = .int(chunkSize) }
        if let chunkTopic { args["chunk_topic"] = .string(chunkTopic) }
        let request: JSONValue = .object([
            "id": .string("update-" + String(UInt64.random(in: 0...UInt64.max), radix: 36)), "args": .object(args),
        ])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let message = try await client.request(
            commandTopic, ByteBuffer(bytes: Array(try encoder.encode(request))), qos: 1, timeout: answerTimeout)
        guard case .object(let fields)? = JSONValue.parse(message.bytes) else {
            throw Failure(code: "bad_answer", message: "the device's answer is not JSON: \(message.string.prefix(200))")
        }
        if fields["status"] == .string("ok"), case .object(let result)? = fields["result"] { return result }
        if case .object(let e)? = fields["error"], case .string(let code)? = e["code"], case .string(let text)? = e["message"] {
            throw Failure(code: code, message: text)
        }
        throw Failure(code: "bad_answer", message: message.string)
    }

    /// Publishes the chunks, `window` at a time. A chunk that fails (the connection dropped) is
    /// not retried here: the next announcement lists it as missing. True when all went out.
    private func send(_ indexes: [Int], of package: [UInt8], size: Int, to topic: String) async -> Bool {
        let client = self.client
        return await withTaskGroup(of: Bool.self) { group in
            var next = indexes.makeIterator()
            var ok = true
            func add(_ i: Int) {
                group.addTask { (try? await client.publish(topic, Self.chunk(package, index: i, chunkSize: size), qos: 1)) != nil }
            }
            for _ in 0..<window {
                guard let i = next.next() else { break }
                add(i)
            }
            while let sent = await group.next() {
                ok = ok && sent
                if let i = next.next() { add(i) }
            }
            return ok
        }
    }

    /// The chunk message of chunk `index` (see `UpdateTransfer`).
    public static func chunk(_ package: [UInt8], index: Int, chunkSize: Int) -> ByteBuffer {
        UpdateTransfer.chunkMessage(package, index: index, chunkSize: chunkSize)
    }

    /// Waits for the device's info document to report the helper's result for `sha256`
    /// (installed, rolled_back, refused); `say` hears each new state on the way.
    public func follow(sha256: String, timeout: Double, say: @escaping @Sendable (String) -> Void) async throws -> [String: JSONValue] {
        let (stream, add) = AsyncStream.makeStream(of: [String: JSONValue].self, bufferingPolicy: .bufferingNewest(16))
        try await client.subscribe(infoTopic, qos: 1) { (m: MQTTMessage) in
            if case .object(let info)? = JSONValue.parse(m.bytes) { add.yield(info) }
        }
        defer { add.finish() }
        let timer = loop.scheduleTask(in: TimeAmount(seconds: timeout)) { add.finish() }
        defer { timer.cancel() }
        var said = ""
        for await info in stream {
            guard case .object(let update)? = info["update"] else { continue }
            if case .object(let last)? = update["last"], last["sha256"] == .string(sha256) { return last }
            guard case .string(let state)? = update["state"] else { continue }
            var line = "device: update \(state)"
            if case .string(let v)? = info["package_version"] ?? info["version"] { line += ", running \(v)" }
            if line != said {
                say(line)
                said = line
            }
        }
        throw Failure(code: "timeout", message: "no result for this package in the device's info within \(Int(timeout)) s")
    }
}
