import Foundation
import Tokenization

/// The text files of a corpus, split into training and validation files by a hash of each file's
/// path relative to its root — the same split on every machine and on every run, and stable when
/// files are added (a file never moves between the two sides).
public struct Corpus: Sendable {
    public var trainFiles: [String]
    public var validationFiles: [String]

    /// `paths`: files, folders (searched recursively) or glob patterns. `extensions` (e.g. [".py"])
    /// filters files found in folders; `exclude` drops any file whose path contains one of the strings.
    public init(paths: [String], extensions: [String] = [], exclude: [String] = [], validationFraction: Double,
                source: String = "config") throws {
        var found = Set<String>()
        var files: [(path: String, key: String)] = []
        func add(_ path: String, root: String) {
            guard !exclude.contains(where: { path.contains($0) }), found.insert(path).inserted else { return }
            let key = path.hasPrefix(root) ? String(path.dropFirst(root.count)) : path
            files.append((path, key))
        }
        for pattern in paths {
            let matches = Corpus.expand(pattern)
            if matches.isEmpty { throw TrainingError(file: source, field: "data.paths", "\"\(pattern)\" matches no file or folder") }
            for match in matches {
                var isDir: ObjCBool = false
                guard FileManager.default.fileExists(atPath: match, isDirectory: &isDir) else { continue }
                if !isDir.boolValue { add(match, root: (match as NSString).deletingLastPathComponent + "/"); continue }
                let root = match.hasSuffix("/") ? match : match + "/"
                guard let walker = FileManager.default.enumerator(atPath: match) else { continue }
                var inner: [String] = []
                while let rel = walker.nextObject() as? String {
                    if !extensions.isEmpty && !extensions.contains(where: { rel.hasSuffix($0) }) { continue }
                    let full = root + rel
                    var d: ObjCBool = false
                    if FileManager.default.fileExists(atPath: full, isDirectory: &d), !d.boolValue { inner.append(full) }
                }
                for f in inner.sorted() { add(f, root: root) }
            }
        }
        files.sort { $0.path < $1.path }
        trainFiles = []
        validationFiles = []
        for f in files {
            let u = Double(Corpus.fnv1a(f.key) >> 11) / 9_007_199_254_740_992.0
            if u < validationFraction { validationFiles.append(f.path) } else { trainFiles.append(f.path) }
        }
        if trainFiles.isEmpty { throw TrainingError(file: source, field: "data.paths", "no training files (found \(files.count) files in all)") }
    }

    static func expand(_ pattern: String) -> [String] {
        guard pattern.contains(where: { "*?[".contains($0) }) else {
            return FileManager.default.fileExists(atPath: pattern) ? [pattern] : []
        }
        var g = glob_t()
        defer { globfree(&g) }
        guard glob(pattern, 0, nil, &g) == 0 else { return [] }
        return (0..<Int(g.gl_pathc)).compactMap { g.gl_pathv[$0].map { String(cString: $0) } }.sorted()
    }

    static func fnv1a(_ s: String) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        return CounterRNG.hash(h, 0, 0)
    }
}

/// Where a token stream stands: epoch, index into that epoch's file order, token offset within
/// that file's tokens, and the token carried over from the previous sequence (its last token is
/// the next one's first input). Saved in checkpoints so a resumed run reads exactly the next tokens.
public struct DataPosition: Codable, Equatable, Sendable {
    public var epoch = 0
    public var file = 0
    public var offset = 0
    public var carry: Int32?
    public init() {}
}

/// Sequences of consecutive tokens from a list of files, one file in memory at a time (so a corpus
/// larger than memory streams through). Each file's tokens end with `separator` (the EOS token).
/// Training streams shuffle the file order every epoch with the seed; validation streams do not.
/// A training batch reads each of its rows from its own *lane*: lane b of `lanes` takes every
/// lanes-th file of the epoch's shuffled order, so the rows of one batch come from different files.
public final class TokenStream {
    let files: [String]
    let tokenizer: Tokenizer
    let separator: Int32?
    let shuffleSeed: UInt64?
    let lane: Int
    let lanes: Int
    public private(set) var position: DataPosition
    private var order: [Int] = []
    private var current: [Int32] = []
    private var loaded: (epoch: Int, file: Int)?

