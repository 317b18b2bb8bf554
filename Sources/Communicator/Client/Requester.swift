import NIOConcurrencyHelpers
import NIOCore

/// 5.0 request/response (§4.10): a request carries a Response Topic and Correlation Data; the
/// responder publishes its answer to that topic with the same Correlation Data. One response
/// topic per client, subscribed on first use; answers are matched by their correlation data.
final class Requester: Sendable {
    private struct State {
        var subscribed = false
        var waiting: [ByteBuffer: CheckedContinuation<MQTTMessage, any Error>] = [:]
        var counter: UInt64 = 0
    }

    let responseTopic: String
    private let state = NIOLockedValueBox(State())
    private let salt = UInt64.random(in: 0...UInt64.max)

    init(responseTopic: String) { self.responseTopic = responseTopic }

    func request(
        on client: MQTTProtocol, topic: String, payload: ByteBuffer, qos: Int, timeout: Double, properties: MQTTProperties
    ) async throws -> MQTTMessage {
        guard client.config.protocolVersion == .v5_0 else {
            throw ProtocolValidationError(
                "request/response needs MQTT 5.0 (Response Topic and Correlation Data): set protocol_version 5.0", reason: .invalidArgument)
        }
        if !state.withLockedValue({ $0.subscribed }) {
            // Answers to requests that timed out or belong to an earlier run are dropped quietly.
            try await client.subscribe(responseTopic, qos: 1, options: .init(noLocal: true)) { [self] m in
                guard let key = m.properties.correlationData else { return }
                state.withLockedValue { $0.waiting.removeValue(forKey: key) }?.resume(returning: m)
            }
            state.withLockedValue { $0.subscribed = true }
        }
        var props = properties
        props.responseTopic = responseTopic
        let key = state.withLockedValue { s -> ByteBuffer in
            s.counter += 1
            var b = ByteBuffer()
            b.writeInteger(salt)
            b.writeInteger(s.counter)
            return b
        }
        props.correlationData = key
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<MQTTMessage, any Error>) in
            state.withLockedValue { $0.waiting[key] = c }
            do {
                try client.publish(topic, payload, qos: qos, properties: props) { [self] result in
                    if case .failure(let e) = result { finish(key, .failure(e)) }
                }
            } catch {
                finish(key, .failure(error))
                return
            }
            client.core.currentLoop?.scheduleTask(in: .nanoseconds(Int64(timeout * 1e9))) { [self] in
                finish(
                    key,
                    .failure(
                        ProtocolConnectionError(
                            "no response on \"\(responseTopic)\" to the request on \"\(topic)\" within \(timeout) s", reason: .timeout)))
            }
        }
    }

    private func finish(_ key: ByteBuffer, _ result: Result<MQTTMessage, any Error>) {
        state.withLockedValue { $0.waiting.removeValue(forKey: key) }?.resume(with: result)
    }
}
