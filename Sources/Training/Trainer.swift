import Engine
import Foundation
import Tokenization

/// What one optimizer step did.
public struct StepReport: Sendable {
    public var step: Int
    /// J = Σ_l ẽ(t,l)·CE_l, averaged over the micro-batches.
    public var loss: Double
    /// Mean cross-entropy of each exit that was on (nil where ẽ = 0).
    public var exitLosses: [Double?]
    public var learningRate: Double
    public var gradientNorm: Double
    public var tokens: Int
}

/// The training loop: micro-batches with layer dropout and early-exit loss, gradient accumulation,
/// clipping, AdamW with warmup + cosine, validation per exit, checkpoints and export.
public final class Trainer {
    public let config: TrainingConfig
    public let modelConfig: ModelConfig
    public let layout: ParameterLayout
    public let tokenizer: Tokenizer
    public let corpus: Corpus
    let network: Network<Float>
    public let params: Tensor<Float>   // (layout.count)
    let grads: Tensor<Float>           // (layout.count)
    let optimizer: AdamW
    /// One stream per row of a micro-batch (see `TokenStream` lanes).
    let lanes: [TokenStream]
    /// Held-out sequences of sequence_length + 1 tokens, fixed for the run.
    public let validationSequences: [[Int32]]
    public private(set) var step = 0

    public init(config: TrainingConfig) throws {
        self.config = config
        let tokURL = URL(fileURLWithPath: config.tokenizer)
        let tok: Tokenizer
        do { tok = try Tokenizer(contentsOf: tokURL) } catch {
            throw TrainingError(file: config.tokenizer, field: nil, "cannot load the tokenizer: \(error)")
        }
        tokenizer = tok
        let bos = ["<|begin_of_text|>", "<s>"].lazy.compactMap { tok.id(of: $0) }.first
        let eos = ["<|end_of_text|>", "</s>", "<|endoftext|>"].compactMap { tok.id(of: $0) }
        modelConfig = config.modelConfig(vocabSize: tokenizer.vocabularySize, bos: bos, eos: Array(eos.prefix(1)))
        layout = ParameterLayout(config: modelConfig)
        corpus = try Corpus(paths: config.data.paths, extensions: config.data.extensions, exclude: config.data.exclude,
                            validationFraction: config.data.validationFraction)
        let t = config.training
        network = Network(layout: layout, batch: t.batchSize, length: t.sequenceLength)
        params = Tensor(count: layout.count)
        grads = Tensor(count: layout.count)
        layout.initialValues(into: params.pointer, seed: t.seed)
        optimizer = AdamW(layout: layout)
        optimizer.beta1 = t.beta1
        optimizer.beta2 = t.beta2
        optimizer.weightDecay = t.weightDecay
        let trainFiles = corpus.trainFiles
        lanes = (0..<t.batchSize).map { b in
            TokenStream(files: trainFiles, tokenizer: tok, separator: eos.first, shuffleSeed: t.seed, lane: b, lanes: t.batchSize)
        }
        if corpus.validationFiles.isEmpty || config.data.validationSequences <= 0 {
            validationSequences = []
        } else {
            let v = TokenStream(files: corpus.validationFiles, tokenizer: tok, separator: eos.first, shuffleSeed: nil)
            // Whole micro-batches only.
            let count = max(config.data.validationSequences / t.batchSize, 1) * t.batchSize
            validationSequences = (0..<count).map { _ in v.nextSequence(length: t.sequenceLength) }
        }
    }

    public var tokensPerStep: Int { config.training.batchSize * config.training.accumulation * config.training.sequenceLength }
    public var dataPositions: [DataPosition] { lanes.map(\.position) }

    /// One optimizer step (accumulating `accumulation` micro-batches). Tests that only advance the
    /// state may ignore the report.
    @discardableResult
    public func trainStep() -> StepReport {
        let t = config.training, L = modelConfig.layerCount
        let schedule = config.layerskip
        let weights = schedule.exitWeights(layers: L, step: step, steps: t.steps)
        grads.zero()
        var exitSums = [Double?](repeating: nil, count: L)
        var loss = 0.0
        for m in 0..<t.accumulation {
            var tokens: [Int32] = []
            tokens.reserveCapacity(t.batchSize * (t.sequenceLength + 1))
            for lane in lanes { tokens += lane.nextSequence(length: t.sequenceLength) }
            let keep = schedule.keepMask(step: step, steps: t.steps, layers: L, samples: t.batchSize,
                                         sampleBase: m * t.batchSize, seed: t.seed)
            let ce = network.run(tokens: tokens, keep: keep, exitWeights: weights, params: params.pointer,
                                 grads: grads.pointer, scale: 1 / Double(t.accumulation),
                                 distillation: schedule.exitDistillation)
            for l in 0..<L {
                if let c = ce[l] {
                    exitSums[l] = (exitSums[l] ?? 0) + c / Double(t.accumulation)
                    loss += weights[l] * c / Double(t.accumulation)
                }
            }
        }
        let norm = clipGlobalNorm(grads.pointer, count: layout.count, maxNorm: t.gradClip)
        let lr = config.learningRateSchedule.rate(step: step)
        optimizer.step(params: params.pointer, grads: grads.pointer, count: layout.count, lr: lr)
        step += 1
        return StepReport(step: step, loss: loss, exitLosses: exitSums, learningRate: lr, gradientNorm: norm, tokens: tokensPerStep)
    }

