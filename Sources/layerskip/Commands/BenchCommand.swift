import ArgumentParser
import Engine
import Foundation

/// Engine throughput on one model, as a rerunnable benchmark: medians over several runs of a
/// prefill of --prompt-tokens and a greedy decode of --new-tokens, plus peak memory.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure prefill and decode speed and peak memory of a model (medians of several runs).",
        discussion: """
            The prompt is --prompt-tokens pseudo-random token ids (seeded), so any model folder works,
            a tokenizer is not needed, and runs are comparable. Each run starts from an empty cache.
            Example (the engine issue's bar): layerskip init-model --shape llama3.2-1b --tokenizer
            Tests/Fixtures/tokenizers/llama3/tokenizer.json --out models/stand-in/llama3.2-1b, then
            layerskip bench --model models/stand-in/llama3.2-1b --prompt-tokens 64 --new-tokens 64 --runs 5.
            """)

    @Option(help: "Hugging Face model folder.")
    var model: String

    @Option(help: "Prompt length for the prefill measurement.")
    var promptTokens: Int = 64

    @Option(help: "Tokens to decode after the prompt.")
    var newTokens: Int = 64

    @Option(help: "Number of measured runs (a warm-up run comes first).")
    var runs: Int = 5

    @Option(help: "Exit layer for the decode (default: all layers).")
    var exitLayer: Int?

    @Option(help: "Compute threads (default: LAYERSKIP_THREADS or all online CPUs).")
    var threads: Int?

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        guard promptTokens >= 1, newTokens >= 1, runs >= 1 else {
            throw ValidationError("--prompt-tokens, --new-tokens and --runs must be at least 1")
        }
    }

    struct Report: Encodable {
        var model: String
        var layers: Int
        var weightBytes: Int
        var kvCacheBytes: Int
        var threads: Int
        var kernels: String
        var promptTokens: Int
        var newTokens: Int
        var runs: Int
        var prefillTokensPerSecond: [Double]
        var decodeTokensPerSecond: [Double]
        var medianPrefillTokensPerSecond: Double
        var medianDecodeTokensPerSecond: Double
        var peakRssBytes: Int
        var peakRssOverWeightsPlusKv: Double
    }

    func run() throws {
        ThreadSettings.apply(threads)
        let llama = try LlamaModel(directory: URL(fileURLWithPath: model), maxPositions: promptTokens + newTokens)
        if let exitLayer, !(1...llama.layerCount).contains(exitLayer) {
            throw ValidationError("--exit-layer must be between 1 and \(llama.layerCount), found \(exitLayer)")
        }
        var rng = SplitMix64(seed: 42)
        let vocab = UInt64(llama.config.vocabSize)
        let prompt = (0..<promptTokens).map { _ in Int(rng.next() % vocab) }
        let generator = GreedyGeneration(model: llama)
        var prefill: [Double] = []
        var decode: [Double] = []
        for run in 0...runs {
            let result = generator.run(prompt: prompt, maxNewTokens: newTokens, exitLayer: exitLayer,
                                       minNewTokens: newTokens, stopTokenIds: [])
            guard run > 0 else { continue }  // warm-up: page in the weights
            prefill.append(Double(promptTokens) / result.prefillSeconds)
            decode.append(Double(max(result.tokens.count - 1, 1)) / result.decodeSeconds)
            if !json {
                standardError(String(format: "run %d: prefill %.1f tok/s, decode %.2f tok/s", run, prefill.last!, decode.last!))
            }
        }
        let kv = KVCache.byteCount(config: llama.config, capacity: promptTokens + newTokens)
        let rss = peakResidentBytes()
        let report = Report(
            model: model, layers: llama.layerCount, weightBytes: llama.weights.byteCount, kvCacheBytes: kv,
            threads: KernelReport.current().threads, kernels: KernelReport.current().kernels,
            promptTokens: promptTokens, newTokens: newTokens, runs: runs,
            prefillTokensPerSecond: prefill, decodeTokensPerSecond: decode,
            medianPrefillTokensPerSecond: median(prefill), medianDecodeTokensPerSecond: median(decode),
            peakRssBytes: rss, peakRssOverWeightsPlusKv: Double(rss) / Double(llama.weights.byteCount + kv))
        if json {
            try printJSON(report)
        } else {
            print(String(format: "model %@: %d layers, weights %.2f GB, KV cache %.1f MB, %d threads, kernels %@",
                         model, llama.layerCount, Double(report.weightBytes) / 1e9, Double(kv) / 1e6, report.threads, report.kernels))
            print(String(format: "prefill %d tokens: median %.1f tokens/s", promptTokens, report.medianPrefillTokensPerSecond))
            print(String(format: "decode %d tokens:  median %.2f tokens/s", newTokens, report.medianDecodeTokensPerSecond))
            print(String(format: "peak RSS %.2f GB = %.2f × (weights + KV cache)", Double(rss) / 1e9, report.peakRssOverWeightsPlusKv))
        }
    }
}

func median(_ values: [Double]) -> Double {
    let s = values.sorted()
    guard !s.isEmpty else { return 0 }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// VmHWM from /proc/self/status: the most resident memory this process has held.
func peakResidentBytes() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let kb = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
        return kb * 1024
    }
    return 0
}
