import Foundation

/// KV caches within a byte budget, reused from sequence to sequence: a released cache goes back
/// to a free list and the next sequence that fits in it takes it as it is (only its lengths are
/// reset), so admitting a prompt neither allocates nor zeroes. Free caches are dropped only to
/// make room for a larger one. Capacities are rounded up to `granule` positions so that caches
/// of similar prompts are interchangeable.
///
/// `@unchecked Sendable`: every field is read and written under `lock`.
public final class KVCachePool: @unchecked Sendable {
    public let config: ModelConfig
    public let budget: Int
    public let granule: Int
    private let lock = NSLock()
    private var free: [KVCache] = []
    /// Bytes of every cache this pool holds, free or in use (what the budget bounds).
    public private(set) var bytesHeld = 0
    public private(set) var bytesInUse = 0
    /// Caches made so far (tests check reuse through it).
    public private(set) var allocations = 0

    public struct TooLarge: Error, CustomStringConvertible {
        public var needed: Int
        public var budget: Int
        public var description: String {
            "the KV cache needs \(needed) bytes (\(needed >> 20) MiB) but cache_memory_budget is \(budget) bytes (\(budget >> 20) MiB); lower max_new_tokens or raise the budget"
        }
    }

    public init(config: ModelConfig, budget: Int, granule: Int = 256) {
        precondition(budget > 0 && granule > 0)
        self.config = config
        self.budget = budget
        self.granule = granule
    }

    /// Bytes a cache of `capacity` positions takes in this pool (after rounding).
    public func byteCount(capacity: Int) -> Int { KVCache.byteCount(config: config, capacity: rounded(capacity)) }

    private func rounded(_ capacity: Int) -> Int {
        let r = (capacity + granule - 1) / granule * granule
        return max(capacity, r)
    }

    /// A cache of at least `capacity` positions, all layers empty; nil while the budget is taken
    /// by caches in use (try again after a release). Throws when it could never fit.
    public func acquire(capacity: Int) throws -> KVCache? {
        precondition(capacity > 0)
        let size = rounded(capacity)
        var bytes = KVCache.byteCount(config: config, capacity: size)
        if bytes > budget {
            // Rounding must not make a cache that fits unrepresentable.
            bytes = KVCache.byteCount(config: config, capacity: capacity)
            guard bytes <= budget else { throw TooLarge(needed: bytes, budget: budget) }
        }
        lock.lock()
        defer { lock.unlock() }
        // The smallest free cache that is large enough.
        if let i = free.indices.filter({ free[$0].capacity >= capacity }).min(by: { free[$0].capacity < free[$1].capacity }) {
            let cache = free.remove(at: i)
            cache.reset()
            bytesInUse += cache.byteCount
            return cache
        }
        guard bytesInUse + bytes <= budget else { return nil }
        // Drop free caches (oldest first) until the new one fits.
        while bytesHeld + bytes > budget, !free.isEmpty {
            bytesHeld -= free.removeFirst().byteCount
        }
        let capacity = bytes == KVCache.byteCount(config: config, capacity: size) ? size : capacity
        let cache = KVCache(config: config, capacity: capacity)
        allocations += 1
        bytesHeld += cache.byteCount
        bytesInUse += cache.byteCount
        return cache
    }

    public func release(_ cache: KVCache) {
        lock.lock()
        defer { lock.unlock() }
        bytesInUse -= cache.byteCount
        free.append(cache)
    }
}

extension Duration {
    public var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) * 1e-18
    }
}
