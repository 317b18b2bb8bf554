extension StringProtocol {
    /// Without leading and trailing white space (spaces, tabs, line breaks): what Foundation's
    /// `trimmingCharacters(in:)` gave, which FoundationEssentials lacks.
    public var trimmed: String {
        guard let first = firstIndex(where: { !$0.isWhitespace }), let last = lastIndex(where: { !$0.isWhitespace }) else { return "" }
        return String(self[first...last])
    }
}

/// Bytes from outside (a socket line, a file name) made safe for one log line: printable ASCII
/// as it is, every other byte as \xNN (no line breaks or terminal escapes get through), at most
/// `limit` bytes of the input, "…" when there was more.
public func printable(_ bytes: some Collection<UInt8>, limit: Int = 80) -> String {
    var out: [UInt8] = []
    for b in bytes.prefix(limit) {
        if b >= 0x20 && b < 0x7f && b != UInt8(ascii: "\\") { out.append(b) } else { out += [92, 120, hex[Int(b >> 4)], hex[Int(b & 15)]] }
    }
    return String(decoding: out, as: UTF8.self) + (bytes.count > limit ? "…" : "")
}

/// Bytes as lowercase hex digits, two a byte.
public func hexString(_ bytes: some Sequence<UInt8>) -> String {
    String(decoding: bytes.flatMap { [hex[Int($0 >> 4)], hex[Int($0 & 15)]] }, as: UTF8.self)
}

private let hex = Array("0123456789abcdef".utf8)
