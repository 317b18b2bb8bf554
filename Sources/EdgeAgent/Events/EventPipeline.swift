import Communicator
import DeviceAdapters
import FoundationEssentials
import Logging
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// Turns source events into the documented JSON (docs/EVENTS.md) and publishes them.
public final class EventPipeline: @unchecked Sendable {
    let mqtt: MQTTProtocol
    let topic: String
    let qos: Int
    let deviceID: String
    let sequence: SequenceCounter
    let logger: Logger
    private let counts = NIOLockedValueBox<(published: Int, failed: Int, lastSeq: UInt64)>((0, 0, 0))

    /// Before this time the clock is not trusted (a board without a battery starts in 1970).
    static let clockFloor = Date(timeIntervalSince1970: 1_735_689_600)  // 2025-01-01

    init(mqtt: MQTTProtocol, topic: String, qos: Int, deviceID: String, sequence: SequenceCounter, logger: Logger) {
        self.mqtt = mqtt
        self.topic = topic
        self.qos = qos
        self.deviceID = deviceID
        self.sequence = sequence
        self.logger = logger
    }

    var figures: (published: Int, failed: Int, lastSeq: UInt64) { counts.withLockedValue { $0 } }

    struct Envelope: Encodable {
        var event_id: String
        var device_id: String
        var source: String
        var source_type: String
        var type: String
        var seq: UInt64
        var timestamp: String
        var clock_trusted: Bool
        var uptime_ms: UInt64
        var data: [String: JSONValue]
    }

    static func uptimeMillis() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_BOOTTIME, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec / 1_000_000)
    }

    /// UTC, milliseconds: `2026-11-29T06:41:51.278Z` (events, logs, the info document, inspect).
    static let iso8601 = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    static func timestamp(_ d: Date) -> String { iso8601.format(d) }

    /// Sources publish from threads of their own: taking the sequence number and handing the
    /// message to the client happen under one lock, so events leave in sequence order.
    private let order = NIOLock()

    func publish(_ event: SourceEvent, from source: EventSource) {
        order.withLock { publishInOrder(event, from: source) }
    }

    private func publishInOrder(_ event: SourceEvent, from source: EventSource) {
        let seq: UInt64
        do { seq = try sequence.take() } catch {
            logger.error("event from \(source.name) not published: \(error)")
            counts.withLockedValue { $0.failed += 1 }
            return
        }
        let now = Date()
        let envelope = Envelope(
            event_id: "\(deviceID)-\(seq)", device_id: deviceID, source: source.name, source_type: source.kind, type: event.type, seq: seq,
            timestamp: Self.timestamp(now), clock_trusted: now >= Self.clockFloor, uptime_ms: Self.uptimeMillis(), data: event.fields)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let json = try? encoder.encode(envelope) else { return }
        do {
            try mqtt.publish(topic, Array(json), qos: qos)
            counts.withLockedValue {
                $0.published += 1
                $0.lastSeq = seq
            }
        } catch {
            counts.withLockedValue { $0.failed += 1 }
            logger.warning("event \(deviceID)-\(seq) (\(event.type) from \(source.name)) not published: \(error)")
        }
    }
}