    /// Mean cross-entropy of every exit (after each layer, no dropout) on the validation sequences;
    /// nil without validation files.
    public func validate() -> [Double]? {
        guard !validationSequences.isEmpty else { return nil }
        let b = config.training.batchSize, L = modelConfig.layerCount
        var sums = [Double](repeating: 0, count: L)
        let batches = validationSequences.count / b
        let keep = [[Bool]](repeating: [Bool](repeating: true, count: b), count: L)
        for i in 0..<batches {
            let tokens = Array(validationSequences[(i * b)..<((i + 1) * b)].joined())
            let ce = network.run(tokens: tokens, keep: keep, exitWeights: [Double](repeating: 1, count: L),
                                 params: params.pointer, grads: nil)
            for l in 0..<L { sums[l] += (ce[l] ?? 0) / Double(batches) }
        }
        return sums
    }

    /// The trainer's own logits for one sequence (tests compare them with the engine's): (count, vocab)
    /// of the exit after `layer`, for `tokens` padded into the first sample of a micro-batch.
    public func logits(tokens: [Int32], after layer: Int) -> [Float] {
        let t = config.training
        precondition(tokens.count <= t.sequenceLength)
        var batch = [Int32](repeating: 0, count: t.batchSize * (t.sequenceLength + 1))
        for (i, tok) in tokens.enumerated() { batch[i] = tok }
        let keep = [[Bool]](repeating: [Bool](repeating: true, count: t.batchSize), count: modelConfig.layerCount)
        var w = [Double](repeating: 0, count: modelConfig.layerCount)
        w[w.count - 1] = 1
        network.run(tokens: batch, keep: keep, exitWeights: w, params: params.pointer, grads: nil)
        let all = network.exitLogits(after: layer, params: params.pointer)
        return Array(all[0..<(tokens.count * modelConfig.vocabSize)])
    }

    // MARK: - Checkpoints

    struct State: Codable {
        var step: Int
        var updates: Int
        var positions: [DataPosition]
        var parameterCount: Int
        var fingerprint: String
    }

    /// Architecture and batch geometry: a checkpoint only resumes into the run it came from.
    var fingerprint: String {
        let c = modelConfig, t = config.training
        return "\(c.hiddenSize)x\(c.intermediateSize)x\(c.layerCount)h\(c.headCount)kv\(c.kvHeadCount)d\(c.headDim)v\(c.vocabSize)tie\(c.tieWordEmbeddings)"
            + "b\(t.batchSize)a\(t.accumulation)s\(t.sequenceLength)seed\(t.seed)"
    }

    /// Writes params, AdamW moments, step and data position to `directory` (replaced atomically:
    /// a run killed while writing keeps the previous checkpoint).
    public func saveCheckpoint(to directory: URL) throws {
        let fm = FileManager.default
        let temp = directory.deletingLastPathComponent().appendingPathComponent(".\(directory.lastPathComponent).tmp")
        try? fm.removeItem(at: temp)
        try fm.createDirectory(at: temp, withIntermediateDirectories: true)
        let state = State(step: step, updates: optimizer.updates, positions: dataPositions,
                          parameterCount: layout.count, fingerprint: fingerprint)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(state).write(to: temp.appendingPathComponent("state.json"))
        for (name, tensor) in [("params.f32", params), ("adam_m.f32", optimizer.m), ("adam_v.f32", optimizer.v)] {
            try Data(bytesNoCopy: tensor.pointer, count: tensor.count * 4, deallocator: .none)
                .write(to: temp.appendingPathComponent(name))
        }
        let old = directory.deletingLastPathComponent().appendingPathComponent(".\(directory.lastPathComponent).old")
        try? fm.removeItem(at: old)
        if fm.fileExists(atPath: directory.path) { try fm.moveItem(at: directory, to: old) }
        try fm.moveItem(at: temp, to: directory)
        try? fm.removeItem(at: old)
    }

