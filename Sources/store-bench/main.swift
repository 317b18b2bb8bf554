import Dispatch
import OfflineStore

#if canImport(Glibc)
import Glibc
#endif

// Benchmarks of the offline store on the real file system (not part of the test command).
//   store-bench [DIR]     (default /var/tmp/store-bench; needs ~70 MiB free)
// Prints appends/s per record size and sync policy, bytes written per payload byte,
// fdatasync calls per minute at 10 msg/s and when idle, and the recovery time of a full store.

let base = CommandLine.arguments.dropFirst().first ?? "/var/tmp/store-bench"

func seconds(_ body: () throws -> Void) rethrows -> Double {
    let t0 = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
}

func fresh(_ name: String) -> String {
    let dir = "\(base)/\(name)"
    _ = system("rm -rf '\(dir)' && mkdir -p '\(dir)'")
    return dir
}

func report(_ line: String) { print(line) }

func fmt(_ d: Double, _ digits: Int = 3) -> String {
    var m = 1.0
    for _ in 0..<digits { m *= 10 }
    return String((d * m).rounded() / m)
}

do {
    report("# store-bench in \(base)")
    // 1. Appends per second.
    for size in [256, 4096] {
        for (name, policy) in [("interval", RingStore.SyncPolicy.default), ("always", .always), ("none", .none)] {
            let dir = fresh("append-\(size)-\(name)")
            let store = try RingStore(directory: dir, options: .init(capacity: 64 << 20, sync: policy))
            let body = [UInt8](repeating: 0x5A, count: size)
            let n = name == "always" ? 2_000 : 50_000
            var clock = 0.0
            let t = try seconds {
                for _ in 0..<n {
                    try store.append(body, now: clock)
                    clock += 0.0001
                    try store.tick(now: clock)
                }
                try store.sync()
            }
            report("appends/s \(size) B \(name): \(Int(Double(n) / t)) (fdatasync \(store.stats.syncs))")
        }
    }

    // 2. Write amplification and syncs at a steady rate, on a simulated clock.
    do {
        let dir = fresh("steady")
        let store = try RingStore(directory: dir, options: .init(capacity: 64 << 20))
        let body = [UInt8](repeating: 0x33, count: 1024)
        var payload = 0
        for i in 0..<(100 * 60) {  // 100 msg/s for a minute
            let now = Double(i) / 100
            let seq = try store.append(body, now: now)
            payload += body.count
            if i % 2 == 0 { try store.acknowledge(seq - 1, now: now) }
            try store.tick(now: now)
        }
        try store.sync()
        report(
            "bytes written per payload byte, 1 KiB at 100 msg/s, interval: \(fmt(Double(store.stats.bytesWritten) / Double(payload))) (\(store.stats.bytesWritten) written / \(payload) payload; fdatasync \(store.stats.syncs))"
        )
    }
    do {
        let dir = fresh("ten")
        let store = try RingStore(directory: dir, options: .init(capacity: 64 << 20))
        for i in 0..<(10 * 60) {
            let now = Double(i) / 10
            try store.append([UInt8](repeating: 1, count: 200), now: now)
            try store.tick(now: now)
        }
        let busy = store.stats.syncs
        for t in 0..<600 { try store.tick(now: 70 + Double(t) / 10) }
        let afterFlush = store.stats.syncs
        for t in 0..<600 { try store.tick(now: 200 + Double(t) / 10) }
        report(
            "fdatasync per minute at 10 msg/s: \(busy); then idle for a minute: \(store.stats.syncs - afterFlush) (after the last pending sync)"
        )
    }
    do {
        // persist: always while the broker acknowledges: each message acknowledged 50 ms later,
        // so the checkpoint (every 30 s) is written too.
        let dir = fresh("ten-acked")
        let store = try RingStore(directory: dir, options: .init(capacity: 64 << 20))
        var last: UInt64 = 0
        for i in 0..<(10 * 60) {
            let now = Double(i) / 10
            if last > 0 { try store.acknowledge(last, now: now - 0.05) }
            last = try store.append([UInt8](repeating: 1, count: 200), now: now)
            try store.tick(now: now)
        }
        report("fdatasync per minute at 10 msg/s, each acknowledged (checkpoint included): \(store.stats.syncs)")
    }

    // 3. Recovery of a full 64 MiB store.
    do {
        let dir = fresh("full")
        var store: RingStore? = try RingStore(directory: dir, options: .init(capacity: 64 << 20, sync: .none))
        let body = [UInt8](repeating: 0x77, count: 1024)
        var i = 0
        while store!.droppedCount == 0 {
            try store!.append(body)
            i += 1
        }
        try store!.sync()
        let pending = store!.stats.pending
        store = nil
        var reopened: RingStore?
        let t = try seconds { reopened = try RingStore(directory: dir, options: .init(capacity: 64 << 20)) }
        report(
            "recovery of a full 64 MiB store (\(pending) records of 1 KiB pending, \(i) appended): \(fmt(t)) s, \(reopened!.stats.pending) recovered, \(reopened!.recovery.corruptSkipped) corrupt"
        )
        // Most of it acknowledged and checkpointed: recovery reads only what the checkpoint does not cover.
        for rec in try reopened!.pending(limit: pending * 9 / 10) { try reopened!.acknowledge(rec.seq) }
        try reopened!.close()
        reopened = nil
        let t2 = try seconds { reopened = try RingStore(directory: dir, options: .init(capacity: 64 << 20)) }
        report(
            "recovery with 90 % acknowledged and a checkpoint: \(fmt(t2)) s, \(reopened!.recovery.segmentsSkipped) of 16 segments skipped, \(reopened!.stats.pending) recovered"
        )
    }
    _ = system("rm -rf '\(base)'")
} catch {
    print("store-bench: \(error)")
    exit(1)
}
