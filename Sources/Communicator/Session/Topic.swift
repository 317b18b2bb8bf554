/// Topic names and filters (3.1.1 §4.7, 5.0 §4.7): validation and matching.
public enum Topic {
    /// Why a topic name or filter is not valid, or nil when it is.
    public static func nameProblem(_ topic: String) -> String? {
        let bytes = topic.utf8
        // [MQTT-4.7.3-1] at least one character; [MQTT-4.7.3-3] at most 65535 bytes.
        if bytes.isEmpty { return "topic name is empty" }
        if bytes.count > 65_535 { return "topic name is \(bytes.count) bytes long, the maximum is 65535" }
        // [MQTT-4.7.3-2] no U+0000; [MQTT-3.3.2-2] no wildcard characters in a topic name. One
        // pass over the contiguous UTF-8 (every publish comes through here).
        var zero = false
        var wildcard = false
        let scanned: Void? = bytes.withContiguousStorageIfAvailable { buffer in
            for b in buffer where b <= UInt8(ascii: "+") {
                if b == 0 { zero = true } else if b == UInt8(ascii: "+") || b == UInt8(ascii: "#") { wildcard = true }
            }
        }
        if scanned == nil {  // a bridged string: the same check on a native copy (withUTF8 costs ~70 instructions more)
            var native = topic
            native.makeContiguousUTF8()
            return nameProblem(native)
        }
        if zero { return "topic name \"\(printable(topic))\" contains U+0000" }
        if wildcard { return "topic name \"\(topic)\" contains a wildcard ('+' or '#'); wildcards are for subscriptions only" }
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
        var filter = filter
        var topic = topic
        // Contiguous UTF-8 (no copy for native strings): byte comparisons on plain buffers.
        return filter.withUTF8 { f in topic.withUTF8 { t in matches(filter: f, topic: t) } }
    }

    static func matches(filter full: UnsafeBufferPointer<UInt8>, topic t: UnsafeBufferPointer<UInt8>) -> Bool {
        let slash = UInt8(ascii: "/")
        let plus = UInt8(ascii: "+")
        let hash = UInt8(ascii: "#")
        var fi = 0
        if full.count > 7 && full[0] == UInt8(ascii: "$")
            && String(decoding: UnsafeBufferPointer(rebasing: full[0..<7]), as: UTF8.self) == "$share/"
        {
            // "$share/group/filter": match on the filter.
            var i = 7
            while i < full.count && full[i] != slash { i += 1 }
            fi = min(i + 1, full.count)
        }
        if let first = t.first, first == UInt8(ascii: "$"), fi < full.count, full[fi] == plus || full[fi] == hash {
            return false
        }
        var ti = 0
        while fi < full.count {
            let c = full[fi]
            if c == hash { return true }
            if c == plus {
                // Consume one topic level.
                while ti < t.count && t[ti] != slash { ti += 1 }
                fi += 1
                continue
            }
            if ti == t.count {
                // Topic ended: only "/#" may remain in the filter ("a/#" matches "a").
                return full.count - fi == 2 && full[fi] == slash && full[fi + 1] == hash
            }
            if c != t[ti] { return false }
            fi += 1
            ti += 1
        }
        return ti == t.count
    }

    private static func printable(_ s: String) -> String {
        String(s.unicodeScalars.map { $0.value == 0 ? "\\0" : String($0) }.joined())
    }
}
