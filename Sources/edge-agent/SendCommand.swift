import ArgumentParser
import Communicator
import DeviceAdapters
import EdgeAgent
import FoundationEssentials
import Logging
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

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

    @Option(help: "agent/update: the Debian package to send (docs/UPDATES.md).")
    var package: String?

    @Option(help: "agent/update: the private key file that signs it (edge-agent update keygen).")
    var key: String?

    @Option(help: "agent/update: the package's version (default: what dpkg-deb -f says).")
    var packageVersion: String?

    @Option(help: "agent/update: a topic for the chunks, e.g. one the whole fleet subscribed to (default: the device's).")
    var chunkTopic: String?

    @Option(help: "agent/update: seconds to follow the install until the device reports its result (0: do not follow).")
    var follow: Double = 600

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
        // An update's transfer rides out a broker restart; one command does not wait for it.
        mqtt.maxReconnectAttempts = package == nil ? 1 : 30
        var logger = Logger(label: "edge-agent.send")
        logger.logLevel = .error
        let client = MQTTProtocol(config: mqtt, logger: logger)
        let topic = agentConfig.commands.topic.replacing("{device_id}", with: device) + "/" + name
        if let package {
            guard name == "agent/update", let key else {
                printError("edge-agent: --package goes with the command agent/update and --key (the private key that signs it)")
                throw ExitCode.validationFailure
            }
            let infoTopic = agentConfig.topics.info.replacing("{device_id}", with: device)
            try await sendUpdate(client, package: package, key: key, topic: topic, infoTopic: infoTopic)
            return
        }
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

extension SendCommand {
    /// Signs, announces and sends the package, then follows the install (exit 0: installed).
    func sendUpdate(_ client: MQTTProtocol, package path: String, key: String, topic: String, infoTopic: String) async throws {
        let say: @Sendable (String) -> Void = { line in print(line) }
        let (manifest, package) = try signedPackage(path, key: key, version: packageVersion)
        let version = manifest.version
        say("sending \(path): version \(version), \(package.count) bytes, sha256 \(manifest.sha256)")
        var sender = UpdateSender(
            client: client, loop: MultiThreadedEventLoopGroup.singleton.next(), commandTopic: topic, infoTopic: infoTopic)
        sender.answerTimeout = timeout
        sender.chunkTopic = chunkTopic
        let started = ContinuousClock.now
        do {
            try await client.connect()
            let answer = try await sender.transfer(package, manifest, say: say)
            let state = if case .string(let s)? = answer["state"] { s } else { "?" }
            say("transferred in \(started.duration(to: .now)); device: \(state)")
            if follow > 0 {
                let last = try await sender.follow(sha256: manifest.sha256, timeout: follow, say: say)
                let result = last["result"] == .string("installed")
                say("result: \(String(decoding: (try? JSONEncoder().encode(JSONValue.object(last))) ?? Data(), as: UTF8.self))")
                await client.disconnect()
                if !result { throw ExitCode.failure }
                return
            }
        } catch let f as UpdateSender.Failure {
            printError("edge-agent: update refused or failed: \(f)")
            await client.disconnect()
            throw ExitCode.failure
        } catch let e as ExitCode {
            throw e
        } catch {
            printError("edge-agent: update to \(device) failed: \((error as? any CommunicatorError)?.message ?? "\(error)")")
            await client.disconnect()
            throw ExitCode.failure
        }
        await client.disconnect()
    }
}
