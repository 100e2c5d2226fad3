import Foundation

/// A 64-byte aligned, zero-initialised block of floats that lives as long as its owner.
/// Allocated once (model load, cache creation); nothing in the per-token loop allocates.
public final class FloatBuffer: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int

    public init(count: Int) {
        self.count = count
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * 4, alignment: 64)
        raw.initializeMemory(as: Float.self, repeating: 0, count: max(count, 1))
        pointer = raw.assumingMemoryBound(to: Float.self)
    }

    deinit { UnsafeMutableRawPointer(pointer).deallocate() }

    public subscript(i: Int) -> Float {
        get { pointer[i] }
        set { pointer[i] = newValue }
    }

    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: pointer, count: count) }
}

/// The residual stream and scratch space of one forward pass over up to `capacity` positions.
/// A strategy owns one (or more) and reuses it for every token.
public final class Activations: @unchecked Sendable {
    public let capacity: Int
    public let hiddenSize: Int
    /// (capacity, hidden), row-major: the residual stream, one row per position of the pass.
    public let hidden: FloatBuffer
    /// (capacity, hidden): normalised input of the current sub-layer, then its output.
    let normed: FloatBuffer
    /// (capacity, heads*headDim): queries, then (reused) attention output.
    let query: FloatBuffer
    let attention: FloatBuffer
    /// (capacity, intermediate) each: SwiGLU gate and up projections.
    let gate: FloatBuffer
    let up: FloatBuffer
    /// (maxPositions): attention scores for one head at one position.
    let scores: FloatBuffer

    init(config: ModelConfig, capacity: Int, maxPositions: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        hiddenSize = config.hiddenSize
        hidden = FloatBuffer(count: capacity * config.hiddenSize)
        normed = FloatBuffer(count: capacity * config.hiddenSize)
        query = FloatBuffer(count: capacity * config.qDim)
        attention = FloatBuffer(count: capacity * config.qDim)
        gate = FloatBuffer(count: capacity * config.intermediateSize)
        up = FloatBuffer(count: capacity * config.intermediateSize)
        scores = FloatBuffer(count: maxPositions)
    }

    /// Row r of the residual stream: (hidden) floats.
    public func row(_ r: Int) -> UnsafeMutablePointer<Float> {
        precondition(r >= 0 && r < capacity)
        return hidden.pointer + r * hiddenSize
    }

    /// Copies `count` rows starting at `from` of `source` into rows starting at `to` of this one.
    public func copyRows(from source: Activations, _ from: Int, to: Int, count: Int) {
        precondition(from + count <= source.capacity && to + count <= capacity && hiddenSize == source.hiddenSize)
        (hidden.pointer + to * hiddenSize).update(from: source.hidden.pointer + from * hiddenSize, count: count * hiddenSize)
    }
}

/// Logits for up to `capacity` positions: (capacity, vocab), row-major.
public final class Logits: @unchecked Sendable {
    public let capacity: Int
    public let vocabSize: Int
    public let values: FloatBuffer

    public init(capacity: Int, vocabSize: Int) {
        self.capacity = capacity
        self.vocabSize = vocabSize
        values = FloatBuffer(count: capacity * vocabSize)
    }

    public func row(_ r: Int) -> UnsafeMutableBufferPointer<Float> {
        precondition(r >= 0 && r < capacity)
        return UnsafeMutableBufferPointer(start: values.pointer + r * vocabSize, count: vocabSize)
    }
}
