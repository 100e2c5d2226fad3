import CKernels
import Foundation
import InputFiles

/// A weight matrix (rows, cols), row-major, in its stored dtype, pointing into a mapped file.
// `@unchecked Sendable`: `data` points into a read-only mapping (see TensorView).
public struct WeightMatrix: @unchecked Sendable {
    public let dtype: DType
    public let rows: Int
    public let cols: Int
    public let data: UnsafeRawPointer

    public var byteCount: Int { rows * cols * dtype.byteSize }

    /// Row r as f32 (an embedding lookup).
    func copyRow(_ r: Int, into dst: UnsafeMutablePointer<Float>) {
        ck_to_f32(dtype.kernelType, data + r * cols * dtype.byteSize, dst, cols)
    }

    /// Drops the resident pages of rows `band` of this matrix's mapping (the whole pages inside them): once a
    /// quantised copy is made they are not read again, except for embedding rows, which fault back
    /// in from the file as they are looked up (the mapping is private and read-only).
    func releasePages(rows band: Range<Int>) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let rowBytes = cols * dtype.byteSize
        let first = Int(bitPattern: data) + band.lowerBound * rowBytes, last = Int(bitPattern: data) + band.upperBound * rowBytes
        let start = (first + page - 1) / page * page
        let end = last / page * page
        guard end > start, let p = UnsafeMutableRawPointer(bitPattern: start) else { return }
        _ = madvise(p, end - start, Int32(MADV_DONTNEED))
    }
}

/// The tensors of one decoder layer. Shapes are (out, in) as PyTorch's nn.Linear stores them.
public struct LayerWeights: Sendable {
    public let inputNorm: WeightMatrix      /// (1, hidden)
    public let q: WeightMatrix              /// (heads*headDim, hidden)
    public let k: WeightMatrix              /// (kvHeads*headDim, hidden)
    public let v: WeightMatrix              /// (kvHeads*headDim, hidden)
    public let o: WeightMatrix              /// (hidden, heads*headDim)
    public let postAttentionNorm: WeightMatrix  /// (1, hidden)
    public let gate: WeightMatrix           /// (intermediate, hidden)
    public let up: WeightMatrix             /// (intermediate, hidden)
    public let down: WeightMatrix           /// (hidden, intermediate)
}

/// All tensors of a Llama model, resolved by name across one file or the shards of an index.
// `@unchecked Sendable`: read-only views into mappings that `files` keeps alive.
public struct ModelWeights: @unchecked Sendable {
    public let embedding: WeightMatrix      /// (vocab, hidden)
    public let layers: [LayerWeights]
    public let finalNorm: WeightMatrix      /// (1, hidden)
    public let lmHead: WeightMatrix         /// (vocab, hidden); the embedding itself when tied
    /// A quantised folder's matrices (config `layerskip_weights: int8` or `q4`), copied out; the
    /// matrices above are then views of the mapped values that only these read, and the head is
    /// always its own tensor (`lm_head.weight`), tied or not. nil for a stored folder.
    let quantized: (layers: [QuantizedLayer], head: QuantizedMatrix)?
    /// Keeps the mappings alive for as long as the views above are used.
    let files: [SafetensorsFile]

    public var byteCount: Int {
        var total = embedding.byteCount + finalNorm.byteCount
        if lmHead.data != embedding.data { total += lmHead.byteCount }
        for l in layers {
            total += [l.inputNorm, l.q, l.k, l.v, l.o, l.postAttentionNorm, l.gate, l.up, l.down].reduce(0) { $0 + $1.byteCount }
        }
        return total
    }

