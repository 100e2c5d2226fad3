import Foundation

/// Trains a byte-level BPE tokenizer (GPT-2 byte-to-unicode alphabet, Llama 3 split regex) and
/// writes it as a Hugging Face `tokenizer.json`. Text is added incrementally (only the counts of
/// distinct pre-tokenized words are kept), so a large corpus streams through.
public struct BPETrainer {
    /// The Llama 3 pre-tokenizer split pattern, as Hugging Face writes it in tokenizer.json.
    public static let llama3Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    public var vocabSize: Int
    public var minFrequency: Int
    /// Given ids 0, 1, … before the byte alphabet, as added special tokens. The first is the BOS
    /// the post-processor prepends; the second is the end-of-text separator.
    public var specialTokens: [String]
    public private(set) var wordCounts: [[UInt8]: Int] = [:]
    public private(set) var bytesSeen = 0
    private let regex: NSRegularExpression

    public init(vocabSize: Int, minFrequency: Int = 2, specialTokens: [String] = ["<|begin_of_text|>", "<|end_of_text|>"]) {
        precondition(vocabSize >= 256 + specialTokens.count, "vocabulary must hold the 256 bytes and the special tokens")
        self.vocabSize = vocabSize
        self.minFrequency = minFrequency
        self.specialTokens = specialTokens
        regex = try! NSRegularExpression(pattern: Self.llama3Pattern)
    }

    /// Splits `text` with the pre-tokenizer regex and counts its words.
    public mutating func add(text: String) {
        let ns = text as NSString
        var counts = wordCounts
        regex.enumerateMatches(in: text, range: NSRange(location: 0, length: ns.length)) { match, _, _ in
            guard let r = match?.range, r.length > 0 else { return }
            counts[Array(ns.substring(with: r).utf8), default: 0] += 1
        }
        wordCounts = counts
        bytesSeen += text.utf8.count
    }

    /// The byte → printable character table of GPT-2's byte-level BPE.
    public static let byteToUnicode: [Character] = {
        var printable = Array(33...126) + Array(161...172) + Array(174...255)
        var codes = printable
        var extra = 0
        for b in 0..<256 where !printable.contains(b) {
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
        }
        var table = [Character](repeating: " ", count: 256)
        for (b, c) in zip(printable, codes) { table[b] = Character(Unicode.Scalar(UInt32(c))!) }
        return table
    }()

    public struct Result {
        /// Token strings by id (special tokens first, then the 256 byte symbols, then merges).
        public var vocabulary: [String]
        /// Merges in rank order, as token strings.
        public var merges: [(String, String)]
    }

