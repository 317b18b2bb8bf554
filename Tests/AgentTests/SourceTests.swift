import DeviceAdapters
import Dispatch
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import EdgeAgent

#if canImport(Glibc)
import Glibc
#endif

/// A source running in a task on NIO's shared loop and thread pool, until `stop`.
struct Running {
    let task: Task<Void, any Error>

    /// Returns once the source is set up; throws what it threw if it could not start.
    static func start(_ source: any EventSource, _ sink: @escaping EventSink) async throws -> Running {
        let (ready, signal) = AsyncStream.makeStream(of: Void.self)
        let wasReady = NIOLockedValueBox(false)
        let context = SourceContext(
            loop: MultiThreadedEventLoopGroup.singleton.next(), threadPool: NIOThreadPool.singleton, sink: sink,
            ready: {
                wasReady.withLockedValue { $0 = true }
                signal.yield()
            })
        let task = Task {
            defer { signal.finish() }
            try await source.run(context)
        }
        for await _ in ready { break }
        guard wasReady.withLockedValue({ $0 }) else {
            try await task.value
            throw CancellationError()
        }
        return Running(task: task)
    }

    func stop() async {
        task.cancel()
        _ = await task.result
    }
}

@Suite("Event sources")
struct SourceTests {
    final class Collected: @unchecked Sendable {
        private let lock = NSLock()
        private var items: [SourceEvent] = []
        func add(_ e: SourceEvent) {
            lock.lock()
            items.append(e)
            lock.unlock()
        }
        var all: [SourceEvent] {
            lock.lock()
            defer { lock.unlock() }
            return items
        }
    }

    /// Polls `ok` for `timeout` seconds of its own waiting: counted in its 10 ms naps, not by the
    /// wall clock, so a test whose task could not run (the suite's blocking tests holding the
    /// cooperative threads of a 2-core machine) is not timed out before it was given its time.
    func waitFor(_ what: String, timeout: Double = 10, _ ok: () -> Bool) async throws {
        for _ in 0..<Int(timeout * 100) {
            if ok() { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        if !ok() { Issue.record("timed out waiting for \(what)") }
    }

    @Test("the socket takes many writers at once; garbage, non-objects and over-long lines are counted and never stop it")
    func socketManyWriters() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("src-\(getpid()).sock").path
        let logged = Collected()
        let source = SocketSource(name: "s", path: path, maxLineBytes: 256) { logged.add(SourceEvent(type: $0)) }
        let got = Collected()
        let run = try await Running.start(source) { got.add($0) }
        DispatchQueue.concurrentPerform(iterations: 8) { w in
            let fd = Self.dial(path)
            var text = ""
            for i in 0..<50 { text += "{\"type\":\"t\",\"writer\":\(w),\"i\":\(i)}\n" }
            text += "garbage \(w)\n" + String(repeating: "z", count: 1000) + "\n\"just a string\"\n"
            _ = text.withCString { send(fd, $0, strlen($0), 0) }
            close(fd)
        }
        try await waitFor("400 events") { got.all.count >= 400 && source.counters["rejected_not_object"] == 8 }
        #expect(got.all.count == 400)
        #expect(
            source.counters["accepted"] == 400 && source.counters["rejected_invalid_json"] == 8
                && source.counters["rejected_too_large"] == 8)
        for w in 0..<8 {
            let mine = got.all.filter { $0.fields["writer"] == .int(w) }.compactMap {
                if case .int(let i) = $0.fields["i"] { i } else { nil }
            }
            #expect(mine == Array(0..<50), "writer \(w) out of order")
        }
        #expect(logged.all.contains { $0.type.contains("line longer than 256 bytes") })
        // Stopped: the socket file is gone and nothing listens.
        await run.stop()
        #expect(!FileManager.default.fileExists(atPath: path))
        // A stale socket file from an earlier run is replaced; a regular file is refused.
        let stale = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = Self.address(path)
        _ = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(stale, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        close(stale)
        let again = try await Running.start(source) { got.add($0) }
        await again.stop()
        let plain = path + ".txt"
        _ = FileManager.default.createFile(atPath: plain, contents: Data("x".utf8))
        await #expect(throws: SourceError("f", .badPath, "\(plain) exists and is not a socket (sources[].path)")) {
            try await Running.start(SocketSource(name: "f", path: plain)) { _ in }
        }
    }

