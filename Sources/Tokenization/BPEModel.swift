import Foundation

/// Byte-pair-encoding model (`"model": {"type": "BPE", ...}`) with the merge order of the
/// reference implementation: repeatedly apply the lowest-ranked merge, leftmost first.
// `@unchecked Sendable`: immutable after init apart from its word cache, which is used under a lock.
final class BPEModel: @unchecked Sendable {
    let vocab: [ExactKey: Int32]
    /// Model token text by id (nil where the vocabulary has a gap).
    let idToToken: [String?]
    /// (left id, right id) packed into 64 bits -> (rank << 32 | merged id).
    private let merges: [UInt64: UInt64]
    /// Ids of single-scalar tokens, the starting symbols of every word (when there is no
    /// continuing-subword prefix or end-of-word suffix to attach).
    private let scalarIds: [UInt32: Int32]
    /// Id of "<0xNN>" for each byte, -1 if absent; only filled when `byte_fallback` is on.
    private let byteIds: [Int32]
    private let unkId: Int32?
    private let fuseUnk: Bool
    private let byteFallback: Bool
    private let ignoreMerges: Bool
    private let prefix: String?
    private let suffix: String?

    // Words repeat a lot in real text; results are cached like the reference does.
    // The lock keeps the shared tokenizer usable from several threads.
    private let cacheLock = NSLock()
    private var cache: [ExactKey: [Int32]] = [:]
    private static let cacheCapacity = 10_000
    static let maxTokenId = 1 << 24
    private static let maxCachedWordLength = 256

    init(node: JSONNode) throws {
        if let dropout = try node.optionalField("dropout"), try dropout.asDouble() != 0 {
            throw dropout.unsupported("BPE dropout is not supported (expected null)")
        }
        fuseUnk = try node.bool("fuse_unk", default: false)
        byteFallback = try node.bool("byte_fallback", default: false)
        ignoreMerges = try node.bool("ignore_merges", default: false)
        // An empty prefix or suffix is the same as none (Llama 3 files write "").
        let prefixString = try node.optionalString("continuing_subword_prefix")
        let suffixString = try node.optionalString("end_of_word_suffix")
        prefix = prefixString?.isEmpty == false ? prefixString : nil
        suffix = suffixString?.isEmpty == false ? suffixString : nil

        let vocabNode = try node.field("vocab")
        let vocabObject = try vocabNode.asObject()
        var vocab = [ExactKey: Int32](minimumCapacity: vocabObject.count)
        var scalarIds: [UInt32: Int32] = [:]
        var maxId = -1
        for i in 0..<vocabObject.count {
            let key = vocabObject.keys[i]
            // The bound keeps a corrupt id from sizing the id -> token table absurdly.
            guard case .int(let id) = vocabObject.values[i], id >= 0, id < Self.maxTokenId else {
                throw vocabNode.invalid("the id of token \"\(key)\" must be an integer from 0 to \(Self.maxTokenId - 1)")
            }
            vocab[ExactKey(key)] = Int32(id)
            maxId = max(maxId, id)
            var scalars = key.unicodeScalars.makeIterator()
            if let first = scalars.next(), scalars.next() == nil {
                scalarIds[first.value] = Int32(id)
            }
        }
        var idToToken = [String?](repeating: nil, count: maxId + 1)
        for i in 0..<vocabObject.count {
            if case .int(let id) = vocabObject.values[i] { idToToken[id] = vocabObject.keys[i] }
        }
        self.vocab = vocab
        self.idToToken = idToToken
        self.scalarIds = scalarIds

        if let unkNode = try node.optionalField("unk_token") {
            let unk = try unkNode.asString()
            guard let id = vocab[ExactKey(unk)] else {
                throw unkNode.invalid("unk_token \"\(unk)\" is not in the vocabulary")
            }
            unkId = id
        } else {
            unkId = nil
        }

        var byteIds = [Int32](repeating: -1, count: 256)
        if byteFallback {
            for b in 0..<256 {
                byteIds[b] = vocab[ExactKey(Self.byteTokenName(UInt8(b)))] ?? -1
            }
        }
        self.byteIds = byteIds

        merges = try Self.parseMerges(try node.optionalField("merges"), vocab: vocab, prefix: prefix)
    }

