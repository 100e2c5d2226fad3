import Crypto
import Decoding
import Engine
import Foundation

/// One model's `layerskip tune` result, keyed by the model's identity and weights format: what a
/// `strategy: self-speculative` job without `exit_layer` runs with.
public struct TuningRecord: Codable, Sendable, Equatable {
    /// `ModelIdentity.key`: the model's fingerprint and the weights it ran.
    public var modelKey: String
    /// The folder tune ran on (for people; the key is what matches).
    public var model: String
    public var weights: String
    public var tunedAt: Date
    /// The CPU it was measured on (costs differ between machines).
    public var machine: String
    /// Strategy options: `exit_layer`, `speculations` (the best early-exit point), `drafter`,
    /// `lookup_span` and any other the tuner chose.
    public var settings: [String: ConfigValue]
    /// The settings' speed ÷ autoregressive decoding's: measured (the chosen finalist's median),
    /// or predicted when tune ran no finalists. Jobs that name no strategy use the settings only
    /// when this is above 1.
    public var speedup: Double
    /// JSON of what was measured.
    public var report: String
    /// Token ids, most frequent first, counted on tune's `--data`: the order a pruned draft head
    /// (`draft_vocab` in `settings`) keeps tokens in. nil: the tokenizer's merge order.
    public var tokenRanking: [Int]?

    public init(modelKey: String, model: String, weights: String, tunedAt: Date, machine: String,
                settings: [String: ConfigValue], speedup: Double, report: String, tokenRanking: [Int]? = nil) {
        self.tokenRanking = tokenRanking
        self.modelKey = modelKey
        self.model = model
        self.weights = weights
        self.tunedAt = tunedAt
        self.machine = machine
        self.settings = settings
        self.speedup = speedup
        self.report = report
    }
}

extension TuningRecord {
    /// The stored corpus ranking for a model of `vocabularySize` tokens; nil where tune counted none.
    public func ranking(vocabularySize: Int) throws(TokenRankingError) -> TokenRanking? {
        try tokenRanking.map { ids throws(TokenRankingError) in try TokenRanking(ids, vocabularySize: vocabularySize) }
    }
}

extension JobStore {
    /// Stores a tune result, replacing the model's previous one.
    public func saveTuning(_ t: TuningRecord) throws {
        let settings = String(decoding: try JSONEncoder.sorted.encode(t.settings), as: UTF8.self)
        let ranking: String? = try t.tokenRanking.map { String(decoding: try JSONEncoder().encode($0), as: UTF8.self) }
        try write { db in
            try db.execute("""
                INSERT INTO tunings (model_key, model, weights, tuned_at, machine, settings, speedup, report, token_ranking)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (model_key) DO UPDATE SET model = excluded.model, weights = excluded.weights, tuned_at = excluded.tuned_at,
                  machine = excluded.machine, settings = excluded.settings, speedup = excluded.speedup, report = excluded.report,
                  token_ranking = excluded.token_ranking
                """, [t.modelKey, t.model, t.weights, t.tunedAt.timeIntervalSince1970, t.machine, settings, t.speedup, t.report, ranking])
        }
    }

    public func tuning(modelKey: String) throws -> TuningRecord? {
        try read { db in
            try db.fetchAll(TuningRow.self, "SELECT * FROM tunings WHERE model_key = ?", [modelKey]).first.map(Self.record)
        }
    }

    /// Every stored tune result, newest first.
    public func tunings() throws -> [TuningRecord] {
        try read { db in try db.fetchAll(TuningRow.self, "SELECT * FROM tunings ORDER BY tuned_at DESC").map(Self.record) }
    }

    private static func record(_ row: TuningRow) throws -> TuningRecord {
        guard let settings = try? JSONDecoder().decode([String: ConfigValue].self, from: Data(row.settings.utf8)) else {
            throw StoreError.corrupt("tuning \(row.modelKey) has unreadable tunings.settings")
        }
        var ranking: [Int]?
        if let text = row.tokenRanking {
            guard let ids = try? JSONDecoder().decode([Int].self, from: Data(text.utf8)) else {
                throw StoreError.corrupt("tuning \(row.modelKey) has unreadable tunings.token_ranking")
            }
            ranking = ids
        }
        return TuningRecord(modelKey: row.modelKey, model: row.model, weights: row.weights, tunedAt: Date(timeIntervalSince1970: row.tunedAt),
                            machine: row.machine, settings: settings, speedup: row.speedup, report: row.report, tokenRanking: ranking)
    }
}

extension JSONEncoder {
    static var sorted: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }
}

