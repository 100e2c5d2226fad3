import Foundation

/// A 64-byte aligned, zero-initialised block of floats that lives as long as its owner.
/// Allocated once (model load, cache creation); nothing in the per-token loop allocates.
/// Blocks of a megabyte or more are anonymous mappings, zero without being written, so the pages
/// a run never touches never become resident: the decode loop's logits and pass scratch are sized
/// for its largest pass (65 logits rows are 33 MB for a 128k vocabulary), a single stream uses
/// a few rows of them.
public final class FloatBuffer {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int
    private let mappedBytes: Int

    private static let mapThreshold = 1 << 20

    public init(count: Int) {
        self.count = count
        let bytes = max(count, 1) * 4
        if bytes >= Self.mapThreshold,
           let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED {
            mappedBytes = bytes
            pointer = p.assumingMemoryBound(to: Float.self)
            return
        }
        mappedBytes = 0
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        raw.initializeMemory(as: Float.self, repeating: 0, count: max(count, 1))
        pointer = raw.assumingMemoryBound(to: Float.self)
    }

    deinit {
        if mappedBytes > 0 { munmap(pointer, mappedBytes) } else { UnsafeMutableRawPointer(pointer).deallocate() }
    }

    public subscript(i: Int) -> Float {
        get { pointer[i] }
        set { pointer[i] = newValue }
    }

    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: pointer, count: count) }
}

/// The residual stream of one sequence's pass over up to `capacity` positions, with the scratch
/// such a pass needs: the single-sequence face of `LlamaModel.run` (training's evaluation, tests,
/// tools). The decode loop keeps its own rows and one shared `PassScratch` instead.
public final class Activations {
    public let capacity: Int
    public let hiddenSize: Int
    /// (capacity, hidden), row-major: the residual stream, one row per position of the pass.
    public let hidden: FloatBuffer
    let scratch: PassScratch
    let plan: PassPlan

    init(config: ModelConfig, capacity: Int, maxPositions: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        hiddenSize = config.hiddenSize
        hidden = FloatBuffer(count: capacity * config.hiddenSize)
        scratch = PassScratch(config: config, maxRows: capacity, maxPositions: maxPositions)
        plan = PassPlan(maxRows: capacity, maxLogitsRows: Int.max / 2, maxSegments: 1)
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
public final class Logits {
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
