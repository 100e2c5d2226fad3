import Engine
import Foundation

/// Runs a prompt through `layers` in chunks of at most `h.capacity` positions, so a long prompt
/// needs only bounded scratch. Returns the activation row that holds the prompt's last position.
@discardableResult
public func prefill(_ model: LlamaModel, prompt: ArraySlice<Int>, startPosition: Int = 0, layers: Range<Int>,
                    activations h: Activations, cache: KVCache) -> Int {
    precondition(!prompt.isEmpty)
    var position = startPosition
    var index = prompt.startIndex
    var lastRow = 0
    while index < prompt.endIndex {
        let n = min(h.capacity, prompt.endIndex - index)
        model.embed(prompt[index..<(index + n)], into: h)
        model.forward(h, layers: layers, positions: position..<(position + n), cache: cache)
        lastRow = n - 1
        index += n
        position += n
    }
    return lastRow
}

/// Prompt positions per prefill pass: large enough that the weights are read once for many
/// positions (compute-bound matrix products), small enough to bound scratch memory.
public enum PrefillChunk {
    public static let positions = 128
}
