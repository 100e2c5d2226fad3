import Engine
import Foundation

/// The daemon's KV-cache budget. A batch over one model draws its caches from that model's pool
/// (`KVCachePool`: reused from prompt to prompt, never more than the budget in all); one batch runs
/// at a time, so a model's pool is made when its batch starts and dropped when another model's
/// batch needs the memory.
/// `@unchecked Sendable`: every field is read and written under `lock`.
public final class CacheManager: @unchecked Sendable {
    public let budget: Int
    private let lock = NSLock()
    private var current: (key: String, pool: KVCachePool)?

    public init(budget: Int) { self.budget = budget }

    /// The pool for the model in `directory`.
    public func pool(for model: LlamaModel, key: String) -> KVCachePool {
        lock.lock()
        defer { lock.unlock() }
        if let current, current.key == key { return current.pool }
        let pool = KVCachePool(config: model.config, budget: budget)
        current = (key, pool)
        return pool
    }
}
