import Benchmark
import Communicator
import Foundation
import NIOCore
import OfflineStore

// Hot paths of the MQTT client and the offline store, measured with google/swift-benchmark.
// Numbers, not tests: run with `swift run -c release micro-bench` in this folder.

func publish(_ size: Int, qos: QoS) -> MQTTPacket {
    .publish(.init(topic: "vision/events/cam0", payload: ByteBuffer(repeating: 0x41, count: size), qos: qos, packetID: qos == .atMostOnce ? nil : 7))
}

for (name, packet) in [("64 B QoS 1", publish(64, qos: .atLeastOnce)), ("4 KiB QoS 0", publish(4096, qos: .atMostOnce))] {
    for version in [MQTTVersion.v3_1_1, .v5_0] {
        benchmark("encode PUBLISH \(name) \(version)") {
            var out = ByteBuffer()
            out.reserveCapacity(5000)
            packet.encode(version: version, into: &out)
            precondition(out.readableBytes > 0)
        }
        let wire = packet.encoded(version: version)
        benchmark("decode PUBLISH \(name) \(version)") {
            var b = wire
            guard let frame = try MQTTFrame.next(from: &b, maxPacketSize: 1 << 20) else { fatalError("no frame") }
            _ = try MQTTPacket.decode(frame, version: version)
        }
    }
}

// Topic matching: one topic against 1,000 filters (levels, + and #), as the client does per
// message on 3.1.1.
let filters: [String] = (0..<1000).map { i in
    switch i % 4 {
    case 0: "site/\(i)/camera/+/events"
    case 1: "site/\(i)/#"
    case 2: "site/+/camera/\(i)/status"
    default: "other/\(i)/x"
    }
}
benchmark("match a topic against 1000 filters") {
    var n = 0
    for f in filters where Topic.matches(filter: f, topic: "site/500/camera/3/events") { n += 1 }
    precondition(n > 0)
}

// The ring buffer: appends (no sync) and a drain (read + acknowledge) on the real file system.
let dir = NSTemporaryDirectory() + "micro-bench-\(getpid())"
let store = try RingStore(directory: dir, options: .init(capacity: 64 << 20, sync: .none))
let body256 = [UInt8](repeating: 0x5A, count: 256)
benchmark("ring append 256 B (sync none)") {
    _ = try store.append(body256)
}
benchmark("ring drain 100 records of 256 B (read + acknowledge)") {
    for _ in 0..<100 { _ = try store.append(body256) }
    for r in try store.pending(after: 0, limit: 100) { try store.acknowledge(r.seq) }
}

Benchmark.main()
try? FileManager.default.removeItem(atPath: dir)
