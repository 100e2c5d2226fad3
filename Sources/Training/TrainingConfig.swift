import Engine
import Foundation

/// A training run's settings, read from a mapping (the YAML file, with CLI overrides applied).
/// Every key is checked: an unknown key or a value of the wrong type is an error naming the file
/// and the dotted field path. Sections and defaults are documented in `models/default/README.md`.
public struct TrainingConfig: Sendable, Equatable {
    public struct Model: Sendable, Equatable {
        public var hiddenSize = 256, intermediateSize = 688, layers = 8, heads = 8, kvHeads = 4
        public var headDim: Int?
        public var ropeTheta = 10000.0, rmsNormEps = 1e-5, tieEmbeddings = true, maxPositions = 2048
    }
    public struct Data: Sendable, Equatable {
        public var paths: [String] = []
        public var extensions: [String] = []
        public var exclude: [String] = []
        public var validationFraction = 0.05
        /// Sequences of held-out text in each validation pass (from the start of the validation files).
        public var validationSequences = 64
    }
    public struct Optimization: Sendable, Equatable {
        public var steps = 1000, batchSize = 8, accumulation = 1, sequenceLength = 256
        public var learningRate = 1e-3, minLearningRate = 1e-4, warmupSteps = 100
        public var weightDecay = 0.1, beta1 = 0.9, beta2 = 0.95, gradClip = 1.0
        public var seed: UInt64 = 0
    }
    public struct Output: Sendable, Equatable {
        public var directory = "trained-model"
        public var checkpointEvery = 200, evalEvery = 200, logEvery = 10
        public var dtype = DType.bf16
    }

    public var model = Model()
    /// tokenizer.json the corpus is encoded with (and that the output folder ships).
    public var tokenizer = ""
    public var data = Data()
    public var training = Optimization()
    public var layerskip = LayerSkipSchedule()
    public var output = Output()
    /// Paths in the file are relative to it; this is its folder.
    public var baseDirectory = "."

    public init() {}

