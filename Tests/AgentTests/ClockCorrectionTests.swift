import Communicator
import DeviceAdapters
import Foundation
import NIOCore
import Testing

@testable import EdgeAgent

/// docs/EVENTS.md, "Timestamps": an event stamped while the clock was not trusted gets its
/// timestamp from its boot clock once the clock is trusted, as it leaves for the broker.
@Suite("Clock correction of events stamped before the clock was trusted")
struct ClockCorrectionTests {
    static let boot = "0b7c3d1e-9f2a-4c55-8e10-6a7b8c9d0e1f"
    /// 2026-12-02T10:00:00.000Z, 3,600,000 ms after the boot.
    static let now = ClockCorrection.Now(wallMillis: 1_796_205_600_000, bootMillis: 3_600_000, bootID: boot)

    static func event(
        trusted: Bool, boot: String = boot, uptime: Int = 60_000, timestamp: String = "1970-01-01T00:01:00.000Z", corrected: Bool? = nil
    ) -> [UInt8] {
        var e: [String: JSONValue] = [
            "clock_trusted": .bool(trusted), "boot_id": .string(boot), "uptime_ms": .int(uptime), "timestamp": .string(timestamp),
            "seq": .int(7), "event_id": .string("dev-7"), "type": .string("detection"),
            "data": .object([
                "label": .string("person"), "score": .number(0.629), "path": .string("/var/a/b.jpg"),
                "timestamp": .string("the source's own"),
            ]),
        ]
        if let corrected { e["clock_corrected"] = .bool(corrected) }
        return Array(try! EventPipeline.encoder.encode(JSONValue.object(e)))
    }

    static func object(_ bytes: [UInt8]?) -> [String: JSONValue]? {
        guard let bytes, case .object(let o)? = JSONValue.parse(bytes) else { return nil }
        return o
    }

    @Test("an untrusted stamp of this boot: the wall time of its uptime, clock_corrected, everything else as it was")
    func corrects() throws {
        let before = try #require(Self.object(Self.event(trusted: false)))
        let after = try #require(Self.object(ClockCorrection.corrected(Self.event(trusted: false), now: Self.now)))
        // 60,000 ms after the boot, the boot being 3,600,000 ms before now: 09:01:00.000.
        #expect(after["timestamp"] == .string("2026-12-02T09:01:00.000Z"))
        #expect(after["clock_corrected"] == .bool(true))
        #expect(after["clock_trusted"] == .bool(false), "it says how the event was stamped")
        var rest = after
        rest["timestamp"] = before["timestamp"]
        rest["clock_corrected"] = nil
        #expect(rest == before, "only the timestamp and the flag change (the source's own \"timestamp\" in data too stays)")
        let text = String(decoding: try #require(ClockCorrection.corrected(Self.event(trusted: false), now: Self.now)), as: UTF8.self)
        #expect(text.hasPrefix(#"{"boot_id":"#) && text.contains(#""path":"/var/a/b.jpg""#), "sorted keys, slashes as they were: \(text)")
    }

    @Test("left alone: a trusted stamp, another boot, a clock still untrusted, already corrected, an uptime after now, not an event")
    func leavesAlone() {
        #expect(ClockCorrection.corrected(Self.event(trusted: true), now: Self.now) == nil)
        #expect(
            ClockCorrection.corrected(Self.event(trusted: false, boot: "ffffffff-9f2a-4c55-8e10-6a7b8c9d0e1f"), now: Self.now) == nil,
            "an earlier boot's uptime says nothing about now")
        var stale = Self.now
        stale.wallMillis = 3_600_000  // 1970: NTP has not set the clock yet
        #expect(ClockCorrection.corrected(Self.event(trusted: false), now: stale) == nil)
        #expect(ClockCorrection.corrected(Self.event(trusted: false, corrected: true), now: Self.now) == nil)
        #expect(ClockCorrection.corrected(Self.event(trusted: false, uptime: 3_600_001), now: Self.now) == nil)
        var noBoot = Self.now
        noBoot.bootID = ""
        #expect(
            ClockCorrection.corrected(Self.event(trusted: false, boot: ""), now: noBoot) == nil,
            "without /proc's boot id nothing is matched")
        for junk in [#"{"clock_trusted":false,"#, #"{"clock_trusted":false,"uptime_ms":"x"}"#, "[1,2]", ""] {
            #expect(ClockCorrection.corrected(Array(junk.utf8), now: Self.now) == nil, "\(junk)")
        }
    }

    @Test("as the library's preparer: only the events topic, only payloads stamped untrusted; this boot's events are corrected")
    func preparer() throws {
        let c = ClockCorrection(topic: "devices/d/events")
        let mine = Self.event(trusted: false, boot: BootClock.id, uptime: Int(BootClock.millis()) - 1000)
        #expect(c.prepare(topic: "devices/d/other", payload: ByteBuffer(bytes: mine)) == nil)
        #expect(c.prepare(topic: "devices/d/events", payload: ByteBuffer(bytes: Self.event(trusted: true))) == nil)
        // This machine's clock is trusted (it is after 2025) and the boot is this one.
        let out = try #require(c.prepare(topic: "devices/d/events", payload: ByteBuffer(bytes: mine)))
        let event = try #require(Self.object(Array(out.readableBytesView)))
        #expect(event["clock_corrected"] == .bool(true))
        let stamp = try #require(event["timestamp"]?.stringValue)
        let when = try #require(try? Date(stamp, strategy: .iso8601.year().month().day().time(includingFractionalSeconds: true)))
        #expect(abs(when.timeIntervalSinceNow + 1) < 5, "a second ago by this boot's clock: \(stamp)")
    }
}
