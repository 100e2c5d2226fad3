import Engine
import Foundation

/// Forward and backward of the Llama decoder over a micro-batch of `batch` sequences of `length`
/// tokens, with per-sample layer dropout and the shared exit head after any set of layers.
/// Owns every activation the backward pass needs; parameters and gradients are flat buffers laid
/// out by `ParameterLayout` and are passed in, so one network serves training and evaluation.
public final class Network<S: TrainScalar> {
    public let layout: ParameterLayout
    public let config: ModelConfig
    public let batch: Int
    public let length: Int
    /// Rows of every activation buffer: batch·length, sample b at rows b·length..<(b+1)·length.
    public var rows: Int { batch * length }
    /// Rows of logits materialised at once by the exit head: bounds memory to headChunk·vocab.
    let headChunk: Int
    let rope: RoPETables<S>

    /// What one layer keeps from its forward pass. Shapes in rows (N = batch·length):
    final class LayerState {
        let input: Tensor<S>        // (N, hidden): the residual stream entering the layer
        let rstd1: Tensor<S>        // (N)
        let normed1: Tensor<S>      // (N, hidden): input·rstd1, before the gain
        let attnIn: Tensor<S>       // (N, hidden): normed1·gain, the q/k/v projections' input
        let q: Tensor<S>            // (N, heads·headDim), after RoPE
        let k: Tensor<S>            // (N, kvHeads·headDim), after RoPE
        let v: Tensor<S>            // (N, kvHeads·headDim)
        let probs: Tensor<S>        // (batch, heads, length, length): softmax rows, 0 above the diagonal
        let attn: Tensor<S>         // (N, heads·headDim): attention output before o_proj
        let mid: Tensor<S>          // (N, hidden): residual after the attention block
        let rstd2: Tensor<S>        // (N)
        let normed2: Tensor<S>      // (N, hidden)
        let mlpIn: Tensor<S>        // (N, hidden)
        let gate: Tensor<S>         // (N, intermediate): gate projection before SiLU
        let up: Tensor<S>           // (N, intermediate)
        let act: Tensor<S>          // (N, intermediate): silu(gate)·up
        init(_ c: ModelConfig, batch: Int, length: Int) {
            let n = batch * length
            input = Tensor(count: n * c.hiddenSize); rstd1 = Tensor(count: n); normed1 = Tensor(count: n * c.hiddenSize)
            attnIn = Tensor(count: n * c.hiddenSize); q = Tensor(count: n * c.qDim); k = Tensor(count: n * c.kvDim)
            v = Tensor(count: n * c.kvDim); probs = Tensor(count: batch * c.headCount * length * length)
            attn = Tensor(count: n * c.qDim); mid = Tensor(count: n * c.hiddenSize); rstd2 = Tensor(count: n)
            normed2 = Tensor(count: n * c.hiddenSize); mlpIn = Tensor(count: n * c.hiddenSize)
            gate = Tensor(count: n * c.intermediateSize); up = Tensor(count: n * c.intermediateSize)
            act = Tensor(count: n * c.intermediateSize)
        }
    }

    let states: [LayerState]
    /// (N, hidden): the last layer's output.
    let top: Tensor<S>
    /// Per layer (N, hidden): gradient of the exit loss at that layer's output (zero without an exit).
    let exitGrads: [Tensor<S>]
    /// (N) input token ids and (N) targets (the next token) of the current micro-batch.
    var inputs: [Int32] = []
    var targets: [Int32] = []
    /// Per layer, per sample: does the layer run (false: dropped, the residual passes through)?
    var keep: [[Bool]] = []

    // Head scratch: (N, hidden) normalised rows, (N) rstd, (N, hidden) normed·gain, (headChunk, vocab) logits.
    let headNormed: Tensor<S>, headRstd: Tensor<S>, headIn: Tensor<S>, logits: Tensor<S>, headGradIn: Tensor<S>
    // Backward scratch, (N, ·) as named.
    let dHidden: Tensor<S>, dMasked: Tensor<S>, dMid: Tensor<S>, dNormIn: Tensor<S>
    let dAttn: Tensor<S>, dQ: Tensor<S>, dK: Tensor<S>, dV: Tensor<S>
    let dAct: Tensor<S>, dGate: Tensor<S>, dUp: Tensor<S>, tmp: Tensor<S>
    let dProbs: Tensor<S>   // (length, length)
    /// (N, vocab): softmax of the last layer's exit, the distillation target of the exits below it;
    /// allocated by the first `run` that distils.
    var teacher: Tensor<S>?

