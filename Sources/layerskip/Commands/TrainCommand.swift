import ArgumentParser
import COpenBLAS
import Engine
import Foundation
import Training
import Yams

/// Set by SIGINT/SIGTERM: the loop finishes its step, writes a checkpoint and exits.
nonisolated(unsafe) private var stopRequested: sig_atomic_t = 0

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a Llama-architecture model with the LayerSkip recipe (layer dropout + early-exit loss) on CPU.",
        discussion: """
            The YAML config has sections model, tokenizer, data, training, layerskip, output (see
            models/default/train.yaml). Flags override the file; --set PATH=VALUE overrides any key
            (e.g. --set layerskip.dropout_max=0.1). A run resumes from OUT/checkpoint when one exists
            (unless --fresh); Ctrl-C or SIGTERM writes a checkpoint before exiting. At the end OUT holds a
            Hugging Face folder (config.json, model.safetensors, tokenizer.json) and train_log.jsonl.
            """)

    @Option(help: "YAML config file.")
    var config: String

    @Option(help: "Total optimizer steps (training.steps).")
    var steps: Int?

    @Option(help: "Output folder (output.dir); relative to the current directory, where output.dir in the config is relative to the config file.")
    var out: String?

    @Option(help: "Random seed (training.seed).")
    var seed: Int?

    @Option(name: .customLong("set"), help: "Override a config key: PATH=VALUE, e.g. training.batch_size=4 (repeatable).")
    var overrides: [String] = []

    @Option(help: "Compute threads (default: LAYERSKIP_THREADS or all CPUs).")
    var threads: Int?

    @Option(help: "Stop after this many steps in this invocation (the run stays resumable).")
    var maxSteps: Int?

    @Flag(help: "Ignore an existing checkpoint and start over.")
    var fresh = false

    @Option(help: ArgumentHelp("Start from this trained model folder's weights instead of a random initialisation "
                               + "(a continued run: fresh optimizer and schedule). Ignored when a checkpoint resumes.",
                               valueName: "MODEL"))
    var initFrom: String?

    func run() throws {
        let mapping = try Self.loadMapping(config, overrides: overrides + [
            steps.map { "training.steps=\($0)" }, out.map { "output.dir=\(URL(fileURLWithPath: $0).standardizedFileURL.path)" }, seed.map { "training.seed=\($0)" },
        ].compactMap { $0 })
        let cfg: TrainingConfig
        do { cfg = try TrainingConfig(mapping: mapping, file: config) } catch let e as TrainingError {
            throw CLIError(message: e.description, exitCode: 2)
        }
        if let threads { openblas_set_num_threads(Int32(threads)) }
        ThreadSettings.apply(threads)

        let trainer = try Trainer(config: cfg)
        let outDir = URL(fileURLWithPath: cfg.output.directory).standardizedFileURL
        try FileManager.default.createDirectory(at: outDir, withIntermediateDirectories: true)
        let checkpoint = outDir.appendingPathComponent("checkpoint")
        if !fresh, let found = Trainer.resumableCheckpoint(checkpoint) {
            try trainer.loadCheckpoint(from: found)
            standardError("resumed from \(found.path) at step \(trainer.step)")
        } else if let initFrom {
            let model: LlamaModel
            do { model = try LlamaModel(directory: URL(fileURLWithPath: initFrom)) } catch {
                throw CLIError(message: "--init-from \(initFrom): \(error)", exitCode: 2)
            }
            do { try trainer.initialize(from: model, folder: initFrom) } catch let e as TrainingError {
                throw CLIError(message: e.description, exitCode: 2)
            }
            standardError("starting from the weights of \(initFrom)")
        }
        let params = trainer.layout.count
        standardError("model: \(params) parameters (\(trainer.modelConfig.layerCount) layers, hidden \(trainer.modelConfig.hiddenSize), vocab \(trainer.modelConfig.vocabSize)); "
                      + "corpus: \(trainer.corpus.trainFiles.count) training files, \(trainer.corpus.validationFiles.count) held out; "
                      + "\(trainer.tokensPerStep) tokens/step, \(cfg.training.steps) steps")
        let logURL = outDir.appendingPathComponent("train_log.jsonl")
        if fresh { try? FileManager.default.removeItem(at: logURL) }
        // Steps a killed run logged after its last checkpoint are redone now: drop their lines.
        JSONLog.truncate(logURL, afterStep: trainer.step)
        let log = try JSONLog(url: logURL)
        signal(SIGINT) { _ in stopRequested = 1 }
        signal(SIGTERM) { _ in stopRequested = 1 }

        let progress = Progress(totalSteps: cfg.training.steps, startStep: trainer.step, layers: trainer.modelConfig.layerCount)
        let until = min(cfg.training.steps, maxSteps.map { trainer.step + $0 } ?? Int.max)
        while trainer.step < until && stopRequested == 0 {
            let report = trainer.trainStep()
            progress.update(report, every: cfg.output.logEvery)
            if report.step % cfg.output.logEvery == 0 || report.step == until { log.write(report) }
            if report.step % cfg.output.evalEvery == 0 || report.step == cfg.training.steps, let val = trainer.validate() {
                progress.validation(step: report.step, losses: val)
                log.write(validation: val, step: report.step)
            }
            if report.step % cfg.output.checkpointEvery == 0 { try trainer.saveCheckpoint(to: checkpoint) }
        }
        progress.finish()
        if progress.tokens > 0 {
            let rate = Double(progress.tokens) / progress.elapsed
            let gflops = Throughput.sgemmGFLOPS()
            let fraction = Throughput.fraction(parameters: params, tokensPerSecond: rate, sgemmGFLOPS: gflops)
            standardError(String(format: "throughput: %.0f tokens/s; 6 × %d params × tokens/s = %.1f GFLOP/s = %.0f%% of sgemm (%.1f GFLOP/s measured)",
                                 rate, params, 6 * Double(params) * rate / 1e9, 100 * fraction, gflops))
        }
        try trainer.saveCheckpoint(to: checkpoint)
        if stopRequested != 0 {
            standardError("stopped at step \(trainer.step); checkpoint written, run the same command to resume")
            throw ExitCode(130)
        }
        try trainer.export(to: outDir, dtype: cfg.output.dtype)
        standardError(String(format: "wrote %@ (step %d, %.0f s this run)", outDir.path, trainer.step, progress.elapsed))
        print(outDir.path)
    }

    /// The YAML file as a mapping, with PATH=VALUE overrides applied (values parsed as YAML scalars).
    static func loadMapping(_ file: String, overrides: [String]) throws -> [String: Any] {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            throw CLIError.notFound("cannot read config \(file)")
        }
        let parsed: Any?
        do { parsed = try Yams.load(yaml: text) } catch {
            throw CLIError(message: "\(file): not valid YAML (\(error))", exitCode: 2)
        }
        guard var mapping = (parsed ?? [String: Any]()) as? [String: Any] else {
            throw CLIError(message: "\(file): expected a mapping at the top level", exitCode: 2)
        }
        for o in overrides {
            guard let eq = o.firstIndex(of: "=") else { throw CLIError(message: "--set \(o): expected PATH=VALUE", exitCode: 2) }
            let path = o[..<eq].split(separator: ".").map(String.init)
            let value: Any = (try? Yams.load(yaml: String(o[o.index(after: eq)...]))).flatMap { $0 } ?? String(o[o.index(after: eq)...])
            guard !path.isEmpty else { throw CLIError(message: "--set \(o): empty key", exitCode: 2) }
            mapping = set(mapping, path[...], value)
        }
        return mapping
    }

    private static func set(_ m: [String: Any], _ path: ArraySlice<String>, _ value: Any) -> [String: Any] {
        var m = m
        let key = path.first!
        if path.count == 1 { m[key] = value } else { m[key] = set(m[key] as? [String: Any] ?? [:], path.dropFirst(), value) }
        return m
    }
}

