import Engine
import Foundation

/// What `layerskip tune` measures and how it chooses: from each exit's measured agreement with the
/// full model and the measured cost of each pass shape on this machine, the predicted speed-up of
/// every (E, d) over autoregressive decoding. Pure arithmetic on its inputs, so a test can inject
/// costs and agreements and check the choice.
public enum SpeculationTuner {
    /// Seconds of the pass shapes one round is made of, measured on one machine.
    public struct PassCosts: Codable, Equatable, Sendable {
        /// layer[n − 1]: one decoder layer over n rows of one sequence (n = 1...layer.count).
        public var layer: [Double]
        /// head[n − 1]: the exit head (final norm + LM head) over n rows.
        public var head: [Double]
        /// The exit head over 1 row scoring only K tokens (`draft_vocab: K`), for the K measured;
        /// nil or empty: no pruned head was measured.
        public var prunedHead: [PrunedHeadCost]?
        public init(layer: [Double], head: [Double], prunedHead: [PrunedHeadCost]? = nil) {
            precondition(!layer.isEmpty && layer.count == head.count)
            self.layer = layer
            self.head = head
            self.prunedHead = prunedHead
        }
        public var maxRows: Int { layer.count }
        /// One autoregressive step: one row through L layers and the head.
        public func step(layers L: Int) -> Double { Double(L) * layer[0] + head[0] }
        /// A draft: one row through E layers and the head, or the head pruned to `vocabulary` tokens.
        public func draft(exit E: Int, vocabulary k: Int? = nil) -> Double {
            Double(E) * layer[0] + (k.flatMap { k in prunedHead?.first { $0.tokens == k }?.seconds } ?? head[0])
        }
        /// A verification of d drafts: the newest input through 0..<E, then d + 1 rows through
        /// E..<L and the head, in one pass.
        public func verify(exit E: Int, drafts d: Int, layers L: Int) -> Double {
            Double(E) * layer[0] + Double(L - E) * layer[d] + head[d]
        }
    }

    /// Greedy rounds over a text whose positions' exit-E agreement with the last layer is `agrees`:
    /// from position r, accept drafts while they agree (at most d), then the full model's token;
    /// the next round starts after it. Returns (tokens committed, rounds).
    public static func rounds(agrees: [Bool], drafts d: Int) -> (tokens: Int, rounds: Int) {
        var r = 0, tokens = 0, rounds = 0
        while r < agrees.count {
            var k = 0
            while k < d && r + k < agrees.count && agrees[r + k] { k += 1 }
            let committed = min(k + 1, agrees.count - r)
            tokens += committed
            rounds += 1
            r += committed
        }
        return (tokens, rounds)
    }

    public struct PrunedHeadCost: Codable, Equatable, Sendable {
        /// K: the tokens the pruned head scores.
        public var tokens: Int
        public var seconds: Double
        public init(tokens: Int, seconds: Double) {
            self.tokens = tokens
            self.seconds = seconds
        }
    }

    public struct Cell: Codable, Equatable, Sendable {
        public var exitLayer: Int
        public var drafts: Int
        /// K of a pruned draft head; nil: the full head.
        public var draftVocabulary: Int? = nil
        public var tokensPerRound: Double
        /// Predicted tokens/s ÷ autoregressive tokens/s on the measured costs.
        public var speedup: Double
    }

    /// The E × d grid: `agreement[E − 1]` is exit E's agreement traces (one per text), E = 1...L−1.
    /// With `draftVocabulary` K, drafts pay `costs`' pruned head of K tokens (the agreement should
    /// then be `restrict`ed to those tokens).
    public static func grid(agreement: [[[Bool]]], costs: PassCosts, layers L: Int, maxDrafts: Int, draftVocabulary: Int? = nil) -> [Cell] {
        precondition(agreement.count == L - 1 && maxDrafts >= 1 && maxDrafts < costs.maxRows)
        let ar = costs.step(layers: L)
        var cells: [Cell] = []
        for E in 1..<L {
            for d in 1...maxDrafts {
                var tokens = 0, rounds = 0
                for trace in agreement[E - 1] {
                    let r = Self.rounds(agrees: trace, drafts: d)
                    tokens += r.tokens
                    rounds += r.rounds
                }
                guard rounds > 0 else { continue }
                let perRound = Double(tokens) / Double(rounds)
                let seconds = Double(d) * costs.draft(exit: E, vocabulary: draftVocabulary) + costs.verify(exit: E, drafts: d, layers: L)
                cells.append(Cell(exitLayer: E, drafts: d, draftVocabulary: draftVocabulary, tokensPerRound: perRound,
                                  speedup: perRound / seconds * ar))
            }
        }
        return cells
    }