    static func address(_ path: String) -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
        return addr
    }

    static func dial(_ path: String) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = address(path)
        _ = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return fd
    }

    static func sendText(_ fd: Int32, _ text: String) {
        _ = text.withCString { Glibc.send(fd, $0, strlen($0), 0) }
    }

    @Test(
        "the socket source bounds its writers: past max_connections a writer is closed at once, one over max_lines_per_second is cut down while another goes on, and the log escapes what it shows of a line"
    )
    func socketBounds() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("bounds-\(getpid()).sock").path
        let logged = Collected()
        let source = SocketSource(name: "s", path: path, maxLineBytes: 256, maxConnections: 2, maxLinesPerSecond: 50) {
            logged.add(SourceEvent(type: $0))
        }
        let got = Collected()
        let run = try await Running.start(source) { got.add($0) }
        let flooder = Self.dial(path)
        let polite = Self.dial(path)
        defer {
            close(flooder)
            close(polite)
        }
        try await waitFor("both admitted before the third") { source.counters["connections"] == 2 }
        let third = Self.dial(path)
        defer { close(third) }
        var byte: UInt8 = 0
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(third, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        #expect(recv(third, &byte, 1, 0) == 0, "the third writer is closed at once")
        #expect(source.counters["rejected_connection_limit"] == 1)
        // 2,000 lines at once from one writer; 10 from the other, a little later.
        let started = ProcessInfo.processInfo.systemUptime
        Self.sendText(flooder, (0..<2000).map { "{\"type\":\"flood\",\"i\":\($0)}\n" }.joined())
        usleep(300_000)
        for i in 0..<10 {
            Self.sendText(polite, "{\"type\":\"polite\",\"i\":\(i)}\n")
            usleep(30_000)
        }
        try await waitFor("the polite writer's lines") { got.all.filter { $0.type == "polite" }.count == 10 }
        let flood = got.all.filter { $0.type == "flood" }.count
        // The bucket's bound: one second's worth at once, then the rate for the time it took.
        let bound = 50 + Int(50 * (ProcessInfo.processInfo.systemUptime - started)) + 1
        #expect(flood >= 50 && flood <= bound, "the flood cut to its burst and rate: \(flood) of 2000 (at most \(bound))")
        #expect(source.counters["rejected_rate"] == 2000 - flood)
        #expect(logged.all.filter { $0.type.contains("max_lines_per_second") }.count <= 2, "logged at most once a second")
        // A line with terminal escapes and a line break is logged escaped.
        usleep(1_100_000)
        Self.sendText(polite, "\u{1b}[2J\u{7}not json\r\n")
        try await waitFor("the rejection") { source.counters["rejected_invalid_json"] == 1 }
        let line = try #require(logged.all.first { $0.type.contains("not valid JSON") }?.type)
        #expect(line.contains("\\x1b[2J\\x07not json") && !line.contains("\u{1b}"), "\(line)")
        await run.stop()
    }

    @Test("the directory source reports complete files once, with size and SHA-256; temporary names are skipped")
    func directory() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("snap-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let source = DirectoryWatcher(name: "d", path: dir, maxImageBytes: 4096)
        let got = Collected()
        let run = try await Running.start(source) { got.add($0) }
        try Data("abc".utf8).write(to: URL(fileURLWithPath: dir + "/a.jpg"))
        try Data("partial".utf8).write(to: URL(fileURLWithPath: dir + "/b.part"))
        try await waitFor("one snapshot") { got.all.count >= 1 }
        try await Task.sleep(for: .milliseconds(200))  // what must not come: nothing to await
        #expect(got.all.count == 1, "\(got.all)")
        #expect(got.all.first?.fields["sha256"] == .string("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"))
        #expect(got.all.first?.fields["size"] == .int(3) && got.all.first?.fields["path"] == .string(dir + "/a.jpg"))
        #expect(got.all.first?.image == nil && got.all.first?.fields["content_type"] == nil, "not an image by its bytes, whatever its name")
        // A PNG comes with its bytes; a JPEG over max_image_bytes only as its event.
        let png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + Array(repeating: 7, count: 100)
        try Data(png).write(to: URL(fileURLWithPath: dir + "/b.png"))
        try await waitFor("the PNG") { got.all.count >= 2 }
        #expect(
            got.all.last?.image == SourceImage(bytes: png, contentType: "image/png")
                && got.all.last?.fields["content_type"] == .string("image/png"))
        try Data([0xFF, 0xD8, 0xFF, 0xE0] + Array(repeating: 1, count: 5000)).write(to: URL(fileURLWithPath: dir + "/big.jpg"))
        try await waitFor("the large JPEG") { got.all.count >= 3 }
        #expect(got.all.last?.image == nil && got.all.last?.fields["image_skipped"] != nil && source.counters["image_skipped"] == 1)
        #expect(source.counters["images"] == 1)
        // The folder removed and made again: a scan catches up on what was written meanwhile.
        try FileManager.default.removeItem(atPath: dir)
        try await waitFor("the folder gone") { source.counters["folder_gone"] == 1 }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Data("later".utf8).write(to: URL(fileURLWithPath: dir + "/c.png"))
        try await waitFor("the folder back, and its file") { got.all.count == 4 }
        #expect(got.all.last?.fields["path"] == .string(dir + "/c.png") && source.counters["folder_back"] == 1)
        await run.stop()
        await #expect(throws: SourceError.self) {
            try await Running.start(DirectoryWatcher(name: "x", path: dir + "/missing")) { _ in }
        }
    }

    @Test("the v4l2 source reports cameras present at start and hot-plugged ones through inotify, with their sysfs name")
    func v4l2() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("v4l2-\(getpid())").path
        let (dev, sys) = (root + "/dev", root + "/sys")
        for d in [dev, sys + "/video1"] { try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true) }
        _ = FileManager.default.createFile(atPath: dev + "/video0", contents: nil)
        try "USB Camera\n".write(toFile: sys + "/video1/name", atomically: true, encoding: .utf8)
        // A poll interval no test would wait for: only inotify can see the hot-plug in time.
        let source = V4L2Watcher(name: "cams", directory: dev, sysfs: sys, pollInterval: 3600)
        let got = Collected()
        let run = try await Running.start(source) { got.add($0) }
        #expect(got.all == [SourceEvent(type: "camera_online", fields: ["device": .string(dev + "/video0")])])
        _ = FileManager.default.createFile(atPath: dev + "/video1", contents: nil)
        _ = FileManager.default.createFile(atPath: dev + "/null", contents: nil)
        try await waitFor("video1 online") { got.all.count == 2 }
        #expect(
            got.all.last == SourceEvent(type: "camera_online", fields: ["device": .string(dev + "/video1"), "name": .string("USB Camera")]))
        try FileManager.default.removeItem(atPath: dev + "/video0")
        try await waitFor("video0 offline") { got.all.count == 3 }
        #expect(got.all.last == SourceEvent(type: "camera_offline", fields: ["device": .string(dev + "/video0")]))
        #expect(source.counters["polling"] == nil)
        await run.stop()
        await #expect(throws: SourceError.self) { try await Running.start(V4L2Watcher(name: "x", directory: root + "/none")) { _ in } }
    }

    @Test("the simulated camera emits at its rate on the loop's clock and stops when cancelled")
    func simulated() async throws {
        let got = Collected()
        let run = try await Running.start(SimulatedCamera(name: "cam", rate: 200)) { got.add($0) }
        try await waitFor("20 events") { got.all.count >= 20 }
        await run.stop()
        let stopped = got.all.count
        try await Task.sleep(for: .milliseconds(100))  // what must not come: nothing to await
        #expect(got.all.count == stopped && got.all.allSatisfy { $0.fields["camera"] == .string("cam") })
    }
}
