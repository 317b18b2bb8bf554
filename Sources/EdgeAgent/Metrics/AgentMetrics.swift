import Communicator
import CoreMetrics
import FoundationEssentials
import NIOConcurrencyHelpers

/// The agent's own metrics (docs/METRICS.md), read off the agent when a scrape comes: sources,
/// events, commands, state, LED, the connection's broker, and the process. Counters are the
/// agent's cumulative counts turned into increments; the MQTT client's (and the buffer's) come
/// from the client itself (`MQTTClientMetrics`).
final class AgentMetrics: Sendable {
    static let help: [String: String] = [
        "edge_agent_info": "1, labelled with the agent's version and device id",
        "edge_agent_state": "1 for the agent's state (label state: connected, connecting, offline, error, stopped), 0 for the others",
        "edge_agent_uptime_seconds": "Seconds since the agent started (monotonic)",
        "edge_agent_connection_info": "1, labelled with the broker of the current or last connection and the client id",
        "edge_agent_connected_since_timestamp_seconds": "When the current connection was made (wall clock; 0 while not connected)",
        "edge_agent_events_total": "Events published, by source",
        "edge_agent_events_failed_total": "Events not published (full queue, no sequence number), by source",
        "edge_agent_source_last_event_timestamp_seconds": "When the source's last event was published (wall clock)",
        "edge_agent_source_up": "1 while the source runs, 0 while it starts, backs off after a failure, or is disabled",
        "edge_agent_source_restarts_total": "Runs of the source started after the first (after failures and by commands)",
        "edge_agent_source_errors_total": "Runs of the source that failed",
        "edge_agent_source_rejected_total":
            "What a source refused, by reason (lines too long, not JSON, over the rate, connections over the limit)",
        "edge_agent_source_counts_total": "A source's other counters (snapshots, images, camera_online, ...), by counter",
        "edge_agent_commands_total":
            "Commands answered or presses run, by command (unknown: not a command) and result (ok or the error code)",
        "edge_agent_led_pattern_info": "1, labelled with the pattern the status LED shows",
        "process_resident_memory_bytes": "Resident memory of the agent process",
        "process_open_fds": "Open file descriptors of the agent process",
        "process_max_fds": "The agent process' limit on open file descriptors",
        "process_cpu_seconds_total": "CPU time the agent process used, user and system",
        "process_start_time_seconds": "When the agent process started (wall clock)",
    ]

    private let factory: any MetricsFactory
    private struct Series {
        var counters: [String: (counter: Counter, last: Int)] = [:]
        var gauges: [String: Gauge] = [:]
        /// Gauges of value 1 whose labels say the value (the broker, the LED pattern): the one of
        /// each name, with the labels it has.
        var infos: [String: (gauge: Gauge, labels: [String])] = [:]
        var cpu: (counter: FloatingPointCounter, last: Double)?
    }
    private let series = NIOLockedValueBox(Series())

    init(factory: any MetricsFactory) { self.factory = factory }

    /// Brings every series up to date with the agent (called before each scrape is emitted).
    func collect(_ agent: Agent) {
        series.withLockedValue { s in
            var c = Collector(series: s, factory: factory)
            c.read(agent)
            s = c.series
        }
    }

    private struct Collector {
        var series: Series
        let factory: any MetricsFactory

        private static func key(_ name: String, _ labels: [(String, String)]) -> String {
            name + labels.map { "|\($0.0)=\($0.1)" }.joined()
        }

        mutating func gauge(_ name: String, _ value: Double) { gauge(name, [], value) }

        mutating func gauge(_ name: String, _ labels: [(String, String)], _ value: Double) {
            let k = Self.key(name, labels)
            let g = series.gauges[k] ?? Gauge(label: name, dimensions: labels, factory: factory)
            series.gauges[k] = g
            g.record(value)
        }

        /// A cumulative count: what grew since the last scrape is added.
        mutating func count(_ name: String, _ labels: [(String, String)], _ total: Int) {
            let k = Self.key(name, labels)
            let entry = series.counters[k] ?? (Counter(label: name, dimensions: labels, factory: factory), 0)
            if total > entry.last { entry.counter.increment(by: total - entry.last) }
            series.counters[k] = (entry.counter, max(total, entry.last))
        }

        /// One series of the name, value 1, labelled `labels`; the one with other labels goes.
        mutating func info(_ name: String, _ labels: [(String, String)]) {
            let values = labels.map(\.1)
            if let old = series.infos[name], old.labels == values { return }
            series.infos[name]?.gauge.destroy()
            let g = Gauge(label: name, dimensions: labels, factory: factory)
            g.record(1)
            series.infos[name] = (g, values)
        }

        mutating func read(_ agent: Agent) {
            let config = agent.config
            info("edge_agent_info", [("version", EdgeAgentVersion.current), ("device_id", config.deviceID)])
            let current = agent.currentState
            for s in AgentState.allCases { gauge("edge_agent_state", [("state", s.rawValue)], s == current ? 1 : 0) }
            gauge("edge_agent_uptime_seconds", ProcessInfo.processInfo.systemUptime - agent.startedUptime)
            info("edge_agent_connection_info", [("broker", agent.mqtt.broker.description), ("client_id", agent.mqtt.clientID)])
            gauge(
                "edge_agent_connected_since_timestamp_seconds",
                agent.connectionFigures.connectedSince.map { ($0.timeIntervalSince1970 * 1000).rounded() / 1000 } ?? 0)
            let events = agent.pipeline.figures.bySource
            for source in agent.sources {
                let l = [("source", source.name)]
                let e = events[source.name] ?? .init()
                count("edge_agent_events_total", l, e.published)
                count("edge_agent_events_failed_total", l, e.failed)
                if let at = e.lastAt { gauge("edge_agent_source_last_event_timestamp_seconds", l, Double(at) / 1000) }
                let status = source.status
                gauge("edge_agent_source_up", l, status.running ? 1 : 0)
                count("edge_agent_source_restarts_total", l, status.restarts)
                count("edge_agent_source_errors_total", l, status.errors)
                for (name, n) in source.source.counters {
                    if name.hasPrefix("rejected_") {
                        count("edge_agent_source_rejected_total", l + [("reason", String(name.dropFirst("rejected_".count)))], n)
                    } else {
                        count("edge_agent_source_counts_total", l + [("counter", name)], n)
                    }
                }
            }
            for (command, results) in agent.commandCounts.withLockedValue({ $0 }) {
                for (result, n) in results { count("edge_agent_commands_total", [("command", command), ("result", result)], n) }
            }
            if let player = agent.player { info("edge_agent_led_pattern_info", [("pattern", "\(player.current)")]) }
            readProcess(startedAt: agent.startedAt)
        }

        mutating func readProcess(startedAt: Date) {
            let p = ProcessFigures.now()
            if let rss = p.residentBytes { gauge("process_resident_memory_bytes", Double(rss)) }
            if let fds = p.openFiles { gauge("process_open_fds", Double(fds)) }
            if let max = p.maxFiles { gauge("process_max_fds", Double(max)) }
            gauge("process_start_time_seconds", ProcessFigures.startSeconds ?? startedAt.timeIntervalSince1970)
            if let cpu = p.cpuSeconds {
                let entry = series.cpu ?? (FloatingPointCounter(label: "process_cpu_seconds_total", dimensions: [], factory: factory), 0)
                if cpu > entry.last { entry.counter.increment(by: cpu - entry.last) }
                series.cpu = (entry.counter, max(cpu, entry.last))
            }
        }
    }
}