    public init(files: [String], tokenizer: Tokenizer, separator: Int?, shuffleSeed: UInt64?,
                lane: Int = 0, lanes: Int = 1, position: DataPosition = DataPosition()) {
        precondition(!files.isEmpty && lane >= 0 && lane < lanes)
        self.files = files
        // More lanes than files: every lane reads all files (in its epoch's order).
        self.lanes = lanes <= files.count ? lanes : 1
        self.lane = lanes <= files.count ? lane : 0
        self.tokenizer = tokenizer
        self.separator = separator.map(Int32.init)
        self.shuffleSeed = shuffleSeed
        self.position = position
        order = makeOrder(epoch: position.epoch)
    }

    /// This lane's files of an epoch, as indices into `files`.
    private func makeOrder(epoch: Int) -> [Int] {
        var order = Array(files.indices)
        if let seed = shuffleSeed {
            var rng = CounterRNG(seed: seed, stream: 0xF11E_5000 &+ UInt64(epoch))
            for i in stride(from: order.count - 1, to: 0, by: -1) {
                order.swapAt(i, Int(rng.next() % UInt64(i + 1)))
            }
        }
        return lanes == 1 ? order : order.enumerated().filter { $0.offset % lanes == lane }.map(\.element)
    }

    /// The path of the file being read.
    public var currentFile: String { files[order[min(position.file, order.count - 1)]] }

    private func nextToken() -> Int32 {
        var emptyInARow = 0
        while true {
            if position.file >= order.count {
                position.epoch += 1
                position.file = 0
                position.offset = 0
                order = makeOrder(epoch: position.epoch)
            }
            if loaded == nil || loaded! != (position.epoch, position.file) {
                // An unreadable or non-UTF-8 file contributes what decodes (invalid bytes become U+FFFD).
                let text = (try? Data(contentsOf: URL(fileURLWithPath: files[order[position.file]])))
                    .map { String(decoding: $0, as: UTF8.self) } ?? ""
                // Training tokenizers are ours (the Llama 3 pattern never exhausts its budget);
                // a file one cannot encode contributes nothing, like an unreadable one.
                current = ((try? tokenizer.encode(text, addSpecialTokens: false)) ?? []).map(Int32.init)
                if let separator, !current.isEmpty { current.append(separator) }
                loaded = (position.epoch, position.file)
            }
            if position.offset < current.count {
                position.offset += 1
                return current[position.offset - 1]
            }
            emptyInARow = position.offset == 0 ? emptyInARow + 1 : 0
            precondition(emptyInARow <= order.count, "no file of this lane yields any token")
            position.file += 1
            position.offset = 0
        }
    }

    /// Continues from a saved position (the file order of its epoch is recomputed from the seed).
    public func seek(to position: DataPosition) {
        self.position = position
        order = makeOrder(epoch: position.epoch)
        loaded = nil
    }

    /// Sequences of `length + 1` tokens read in order until about `maxTokens` or the end of the
    /// first epoch (at least one): held-out text for `eval` and `tune`.
    public func sequences(length: Int, maxTokens: Int) -> [[Int32]] {
        var sequences: [[Int32]] = []
        while sequences.count * length < maxTokens && position.epoch == 0 {
            let s = nextSequence(length: length)
            if position.epoch > 0 && !sequences.isEmpty { break }
            sequences.append(s)
        }
        return sequences
    }

    /// The next sequence of `length + 1` tokens: the inputs and, shifted by one, the targets.
    /// Consecutive sequences share their boundary token, so every token is a target exactly once.
    public func nextSequence(length: Int) -> [Int32] {
        var out: [Int32] = []
        out.reserveCapacity(length + 1)
        if let carry = position.carry { out.append(carry) }
        while out.count < length + 1 { out.append(nextToken()) }
        position.carry = out.last
        return out
    }
}