    /// Agreement traces of a draft head that scores only the tokens where `kept[token]`: a position
    /// still agrees only if the full model's token (`finalTokens[text][position]`) is kept. A lower
    /// bound: where the exit's own top-1 is pruned away, the pruned head's best may still be the
    /// full model's token.
    public static func restrict(_ agreement: [[[Bool]]], finalTokens: [[Int]], to kept: [Bool]) -> [[[Bool]]] {
        agreement.map { traces in
            zip(traces, finalTokens).map { trace, tokens in
                precondition(trace.count == tokens.count, "one final token per position")
                return zip(trace, tokens).map { agrees, token in agrees && kept[token] }
            }
        }
    }

    /// The best cell; ties go to the smaller E, then the smaller d (cheaper drafts, less memory).
    public static func best(_ cells: [Cell]) -> Cell? {
        cells.min { a, b in
            if a.speedup != b.speedup { return a.speedup > b.speedup }
            return (a.exitLayer, a.drafts) < (b.exitLayer, b.drafts)
        }
    }

    /// The E × d heat-map as CSV: a header, then one line per exit, one column per d.
    public static func csv(_ cells: [Cell]) -> String {
        let exits = Array(Set(cells.map(\.exitLayer))).sorted(), ds = Array(Set(cells.map(\.drafts))).sorted()
        var out = "exit_layer," + ds.map { "d=\($0)" }.joined(separator: ",") + "\n"
        for E in exits {
            out += "\(E)," + ds.map { d in cells.first { $0.exitLayer == E && $0.drafts == d }.map { String(format: "%.3f", $0.speedup) } ?? "" }
                .joined(separator: ",") + "\n"
        }
        return out
    }

