import NIOCore
import Testing

@testable import Communicator

/// A 3.1.1 PUBLISH on the wire with a body of `size` bytes of payload.
private func publish311(topic: String, qos: QoS, id: UInt16 = 7, payload: Int) -> [UInt8] {
    var b = ByteBuffer()
    let p = MQTTPacket.Publish(
        topic: topic, payload: ByteBuffer(repeating: 0xAB, count: payload), qos: qos, retain: false, dup: false,
        packetID: qos == .atMostOnce ? nil : id, properties: .init())
    MQTTPacket.publish(p).encode(version: .v3_1_1, into: &b)
    return Array(b.readableBytesView)
}

/// Feeds `stream` to a reader in chunks of `chunk` bytes, as a socket would; returns what came out
/// and the most bytes the buffer ever held after a call (what `MQTTInboundStream` holds).
private func read(_ stream: [UInt8], chunk: Int, limit: Int, version: MQTTVersion = .v3_1_1) throws -> (items: [InboundFrame], held: Int) {
    var reader = MQTTFrameReader(maxPacketSize: limit, version: version)
    var buffer = ByteBuffer()
    var items: [InboundFrame] = []
    var held = 0
    var i = 0
    while i < stream.count {
        buffer.writeBytes(stream[i..<min(i + chunk, stream.count)])
        i += chunk
        while let item = try reader.next(from: &buffer) { items.append(item) }
        held = max(held, buffer.readableBytes)
    }
    return (items, held)
}

@Suite("Frame reader: bounded buffering, oversized 3.1.1 PUBLISH skipped")
struct FrameReaderTests {
    @Test(
        "3.1.1: a PUBLISH over the limit is reported with its topic and id, its bytes skipped unbuffered, and the next packet decoded",
        arguments: [1, 7, 1500, 65_536])
    func skipsOversized(chunk: Int) throws {
        let big = publish311(topic: "devices/a/commands/ping", qos: .atLeastOnce, id: 300, payload: 1_000_000)
        let small = publish311(topic: "devices/a/commands/ping", qos: .atLeastOnce, id: 301, payload: 10)
        let (items, held) = try read(big + small, chunk: chunk, limit: 1024)
        #expect(items.count == 2)
        guard items.count == 2, case .droppedPublish(let d) = items[0], case .frame(let f) = items[1] else {
            Issue.record("expected a dropped publish, then a frame: \(items)")
            return
        }
        #expect(d == DroppedPublish(topic: "devices/a/commands/ping", qos: .atLeastOnce, packetID: 300, size: big.count, limit: 1024))
        guard case .publish(let p) = try MQTTPacket.decode(f, version: .v3_1_1) else {
            Issue.record("the packet after the skipped one did not decode as PUBLISH")
            return
        }
        #expect(p.packetID == 301 && p.payload.readableBytes == 10)
        // Never more than a chunk and a header were held: the 1 MB body was not buffered.
        #expect(held <= max(chunk, 1024), "held \(held) bytes")
    }

    /// Found by scripts/fuzz decoder: the reader waited for a long topic whole before skipping.
    @Test(
        "3.1.1: of an oversized PUBLISH with a 30,000-byte topic only 256 bytes of the topic are kept, none buffered",
        arguments: [1, 100, 4096])
    func longTopic(chunk: Int) throws {
        let topic = String(repeating: "t", count: 30_000)
        let (items, held) = try read(publish311(topic: topic, qos: .exactlyOnce, id: 77, payload: 10), chunk: chunk, limit: 1024)
        guard items.count == 1, case .droppedPublish(let d) = items[0] else {
            Issue.record("expected one dropped publish: \(items)")
            return
        }
        #expect(d.topic == String(topic.prefix(MQTTFrameReader.keptTopicBytes)) && d.packetID == 77 && d.qos == .exactlyOnce)
        #expect(held <= max(chunk, 7), "held \(held) bytes (a fixed header and a topic length at most)")
    }

    @Test("3.1.1: QoS 0 and QoS 2 oversized publishes keep what an acknowledgement needs")
    func qosLevels() throws {
        let q0 = publish311(topic: "t", qos: .atMostOnce, payload: 5000)
        let q2 = publish311(topic: "u", qos: .exactlyOnce, id: 9, payload: 5000)
        let (items, _) = try read(q0 + q2, chunk: 512, limit: 100)
        let dropped = items.compactMap { if case .droppedPublish(let d) = $0 { d } else { nil } }
        #expect(dropped.map(\.qos) == [.atMostOnce, .exactlyOnce])
        #expect(dropped.map(\.packetID) == [nil, 9])
        #expect(dropped.map(\.topic) == ["t", "u"])
    }

    @Test("5.0: a packet over the limit we announced is an error (DISCONNECT 0x95 follows), found from its header")
    func v5Refuses() {
        let big = Array(publish311(topic: "t", qos: .atMostOnce, payload: 5000).prefix(4))
        #expect(throws: MQTTDecodeError.self) { _ = try read(big, chunk: 4, limit: 100, version: .v5_0) }
    }

    @Test("3.1.1: oversized packets other than PUBLISH, and a PUBLISH whose header lies, are still errors")
    func otherOversized() {
        // SUBACK announcing 1000 bytes.
        #expect(throws: MQTTDecodeError.packetTooLarge(size: 1003, limit: 100)) { _ = try read([0x90, 0xE8, 0x07], chunk: 3, limit: 100) }
        // PUBLISH of 200 bytes whose topic length says 60,000.
        var lie: [UInt8] = [0x32, 0xC8, 0x01, 0xEA, 0x60]
        lie += [UInt8](repeating: 0x61, count: 198)
        #expect(throws: MQTTDecodeError.self) { _ = try read(lie, chunk: 64, limit: 100) }
        // QoS 1 PUBLISH with packet identifier 0.
        var zero: [UInt8] = [0x32, 0xC8, 0x01, 0x00, 0x01, 0x74, 0x00, 0x00]
        zero += [UInt8](repeating: 0, count: 195)
        #expect(throws: MQTTDecodeError.malformed("PUBLISH packet identifier 0")) { _ = try read(zero, chunk: 64, limit: 100) }
    }

    @Test("packets within the limit come out as before, split anywhere")
    func withinLimit() throws {
        let a = publish311(topic: "a", qos: .atLeastOnce, id: 1, payload: 50)
        let b = publish311(topic: "b", qos: .atMostOnce, payload: 0)
        for chunk in [1, 2, 3, 60, 1000] {
            let (items, _) = try read(a + b, chunk: chunk, limit: 100)
            let frames = items.compactMap { if case .frame(let f) = $0 { f } else { nil } }
            #expect(frames.count == 2 && items.count == 2)
        }
    }
}
