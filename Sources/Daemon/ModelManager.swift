import Engine
import Foundation
import Tokenization
import Logging

/// A model folder loaded once and shared by every job and strategy that names it.
// `@unchecked Sendable`: immutable (`let`s of a model and a tokenizer that are themselves shareable).
public final class LoadedModel: @unchecked Sendable {
    public let directory: URL
    public let model: LlamaModel
    public let tokenizer: Tokenizer
    /// The resident weight bytes (the int8 copies for an int8 model), what the budget counts.
    public var byteCount: Int { model.weightBytes }
    /// The manager's key: the folder and its format.
    let key: String
    /// `ModelIdentity.key` of the folder and its weights: which tune result applies (nil when
    /// the folder could not be fingerprinted; then none does).
    public let tuningKey: String?

    init(directory: URL, format: WeightFormat, key: String) throws {
        self.directory = directory
        self.key = key
        // The tokenizer first: its parse's garbage is returned before the weights arrive (peak RSS).
        tokenizer = try Tokenizer(contentsOf: directory.appendingPathComponent("tokenizer.json"))
        model = try LlamaModel(directory: directory, format: format)
        tuningKey = (try? ModelIdentity.fingerprint(directory: directory)).map { ModelIdentity.key(fingerprint: $0, weights: format.rawValue) }
    }
}

/// Loads each model folder once and keeps loaded weights within a memory budget by unloading the
/// least recently used models that no job is using.
// `@unchecked Sendable`: `entries`, `clock` and `loads` are read and written under `lock`.
public final class ModelManager: @unchecked Sendable {
    public let budget: Int
    private let log: Logger
    private let lock = NSLock()
    private var entries: [String: (model: LoadedModel, users: Int, lastUsed: UInt64)] = [:]
    private var clock: UInt64 = 0
    public private(set) var loads = 0

    /// The weights each folder runs with (`DaemonConfig.modelWeights`); others run as stored.
    private let formats: [String: WeightFormat]

    public init(budget: Int, log: Logger, formats: [String: WeightFormat] = [:]) {
        self.budget = budget
        self.log = log
        self.formats = formats
    }

    /// The model for `directory` in its configured format, loaded if needed; call `release` when
    /// the job is done with it. Entries are keyed by folder and format.
    public func acquire(_ directory: URL) throws -> LoadedModel {
        let folder = DaemonConfig.modelKey(directory)
        let format = formats[folder] ?? .stored
        let key = format == .stored ? folder : folder + " (" + format.rawValue + ")"
        lock.lock()
        defer { lock.unlock() }
        clock += 1
        if var entry = entries[key] {
            entry.users += 1
            entry.lastUsed = clock
            entries[key] = entry
            return entry.model
        }
        let started = Date()
        let model = try LoadedModel(directory: URL(fileURLWithPath: folder, isDirectory: true), format: format, key: key)
        loads += 1
        log.info("models: loaded \(key) (\(model.model.layerCount) layers, \(model.byteCount >> 20) MiB) in \(String(format: "%.2f", Date().timeIntervalSince(started))) s")
        entries[key] = (model, 1, clock)
        evict(keeping: key)
        return model
    }

    public func release(_ model: LoadedModel) {
        let key = model.key
        lock.lock()
        defer { lock.unlock() }
        if var entry = entries[key] {
            entry.users = max(0, entry.users - 1)
            entries[key] = entry
        }
        evict(keeping: nil)
    }

    public var loadedDirectories: [String] {
        lock.lock()
        defer { lock.unlock() }
        return entries.keys.sorted()
    }

    private func evict(keeping: String?) {
        var total = entries.values.reduce(0) { $0 + $1.model.byteCount }
        let idle = entries.filter { $0.value.users == 0 && $0.key != keeping }.sorted { $0.value.lastUsed < $1.value.lastUsed }
        for (key, entry) in idle where total > budget {
            entries[key] = nil
            total -= entry.model.byteCount
            log.info("models: unloaded \(key) (memory budget \(budget >> 20) MiB)")
        }
    }
}
