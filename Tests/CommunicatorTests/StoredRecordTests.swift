import NIOCore
import Testing

@testable import Communicator

@Suite("Stored records and their clocks")
struct StoredRecordTests {
    typealias Accepted = StoredRecord.Accepted
    static let bootA: [UInt8] = Array(repeating: 0xA1, count: 16)
    static let bootB: [UInt8] = Array(repeating: 0xB2, count: 16)
    static let year: UInt64 = 365 * 86_400 * 1000

    func at(wall: UInt64, boot: [UInt8]?, bootMillis: UInt64 = 0, synced: Bool = true) -> Accepted {
        Accepted(wallMillis: wall, boot: boot.map { .init(id: $0, millis: bootMillis, wallSynchronized: synced) })
    }

    @Test("a message record keeps its topic, flags, properties, payload and both clocks")
    func roundTrip() throws {
        var props = MQTTProperties()
        props.messageExpiryInterval = 60
        let p = MQTTPacket.Publish(topic: "a/b", payload: ByteBuffer(string: "x"), qos: .exactlyOnce, retain: true, properties: props)
        let accepted = at(wall: 1_700_000_000_000, boot: Self.bootA, bootMillis: 12_345, synced: true)
        #expect(try StoredRecord.decode(StoredRecord.message(p, accepted: accepted).encoded()) == .message(p, accepted: accepted))
        #expect(Accepted.now(synchronized: true).boot?.id.count == 16)
    }

    @Test("a record written before the boot stamp (kind M) still reads, with the wall clock only")
    func legacy() throws {
        var b = ByteBuffer()
        b.writeBytes([UInt8(ascii: "M"), 1, 0, 0])
        b.writeInteger(UInt64(1_700_000_000_000), endianness: .little)
        b.writeInteger(UInt16(1), endianness: .little)
        b.writeString("t")
        MQTTProperties().write(to: &b)
        b.writeString("payload")
        guard case .message(let p, let accepted) = try StoredRecord.decode(Array(b.readableBytesView)) else {
            Issue.record("not a message")
            return
        }
        #expect(p.topic == "t" && p.qos == .atLeastOnce && String(buffer: p.payload) == "payload")
        #expect(accepted == Accepted(wallMillis: 1_700_000_000_000, boot: nil))
    }

    /// Before: the age was the wall clock's difference alone, so NTP stepping a stale clock a
    /// year forward expired every stored message with an expiry at the next read.
    @Test("Message Expiry age: the boot clock within a boot, a synchronised wall clock across boots, otherwise unknown (0)")
    func waited() {
        let stored = at(wall: 1_000_000, boot: Self.bootA, bootMillis: 50_000, synced: false)
        // Same boot, the wall clock stepped a year forward meanwhile: 30 s by the boot clock.
        #expect(stored.waitedSeconds(until: at(wall: 1_000_000 + Self.year, boot: Self.bootA, bootMillis: 80_000)) == 30)
        // Same boot, the wall clock stepped back a day: still 30 s.
        #expect(stored.waitedSeconds(until: at(wall: 0, boot: Self.bootA, bootMillis: 80_000)) == 30)
        // Another boot, stored before NTP synchronised: unknown, 0 (the expiry runs from now).
        #expect(stored.waitedSeconds(until: at(wall: 1_000_000 + Self.year, boot: Self.bootB, bootMillis: 10)) == 0)
        // Another boot, synchronised both times: the wall clock's difference.
        let synced = at(wall: 1_000_000, boot: Self.bootA, bootMillis: 50_000, synced: true)
        #expect(synced.waitedSeconds(until: at(wall: 1_000_000 + 7_200_000, boot: Self.bootB, bootMillis: 10)) == 7200)
        // Another boot, the clock now before the stored time: 0.
        #expect(synced.waitedSeconds(until: at(wall: 0, boot: Self.bootB, bootMillis: 10)) == 0)
        // A record without the stamp: the wall clock, as before.
        #expect(at(wall: 1_000_000, boot: nil).waitedSeconds(until: at(wall: 1_060_000, boot: Self.bootB)) == 60)
    }
}
