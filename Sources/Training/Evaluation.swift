import CKernels
import Engine
import Foundation
import Tokenization

/// Per-exit quality of a model on held-out text, teacher-forced: every exit sees the same true
/// context, so the numbers compare layers rather than generation paths.
public struct ExitEvaluation: Codable, Sendable {
    public struct Layer: Codable, Sendable {
        /// 1-based: the exit after this many layers (E).
        public var exitLayer: Int
        public var loss: Double
        public var perplexity: Double
        /// Top-1 next-token accuracy against the text.
        public var accuracy: Double
        /// Fraction of positions whose top-1 equals the last layer's top-1.
        public var agreement: Double
        /// Greedy self-speculative acceptance (accepted ÷ drafted) with `speculations` drafted tokens per round.
        public var acceptanceRate: Double
        /// Tokens emitted per verification round (accepted + the full model's own token).
        public var tokensPerRound: Double
    }
    public var model: String
    public var tokens: Int
    public var sequences: Int
    public var speculations: Int
    public var layers: [Layer]
}

public enum Evaluator {
    /// Runs `sequences` (each length+1 tokens: inputs, then shifted targets) through `model`,
    /// applying the exit head after every layer. Models with plain RoPE run through the trainer's
    /// sgemm network (the engine's kernels are built for few rows at a time, and every exit here
    /// is a full vocabulary projection of every position); others, models loaded with other weights
    /// than the stored ones (`--weights int8`: only the engine reads those), or `useEngine`, through
    /// the engine.
    public static func evaluate(model: LlamaModel, sequences: [[Int32]], speculations: Int, name: String,
                                useEngine: Bool = false) -> ExitEvaluation {
        var stats = Statistics(layers: model.layerCount)
        forEachSequence(model: model, sequences: sequences, useEngine: useEngine) { seq, top, ce in
            stats.add(top: top, ce: ce, targets: seq[1...].map(Int.init), speculations: speculations)
        }
        return stats.result(name: name, sequences: sequences.count, speculations: speculations)
    }

    /// Per exit E = 1...L−1 and text, whether exit E's top-1 equals the last layer's at each
    /// position (teacher-forced): `[E − 1][text][position]`, what `tune` simulates rounds on.
    public static func exitAgreement(model: LlamaModel, sequences: [[Int32]], useEngine: Bool = false) -> [[[Bool]]] {
        agreement(exitTops(model: model, sequences: sequences, useEngine: useEngine))
    }

    /// Every exit's top-1 token at every position (teacher-forced): `[l][text][position]` for the
    /// exit after layer l (l = L − 1: the full model).
    public static func exitTops(model: LlamaModel, sequences: [[Int32]], useEngine: Bool = false) -> [[[Int]]] {
        var tops = [[[Int]]](repeating: [], count: model.layerCount)
        forEachSequence(model: model, sequences: sequences, useEngine: useEngine) { _, top, _ in
            for l in tops.indices { tops[l].append(top[l]) }
        }
        return tops
    }

    /// `exitAgreement` of `exitTops`: `[E − 1][text][position]` = exit E's top-1 is the last layer's.
    public static func agreement(_ tops: [[[Int]]]) -> [[[Bool]]] {
        let last = tops[tops.count - 1]
        return tops.dropLast().map { exit in zip(exit, last).map { zip($0, $1).map { $0 == $1 } } }
    }

