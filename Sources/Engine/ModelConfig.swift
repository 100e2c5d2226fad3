import Foundation
import InputFiles

/// The Llama-family fields of a Hugging Face `config.json`, from either the transformers-4 style
/// (`rope_theta`, `rope_scaling`) or the transformers-5 style (`rope_parameters`).
public struct ModelConfig: Sendable, Equatable {
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var layerCount: Int
    public var headCount: Int
    public var kvHeadCount: Int
    public var headDim: Int
    public var rmsNormEps: Float
    public var vocabSize: Int
    public var tieWordEmbeddings: Bool
    /// `layerskip_weights` (written by `layerskip quantize`): the folder's matrices are already in
    /// this format (`.int8`: I8 tensors with per-row `.weight_scale`s; `.q4`: U8 nibbles with F16
    /// block scales); absent: `.stored`.
    public var storedFormat: WeightFormat = .stored
    public var bosTokenId: Int?
    public var eosTokenIds: [Int]
    public var maxPositionEmbeddings: Int
    public var rope: RoPEParameters

    public var qDim: Int { headCount * headDim }
    public var kvDim: Int { kvHeadCount * headDim }

    public init(hiddenSize: Int, intermediateSize: Int, layerCount: Int, headCount: Int, kvHeadCount: Int,
                headDim: Int? = nil, rmsNormEps: Float = 1e-5, vocabSize: Int, tieWordEmbeddings: Bool,
                bosTokenId: Int? = nil, eosTokenIds: [Int] = [], maxPositionEmbeddings: Int = 2048,
                rope: RoPEParameters = RoPEParameters()) {
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.layerCount = layerCount
        self.headCount = headCount
        self.kvHeadCount = kvHeadCount
        self.headDim = headDim ?? hiddenSize / headCount
        self.rmsNormEps = rmsNormEps
        self.vocabSize = vocabSize
        self.tieWordEmbeddings = tieWordEmbeddings
        self.bosTokenId = bosTokenId
        self.eosTokenIds = eosTokenIds
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.rope = rope
    }
}

public struct RoPEParameters: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case `default`
        /// Llama 3.1+ frequency scaling (`rope_type: llama3`).
        case llama3(factor: Double, lowFreqFactor: Double, highFreqFactor: Double, originalMaxPositions: Int)
    }
    public var theta: Double = 10000
    public var kind: Kind = .default
    public init(theta: Double = 10000, kind: Kind = .default) {
        self.theta = theta
        self.kind = kind
    }
}

extension ModelConfig {
    /// config.json files are a few KB; anything near this is not one (and Foundation's parse tree
    /// of a large one costs many times its size).
    public static let maxFileBytes = 1 << 20

    public static func load(from url: URL) throws -> ModelConfig {
        let file = url.path
        let data: Data
        do { data = try RegularFile.read(file, limit: maxFileBytes) } catch {
            if error.kind == .missing {
                throw ModelError(.missingFile, file: file, "config.json not found (expected a Hugging Face model folder)")
            }
            throw ModelError(.unreadableFile, file: file, error.reason)
        }
        return try parse(data, file: file)
    }

    /// Upper bounds that no real checkpoint comes near; a larger value is a corrupt or hostile file,
    /// and bounding every dimension keeps every size derived from them (q/kv widths, cache bytes)
    /// far from overflow.
    static let maxDimension = 1 << 24
    static let maxCount = 1 << 16

    public static func parse(_ data: Data, file: String = "config.json") throws -> ModelConfig {
        // Foundation's parser keeps one of two equal keys silently; transformers keeps the other.
        do { try data.withUnsafeBytes { try JSONScanner.validate($0) } } catch let error as JSONScanError {
            throw ModelError(.invalidJSON, file: file, "not valid JSON: \(error)")
        }
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw ModelError(.invalidJSON, file: file, "not valid JSON (\(error.localizedDescription))")
        }
        guard let json = object as? [String: Any] else {
            throw ModelError(.invalidJSON, file: file, "expected a JSON object at the top level")
        }
        let fields = JSONFields(json, file: file, prefix: "")

        let modelType = try fields.string("model_type", optional: true)
        let architectures = (json["architectures"] as? [Any])?.compactMap { $0 as? String } ?? []
        let isLlama = modelType == "llama" || architectures.contains("LlamaForCausalLM")
        guard isLlama else {
            let found = modelType.map { "model_type \"\($0)\"" }
                ?? (architectures.isEmpty ? "neither model_type nor architectures" : "architectures \(architectures)")
            throw ModelError(.notLlama, file: file, subject: "model_type",
                             "expected a Llama-architecture model (model_type \"llama\" / LlamaForCausalLM), found \(found)")
        }
        if let act = try fields.string("hidden_act", optional: true), act != "silu" {
            throw ModelError(.unsupported, file: file, subject: "hidden_act", "expected \"silu\", found \"\(act)\"")
        }
        for flag in ["attention_bias", "mlp_bias"] where (json[flag] as? Bool) == true {
            throw ModelError(.unsupported, file: file, subject: flag, "biases are not supported (expected false, found true)")
        }

