import FoundationEssentials

/// A JSON value for event fields: sources fill them, the agent serialises them.
public enum JSONValue: Sendable, Equatable, Codable {
    case string(String)
    case number(Double)
    case int(Int)
    case bool(Bool)
    case object([String: JSONValue])
    case array([JSONValue])
    case null

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int.self) {
            self = .int(i)
        } else if let d = try? c.decode(Double.self) {
            // JSON has one kind of number: a whole one (7.1e16, or digits past a Double's precision
            // as in 71111111111111111.1) is an int, so that it reads back the same once written
            // (which prints it without a fraction).
            self = Int(exactly: d).map { .int($0) } ?? .number(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .string(let s): try c.encode(s)
        case .number(let d): try c.encode(d)
        case .int(let i): try c.encode(i)
        case .bool(let b): try c.encode(b)
        case .object(let o): try c.encode(o)
        case .array(let a): try c.encode(a)
        case .null: try c.encodeNil()
        }
    }

    /// Arrays and objects nested deeper than this are refused before decoding: the decoder's
    /// cost grows with the cube of the depth (400 levels took 2.9 s in a debug build, found by
    /// the command fuzzer), and nothing the agent reads (commands, socket lines, events) nests
    /// more than a few levels.
    public static let maxDepth = 64

    /// Parses one JSON text; nil when it is not valid JSON or nests deeper than `maxDepth`.
    public static func parse(_ bytes: some Collection<UInt8>) -> JSONValue? {
        guard depth(of: bytes) <= maxDepth else { return nil }
        return try? JSONDecoder().decode(JSONValue.self, from: Data(bytes))
    }

    /// The deepest nesting of `[` and `{` outside strings (one pass; stops counting past `maxDepth`).
    public static func depth(of bytes: some Collection<UInt8>) -> Int {
        var depth = 0
        var deepest = 0
        var inString = false
        var escaped = false
        for b in bytes {
            if inString {
                if escaped {
                    escaped = false
                } else if b == UInt8(ascii: "\\") {
                    escaped = true
                } else if b == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch b {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                deepest = max(deepest, depth)
                if deepest > maxDepth { return deepest }
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
            default: break
            }
        }
        return deepest
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }
}