    public init(layout: ParameterLayout, batch: Int, length: Int, headChunk: Int = 512) {
        precondition(batch > 0 && length > 0)
        self.layout = layout
        config = layout.config
        self.batch = batch
        self.length = length
        self.headChunk = min(headChunk, batch * length)
        let c = config, n = batch * length
        rope = RoPETables(theta: c.rope.theta, headDim: c.headDim, positions: length)
        states = (0..<c.layerCount).map { _ in LayerState(c, batch: batch, length: length) }
        top = Tensor(count: n * c.hiddenSize)
        exitGrads = (0..<c.layerCount).map { _ in Tensor(count: n * c.hiddenSize) }
        headNormed = Tensor(count: n * c.hiddenSize); headRstd = Tensor(count: n); headIn = Tensor(count: n * c.hiddenSize)
        logits = Tensor(count: self.headChunk * c.vocabSize); headGradIn = Tensor(count: n * c.hiddenSize)
        dHidden = Tensor(count: n * c.hiddenSize); dMasked = Tensor(count: n * c.hiddenSize)
        dMid = Tensor(count: n * c.hiddenSize); dNormIn = Tensor(count: n * c.hiddenSize)
        dAttn = Tensor(count: n * c.qDim); dQ = Tensor(count: n * c.qDim); dK = Tensor(count: n * c.kvDim)
        dV = Tensor(count: n * c.kvDim); dAct = Tensor(count: n * c.intermediateSize)
        dGate = Tensor(count: n * c.intermediateSize); dUp = Tensor(count: n * c.intermediateSize)
        tmp = Tensor(count: n * max(c.hiddenSize, c.intermediateSize, c.qDim))
        dProbs = Tensor(count: length * length)
    }

    /// The output of layer l (input of l+1, or `top` for the last layer).
    func output(of l: Int) -> Tensor<S> { l + 1 < config.layerCount ? states[l + 1].input : top }

