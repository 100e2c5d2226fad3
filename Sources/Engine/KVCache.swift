import Foundation

/// Keys and values of one sequence for every layer, with a length per layer.
///
/// Layers can hold different lengths: self-speculative drafting writes only layers 0..<E, and
/// verification later fills E..<L. Truncation (rejecting drafted tokens) is a length change: O(1),
/// no copy, and the stale rows beyond the length are simply overwritten by the next pass.
public final class KVCache {
    public let layerCount: Int
    public let capacity: Int
    public let kvDim: Int
    /// (layers, capacity, kvHeads*headDim), row-major: post-RoPE keys.
    let keys: FloatBuffer
    /// (layers, capacity, kvHeads*headDim), row-major: values.
    let values: FloatBuffer
    /// Number of valid positions per layer.
    public private(set) var lengths: [Int]

    public init(config: ModelConfig, capacity: Int) {
        precondition(capacity > 0)
        layerCount = config.layerCount
        self.capacity = capacity
        kvDim = config.kvDim
        keys = FloatBuffer(count: config.layerCount * capacity * config.kvDim)
        values = FloatBuffer(count: config.layerCount * capacity * config.kvDim)
        lengths = Array(repeating: 0, count: config.layerCount)
    }

    /// Bytes of K/V storage this cache holds.
    public var byteCount: Int { 2 * layerCount * capacity * kvDim * 4 }

    public static func byteCount(config: ModelConfig, capacity: Int) -> Int {
        2 * config.layerCount * capacity * config.kvDim * 4
    }

    func keyRow(layer: Int, position: Int) -> UnsafeMutablePointer<Float> {
        keys.pointer + (layer * capacity + position) * kvDim
    }

    func valueRow(layer: Int, position: Int) -> UnsafeMutablePointer<Float> {
        values.pointer + (layer * capacity + position) * kvDim
    }

    func setLength(_ n: Int, layer: Int) {
        lengths[layer] = n
    }

    /// Keeps only the first `length` positions in every layer (no layer grows).
    public func truncate(to length: Int) {
        for l in 0..<layerCount where lengths[l] > length { lengths[l] = length }
    }

    /// Keeps only the first `length` positions in one layer.
    public func truncate(layer: Int, to length: Int) {
        if lengths[layer] > length { lengths[layer] = length }
    }

    public func reset() { truncate(to: 0) }
}

extension KVCache {
    /// The stored key (post-RoPE) and value of one layer at one position, for inspection in tests
    /// and tools: (kvHeads*headDim) floats each.
    public func entry(layer: Int, position: Int) -> (key: [Float], value: [Float]) {
        precondition(position < lengths[layer], "position \(position) is beyond layer \(layer)'s length \(lengths[layer])")
        return (Array(UnsafeBufferPointer(start: keyRow(layer: layer, position: position), count: kvDim)),
                Array(UnsafeBufferPointer(start: valueRow(layer: layer, position: position), count: kvDim)))
    }
}
