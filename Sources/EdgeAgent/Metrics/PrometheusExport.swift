import Communicator
import CoreMetrics
import Prometheus

/// swift-prometheus' registry behind swift-metrics, for the agent and its MQTT client: every
/// metric gets its help text (`MQTTClientMetrics.help`, `AgentMetrics.help`), the client's
/// offline store is shown under the agent's name for it (`mqtt_client_store_*` as
/// `edge_agent_buffer_*`), and round trips get buckets from 1 ms (the default starts at 5).
struct PrometheusExport: MetricsFactory {
    let registry = PrometheusCollectorRegistry()

    static let help = MQTTClientMetrics.help.merging(AgentMetrics.help) { a, _ in a }
    static let roundTripBuckets: [Duration] = [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000].map {
        .microseconds(Int64($0 * 1000))
    }

    /// The exported name and its descriptor.
    static func descriptor(_ label: String) -> MetricNameDescriptor {
        var name = label
        if name.hasPrefix("mqtt_client_store_") { name = "edge_agent_buffer_" + name.dropFirst("mqtt_client_store_".count) }
        return MetricNameDescriptor(metricName: name, unitName: "", helpText: help[label] ?? "")
    }

    /// The text a scrape gets.
    func text() -> String { registry.emitToString() }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: Self.descriptor(label), labels: dimensions)
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: Self.descriptor(label), labels: dimensions)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard aggregate else { return registry.makeGauge(descriptor: Self.descriptor(label), labels: dimensions) }
        return registry.makeValueHistogram(
            descriptor: Self.descriptor(label), labels: dimensions, buckets: [1, 10, 100, 1000, 10_000, 100_000])
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: Self.descriptor(label), labels: dimensions)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        registry.makeDurationHistogram(descriptor: Self.descriptor(label), labels: dimensions, buckets: Self.roundTripBuckets)
    }

    func destroyCounter(_ handler: any CounterHandler) {
        if let c = handler as? Prometheus.Counter { registry.unregisterCounter(c) }
    }

    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        if let c = handler as? Prometheus.Counter { registry.unregisterCounter(c) }
    }

    func destroyRecorder(_ handler: any RecorderHandler) {
        if let g = handler as? Prometheus.Gauge { registry.unregisterGauge(g) }
        if let h = handler as? ValueHistogram { registry.unregisterValueHistogram(h) }
    }

    func destroyMeter(_ handler: any MeterHandler) {
        if let g = handler as? Prometheus.Gauge { registry.unregisterGauge(g) }
    }

    func destroyTimer(_ handler: any TimerHandler) {
        if let h = handler as? DurationHistogram { registry.unregisterDurationHistogram(h) }
    }
}
