// swift-tools-version:6.1
// libFuzzer harnesses for the parsers that read untrusted files: safetensors headers,
// config.json, tokenizer.json and job files. Build and run them with scripts/fuzz.sh; each
// executable is only meaningful when built with `-sanitize=fuzzer,address` (libFuzzer provides
// `main`, the harness only defines `LLVMFuzzerTestOneInput`).
import PackageDescription

let package = Package(
    name: "layerskip-fuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        // The explicit name makes `package: "layerskip"` below independent of the clone's folder
        // name (a path dependency's identity is otherwise its folder's last component).
        .package(name: "layerskip", path: ".."),
    ],
    targets: [
        .executableTarget(
            name: "fuzz-safetensors",
            dependencies: [.product(name: "Engine", package: "layerskip")],
            path: "Sources/fuzz-safetensors"
        ),
        .executableTarget(
            name: "fuzz-model-config",
            dependencies: [.product(name: "Engine", package: "layerskip")],
            path: "Sources/fuzz-model-config"
        ),
        .executableTarget(
            name: "fuzz-tokenizer",
            dependencies: [.product(name: "Tokenization", package: "layerskip")],
            path: "Sources/fuzz-tokenizer"
        ),
        .executableTarget(
            name: "fuzz-job-file",
            dependencies: [
                .product(name: "Daemon", package: "layerskip"),
                .product(name: "Decoding", package: "layerskip"),
                .product(name: "StrategyPlugins", package: "layerskip"),
            ],
            path: "Sources/fuzz-job-file"
        ),
    ],
    swiftLanguageModes: [.v5]
)
