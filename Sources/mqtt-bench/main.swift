import Communicator
import Dispatch
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// A benchmark client on the shared contract (shared/bench/README.md), built on the library's
// public API only, so it measures what a user of `Communicator` gets.
//
//   mqtt-bench --host H --port P --qos {0,1,2} --count N --size BYTES --inflight W
//              --mode {pub,rtt} --topic T --timeout SECONDS [--nodelay {0,1}]
//
// Prints one JSON object on one line on stdout; exit status 0 when all N completed.

struct Arguments {
    var host = "127.0.0.1", port = 1883, qos = 1, count = 1000, size = 64, inflight = 1
    var mode = "pub", topic = "bench/edge", timeout = 60.0, nodelay = 1

    init(_ args: [String]) throws {
        var i = 0
        func value() throws -> String {
            i += 1
            guard i < args.count else { throw BenchError("missing value for \(args[i - 1])") }
            return args[i]
        }
        while i < args.count {
            switch args[i] {
            case "--host": host = try value()
            case "--port": port = Int(try value()) ?? port
            case "--qos": qos = Int(try value()) ?? qos
            case "--count": count = Int(try value()) ?? count
            case "--size": size = Int(try value()) ?? size
            case "--inflight": inflight = max(1, Int(try value()) ?? inflight)
            case "--mode": mode = try value()
            case "--topic": topic = try value()
            case "--timeout": timeout = Double(try value()) ?? timeout
            case "--nodelay": nodelay = Int(try value()) ?? nodelay
            default: throw BenchError("unknown argument \(args[i])")
            }
            i += 1
        }
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// The contract's payload: `size` bytes of "x", the first 12 the sequence number in zero-padded
/// decimal (when size allows). Filled in one write into a buffer of the right size: no String,
/// and no bounds and uniqueness checks per byte (`setInteger` per digit cost ~2,400 instructions
/// a message, callgrind).
/// The payloads, like the C clients': one buffer of `size` bytes filled once, whose first 12
/// bytes are message `seq`'s number in decimal. Each message takes the buffer as it is after its
/// number is set; the storage is written in place while the library holds no earlier message's
/// bytes (in-flight 1), and copied once when it still does.
final class Payloads: Sendable {
    private let template: NIOLockedValueBox<ByteBuffer>
    init(size: Int) {
        template = NIOLockedValueBox(ByteBuffer(repeating: UInt8(ascii: "x"), count: size))
    }
    func payload(_ seq: Int) -> ByteBuffer {
        template.withLockedValue { b in
            guard b.readableBytes >= 12 else { return b }
            b.withUnsafeMutableReadableBytes { raw in
                var v = seq
                for i in (0..<12).reversed() {
                    raw[i] = UInt8(ascii: "0") + UInt8(v % 10)
                    v /= 10
                }
            }
            return b
        }
    }
}

/// The sequence number in a payload's first 12 bytes (nil: not 12 decimal digits), read in place.
func sequenceNumber(_ payload: ByteBuffer) -> Int? {
    payload.withUnsafeReadableBytes { raw -> Int? in
        guard raw.count >= 12 else { return nil }
        var v = 0
        for i in 0..<12 {
            let d = raw[i] &- UInt8(ascii: "0")
            guard d < 10 else { return nil }
            v = v * 10 + Int(d)
        }
        return v
    }
}

func monotonicMicros() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) * 1e6 + Double(ts.tv_nsec) / 1000
}
func unixMicros() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000
}

func vmHWMkB() -> Int {
    guard let f = fopen("/proc/self/status", "r") else { return -1 }
    defer { fclose(f) }
    var line = [CChar](repeating: 0, count: 256)
    while fgets(&line, 256, f) != nil {
        let s = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if s.hasPrefix("VmHWM:") {
            return Int(s.dropFirst(6).split(whereSeparator: { $0 == " " || $0 == "\t" }).first ?? "") ?? -1
        }
    }
    return -1
}

