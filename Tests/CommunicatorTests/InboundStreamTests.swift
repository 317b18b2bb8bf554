import NIOCore
import Testing

@testable import Communicator

/// The connection's inbound stream (`MQTTInboundStream`): however the socket cuts the bytes
/// (whole, byte by byte, in random chunks), the same packets come out in order, nothing is left
/// held, and what is held never exceeds the packet being completed plus one read.
@Suite("Inbound stream: packets out of reads cut anywhere")
struct InboundStreamTests {
    static func bytes(_ packets: [MQTTPacket], _ version: MQTTVersion) -> [UInt8] {
        var b = ByteBuffer()
        for p in packets { p.encode(version: version, into: &b) }
        return Array(b.readableBytesView)
    }

    /// The ways a socket may cut `count` bytes: whole, one by one, and random chunks of 1–97
    /// bytes for a few fixed seeds (the same cuts on every run).
    static func cuttings(_ count: Int) -> [[Int]] {
        var all: [[Int]] = [[count], Array(repeating: 1, count: count)]
        for seed in [1, 2, 3, 42, 1_000] as [UInt64] {
            var rng = SplitMix64(seed: seed)
            var sizes: [Int] = []
            var left = count
            while left > 0 {
                let n = min(left, Int(rng.next() % 97) + 1)
                sizes.append(n)
                left -= n
            }
            all.append(sizes)
        }
        return all
    }

    /// Feeds `input` cut as `sizes`; returns what came out and the most bytes held after a read.
    static func run(_ input: [UInt8], _ sizes: [Int], version: MQTTVersion, limit: Int) throws -> (out: [Inbound], held: Int, left: Int) {
        var stream = MQTTInboundStream(version: version, maxPacketSize: limit)
        var out: [Inbound] = []
        var held = 0
        var at = 0
        for n in sizes {
            stream.append(ByteBuffer(bytes: input[at..<at + n]))
            at += n
            while let inbound = try stream.next() { out.append(inbound) }
            held = max(held, stream.heldBytes)
        }
        return (out, held, stream.heldBytes)
    }

    @Test("packets of both versions in any cutting: the same packets, in order, nothing left", arguments: [MQTTVersion.v3_1_1, .v5_0])
    func packets(version: MQTTVersion) throws {
        var props = MQTTProperties()
        if version == .v5_0 { props.userProperties = [("k", "v")] }
        var q1 = MQTTPacket.Publish(topic: "a/b", payload: ByteBuffer(string: "hello"), qos: .atLeastOnce, retain: false, properties: props)
        q1.packetID = 7
        var q2 = MQTTPacket.Publish(topic: "c", payload: ByteBuffer(repeating: 0x41, count: 300), qos: .exactlyOnce, retain: true)
        q2.packetID = 65_535
        let packets: [MQTTPacket] = [
            .connack(.init(sessionPresent: true, returnCode: 0, properties: .init())),
            .publish(.init(topic: "t", payload: ByteBuffer(), qos: .atMostOnce, retain: false)),
            .publish(q1), .publish(q2),
            .ack(.init(.puback, packetID: 1)), .ack(.init(.pubrel, packetID: 2)), .pingresp,
        ]
        let input = Self.bytes(packets, version)
        for sizes in Self.cuttings(input.count) {
            let r = try Self.run(input, sizes, version: version, limit: 1 << 20)
            #expect(r.out == packets.map(Inbound.packet), "cut as \(sizes)")
            #expect(r.left == 0)
            // Never more than the packet being completed (the largest is 311 bytes) and the read.
            #expect(r.held <= 311 + (sizes.max() ?? 0), "held \(r.held) cut as \(sizes)")
        }
    }

    @Test("3.1.1: a PUBLISH over the maximum is reported as dropped in any cutting, never held, and the next packet still comes")
    func droppedPublish() throws {
        var big = MQTTPacket.Publish(topic: "big", payload: ByteBuffer(repeating: 0x42, count: 20_000), qos: .atLeastOnce, retain: false)
        big.packetID = 9
        let input = Self.bytes([.publish(big), .pingresp], .v3_1_1)
        let size = MQTTPacket.publish(big).encodedSize(version: .v3_1_1)
        let dropped = DroppedPublish(topic: "big", qos: .atLeastOnce, packetID: 9, size: size, limit: 1024)
        for sizes in Self.cuttings(input.count) {
            let r = try Self.run(input, sizes, version: .v3_1_1, limit: 1024)
            #expect(r.out == [.droppedPublish(dropped), .packet(.pingresp)], "cut as \(sizes)")
            #expect(r.left == 0)
            #expect(r.held < 1024, "held \(r.held) of a 20 KB packet that is skipped, cut as \(sizes)")
        }
    }

    @Test("5.0: a packet over the maximum throws packet-too-large from its header, before its body is held")
    func oversizedThrows() throws {
        let big = MQTTPacket.publish(
            .init(topic: "big", payload: ByteBuffer(repeating: 0x42, count: 5_000), qos: .atMostOnce, retain: false))
        let input = Self.bytes([big], .v5_0)
        var stream = MQTTInboundStream(version: .v5_0, maxPacketSize: 1024)
        stream.append(ByteBuffer(bytes: input[0..<8]))
        #expect(throws: MQTTDecodeError.self) { _ = try stream.next() }
    }

    @Test("a malformed packet throws instead of being skipped; the packets before it came out")
    func malformedThrows() throws {
        var input = Self.bytes([.pingresp], .v3_1_1)
        input += [0x40, 0x01, 0x00]  // a PUBACK whose remaining length (1) cannot hold its packet id
        var stream = MQTTInboundStream(version: .v3_1_1, maxPacketSize: 1024)
        stream.append(ByteBuffer(bytes: input))
        #expect(try stream.next() == .packet(.pingresp))
        #expect(throws: MQTTDecodeError.self) { _ = try stream.next() }
    }
}
