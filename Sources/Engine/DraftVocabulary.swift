import CKernels
import Foundation

/// Token ids, most likely first: the order in which a pruned draft head keeps tokens (the first K
/// of it). From a corpus count (`layerskip tune`), a tokenizer's merge order, or token-id order.
public struct TokenRanking: Sendable, Equatable {
    /// Distinct ids in 0..<vocabularySize, most likely first. Ids it leaves out rank after it, by id,
    /// so a corpus count need only list the tokens it saw.
    public let tokens: [Int]
    public let vocabularySize: Int

    /// Checks `tokens` (throws naming the first bad entry: out of range, or listed twice).
    public init(_ tokens: [Int], vocabularySize: Int) throws(TokenRankingError) {
        precondition(vocabularySize > 0, "a vocabulary of \(vocabularySize) tokens")
        var seen = [Bool](repeating: false, count: vocabularySize)
        for (i, t) in tokens.enumerated() {
            guard t >= 0 && t < vocabularySize else {
                throw TokenRankingError(index: i, reason: "token id \(t) outside the vocabulary (expected 0..<\(vocabularySize))")
            }
            guard !seen[t] else { throw TokenRankingError(index: i, reason: "token id \(t) listed twice") }
            seen[t] = true
        }
        self.tokens = tokens
        self.vocabularySize = vocabularySize
    }

    /// Most frequent first in `sequences` (ties by id); ids that never occur are left out, so they
    /// rank after, by id. What `tune --data` counts for a pruned draft head.
    public static func byFrequency(_ sequences: [[Int32]], vocabularySize: Int) -> TokenRanking {
        var counts = [Int](repeating: 0, count: vocabularySize)
        for sequence in sequences {
            for t in sequence where t >= 0 && Int(t) < vocabularySize { counts[Int(t)] += 1 }
        }
        let seen = counts.indices.filter { counts[$0] > 0 }.sorted { counts[$0] != counts[$1] ? counts[$0] > counts[$1] : $0 < $1 }
        return try! TokenRanking(seen, vocabularySize: vocabularySize)
    }

    /// Every id in id order: the ranking of a model whose folder has no tokenizer to rank by.
    public static func tokenIdOrder(vocabularySize: Int) -> TokenRanking {
        try! TokenRanking([], vocabularySize: vocabularySize)
    }

    /// The `k` best-ranked ids, with every id of `always` among them (counted in `k`), ascending.
    /// The set holds at least one id outside `always`, whatever `k`: `always` is the
    /// end-of-sequence ids, which the decode loop bans below `min_new_tokens`, and a draft row
    /// whose every token is banned would have no distribution to draw from.
    public func top(_ k: Int, always: [Int]) -> [Int] {
        precondition(k >= 1 && k <= vocabularySize, "\(k) tokens of a vocabulary of \(vocabularySize)")
        var chosen = [Bool](repeating: false, count: vocabularySize)
        var count = 0
        for t in always where t >= 0 && t < vocabularySize && !chosen[t] {
            chosen[t] = true
            count += 1
        }
        let target = min(vocabularySize, max(k, count + 1))
        func take(_ t: Int) {
            if count < target && !chosen[t] {
                chosen[t] = true
                count += 1
            }
        }
        for t in tokens where count < target { take(t) }
        var t = 0
        while count < target && t < vocabularySize {
            take(t)
            t += 1
        }
        return chosen.indices.filter { chosen[$0] }
    }
}

/// A bad entry of an explicit token ranking: `ranking[index]`.
public struct TokenRankingError: Error, Equatable, Sendable, CustomStringConvertible {
    public let index: Int
    public let reason: String
    public var description: String { "ranking[\(index)]: \(reason)" }
}

