import CKernels
import Engine
import Foundation

extension ParameterLayout {
    /// Copies a loaded model's weights (any stored dtype) into a flat f32 buffer of this layout,
    /// so evaluation can run the sgemm network over a folder the engine loaded.
    public func load(_ weights: ModelWeights, into p: UnsafeMutablePointer<Float>) {
        func copy(_ w: WeightMatrix, _ offset: Int) {
            let kind: ck_dtype = w.dtype == .f32 ? CK_F32 : (w.dtype == .f16 ? CK_F16 : CK_BF16)
            ck_to_f32(kind, w.data, p + offset, w.rows * w.cols)
        }
        copy(weights.embedding, embedding)
        for (w, o) in zip(weights.layers, layers) {
            copy(w.inputNorm, o.inputNorm); copy(w.q, o.q); copy(w.k, o.k); copy(w.v, o.v); copy(w.o, o.o)
            copy(w.postAttentionNorm, o.postNorm); copy(w.gate, o.gate); copy(w.up, o.up); copy(w.down, o.down)
        }
        copy(weights.finalNorm, finalNorm)
        if !config.tieWordEmbeddings { copy(weights.lmHead, lmHead) }
    }
}

extension Network where S == Float {
    /// After a forward `run`: for every row, the exit after layer l's cross-entropy against the
    /// target and its top-1 token. ce, top: (N) each.
    func exitStatistics(after l: Int, params p: UnsafePointer<Float>, ce: inout [Double], top: inout [Int32]) {
        let c = config, n = rows, hd = c.hiddenSize, vocab = c.vocabSize
        rmsnormForward(output(of: l).pointer, gain: p + layout.finalNorm, rows: n, dim: hd, eps: Float(c.rmsNormEps),
                       normalized: headNormed.pointer, rstd: headRstd.pointer, out: headIn.pointer)
        var start = 0
        while start < n {
            let m = min(headChunk, n - start)
            linearForward(headIn.pointer + start * hd, p + layout.lmHead, rows: m, inDim: hd, outDim: vocab, logits.pointer)
            for r in 0..<m {
                let row = logits.pointer + r * vocab
                top[start + r] = Int32(ck_argmax(row, Int32(vocab)))
                let targetLogit = row[Int(targets[start + r])]
                ce[start + r] = Double(Float.softmax(row, vocab, scale: 1) - targetLogit)
            }
            start += m
        }
    }
}
