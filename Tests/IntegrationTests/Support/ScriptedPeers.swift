import Foundation
import NIOConcurrencyHelpers
import NIOCore

@testable import Communicator

#if canImport(Glibc)
import Glibc
#endif

/// Blocking POSIX socket helpers for the test peers (they run on threads of their own).
enum Sock {
    static func listen() throws -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard r == 0, Glibc.listen(fd, 16) == 0 else { throw TestFailure("cannot listen: errno \(errno)") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return (fd, Int(UInt16(bigEndian: addr.sin_port)))
    }

    static func connect(port: Int) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if r != 0 {
            close(fd)
            return nil
        }
        return fd
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            off += n
        }
        return true
    }
}

/// A broker that speaks just enough MQTT to play a scenario byte by byte.
final class ScriptedBroker: @unchecked Sendable {
    final class Connection: @unchecked Sendable {
        let fd: Int32
        var buffer = ByteBuffer()
        var version: MQTTVersion = .v5_0
        init(fd: Int32) { self.fd = fd }

        /// Reads the next whole packet (decoded with the client's version), or nil at EOF/timeout.
        func read(timeout: Double = 5) throws -> MQTTPacket? {
            let deadline = Date().addingTimeInterval(timeout * TestTiming.scale)
            while true {
                if let frame = try MQTTFrame.next(from: &buffer, maxPacketSize: 1 << 28) {
                    let packet = try MQTTPacket.decode(frame, version: version)
                    if case .connect(let c) = packet { version = c.version }
                    return packet
                }
                let left = deadline.timeIntervalSinceNow
                if left <= 0 { return nil }
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&pfd, 1, Int32(left * 1000)) > 0 else { return nil }
                var chunk = [UInt8](repeating: 0, count: 65536)
                let n = recv(fd, &chunk, chunk.count, 0)
                if n <= 0 { return nil }
                buffer.writeBytes(chunk[0..<n])
            }
        }

        func send(_ packet: MQTTPacket) { _ = Sock.writeAll(fd, Array(packet.encoded(version: version).readableBytesView)) }
        func send(raw: [UInt8]) { _ = Sock.writeAll(fd, raw) }
        func close() {
            shutdown(fd, Int32(SHUT_RDWR))
            Glibc.close(fd)
        }
    }

    let port: Int
    private let listenFD: Int32
    private let errors = NIOLockedValueBox<[String]>([])
    private let done = NIOLockedValueBox(false)

    /// `script` runs once per accepted connection, with the connection number (0, 1, ...).
    init(connections: Int = 1, script: @escaping @Sendable (Connection, Int) throws -> Void) throws {
        let (fd, port) = try Sock.listen()
        listenFD = fd
        self.port = port
        let errors = self.errors
        let done = self.done
        Thread.detachNewThread {
            for i in 0..<connections {
                let c = accept(fd, nil, nil)
                if c < 0 { break }
                let conn = Connection(fd: c)
                do { try script(conn, i) } catch { errors.withLockedValue { $0.append("connection \(i): \(error)") } }
            }
            done.withLockedValue { $0 = true }
        }
    }

    var scriptErrors: [String] { errors.withLockedValue { $0 } }
    var finished: Bool { done.withLockedValue { $0 } }

    deinit {
        shutdown(listenFD, Int32(SHUT_RDWR))
        close(listenFD)
    }
}

/// A TCP proxy between client and broker that can cut, stall or delay the connections through it.
final class TCPProxy: @unchecked Sendable {
    final class Pair: @unchecked Sendable {
        let client: Int32
        let upstream: Int32
        let stalled = NIOLockedValueBox(false)
        init(client: Int32, upstream: Int32) {
            self.client = client
            self.upstream = upstream
        }
    }

    let port: Int
    private let listenFD: Int32
    private let pairs = NIOLockedValueBox<[Pair]>([])
    /// Seconds added before each chunk is forwarded.
    let delay = NIOLockedValueBox(0.0)
    let upstreamPort = NIOLockedValueBox(0)

    init(to upstreamPort: Int) throws {
        let (fd, port) = try Sock.listen()
        listenFD = fd
        self.port = port
        self.upstreamPort.withLockedValue { $0 = upstreamPort }
        Thread.detachNewThread { [self] in
            while true {
                let c = accept(fd, nil, nil)
                if c < 0 { return }
                guard let u = Sock.connect(port: self.upstreamPort.withLockedValue({ $0 })) else {
                    close(c)
                    continue
                }
                let pair = Pair(client: c, upstream: u)
                pairs.withLockedValue { $0.append(pair) }
                Thread.detachNewThread { self.pump(pair, from: c, to: u) }
                Thread.detachNewThread { self.pump(pair, from: u, to: c) }
            }
        }
    }

    private func pump(_ pair: Pair, from a: Int32, to b: Int32) {
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            if pair.stalled.withLockedValue({ $0 }) {
                // A half-open link: nothing passes, nothing is closed.
                usleep(10_000)
                continue
            }
            var pfd = pollfd(fd: a, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, 20)
            if ready == 0 { continue }
            if ready < 0 { break }
            if pair.stalled.withLockedValue({ $0 }) { continue }
            let n = recv(a, &buf, buf.count, 0)
            if n <= 0 { break }
            let d = delay.withLockedValue { $0 }
            if d > 0 { usleep(UInt32(d * 1_000_000)) }
            if !Sock.writeAll(b, Array(buf[0..<n])) { break }
        }
        shutdown(b, Int32(SHUT_RDWR))
        shutdown(a, Int32(SHUT_RDWR))
    }

    /// Closes both sides of every connection at once (no DISCONNECT reaches the broker).
    func cutAll() {
        for p in pairs.withLockedValue({ c -> [Pair] in
            defer { c.removeAll() }
            return c
        }) {
            shutdown(p.client, Int32(SHUT_RDWR))
            shutdown(p.upstream, Int32(SHUT_RDWR))
        }
    }

    /// Stops forwarding on every current connection without closing it (a half-open link).
    /// New connections pass normally.
    func stallAll() {
        for p in pairs.withLockedValue({ c -> [Pair] in
            defer { c.removeAll() }
            return c
        }) {
            p.stalled.withLockedValue { $0 = true }
        }
    }

    deinit {
        cutAll()
        shutdown(listenFD, Int32(SHUT_RDWR))
        close(listenFD)
    }
}