        let hidden = try fields.positiveInt("hidden_size", max: maxDimension)
        let heads = try fields.positiveInt("num_attention_heads", max: maxCount)
        let kvHeads = try fields.positiveInt("num_key_value_heads", optional: true, max: maxCount) ?? heads
        guard heads % kvHeads == 0 else {
            throw ModelError(.invalidField, file: file, subject: "num_key_value_heads",
                             "must divide num_attention_heads (\(heads)), found \(kvHeads)")
        }
        let headDim = try fields.positiveInt("head_dim", optional: true, max: maxCount) ?? (hidden / heads)
        guard headDim > 0, headDim % 2 == 0 else {
            throw ModelError(.invalidField, file: file, subject: fields.json["head_dim"] == nil ? "hidden_size" : "head_dim",
                             "the head dimension must be a positive even number for RoPE, found \(headDim)")
        }
        // Both are at most 2^32 here (no overflow); the weights must then match them.
        guard heads * headDim <= maxDimension else {
            throw ModelError(.invalidField, file: file, subject: "num_attention_heads",
                             "num_attention_heads × head_dim must be at most \(maxDimension), found \(heads) × \(headDim)")
        }
        let rmsNormEps = try fields.double("rms_norm_eps", optional: true) ?? 1e-6
        guard rmsNormEps > 0, rmsNormEps.isFinite, Float(rmsNormEps) > 0 else {
            throw ModelError(.invalidField, file: file, subject: "rms_norm_eps", "expected a small positive number, found \(rmsNormEps)")
        }
        let eos: [Int]
        switch json["eos_token_id"] {
        case nil, is NSNull: eos = []
        case let list as [Any]:
            eos = try list.enumerated().map { i, v in
                guard let n = JSONFields.integer(v) else {
                    throw ModelError(.invalidField, file: file, subject: "eos_token_id[\(i)]", "expected an integer, found \(JSONFields.describe(v))")
                }
                return n
            }
        case let v:
            guard let n = JSONFields.integer(v!) else {
                throw ModelError(.invalidField, file: file, subject: "eos_token_id", "expected an integer or a list of integers, found \(JSONFields.describe(v!))")
            }
            eos = [n]
        }

        var storedFormat = WeightFormat.stored
        if let value = json["layerskip_weights"], !(value is NSNull) {
            guard let name = value as? String, let format = WeightFormat(rawValue: name), format != .stored else {
                throw ModelError(.invalidField, file: file, subject: "layerskip_weights",
                                 "expected \"int8\" or \"q4\" (a folder written by layerskip quantize), found \(JSONFields.describe(value))")
            }
            storedFormat = format
        }
        var config = ModelConfig(
            hiddenSize: hidden,
            intermediateSize: try fields.positiveInt("intermediate_size", max: maxDimension),
            layerCount: try fields.positiveInt("num_hidden_layers", max: maxCount),
            headCount: heads,
            kvHeadCount: kvHeads,
            headDim: headDim,
            rmsNormEps: Float(rmsNormEps),
            vocabSize: try fields.positiveInt("vocab_size", max: maxDimension),
            tieWordEmbeddings: try fields.bool("tie_word_embeddings", optional: true) ?? false,
            bosTokenId: try fields.int("bos_token_id", optional: true),
            eosTokenIds: eos,
            maxPositionEmbeddings: try fields.positiveInt("max_position_embeddings", optional: true, max: Int(Int32.max)) ?? 2048,
            rope: try parseRoPE(json, fields: fields, file: file)
        )
        config.storedFormat = storedFormat
        return config
    }

    private static func parseRoPE(_ json: [String: Any], fields: JSONFields, file: String) throws -> RoPEParameters {
        // transformers 5 puts everything under rope_parameters; transformers 4 uses rope_theta at the
        // top level and an optional rope_scaling mapping (null for plain RoPE).
        let scaling: JSONFields?
        var theta = try fields.double("rope_theta", optional: true) ?? 10000
        if let params = try fields.object("rope_parameters", optional: true) {
            scaling = params
            theta = try params.double("rope_theta", optional: true) ?? theta
        } else {
            scaling = try fields.object("rope_scaling", optional: true)
        }
        guard theta > 0, theta.isFinite else {
            throw ModelError(.invalidField, file: file, subject: fields.json["rope_parameters"] == nil ? "rope_theta" : "rope_parameters.rope_theta",
                             "expected a positive number, found \(theta)")
        }
        guard let scaling else { return RoPEParameters(theta: theta) }
        let type = try scaling.string("rope_type", optional: true) ?? scaling.string("type", optional: true) ?? "default"
        switch type {
        case "default":
            return RoPEParameters(theta: theta)
        case "llama3":
            let factor = try scaling.double("factor"), low = try scaling.double("low_freq_factor")
            let high = try scaling.double("high_freq_factor")
            for (key, v) in [("factor", factor), ("low_freq_factor", low), ("high_freq_factor", high)] where !(v > 0 && v.isFinite) {
                throw ModelError(.invalidField, file: file, subject: scaling.path(key), "expected a positive number, found \(v)")
            }
            // The smoothing between the two divides by their difference.
            guard high > low else {
                throw ModelError(.invalidField, file: file, subject: scaling.path("high_freq_factor"),
                                 "must be greater than low_freq_factor (\(low)), found \(high)")
            }
            return RoPEParameters(theta: theta, kind: .llama3(
                factor: factor, lowFreqFactor: low, highFreqFactor: high,
                originalMaxPositions: try scaling.positiveInt("original_max_position_embeddings", optional: false, max: Int(Int32.max))!))
        default:
            throw ModelError(.unsupported, file: file, subject: scaling.path("rope_type"),
                             "unsupported RoPE type \"\(type)\" (supported: default, llama3)")
        }
    }
}

