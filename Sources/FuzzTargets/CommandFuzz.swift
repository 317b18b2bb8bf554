import FoundationEssentials

@testable import DeviceAdapters
@testable import EdgeAgent

/// A command request as it arrives from the broker: the JSON reader, the request checks of the
/// command server (size, id, args, response topic, correlation data), then `config/set`'s checks
/// of its values and the file they would make, validated as at start. Findings: a trap, a hang
/// on deep nesting, JSON that does not survive encode → parse unchanged.
enum CommandFuzz {
    static let base = "device_id: fuzz\nmqtt:\n  host: 127.0.0.1\nstatus:\n  info_interval: 30\n"

    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let hasResponseTopicProperty = input.byte() & 1 == 1
        let payload = input.rest()
        if let value = JSONValue.parse(payload) {
            let encoder = JSONEncoder()
            if let text = try? encoder.encode(value) {
                guard let again = JSONValue.parse(Array(text)) else { preconditionFailure("\(value) encodes as JSON that does not parse") }
                precondition(again == value, "\(value) re-encoded parses as \(again)")
            }
        }
        let request = CommandRequest(payload: payload, maxPayloadBytes: 4096, hasResponseTopicProperty: hasResponseTopicProperty)
        if let t = request.responseTopic { precondition(!hasResponseTopicProperty && !t.isEmpty) }
        switch request.parsed {
        case .success(let r):
            precondition(!r.id.isEmpty && r.id.utf8.count <= 128)
            guard let changes = try? ConfigUpdate.check(r.args["values"]) else { return }
            precondition(changes.count <= ConfigUpdate.maxKeys && changes.allSatisfy { ConfigUpdate.settable.contains($0.key) })
            guard let tree = try? ConfigTree(yaml: base, source: "base.yaml") else {
                preconditionFailure("the base configuration does not parse")
            }
            for c in changes { tree.set(c.key, c.value) }
            _ = try? AgentConfig.parse(tree.yaml(), source: "set.yaml", environment: [:], baseDirectory: "/nonexistent")
        case .failure(let refusal):
            precondition(!refusal.failure.code.isEmpty && !refusal.failure.message.isEmpty)
        }
    }
}