/// One JSON object per line: step reports and validation results, for plots and the model card.
final class JSONLog {
    let handle: FileHandle
    init(url: URL) throws {
        // A file that cannot be created surfaces as FileHandle's error just below, which names it.
        if !FileManager.default.fileExists(atPath: url.path) { _ = FileManager.default.createFile(atPath: url.path, contents: nil) }
        handle = try FileHandle(forWritingTo: url)
        handle.seekToEndOfFile()
    }
    /// Keeps only the lines of steps ≤ `step`.
    static func truncate(_ url: URL, afterStep step: Int) {
        guard let text = try? String(contentsOf: url, encoding: .utf8) else { return }
        let kept = text.split(separator: "\n").filter { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let s = object["step"] as? Int else { return false }
            return s <= step
        }
        try? (kept.map { $0 + "\n" }.joined()).write(to: url, atomically: true, encoding: .utf8)
    }

    private func write(_ object: [String: Any]) {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        handle.write(data + Data("\n".utf8))
    }
    func write(_ r: StepReport) {
        write(["step": r.step, "loss": r.loss, "lr": r.learningRate, "grad_norm": r.gradientNorm,
               "exit_losses": r.exitLosses.map { $0 as Any? ?? NSNull() }, "time": Date().timeIntervalSince1970])
    }
    func write(validation: [Double], step: Int) {
        write(["step": step, "validation_losses": validation, "time": Date().timeIntervalSince1970])
    }
}