/// The tokens a pruned draft head scores, for one model: passes that name it compute the exit
/// head's logits of these tokens only, through a contiguous copy of their rows of the LM head, and
/// write −infinity for every other token of the logits row. Made by `LlamaModel.draftVocabulary`,
/// which hands every caller asking for the same tokens the same object, so the copies are made once
/// per (model, tokens, format) whatever the number of jobs.
// `@unchecked Sendable`: `tokens` is immutable; `heads` is read and written under the owning
// model's derivedLock only.
public final class DraftVocabulary: @unchecked Sendable {
    /// The K token ids, ascending: row j of every copy is the LM head's row tokens[j]. Ascending so
    /// that a pass can spread the K logits out to their token ids in place (see `scatter`).
    public let tokens: [Int]
    /// The model whose head the copies are of (a pass checks it is the one running).
    let model: ObjectIdentifier
    /// The copies made so far, by the format they are in (guarded by LlamaModel.derivedLock).
    var heads: [WeightFormat: PrunedHead] = [:]

    init(tokens: [Int], model: ObjectIdentifier) {
        precondition(!tokens.isEmpty)
        self.tokens = tokens
        self.model = model
    }

    public var count: Int { tokens.count }

    /// Row `row` holds the K logits of `tokens` in its first K entries (a product's output): moves
    /// each to its token's entry and writes −infinity everywhere else. In place, from the last token
    /// down: tokens[j] ≥ j (ascending distinct ids), so every entry written is at or after the entry
    /// j that is read, and the entries 0..<j still to be read are never overwritten.
    func scatter(_ row: UnsafeMutablePointer<Float>, vocabularySize: Int) {
        tokens.withUnsafeBufferPointer { ids in
            var end = vocabularySize
            for j in stride(from: ids.count - 1, through: 0, by: -1) {
                let t = ids[j]
                let v = row[j]
                (row + t + 1).update(repeating: -.infinity, count: end - t - 1)
                row[t] = v
                end = t
            }
            row.update(repeating: -.infinity, count: end)
        }
    }
}

/// One format's copy of the LM-head rows of a draft vocabulary: (K, hidden), row j the head's row
/// tokens[j], in the layout of its format, so a pruned pass reads K rows of contiguous memory.
// `@unchecked Sendable`: written once in init, read-only afterwards.
final class PrunedHead: @unchecked Sendable {
    /// `.stored`: (K, hidden) in the head's stored dtype (f32, f16 or bf16), row-major, 64-byte
    /// aligned, owned here (`storage`). nil for a quantised copy.
    let stored: WeightMatrix?
    private let storage: UnsafeMutableRawPointer?
    /// `.int8` / `.q4`: the rows quantised as `QuantizedMatrix` lays them out. nil for a stored copy.
    let quantized: QuantizedMatrix?

    var byteCount: Int { stored?.byteCount ?? quantized!.byteCount }

    init(stored rows: WeightMatrix, storage: UnsafeMutableRawPointer) {
        self.stored = rows
        self.storage = storage
        quantized = nil
    }

    init(quantized: QuantizedMatrix) {
        stored = nil
        storage = nil
        self.quantized = quantized
    }

    /// y[t·ldy + j] = row t of x times row j of this copy, t < n, j < K (ck_matmul, or
    /// ck_matmul_q8 / ck_matmul_q4): for each j the same arithmetic as the full head's product
    /// gives at tokens[j], since each kernel's output row depends on that weight row and x alone.
    func multiply(_ x: UnsafePointer<Float>, ldx: Int, n: Int, into y: UnsafeMutablePointer<Float>, ldy: Int) {
        if let m = stored {
            ck_matmul(m.dtype.kernelType, m.data, Int32(m.rows), Int32(m.cols), x, Int32(ldx), Int32(n), y, Int32(ldy))
        } else {
            quantized!.multiply(x, ldx: ldx, n: n, into: y, ldy: ldy)
        }
    }

    deinit { storage?.deallocate() }

