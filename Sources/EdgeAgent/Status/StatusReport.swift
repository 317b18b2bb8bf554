import FoundationEssentials

/// What `edge-agent status` shows: the running agent as read off its metrics endpoint, twice,
/// `elapsed` seconds apart (for the buffer's net drain: what left less what came). `render()` is
/// the screen for a person; the value itself is the `--json` form.
public struct StatusReport: Encodable, Sendable {
    public struct Connection: Encodable, Sendable {
        /// The agent's state (connected, connecting, offline, error, stopped).
        var state: String
        var broker: String
        var client_id: String
        var connected_since: String?
        var connected_for_s: Int?
        var reconnects: Int
        /// Mean round trips over the interval (or since the start when none came in it).
        var round_trip_publish_ms: Double?
        var round_trip_ping_ms: Double?
    }
    public struct Buffer: Encodable, Sendable {
        var messages: Int
        var bytes: Int
        var fill: Double
        var oldest_age_s: Int?
        var dropped: Int
        var held: Int
        var degraded: Bool
        /// How much the buffer shrank per second between the reads (negative: it grew; nil: one
        /// read, no rate).
        var drain_per_s: Double?
        /// At that rate, seconds until the buffer is empty (nil: it does not shrink).
        var drain_eta_s: Int?
    }
    public struct Source: Encodable, Sendable {
        var name: String
        var up: Bool
        var events: Int
        var failed: Int
        var last_event_at: String?
        var last_event_age_s: Int?
        var restarts: Int
        var rejected: [String: Int]
        var counts: [String: Int]
    }
    var version: String
    var device_id: String
    var uptime_s: Int
    var connection: Connection
    var buffer: Buffer?
    var publishes_ok: [String: Int]
    var publishes_failed: [String: Int]
    var sources: [Source]
    var commands: [String: [String: Int]]
    var led: String?
    var resident_bytes: Int?
    var open_fds: Int?

    /// `first` and `second` scraped `elapsed` seconds apart (0: one read); `now`: the wall
    /// clock's seconds.
    public init(first: MetricsText, second m: MetricsText, elapsed: Double, now: Double) {
        let info = m.all("edge_agent_info").first?.labels ?? [:]
        version = info["version"] ?? "?"
        device_id = info["device_id"] ?? "?"
        uptime_s = Int(m.value("edge_agent_uptime_seconds") ?? 0)
        let link = m.all("edge_agent_connection_info").first?.labels ?? [:]
        let since = m.value("edge_agent_connected_since_timestamp_seconds").flatMap { $0 > 0 ? $0 : nil }
        func meanMs(_ packet: String) -> Double? {
            let l = ["packet": packet]
            let (s1, c1) = (m.sum("mqtt_client_round_trip_seconds_sum", l), m.sum("mqtt_client_round_trip_seconds_count", l))
            let (s0, c0) = (first.sum("mqtt_client_round_trip_seconds_sum", l), first.sum("mqtt_client_round_trip_seconds_count", l))
            if c1 > c0 { return ((s1 - s0) / (c1 - c0) * 1e4).rounded() / 10 }
            return c1 > 0 ? (s1 / c1 * 1e4).rounded() / 10 : nil
        }
        connection = Connection(
            state: m.all("edge_agent_state").first { $0.value == 1 }?.labels["state"] ?? "?", broker: link["broker"] ?? "?",
            client_id: link["client_id"] ?? "?", connected_since: since.map { EventPipeline.timestamp(Date(timeIntervalSince1970: $0)) },
            connected_for_s: since.map { Int(max(0, now - $0)) }, reconnects: Int(m.value("mqtt_client_reconnects_total") ?? 0),
            round_trip_publish_ms: meanMs("publish"), round_trip_ping_ms: meanMs("pingreq"))
        if let pending = m.value("edge_agent_buffer_pending_messages") {
            let before = first.value("edge_agent_buffer_pending_messages") ?? pending
            let rate: Double? = elapsed > 0 ? (before - pending) / elapsed : nil
            let age = m.value("edge_agent_buffer_oldest_message_age_seconds") ?? 0
            buffer = Buffer(
                messages: Int(pending), bytes: Int(m.value("edge_agent_buffer_pending_bytes") ?? 0),
                fill: m.value("edge_agent_buffer_fill_ratio") ?? 0, oldest_age_s: pending > 0 && age > 0 ? Int(age) : nil,
                dropped: Int(m.value("edge_agent_buffer_dropped_messages_total") ?? 0),
                held: Int(m.value("edge_agent_buffer_held_messages") ?? 0), degraded: (m.value("edge_agent_buffer_degraded") ?? 0) > 0,
                drain_per_s: rate.map { ($0 * 10).rounded() / 10 },
                drain_eta_s: pending == 0 ? 0 : (rate ?? 0) > 0 ? Int((pending / rate!).rounded(.up)) : nil)
        }
        var ok: [String: Int] = [:]
        var failed: [String: Int] = [:]
        for s in m.all("mqtt_client_publishes_total") {
            let qos = "qos\(s.labels["qos"] ?? "?")"
            if s.labels["result"] == "ok" {
                ok[qos] = Int(s.value)
            } else if s.value > 0 {
                failed["\(qos) \(s.labels["result"] ?? "?")"] = Int(s.value)
            }
        }
        publishes_ok = ok
        publishes_failed = failed
        let names = Set(m.all("edge_agent_source_up").compactMap { $0.labels["source"] }).sorted()
        sources = names.map { name in
            let l = ["source": name]
            let last = m.value("edge_agent_source_last_event_timestamp_seconds", l)
            var rejected: [String: Int] = [:]
            for s in m.all("edge_agent_source_rejected_total", l) where s.value > 0 { rejected[s.labels["reason"] ?? "?"] = Int(s.value) }
            var counts: [String: Int] = [:]
            for s in m.all("edge_agent_source_counts_total", l) { counts[s.labels["counter"] ?? "?"] = Int(s.value) }
            return Source(
                name: name, up: m.value("edge_agent_source_up", l) == 1, events: Int(m.value("edge_agent_events_total", l) ?? 0),
                failed: Int(m.value("edge_agent_events_failed_total", l) ?? 0),
                last_event_at: last.map { EventPipeline.timestamp(Date(timeIntervalSince1970: $0)) },
                last_event_age_s: last.map { Int(max(0, now - $0)) }, restarts: Int(m.value("edge_agent_source_restarts_total", l) ?? 0),
                rejected: rejected, counts: counts)
        }
        var commands: [String: [String: Int]] = [:]
        for s in m.all("edge_agent_commands_total") {
            commands[s.labels["command"] ?? "?", default: [:]][s.labels["result"] ?? "?"] = Int(s.value)
        }
        self.commands = commands
        led = m.all("edge_agent_led_pattern_info").first?.labels["pattern"]
        resident_bytes = m.value("process_resident_memory_bytes").map { Int($0) }
        open_fds = m.value("process_open_fds").map { Int($0) }
    }

