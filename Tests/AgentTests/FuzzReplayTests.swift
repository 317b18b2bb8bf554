import Foundation
import FuzzTargets
import Testing

/// The fuzzers' inputs in the normal suite: every committed input (`FuzzInputs/<target>/`: seeds,
/// and each crasher a fuzz run found, minimized, once fixed) goes through its harness, then a few
/// hundred seeded mutations of them. A finding traps (the harnesses check with `precondition`).
@Suite("Fuzz inputs replayed")
struct FuzzReplayTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("FuzzInputs").path

    @Test("each target's committed inputs, then 300 mutations of them", arguments: FuzzTarget.allCases)
    func replay(_ target: FuzzTarget) throws {
        let files = FuzzReplay.inputs(at: Self.folder + "/" + target.rawValue)
        let inputs = try files.map { try [UInt8](Data(contentsOf: URL(fileURLWithPath: $0))) }
        #expect(!inputs.isEmpty, "no inputs for \(target.rawValue) in \(Self.folder)")
        for input in inputs { target.run(input) }
        var rng = UInt64(0x9E37_79B9_7F4A_7C15) &* UInt64(target.rawValue.utf8.count)
        func next() -> UInt64 {
            rng &+= 0x9E37_79B9_7F4A_7C15
            var z = rng
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        for i in 0..<300 {
            var m = inputs[i % inputs.count]
            for _ in 0..<(1 + Int(next() % 8)) {
                guard !m.isEmpty else {
                    m = [UInt8(truncatingIfNeeded: next())]
                    continue
                }
                let at = Int(next() % UInt64(m.count))
                switch next() % 4 {
                case 0: m[at] = UInt8(truncatingIfNeeded: next())
                case 1: m.insert(UInt8(truncatingIfNeeded: next()), at: at)
                case 2: m.remove(at: at)
                default: m.insert(contentsOf: m[at..<min(m.count, at + Int(next() % 16))], at: at)
                }
            }
            target.run(m)
        }
    }
}
