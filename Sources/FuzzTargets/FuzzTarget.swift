/// The fuzzing harnesses, one per kind of hostile input, shared by the libFuzzer executables
/// (`Sources/fuzz-*`, built by `scripts/fuzz`) and by the test suite, which replays the committed
/// inputs (`Tests/FuzzInputs/<target>/`) through the same functions. A harness returns normally
/// for any input; a trap, a hang or a broken invariant (a `precondition` here) is a finding.
public enum FuzzTarget: String, CaseIterable, Sendable {
    case decoder
    case store
    case config
    case command
    case socketLine = "socket-line"

    public func run(_ data: [UInt8]) {
        switch self {
        case .decoder: DecoderFuzz.run(data)
        case .store: StoreFuzz.run(data)
        case .config: ConfigFuzz.run(data)
        case .command: CommandFuzz.run(data)
        case .socketLine: SocketLineFuzz.run(data)
        }
    }
}

/// Reads the input from the front: the harnesses take their choices (version, limits, chunk
/// sizes) from the first bytes and the rest as the hostile bytes.
struct FuzzInput {
    private var bytes: ArraySlice<UInt8>
    init(_ data: [UInt8]) { bytes = data[...] }
    var isEmpty: Bool { bytes.isEmpty }
    mutating func byte() -> UInt8 { bytes.popFirst() ?? 0 }
    mutating func take(_ n: Int) -> [UInt8] {
        let out = bytes.prefix(n)
        bytes = bytes.dropFirst(n)
        return Array(out)
    }
    mutating func rest() -> [UInt8] { take(bytes.count) }
}