    /// One micro-batch: `tokens` holds batch rows of length+1 ids (inputs, then the shifted targets).
    /// `keep[l][b]` says whether layer l runs for sample b; `exitWeights[l]` weighs the mean
    /// cross-entropy of the exit after layer l (0: no exit there). Returns each exit's mean
    /// cross-entropy against the data (nil where the weight is 0). With `gradients`, adds
    /// scale·∂J/∂θ into `grads` for J = Σ_l exitWeights[l]·CE_l, where CE_l of an exit below the
    /// last is taken against the soft target (1−α)·onehot(next token) + α·softmax(last exit),
    /// α = `distillation`, the last exit's distribution held fixed (no gradient reaches it through
    /// the target). Self-distillation trains an exit to agree with the full model, which is what a
    /// draft needs, rather than only to predict the data; α = 0 is the LayerSkip recipe's loss.
    @discardableResult
    public func run(tokens: [Int32], keep: [[Bool]], exitWeights: [Double], params: UnsafePointer<S>,
                    grads: UnsafeMutablePointer<S>?, scale: Double = 1, distillation: Double = 0) -> [Double?] {
        let c = config, n = rows, hd = c.hiddenSize, t1 = length + 1
        precondition(tokens.count == batch * t1, "expected \(batch)×\(t1) tokens, got \(tokens.count)")
        precondition(keep.count == c.layerCount && keep.allSatisfy { $0.count == batch })
        precondition(exitWeights.count == c.layerCount)
        precondition((0...1).contains(distillation), "distillation weight \(distillation) outside [0, 1]")
        self.keep = keep
        inputs = [Int32](repeating: 0, count: n)
        targets = inputs
        for b in 0..<batch {
            for t in 0..<length {
                inputs[b * length + t] = tokens[b * t1 + t]
                targets[b * length + t] = tokens[b * t1 + t + 1]
            }
        }
        // Embedding lookup.
        let x0 = states[0].input.pointer
        for r in 0..<n {
            let id = Int(inputs[r])
            precondition(id >= 0 && id < c.vocabSize, "token id \(id) outside the vocabulary")
            (x0 + r * hd).update(from: params + layout.embedding + id * hd, count: hd)
        }
        var losses = [Double?](repeating: nil, count: c.layerCount)
        for l in 0..<c.layerCount { layerForward(l, params: params) }
        // The exits' order matters only to the bits of the head's gradient sums: ascending, as the
        // exits come, except that a distilling run needs the last exit's distribution first.
        let last = c.layerCount - 1
        let distils = distillation > 0 && exitWeights[..<last].contains { $0 != 0 }
        var teacherRows: UnsafePointer<S>?
        if distils {
            let t = teacher ?? Tensor(count: n * c.vocabSize)
            teacher = t
            let g = grads.map { _ in exitGrads[last].pointer }
            let loss = exitHead(output(of: last).pointer, weight: exitWeights[last] * scale, params: params,
                                grads: exitWeights[last] != 0 ? grads : nil, dHidden: g, saveSoftmax: t.pointer)
            if exitWeights[last] != 0 { losses[last] = loss }
            teacherRows = UnsafePointer(t.pointer)
        }
        for l in 0..<c.layerCount where exitWeights[l] != 0 && !(distils && l == last) {
            let g = grads.map { _ in exitGrads[l].pointer }
            losses[l] = exitHead(output(of: l).pointer, weight: exitWeights[l] * scale, params: params, grads: grads, dHidden: g,
                                 teacher: teacherRows, distillation: l < last ? distillation : 0)
        }
        guard let grads else { return losses }

        // Backward from the top: each layer's output gradient is what flows down from above plus its own exit's.
        dHidden.zero()
        // Layers above the highest exit do not reach the loss.
        let highestExit = exitWeights.lastIndex { $0 != 0 } ?? -1
        for l in stride(from: highestExit, through: 0, by: -1) {
            if exitWeights[l] != 0 {
                let d = dHidden.pointer, e = exitGrads[l].pointer
                for i in 0..<n * hd { d[i] += e[i] }
            }
            layerBackward(l, params: params, grads: grads)
        }
        for r in 0..<n {
            let g = grads + layout.embedding + Int(inputs[r]) * hd, d = dHidden.pointer + r * hd
            for i in 0..<hd { g[i] += d[i] }
        }
        return losses
    }

    // MARK: - Layer

    func layerForward(_ l: Int, params p: UnsafePointer<S>) {
        let c = config, n = rows, hd = c.hiddenSize, w = layout.layers[l], s = states[l]
        let out = output(of: l).pointer
        let eps = S(c.rmsNormEps)
        rmsnormForward(s.input.pointer, gain: p + w.inputNorm, rows: n, dim: hd, eps: eps,
                       normalized: s.normed1.pointer, rstd: s.rstd1.pointer, out: s.attnIn.pointer)
        linearForward(s.attnIn.pointer, p + w.q, rows: n, inDim: hd, outDim: c.qDim, s.q.pointer)
        linearForward(s.attnIn.pointer, p + w.k, rows: n, inDim: hd, outDim: c.kvDim, s.k.pointer)
        linearForward(s.attnIn.pointer, p + w.v, rows: n, inDim: hd, outDim: c.kvDim, s.v.pointer)
        rope.cos.withUnsafeBufferPointer { cos in
            rope.sin.withUnsafeBufferPointer { sin in
                for r in 0..<n {
                    let t = r % length
                    let cr = cos.baseAddress! + t * rope.half, sr = sin.baseAddress! + t * rope.half
                    Training.rope(s.q.pointer + r * c.qDim, heads: c.headCount, headDim: c.headDim, cos: cr, sin: sr, inverse: false)
                    Training.rope(s.k.pointer + r * c.kvDim, heads: c.kvHeadCount, headDim: c.headDim, cos: cr, sin: sr, inverse: false)
                }
            }
        }
        attentionForward(s)
        linearForward(s.attn.pointer, p + w.o, rows: n, inDim: c.qDim, outDim: hd, tmp.pointer)
        for i in 0..<n * hd { s.mid.pointer[i] = s.input.pointer[i] + tmp.pointer[i] }

        rmsnormForward(s.mid.pointer, gain: p + w.postNorm, rows: n, dim: hd, eps: eps,
                       normalized: s.normed2.pointer, rstd: s.rstd2.pointer, out: s.mlpIn.pointer)
        let f = c.intermediateSize
        linearForward(s.mlpIn.pointer, p + w.gate, rows: n, inDim: hd, outDim: f, s.gate.pointer)
        linearForward(s.mlpIn.pointer, p + w.up, rows: n, inDim: hd, outDim: f, s.up.pointer)
        S.swigluForward(s.gate.pointer, s.up.pointer, s.act.pointer, n * f)
        linearForward(s.act.pointer, p + w.down, rows: n, inDim: f, outDim: hd, tmp.pointer)
        for i in 0..<n * hd { out[i] = s.mid.pointer[i] + tmp.pointer[i] }
        // A dropped sample's rows leave the layer exactly as they came in.
        for b in 0..<batch where !keep[l][b] {
            (out + b * length * hd).update(from: s.input.pointer + b * length * hd, count: length * hd)
        }
    }