    /// Reads the mapping of a config file. Relative paths are resolved against `file`'s folder.
    public init(mapping: [String: Any], file: String) throws {
        baseDirectory = (file as NSString).deletingLastPathComponent
        if baseDirectory.isEmpty { baseDirectory = "." }
        let root = ConfigFields(mapping, file: file, prefix: "")
        if let m = try root.section("model") {
            model.hiddenSize = try m.positiveInt("hidden_size") ?? model.hiddenSize
            model.intermediateSize = try m.positiveInt("intermediate_size") ?? model.intermediateSize
            model.layers = try m.positiveInt("num_layers") ?? model.layers
            model.heads = try m.positiveInt("num_heads") ?? model.heads
            model.kvHeads = try m.positiveInt("num_kv_heads") ?? model.heads
            model.headDim = try m.positiveInt("head_dim")
            model.ropeTheta = try m.double("rope_theta") ?? model.ropeTheta
            model.rmsNormEps = try m.double("rms_norm_eps") ?? model.rmsNormEps
            model.tieEmbeddings = try m.bool("tie_embeddings") ?? model.tieEmbeddings
            model.maxPositions = try m.positiveInt("max_positions") ?? model.maxPositions
            try m.rejectUnknown()
            guard model.heads % model.kvHeads == 0 else { throw m.error("num_kv_heads", "must divide num_heads (\(model.heads)), found \(model.kvHeads)") }
            guard (model.headDim ?? model.hiddenSize / model.heads) % 2 == 0 else { throw m.error("head_dim", "must be even for RoPE") }
        }
        tokenizer = try root.string("tokenizer").map(resolve) ?? ""
        if tokenizer.isEmpty { throw root.error("tokenizer", "required: the tokenizer.json to encode the corpus with") }
        if let d = try root.section("data") {
            data.paths = try d.strings("paths")?.map(resolve) ?? []
            data.extensions = try d.strings("extensions") ?? []
            data.exclude = try d.strings("exclude") ?? []
            data.validationFraction = try d.double("validation_fraction") ?? data.validationFraction
            data.validationSequences = try d.int("validation_sequences") ?? data.validationSequences
            try d.rejectUnknown()
            guard (0..<1).contains(data.validationFraction) else { throw d.error("validation_fraction", "must be in [0, 1)") }
        }
        if data.paths.isEmpty { throw root.error("data.paths", "required: files, folders or globs of training text") }
        if let t = try root.section("training") {
            training.steps = try t.positiveInt("steps") ?? training.steps
            training.batchSize = try t.positiveInt("batch_size") ?? training.batchSize
            training.accumulation = try t.positiveInt("accumulation") ?? training.accumulation
            training.sequenceLength = try t.positiveInt("sequence_length") ?? training.sequenceLength
            training.learningRate = try t.double("learning_rate") ?? training.learningRate
            training.minLearningRate = try t.double("min_learning_rate") ?? training.learningRate / 10
            training.warmupSteps = try t.int("warmup_steps") ?? training.warmupSteps
            training.weightDecay = try t.double("weight_decay") ?? training.weightDecay
            training.beta1 = try t.double("beta1") ?? training.beta1
            training.beta2 = try t.double("beta2") ?? training.beta2
            training.gradClip = try t.double("grad_clip") ?? training.gradClip
            training.seed = UInt64(try t.int("seed") ?? 0)
            try t.rejectUnknown()
            guard training.sequenceLength <= model.maxPositions else {
                throw t.error("sequence_length", "must not exceed model.max_positions (\(model.maxPositions)), found \(training.sequenceLength)")
            }
        }
        if let l = try root.section("layerskip") {
            layerskip.dropoutMax = try l.double("dropout_max") ?? 0
            layerskip.depthScaling = try l.choice("dropout_depth", LayerSkipSchedule.DepthScaling.self) ?? .exp
            layerskip.timeScaling = try l.choice("dropout_time", LayerSkipSchedule.TimeScaling.self) ?? .constant
            layerskip.exitScale = try l.double("exit_scale") ?? 0
            layerskip.curriculum = try l.choice("curriculum", LayerSkipSchedule.Curriculum.self) ?? .none
            layerskip.rotationPeriod = try l.positiveInt("rotation_period") ?? 2
            layerskip.exitDistillation = try l.double("exit_distillation") ?? 0
            try l.rejectUnknown()
            guard (0...1).contains(layerskip.dropoutMax) else { throw l.error("dropout_max", "must be in [0, 1]") }
            guard layerskip.exitScale >= 0 else { throw l.error("exit_scale", "must be ≥ 0") }
            guard (0...1).contains(layerskip.exitDistillation) else {
                throw l.error("exit_distillation", "must be in [0, 1], found \(layerskip.exitDistillation)")
            }
        }
        if let o = try root.section("output") {
            output.directory = resolve(try o.string("dir") ?? output.directory)
            output.checkpointEvery = try o.positiveInt("checkpoint_every") ?? output.checkpointEvery
            output.evalEvery = try o.positiveInt("eval_every") ?? output.evalEvery
            output.logEvery = try o.positiveInt("log_every") ?? output.logEvery
            if let d = try o.string("dtype") {
                guard let dtype = ["bf16": DType.bf16, "f16": .f16, "f32": .f32][d.lowercased()] else {
                    throw o.error("dtype", "expected bf16, f16 or f32, found \"\(d)\"")
                }
                output.dtype = dtype
            }
            try o.rejectUnknown()
        } else {
            output.directory = resolve(output.directory)
        }
        try root.rejectUnknown()
    }

    private func resolve(_ path: String) -> String {
        path.hasPrefix("/") || path.hasPrefix("~") ? (path as NSString).expandingTildeInPath : baseDirectory + "/" + path
    }

