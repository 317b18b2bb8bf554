import Communicator
import DeviceAdapters

/// One request as read from its message, before anything runs: the checks every request passes
/// (size, JSON object, `id`, `args`) and where the JSON asks for its answer. Pure, so that the
/// tests and the fuzzer read requests without a broker.
struct CommandRequest {
    /// A refusal, with the request's id when one could be read.
    struct Refusal: Error {
        var id: String?
        var failure: CommandServer.Failure
    }

    /// 3.1.1 (no properties): the JSON's `response_topic`, when valid and the message had no
    /// MQTT 5 Response Topic.
    var responseTopic: String?
    /// The JSON's `correlation_data`, echoed in the answer.
    var correlation: JSONValue?
    var parsed: Result<(id: String, args: [String: JSONValue]), Refusal>

    init(payload: some Collection<UInt8>, maxPayloadBytes: Int, hasResponseTopicProperty: Bool) {
        typealias F = CommandServer.Failure
        func refuse(_ id: String?, _ code: String, _ message: String) -> Result<(id: String, args: [String: JSONValue]), Refusal> {
            .failure(Refusal(id: id, failure: F(code: code, message: message)))
        }
        guard payload.count <= maxPayloadBytes else {
            parsed = refuse(nil, "too_large", "request of \(payload.count) bytes is over commands.max_payload_bytes \(maxPayloadBytes)")
            return
        }
        guard let value = JSONValue.parse(payload) else {
            let deep = JSONValue.depth(of: payload) > JSONValue.maxDepth
            parsed = refuse(
                nil, "bad_request",
                deep
                    ? "payload nests arrays or objects deeper than \(JSONValue.maxDepth) levels"
                    : "payload is not valid JSON; send {\"id\": \"...\", \"args\": {...}}")
            return
        }
        guard case .object(let request) = value else {
            parsed = refuse(nil, "bad_request", "payload must be a JSON object {\"id\": \"...\", \"args\": {...}}")
            return
        }
        if !hasResponseTopicProperty, let t = request["response_topic"]?.stringValue, Topic.nameProblem(t) == nil { responseTopic = t }
        correlation = request["correlation_data"]
        guard let idValue = request["id"], case .string(let id) = idValue, !id.isEmpty, id.utf8.count <= 128 else {
            parsed = refuse(nil, "bad_request", "\"id\" must be a string of 1 to 128 bytes")
            return
        }
        var args: [String: JSONValue] = [:]
        if let a = request["args"] {
            guard case .object(let o) = a else {
                parsed = refuse(id, "bad_arguments", "\"args\" must be a JSON object")
                return
            }
            args = o
        }
        parsed = .success((id, args))
    }
}
