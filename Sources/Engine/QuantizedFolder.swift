import Foundation
import InputFiles

/// A folder the loader reads with no quantisation step (`layerskip quantize`), the layout:
///   config.json        the source's, plus `"layerskip_weights": "int8"` (or `"q4"`)
///   tokenizer files    copied (tokenizer.json and, when present, tokenizer_config.json,
///                      special_tokens_map.json, generation_config.json)
///   model.safetensors  `model.embed_tokens.weight` and every norm in the stored dtype; every layer
///                      matrix `….weight` as I8 (rows, cols) with `….weight_scale` F32 (rows): row r
///                      ≈ scale[r] · values[r] (ck_q8.h); for q4, `….weight` U8 (rows, ⌈cols/64⌉·32)
///                      nibbles with `….weight_scale` F16 (rows, ⌈cols/32⌉), in ck_q4.h's layout; `lm_head.weight` + `lm_head.weight_scale` always, also for
///                      tied embeddings. `__metadata__` repeats the marker.
/// The quantised values are exactly those quantise-on-load computes, so both load to the same logits.
extension LlamaModel {
    public func writeQuantizedFolder(to out: URL) throws {
        precondition(format != .stored, "only a quantised model has quantised copies to write")
        let fm = FileManager.default
        try fm.createDirectory(at: out, withIntermediateDirectories: true)
        let configURL = directory.appendingPathComponent("config.json")
        let data: Data
        do { data = try RegularFile.read(configURL.path, limit: 16 << 20) } catch {
            throw ModelError(.unreadableFile, file: configURL.path, error.reason)
        }
        guard var json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ModelError(.invalidJSON, file: configURL.path, "not a JSON object")
        }
        json["layerskip_weights"] = format.rawValue
        try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys])
            .write(to: out.appendingPathComponent("config.json"), options: .atomic)
        for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"] {
            let source = directory.appendingPathComponent(name)
            guard fm.fileExists(atPath: source.path) else { continue }
            let copy: Data
            do { copy = try RegularFile.read(source.path, limit: 1 << 30) } catch {
                throw ModelError(.unreadableFile, file: source.path, error.reason)
            }
            try copy.write(to: out.appendingPathComponent(name), options: .atomic)
        }

        // The tensors, each with the bytes to write (stored ones raw from the mapping).
        var tensors: [(entry: SafetensorsWriter.Entry, bytes: UnsafeRawBufferPointer)] = []
        func stored(_ name: String, _ m: WeightMatrix, vector: Bool = false) {
            tensors.append((.init(name: name, dtype: m.dtype, shape: vector ? [m.cols] : [m.rows, m.cols]),
                            UnsafeRawBufferPointer(start: m.data, count: m.byteCount)))
        }
        func quantized(_ name: String, _ q: QuantizedMatrix) {
            let l = QuantizedMatrix.layout(q.format, rows: q.rows, cols: q.cols)
            tensors.append((.init(name: name, dtype: q.format == .q4 ? .u8 : .i8, shape: l.valueShape),
                            UnsafeRawBufferPointer(start: q.values, count: l.valueBytes)))
            tensors.append((.init(name: name + "_scale", dtype: q.format == .q4 ? .f16 : .f32, shape: l.scaleShape),
                            UnsafeRawBufferPointer(start: q.scales, count: l.scaleBytes)))
        }
        stored("model.embed_tokens.weight", weights.embedding)
        for l in 0..<layerCount {
            let p = "model.layers.\(l).", w = weights.layers[l], q = quantizedLayer(l, format)
            stored(p + "input_layernorm.weight", w.inputNorm, vector: true)
            quantized(p + "self_attn.q_proj.weight", q.q)
            quantized(p + "self_attn.k_proj.weight", q.k)
            quantized(p + "self_attn.v_proj.weight", q.v)
            quantized(p + "self_attn.o_proj.weight", q.o)
            stored(p + "post_attention_layernorm.weight", w.postAttentionNorm, vector: true)
            quantized(p + "mlp.gate_proj.weight", q.gate)
            quantized(p + "mlp.up_proj.weight", q.up)
            quantized(p + "mlp.down_proj.weight", q.down)
        }
        stored("model.norm.weight", weights.finalNorm, vector: true)
        quantized("lm_head.weight", quantizedHead(format))
        let writer = try SafetensorsWriter(url: out.appendingPathComponent("model.safetensors"), entries: tensors.map(\.entry),
                                           metadata: ["format": "pt", "layerskip_weights": format.rawValue])
        for t in tensors { try writer.writeRaw(t.bytes) }
        try writer.finish()
    }
}