/// Typed reads from a JSON object that report the field's path on error.
struct JSONFields {
    let json: [String: Any]
    let file: String
    let prefix: String

    init(_ json: [String: Any], file: String, prefix: String) {
        self.json = json
        self.file = file
        self.prefix = prefix
    }

    func path(_ key: String) -> String { prefix.isEmpty ? key : "\(prefix).\(key)" }

    /// JSONSerialization hands booleans over as NSNumber too; its type code tells them apart.
    static func isBoolean(_ n: NSNumber) -> Bool { String(cString: n.objCType) == "c" }

    static func integer(_ v: Any) -> Int? {
        if let n = v as? NSNumber, !JSONFields.isBoolean(n) {
            let d = n.doubleValue
            if d == d.rounded(), abs(d) < 1e15 { return Int(d) }
        }
        return nil
    }

    static func describe(_ v: Any) -> String {
        switch v {
        case is NSNull: return "null"
        case let s as String: return "the string \"\(s)\""
        case let n as NSNumber: return JSONFields.isBoolean(n) ? "a boolean" : "\(n)"
        case is [Any]: return "a list"
        case is [String: Any]: return "an object"
        default: return "\(v)"
        }
    }

    private func value(_ key: String, optional: Bool, expected: String) throws -> Any? {
        guard let v = json[key], !(v is NSNull) else {
            if optional { return nil }
            throw ModelError(.missingField, file: file, subject: path(key), "missing (expected \(expected))")
        }
        return v
    }

    func int(_ key: String, optional: Bool = false) throws -> Int? {
        guard let v = try value(key, optional: optional, expected: "an integer") else { return nil }
        guard let n = JSONFields.integer(v) else {
            throw ModelError(.invalidField, file: file, subject: path(key), "expected an integer, found \(JSONFields.describe(v))")
        }
        return n
    }

    func positiveInt(_ key: String, max: Int = Int.max) throws -> Int { try positiveInt(key, optional: false, max: max)! }
    func positiveInt(_ key: String, optional: Bool, max: Int = Int.max) throws -> Int? {
        guard let n = try int(key, optional: optional) else { return nil }
        guard n > 0 else {
            throw ModelError(.invalidField, file: file, subject: path(key), "expected a positive integer, found \(n)")
        }
        guard n <= max else {
            throw ModelError(.invalidField, file: file, subject: path(key), "expected at most \(max), found \(n)")
        }
        return n
    }

    func double(_ key: String) throws -> Double { try double(key, optional: false)! }
    func double(_ key: String, optional: Bool) throws -> Double? {
        guard let v = try value(key, optional: optional, expected: "a number") else { return nil }
        guard let n = v as? NSNumber, !JSONFields.isBoolean(n) else {
            throw ModelError(.invalidField, file: file, subject: path(key), "expected a number, found \(JSONFields.describe(v))")
        }
        return n.doubleValue
    }

    func bool(_ key: String, optional: Bool = false) throws -> Bool? {
        guard let v = try value(key, optional: optional, expected: "true or false") else { return nil }
        guard let n = v as? NSNumber, JSONFields.isBoolean(n) else {
            throw ModelError(.invalidField, file: file, subject: path(key), "expected true or false, found \(JSONFields.describe(v))")
        }
        return n.boolValue
    }

    func string(_ key: String, optional: Bool = false) throws -> String? {
        guard let v = try value(key, optional: optional, expected: "a string") else { return nil }
        guard let s = v as? String else {
            throw ModelError(.invalidField, file: file, subject: path(key), "expected a string, found \(JSONFields.describe(v))")
        }
        return s
    }

    func object(_ key: String, optional: Bool = false) throws -> JSONFields? {
        guard let v = try value(key, optional: optional, expected: "an object") else { return nil }
        guard let o = v as? [String: Any] else {
            throw ModelError(.invalidField, file: file, subject: path(key), "expected an object, found \(JSONFields.describe(v))")
        }
        return JSONFields(o, file: file, prefix: path(key))
    }
}