    /// The heat-map as an SVG: one cell per (E, d) with its speed-up written in it, coloured from
    /// red (slower than autoregressive) through white (1×) to green (the best); the best is outlined.
    public static func svg(_ cells: [Cell], title: String) -> String {
        let exits = Array(Set(cells.map(\.exitLayer))).sorted(), ds = Array(Set(cells.map(\.drafts))).sorted()
        let size = 44.0, left = 70.0, top = 56.0
        let width = left + Double(ds.count) * size + 20, height = top + Double(exits.count) * size + 50
        let top1 = cells.map(\.speedup).max() ?? 1, worst = cells.map(\.speedup).min() ?? 1
        func colour(_ s: Double) -> String {
            // White at 1×; towards green above, towards red below.
            let t = s >= 1 ? min(1, (s - 1) / max(top1 - 1, 1e-9)) : min(1, (1 - s) / max(1 - worst, 1e-9))
            let fade = Int(255 * (1 - 0.75 * t))
            return s >= 1 ? "rgb(\(fade),255,\(fade))" : "rgb(255,\(fade),\(fade))"
        }
        var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="11">
        <text x="\(Int(left))" y="20" font-size="13">\(escape(title))</text>
        <text x="\(Int(left))" y="38">predicted speed-up over autoregressive decoding (measured costs and acceptance)</text>

        """
        let best = Self.best(cells)
        for (i, d) in ds.enumerated() {
            svg += "<text x=\"\(Int(left + (Double(i) + 0.5) * size))\" y=\"\(Int(top + Double(exits.count) * size + 16))\" text-anchor=\"middle\">\(d)</text>\n"
        }
        svg += "<text x=\"\(Int(left + Double(ds.count) * size / 2))\" y=\"\(Int(top + Double(exits.count) * size + 34))\" text-anchor=\"middle\">d (drafts per round)</text>\n"
        for (j, E) in exits.enumerated() {
            let y = top + Double(j) * size
            svg += "<text x=\"\(Int(left - 8))\" y=\"\(Int(y + size / 2 + 4))\" text-anchor=\"end\">E=\(E)</text>\n"
            for (i, d) in ds.enumerated() {
                guard let cell = cells.first(where: { $0.exitLayer == E && $0.drafts == d }) else { continue }
                let x = left + Double(i) * size
                let outline = cell == best ? " stroke=\"black\" stroke-width=\"3\"" : " stroke=\"#999\""
                svg += "<rect x=\"\(Int(x))\" y=\"\(Int(y))\" width=\"\(Int(size))\" height=\"\(Int(size))\" fill=\"\(colour(cell.speedup))\"\(outline)/>"
                svg += "<text x=\"\(Int(x + size / 2))\" y=\"\(Int(y + size / 2 + 4))\" text-anchor=\"middle\">\(String(format: "%.2f", cell.speedup))</text>\n"
            }
        }
        return svg + "</svg>\n"
    }

    /// The median (of measured times or ratios; the mean of the middle two for an even count).
    public static func median(_ v: [Double]) -> Double {
        precondition(!v.isEmpty)
        let s = v.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}

extension SpeculationTuner {
    /// Measures `PassCosts` on this machine: for n = 1...maxRows, a pass of n rows of one sequence
    /// through every layer without the head (÷ L: one layer), and the head alone over n rows;
    /// medians of `repetitions`, after one warm-up of each shape. The sequence has `context`
    /// positions in its cache, as a decoding one does.
    /// With `prunedVocabularies` (K and its ascending token set), also the head over 1 row scoring
    /// only each set (the first pass of each makes its head copy, so it is the warm-up).
    public static func measureCosts(model: LlamaModel, maxRows: Int, repetitions: Int, context: Int,
                                    prunedVocabularies: [(k: Int, tokens: [Int])] = []) -> PassCosts {
        precondition(maxRows >= 1 && repetitions >= 1 && context >= 1)
        let L = model.layerCount, hd = model.config.hiddenSize
        let cache = KVCache(config: model.config, capacity: context + maxRows)
        let warm = model.makeActivations(capacity: context)
        model.embed((0..<context).map { ($0 * 7 + 3) % model.config.vocabSize }, into: warm)
        model.forward(warm, layers: 0..<L, positions: 0..<context, cache: cache)
        let rows = FloatBuffer(count: maxRows * hd)
        let plan = PassPlan(maxRows: maxRows, maxLogitsRows: maxRows)
        let scratch = model.makePassScratch(maxRows: maxRows)
        let logits = model.makeLogits(capacity: maxRows)
        let clock = ContinuousClock()
        func time(_ n: Int, head: Bool, vocabulary: DraftVocabulary? = nil) -> Double {
            plan.reset()
            cache.truncate(to: context)
            for i in 0..<n { model.embed((i * 13 + 1) % model.config.vocabSize, into: rows.pointer + i * hd) }
            if head {
                plan.add(cache: nil, hidden: rows.pointer, count: n, firstPosition: context, layers: 0..<0, headRows: 0..<n,
                         headVocabulary: vocabulary)
            } else {
                plan.add(cache: cache, hidden: rows.pointer, count: n, firstPosition: context, layers: 0..<L)
            }
            let start = clock.now
            model.run(plan, scratch: scratch, logits: logits)
            return (clock.now - start).seconds
        }
        var layer: [Double] = [], head: [Double] = []
        for n in 1...maxRows {
            _ = time(n, head: false)
            _ = time(n, head: true)
            layer.append(median((0..<repetitions).map { _ in time(n, head: false) }) / Double(L))
            head.append(median((0..<repetitions).map { _ in time(n, head: true) }))
        }
        let pruned = prunedVocabularies.map { k, tokens in
            let vocabulary = model.draftVocabulary(tokens)
            _ = time(1, head: true, vocabulary: vocabulary)
            return PrunedHeadCost(tokens: k, seconds: median((0..<repetitions).map { _ in time(1, head: true, vocabulary: vocabulary) }))
        }
        cache.truncate(to: 0)
        return PassCosts(layer: layer, head: head, prunedHead: pruned.isEmpty ? nil : pruned)
    }
}
