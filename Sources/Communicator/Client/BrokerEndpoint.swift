/// One broker address: a host name or IP literal and a port.
public struct BrokerEndpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// "host", "host:port", "[v6]:port" or a bare IPv6 literal; nil when it is not one of those.
    /// The same form as a 5.0 Server Reference (§4.11).
    public init?(parsing text: String, defaultPort: Int = 1883) {
        var t = Substring(text)
        while t.first == " " || t.first == "\t" { t.removeFirst() }
        while t.last == " " || t.last == "\t" { t.removeLast() }
        guard !t.isEmpty else { return nil }
        if t.hasPrefix("[") {
            guard let close = t.firstIndex(of: "]") else { return nil }
            host = String(t[t.index(after: t.startIndex)..<close])
            let rest = t[t.index(after: close)...]
            if rest.isEmpty {
                port = defaultPort
            } else {
                guard rest.hasPrefix(":"), let p = Int(rest.dropFirst()), (1...65_535).contains(p) else { return nil }
                port = p
            }
        } else if t.filter({ $0 == ":" }).count == 1, let colon = t.firstIndex(of: ":") {
            host = String(t[..<colon])
            guard let p = Int(t[t.index(after: colon)...]), (1...65_535).contains(p) else { return nil }
            port = p
        } else {
            host = String(t)  // a name, an IPv4 literal or a bare IPv6 literal
            port = defaultPort
        }
        guard !host.isEmpty, !host.contains(where: { $0 == " " || $0 == "/" }) else { return nil }
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// The references a 5.0 Server Reference property names: one or more, separated by spaces
    /// (§4.11, "the Server Reference ... may contain several references separated by space").
    static func references(_ text: String, defaultPort: Int) -> [BrokerEndpoint] {
        text.split(separator: " ").compactMap { BrokerEndpoint(parsing: String($0), defaultPort: defaultPort) }
    }
}
