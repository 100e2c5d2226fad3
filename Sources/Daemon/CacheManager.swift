import Engine
import Foundation

/// Hands out KV caches so that all of them together stay within a byte budget. A request that
/// can never fit fails at once with the numbers; one that fits later waits.
public final class CacheManager: @unchecked Sendable {
    public let budget: Int
    private let condition = NSCondition()
    public private(set) var bytesInUse = 0

    public init(budget: Int) { self.budget = budget }

    public struct TooLarge: Error, CustomStringConvertible {
        public var needed: Int
        public var budget: Int
        public var description: String {
            "the KV cache needs \(needed) bytes (\(needed >> 20) MiB) but cache_memory_budget is \(budget) bytes (\(budget >> 20) MiB); lower max_new_tokens or raise the budget"
        }
    }

    /// - Parameter shouldStop: polled while waiting; returns nil when it says stop.
    public func acquire(config: ModelConfig, capacity: Int, shouldStop: () -> Bool) throws -> KVCache? {
        let bytes = KVCache.byteCount(config: config, capacity: capacity)
        guard bytes <= budget else { throw TooLarge(needed: bytes, budget: budget) }
        condition.lock()
        while bytesInUse + bytes > budget {
            if shouldStop() { condition.unlock(); return nil }
            _ = condition.wait(until: Date().addingTimeInterval(0.2))
        }
        bytesInUse += bytes
        condition.unlock()
        return KVCache(config: config, capacity: capacity)
    }

    public func release(_ cache: KVCache) {
        condition.lock()
        bytesInUse -= cache.byteCount
        condition.broadcast()
        condition.unlock()
    }
}