    /// Ids the merges produce, each once, in the order of the first merge that produces it.
    func mergeProducts() -> [Int] {
        var byRank = merges.values.map { (rank: Int($0 >> 32), id: Int(UInt32(truncatingIfNeeded: $0))) }
        byRank.sort { $0.rank < $1.rank }
        var seen = Set<Int>()
        return byRank.compactMap { seen.insert($0.id).inserted ? $0.id : nil }
    }

    /// Whether `id` is one of the "<0xNN>" tokens that byte fallback spells bytes with.
    func isByteToken(_ id: Int) -> Bool {
        byteFallback && byteIds.contains(Int32(id))
    }

    /// "<0xE4>": the spelling of byte-fallback tokens (two upper-case hex digits).
    static func byteTokenName(_ byte: UInt8) -> String {
        let hex = Array("0123456789ABCDEF".unicodeScalars)
        return "<0x" + String(Character(hex[Int(byte >> 4)])) + String(Character(hex[Int(byte & 0xF)])) + ">"
    }

    private static func parseMerges(_ node: JSONNode?, vocab: [ExactKey: Int32], prefix: String?) throws -> [UInt64: UInt64] {
        guard let node else { return [:] }
        guard case .array(let items) = node.value else { throw node.expected("an array") }
        var merges = [UInt64: UInt64](minimumCapacity: items.count)
        for (rank, item) in items.enumerated() {
            let left: String
            let right: String
            switch item {
            case .string(let line):
                // Older files write "a b"; tokens cannot contain the separating space.
                // Split on the byte: a Character-based split would miss a space followed by
                // a combining mark (" \u{301}" is one Character).
                let parts = line.utf8.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
                guard parts.count == 2 else {
                    throw JSONNode(value: item, path: "\(node.path)[\(rank)]", file: node.file)
                        .invalid("expected a merge of two tokens separated by one space, found \"\(line)\"")
                }
                left = String(decoding: parts[0], as: UTF8.self)
                right = String(decoding: parts[1], as: UTF8.self)
            case .array(let pair):
                guard pair.count == 2, case .string(let a) = pair[0], case .string(let b) = pair[1] else {
                    throw JSONNode(value: item, path: "\(node.path)[\(rank)]", file: node.file)
                        .invalid("expected a merge as a pair of strings")
                }
                left = a
                right = b
            default:
                throw JSONNode(value: item, path: "\(node.path)[\(rank)]", file: node.file)
                    .expected("a merge (\"a b\" or [\"a\", \"b\"])")
            }
            func lookup(_ token: String) throws -> Int32 {
                guard let id = vocab[ExactKey(token)] else {
                    throw JSONNode(value: item, path: "\(node.path)[\(rank)]", file: node.file)
                        .invalid("merge refers to token \"\(token)\", which is not in the vocabulary")
                }
                return id
            }
            let leftId = try lookup(left)
            let rightId = try lookup(right)
            var tail = right
            if let prefix, right.utf8.starts(with: prefix.utf8) {
                tail = String(decoding: right.utf8.dropFirst(prefix.utf8.count), as: UTF8.self)
            }
            let mergedId = try lookup(left + tail)
            let key = UInt64(UInt32(bitPattern: leftId)) << 32 | UInt64(UInt32(bitPattern: rightId))
            merges[key] = UInt64(rank) << 32 | UInt64(UInt32(bitPattern: mergedId))
        }
        return merges
    }

    /// Appends the ids for one pre-tokenized word.
    func tokenize(_ word: Scalars, into ids: inout [Int]) {
        if word.isEmpty { return }
        let key = ExactKey(word)
        if ignoreMerges, let id = vocab[key] {
            ids.append(Int(id))
            return
        }
        cacheLock.lock()
        let hit = cache[key]
        cacheLock.unlock()
        if let hit {
            for id in hit { ids.append(Int(id)) }
            return
        }
        let result = merge(word)
        if word.count < Self.maxCachedWordLength {
            cacheLock.lock()
            if cache.count < Self.cacheCapacity { cache[key] = result }
            cacheLock.unlock()
        }
        for id in result { ids.append(Int(id)) }
    }

