import Communicator
import OfflineStore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// A test program for the offline store's black-box tests (Tests/IntegrationTests): it publishes
// numbered QoS 1/2 messages through the library with an offline store, prints one line per
// accepted message with the monotonic time, keeps trying to connect, and (with --drain) exits
// once the store is empty. The tests SIGKILL it at random moments.
//
//   offline-probe --port P --store DIR [--first N] [--count N] [--qos 1|2] [--interval-ms MS]
//                 [--persist offline|always] [--sync interval|always] [--capacity BYTES] [--drain]
//
// Output: "accepted SEQ T_NS" per message, "connected", "drained", "error: ...".
// Payload of message SEQ: the 12-digit SEQ, a space, and SEQ % 97 + 20 bytes of filler.

func flag(_ name: String) -> String? {
    let args = CommandLine.arguments
    guard let i = args.firstIndex(of: "--" + name), i + 1 < args.count else { return nil }
    return args[i + 1]
}

func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func say(_ line: String) {
    print(line)
    fflush(nil)
}

public func probePayload(_ seq: Int) -> String {
    var digits = String(seq)
    digits = String(repeating: "0", count: max(0, 12 - digits.count)) + digits
    return digits + " " + String(repeating: Character(UnicodeScalar(UInt8(97 + seq % 26))), count: seq % 97 + 20)
}

let port = Int(flag("port") ?? "") ?? 1883
let first = Int(flag("first") ?? "") ?? 1
let count = Int(flag("count") ?? "") ?? 0
let qos = Int(flag("qos") ?? "") ?? 1
let intervalMs = Int(flag("interval-ms") ?? "") ?? 1
let drain = CommandLine.arguments.contains("--drain")
var store = OfflineStoreConfig(directory: flag("store") ?? "/tmp/offline-probe")
store.capacity = Int(flag("capacity") ?? "") ?? 16 << 20
store.persist = flag("persist") == "always" ? .always : .offline
store.sync = flag("sync") == "always" ? .always : .default
let config = MQTTConfig(
    brokerAddress: "127.0.0.1", port: port, timeout: 5, maxReconnectAttempts: 0, reconnectInitialDelay: 0.2,
    reconnectMaxDelay: 0.5, clientID: .fixed(flag("client-id") ?? "offline-probe"), cleanStart: false, offlineStore: store)
let mqtt = MQTTProtocol(config: config)
if let s = mqtt.offlineStoreStatus, let d = s.degraded {
    say("error: \(d)")
    exit(2)
}

// Connect in the background: the first connect fails while the broker is down.
Task.detached {
    while true {
        do {
            try await mqtt.connect()
            say("connected")
            return
        } catch {
            try? await Task.sleep(nanoseconds: 200_000_000)
        }
    }
}

for seq in first..<(first + count) {
    while true {
        do {
            try mqtt.publish("probe/seq", probePayload(seq), qos: qos)
            say("accepted \(seq) \(monotonicNanos())")
            break
        } catch let e as ProtocolValidationError where e.reason == .queueFull {
            usleep(1000)  // back-pressure: the network thread is behind (publish waited `timeout` already)
        } catch {
            say("error: \(error)")
            exit(3)
        }
    }
    if intervalMs > 0 { usleep(UInt32(intervalMs * 1000)) }
}

if drain {
    while true {
        if mqtt.state == .connected, let s = mqtt.offlineStoreStatus, s.pending == 0 {
            say("drained")
            mqtt.disconnect()
            exit(0)
        }
        usleep(50_000)
    }
}
while true { sleep(60) }
