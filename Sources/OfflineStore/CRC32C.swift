/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as Kafka and iSCSI use it.
/// Software slicing-by-8: portable C-free Swift, no architecture-specific instructions.
public enum CRC32C {
    /// Eight 256-entry tables, one after the other: table k at k * 256.
    static let table: [UInt32] = {
        var t = [UInt32](repeating: 0, count: 8 * 256)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
            t[i] = c
        }
        for k in 1..<8 {
            for i in 0..<256 {
                let previous = t[(k - 1) * 256 + i]
                t[k * 256 + i] = (previous >> 8) ^ t[Int(previous & 0xFF)]
            }
        }
        return t
    }()

    /// Continues a CRC over `bytes` (start with 0).
    public static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var c = ~crc
        var i = 0
        let n = bytes.count
        table.withUnsafeBufferPointer { t in
            // One lookup in table k for byte b of the 8-byte block (kept small for the type checker).
            @inline(__always) func at(_ k: Int, _ b: UInt32) -> UInt32 { t[k &* 256 &+ Int(b & 0xFF)] }
            while i + 8 <= n {
                let lo = c ^ UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt32.self))
                let hi = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: i + 4, as: UInt32.self))
                var x = at(7, lo) ^ at(6, lo >> 8)
                x ^= at(5, lo >> 16) ^ at(4, lo >> 24)
                x ^= at(3, hi) ^ at(2, hi >> 8)
                x ^= at(1, hi >> 16) ^ at(0, hi >> 24)
                c = x
                i += 8
            }
            while i < n {
                c = at(0, c ^ UInt32(bytes[i])) ^ (c >> 8)
                i += 1
            }
        }
        return ~c
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { update(0, $0) }
    }
}