/// A JSON value, written by hand (no Foundation: it would add megabytes of RSS to the measure).
enum JSON {
    case int(Int)
    case double(Double)
    case string(String)
    case bool(Bool)
    case null

    var text: String {
        switch self {
        case .int(let v): String(v)
        case .double(let v): v.isFinite ? String(v) : "0"
        case .bool(let v): v ? "true" : "false"
        case .null: "null"
        case .string(let v):
            "\""
                + v.unicodeScalars.map { c -> String in
                    switch c {
                    case "\"": "\\\""
                    case "\\": "\\\\"
                    case "\n": "\\n"
                    default: c.value < 0x20 ? "\\u00" + String(c.value, radix: 16).leftPad(2) : String(c)
                    }
                }.joined() + "\""
        }
    }
}

extension String {
    func leftPad(_ n: Int) -> String { String(repeating: "0", count: max(0, n - count)) + self }
}

func percentile(_ sorted: UnsafeMutableBufferPointer<Double>, _ p: Double) -> Int {
    guard !sorted.isEmpty else { return -1 }
    let idx = min(sorted.count - 1, Int((p / 100 * Double(sorted.count - 1)).rounded()))
    return Int(sorted[idx].rounded())
}

/// Per message, written from two threads at disjoint indices: when it was published, and then
/// its latency (negative until it completed), like the C clients' two arrays.
final class Timings: @unchecked Sendable {
    let start: UnsafeMutableBufferPointer<Double>
    let latency: UnsafeMutableBufferPointer<Double>
    init(_ n: Int) {
        start = .allocate(capacity: n)
        latency = .allocate(capacity: n)
        start.initialize(repeating: 0)
        latency.initialize(repeating: -1)
    }
    func completed(_ i: Int) { latency[i] = monotonicMicros() - start[i] }
    /// The latencies of the completed messages, sorted, in place.
    func sortedLatencies() -> UnsafeMutableBufferPointer<Double> {
        var k = 0
        for i in latency.indices where latency[i] >= 0 {
            latency[k] = latency[i]
            k += 1
        }
        var done = UnsafeMutableBufferPointer(rebasing: latency[0..<k])
        done.sort()
        return done
    }
}

/// The next sequence number to publish and the number completed: claimed and counted from the
/// main thread (the first W) and the network thread (the rest).
final class Counters: Sendable {
    let next = Atomic(0)
    let completed = Atomic(0)
}