    /// Learns merges until the vocabulary is full or no pair occurs `minFrequency` times.
    /// Ties between equally frequent pairs go to the pair of smaller symbol ids, so training is deterministic.
    public func train() -> Result {
        var vocabulary = specialTokens
        let base = vocabulary.count
        for b in 0..<256 { vocabulary.append(String(Self.byteToUnicode[b])) }
        var ids = [String: Int32]()
        for (i, s) in vocabulary.enumerated() { ids[s] = Int32(i) }

        // Deterministic word order (dictionary order is randomised per process).
        let sortedWords = wordCounts.sorted { $0.key.lexicographicallyPrecedes($1.key) }
        var words: [[Int32]] = sortedWords.map { $0.key.map { Int32(base) + Int32($0) } }
        let counts = sortedWords.map(\.value)
        var pairCounts: [UInt64: Int] = [:]
        var wordsWith: [UInt64: [Int32]] = [:]
        @inline(__always) func key(_ a: Int32, _ b: Int32) -> UInt64 { UInt64(UInt32(a)) << 32 | UInt64(UInt32(b)) }
        for (w, word) in words.enumerated() where word.count > 1 {
            for i in 0..<(word.count - 1) {
                let k = key(word[i], word[i + 1])
                pairCounts[k, default: 0] += counts[w]
                if wordsWith[k]?.last != Int32(w) { wordsWith[k, default: []].append(Int32(w)) }
            }
        }
        var heap = PairHeap()
        for (k, c) in pairCounts { heap.push(count: c, key: k) }

        var merges: [(String, String)] = []
        while vocabulary.count < vocabSize, let top = heap.pop() {
            let current = pairCounts[top.key] ?? 0
            if current != top.count {
                if current > 0 { heap.push(count: current, key: top.key) }
                continue
            }
            if current < minFrequency { break }
            let a = Int32(truncatingIfNeeded: top.key >> 32), b = Int32(truncatingIfNeeded: top.key & 0xFFFF_FFFF)
            let text = vocabulary[Int(a)] + vocabulary[Int(b)]
            let merged: Int32
            if let existing = ids[text] { merged = existing } else {
                merged = Int32(vocabulary.count)
                vocabulary.append(text)
                ids[text] = merged
            }
            merges.append((vocabulary[Int(a)], vocabulary[Int(b)]))
            var touched = Set<UInt64>()
            for w32 in wordsWith[top.key] ?? [] {
                let w = Int(w32)
                let old = words[w]
                guard old.count > 1 else { continue }
                var next: [Int32] = []
                next.reserveCapacity(old.count)
                var i = 0, found = false
                while i < old.count {
                    if i + 1 < old.count && old[i] == a && old[i + 1] == b {
                        next.append(merged)
                        i += 2
                        found = true
                    } else {
                        next.append(old[i])
                        i += 1
                    }
                }
                guard found else { continue }
                let c = counts[w]
                for j in 0..<(old.count - 1) {
                    let k = key(old[j], old[j + 1])
                    pairCounts[k]! -= c
                    touched.insert(k)
                }
                if next.count > 1 {
                    for j in 0..<(next.count - 1) {
                        let k = key(next[j], next[j + 1])
                        pairCounts[k, default: 0] += c
                        touched.insert(k)
                        if wordsWith[k]?.last != w32 { wordsWith[k, default: []].append(w32) }
                    }
                }
                words[w] = next
            }
            wordsWith[top.key] = nil
            for k in touched {
                let c = pairCounts[k] ?? 0
                if c > 0 { heap.push(count: c, key: k) } else { pairCounts[k] = nil }
            }
        }
        return Result(vocabulary: vocabulary, merges: merges)
    }

    /// A tokenizer.json in the layout Hugging Face `tokenizers` writes for Llama 3: Split (regex,
    /// isolated) + ByteLevel pre-tokenizer, BPE model, ByteLevel decoder, BOS prepended by the
    /// post-processor.
    public func tokenizerJSON(_ result: Result) throws -> Data {
        var vocab: [String: Int] = [:]
        for (i, s) in result.vocabulary.enumerated() where vocab[s] == nil { vocab[s] = i }
        let added: [[String: Any]] = specialTokens.enumerated().map { i, s in
            ["id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true]
        }
        var json: [String: Any] = [
            "version": "1.0",
            "truncation": NSNull(),
            "padding": NSNull(),
            "added_tokens": added,
            "normalizer": NSNull(),
            "pre_tokenizer": [
                "type": "Sequence",
                "pretokenizers": [
                    ["type": "Split", "pattern": ["Regex": Self.llama3Pattern], "behavior": "Isolated", "invert": false],
                    ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false],
                ],
            ],
            "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true],
            "model": [
                "type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
                "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": result.merges.map { [$0.0, $0.1] },
            ] as [String: Any],
        ]
        if let bos = specialTokens.first {
            json["post_processor"] = [
                "type": "TemplateProcessing",
                "single": [["SpecialToken": ["id": bos, "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
                "pair": [["SpecialToken": ["id": bos, "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]],
                         ["SpecialToken": ["id": bos, "type_id": 1]], ["Sequence": ["id": "B", "type_id": 1]]],
                "special_tokens": [bos: ["id": bos, "ids": [0], "tokens": [bos]]],
            ] as [String: Any]
        } else {
            json["post_processor"] = NSNull()
        }
        return try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys, .withoutEscapingSlashes])
    }
}

/// A max-heap of (count, pair) with ties broken towards the smaller pair key.
struct PairHeap {
    private var items: [(count: Int, key: UInt64)] = []

    private static func before(_ x: (count: Int, key: UInt64), _ y: (count: Int, key: UInt64)) -> Bool {
        x.count != y.count ? x.count > y.count : x.key < y.key
    }

    mutating func push(count: Int, key: UInt64) {
        items.append((count, key))
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard Self.before(items[i], items[parent]) else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> (count: Int, key: UInt64)? {
        guard let first = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var best = i
                if l < items.count && Self.before(items[l], items[best]) { best = l }
                if r < items.count && Self.before(items[r], items[best]) { best = r }
                if best == i { break }
                items.swapAt(i, best)
                i = best
            }
        }
        return first
    }
}
