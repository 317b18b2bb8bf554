import ArgumentParser
import Communicator
import DeviceAdapters
import EdgeAgent
import FoundationEssentials
import Logging
import NIOCore

/// `edge-agent send`: an operator's request to one device's command topic, answered through MQTT
/// 5.0 request/response (Response Topic + Correlation Data, `MQTTProtocol.request`).
struct SendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send",
        abstract: "Sends a command to a device and prints its answer (docs/COMMANDS.md).",
        discussion: """
            Uses the broker, TLS and credentials of --config, and its commands.topic with {device_id} \
            set to --device. Exit status 0 when the answer says ok, 1 for an error answer or none.
            Example: edge-agent send --config /etc/edge-agent/config.yaml --device cam-0042 led/set --args '{"pattern": "blink 200/200", "seconds": 60}'
            """)

    @Option(help: "Configuration file with the broker to use.")
    var config: String

    @Option(help: "The device_id of the board to command.")
    var device: String

    @Argument(help: "The command: ping, status, config/get, led/set, ...")
    var name: String

    @Option(help: "The command's arguments as a JSON object.")
    var args: String?

    @Option(help: "Seconds to wait for the answer.")
    var timeout: Double = 15

    func run() async throws {
        let agentConfig = try loadConfiguration(config)
        var request: [String: JSONValue] = ["id": .string("send-" + String(UInt64.random(in: 0...UInt64.max), radix: 36))]
        if let args {
            guard let object = JSONValue.parse(Array(args.utf8)), case .object = object else {
                printError("edge-agent: --args must be a JSON object, e.g. '{\"name\": \"cam0\"}'")
                throw ExitCode.validationFailure
            }
            request["args"] = object
        }
        var mqtt = agentConfig.mqttConfig()
        guard mqtt.protocolVersion == .v5_0 else {
            printError("edge-agent: send needs MQTT 5.0 (request/response); the configuration sets mqtt.protocol_version 3.1.1")
            throw ExitCode.failure
        }
        mqtt.clientID = .random
        mqtt.cleanStart = true
        mqtt.sessionExpiryInterval = 0
        mqtt.offlineStore = nil
        mqtt.maxReconnectAttempts = 1
        var logger = Logger(label: "edge-agent.send")
        logger.logLevel = .error
        let client = MQTTProtocol(config: mqtt, logger: logger)
        let topic = agentConfig.commands.topic.replacing("{device_id}", with: device) + "/" + name
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let payload = Array(try encoder.encode(JSONValue.object(request)))

        let outcome: Result<MQTTMessage, any Error>
        do {
            try await client.connect()
            outcome = .success(try await client.request(topic, ByteBuffer(bytes: payload), qos: 1, timeout: timeout))
        } catch {
            outcome = .failure(error)
        }
        await client.disconnect()
        switch outcome {
        case .failure(let error):
            printError("edge-agent: no answer from \(device) on \(topic): \((error as? any CommunicatorError)?.message ?? "\(error)")")
            throw ExitCode.failure
        case .success(let answer):
            print(answer.string)
            guard case .object(let fields)? = JSONValue.parse(answer.bytes), fields["status"] == .string("ok") else {
                throw ExitCode.failure
            }
        }
    }
}