    /// Calls `body(sequence, top, ce)` for every sequence, in order: top[l][r] and ce[l][r] are exit
    /// l's top-1 and cross-entropy at position r.
    static func forEachSequence(model: LlamaModel, sequences: [[Int32]], useEngine: Bool,
                                _ body: ([Int32], [[Int]], [[Double]]) -> Void) {
        let L = model.layerCount
        let sameLength = Set(sequences.map(\.count)).count == 1
        if !useEngine, model.format == .stored, model.config.rope.kind == .default, sameLength, let first = sequences.first, first.count > 1 {
            let layout = ParameterLayout(config: model.config)
            let params = Tensor<Float>(count: layout.count)
            layout.load(model.weights, into: params.pointer)
            let batch = min(4, sequences.count)
            let net = Network<Float>(layout: layout, batch: batch, length: first.count - 1)
            let keep = [[Bool]](repeating: [Bool](repeating: true, count: batch), count: L)
            var ce = [Double](repeating: 0, count: net.rows), top = [Int32](repeating: 0, count: net.rows)
            var i = 0
            while i < sequences.count {
                let group = Array(sequences[i..<min(i + batch, sequences.count)])
                // A short last group is padded with copies of its first sequence, which are not counted.
                let padded = group + [[Int32]](repeating: group[0], count: batch - group.count)
                net.run(tokens: Array(padded.joined()), keep: keep, exitWeights: [Double](repeating: 0, count: L),
                        params: params.pointer, grads: nil)
                var tops = [[Int32]](repeating: [], count: L), ces = [[Double]](repeating: [], count: L)
                for l in 0..<L {
                    net.exitStatistics(after: l, params: params.pointer, ce: &ce, top: &top)
                    tops[l] = top
                    ces[l] = ce
                }
                for (b, seq) in group.enumerated() {
                    let rows = (b * net.length)..<((b + 1) * net.length)
                    body(seq, tops.map { $0[rows].map(Int.init) }, ces.map { Array($0[rows]) })
                }
                i += batch
            }
        } else {
            engineTops(model: model, sequences: sequences, body)
        }
    }

    /// Per-layer sums over all evaluated positions.
    struct Statistics {
        let layers: Int
        var lossSum: [Double], correct: [Int], agree: [Int], accepted: [Int], drafted: [Int], rounds: [Int]
        var total = 0

        init(layers L: Int) {
            layers = L
            lossSum = [Double](repeating: 0, count: L)
            correct = [Int](repeating: 0, count: L)
            agree = correct; accepted = correct; drafted = correct; rounds = correct
        }

        /// top[l][r], ce[l][r]: exit l's top-1 and cross-entropy at position r; targets[r]: the true next token.
        mutating func add(top: [[Int]], ce: [[Double]], targets: [Int], speculations: Int) {
            let n = targets.count, L = layers
            for l in 0..<L {
                for r in 0..<n {
                    lossSum[l] += ce[l][r]
                    if top[l][r] == targets[r] { correct[l] += 1 }
                    if top[l][r] == top[L - 1][r] { agree[l] += 1 }
                }
                // Rounds of `speculations` drafts from position r: accept while the exit agrees with the last layer.
                var r = 0
                while r < n {
                    var k = 0
                    while k < speculations && r + k < n && top[l][r + k] == top[L - 1][r + k] { k += 1 }
                    accepted[l] += k
                    // Near the end of the text fewer than d tokens remain to be drafted.
                    drafted[l] += min(speculations, n - r)
                    rounds[l] += 1
                    r += k + 1
                }
            }
            total += n
        }

        func result(name: String, sequences: Int, speculations: Int) -> ExitEvaluation {
            let layers = (0..<self.layers).map { l -> ExitEvaluation.Layer in
                let loss = lossSum[l] / Double(max(total, 1))
                return ExitEvaluation.Layer(exitLayer: l + 1, loss: loss, perplexity: Foundation.exp(loss),
                                            accuracy: Double(correct[l]) / Double(max(total, 1)),
                                            agreement: Double(agree[l]) / Double(max(total, 1)),
                                            acceptanceRate: Double(accepted[l]) / Double(max(drafted[l], 1)),
                                            tokensPerRound: Double(accepted[l] + rounds[l]) / Double(max(rounds[l], 1)))
            }
            return ExitEvaluation(model: name, tokens: total, sequences: sequences, speculations: speculations, layers: layers)
        }
    }