    /// Rows `tokens` of a stored-dtype matrix, copied into a new (tokens.count, cols) matrix.
    static func gather(_ tokens: [Int], of m: WeightMatrix) -> (WeightMatrix, UnsafeMutableRawPointer) {
        precondition(m.dtype.isFloat)
        // K ≤ rows, so the copy is no larger than the mapped matrix, whose size the loader checked.
        let rowBytes = m.cols * m.dtype.byteSize
        let storage = UnsafeMutableRawPointer.allocate(byteCount: max(1, tokens.count * rowBytes), alignment: 64)
        for (j, t) in tokens.enumerated() {
            precondition(t >= 0 && t < m.rows)
            (storage + j * rowBytes).copyMemory(from: m.data + t * rowBytes, byteCount: rowBytes)
        }
        return (WeightMatrix(dtype: m.dtype, rows: tokens.count, cols: m.cols, data: UnsafeRawPointer(storage)), storage)
    }
}

extension LlamaModel {
    /// The draft vocabulary of `tokens` (ascending distinct ids, e.g. `TokenRanking.top`) on this
    /// model: the same object for the same tokens, so every job shares its head copies. The
    /// copies themselves are made on first use by a pass, in the format that pass reads.
    public func draftVocabulary(_ tokens: [Int]) -> DraftVocabulary {
        precondition(!tokens.isEmpty && zip(tokens, tokens.dropFirst()).allSatisfy { $0 < $1 }, "token ids must ascend")
        precondition(tokens.first! >= 0 && tokens.last! < config.vocabSize, "token id outside the vocabulary")
        derivedLock.lock()
        defer { derivedLock.unlock() }
        if let v = derived.vocabularies[tokens] { return v }
        let v = DraftVocabulary(tokens: tokens, model: ObjectIdentifier(self))
        derived.vocabularies[tokens] = v
        return v
    }

    /// What a draft row reads relative to this model's own weights, for predicting what drafting
    /// costs: layers at `layers` precision, and the head at `head` precision over `vocabulary`
    /// (nil: every token). Bytes per weight as `WeightFormat.cost` orders them.
    public func draftReadShares(layers: WeightPrecision, head: WeightPrecision, vocabulary: DraftVocabulary?) -> (layers: Double, head: Double) {
        let own = Double(format.cost)
        let rows = vocabulary.map { Double($0.tokens.count) / Double(config.vocabSize) } ?? 1
        return (Double(weightsRead(by: layers).cost) / own, rows * Double(weightsRead(by: head).cost) / own)
    }

    /// `vocabulary`'s copy of the head rows in `format`, made on first use. Each is built from the
    /// same rows the full head's copy in that format is (the stored rows, or a quantised folder's
    /// own head), by the same per-row quantisation, so row j equals the full copy's row tokens[j].
    func prunedHead(_ vocabulary: DraftVocabulary, _ format: WeightFormat) -> PrunedHead {
        precondition(vocabulary.model == ObjectIdentifier(self), "a draft vocabulary of another model")
        derivedLock.lock()
        defer { derivedLock.unlock() }
        if let head = vocabulary.heads[format] { return head }
        let head: PrunedHead
        if weights.lmHead.dtype.isFloat {
            let (rows, storage) = PrunedHead.gather(vocabulary.tokens, of: weights.lmHead)
            if format == .stored {
                head = PrunedHead(stored: rows, storage: storage)
            } else {
                // Quantised from the gathered stored rows, which then go: only the copy stays.
                head = PrunedHead(quantized: QuantizedMatrix(rows, format: format))
                storage.deallocate()
            }
        } else {
            // A quantised folder: its own head's rows, requantised as its full copies are.
            precondition(format != .stored, "a quantised folder has no stored head (weightsRead never asks for one)")
            let own = QuantizedMatrix(rows: vocabulary.tokens, of: derived.heads[self.format]!)
            head = PrunedHead(quantized: format == self.format ? own : QuantizedMatrix(requantizing: own, format: format))
        }
        vocabulary.heads[format] = head
        return head
    }
}
