import CoreMetrics

/// The names of the client's metrics, with what each means (for a backend's help text). They
/// follow Prometheus' conventions: `_total` for counters, base units (`_seconds`, `_bytes`).
public enum MQTTClientMetrics {
    public static let help: [String: String] = [
        "mqtt_client_connection_state": "1 for the client's connection state (label state), 0 for the others",
        "mqtt_client_connections_total":
            "Sessions the broker accepted (CONNACK success; the clean first connection of the 3.1.1 session hop is not one)",
        "mqtt_client_reconnects_total": "Connections accepted after the first",
        "mqtt_client_publishes_total":
            "Publishes that ended, by qos and result (ok: acknowledged, or for QoS 0 handed to the socket; else why it failed)",
        "mqtt_client_received_messages_total": "Incoming messages handed to the application",
        "mqtt_client_dropped_incoming_messages_total": "Incoming messages skipped as larger than max_incoming_packet_size",
        "mqtt_client_inflight_messages": "QoS 1/2 publishes sent and not yet acknowledged",
        "mqtt_client_queued_messages": "Publishes waiting in memory for the connection or for room in the in-flight window",
        "mqtt_client_sent_bytes_total": "MQTT bytes written to the connection (inside TLS)",
        "mqtt_client_received_bytes_total": "MQTT bytes read from the connection (inside TLS)",
        "mqtt_client_store_pending_messages": "Messages waiting in the offline store for the broker's acknowledgement",
        "mqtt_client_store_pending_bytes": "Bytes of the messages waiting in the offline store",
        "mqtt_client_store_fill_ratio": "Share of the offline store's segments holding waiting messages (0 to 1)",
        "mqtt_client_store_dropped_messages_total": "Messages the full offline store dropped (when_full: drop_oldest)",
        "mqtt_client_store_held_messages": "Stored messages a broker refused for a reason of its own, tried again after the next connect",
        "mqtt_client_store_corrupt_skipped_total": "Corrupt records skipped when the offline store was opened",
        "mqtt_client_store_oldest_message_age_seconds":
            "How long the oldest waiting message has waited (0 when none waits or its age is unknown)",
        "mqtt_client_store_degraded": "1 while a disk error keeps the offline store from storing (messages are kept in memory)",
        "mqtt_client_round_trip_seconds":
            "Round trips to the broker: PINGREQ to PINGRESP (packet=pingreq), one publish at a time to its PUBACK or PUBREC (packet=publish)",
    ]
}

/// Publishes that ended, by QoS and outcome, and messages delivered, since the client started:
/// the plain counts the core keeps (on its loop) and the metrics read at an interval.
struct PublishTally: Sendable, Equatable {
    struct Outcome: Hashable, Sendable {
        var qos: Int
        /// `ok`, or the failure's `metricName` (`queue_full`, `connection_lost`, ...).
        var reason: String
    }
    /// By QoS: acknowledged (QoS 1 PUBACK, QoS 2 PUBCOMP), or for QoS 0 handed to the socket.
    var completed: [Int] = [0, 0, 0]
    var failed: [Outcome: Int] = [:]
    /// Incoming messages handed to the application (a QoS 2 repeat before PUBREL is not).
    var received = 0

    init() {}

    /// One batch of the core's actions, counted in locals before it is added.
    struct Batch {
        var ok = (0, 0, 0)
        var failed: [Outcome: Int] = [:]
        var received = 0
        /// Publishes that ended (stored ones too), and those among them whose room in the
        /// publish queue is given back now.
        var ended = false
        var freed = 0
        var hasOutcomes: Bool { ok.0 | ok.1 | ok.2 | received != 0 || !failed.isEmpty }
    }

    mutating func add(_ b: Batch) {
        completed[0] &+= b.ok.0
        completed[1] &+= b.ok.1
        completed[2] &+= b.ok.2
        received &+= b.received
        for (outcome, n) in b.failed { failed[outcome, default: 0] &+= n }
    }
}

extension SessionMachine<Completion>.Action {
    /// Adds what this action ends to a batch's counts (a stored message's end is counted where
    /// the store says whether it is final). A method on the element in place: a `switch` over
    /// `batch[i]` copied each action out, and destroyed the copy.
    func count(into b: inout PublishTally.Batch) {
        switch self {
        case .publishCompleted(.stored, _, _): b.ended = true
        case .publishCompleted(_, .success, let qos):
            b.ended = true
            b.freed += 1
            switch qos {
            case .atMostOnce: b.ok.0 += 1
            case .atLeastOnce: b.ok.1 += 1
            case .exactlyOnce: b.ok.2 += 1
            }
        case .publishCompleted(_, .failure(let f), let qos):
            b.ended = true
            b.freed += 1
            b.failed[.init(qos: Int(qos.rawValue), reason: f.metricName), default: 0] += 1
        case .qos0Sent: b.ok.0 += 1
        case .deliver: b.received += 1
        default: break
        }
    }
}

/// The client's metrics (swift-metrics), owned by the core's loop. The hot path counts in plain
/// integers (the core's `PublishTally` and byte counts); `report` turns what
/// changed since the last report into increments and gauge values, at `metricsInterval` and on
/// request. Round trips are sampled (one publish timed at a time) and recorded as they come.
final class ClientMetrics {
    /// What the core counts, read at one moment.
    struct Reading {
        /// `ConnectionState.metricLabel`.
        var state: String
        var connections: Int
        var tally: PublishTally
        var droppedIncoming: Int
        var inflight: Int
        var queued: Int
        var bytesSent: Int
        var bytesReceived: Int
        var store: Store?

