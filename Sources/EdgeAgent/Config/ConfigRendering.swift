// The configuration as YAML, from the key table: the example file (defaults and documentation)
// or the effective configuration (check-config, config/get: secrets masked, where a value came
// from, templates filled in). Both read back as the configuration they show.
extension AgentConfig {
    enum Rendering {
        case example
        case effective
    }

    static func render(_ c: AgentConfig, as mode: Rendering) -> String {
        var out = mode == .example ? exampleHeader : ""
        var open: [Substring] = []  // the mappings the last key was in
        var afterBlock = false  // the last value took several lines
        for key in keys {
            var parts = key.path.split(separator: ".")
            let name = parts.removeLast()
            var depth = 0
            while depth < min(open.count, parts.count) && open[depth] == parts[depth] { depth += 1 }
            // A blank line between top-level blocks (consecutive top-level values stay together).
            if mode == .example && depth == 0 && (afterBlock || !(open.isEmpty && parts.isEmpty)) { out += "\n" }
            for d in depth..<parts.count {
                let section = parts[...d].joined(separator: ".")
                if mode == .example { out += comments(sectionNotes[section] ?? [], indent: d) }
                out += indent(d) + parts[d] + ":\n"
            }
            open = parts
            let value = (mode == .example ? key.example : nil) ?? key.show(c)
            if mode == .example { out += comments(key.above, indent: parts.count) }
            let comment = mode == .example ? key.note : c.origin(of: key)
            let first = indent(parts.count) + name + ":" + (value.hasPrefix("\n") ? "" : " " + value)
            out += ConfigKey.line(first, note: comment, column: mode == .example ? 30 : 0) + "\n"
            afterBlock = value.hasPrefix("\n")
            if afterBlock { out += value.dropFirst() + "\n" }
        }
        return out
    }

    /// check-config's comment on a value: where it came from, or the template filled in.
    private func origin(of key: ConfigKey) -> String {
        if fromCredential.contains(key.path) { return "from the systemd credential \(Self.passwordCredential)" }
        if fromEnvironment.contains(key.path) { return "from the environment" }
        return key.explain?(self) ?? ""
    }

    private static func indent(_ depth: Int) -> String { String(repeating: "  ", count: depth) }

    private static func comments(_ lines: [String], indent depth: Int) -> String {
        lines.map { indent(depth) + "# " + $0 + "\n" }.joined()
    }
}

extension ConfigKey {
    /// `text`, and `# note` after it at `column` (or two spaces after a longer text).
    static func line(_ text: String, note: String, column: Int = 30) -> String {
        guard !note.isEmpty else { return text }
        return text + String(repeating: " ", count: max(2, column - text.count)) + "# " + note
    }
}