    /// Causal grouped-query attention per (sample, head) with sgemm for QKᵀ and PV.
    func attentionForward(_ s: LayerState) {
        let c = config, t = length, dh = c.headDim, group = c.headCount / c.kvHeadCount
        let scale = 1 / S(Double(dh).squareRoot())
        for b in 0..<batch {
            for h in 0..<c.headCount {
                let g = h / group
                let q = s.q.pointer + b * t * c.qDim + h * dh
                let k = s.k.pointer + b * t * c.kvDim + g * dh
                let v = s.v.pointer + b * t * c.kvDim + g * dh
                let probs = s.probs.pointer + (b * c.headCount + h) * t * t
                S.gemm(false, true, t, t, dh, scale, q, c.qDim, k, c.kvDim, 0, probs, t)
                for i in 0..<t {
                    let row = probs + i * t
                    _ = S.softmax(row, i + 1, scale: 1)
                    (row + i + 1).update(repeating: 0, count: t - i - 1)
                }
                S.gemm(false, false, t, dh, t, 1, probs, t, v, c.kvDim, 0, s.attn.pointer + b * t * c.qDim + h * dh, c.qDim)
            }
        }
    }

    /// dHidden holds ∂J/∂(output of l) on entry and ∂J/∂(input of l) on exit.
    func layerBackward(_ l: Int, params p: UnsafePointer<S>, grads gr: UnsafeMutablePointer<S>) {
        let c = config, n = rows, hd = c.hiddenSize, f = c.intermediateSize, w = layout.layers[l], s = states[l]
        let dOut = dHidden.pointer, dm = dMasked.pointer
        dm.update(from: dOut, count: n * hd)
        // A dropped sample's layer computation did not reach the loss: no gradient flows into it.
        for b in 0..<batch where !keep[l][b] { (dm + b * length * hd).update(repeating: 0, count: length * hd) }

        // MLP block.
        linearBackward(dm, s.act.pointer, p + w.down, rows: n, inDim: f, outDim: hd, dx: dAct.pointer, accumulate: false, dw: gr + w.down)
        S.swigluBackward(s.gate.pointer, s.up.pointer, dAct.pointer, dGate.pointer, dUp.pointer, n * f)
        linearBackward(dGate.pointer, s.mlpIn.pointer, p + w.gate, rows: n, inDim: hd, outDim: f, dx: dNormIn.pointer, accumulate: false, dw: gr + w.gate)
        linearBackward(dUp.pointer, s.mlpIn.pointer, p + w.up, rows: n, inDim: hd, outDim: f, dx: dNormIn.pointer, accumulate: true, dw: gr + w.up)
        dMid.pointer.update(from: dm, count: n * hd)
        rmsnormBackward(dNormIn.pointer, normalized: s.normed2.pointer, rstd: s.rstd2.pointer, gain: p + w.postNorm,
                        rows: n, dim: hd, dGain: gr + w.postNorm, dx: dMid.pointer, accumulate: true)

        // Attention block.
        linearBackward(dMid.pointer, s.attn.pointer, p + w.o, rows: n, inDim: c.qDim, outDim: hd, dx: dAttn.pointer, accumulate: false, dw: gr + w.o)
        attentionBackward(s)
        rope.cos.withUnsafeBufferPointer { cos in
            rope.sin.withUnsafeBufferPointer { sin in
                for r in 0..<n {
                    let t = r % length
                    let cr = cos.baseAddress! + t * rope.half, sr = sin.baseAddress! + t * rope.half
                    Training.rope(dQ.pointer + r * c.qDim, heads: c.headCount, headDim: c.headDim, cos: cr, sin: sr, inverse: true)
                    Training.rope(dK.pointer + r * c.kvDim, heads: c.kvHeadCount, headDim: c.headDim, cos: cr, sin: sr, inverse: true)
                }
            }
        }
        linearBackward(dQ.pointer, s.attnIn.pointer, p + w.q, rows: n, inDim: hd, outDim: c.qDim, dx: dNormIn.pointer, accumulate: false, dw: gr + w.q)
        linearBackward(dK.pointer, s.attnIn.pointer, p + w.k, rows: n, inDim: hd, outDim: c.kvDim, dx: dNormIn.pointer, accumulate: true, dw: gr + w.k)
        linearBackward(dV.pointer, s.attnIn.pointer, p + w.v, rows: n, inDim: hd, outDim: c.kvDim, dx: dNormIn.pointer, accumulate: true, dw: gr + w.v)
        rmsnormBackward(dNormIn.pointer, normalized: s.normed1.pointer, rstd: s.rstd1.pointer, gain: p + w.inputNorm,
                        rows: n, dim: hd, dGain: gr + w.inputNorm, dx: dMid.pointer, accumulate: true)
        // Input gradient: residual path plus the layer's own; a dropped sample's is the output gradient itself.
        for b in 0..<batch where keep[l][b] {
            (dOut + b * length * hd).update(from: dMid.pointer + b * length * hd, count: length * hd)
        }
    }

