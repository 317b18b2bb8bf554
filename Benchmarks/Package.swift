// swift-tools-version:6.2
// Micro-benchmarks of the hot paths (packet encode/decode, topic matching, the ring buffer),
// kept out of the normal test command:  cd Benchmarks && swift run -c release micro-bench
import PackageDescription

let package = Package(
    name: "edge-agent-benchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "edge-agent", path: ".."),
        .package(url: "https://github.com/google/swift-benchmark.git", from: "0.1.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "micro-bench",
            dependencies: [
                .product(name: "Communicator", package: "edge-agent"),
                .product(name: "OfflineStore", package: "edge-agent"),
                .product(name: "Benchmark", package: "swift-benchmark"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        )
    ],
    swiftLanguageModes: [.v6]
)