    /// The initial symbols of a word: one token per character when the vocabulary has it,
    /// else its "<0xNN>" byte tokens, else `unk` (fused with neighbouring unknowns if asked).
    private func initialSymbols(_ word: Scalars) -> [Int32] {
        var symbols: [Int32] = []
        symbols.reserveCapacity(word.count)
        var pendingUnk = false
        let simple = prefix == nil && suffix == nil
        for (i, scalar) in word.enumerated() {
            var text: String? = nil
            let id: Int32?
            if simple {
                id = scalarIds[scalar.value]
            } else {
                var s = String(scalarSequence: CollectionOfOne(scalar))
                if i > 0, let prefix { s = prefix + s }
                if i == word.count - 1, let suffix { s += suffix }
                text = s
                id = vocab[ExactKey(s)]
            }
            if let id {
                if pendingUnk, let unkId { symbols.append(unkId) }
                pendingUnk = false
                symbols.append(id)
                continue
            }
            if byteFallback {
                var bytes: [UInt8] = []
                if let text { bytes = Array(text.utf8) } else { appendUTF8(scalar, to: &bytes) }
                if bytes.allSatisfy({ byteIds[Int($0)] >= 0 }) {
                    // Like the reference, a pending unknown is not flushed here.
                    for b in bytes { symbols.append(byteIds[Int(b)]) }
                    continue
                }
            }
            if let unkId {
                if pendingUnk && !fuseUnk { symbols.append(unkId) }
                pendingUnk = true
            }
            // Without an unk token the character is dropped, as in the reference.
        }
        if pendingUnk, let unkId { symbols.append(unkId) }
        return symbols
    }

    private func merge(_ word: Scalars) -> [Int32] {
        var ids = initialSymbols(word)
        let count = ids.count
        if count < 2 || merges.isEmpty { return ids }
        var prev = [Int32](repeating: -1, count: count)
        var next = [Int32](repeating: -1, count: count)
        var removed = [Bool](repeating: false, count: count)
        for i in 0..<count {
            prev[i] = Int32(i - 1)
            next[i] = i + 1 < count ? Int32(i + 1) : -1
        }
        var queue = MergeQueue()
        for i in 0..<(count - 1) {
            if let m = merges[Self.pairKey(ids[i], ids[i + 1])] {
                queue.push(rank: UInt32(m >> 32), pos: Int32(i), newId: Int32(truncatingIfNeeded: m))
            }
        }
        while let top = queue.pop() {
            let pos = Int(top.pos)
            if removed[pos] { continue }
            let nextPos = Int(next[pos])
            if nextPos < 0 { continue }
            // Entries go stale when a neighbour was merged first; skip them.
            guard let m = merges[Self.pairKey(ids[pos], ids[nextPos])],
                  Int32(truncatingIfNeeded: m) == top.newId else { continue }
            ids[pos] = top.newId
            removed[nextPos] = true
            let after = next[nextPos]
            next[pos] = after
            if after >= 0 { prev[Int(after)] = Int32(pos) }
            let before = prev[pos]
            if before >= 0, let m = merges[Self.pairKey(ids[Int(before)], ids[pos])] {
                queue.push(rank: UInt32(m >> 32), pos: before, newId: Int32(truncatingIfNeeded: m))
            }
            if after >= 0, let m = merges[Self.pairKey(ids[pos], ids[Int(after)])] {
                queue.push(rank: UInt32(m >> 32), pos: Int32(pos), newId: Int32(truncatingIfNeeded: m))
            }
        }
        var result: [Int32] = []
        var i: Int32 = 0
        while i >= 0 {
            result.append(ids[Int(i)])
            i = next[Int(i)]
        }
        return result
    }

    @inline(__always)
    private static func pairKey(_ a: Int32, _ b: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
    }
}

/// Binary min-heap of candidate merges ordered by (rank, position).
private struct MergeQueue {
    struct Entry {
        var rank: UInt32
        var pos: Int32
        var newId: Int32
    }

    private var heap: [Entry] = []

    @inline(__always)
    private static func less(_ a: Entry, _ b: Entry) -> Bool {
        a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos
    }

    mutating func push(rank: UInt32, pos: Int32, newId: Int32) {
        heap.append(Entry(rank: rank, pos: pos, newId: newId))
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            if !Self.less(heap[child], heap[parent]) { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Entry? {
        guard let top = heap.first else { return nil }
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var parent = 0
            let n = heap.count
            while true {
                let left = 2 * parent + 1
                if left >= n { break }
                var smallest = left
                let right = left + 1
                if right < n && Self.less(heap[right], heap[left]) { smallest = right }
                if !Self.less(heap[smallest], heap[parent]) { break }
                heap.swapAt(smallest, parent)
                parent = smallest
            }
        }
        return top
    }
}