    func attentionBackward(_ s: LayerState) {
        let c = config, t = length, dh = c.headDim, group = c.headCount / c.kvHeadCount
        let scale = 1 / S(Double(dh).squareRoot())
        dK.zero()
        dV.zero()
        let dp = dProbs.pointer
        for b in 0..<batch {
            for h in 0..<c.headCount {
                let g = h / group
                let q = s.q.pointer + b * t * c.qDim + h * dh, dq = dQ.pointer + b * t * c.qDim + h * dh
                let k = s.k.pointer + b * t * c.kvDim + g * dh, dk = dK.pointer + b * t * c.kvDim + g * dh
                let v = s.v.pointer + b * t * c.kvDim + g * dh, dv = dV.pointer + b * t * c.kvDim + g * dh
                let dO = dAttn.pointer + b * t * c.qDim + h * dh
                let probs = s.probs.pointer + (b * c.headCount + h) * t * t
                S.gemm(false, true, t, t, dh, 1, dO, c.qDim, v, c.kvDim, 0, dp, t)           // dP = dO·Vᵀ
                S.gemm(true, false, t, dh, t, 1, probs, t, dO, c.qDim, 1, dv, c.kvDim)       // dV += Pᵀ·dO
                for i in 0..<t {                                                            // dS = P∘(dP − rowdot)·scale
                    let pr = probs + i * t, dr = dp + i * t
                    var dot: S = 0
                    for j in 0...i { dot += pr[j] * dr[j] }
                    for j in 0...i { dr[j] = pr[j] * (dr[j] - dot) * scale }
                    for j in (i + 1)..<t { dr[j] = 0 }
                }
                S.gemm(false, false, t, dh, t, 1, dp, t, k, c.kvDim, 0, dq, c.qDim)          // dQ = dS·K
                S.gemm(true, false, t, dh, t, 1, dp, t, q, c.qDim, 1, dk, c.kvDim)           // dK += dSᵀ·Q
            }
        }
    }

    // MARK: - Exit head