    /// The architecture, with the vocabulary and special tokens of the tokenizer.
    public func modelConfig(vocabSize: Int, bos: Int?, eos: [Int]) -> ModelConfig {
        ModelConfig(hiddenSize: model.hiddenSize, intermediateSize: model.intermediateSize, layerCount: model.layers,
                    headCount: model.heads, kvHeadCount: model.kvHeads, headDim: model.headDim,
                    rmsNormEps: Float(model.rmsNormEps), vocabSize: vocabSize, tieWordEmbeddings: model.tieEmbeddings,
                    bosTokenId: bos, eosTokenIds: eos, maxPositionEmbeddings: model.maxPositions,
                    rope: RoPEParameters(theta: model.ropeTheta))
    }

    public var learningRateSchedule: LearningRateSchedule {
        LearningRateSchedule(peak: training.learningRate, minRate: training.minLearningRate,
                             warmupSteps: training.warmupSteps, totalSteps: training.steps)
    }
}

/// Typed access to one mapping of the config, remembering which keys were read.
final class ConfigFields {
    let values: [String: Any]
    let file: String
    let prefix: String
    private var used = Set<String>()

    init(_ values: [String: Any], file: String, prefix: String) {
        self.values = values
        self.file = file
        self.prefix = prefix
    }

    func error(_ key: String, _ message: String) -> TrainingError {
        TrainingError(file: file, field: prefix + key, message)
    }

    private func value(_ key: String) -> Any? {
        used.insert(key)
        guard let v = values[key], !(v is NSNull) else { return nil }
        return v
    }

    func section(_ key: String) throws -> ConfigFields? {
        guard let v = value(key) else { return nil }
        guard let m = v as? [String: Any] else { throw error(key, "expected a mapping, found \(v)") }
        return ConfigFields(m, file: file, prefix: prefix + key + ".")
    }

    func int(_ key: String) throws -> Int? {
        guard let v = value(key) else { return nil }
        if let i = v as? Int { return i }
        if let d = v as? Double, d == d.rounded(), abs(d) < 1e15 { return Int(d) }
        if let s = v as? String, let i = Int(s) { return i }
        throw error(key, "expected an integer, found \(v)")
    }

    func positiveInt(_ key: String) throws -> Int? {
        guard let i = try int(key) else { return nil }
        guard i > 0 else { throw error(key, "must be positive, found \(i)") }
        return i
    }

    func double(_ key: String) throws -> Double? {
        guard let v = value(key) else { return nil }
        if let d = v as? Double { return d }
        if let i = v as? Int { return Double(i) }
        if let s = v as? String, let d = Double(s) { return d }
        throw error(key, "expected a number, found \(v)")
    }

    func bool(_ key: String) throws -> Bool? {
        guard let v = value(key) else { return nil }
        if let b = v as? Bool { return b }
        if let s = v as? String, let b = ["true": true, "false": false][s.lowercased()] { return b }
        throw error(key, "expected true or false, found \(v)")
    }

    func string(_ key: String) throws -> String? {
        guard let v = value(key) else { return nil }
        if let s = v as? String { return s }
        throw error(key, "expected a string, found \(v)")
    }

    func strings(_ key: String) throws -> [String]? {
        guard let v = value(key) else { return nil }
        if let s = v as? String { return [s] }
        guard let list = v as? [Any] else { throw error(key, "expected a list of strings, found \(v)") }
        return try list.enumerated().map { i, item in
            guard let s = item as? String else { throw error("\(key)[\(i)]", "expected a string, found \(item)") }
            return s
        }
    }

    func choice<E: RawRepresentable & CaseIterable>(_ key: String, _: E.Type) throws -> E? where E.RawValue == String {
        guard let s = try string(key) else { return nil }
        guard let e = E(rawValue: s) else {
            throw error(key, "expected one of \(E.allCases.map(\.rawValue).joined(separator: ", ")), found \"\(s)\"")
        }
        return e
    }

    func rejectUnknown() throws {
        if let unknown = values.keys.sorted().first(where: { !used.contains($0) }) {
            throw error(unknown, "unknown key")
        }
    }
}
