import Communicator
import DeviceAdapters
import FoundationEssentials
import NIOCore

/// Events stamped while the wall clock was not trusted (`clock_trusted: false`: before 2025, a
/// board without a battery-backed clock that NTP has not set yet) and still waiting in the queue
/// or the offline store when the clock has become trusted get their `timestamp` recomputed from
/// the same boot's `uptime_ms` as they leave for the broker, with `clock_corrected: true`. Events
/// of an earlier boot (another `boot_id`) keep theirs: their boot clock means nothing now.
/// docs/EVENTS.md, "Timestamps".
struct ClockCorrection: MQTTPublishPreparer {
    /// Where the events go (nothing else is looked at).
    let topic: String
    /// How every event of this boot stamped untrusted starts (the envelope's keys are sorted):
    /// one comparison of a few bytes lets every other message pass.
    let untrustedPrefix: [UInt8]

    init(topic: String) {
        self.topic = topic
        untrustedPrefix = Array(#"{"boot_id":"\#(BootClock.id)","clock_trusted":false,"#.utf8)
    }

    /// This boot, read when a message leaves: `BootClock`, or fixed values in tests.
    struct Now: Equatable {
        var wallMillis: UInt64
        var bootMillis: UInt64
        var bootID: String

        static func read() -> Now { Now(wallMillis: BootClock.wallMillis(), bootMillis: BootClock.millis(), bootID: BootClock.id) }
    }

    func prepare(topic: String, payload: ByteBuffer) -> ByteBuffer? {
        guard payload.readableBytesView.starts(with: untrustedPrefix), topic == self.topic else { return nil }
        return Self.corrected(Array(payload.readableBytesView), now: .read()).map { ByteBuffer(bytes: $0) }
    }

    /// The event with its timestamp recomputed, or nil when it keeps its own: the clock was trusted
    /// when it was stamped, or is not now, or it is from another boot, or it is not an event.
    static func corrected(_ payload: [UInt8], now: Now) -> [UInt8]? {
        guard now.wallMillis >= EventPipeline.clockFloorMillis, !now.bootID.isEmpty,
            case .object(var event)? = JSONValue.parse(payload),
            event["clock_trusted"] == .bool(false), event["clock_corrected"] == nil,
            event["boot_id"] == .string(now.bootID),
            case .int(let uptime)? = event["uptime_ms"], uptime >= 0, UInt64(uptime) <= now.bootMillis
        else { return nil }
        let wall = now.wallMillis - (now.bootMillis - UInt64(uptime))
        guard wall >= EventPipeline.clockFloorMillis else { return nil }  // the event is older than the floor: not a wrong stamp to mend
        event["timestamp"] = .string(EventPipeline.timestamp(Date(timeIntervalSince1970: Double(wall) / 1000)))
        event["clock_corrected"] = .bool(true)
        return try? Array(EventPipeline.encoder.encode(JSONValue.object(event)))
    }
}