    /// The same tops and cross-entropies through the engine's own layer-range forward and exit head.
    static func engineTops(model: LlamaModel, sequences: [[Int32]], _ body: ([Int32], [[Int]], [[Double]]) -> Void) {
        let L = model.layerCount, V = model.config.vocabSize
        for seq in sequences {
            let n = seq.count - 1
            guard n > 0 else { continue }
            let h = model.makeActivations(capacity: n)
            let cache = model.makeCache(capacity: n)
            let logits = model.makeLogits(capacity: n)
            model.embed(seq[0..<n].map(Int.init), into: h)
            var top = [[Int]](repeating: [Int](repeating: 0, count: n), count: L)
            var ce = [[Double]](repeating: [Double](repeating: 0, count: n), count: L)
            for l in 0..<L {
                model.forward(h, layers: l..<(l + 1), positions: 0..<n, cache: cache)
                model.exitLogits(h, rows: 0..<n, into: logits)
                for r in 0..<n {
                    let row = logits.values.pointer + r * V
                    let best = Int(ck_argmax(row, Int32(V)))
                    top[l][r] = best
                    var sum = 0.0
                    let mx = Double(row[best])
                    for j in 0..<V { sum += Foundation.exp(Double(row[j]) - mx) }
                    ce[l][r] = mx + Foundation.log(sum) - Double(row[Int(seq[r + 1])])
                }
            }
            body(seq, top, ce)
        }
    }

    /// An SVG line chart of accuracy, agreement with the last layer and acceptance rate against exit layer.
    public static func svgChart(_ e: ExitEvaluation, title: String) -> String {
        let w = 640.0, h = 400.0, left = 60.0, right = 20.0, top = 40.0, bottom = 50.0
        let pw = w - left - right, ph = h - top - bottom
        let L = e.layers.count
        func x(_ layer: Int) -> Double { left + (L > 1 ? Double(layer - 1) / Double(L - 1) : 0.5) * pw }
        func y(_ v: Double) -> Double { top + (1 - min(max(v, 0), 1)) * ph }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(w / 2)\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">\(escape(title))</text>\n"
        for i in 0...5 {
            let v = Double(i) / 5
            s += "<line x1=\"\(left)\" y1=\"\(y(v))\" x2=\"\(left + pw)\" y2=\"\(y(v))\" stroke=\"#ddd\"/>"
            s += "<text x=\"\(left - 8)\" y=\"\(y(v) + 4)\" text-anchor=\"end\">\(String(format: "%.1f", v))</text>\n"
        }
        for layer in 1...max(L, 1) {
            s += "<text x=\"\(x(layer))\" y=\"\(top + ph + 18)\" text-anchor=\"middle\">\(layer)</text>\n"
        }
        s += "<text x=\"\(left + pw / 2)\" y=\"\(h - 10)\" text-anchor=\"middle\">exit layer E</text>\n"
        s += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(top + ph)\" stroke=\"black\"/>"
        s += "<line x1=\"\(left)\" y1=\"\(top + ph)\" x2=\"\(left + pw)\" y2=\"\(top + ph)\" stroke=\"black\"/>\n"
        let series: [(String, String, (ExitEvaluation.Layer) -> Double)] = [
            ("top-1 accuracy", "#1f77b4", { $0.accuracy }),
            ("agreement with last layer", "#d62728", { $0.agreement }),
            ("acceptance rate (d=\(e.speculations))", "#2ca02c", { $0.acceptanceRate }),
        ]
        for (i, (name, color, value)) in series.enumerated() {
            let points = e.layers.map { "\(x($0.exitLayer)),\(y(value($0)))" }.joined(separator: " ")
            s += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(points)\"/>\n"
            for layer in e.layers { s += "<circle cx=\"\(x(layer.exitLayer))\" cy=\"\(y(value(layer)))\" r=\"3\" fill=\"\(color)\"/>" }
            let ly = top + 10 + Double(i) * 16
            s += "\n<line x1=\"\(left + 12)\" y1=\"\(ly)\" x2=\"\(left + 32)\" y2=\"\(ly)\" stroke=\"\(color)\" stroke-width=\"2\"/>"
            s += "<text x=\"\(left + 38)\" y=\"\(ly + 4)\">\(escape(name))</text>\n"
        }
        return s + "</svg>\n"
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
