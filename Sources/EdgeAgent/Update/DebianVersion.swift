/// A Debian package version, `[epoch:]upstream[-revision]`, compared as dpkg compares them
/// (deb-version(7)): `~` sorts before everything, even the end (`1.0~rc1 < 1.0`), letters
/// before other characters, digit runs by their value. An update is installed only when its
/// version is newer than the running one (`update.allow_downgrade` overrides), and the helper
/// checks the same with `dpkg --compare-versions`.
struct DebianVersion: Comparable, Sendable, CustomStringConvertible {
    let epoch: Int
    let upstream: Substring
    let revision: Substring
    let description: String

    /// Nil when `text` is no Debian version: at most 64 characters of letters, digits and
    /// `.+~-:`, an upstream part that starts with a digit, a numeric epoch.
    init?(_ text: String) {
        guard (1...64).contains(text.utf8.count),
            text.utf8.allSatisfy({ Self.isAlphanumeric($0) || ".+~-:".utf8.contains($0) })
        else { return nil }
        var rest = Substring(text)
        if let colon = rest.firstIndex(of: ":") {
            guard let e = Int(rest[..<colon]), e >= 0 else { return nil }
            epoch = e
            rest = rest[rest.index(after: colon)...]
        } else {
            epoch = 0
        }
        if let dash = rest.lastIndex(of: "-") {
            upstream = rest[..<dash]
            revision = rest[rest.index(after: dash)...]
            guard !revision.isEmpty else { return nil }
        } else {
            upstream = rest
            revision = ""
        }
        guard let first = upstream.utf8.first, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first), !upstream.contains(":") else {
            return nil
        }
        description = text
    }

    static func == (a: Self, b: Self) -> Bool { compare(a, b) == 0 }
    static func < (a: Self, b: Self) -> Bool { compare(a, b) < 0 }

    static func compare(_ a: Self, _ b: Self) -> Int {
        if a.epoch != b.epoch { return a.epoch < b.epoch ? -1 : 1 }
        let u = compareParts(Array(a.upstream.utf8), Array(b.upstream.utf8))
        return u != 0 ? u : compareParts(Array(a.revision.utf8), Array(b.revision.utf8))
    }

    private static func isDigit(_ c: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) }
    private static func isAlphanumeric(_ c: UInt8) -> Bool {
        isDigit(c) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(c) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(c)
    }

    /// dpkg's order of one character of a non-digit run (nil: the run's end).
    private static func order(_ c: UInt8?) -> Int {
        guard let c else { return 0 }
        if c == UInt8(ascii: "~") { return -1 }
        if isDigit(c) { return 0 }
        if isAlphanumeric(c) { return Int(c) }
        return Int(c) + 256
    }

    /// dpkg's verrevcmp: alternating non-digit runs (by `order`) and digit runs (by value).
    private static func compareParts(_ a: [UInt8], _ b: [UInt8]) -> Int {
        var (i, j) = (0, 0)
        while i < a.count || j < b.count {
            while (i < a.count && !isDigit(a[i])) || (j < b.count && !isDigit(b[j])) {
                let x = order(i < a.count && !isDigit(a[i]) ? a[i] : nil)
                let y = order(j < b.count && !isDigit(b[j]) ? b[j] : nil)
                if x != y { return x < y ? -1 : 1 }
                if i < a.count && !isDigit(a[i]) { i += 1 }
                if j < b.count && !isDigit(b[j]) { j += 1 }
            }
            while i < a.count && a[i] == UInt8(ascii: "0") { i += 1 }
            while j < b.count && b[j] == UInt8(ascii: "0") { j += 1 }
            var first = 0
            while i < a.count && isDigit(a[i]) && j < b.count && isDigit(b[j]) {
                if first == 0 { first = Int(a[i]) - Int(b[j]) }
                i += 1
                j += 1
            }
            if i < a.count && isDigit(a[i]) { return 1 }
            if j < b.count && isDigit(b[j]) { return -1 }
            if first != 0 { return first < 0 ? -1 : 1 }
        }
        return 0
    }
}
