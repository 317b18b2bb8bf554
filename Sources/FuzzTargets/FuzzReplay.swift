import FoundationEssentials

#if canImport(Glibc)
import Glibc
#endif

/// A fuzz executable built without libFuzzer: runs its harness over the files (or the files in
/// the folders) named on the command line, e.g. a crasher libFuzzer saved.
public enum FuzzReplay {
    public static func main(_ target: FuzzTarget) {
        let paths = CommandLine.arguments.dropFirst()
        guard !paths.isEmpty else {
            print(
                "usage: fuzz-\(target.rawValue) FILE|FOLDER... (replays inputs; scripts/fuzz \(target.rawValue) SECONDS builds and runs the fuzzer)"
            )
            exit(2)
        }
        var count = 0
        for path in paths {
            for file in inputs(at: path) {
                guard let data = FileManager.default.contents(atPath: file) else {
                    print("fuzz-\(target.rawValue): cannot read \(file)")
                    exit(1)
                }
                target.run(Array(data))
                count += 1
            }
        }
        print("fuzz-\(target.rawValue): \(count) inputs replayed, no finding")
    }

    /// The file itself, or the regular files in the folder (sorted).
    public static func inputs(at path: String) -> [String] {
        var isDirectory = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory else { return [path] }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.filter { !$0.hasPrefix(".") }.sorted().map { path + "/" + $0 }
    }
}

#if FUZZING
/// libFuzzer's driver (`-sanitize=fuzzer` links it): SwiftPM gives every executable its own
/// `main`, so libFuzzer's is not used and the driver is called from ours.
@_silgen_name("LLVMFuzzerRunDriver")
private func runDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

public enum FuzzDriver {
    public static func main(_ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) {
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(runDriver(&argc, &argv, callback))
    }
}
#endif
