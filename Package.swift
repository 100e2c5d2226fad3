// swift-tools-version:6.1
import PackageDescription

// Kernels are always optimised: a debug build of the test suite must still run the
// fixtures' forward passes quickly, and the SIMD paths are selected at run time.
let kernelFlags: [CSetting] = [.unsafeFlags(["-O3", "-fno-math-errno", "-Wall"])]
// The per-token Swift code (engine loop, sampler, strategies) is optimised in debug builds too,
// so the test suite's thousands of generations run at a useful speed.
let hotSwift: [SwiftSetting] = [.unsafeFlags(["-O"], .when(configuration: .debug))]

let package = Package(
    name: "layerskip",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "layerskip", targets: ["layerskip"]),
        .library(name: "Engine", targets: ["Engine"]),
        .library(name: "Tokenization", targets: ["Tokenization"]),
        .library(name: "Decoding", targets: ["Decoding"]),
        .library(name: "Training", targets: ["Training"]),
        // For the fuzz package (Fuzz/), which reaches these only through products.
        .library(name: "Daemon", targets: ["Daemon"]),
        .library(name: "StrategyPlugins", targets: ["AutoregressivePlugin", "EarlyExitPlugin", "SelfSpeculativePlugin"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        // OpenBLAS from the system (Debian: libopenblas-dev).
        .systemLibrary(
            name: "COpenBLAS",
            path: "Sources/COpenBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        // libpq from the system (Debian: libpq-dev): the PostgreSQL job store's client.
        .systemLibrary(
            name: "CLibPQ",
            path: "Sources/CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        // bf16/f16/f32 matrix kernels with runtime CPU dispatch (AVX2+FMA+F16C, scalar fallback).
        .target(
            name: "CKernels", path: "Sources/CKernels", cSettings: kernelFlags,
            linkerSettings: [.linkedLibrary("m"), .linkedLibrary("pthread")]
        ),
        // Opening inputs that others may have placed (regular files only, never blocking) and a
        // strict JSON scanner (no duplicate keys); below every module that reads files.
        .target(name: "InputFiles", path: "Sources/InputFiles"),
        .target(
            name: "Tokenization",
            dependencies: ["InputFiles"],
            path: "Sources/Tokenization",
            // The toolchain's ICU (the one Foundation's NSRegularExpression uses), for bounded matching.
            linkerSettings: [.linkedLibrary("_FoundationICU")]
        ),
        .target(
            name: "Engine",
            dependencies: ["CKernels", "InputFiles"],
            path: "Sources/Engine",
            swiftSettings: hotSwift
        ),
        // The strategy protocol and registry, sampler, stop conditions, metrics.
        .target(
            name: "Decoding",
            dependencies: ["Engine", "Tokenization", "CKernels"],
            path: "Sources/Decoding",
            swiftSettings: hotSwift
        ),
        // Vectorised element-wise kernels of the trainer (softmax, SwiGLU forward/backward).
        .target(name: "CTrainingKernels", path: "Sources/CTrainingKernels", cSettings: [.unsafeFlags(["-O3", "-fno-math-errno", "-ffp-contract=fast", "-Wall"])]),
        // The LayerSkip training recipe on CPU: forward/backward, AdamW, corpus streaming, BPE training, evaluation.
        .target(
            name: "Training",
            dependencies: ["Engine", "Tokenization", "CKernels", "COpenBLAS", "CTrainingKernels"],
            path: "Sources/Training",
            swiftSettings: hotSwift
        ),
        // Decoding-strategy plugins: each depends on the decoding protocol, never on the daemon.
        .target(name: "AutoregressivePlugin", dependencies: ["Decoding", "Engine"], path: "Plugins/Autoregressive", swiftSettings: hotSwift),
        .target(name: "EarlyExitPlugin", dependencies: ["Decoding", "Engine", "CKernels"], path: "Plugins/EarlyExit", swiftSettings: hotSwift),
        .target(name: "SelfSpeculativePlugin", dependencies: ["Decoding", "Engine"], path: "Plugins/SelfSpeculative", swiftSettings: hotSwift),
        // The daemon: job files, spool intake, the job store (SQLite or PostgreSQL), runner, model and cache managers.
        .target(
            name: "Daemon",
            dependencies: [
                "Engine", "Tokenization", "Decoding", "InputFiles", "CLibPQ",
                .product(name: "Yams", package: "Yams"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Sources/Daemon"
        ),
        .executableTarget(
            name: "layerskip",
            dependencies: [
                "Engine", "Tokenization", "COpenBLAS", "CKernels", "Decoding", "Daemon", "Training",
                "AutoregressivePlugin", "EarlyExitPlugin", "SelfSpeculativePlugin",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/layerskip"
        ),
        // Kernel micro-benchmark: GFLOP/s and GB/s of ck_matmul against OpenBLAS sgemm.
        .executableTarget(
            name: "kernel-bench",
            dependencies: ["CKernels", "COpenBLAS"],
            path: "Sources/kernel-bench"
        ),
        // Job-store benchmark: latency of each operation a prompt needs and queue throughput, SQLite and PostgreSQL.
        .executableTarget(
            name: "store-bench",
            dependencies: ["Daemon", "Decoding", "AutoregressivePlugin"],
            path: "Sources/store-bench"
        ),
        .testTarget(name: "InputFilesTests", dependencies: ["InputFiles"], path: "Tests/InputFilesTests"),
        .testTarget(
            name: "TokenizationTests",
            dependencies: ["Tokenization"],
            path: "Tests/TokenizationTests"
        ),
        // The Hugging Face reference fixtures' loader, shared by the test targets.
        .target(name: "TestFixtures", dependencies: ["Engine"], path: "Tests/TestFixtures"),
        .testTarget(
            name: "EngineTests",
            dependencies: ["Engine", "Tokenization", "CKernels", "TestFixtures"],
            path: "Tests/EngineTests"
        ),
        .testTarget(
            name: "DecodingTests",
            dependencies: ["Decoding", "Engine", "Tokenization", "AutoregressivePlugin", "EarlyExitPlugin", "SelfSpeculativePlugin", "TestFixtures"],
            path: "Tests/DecodingTests"
        ),
        .testTarget(
            name: "DaemonTests",
            dependencies: ["Daemon", "Decoding", "Engine", "Tokenization", "AutoregressivePlugin", "EarlyExitPlugin", "SelfSpeculativePlugin",
                           .product(name: "GRDB", package: "GRDB.swift"),
                           .product(name: "Logging", package: "swift-log")],
            path: "Tests/DaemonTests"
        ),
        .testTarget(
            name: "TrainingTests",
            dependencies: ["Training", "Engine", "Tokenization"],
            path: "Tests/TrainingTests",
            swiftSettings: hotSwift
        ),
        .testTarget(
            name: "CLITests",
            dependencies: [],
            path: "Tests/CLITests"
        ),
    ],
    swiftLanguageModes: [.v6]
)
