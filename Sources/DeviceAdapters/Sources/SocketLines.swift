/// The socket source's input, without the socket: a writer's byte stream cut into lines
/// (`LineFramer`) and each line read as an event (`SocketLine.parse`). Pure values, so that the
/// tests and the fuzzer drive them directly.

/// Cuts a stream into lines at `\n`, holding at most `maxLineBytes` of one line: a longer line is
/// reported once and its bytes are skipped up to its newline.
public struct LineFramer: Sendable {
    public enum Piece: Equatable, Sendable {
        case line([UInt8])
        case tooLong
    }

    public let maxLineBytes: Int
    private var pending: [UInt8] = []
    private var discarding = false

    public init(maxLineBytes: Int) { self.maxLineBytes = maxLineBytes }

    public mutating func feed(_ bytes: some Sequence<UInt8>, _ emit: (Piece) -> Void) {
        for byte in bytes {
            if byte == UInt8(ascii: "\n") {
                if !discarding { emit(.line(pending)) }
                discarding = false
                pending.removeAll(keepingCapacity: true)
                continue
            }
            if discarding { continue }
            pending.append(byte)
            if pending.count > maxLineBytes {
                emit(.tooLong)
                pending.removeAll(keepingCapacity: true)
                discarding = true
            }
        }
    }

    /// The end of the stream: a last line without its newline.
    public mutating func finish(_ emit: (Piece) -> Void) {
        if !pending.isEmpty && !discarding { emit(.line(pending)) }
        pending.removeAll()
        discarding = false
    }
}

/// One line of the socket protocol: a JSON object whose `type` names the event.
public enum SocketLine {
    public enum Parsed: Equatable, Sendable {
        /// Blank: nothing to do.
        case blank
        case event(type: String, fields: [String: JSONValue])
        /// Refused: the counter's reason and the log's words.
        case rejected(reason: String, message: String)
    }

    /// Spaces and tabs only (after an optional final `\r`).
    public static func isBlank(_ bytes: [UInt8]) -> Bool {
        bytes.dropLast(bytes.last == UInt8(ascii: "\r") ? 1 : 0).allSatisfy { $0 == 32 || $0 == 9 }
    }

    public static func parse(_ bytes: [UInt8]) -> Parsed {
        if isBlank(bytes) { return .blank }
        let trimmed = bytes.last == UInt8(ascii: "\r") ? Array(bytes.dropLast()) : bytes
        guard let value = JSONValue.parse(trimmed) else {
            let deep = JSONValue.depth(of: trimmed) > JSONValue.maxDepth
            return .rejected(
                reason: "invalid_json",
                message: deep ? "nested deeper than \(JSONValue.maxDepth) levels" : "not valid JSON: \(printable(trimmed))")
        }
        guard case .object(var fields) = value else {
            return .rejected(reason: "not_object", message: "a JSON value that is not an object")
        }
        var type = "external"
        if let t = fields.removeValue(forKey: "type") {
            guard let s = t.stringValue, !s.isEmpty, s.count <= 64 else {
                return .rejected(reason: "bad_type", message: "\"type\" must be a non-empty string of at most 64 characters")
            }
            type = s
        }
        return .event(type: type, fields: fields)
    }
}
