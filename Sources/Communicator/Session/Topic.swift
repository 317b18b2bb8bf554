/// Topic names and filters (3.1.1 §4.7, 5.0 §4.7): validation and matching.
public enum Topic {
    /// Why a topic name or filter is not valid, or nil when it is.
    public static func nameProblem(_ topic: String) -> String? {
        let bytes = topic.utf8
        // [MQTT-4.7.3-1] at least one character; [MQTT-4.7.3-3] at most 65535 bytes.
        if bytes.isEmpty { return "topic name is empty" }
        if bytes.count > 65_535 { return "topic name is \(bytes.count) bytes long, the maximum is 65535" }
        // [MQTT-4.7.3-2] no U+0000; [MQTT-3.3.2-2] no wildcard characters in a topic name.
        if bytes.contains(0) { return "topic name \"\(printable(topic))\" contains U+0000" }
        if bytes.contains(UInt8(ascii: "+")) || bytes.contains(UInt8(ascii: "#")) {
            return "topic name \"\(topic)\" contains a wildcard ('+' or '#'); wildcards are for subscriptions only"
        }
        return nil
    }

    public static func filterProblem(_ filter: String) -> String? {
        let bytes = Array(filter.utf8)
        if bytes.isEmpty { return "topic filter is empty" }
        if bytes.count > 65_535 { return "topic filter is \(bytes.count) bytes long, the maximum is 65535" }
        if bytes.contains(0) { return "topic filter \"\(printable(filter))\" contains U+0000" }
        var effective = bytes[...]
        // 5.0 §4.8.2: $share/{ShareName}/{filter}; the share name has no '/', '+' or '#'.
        if filter.hasPrefix("$share/") {
            let rest = bytes.dropFirst(7)
            guard let slash = rest.firstIndex(of: UInt8(ascii: "/")), slash > rest.startIndex else {
                return "shared subscription \"\(filter)\" needs the form $share/<group>/<filter>"
            }
            if rest[rest.startIndex..<slash].contains(where: { $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") }) {
                return "shared subscription group in \"\(filter)\" contains a wildcard"
            }
            effective = bytes[(slash + 1)...]
            if effective.isEmpty { return "shared subscription \"\(filter)\" has an empty topic filter" }
        }
        let levels = effective.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        for (i, level) in levels.enumerated() {
            if level.contains(UInt8(ascii: "#")) {
                // [MQTT-4.7.1-2] '#' alone in its level and the last character of the filter.
                if level.count != 1 || i != levels.count - 1 {
                    return "topic filter \"\(filter)\": '#' must be alone in the last level (e.g. \"a/b/#\")"
                }
            }
            if level.contains(UInt8(ascii: "+")) && level.count != 1 {
                // [MQTT-4.7.1-3] '+' occupies an entire level.
                return "topic filter \"\(filter)\": '+' must occupy a whole level (e.g. \"a/+/c\")"
            }
        }
        return nil
    }

    /// Whether `topic` matches `filter` (filters assumed valid). Shared-subscription prefixes
    /// are stripped. [MQTT-4.7.2-1] a filter starting with a wildcard does not match a topic
    /// starting with '$'. "a/#" matches "a" as well (§4.7.1.2).
    public static func matches(filter: String, topic: String) -> Bool {
        var f = Substring(filter).utf8[...]
        if filter.hasPrefix("$share/") {
            let rest = f.dropFirst(7)
            if let slash = rest.firstIndex(of: UInt8(ascii: "/")) { f = rest[rest.index(after: slash)...] }
        }
        let t = topic.utf8
        if let first = t.first, first == UInt8(ascii: "$"), let ff = f.first,
            ff == UInt8(ascii: "+") || ff == UInt8(ascii: "#")
        {
            return false
        }
        var fi = f.startIndex
        var ti = t.startIndex
        while fi < f.endIndex {
            let c = f[fi]
            if c == UInt8(ascii: "#") { return true }
            if c == UInt8(ascii: "+") {
                // Consume one topic level.
                while ti < t.endIndex && t[ti] != UInt8(ascii: "/") { ti = t.index(after: ti) }
                fi = f.index(after: fi)
                continue
            }
            if ti == t.endIndex {
                // Topic ended: only "/#" may remain in the filter ("a/#" matches "a").
                let rest = f[fi...]
                return rest.count == 2 && rest.first == UInt8(ascii: "/") && rest.last == UInt8(ascii: "#")
            }
            if c != t[ti] { return false }
            fi = f.index(after: fi)
            ti = t.index(after: ti)
        }
        return ti == t.endIndex
    }

    private static func printable(_ s: String) -> String {
        String(s.unicodeScalars.map { $0.value == 0 ? "\\0" : String($0) }.joined())
    }
}