    /// Final RMSNorm + LM head on `hidden` (N, hidden) and mean cross-entropy against the targets.
    /// With `grads`, adds weight·∂CE/∂θ for the head's parameters and writes weight·∂CE/∂hidden into
    /// `dHidden`, CE being taken against (1−α)·onehot + α·`teacher` (α = `distillation`; `teacher`
    /// (N, vocab) rows of probabilities). `saveSoftmax` (N, vocab) receives this head's softmax.
    /// The returned loss is always the data's cross-entropy.
    func exitHead(_ hidden: UnsafePointer<S>, weight: Double, params p: UnsafePointer<S>,
                  grads: UnsafeMutablePointer<S>?, dHidden: UnsafeMutablePointer<S>?,
                  saveSoftmax: UnsafeMutablePointer<S>? = nil,
                  teacher: UnsafePointer<S>? = nil, distillation: Double = 0) -> Double {
        let c = config, n = rows, hd = c.hiddenSize, vocab = c.vocabSize
        rmsnormForward(hidden, gain: p + layout.finalNorm, rows: n, dim: hd, eps: S(c.rmsNormEps),
                       normalized: headNormed.pointer, rstd: headRstd.pointer, out: headIn.pointer)
        var total = 0.0
        let gradScale = S(weight / Double(n))
        let alpha = S(distillation)
        let mixedTeacher = distillation > 0 ? teacher : nil
        var start = 0
        while start < n {
            let m = min(headChunk, n - start)
            let x = headIn.pointer + start * hd
            linearForward(x, p + layout.lmHead, rows: m, inDim: hd, outDim: vocab, logits.pointer)
            for r in 0..<m {
                let row = logits.pointer + r * vocab
                let target = Int(targets[start + r])
                let targetLogit = row[target]
                if let saved = saveSoftmax {
                    // Unscaled first, so the saved distribution does not depend on this exit's weight.
                    let lse = S.softmax(row, vocab, scale: 1)
                    (saved + (start + r) * vocab).update(from: row, count: vocab)
                    total += Double(lse - targetLogit)
                    if grads != nil { for j in 0..<vocab { row[j] *= gradScale } }
                } else {
                    // Softmax in place, scaled once so the row becomes weight·(softmax − target)/N after the fix-up.
                    let lse = S.softmax(row, vocab, scale: gradScale)
                    total += Double(lse - targetLogit)
                }
                guard grads != nil else { continue }
                if let mixedTeacher {
                    let q = mixedTeacher + (start + r) * vocab, k = gradScale * alpha
                    for j in 0..<vocab { row[j] -= k * q[j] }
                    row[target] -= gradScale * (1 - alpha)
                } else {
                    row[target] -= gradScale
                }
            }
            if let grads {
                linearBackward(logits.pointer, x, p + layout.lmHead, rows: m, inDim: hd, outDim: vocab,
                               dx: headGradIn.pointer + start * hd, accumulate: false, dw: grads + layout.lmHead)
            }
            start += m
        }
        if let grads, let dHidden {
            rmsnormBackward(headGradIn.pointer, normalized: headNormed.pointer, rstd: headRstd.pointer, gain: p + layout.finalNorm,
                            rows: n, dim: hd, dGain: grads + layout.finalNorm, dx: dHidden, accumulate: false)
        }
        return total / Double(n)
    }

    /// Logits of the exit after layer l for every row of the last `run` (forward state must be current):
    /// (N, vocab) row-major. For tests and evaluation, not the training loop.
    public func exitLogits(after l: Int, params p: UnsafePointer<S>) -> [S] {
        let c = config, n = rows, hd = c.hiddenSize
        rmsnormForward(output(of: l).pointer, gain: p + layout.finalNorm, rows: n, dim: hd, eps: S(c.rmsNormEps),
                       normalized: headNormed.pointer, rstd: headRstd.pointer, out: headIn.pointer)
        var out = [S](repeating: 0, count: n * c.vocabSize)
        out.withUnsafeMutableBufferPointer { linearForward(headIn.pointer, p + layout.lmHead, rows: n, inDim: hd, outDim: c.vocabSize, $0.baseAddress!) }
        return out
    }
}
