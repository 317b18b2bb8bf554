import CYAML

/// The configuration file's YAML: read with libyaml's document loader, written back (by
/// `config/set`) as plain block YAML. libyaml resolves anchors and aliases; a document nested
/// deeper than `maxDepth` or expanding to more than `maxNodes` nodes (an alias bomb) is refused.
enum YAML {
    static let maxDepth = 64
    static let maxNodes = 100_000

    struct Problem: Error, CustomStringConvertible {
        let description: String
    }

    /// The document's root, nil for an empty file.
    static func parse(_ text: String) throws(Problem) -> ConfigTree.Value? {
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else { throw Problem(description: "libyaml could not start (out of memory)") }
        defer { yaml_parser_delete(&parser) }
        var document = yaml_document_t()
        var bytes = Array(text.utf8)
        let count = bytes.count
        bytes.append(0)  // a valid pointer even for an empty file
        let loaded = bytes.withUnsafeMutableBufferPointer { b in
            yaml_parser_set_input_string(&parser, b.baseAddress, count)
            return yaml_parser_load(&parser, &document)  // reads all of the input here
        }
        guard loaded == 1 else { throw Problem(description: describe(parser)) }
        defer { yaml_document_delete(&document) }
        guard let root = yaml_document_get_root_node(&document) else { return nil }
        var budget = maxNodes
        return try convert(root, in: &document, depth: 0, budget: &budget)
    }

    private static func describe(_ parser: yaml_parser_t) -> String {
        let problem = parser.problem.map { String(cString: $0) } ?? "unknown error"
        let mark = parser.problem_mark
        var text = "line \(mark.line + 1), column \(mark.column + 1): \(problem)"
        if let context = parser.context {
            let at = parser.context_mark
            text += " (\(String(cString: context)) at line \(at.line + 1), column \(at.column + 1))"
        }
        return text
    }

    private static func convert(
        _ node: UnsafeMutablePointer<yaml_node_t>, in document: inout yaml_document_t, depth: Int, budget: inout Int
    ) throws(Problem) -> ConfigTree.Value {
        budget -= 1
        guard budget >= 0 else { throw Problem(description: "more than \(maxNodes) nodes once aliases are expanded") }
        guard depth < maxDepth else { throw Problem(description: "nested deeper than \(maxDepth) levels (a recursive alias?)") }
        func child(_ index: Int32) throws(Problem) -> ConfigTree.Value {
            guard let n = yaml_document_get_node(&document, index) else { return .null }
            return try convert(n, in: &document, depth: depth + 1, budget: &budget)
        }
        switch node.pointee.type {
        case YAML_SCALAR_NODE:
            let scalar = node.pointee.data.scalar
            let text = String(decoding: UnsafeBufferPointer(start: scalar.value, count: scalar.length), as: UTF8.self)
            let plain = scalar.style == YAML_PLAIN_SCALAR_STYLE
            if plain && ["", "~", "null", "Null", "NULL"].contains(text) { return .null }
            return .scalar(text, quoted: !plain)
        case YAML_SEQUENCE_NODE:
            let items = node.pointee.data.sequence.items
            var values: [ConfigTree.Value] = []
            var p = items.start
            while let item = p, item != items.top {
                values.append(try child(item.pointee))
                p = item + 1
            }
            return .sequence(values)
        case YAML_MAPPING_NODE:
            let pairs = node.pointee.data.mapping.pairs
            var values: [(String, ConfigTree.Value)] = []
            var p = pairs.start
            while let pair = p, pair != pairs.top {
                let key: String
                switch try child(pair.pointee.key) {
                case .scalar(let s, _): key = s
                case .null: key = "null"
                default: throw Problem(description: "a key must be a plain word, not a mapping or a list")
                }
                values.append((key, try child(pair.pointee.value)))
                p = pair + 1
            }
            return .mapping(values)
        default:
            return .null
        }
    }

    /// Block YAML. Scalars that were quoted (and every value set from the environment or by a
    /// command) are written double-quoted with JSON escapes, which YAML reads back unchanged.
    static func write(_ value: ConfigTree.Value) -> String {
        var out = ""
        func key(_ k: String) -> String {
            k.utf8.allSatisfy {
                $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") || ($0 >= 48 && $0 <= 57)
                    || ($0 | 0x20 >= 97 && $0 | 0x20 <= 122)
            } && !k.isEmpty
                ? k : quote(k)
        }
        func inline(_ v: ConfigTree.Value) -> String? {
            switch v {
            case .null: "null"
            case .scalar(let s, let quoted): quoted || s.isEmpty ? quote(s) : s
            case .mapping(let pairs) where pairs.isEmpty: "{}"
            case .sequence(let items) where items.isEmpty: "[]"
            default: nil
            }
        }
        /// Writes `v` as the value after "key:" or "-" (`lead`), at `indent`.
        func emit(_ v: ConfigTree.Value, indent: Int, lead: String) {
            if let s = inline(v) {
                out += lead + (lead.isEmpty ? "" : " ") + s + "\n"
                return
            }
            let pad = String(repeating: " ", count: indent)
            switch v {
            case .mapping(let pairs):
                if !lead.isEmpty { out += lead + "\n" }
                for (k, child) in pairs { emit(child, indent: indent + 2, lead: pad + key(k) + ":") }
            case .sequence(let items):
                if !lead.isEmpty { out += lead + "\n" }
                for item in items { emit(item, indent: indent + 2, lead: pad + "-") }
            default: break
            }
        }
        emit(value, indent: 0, lead: "")
        return out
    }

    static func quote(_ s: String) -> String {
        var q = "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": q += "\\\""
            case "\\": q += "\\\\"
            case "\n": q += "\\n"
            case "\t": q += "\\t"
            case "\r": q += "\\r"
            default:
                if c.value < 0x20 || c.value == 0x7F || (0x80...0x9F).contains(c.value) {
                    let hex = String(c.value, radix: 16)
                    q += "\\x" + (hex.count < 2 ? "0" : "") + hex
                } else if c.value == 0xFEFF || c.value == 0x2028 || c.value == 0x2029 {
                    q += "\\u" + String(c.value, radix: 16)
                } else {
                    q.unicodeScalars.append(c)
                }
            }
        }
        return q + "\""
    }
}