        struct Store {
            var status: OfflineStoreStatus
            var pendingBytes: Int
            var oldestAge: UInt64?
        }
    }

    /// The offline store's series, made when a store is first reported.
    private struct StoreSeries {
        let pending, bytes, fill, held, oldestAge, degraded: Gauge
        let dropped, corrupt: Counter
    }
    private var storeSeries: StoreSeries?

    private let factory: any MetricsFactory
    private var last: Reading?
    private var states: [String: Gauge] = [:]
    private let connections, reconnects, received, droppedIncoming, bytesSent, bytesReceived: Counter
    private var publishes: [PublishTally.Outcome: Counter] = [:]
    private let inflight, queued: Gauge
    private let pingTimer, publishTimer: Timer

    init(factory: any MetricsFactory) {
        self.factory = factory
        func counter(_ name: String) -> Counter { Counter(label: name, dimensions: [], factory: factory) }
        connections = counter("mqtt_client_connections_total")
        reconnects = counter("mqtt_client_reconnects_total")
        received = counter("mqtt_client_received_messages_total")
        droppedIncoming = counter("mqtt_client_dropped_incoming_messages_total")
        bytesSent = counter("mqtt_client_sent_bytes_total")
        bytesReceived = counter("mqtt_client_received_bytes_total")
        inflight = Gauge(label: "mqtt_client_inflight_messages", dimensions: [], factory: factory)
        queued = Gauge(label: "mqtt_client_queued_messages", dimensions: [], factory: factory)
        pingTimer = Timer(label: "mqtt_client_round_trip_seconds", dimensions: [("packet", "pingreq")], factory: factory)
        publishTimer = Timer(label: "mqtt_client_round_trip_seconds", dimensions: [("packet", "publish")], factory: factory)
        for s in ConnectionState.metricLabels {
            states[s] = Gauge(label: "mqtt_client_connection_state", dimensions: [("state", s)], factory: factory)
        }
        // The successes exist from the start (a rate over a series that appears later is wrong).
        for q in 0..<3 { _ = publishCounter(.init(qos: q, reason: "ok")) }
    }

    private func publishCounter(_ key: PublishTally.Outcome) -> Counter {
        if let c = publishes[key] { return c }
        let c = Counter(
            label: "mqtt_client_publishes_total", dimensions: [("qos", "\(key.qos)"), ("result", key.reason)], factory: factory)
        publishes[key] = c
        return c
    }

    func roundTrip(_ kind: SessionMachine<Completion>.RoundTrip, nanoseconds: UInt64) {
        (kind == .ping ? pingTimer : publishTimer).recordNanoseconds(Int64(clamping: nanoseconds))
    }

    func report(_ now: Reading) {
        let was = last
        last = now
        if was?.state != now.state {
            for (s, g) in states { g.record(s == now.state ? 1 : 0) }
        }
        func add(_ c: Counter, _ value: Int, _ before: Int?) {
            let delta = value - (before ?? 0)
            if delta > 0 { c.increment(by: delta) }
        }
        add(connections, now.connections, was?.connections)
        add(reconnects, max(0, now.connections - 1), was.map { max(0, $0.connections - 1) })
        add(received, now.tally.received, was?.tally.received)
        add(droppedIncoming, now.droppedIncoming, was?.droppedIncoming)
        add(bytesSent, now.bytesSent, was?.bytesSent)
        add(bytesReceived, now.bytesReceived, was?.bytesReceived)
        for q in 0..<3 {
            add(publishCounter(.init(qos: q, reason: "ok")), now.tally.completed[q], was?.tally.completed[q])
        }
        for (key, count) in now.tally.failed where count != was?.tally.failed[key] {
            add(publishCounter(key), count, was?.tally.failed[key])
        }
        if was?.inflight != now.inflight { inflight.record(now.inflight) }
        if was?.queued != now.queued { queued.record(now.queued) }
        if let store = now.store { report(store, was: was?.store) }
    }

    private func report(_ now: Reading.Store, was: Reading.Store?) {
        let series =
            storeSeries
            ?? {
                func gauge(_ name: String) -> Gauge { Gauge(label: "mqtt_client_store_" + name, dimensions: [], factory: factory) }
                func counter(_ name: String) -> Counter { Counter(label: "mqtt_client_store_" + name, dimensions: [], factory: factory) }
                return StoreSeries(
                    pending: gauge("pending_messages"), bytes: gauge("pending_bytes"), fill: gauge("fill_ratio"),
                    held: gauge("held_messages"), oldestAge: gauge("oldest_message_age_seconds"), degraded: gauge("degraded"),
                    dropped: counter("dropped_messages_total"), corrupt: counter("corrupt_skipped_total"))
            }()
        storeSeries = series
        let s = now.status
        series.pending.record(s.pending)
        series.bytes.record(now.pendingBytes)
        series.fill.record(s.fill)
        series.held.record(s.held)
        series.oldestAge.record(now.oldestAge ?? 0)
        series.degraded.record(s.degraded == nil ? 0 : 1)
        if case let d = s.dropped - (was?.status.dropped ?? 0), d > 0 { series.dropped.increment(by: d) }
        if case let d = s.corruptSkipped - (was?.status.corruptSkipped ?? 0), d > 0 { series.corrupt.increment(by: d) }
    }
}

extension ConnectionState {
    /// The state without its details, as a metric label.
    var metricLabel: String {
        switch self {
        case .idle: "idle"
        case .connecting: "connecting"
        case .connected: "connected"
        case .reconnecting: "reconnecting"
        case .disconnected: "disconnected"
        }
    }

    static let metricLabels = ["idle", "connecting", "connected", "reconnecting", "disconnected"]
}
