import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The agent's Home Assistant discovery against mosquitto, seen as Home Assistant would: the
/// retained configs, its birth message, a button press, and `edge-agent ha remove`.
@Suite("Home Assistant discovery over MQTT")
struct HomeAssistantTests {
    typealias Layout = AgentEndToEndTests.Layout

    @Test(
        "configs retained on connect and again after Home Assistant's online; the identify button blinks the LED; a press of what is not allowed runs nothing; ha remove empties every config"
    )
    func discovery() throws {
        let broker = try Broker.start()
        defer { broker.stop() }
        let layout = try Layout()
        try layout.write(
            port: broker.port, extra: "home_assistant:\n  enabled: true\n  republish_delay: 1\n",
            sources: CommandTests.quietSources
                + "\n  - type: socket\n    name: pipeline\n    path: \(layout.socket)\n    event_types: [seen]"
                + "\n  - type: directory\n    name: snaps\n    path: \(layout.snapshots)")
        let configs = try ExternalSubscriber(broker: broker, topic: "homeassistant/#", qos: 1, format: "%r|%t|%p")
        let status = try ExternalSubscriber(broker: broker, topic: layout.statusTopic, qos: 1, format: "%p")
        let agent = try layout.start()
        defer { agent.stop() }
        try waitUntil(timeout: 30, "agent online") { status.lines.contains("online") }
        let node = layout.device.replacingOccurrences(of: ".", with: "_")
        func published() -> [(topic: String, body: [String: Any])] {
            configs.lines.compactMap { line in
                let f = line.split(separator: "|", maxSplits: 2).map(String.init)
                guard f.count == 3, f[1].hasSuffix("/config"),
                    let body = try? JSONSerialization.jsonObject(with: Data(f[2].utf8)) as? [String: Any]
                else { return nil }
                return (f[1], body)
            }
        }
        try waitUntil(timeout: 10, "the discovery configs") { published().count >= 10 }
        usleep(300_000)
        let first = published()
        let topics = Set(first.map(\.topic))
        #expect(first.count == topics.count, "each config once per connect")
        for t in [
            "binary_sensor/\(node)/connectivity", "event/\(node)/events_cam0", "event/\(node)/events_pipeline", "button/\(node)/identify",
            "image/\(node)/snapshot",
        ] {
            #expect(topics.contains("homeassistant/\(t)/config"), "\(t) in \(topics.sorted())")
        }
        #expect(!topics.contains { $0.contains("/restart/") }, "no restart button unless allowed")
        #expect(first.allSatisfy { ($0.body["device"] as? [String: Any])?["name"] as? String == layout.device })
        // Retained: a Home Assistant that subscribes later sees them all.
        let late = try ExternalSubscriber(broker: broker, topic: "homeassistant/#", qos: 1, format: "%r|%t")
        try waitUntil(timeout: 10, "retained configs") { late.lines.filter { $0.hasPrefix("1|") }.count == topics.count }
        // Home Assistant restarted: within republish_delay (1 s), all again.
        try CommandTests.send(broker, "homeassistant/status", "online")
        try waitUntil(timeout: 10, "the configs again") { published().count >= 2 * first.count }
        #expect(agent.output.contains("home assistant came online"))
        // The events carry event_type beside type, as the event entity reads them.
        let events = try ExternalSubscriber(broker: broker, topic: layout.eventsTopic, qos: 1, format: "%p")
        try AgentEndToEndTests.writeSocket(layout.socket, [#"{"type":"seen","what":"a fox"}"#])
        try waitUntil(timeout: 10, "the socket's event") { events.lines.contains { $0.contains("a fox") } }
        let event = try #require(AgentEndToEndTests.events(events).first { ($0["data"] as? [String: Any])?["what"] as? String == "a fox" })
        #expect(event["event_type"] as? String == "seen" && event["type"] as? String == "seen" && event["source"] as? String == "pipeline")
        // A snapshot: the image itself, retained with its content type, beside its event.
        let jpeg = [UInt8]([0xFF, 0xD8, 0xFF, 0xE0]) + (0..<2000).map { UInt8($0 % 251) }
        try Data(jpeg).write(to: URL(fileURLWithPath: layout.snapshots + "/cam-1.jpg"))
        try waitUntil(timeout: 10, "the snapshot's event") {
            events.lines.contains { $0.contains("cam-1.jpg") && $0.contains("image/jpeg") }
        }
        let image = try ExternalSubscriber(
            broker: broker, topic: "devices/\(layout.device)/snapshot", qos: 1, format: "%r|%C|%l|%x", extraArgs: ["-V", "mqttv5"])
        let hex = jpeg.map { String(format: "%02x", $0) }.joined()
        try waitUntil(timeout: 10, "the retained image") { !image.lines.isEmpty }
        #expect(image.lines.first == "1|image/jpeg|\(jpeg.count)|\(hex)", "\(image.lines.first?.prefix(60) ?? "none")")
        // The identify button: a plain PRESS, each press runs, the LED blinks 150/150.
        let press = "devices/\(layout.device)/commands/press/"
        try CommandTests.send(broker, press + "led/identify", "PRESS")
        try waitUntil(timeout: 5, "the LED blinking") {
            AgentEndToEndTests.intervals(layout.led, after: 0).suffix(4).allSatisfy { $0 >= 100 && $0 <= 250 } && layout.led.count > 6
        }
        try CommandTests.send(broker, press + "led/identify", "PRESS")
        try waitUntil(timeout: 5, "two presses, two runs") {
            agent.output.components(separatedBy: "button press led/identify: ok").count == 3
        }
        try CommandTests.send(broker, press + "agent/restart", "PRESS")
        try waitUntil(timeout: 5, "the refusal") {
            agent.output.contains("button press agent/restart: command \"agent/restart\" is not allowed")
        }
        #expect(agent.isRunning, "a refused press runs nothing")
        // A press published retained: live it is a press (the broker clears the flag for a
        // subscriber that is there); what the broker keeps would run at every connect: refused then.
        try CommandTests.send(broker, press + "led/identify", "PRESS", retain: true)
        try waitUntil(timeout: 5, "the live press") { agent.output.components(separatedBy: "button press led/identify: ok").count == 4 }
        agent.stop()
        let again = try layout.start()
        defer { again.stop() }
        try waitUntil(timeout: 20, "the kept press refused") { again.output.contains("a retained message is not a press") }
        #expect(!again.output.contains("button press led/identify: ok"))
        try CommandTests.send(broker, press + "led/identify", "", retain: true)  // not left on the broker
        // ha remove: an empty retained message on each; a later subscriber sees none.
        // A config this file no longer makes (a source removed since), still held by the broker.
        try CommandTests.send(broker, "homeassistant/sensor/\(node)/source_gone/config", #"{"name":"gone"}"#, retain: true)
        let out = try Broker.run(AgentEndToEndTests.binary, ["ha", "remove", "--config", layout.config])
        #expect(out.contains("discovery configs of \(layout.device)"), "\(out)")
        // A retained sentinel, which a later subscriber must see alone: it shows the subscriber was there.
        try CommandTests.send(broker, "homeassistant/sensor/sentinel/x/config", "{}", retain: true)
        let after = try ExternalSubscriber(broker: broker, topic: "homeassistant/#", qos: 1, format: "%r|%t")
        try waitUntil(timeout: 10, "the sentinel") { !after.lines.isEmpty }
        usleep(300_000)
        #expect(after.lines == ["1|homeassistant/sensor/sentinel/x/config"], "retained configs left: \(after.lines)")
    }
}
