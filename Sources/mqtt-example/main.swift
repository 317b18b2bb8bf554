import Communicator
import Foundation

// A small program on the Communicator library: connects, subscribes to demo/#, publishes a
// message a second, and prints what arrives. Settings from the environment:
//   MQTT_HOST (127.0.0.1), MQTT_PORT (1883), MQTT_CA (PEM file: turns TLS on), MQTT_USER,
//   MQTT_PASSWORD, MQTT_VERSION (5 or 3.1.1), MQTT_COUNT (messages to send; 0 = forever).

let env = ProcessInfo.processInfo.environment
var config = MQTTConfig(
    brokerAddress: env["MQTT_HOST"] ?? "127.0.0.1",
    port: Int(env["MQTT_PORT"] ?? "") ?? 1883,
    timeout: 10,
    username: env["MQTT_USER"],
    password: env["MQTT_PASSWORD"],
    caCerts: env["MQTT_CA"],
    maxReconnectAttempts: 0,
    protocolVersion: env["MQTT_VERSION"] == "3.1.1" ? .v3_1_1 : .v5_0)
config.tlsServerName = env["MQTT_TLS_NAME"]
let count = Int(env["MQTT_COUNT"] ?? "") ?? 0

let mqtt = MQTTProtocol(config: config)
// Time since start by the monotonic clock (the wall clock may be stepped while this runs).
let start = ContinuousClock.now
func stamp() -> String {
    let elapsed = (ContinuousClock.now - start).components
    return String(format: "%7.3f s", Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18)
}

do {
    try mqtt.setWill(topic: "demo/status", payload: "offline", qos: 1, retain: true)
    try mqtt.connect()
    print("\(stamp()) connected to \(config.brokerAddress):\(config.port) as \(mqtt.clientID) (MQTT \(config.protocolVersion))")
    try mqtt.publish("demo/status", "online", qos: 1, retain: true)
    try mqtt.subscribe("demo/#") { topic, payload in print("\(stamp()) received [\(topic)] \(payload)") }
    var i = 0
    while count == 0 || i < count {
        i += 1
        try mqtt.publish("demo/hello", "hello #\(i) at \(Date())")
        Thread.sleep(forTimeInterval: count == 0 ? 1 : 0.1)
    }
    Thread.sleep(forTimeInterval: 0.3)
    try mqtt.publish("demo/status", "offline", qos: 1, retain: true)
    mqtt.disconnect()
    print("\(stamp()) disconnected")
} catch {
    print("\(stamp()) \(error)")
    exit(1)
}
