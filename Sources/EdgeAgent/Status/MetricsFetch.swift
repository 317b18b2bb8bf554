#if canImport(Glibc)
import Glibc
#endif

/// One blocking `GET /metrics` over HTTP/1.0 (for `edge-agent status`: a person waits on it, and
/// nothing else runs): an IP literal and port, `timeout` for connecting and for the whole answer
/// (a server that trickles bytes does not hold it longer), an answer of at most 8 MiB.
public enum MetricsFetch {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public static func get(host: String, port: Int, path: String = "/metrics", timeout: Double = 5) throws(Failure) -> String {
        var hints = addrinfo()
        hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var found: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, "\(port)", &hints, &found) == 0, let ai = found else {
            throw Failure(description: "\(host) is not an IP address")
        }
        defer { freeaddrinfo(found) }
        let fd = socket(ai.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let address = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        guard connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0 else {
            throw Failure(description: "nothing answers on http://\(address)\(path): \(String(cString: strerror(errno)))")
        }
        let request = Array("GET \(path) HTTP/1.0\r\nHost: \(address)\r\nUser-Agent: edge-agent-status\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else {
            throw Failure(description: "http://\(address)\(path): the request could not be sent: \(String(cString: strerror(errno)))")
        }
        var answer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        let clock = ContinuousClock()
        let deadline = clock.now + .milliseconds(Int(timeout * 1000))
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { break }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno != EAGAIN && errno != EWOULDBLOCK {
                throw Failure(description: "http://\(address)\(path): the answer broke off: \(String(cString: strerror(errno)))")
            }
            guard n > 0, clock.now < deadline else {
                throw Failure(description: "http://\(address)\(path): no complete answer within \(timeout) s")
            }
            answer += chunk[..<n]
            guard answer.count <= 8 << 20 else { throw Failure(description: "http://\(address)\(path): an answer over 8 MiB; not metrics") }
        }
        let end: [UInt8] = Array("\r\n\r\n".utf8)
        guard let split = (0..<max(0, answer.count - 3)).first(where: { answer[$0..<$0 + 4].elementsEqual(end) }) else {
            throw Failure(description: "http://\(address)\(path): not an HTTP answer")
        }
        let head = String(decoding: answer[..<split], as: UTF8.self)
        let status = head.split(separator: "\r\n").first ?? ""
        guard status.split(separator: " ").dropFirst().first == "200" else {
            throw Failure(description: "http://\(address)\(path) answered \(status)")
        }
        return String(decoding: answer[(split + 4)...], as: UTF8.self)
    }
}
