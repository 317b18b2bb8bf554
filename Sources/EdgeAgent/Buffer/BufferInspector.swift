import Communicator
import FoundationEssentials
import OfflineStore

/// `edge-agent buffer inspect`: what waits in an offline store, for a person at a terminal.
/// Opens the store read-only (no lock, no writes), so it works beside a running agent; what the
/// agent has not synced yet is not visible.
public enum BufferInspector {
    public struct Summary: Sendable {
        public var directory: String
        public var segments: Int
        public var segmentSize: Int
        public var pending: Int
        public var pendingBytes: Int
        public var liveSegments: Int
        public var corruptSkipped: Int
        public var checkpointHead: UInt64?
        public var messages: Int
        public var qos2WithIdentity: Int
        public var oldest: (seq: UInt64, record: StoredRecord)?
        public var newest: (seq: UInt64, record: StoredRecord)?
        public var undecodable: Int
    }

    /// One line of `--dump` (JSON).
    struct DumpLine: Encodable {
        var seq: UInt64
        var kind: String
        var topic: String?
        var qos: Int?
        var retain: Bool?
        var accepted_at: String?
        var payload_bytes: Int?
        var payload: String?
        var payload_base64: String?
        var message: UInt64?
        var packet_id: UInt16?
        var error: String?
    }

    static func open(_ directory: String) throws -> RingStore {
        let options = try RingStore.existingOptions(directory: directory)
        return try RingStore(directory: directory, options: options, fileSystem: PosixFileSystem(readOnly: true))
    }

    public static func summary(directory: String) throws -> Summary {
        let store = try open(directory)
        let stats = store.stats
        var s = Summary(
            directory: directory, segments: stats.segments, segmentSize: stats.capacity / stats.segments, pending: stats.pending,
            pendingBytes: stats.pendingBytes, liveSegments: stats.liveSegments, corruptSkipped: store.recovery.corruptSkipped,
            checkpointHead: store.recovery.checkpointHead, messages: 0, qos2WithIdentity: 0, undecodable: 0)
        try forEach(store) { seq, record in
            switch record {
            case .message(let p, let at):
                s.messages += 1
                if s.oldest == nil { s.oldest = (seq, .message(p, accepted: at)) }
                s.newest = (seq, .message(p, accepted: at))
            case .identity: s.qos2WithIdentity += 1
            case .released: break
            case nil: s.undecodable += 1
            }
        }
        return s
    }

    /// Every waiting record, oldest first, as JSON lines.
    public static func dump(directory: String, limit: Int = .max, _ write: (String) -> Void) throws {
        let store = try open(directory)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var n = 0
        try forEach(store) { seq, record in
            guard n < limit else { return }
            n += 1
            var line = DumpLine(seq: seq, kind: "unknown")
            switch record {
            case .message(let p, let at):
                line.kind = "message"
                line.topic = p.topic
                line.qos = Int(p.qos.rawValue)
                line.retain = p.retain
                line.accepted_at = iso8601(millis: at.wallMillis)
                let bytes = Array(p.payload.readableBytesView)
                line.payload_bytes = bytes.count
                if let text = String(validating: bytes, as: UTF8.self) {
                    line.payload = text
                } else {
                    line.payload_base64 = Data(bytes).base64EncodedString()
                }
            case .identity(let m, let id):
                line.kind = "qos2-identity"
                line.message = m
                line.packet_id = id
            case .released(let m):
                line.kind = "qos2-released"
                line.message = m
            case nil:
                line.error = "not a record of edge-agent"
            }
            if let data = try? encoder.encode(line) { write(String(decoding: data, as: UTF8.self)) }
        }
    }

    static func forEach(_ store: RingStore, _ body: (UInt64, StoredRecord?) throws -> Void) throws {
        var cursor: UInt64 = 0
        while true {
            let batch = try store.pending(after: cursor, limit: 1024)
            guard let last = batch.last else { return }
            cursor = last.seq
            for r in batch { try body(r.seq, try? StoredRecord.decode(r.body)) }
        }
    }

    public static func format(_ s: Summary) -> String {
        func size(_ n: Int) -> String {
            n >= 1 << 20 ? "\(oneDecimal(Double(n) / 1_048_576)) MiB" : n >= 1024 ? "\(oneDecimal(Double(n) / 1024)) KiB" : "\(n) B"
        }
        func describe(_ e: (seq: UInt64, record: StoredRecord)?) -> String {
            guard let e, case .message(let p, let at) = e.record else { return "-" }
            return
                "#\(e.seq)  \(iso8601(millis: at.wallMillis))  QoS \(p.qos.rawValue)\(p.retain ? " retained" : "")  \(p.topic)  (\(p.payload.readableBytes) bytes)"
        }
        let fill = Double(s.liveSegments) / Double(max(1, s.segments)) * 100
        return """
            store:      \(s.directory)
            layout:     \(s.segments) segments × \(size(s.segmentSize)) = \(size(s.segments * s.segmentSize)) + 8 KiB checkpoint\(s.checkpointHead.map { " (head #\($0))" } ?? " (no checkpoint yet)")
            fill:       \(s.liveSegments) of \(s.segments) segments hold waiting records (\(oneDecimal(fill)) %)
            waiting:    \(s.messages) messages, \(size(s.pendingBytes)) in records\(s.qos2WithIdentity > 0 ? "; \(s.qos2WithIdentity) QoS 2 in flight with their packet identifiers" : "")
            oldest:     \(describe(s.oldest))
            newest:     \(describe(s.newest))
            corrupt:    \(s.corruptSkipped) records skipped when reading\(s.undecodable > 0 ? "; \(s.undecodable) records not written by edge-agent" : "")
            """
    }

    static func iso8601(millis: UInt64) -> String { EventPipeline.timestamp(Date(timeIntervalSince1970: Double(millis) / 1000)) }
}
