import Communicator
import DeviceAdapters
import FoundationEssentials
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Turns source events into the documented JSON (docs/EVENTS.md) and publishes them.
public final class EventPipeline: Sendable {
    let mqtt: MQTTProtocol
    let topic: String
    let snapshotTopic: String
    let qos: Int
    let deviceID: String
    let sequence: SequenceCounter
    let logger: Logger
    private let counts = NIOLockedValueBox(Figures())

    /// What the pipeline counted: in all, and per source (for the info document and metrics).
    struct Figures {
        struct PerSource {
            var published = 0
            var failed = 0
            /// The wall clock's milliseconds and the type of the source's last published event.
            var lastAt: UInt64?
            var lastType: String?
        }
        var published = 0
        var failed = 0
        var lastSeq: UInt64 = 0
        /// The wall clock's milliseconds when the last event was handed to the client.
        var lastAt: UInt64?
        /// By source name (as many as the configuration has sources).
        var bySource: [String: PerSource] = [:]
    }

    /// Before this time the clock is not trusted (a board without a battery starts in 1970).
    static let clockFloorMillis: UInt64 = 1_735_689_600_000  // 2025-01-01
    static var clockFloor: Date { Date(timeIntervalSince1970: Double(clockFloorMillis) / 1000) }

    init(mqtt: MQTTProtocol, topic: String, snapshotTopic: String, qos: Int, deviceID: String, sequence: SequenceCounter, logger: Logger) {
        self.mqtt = mqtt
        self.topic = topic
        self.snapshotTopic = snapshotTopic
        self.qos = qos
        self.deviceID = deviceID
        self.sequence = sequence
        self.logger = logger
    }

    var figures: Figures { counts.withLockedValue { $0 } }

    struct Envelope: Encodable {
        var event_id: String
        var device_id: String
        var source: String
        var source_type: String
        var type: String
        /// `type` again, under the name Home Assistant's event entity reads.
        var event_type: String
        var seq: UInt64
        var timestamp: String
        var clock_trusted: Bool
        var uptime_ms: UInt64
        var boot_id: String
        var data: [String: JSONValue]
    }

    /// UTC, milliseconds: `2026-11-29T06:41:51.278Z` (events, logs, the info document, inspect).
    static let iso8601 = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    static func timestamp(_ d: Date) -> String { iso8601.format(d) }

    /// Keys sorted, `/` as is (ClockCorrection re-encodes with it too).
    static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }

    /// Sources publish from tasks of their own and from the event loop: taking the sequence number
    /// and handing the message to the client happen under one lock, so events leave in sequence
    /// order. The hand-over never waits (a full publish queue fails the event at once, counted and
    /// logged): nothing waits while holding the lock, and the loop is never held up.
    private let order = NIOLock()

    func publish(_ event: SourceEvent, from source: any EventSource) {
        let send: (SourceImage, String)? = order.withLock {
            guard let id = publishInOrder(event, from: source), let image = event.image else { return nil }
            return takeImageTurn(image, of: id)  // in sequence order; no bytes copied under the lock
        }
        if let (image, id) = send { publish(image, of: id) }
    }

    /// The event's id, nil when it has none (no sequence number could be taken).
    private func publishInOrder(_ event: SourceEvent, from source: any EventSource) -> String? {
        let seq: UInt64
        do { seq = try sequence.take() } catch {
            logger.error("event from \(source.name) not published: \(error)")
            counts.withLockedValue {
                $0.failed += 1
                $0.bySource[source.name, default: .init()].failed += 1
            }
            return nil
        }
        let wall = BootClock.wallMillis()
        let envelope = Envelope(
            event_id: "\(deviceID)-\(seq)", device_id: deviceID, source: source.name, source_type: source.kind, type: event.type,
            event_type: event.type, seq: seq,
            timestamp: Self.timestamp(Date(timeIntervalSince1970: Double(wall) / 1000)), clock_trusted: wall >= Self.clockFloorMillis,
            uptime_ms: BootClock.millis(), boot_id: BootClock.id, data: event.fields)
        guard let json = try? Self.encoder.encode(envelope) else { return nil }
        do {
            try mqtt.publish(topic, ByteBuffer(bytes: json), qos: qos, waitForRoom: false)
            counts.withLockedValue {
                $0.published += 1
                $0.lastSeq = seq
                $0.lastAt = wall
                $0.bySource[source.name, default: .init()].published += 1
                $0.bySource[source.name]!.lastAt = wall
                $0.bySource[source.name]!.lastType = event.type
            }
        } catch {
            counts.withLockedValue {
                $0.failed += 1
                $0.bySource[source.name, default: .init()].failed += 1
            }
            logger.warning("event \(deviceID)-\(seq) (\(event.type) from \(source.name)) not published: \(error)")
        }
        return "\(deviceID)-\(seq)"
    }

    /// Images: at most one being sent (the publish queue counts messages, not bytes), and the
    /// newest of those that came meanwhile, sent when it is done.
    private let images = NIOLockedValueBox<(sending: Bool, next: (SourceImage, String)?)>((false, nil))

    /// The image to send now, or nil when one is being sent: then this one waits as the next,
    /// replacing an older one that waited.
    private func takeImageTurn(_ image: SourceImage, of event: String) -> (SourceImage, String)? {
        images.withLockedValue { s in
            guard s.sending else {
                s.sending = true
                return (image, event)
            }
            if let older = s.next { logger.info("snapshot image of event \(older.1) not published: a newer one came") }
            s.next = (image, event)
            return nil
        }
    }

    /// The image waiting as the next, once the one before is done.
    private func imageDone() {
        let next = images.withLockedValue { s -> (SourceImage, String)? in
            defer { s.next = nil }
            if s.next == nil { s.sending = false }
            return s.next
        }
        if let (image, event) = next { publish(image, of: event) }
    }

    /// The newest snapshot image, retained, QoS 0: never through the offline store (only the
    /// newest matters, and images must not wear the flash); while offline it is not sent at all,
    /// and the next one replaces it.
    private func publish(_ image: SourceImage, of event: String) {
        var properties = MQTTProperties()
        properties.contentType = image.contentType
        do {
            try mqtt.publish(
                snapshotTopic, ByteBuffer(bytes: image.bytes), qos: 0, retain: true, properties: properties, waitForRoom: false
            ) { [weak self] _ in self?.imageDone() }
        } catch {
            logger.info("snapshot image of event \(event) (\(image.bytes.count) bytes) not published: \(error)")
            imageDone()
        }
    }
}
