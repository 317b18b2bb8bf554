import NIOCore

@testable import Communicator

/// Broker bytes → frame reader → decoder → session machine, as the connection does, in chunks
/// chosen by the input. Findings: a trap anywhere, a spin (libFuzzer's -timeout), a packet that
/// decodes but does not survive encode → decode unchanged, or a buffer holding more than the
/// limit and one chunk.
struct DecoderFuzz {
    typealias Machine = SessionMachine<Int>
    let version: MQTTVersion
    let limit: Int
    var machine: Machine
    var reader: MQTTFrameReader
    var buffer = ByteBuffer()
    var actions: [Machine.Action] = []
    var now: UInt64 = 1_000_000_000
    var token = 0

    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let mode = input.byte()
        let chunk = Int(input.byte() % 64) + 1
        var run = DecoderFuzz(version: mode & 1 == 0 ? .v3_1_1 : .v5_0, limit: [64, 1024, 65_536][Int(mode >> 1) % 3])
        run.feed(input.rest(), chunk: chunk)
    }

    init(version: MQTTVersion, limit: Int) {
        self.version = version
        self.limit = limit
        machine = Machine(
            options: .init(
                version: version, clientID: "fuzz", keepAliveSeconds: 5, maxInflight: 4, maxPacketSize: limit, queueLimit: 8,
                receiveMaximum: 4, topicAliasMaximum: 4))
        reader = MQTTFrameReader(maxPacketSize: limit, version: version)
        up()
        // Messages in flight both ways, a subscription pending.
        for qos in [QoS.atLeastOnce, .exactlyOnce, .atMostOnce] {
            token += 1
            machine.publish(.init(topic: "fuzz/out", payload: ByteBuffer(string: "x"), qos: qos), token: token, now: now, into: &actions)
        }
        token += 1
        machine.subscribe([.init(filter: "fuzz/#", qos: .exactlyOnce)], token: token, now: now, into: &actions)
        actions.removeAll(keepingCapacity: true)
    }

    /// A connection accepted (the session resumed: what was in flight is sent again).
    mutating func up() {
        machine.connectionEstablished(now: now, into: &actions)
        machine.received(.connack(.init(sessionPresent: true, returnCode: 0)), now: now, into: &actions)
        actions.removeAll(keepingCapacity: true)
    }

    /// Links an input may take down: after that its remaining bytes are not read.
    static let maxReconnects = 4
    var reconnects = 0

    /// What the connection does after a close or a decode error: a new link, a new reader.
    mutating func reconnect() {
        reconnects += 1
        machine.connectionLost(into: &actions)
        reader = MQTTFrameReader(maxPacketSize: limit, version: version)
        buffer.clear()
        up()
    }

    mutating func feed(_ stream: [UInt8], chunk: Int) {
        var offset = 0
        while offset < stream.count, reconnects < Self.maxReconnects {
            buffer.writeBytes(stream[offset..<min(offset + chunk, stream.count)])
            offset += chunk
            do {
                while let item = try reader.next(from: &buffer) {
                    now += 1_000_000
                    switch item {
                    case .frame(let frame):
                        let packet = try MQTTPacket.decode(frame, version: version)
                        Self.roundTrip(packet, version: version)
                        machine.received(packet, now: now, into: &actions)
                    case .droppedPublish(let d):
                        precondition(d.size > limit, "a packet of \(d.size) bytes within the limit \(limit) was dropped")
                        machine.droppedPublish(d, now: now, into: &actions)
                    }
                    machine.tick(now: now, into: &actions)
                    let closed = actions.contains { if case .close = $0 { true } else { false } }
                    actions.removeAll(keepingCapacity: true)
                    if closed { reconnect() }
                }
            } catch {
                reconnect()
            }
            precondition(
                buffer.readableBytes <= limit + chunk, "the reader holds \(buffer.readableBytes) bytes, over the limit \(limit) and a chunk"
            )
        }
    }

    /// What decodes must encode to bytes that decode to the same packet.
    static func roundTrip(_ packet: MQTTPacket, version: MQTTVersion) {
        let bytes = packet.encoded(version: version)
        do {
            let again = try MQTTPacket.decode(bytes, version: version)
            precondition(again == packet, "\(packet) re-encoded decodes as \(again)")
        } catch {
            preconditionFailure("\(packet) re-encoded does not decode: \(error)")
        }
    }
}
