import NIOCore
import NIOTestUtils
import Testing

@testable import Communicator

/// The channel's decoder (`MQTTPacketDecoder` in a `ByteToMessageHandler`) under NIO's own
/// verifier: every input is fed whole, byte by byte and in random chunks, and must give the
/// same packets each time, with nothing left over.
@Suite("Packet decoder in the NIO pipeline (ByteToMessageDecoderVerifier)")
struct PacketDecoderHandlerTests {
    static func bytes(_ packets: [MQTTPacket], _ version: MQTTVersion) -> ByteBuffer {
        var b = ByteBuffer()
        for p in packets { p.encode(version: version, into: &b) }
        return b
    }

    @Test("packets of both versions in any chunking: the same packets, in order", arguments: [MQTTVersion.v3_1_1, .v5_0])
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
        let pairs =
            packets.map { p in (Self.bytes([p], version), [Inbound.packet(p)]) } + [
                (Self.bytes(packets, version), packets.map(Inbound.packet))
            ]
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) {
            MQTTPacketDecoder(version: version, maxPacketSize: 1 << 20)
        }
    }

    @Test("3.1.1: a PUBLISH over the maximum is reported as dropped in any chunking, and the next packet still comes")
    func droppedPublish() throws {
        var big = MQTTPacket.Publish(topic: "big", payload: ByteBuffer(repeating: 0x42, count: 2000), qos: .atLeastOnce, retain: false)
        big.packetID = 9
        let input = Self.bytes([.publish(big), .pingresp], .v3_1_1)
        let size = MQTTPacket.publish(big).encodedSize(version: .v3_1_1)
        let dropped = DroppedPublish(topic: "big", qos: .atLeastOnce, packetID: 9, size: size, limit: 1024)
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: [(input, [.droppedPublish(dropped), .packet(.pingresp)])]) {
            MQTTPacketDecoder(version: .v3_1_1, maxPacketSize: 1024)
        }
    }
}
