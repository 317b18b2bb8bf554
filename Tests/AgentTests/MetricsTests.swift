import CoreMetrics
import Foundation
import Testing

@testable import EdgeAgent

/// The agent's side of the metrics without a socket: the exporter's names and help, the text
/// `edge-agent status` parses, the report it shows, and the `metrics.*` keys.
@Suite("Metrics and status")
struct MetricsTests {
    @Test("the exporter: help for every name, the store's series under edge_agent_buffer_, round trips in seconds from 1 ms")
    func exporter() {
        let export = PrometheusExport()
        Counter(label: "mqtt_client_publishes_total", dimensions: [("qos", "1"), ("result", "ok")], factory: export).increment(by: 3)
        Gauge(label: "mqtt_client_store_pending_messages", dimensions: [], factory: export).record(12)
        Timer(label: "mqtt_client_round_trip_seconds", dimensions: [("packet", "publish")], factory: export).recordMilliseconds(2)
        let text = export.text()
        #expect(text.contains("# HELP mqtt_client_publishes_total Publishes that ended"))
        #expect(text.contains("mqtt_client_publishes_total{qos=\"1\",result=\"ok\"} 3"))
        #expect(text.contains("edge_agent_buffer_pending_messages 12") && !text.contains("mqtt_client_store_"), "\(text)")
        #expect(text.contains("mqtt_client_round_trip_seconds_bucket{packet=\"publish\",le=\"0.0025\"} 1"), "\(text)")
        #expect(text.contains("mqtt_client_round_trip_seconds_bucket{packet=\"publish\",le=\"0.001\"} 0"))
        let names = PrometheusExport.help.keys
        #expect(names.allSatisfy { $0.range(of: "^[a-z_]+$", options: .regularExpression) != nil })
        // Counters end in _total, and only counters do (the conventions promtool checks).
        #expect(
            AgentMetrics.help.keys.filter { $0.hasSuffix("_total") }.sorted() == [
                "edge_agent_commands_total", "edge_agent_events_failed_total", "edge_agent_events_total",
                "edge_agent_source_counts_total", "edge_agent_source_errors_total", "edge_agent_source_rejected_total",
                "edge_agent_source_restarts_total", "process_cpu_seconds_total",
            ])
    }

    @Test("the exposition text: labels with escapes, +Inf, comments and broken lines skipped")
    func parseText() {
        let m = MetricsText(
            """
            # HELP a_total A.
            # TYPE a_total counter
            a_total{x="1",y="with \\"quotes\\", a comma"} 5
            b 2.5 1700000000000
            h_bucket{le="+Inf"} 7
            {broken} 1
            c{x="unterminated 1
            d NaN
            """)
        #expect(m.value("a_total", ["x": "1"]) == 5)
        #expect(m.all("a_total").first?.labels["y"] == "with \"quotes\", a comma")
        #expect(m.value("b") == 2.5 && m.value("h_bucket", ["le": "+Inf"]) == 7)
        #expect(m.value("d")?.isNaN == true)
        #expect(m.samples.count == 4, "\(m.samples)")
    }

    static func scrape(pending: Int, ok: Int, connected: Bool) -> MetricsText {
        MetricsText(
            """
            edge_agent_info{version="1.2.3",device_id="gw-7"} 1.0
            edge_agent_uptime_seconds 7300
            edge_agent_state{state="connected"} \(connected ? 1 : 0)
            edge_agent_state{state="offline"} \(connected ? 0 : 1)
            edge_agent_connection_info{broker="10.0.0.2:8883",client_id="gw-7"} 1.0
            edge_agent_connected_since_timestamp_seconds \(connected ? 1_800_000_000 : 0)
            mqtt_client_reconnects_total 2
            mqtt_client_round_trip_seconds_sum{packet="publish"} 0.5
            mqtt_client_round_trip_seconds_count{packet="publish"} 100
            edge_agent_buffer_pending_messages \(pending)
            edge_agent_buffer_pending_bytes 20480
            edge_agent_buffer_fill_ratio 0.25
            edge_agent_buffer_oldest_message_age_seconds 95
            edge_agent_buffer_dropped_messages_total 0
            edge_agent_buffer_held_messages 0
            edge_agent_buffer_degraded 0
            mqtt_client_publishes_total{qos="1",result="ok"} \(ok)
            mqtt_client_publishes_total{qos="1",result="queue_full"} 3
            edge_agent_source_up{source="cam0"} 1
            edge_agent_source_up{source="pipeline"} 0
            edge_agent_events_total{source="cam0"} 40
            edge_agent_source_last_event_timestamp_seconds{source="cam0"} 1800000590
            edge_agent_source_rejected_total{source="pipeline",reason="invalid_json"} 4
            edge_agent_source_restarts_total{source="pipeline"} 1
            edge_agent_commands_total{command="ping",result="ok"} 2
            edge_agent_commands_total{command="reboot",result="forbidden"} 1
            edge_agent_led_pattern_info{pattern="on"} 1
            process_resident_memory_bytes 20971520
            process_open_fds 31
            """)
    }

    @Test(
        "the status report: since when, the buffer and its net drain between the two reads (what left less what came), sources, commands, for a person and as JSON"
    )
    func statusReport() throws {
        // 300 acknowledged in 2 s while 200 new ones came: the buffer shrinks by 50/s, not 150/s.
        let r = StatusReport(
            first: Self.scrape(pending: 600, ok: 1000, connected: true), second: Self.scrape(pending: 500, ok: 1300, connected: true),
            elapsed: 2, now: 1_800_000_600)
        let text = r.render()
        for part in [
            "edge-agent 1.2.3 on gw-7, up 2 h 1 min", "connected to 10.0.0.2:8883 since 2027-01-15T08:00:00.000Z (10 min 0 s)",
            "reconnects 2, round trip publish 5 ms", "500 messages, 20 KiB, 25 % full, oldest waiting 1 min 35 s",
            "draining at 50/s: empty in about 10 s", "qos1 queue_full 3", "cam0: running, 40 events, last 10 s ago",
            "pipeline: NOT RUNNING, 0 events, 1 restart; rejected invalid_json 4", "ping ok 2, reboot forbidden 1", "led         on",
            "20 MiB resident, 31 open files",
        ] {
            #expect(text.contains(part), "missing \"\(part)\" in:\n\(text)")
        }
        let offline = StatusReport(
            first: Self.scrape(pending: 500, ok: 1100, connected: false), second: Self.scrape(pending: 520, ok: 1100, connected: false),
            elapsed: 1, now: 1_800_000_600)
        #expect(offline.render().contains("offline, broker 10.0.0.2:8883") && offline.render().contains("growing by 20/s (offline)"))
        let json = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(offline)) as? [String: Any])
        let buffer = try #require(json["buffer"] as? [String: Any])
        #expect(buffer["messages"] as? Int == 520 && buffer["drain_eta_s"] == nil && buffer["drain_per_s"] as? Double == -20)
        let once = StatusReport(
            first: Self.scrape(pending: 5, ok: 0, connected: true), second: Self.scrape(pending: 5, ok: 0, connected: true), elapsed: 0,
            now: 0)
        #expect(once.render().contains("drain rate unknown (one read)"), "\(once.render())")
    }

    @Test("metrics.listen: address:port with an IP literal, IPv6 in brackets; anything else names the key and the form")
    func listenKey() throws {
        func parse(_ v: String) throws -> AgentConfig {
            try AgentConfig.parse("device_id: d\nmetrics:\n  listen: \"\(v)\"\n", source: "t.yaml", environment: [:], baseDirectory: "/x")
        }
        #expect(try parse("127.0.0.1:9464").metrics.endpoint! == ("127.0.0.1", 9464))
        #expect(try parse("[::1]:9100").metrics.endpoint! == ("::1", 9100))
        for bad in ["localhost:9464", "cafe:9464", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", ":9464"] {
            do {
                _ = try parse(bad)
                Issue.record("\(bad) accepted")
            } catch let e as ConfigError {
                #expect(e.problems.contains { $0.hasPrefix("metrics.listen: not address:port with an IP address") }, "\(e)")
            }
        }
        #expect(AgentConfig().metrics.enabled && AgentConfig().metrics.listen == "127.0.0.1:9464")
    }
}
