// Small text helpers that full Foundation would have given (NSString paths, String(format:),
// regular expressions); the agent links FoundationEssentials only (docs/PERFORMANCE.md).

/// The folder part of a path ("." for a bare name), as `dirname` gives it.
func directoryPart(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return slash == path.startIndex ? "/" : String(path[..<slash])
}

/// `x` with one decimal ("12.3"), for human-readable sizes and percentages.
func oneDecimal(_ x: Double) -> String {
    let tenths = Int((x * 10).rounded())
    return "\(tenths / 10).\(abs(tenths % 10))"
}

/// [A-Za-z0-9_] in ASCII.
func isWordByte(_ b: UInt8) -> Bool {
    (b >= 48 && b <= 57) || (b >= 65 && b <= 90) || (b >= 97 && b <= 122) || b == 95
}
