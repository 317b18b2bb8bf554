#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// This boot, by the clocks no step of the wall clock moves: `/proc/sys/kernel/random/boot_id`
/// (new at every boot) and `CLOCK_BOOTTIME` (counts suspend too). Stored messages carry both
/// (`StoredRecord.Accepted`), and so do the agent's events (`boot_id`, `uptime_ms`).
public enum BootClock {
    /// Milliseconds of `CLOCK_BOOTTIME`.
    public static func millis() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_BOOTTIME, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec / 1_000_000)
    }

    /// Milliseconds since 1970 by the wall clock (which may be wrong, and may jump both ways).
    public static func wallMillis() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(max(0, ts.tv_sec)) * 1000 + UInt64(ts.tv_nsec / 1_000_000)
    }

    /// The boot id as the kernel writes it (`8f5c...-...`, lowercase); "" when /proc has none.
    /// Read once: it does not change while the system runs.
    public static let id: String = {
        guard let f = fopen("/proc/sys/kernel/random/boot_id", "r") else { return "" }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 64)
        guard fgets(&line, 64, f) != nil else { return "" }
        let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let id = text.filter { $0.isHexDigit || $0 == "-" }.lowercased()
        return id.filter(\.isHexDigit).count == 32 ? id : ""
    }()

    /// The boot id's 16 bytes (all zero when /proc has none).
    public static let idBytes: [UInt8] = {
        let hex = Array(id.filter(\.isHexDigit).utf8)
        guard hex.count == 32 else { return [UInt8](repeating: 0, count: 16) }
        func nibble(_ c: UInt8) -> UInt8 { c <= UInt8(ascii: "9") ? c - UInt8(ascii: "0") : c - UInt8(ascii: "a") + 10 }
        return (0..<16).map { nibble(hex[2 * $0]) << 4 | nibble(hex[2 * $0 + 1]) }
    }()
}
