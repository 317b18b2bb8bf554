import Communicator
import FoundationEssentials
import NIOCore

/// The retained info document (docs/EVENTS.md): what the agent is doing, as one JSON value.
extension Agent {

    struct Info: Encodable {
        struct Connection: Encodable {
            var broker: String
            var state: String
            var connected_since: String?
            var reconnects: Int
            var last_error: String?
            var client_id: String
            /// Commands over mqtt.max_incoming_packet_size skipped unread (3.1.1).
            var dropped_incoming: Int
        }
        struct Buffer: Encodable {
            var pending: Int
            var fill: Double
            var dropped: Int
            var corrupt_skipped: Int
            /// Refused by a broker for a reason of its own; kept, tried after the next connect.
            var held: Int
            var degraded: String?
        }
        struct Source: Encodable {
            var name: String
            var type: String
            /// The supervisor's: running, starting, backing_off (after a failure), stopping, disabled.
            var state: String
            var last_error: String?
            var counters: [String: Int]
        }
        struct Events: Encodable {
            var published: Int
            var failed: Int
            var last_seq: UInt64
            /// When the last event was published (the wall clock's, as its timestamp).
            var last_at: String?
        }
        var device_id: String
        var version: String
        /// The installed package's version, when it says more than `version` (0.1.0+fix1).
        var package_version: String?
        var state: String
        var started_at: String
        var uptime_s: Int
        var connection: Connection
        var buffer: Buffer?
        var sources: [Source]
        var events: Events
        var led: String?
        var commands: [String: Int]?
        var update: UpdateStatus?
    }

    func info() -> Info {
        let st = connectionFigures
        let store = mqtt.offlineStoreStatus
        let ev = pipeline.figures
        return Info(
            device_id: config.deviceID, version: EdgeAgentVersion.current,
            package_version: packageVersion == EdgeAgentVersion.current ? nil : packageVersion, state: currentState.rawValue,
            started_at: EventPipeline.timestamp(startedAt), uptime_s: Int(ProcessInfo.processInfo.systemUptime - startedUptime),
            connection: .init(
                broker: mqtt.broker.description, state: "\(mqtt.state)", connected_since: st.connectedSince.map(EventPipeline.timestamp),
                reconnects: st.reconnects, last_error: mqtt.lastError?.message, client_id: mqtt.clientID,
                dropped_incoming: mqtt.droppedIncomingMessages),
            buffer: store.map {
                .init(
                    pending: $0.pending, fill: ($0.fill * 1000).rounded() / 1000, dropped: $0.dropped, corrupt_skipped: $0.corruptSkipped,
                    held: $0.held, degraded: $0.degraded)
            },
            sources: sources.map { s in
                let status = s.status
                var c = s.source.counters
                if !status.enabled { c["disabled"] = 1 }
                if status.restarts > 0 { c["restarts"] = status.restarts }
                if status.errors > 0 { c["errors"] = status.errors }
                return .init(name: s.name, type: s.source.kind, state: status.state, last_error: status.lastError, counters: c)
            },
            events: .init(
                published: ev.published, failed: ev.failed, last_seq: ev.lastSeq,
                last_at: ev.lastAt.map { EventPipeline.timestamp(Date(timeIntervalSince1970: Double($0) / 1000)) }),
            led: ledDescription,
            commands: config.commands.enabled
                ? commandCounts.withLockedValue { $0.values.reduce(into: [:]) { $0.merge($1, uniquingKeysWith: +) } } : nil,
            update: updateStatus.withLockedValue { $0 })
    }

    public func infoJSON() -> String {
        return (try? EventPipeline.encoder.encode(info())).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    func publishInfo() {
        guard mqtt.state == .connected else { return }
        do {
            try mqtt.publish(config.topic(config.topics.info), ByteBuffer(string: infoJSON()), qos: 1, retain: true, waitForRoom: false)
        } catch {
            logger.warning("info not published: \(error)")
        }
    }
}