/// A model's identity for tune results: the same model wherever its folder is and whatever it is
/// called. SHA-256 over config.json and, for each weight file (sorted by name), its size, its
/// safetensors header and 16 blocks of 64 KiB spread evenly over its data: reads about a megabyte
/// of a model of any size, yet any re-export, fine-tune or different checkpoint changes it.
public enum ModelIdentity {
    public static func fingerprint(directory: URL) throws -> String {
        var hash = SHA256()
        hash.update(data: try Data(contentsOf: directory.appendingPathComponent("config.json")))
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".safetensors") }.sorted()
        for name in files {
            let handle = try FileHandle(forReadingFrom: directory.appendingPathComponent(name))
            defer { try? handle.close() }
            let size = try handle.seekToEnd()
            hash.update(data: Data(name.utf8))
            hash.update(data: withUnsafeBytes(of: size.littleEndian) { Data($0) })
            try handle.seek(toOffset: 0)
            let headerLength = (try handle.read(upToCount: 8) ?? Data()).reduce(into: UInt64(0)) { $0 = $0 >> 8 | UInt64($1) << 56 }
            let header = min(headerLength, size > 8 ? size - 8 : 0, 100 << 20)
            hash.update(data: try handle.read(upToCount: Int(header)) ?? Data())
            let block: UInt64 = 64 << 10
            let dataStart = 8 + header
            if size > dataStart {
                for i in 0..<UInt64(16) {
                    try handle.seek(toOffset: dataStart + (size - dataStart) / 16 * i)
                    hash.update(data: try handle.read(upToCount: Int(block)) ?? Data())
                }
            }
        }
        return hash.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// The tunings table's key: fingerprint and weights format.
    public static func key(fingerprint: String, weights: String) -> String { "\(fingerprint)@\(weights)" }
}

/// What a job's strategy runs with once the model's tune result (if any) fills what the job left
/// out, and where each value came from.
public struct ResolvedStrategy: Sendable, Equatable {
    public var spec: StrategySpec
    /// "job file", "tune of DATE on MACHINE", or "untuned default (exit_layer = L/2)".
    public var source: String

    public init(spec: StrategySpec, source: String) {
        self.spec = spec
        self.source = source
    }

    /// Self-speculation without `exit_layer` (and not `drafter: lookup`) takes the tune result's
    /// settings for every key the job did not set. Where tune found lookup drafting fastest but
    /// the job set early-exit keys (`speculations`, `adaptive`, `draft_precision`), the job keeps
    /// its exit drafts and takes tune's best exit.
    ///
    /// A job that named no strategy (`strategyIsDefault`) runs the tune result's self-speculation
    /// when it measured faster than autoregressive decoding, else its default strategy.
    public static func resolve(_ spec: StrategySpec, strategyIsDefault: Bool = false, tuning: TuningRecord?) -> ResolvedStrategy {
        if strategyIsDefault {
            guard let tuning, tuning.speedup > 1 else {
                return ResolvedStrategy(spec: spec, source: tuning == nil ? "default (the model has no tune result)"
                                                                           : "default (tune found nothing faster than \(spec.name))")
            }
            var resolved = resolve(StrategySpec(name: "self-speculative"), tuning: tuning)
            resolved.source += String(format: ", %.2f× autoregressive; the job named no strategy", tuning.speedup)
            return resolved
        }
        let exitKeys = ["speculations", "adaptive", "draft_precision", "draft_confidence", "max_speculations"]
        guard takesTuning(spec) else { return ResolvedStrategy(spec: spec, source: "job file") }
        guard let tuning else { return ResolvedStrategy(spec: spec, source: "untuned default (exit_layer = half the layers)") }
        var options = spec.options
        let lookupBest = tuning.settings["drafter"] == .string("lookup")
        if lookupBest && spec.options["drafter"] == nil && !exitKeys.contains(where: { spec.options[$0] != nil }) {
            options["drafter"] = .string("lookup")
            if options["lookup_span"] == nil, let span = tuning.settings["lookup_span"] { options["lookup_span"] = span }
        } else {
            for (key, value) in tuning.settings where options[key] == nil {
                if key == "drafter" && lookupBest { continue }
                options[key] = value
            }
        }
        let when = ISO8601DateFormatter().string(from: tuning.tunedAt)
        return ResolvedStrategy(spec: StrategySpec(name: spec.name, options: options), source: "tune of \(when) on \(tuning.machine)")
    }

    /// Whether a named strategy leaves settings to the tune result: self-speculation without
    /// `exit_layer` that drafts with the exit (not `drafter: lookup`).
    public static func takesTuning(_ spec: StrategySpec) -> Bool {
        spec.name == "self-speculative" && spec.options["exit_layer"] == nil && spec.options["drafter"] != .string("lookup")
    }

    /// The options as `key=value`, sorted (for metrics and `show`).
    public var settings: String {
        spec.options.keys.sorted().map { "\($0)=\(spec.options[$0]!.plain)" }.joined(separator: ", ")
    }
}

extension ConfigValue {
    /// The value without the "the string" wording of error messages.
    public var plain: String {
        switch self {
        case let .string(s): s
        case let .int(i): String(i)
        case let .double(d): String(d)
        case let .bool(b): String(b)
        default: description
        }
    }
}