/// The progress display: one rewritten line on a terminal, plain lines every `logEvery` steps otherwise.
final class Progress {
    let totalSteps: Int
    let startStep: Int
    let layers: Int
    let start = Date()
    let interactive = isatty(STDERR_FILENO) == 1
    var tokens = 0
    var lastWidth = 0

    init(totalSteps: Int, startStep: Int, layers: Int) {
        self.totalSteps = totalSteps
        self.startStep = startStep
        self.layers = layers
    }

    var elapsed: Double { Date().timeIntervalSince(start) }

    func update(_ r: StepReport, every: Int) {
        tokens += r.tokens
        guard interactive || r.step % every == 0 else { return }
        let rate = Double(tokens) / max(elapsed, 1e-9)
        let stepsDone = r.step - startStep
        let eta = Double(totalSteps - r.step) * elapsed / Double(max(stepsDone, 1))
        let exits = r.exitLosses.enumerated().compactMap { l, v in v.map { "L\(l + 1) " + String(format: "%.2f", $0) } }
        let line = String(format: "step %d/%d  loss %.3f  [%@]  lr %.2e  %.0f tok/s  ETA %@",
                          r.step, totalSteps, r.loss, exits.joined(separator: " "), r.learningRate, rate, Self.duration(eta))
        if interactive {
            let pad = String(repeating: " ", count: max(lastWidth - line.count, 0))
            FileHandle.standardError.write(Data(("\r" + line + pad).utf8))
            lastWidth = line.count
        } else {
            standardError(line)
        }
    }

    func validation(step: Int, losses: [Double]) {
        if interactive { FileHandle.standardError.write(Data("\n".utf8)); lastWidth = 0 }
        let cells = losses.enumerated().map { String(format: "L%d %.3f", $0.offset + 1, $0.element) }
        standardError("validation @ step \(step): " + cells.joined(separator: "  "))
    }

    func finish() {
        if interactive && lastWidth > 0 { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    static func duration(_ s: Double) -> String {
        guard s.isFinite else { return "?" }
        let t = Int(s)
        return t >= 3600 ? "\(t / 3600)h\(String(format: "%02d", t % 3600 / 60))m" : "\(t / 60)m\(String(format: "%02d", t % 60))s"
    }
}