func run(_ a: Arguments) -> [String: JSON] {
    var result: [String: JSON] = [
        "client": .string("edge"), "lib": .string("Communicator (SwiftNIO)"), "mode": .string(a.mode), "qos": .int(a.qos),
        "count": .int(a.count), "size": .int(a.size), "inflight": .int(a.mode == "rtt" ? 1 : a.inflight), "completed": .int(0),
        "seconds": .double(0), "msgs_per_s": .double(0), "p50_us": .int(-1), "p99_us": .int(-1), "max_rss_kb": .int(vmHWMkB()),
        "ok": .bool(false), "error": .null,
    ]
    guard a.mode == "pub" || a.mode == "rtt" else {
        result["error"] = .string("unsupported mode")
        return result
    }
    guard a.nodelay != 0 else {
        // The library always sets TCP_NODELAY (Transport/Connection.swift): it batches writes
        // itself, and Nagle would hold back acknowledgements and PINGREQ.
        result["error"] = .string("unsupported: --nodelay 0 (the library always sets TCP_NODELAY)")
        return result
    }
    let config = MQTTConfig(
        brokerAddress: a.host, port: a.port, timeout: a.timeout, keepalive: 60, sessionExpiryInterval: 0,
        publishQueueMaxsize: max(a.inflight, 1) + 16, clientID: .fixed("edge-bench-\(getpid())"),
        protocolVersion: .v3_1_1, cleanStart: true, maxInflight: max(a.inflight, 1))
    let mqtt = MQTTProtocol(config: config)
    let n = a.count
    let timings = Timings(n)
    let payloads = Payloads(size: a.size)
    let counters = Counters()
    let failure = NIOLockedValueBox<String?>(nil)
    let done = DispatchSemaphore(value: 0)
    let deadline = DispatchTime.now() + a.timeout
    var t0 = 0.0
    var tStartUnix: Int64 = 0
    do {
        try mqtt.connect()
        // Like the peers' bench clients, the next message goes out from the callback of the last
        // one, on the network thread: no hand-off between threads per message. The main thread
        // only starts the first W and waits for the end.
        /// Claims the next sequence number, nil when all N were started.
        @Sendable func claim() -> Int? {
            let i = counters.next.wrappingAdd(1, ordering: .relaxed).oldValue
            return i < n ? i : nil
        }
        @Sendable func fail(_ e: any Error) {
            failure.withLockedValue { $0 = $0 ?? "\(e)" }
            done.signal()
        }
        if a.mode == "rtt" {
            @Sendable func send(_ i: Int) {
                timings.start[i] = monotonicMicros()
                do { try mqtt.publish(a.topic, payloads.payload(i), qos: a.qos) } catch { fail(error) }
            }
            try mqtt.subscribe(
                a.topic, qos: a.qos,
                onMessage: { m in
                    guard let seq = sequenceNumber(m.payload), seq < n else { return }
                    timings.completed(seq)
                    let c = counters.completed.wrappingAdd(1, ordering: .relaxed).newValue
                    if c == n { done.signal() } else if let i = claim() { send(i) }
                })
            t0 = monotonicMicros()
            tStartUnix = unixMicros()
            if let i = claim() { send(i) }
        } else {
            @Sendable func send(_ i: Int) {
                timings.start[i] = monotonicMicros()
                do {
                    try mqtt.publish(a.topic, payloads.payload(i), qos: a.qos) { r in
                        timings.completed(i)
                        if case .failure(let e) = r {
                            fail(e)
                            return
                        }
                        let c = counters.completed.wrappingAdd(1, ordering: .relaxed).newValue
                        if c == n { done.signal() } else if let j = claim() { send(j) }
                    }
                } catch { fail(error) }
            }
            t0 = monotonicMicros()
            tStartUnix = unixMicros()
            for _ in 0..<a.inflight { if let i = claim() { send(i) } }
        }
        if done.wait(timeout: deadline) == .timedOut {
            throw BenchError("timeout with \(counters.completed.load(ordering: .relaxed)) completed")
        }
    } catch {
        failure.withLockedValue { $0 = $0 ?? "\(error)" }
    }
    let t1 = monotonicMicros()
    let tEndUnix = unixMicros()
    let c = counters.completed.load(ordering: .relaxed)
    let seconds = (t1 - t0) / 1e6
    let latencies = timings.sortedLatencies()
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    mqtt.disconnect()
    result["completed"] = .int(c)
    result["seconds"] = .double(seconds)
    result["msgs_per_s"] = .double(seconds > 0 ? Double(c) / seconds : 0)
    result["p50_us"] = .int(percentile(latencies, 50))
    result["p99_us"] = .int(percentile(latencies, 99))
    result["max_us"] = .int(Int(latencies.last ?? -1))
    result["max_rss_kb"] = .int(vmHWMkB())
    result["cpu_user_s"] = .double(Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6)
    result["cpu_sys_s"] = .double(Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6)
    result["t_start_unix_us"] = .int(Int(tStartUnix))
    result["t_end_unix_us"] = .int(Int(tEndUnix))
    let error = failure.withLockedValue { $0 }
    result["ok"] = .bool(c == n && error == nil)
    result["error"] = error.map { .string($0) } ?? .null
    return result
}

LoggingSetup.quiet()
let args: Arguments
do {
    args = try Arguments(Array(CommandLine.arguments.dropFirst()))
} catch {
    let text = Array("mqtt-bench: \(error)\n".utf8)
    _ = text.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(2)
}
let result = run(args)
print("{" + result.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value.text)" }.joined(separator: ",") + "}")
if case .bool(true) = result["ok"] { exit(0) }
exit(1)
