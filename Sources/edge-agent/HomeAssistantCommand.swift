import ArgumentParser
import Communicator
import EdgeAgent

/// `edge-agent ha remove`: takes the device out of Home Assistant.
struct HomeAssistantCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ha", abstract: "Home Assistant's MQTT discovery (docs/HOME_ASSISTANT.md).", subcommands: [Remove.self])

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Removes the device from Home Assistant: an empty retained message on each of its discovery topics.",
            discussion: """
                Uses the broker and credentials of --config. A running agent with home_assistant.enabled publishes the configs \
                again when it next connects: set home_assistant.enabled to false (or stop the agent) first.
                """)

        @Option(help: "The configuration file (YAML).")
        var config: String = "/etc/edge-agent/config.yaml"

        func run() async throws {
            let cfg = try loadConfiguration(config)
            do {
                let topics = try await HomeAssistantRemoval.run(config: cfg)
                print(
                    "removed \(topics.count) discovery configs of \(cfg.deviceID) under \(cfg.homeAssistant.discoveryPrefix)/: Home Assistant drops the device"
                )
            } catch {
                printError(
                    "edge-agent: cannot remove \(cfg.deviceID) from Home Assistant on \(cfg.mqtt.host):\(cfg.mqtt.port): \((error as? any CommunicatorError)?.message ?? "\(error)")"
                )
                throw ExitCode.failure
            }
        }
    }
}