    /// The checkpoint folder to resume from, if any: `directory` itself, or the previous checkpoint
    /// left beside it when a run was killed between the two renames of `saveCheckpoint`.
    public static func resumableCheckpoint(_ directory: URL) -> URL? {
        let fm = FileManager.default
        if fm.fileExists(atPath: directory.appendingPathComponent("state.json").path) { return directory }
        let old = directory.deletingLastPathComponent().appendingPathComponent(".\(directory.lastPathComponent).old")
        return fm.fileExists(atPath: old.appendingPathComponent("state.json").path) ? old : nil
    }

    /// Restores a checkpoint written by `saveCheckpoint` for this same configuration.
    public func loadCheckpoint(from directory: URL) throws {
        let stateFile = directory.appendingPathComponent("state.json")
        let state: State
        do { state = try JSONDecoder().decode(State.self, from: Data(contentsOf: stateFile)) } catch {
            throw TrainingError(file: stateFile.path, "unreadable checkpoint state: \(error)")
        }
        guard state.fingerprint == fingerprint, state.parameterCount == layout.count, state.positions.count == lanes.count else {
            throw TrainingError(file: stateFile.path, field: "fingerprint",
                                "checkpoint is of another model or batch geometry (\(state.fingerprint), this run: \(fingerprint))")
        }
        for (name, tensor) in [("params.f32", params), ("adam_m.f32", optimizer.m), ("adam_v.f32", optimizer.v)] {
            let url = directory.appendingPathComponent(name)
            guard let data = try? Data(contentsOf: url), data.count == tensor.count * 4 else {
                throw TrainingError(file: url.path, "missing or of the wrong size (expected \(tensor.count * 4) bytes)")
            }
            data.withUnsafeBytes { raw in
                UnsafeMutableRawPointer(tensor.pointer).copyMemory(from: raw.baseAddress!, byteCount: tensor.count * 4)
            }
        }
        step = state.step
        optimizer.updates = state.updates
        for (lane, position) in zip(lanes, state.positions) { lane.seek(to: position) }
    }

    // MARK: - Warm start

    /// Starts from a trained model's weights instead of the random initialisation: a continued run
    /// (fresh optimizer moments and schedule) over more data. The folder must hold this run's
    /// architecture; a mismatch names the first field that differs.
    public func initialize(from model: LlamaModel, folder: String) throws {
        let a = model.config, b = modelConfig
        let fields: [(String, Int, Int)] = [
            ("hidden_size", a.hiddenSize, b.hiddenSize), ("intermediate_size", a.intermediateSize, b.intermediateSize),
            ("num_hidden_layers", a.layerCount, b.layerCount), ("num_attention_heads", a.headCount, b.headCount),
            ("num_key_value_heads", a.kvHeadCount, b.kvHeadCount), ("head_dim", a.headDim, b.headDim),
            ("vocab_size", a.vocabSize, b.vocabSize),
            ("tie_word_embeddings", a.tieWordEmbeddings ? 1 : 0, b.tieWordEmbeddings ? 1 : 0),
        ]
        if let (name, found, expected) = fields.first(where: { $0.1 != $0.2 }) {
            throw TrainingError(file: folder + "/config.json", field: name,
                                "the model to start from has \(name) = \(found), this run's config \(expected)")
        }
        layout.load(model.weights, into: params.pointer)
    }

    // MARK: - Export

    /// A Hugging Face model folder: config.json (transformers-4 style), model.safetensors in `dtype`,
    /// and the run's tokenizer.json.
    public func export(to directory: URL, dtype: DType) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try StandInModel.configJSON(modelConfig, dtype: dtype).write(to: directory.appendingPathComponent("config.json"), options: .atomic)
        let entries = layout.entries.map { SafetensorsWriter.Entry(name: $0.name, dtype: dtype, shape: $0.shape) }
        let writer = try SafetensorsWriter(url: directory.appendingPathComponent("model.safetensors"), entries: entries,
                                           metadata: ["format": "pt", "generator": "layerskip train", "step": "\(step)"])
        try writer.write(UnsafeBufferPointer(start: params.pointer, count: layout.count))
        try writer.finish()
        let tokOut = directory.appendingPathComponent("tokenizer.json")
        let tokIn = URL(fileURLWithPath: config.tokenizer)
        // The output folder may be where the tokenizer already lives (models/default).
        if tokIn.standardizedFileURL.resolvingSymlinksInPath() != tokOut.standardizedFileURL.resolvingSymlinksInPath() {
            try? FileManager.default.removeItem(at: tokOut)
            try FileManager.default.copyItem(at: tokIn, to: tokOut)
        }
    }
}
