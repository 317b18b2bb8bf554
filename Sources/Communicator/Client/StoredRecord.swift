import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One record of the MQTT layer in the store. The store itself sees opaque bytes.
///
/// Layout (little-endian): `N` message: qos, flags (bit 0 retain), clock flags (bit 0 the wall
/// clock was synchronised), accepted-at (ms since the epoch, u64), boot id (16 bytes), boot clock
/// at acceptance (ms of CLOCK_BOOTTIME, u64), topic length (u16), topic, properties (5.0
/// encoding, length-prefixed), payload. `M` message, as written before the boot stamp (read,
/// no longer written): qos, flags, 0, accepted-at, topic length, topic, properties, payload.
/// `I` identity: message seq (u64), packet identifier (u16): written before the first send of a
/// QoS 2 message. `R` released: message seq (u64): written before PUBREL.
public enum StoredRecord: Equatable, Sendable {
    case message(MQTTPacket.Publish, accepted: Accepted)
    case identity(message: UInt64, packetID: UInt16)
    case released(message: UInt64)

    /// When a message was accepted, by both clocks: the wall clock for a later boot, and the boot
    /// clock, which no step of the wall clock moves, for the rest of this boot.
    public struct Accepted: Equatable, Sendable {
        /// Milliseconds since 1970 by the wall clock (possibly wrong: see `wallSynchronized`).
        public var wallMillis: UInt64
        /// nil in records written before the boot stamp.
        public var boot: Boot?

        public struct Boot: Equatable, Sendable {
            /// /proc/sys/kernel/random/boot_id, 16 bytes (new at every boot).
            public var id: [UInt8]
            /// CLOCK_BOOTTIME in milliseconds (counts suspend too; never steps).
            public var millis: UInt64
            /// The wall clock was synchronised (NTP) at the time, so `wallMillis` is right.
            public var wallSynchronized: Bool
        }

        public init(wallMillis: UInt64, boot: Boot?) {
            self.wallMillis = wallMillis
            self.boot = boot
        }

        /// Now, by both clocks; `synchronized` as `Outbox` last found it (`isWallClockSynchronized`).
        public static func now(synchronized: Bool) -> Accepted {
            Accepted(
                wallMillis: BootClock.wallMillis(),
                boot: Boot(id: BootClock.idBytes, millis: BootClock.millis(), wallSynchronized: synchronized))
        }

        /// Whether systemd-timesyncd has synchronised the wall clock (a file in /run, so it reads
        /// false again only after a reboot).
        public static func isWallClockSynchronized() -> Bool { access("/run/systemd/timesync/synchronized", F_OK) == 0 }

        /// How long the message has waited, in whole seconds, seen from `now`, for its Message
        /// Expiry. The same boot: by the boot clock, exact whatever the wall clock did. Another
        /// boot: by the wall clock, but only if it was synchronised both then and now; otherwise
        /// the wait is unknown and counts as 0 (the expiry runs from now), so a backlog stored
        /// before NTP stepped the clock forward is not expired at once. A wall clock that went
        /// back counts as 0 too. A record without the boot stamp: by the wall clock, as before.
        public func waitedSeconds(until now: Accepted) -> UInt64 {
            if let then = boot, let current = now.boot {
                if then.id == current.id { return current.millis >= then.millis ? (current.millis - then.millis) / 1000 : 0 }
                guard then.wallSynchronized && current.wallSynchronized else { return 0 }
            }
            return now.wallMillis >= wallMillis ? (now.wallMillis - wallMillis) / 1000 : 0
        }
    }

    public struct DecodeError: Error, CustomStringConvertible {
        public let description: String
    }

    public func encoded() -> [UInt8] {
        var b = ByteBuffer()
        switch self {
        case .message(let p, let at):
            let boot = at.boot ?? .init(id: [UInt8](repeating: 0, count: 16), millis: 0, wallSynchronized: false)
            b.writeInteger(UInt8(ascii: "N"))
            b.writeInteger(p.qos.rawValue)
            b.writeInteger(UInt8(p.retain ? 1 : 0))
            b.writeInteger(UInt8(boot.wallSynchronized ? 1 : 0))
            b.writeInteger(at.wallMillis, endianness: .little)
            b.writeBytes(boot.id.count == 16 ? boot.id : [UInt8](repeating: 0, count: 16))
            b.writeInteger(boot.millis, endianness: .little)
            b.writeInteger(UInt16(p.topic.utf8.count), endianness: .little)
            b.writeString(p.topic)
            p.properties.write(to: &b)
            b.writeImmutableBuffer(p.payload)
        case .identity(let m, let id):
            b.writeInteger(UInt8(ascii: "I"))
            b.writeInteger(m, endianness: .little)
            b.writeInteger(id, endianness: .little)
        case .released(let m):
            b.writeInteger(UInt8(ascii: "R"))
            b.writeInteger(m, endianness: .little)
        }
        return Array(b.readableBytesView)
    }

    public static func decode(_ bytes: [UInt8]) throws(DecodeError) -> StoredRecord {
        var b = ByteBuffer(bytes: bytes)
        func fail(_ what: String) -> DecodeError { DecodeError(description: "stored record of \(bytes.count) bytes: \(what)") }
        guard let kind = b.readInteger(as: UInt8.self) else { throw fail("empty") }
        switch kind {
        case UInt8(ascii: "M"), UInt8(ascii: "N"):
            guard let q = b.readInteger(as: UInt8.self), let qos = QoS(rawValue: q), let flags = b.readInteger(as: UInt8.self),
                let clockFlags = b.readInteger(as: UInt8.self), let at = b.readInteger(endianness: .little, as: UInt64.self)
            else { throw fail("message header truncated") }
            var accepted = Accepted(wallMillis: at, boot: nil)
            if kind == UInt8(ascii: "N") {
                guard let id = b.readBytes(length: 16), let millis = b.readInteger(endianness: .little, as: UInt64.self) else {
                    throw fail("message boot stamp truncated")
                }
                accepted.boot = .init(id: id, millis: millis, wallSynchronized: clockFlags & 1 == 1)
            }
            guard let n = b.readInteger(endianness: .little, as: UInt16.self), let topic = b.readString(length: Int(n)) else {
                throw fail("message topic truncated")
            }
            let props: MQTTProperties
            do { props = try MQTTProperties.read(from: &b, context: .publish) } catch { throw fail("bad properties: \(error)") }
            return .message(
                MQTTPacket.Publish(topic: topic, payload: b, qos: qos, retain: flags & 1 == 1, properties: props), accepted: accepted)
        case UInt8(ascii: "I"):
            guard let m = b.readInteger(endianness: .little, as: UInt64.self), let id = b.readInteger(endianness: .little, as: UInt16.self)
            else { throw fail("identity truncated") }
            return .identity(message: m, packetID: id)
        case UInt8(ascii: "R"):
            guard let m = b.readInteger(endianness: .little, as: UInt64.self) else { throw fail("released truncated") }
            return .released(message: m)
        default:
            throw fail("unknown kind \(kind)")
        }
    }
}