    /// One screen for a person.
    public func render() -> String {
        var lines = ["edge-agent \(version) on \(device_id), up \(Self.duration(uptime_s))"]
        let c = connection
        var link = "\(c.state)"
        if let since = c.connected_since, let age = c.connected_for_s {
            link += " to \(c.broker) since \(since) (\(Self.duration(age)))"
        } else {
            link += ", broker \(c.broker)"
        }
        lines.append("connection  \(link), client id \(c.client_id)")
        var rtt: [String] = []
        if let p = c.round_trip_publish_ms { rtt.append("publish \(Self.number(p)) ms") }
        if let p = c.round_trip_ping_ms { rtt.append("ping \(Self.number(p)) ms") }
        lines.append("            reconnects \(c.reconnects)\(rtt.isEmpty ? "" : ", round trip " + rtt.joined(separator: ", "))")
        if let b = buffer {
            var text = "\(b.messages) message\(b.messages == 1 ? "" : "s"), \(Self.bytes(b.bytes)), \(Self.number(b.fill * 100)) % full"
            if let age = b.oldest_age_s { text += ", oldest waiting \(Self.duration(age))" }
            lines.append("buffer      " + text)
            let drain: String =
                if b.messages == 0 {
                    "empty"
                } else if let eta = b.drain_eta_s, let rate = b.drain_per_s {
                    "draining at \(Self.number(rate))/s: empty in about \(Self.duration(eta))"
                } else if let rate = b.drain_per_s, rate < 0 {
                    "growing by \(Self.number(-rate))/s (\(c.state))"
                } else if b.drain_per_s == nil {
                    "drain rate unknown (one read)"
                } else {
                    "not draining (\(c.state))"
                }
            lines.append(
                "            \(drain); dropped \(b.dropped), held \(b.held)\(b.degraded ? ", DEGRADED: disk errors, kept in memory" : "")")
        } else {
            lines.append("buffer      none (offline_store not configured)")
        }
        let ok = publishes_ok.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        let failed = publishes_failed.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        lines.append("publishes   ok: \(ok.isEmpty ? "none" : ok); failed: \(failed.isEmpty ? "none" : failed)")
        for (i, s) in sources.enumerated() {
            var text = "\(s.name): \(s.up ? "running" : "NOT RUNNING"), \(s.events) event\(s.events == 1 ? "" : "s")"
            if let age = s.last_event_age_s { text += ", last \(Self.duration(age)) ago" }
            if s.failed > 0 { text += ", \(s.failed) not published" }
            if s.restarts > 0 { text += ", \(s.restarts) restart\(s.restarts == 1 ? "" : "s")" }
            if !s.rejected.isEmpty {
                text += "; rejected " + s.rejected.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            }
            lines.append((i == 0 ? "sources     " : "            ") + text)
        }
        if sources.isEmpty { lines.append("sources     none") }
        let commandText = commands.sorted { $0.key < $1.key }.map { name, results in
            "\(name) " + results.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: "/")
        }.joined(separator: ", ")
        lines.append("commands    \(commandText.isEmpty ? "none answered" : commandText)")
        lines.append("led         \(led ?? "none")")
        var process: [String] = []
        if let r = resident_bytes { process.append("\(Self.bytes(r)) resident") }
        if let f = open_fds { process.append("\(f) open files") }
        if !process.isEmpty { lines.append("process     " + process.joined(separator: ", ")) }
        return lines.joined(separator: "\n")
    }

    static func number(_ v: Double) -> String {
        let r = (v * 10).rounded() / 10
        return r == r.rounded() ? "\(Int(r))" : "\(r)"
    }

    static func bytes(_ n: Int) -> String {
        if n < 1024 { return "\(n) B" }
        if n < 1 << 20 { return "\(number(Double(n) / 1024)) KiB" }
        return "\(number(Double(n) / 1_048_576)) MiB"
    }

    static func duration(_ s: Int) -> String {
        if s < 60 { return "\(s) s" }
        if s < 3600 { return "\(s / 60) min \(s % 60) s" }
        if s < 86_400 { return "\(s / 3600) h \(s % 3600 / 60) min" }
        return "\(s / 86_400) d \(s % 86_400 / 3600) h"
    }
}
