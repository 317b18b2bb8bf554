// swift-tools-version:6.2
// 6.2 at most: Debian's arm64 toolchain (swiftlang 6.2.3) must build this manifest.
import PackageDescription

let package = Package(
    name: "edge-agent",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "Communicator", targets: ["Communicator"]),
        .library(name: "OfflineStore", targets: ["OfflineStore"]),
        .executable(name: "edge-agent", targets: ["edge-agent"]),
        .executable(name: "mqtt-example", targets: ["mqtt-example"]),
        .executable(name: "mqtt-bench", targets: ["mqtt-bench"]),
        .executable(name: "store-bench", targets: ["store-bench"]),
        .executable(name: "offline-probe", targets: ["offline-probe"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // The MQTT library: codec (pure), session state machine (pure), NIO transport, public API.
        .target(
            name: "Communicator",
            dependencies: [
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                "OfflineStore",
            ]
        ),
        // The flash-friendly ring buffer of opaque records (knows nothing of MQTT).
        .target(name: "OfflineStore"),
        // The agent: configuration, status, LED, event sources, commands, store tools.
        .target(
            name: "EdgeAgent",
            dependencies: [
                "Communicator", "OfflineStore", "DeviceAdapters",
                "CYAML", "CEd25519",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // Hardware behind small protocols: the status LED (libgpiod or simulated), event sources.
        .target(
            name: "DeviceAdapters",
            dependencies: [
                "CGPIOShim",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // The C shim over libgpiod 1.x / 2.x, loaded at run time (dlopen), so one binary runs
        // on Debian 12 (libgpiod.so.2) and 13 (libgpiod.so.3) and nothing links libgpiod.
        .target(name: "CGPIOShim"),
        // Ed25519 for signed updates from the system's OpenSSL libcrypto, loaded at run time
        // (dlopen): no second copy of a crypto library in the binary (docs/UPDATES.md).
        .target(name: "CEd25519"),
        // libyaml (Debian: libyaml-dev to build, libyaml-0-2 to run), the parser behind the
        // configuration file. Yams wraps the same library but imports Foundation, whose ICU data
        // alone is 36 MB of the static binary.
        .systemLibrary(name: "CYAML", pkgConfig: "yaml-0.1", providers: [.apt(["libyaml-dev"])]),
        .executableTarget(
            name: "edge-agent",
            dependencies: [
                "EdgeAgent",
                "DeviceAdapters",
                "Communicator",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "mqtt-example",
            dependencies: ["Communicator"]
        ),
        // The benchmark client on the shared contract (shared/bench/README.md).
        .executableTarget(
            name: "mqtt-bench",
            dependencies: [
                "Communicator",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Offline store benchmarks on the real file system (numbers, not tests).
        .executableTarget(name: "store-bench", dependencies: ["OfflineStore"]),
        // Publishes numbered messages through an offline store, for the SIGKILL black-box test.
        .executableTarget(name: "offline-probe", dependencies: ["Communicator", "OfflineStore"]),
        // Fuzzing (scripts/fuzz): the harnesses, shared with the test suite, and one libFuzzer
        // executable per harness. Built without -DFUZZING, an executable replays the inputs given
        // as arguments (a crasher, a corpus folder) through its harness.
        .target(
            name: "FuzzTargets",
            dependencies: [
                "Communicator", "OfflineStore", "EdgeAgent", "DeviceAdapters",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(name: "fuzz-decoder", dependencies: ["FuzzTargets"]),
        .executableTarget(name: "fuzz-store", dependencies: ["FuzzTargets"]),
        .executableTarget(name: "fuzz-config", dependencies: ["FuzzTargets"]),
        .executableTarget(name: "fuzz-command", dependencies: ["FuzzTargets"]),
        .executableTarget(name: "fuzz-socket-line", dependencies: ["FuzzTargets"]),
        .testTarget(
            name: "CommunicatorTests",
            dependencies: [
                "Communicator",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]
        ),
        .testTarget(
            name: "AgentTests",
            dependencies: [
                "EdgeAgent", "DeviceAdapters", "FuzzTargets",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            exclude: ["FuzzInputs"]
        ),
        .testTarget(
            name: "OfflineStoreTests",
            dependencies: ["OfflineStore"]
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "Communicator",
                "EdgeAgent",
                "OfflineStore",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
