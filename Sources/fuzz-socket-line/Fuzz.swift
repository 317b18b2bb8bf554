import FuzzTargets

#if FUZZING
/// libFuzzer's entry: one input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FuzzTarget.socketLine.run(size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

@main enum Fuzz { static func main() { FuzzDriver.main(fuzzOne) } }
#else
@main enum Replay { static func main() { FuzzReplay.main(.socketLine) } }
#endif