    public static func load(directory: URL, config: ModelConfig) throws -> ModelWeights {
        let files = try openFiles(directory: directory)
        var byName: [String: TensorView] = [:]
        var unsupported: [String: (String, String)] = [:]
        for f in files {
            for (name, view) in f.tensors { byName[name] = view }
            for (name, dtype) in f.unsupported { unsupported[name] = (dtype, f.path) }
        }
        let where_ = files.count == 1 ? files[0].path : directory.appendingPathComponent("model.safetensors.index.json").path

        let folderFormat = config.storedFormat
        /// A tensor of the expected shape; `dtypes` the ones allowed (the float ones unless given).
        func tensor(_ name: String, _ shape: [Int], dtypes: Set<DType> = [.f32, .f16, .bf16]) throws -> WeightMatrix {
            guard let view = byName[name] else {
                if let (dtype, file) = unsupported[name] {
                    throw ModelError(.unsupportedDType, file: file, subject: name, "dtype \(dtype) is not supported (expected \(Self.names(dtypes)))")
                }
                throw ModelError(.missingTensor, file: where_, subject: name, "tensor not found (expected shape \(shape))")
            }
            guard dtypes.contains(view.dtype) else {
                let why = !view.dtype.isFloat && folderFormat == .stored
                    ? " (I8 and U8 matrices belong to a folder written by layerskip quantize, whose config.json says layerskip_weights: int8 or q4)"
                    : folderFormat != .stored ? " (config.json says layerskip_weights: \(folderFormat.rawValue))" : ""
                throw ModelError(.unsupportedDType, file: view.file, subject: name, "dtype \(view.dtype.rawValue) here: expected \(Self.names(dtypes))\(why)")
            }
            guard view.shape == shape else {
                throw ModelError(.wrongShape, file: view.file, subject: name, "expected shape \(shape), found \(view.shape)")
            }
            return WeightMatrix(dtype: view.dtype, rows: shape[0], cols: shape.count > 1 ? shape[1] : 1, data: view.data)
        }
        /// A matrix: as stored, or in a quantised folder its values and `…_scale` scales in the
        /// layout of `QuantizedMatrix.layout` (int8: I8 values, F32 row scales, finite and positive
        /// as ck_q8_quantize_rows writes them; q4: U8 nibbles, F16 block scales, finite).
        var quantizedMatrices: [String: QuantizedMatrix] = [:]
        func matrix(_ name: String, _ shape: [Int]) throws -> WeightMatrix {
            guard folderFormat != .stored else { return try tensor(name, shape) }
            let l = QuantizedMatrix.layout(folderFormat, rows: shape[0], cols: shape[1])
            let q4 = folderFormat == .q4
            let m = try tensor(name, l.valueShape, dtypes: [q4 ? .u8 : .i8])
            let scaleName = name + "_scale"
            let scales = try tensor(scaleName, l.scaleShape, dtypes: [q4 ? .f16 : .f32])
            let count = l.scaleShape.reduce(1, *)
            for i in 0..<count {
                let value = q4 ? Float(Float16(bitPattern: scales.data.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
                    : scales.data.loadUnaligned(fromByteOffset: 4 * i, as: Float.self)
                guard value.isFinite, q4 || value > 0 else {
                    let at = q4 ? "row \(i / l.scaleShape[1]), block \(i % l.scaleShape[1])" : "row \(i)"
                    throw ModelError(.invalidField, file: byName[scaleName]!.file, subject: scaleName,
                                     "\(at): scale \(value) (expected a finite\(q4 ? "" : " positive") number)")
                }
            }
            quantizedMatrices[name] = QuantizedMatrix(format: folderFormat, rows: shape[0], cols: shape[1], copying: m, scales: scales.data)
            scales.releasePages(rows: 0..<scales.rows)
            return WeightMatrix(dtype: m.dtype, rows: shape[0], cols: shape[1], data: m.data)
        }
        func vector(_ name: String, _ n: Int) throws -> WeightMatrix {
            let m = try tensor(name, [n])
            return WeightMatrix(dtype: m.dtype, rows: 1, cols: n, data: m.data)
        }

        let c = config
        let embedding = try tensor("model.embed_tokens.weight", [c.vocabSize, c.hiddenSize])
        var layers: [LayerWeights] = []
        for l in 0..<c.layerCount {
            let p = "model.layers.\(l)."
            layers.append(LayerWeights(
                inputNorm: try vector(p + "input_layernorm.weight", c.hiddenSize),
                q: try matrix(p + "self_attn.q_proj.weight", [c.qDim, c.hiddenSize]),
                k: try matrix(p + "self_attn.k_proj.weight", [c.kvDim, c.hiddenSize]),
                v: try matrix(p + "self_attn.v_proj.weight", [c.kvDim, c.hiddenSize]),
                o: try matrix(p + "self_attn.o_proj.weight", [c.hiddenSize, c.qDim]),
                postAttentionNorm: try vector(p + "post_attention_layernorm.weight", c.hiddenSize),
                gate: try matrix(p + "mlp.gate_proj.weight", [c.intermediateSize, c.hiddenSize]),
                up: try matrix(p + "mlp.up_proj.weight", [c.intermediateSize, c.hiddenSize]),
                down: try matrix(p + "mlp.down_proj.weight", [c.hiddenSize, c.intermediateSize])))
        }
        let finalNorm = try vector("model.norm.weight", c.hiddenSize)
        // A quantised folder always carries the head's quantised copy; the embedding stays as stored.
        let lmHead = c.tieWordEmbeddings && folderFormat == .stored ? embedding : try matrix("lm_head.weight", [c.vocabSize, c.hiddenSize])
        var quantized: (layers: [QuantizedLayer], head: QuantizedMatrix)?
        if folderFormat != .stored {
            let q = quantizedMatrices
            quantized = ((0..<c.layerCount).map { l in
                let p = "model.layers.\(l)."
                return QuantizedLayer(q: q[p + "self_attn.q_proj.weight"]!, k: q[p + "self_attn.k_proj.weight"]!,
                                      v: q[p + "self_attn.v_proj.weight"]!, o: q[p + "self_attn.o_proj.weight"]!,
                                      gate: q[p + "mlp.gate_proj.weight"]!, up: q[p + "mlp.up_proj.weight"]!,
                                      down: q[p + "mlp.down_proj.weight"]!)
            }, q["lm_head.weight"]!)
        }
        return ModelWeights(embedding: embedding, layers: layers, finalNorm: finalNorm, lmHead: lmHead, quantized: quantized, files: files)
    }

    static func names(_ dtypes: Set<DType>) -> String {
        let sorted = [DType.f32, .f16, .bf16, .i8, .u8].filter { dtypes.contains($0) }.map(\.rawValue)
        return sorted.count == 1 ? sorted[0] : sorted.dropLast().joined(separator: ", ") + " or " + sorted.last!
    }

    /// `model.safetensors`, or the shards that `model.safetensors.index.json` names.
    static func openFiles(directory: URL) throws -> [SafetensorsFile] {
        let single = directory.appendingPathComponent("model.safetensors")
        let index = directory.appendingPathComponent("model.safetensors.index.json")
        let fm = FileManager.default
        if fm.fileExists(atPath: single.path) {
            return [try SafetensorsFile(path: single.path)]
        }
        guard fm.fileExists(atPath: index.path) else {
            throw ModelError(.missingFile, file: single.path,
                             "no weights: expected model.safetensors or model.safetensors.index.json in \(directory.path)")
        }
        let data: Data
        // Real index files are tens of KB (one line per tensor).
        do { data = try RegularFile.read(index.path, limit: 16 << 20) } catch {
            throw ModelError(.unreadableFile, file: index.path, error.reason)
        }
        do { try data.withUnsafeBytes { try JSONScanner.validate($0) } } catch let error as JSONScanError {
            throw ModelError(.invalidJSON, file: index.path, "not valid JSON: \(error)")
        }
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw ModelError(.invalidJSON, file: index.path, "not valid JSON (\(error.localizedDescription))")
        }
        guard let json = object as? [String: Any], let map = json["weight_map"] as? [String: Any] else {
            throw ModelError(.missingField, file: index.path, subject: "weight_map", "missing (expected an object of tensor name → shard file)")
        }
        var shardNames: [String] = []
        for (tensor, file) in map {
            guard let name = file as? String else {
                throw ModelError(.invalidField, file: index.path, subject: "weight_map.\(tensor)", "expected a file name, found \(JSONFields.describe(file))")
            }
            guard !name.isEmpty, !name.contains("/"), !name.hasPrefix("."), !name.contains("\0") else {
                throw ModelError(.invalidField, file: index.path, subject: "weight_map.\(tensor)", "expected a file name inside the model folder, found \"\(name)\"")
            }
            if !shardNames.contains(name) { shardNames.append(name) }
        }
        return try shardNames.sorted().map { try SafetensorsFile(path: directory.appendingPathComponent($0).path) }
    }
}
