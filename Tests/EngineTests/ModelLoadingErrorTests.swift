import TestFixtures
import Engine
import Foundation
import XCTest

/// Every way a model folder can be wrong gives a ModelError naming the file, the tensor or field,
/// and what was expected versus found — never a crash.
final class ModelLoadingErrorTests: XCTestCase {
    var temp: URL!

    override func setUpWithError() throws {
        temp = FileManager.default.temporaryDirectory.appendingPathComponent("layerskip-load-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: temp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: temp)
    }

    /// A copy of the f32 fixture model that a test may break.
    func copyOfFixture(_ name: String = "tiny-bytelevel-gqa-f32") throws -> URL {
        let dir = temp.appendingPathComponent(name)
        try FileManager.default.copyItem(at: Fixtures.directory(name), to: dir)
        return dir
    }

    func expectError(_ kind: ModelError.Kind, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line,
                     _ body: () throws -> Void) {
        do {
            try body()
            XCTFail("expected a \(kind) error", file: file, line: line)
        } catch let error as ModelError {
            XCTAssertEqual(error.kind, kind, "\(error)", file: file, line: line)
            for f in fragments {
                XCTAssertTrue(error.description.contains(f), "\"\(error)\" lacks \"\(f)\"", file: file, line: line)
            }
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
        }
    }

    func editConfig(_ dir: URL, _ edit: (inout [String: Any]) -> Void) throws {
        let url = dir.appendingPathComponent("config.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        edit(&json)
        try JSONSerialization.data(withJSONObject: json).write(to: url)
    }

    // MARK: folder and config

    func testMissingFolder() {
        expectError(.missingFile, ["no-such-model", "model folder not found"]) {
            _ = try LlamaModel(directory: temp.appendingPathComponent("no-such-model"))
        }
    }

    func testMissingConfig() throws {
        let dir = try copyOfFixture()
        try FileManager.default.removeItem(at: dir.appendingPathComponent("config.json"))
        expectError(.missingFile, ["config.json", "not found"]) { _ = try LlamaModel(directory: dir) }
    }

    func testConfigNotJSON() throws {
        let dir = try copyOfFixture()
        try Data("{ hidden_size: 64".utf8).write(to: dir.appendingPathComponent("config.json"))
        expectError(.invalidJSON, ["config.json", "not valid JSON"]) { _ = try LlamaModel(directory: dir) }
    }

    func testNotLlama() throws {
        let dir = try copyOfFixture()
        try editConfig(dir) { $0["model_type"] = "gpt2"; $0["architectures"] = ["GPT2LMHeadModel"] }
        expectError(.notLlama, ["config.json", "model_type", "Llama", "gpt2"]) { _ = try LlamaModel(directory: dir) }
    }

    func testMissingAndMistypedFields() throws {
        let dir = try copyOfFixture()
        try editConfig(dir) { $0.removeValue(forKey: "hidden_size") }
        expectError(.missingField, ["config.json", "hidden_size", "missing"]) { _ = try LlamaModel(directory: dir) }
        try editConfig(dir) { $0["hidden_size"] = "64" }
        expectError(.invalidField, ["hidden_size", "expected an integer", "string \"64\""]) { _ = try LlamaModel(directory: dir) }
        try editConfig(dir) { $0["hidden_size"] = 64; $0["num_key_value_heads"] = 3 }
        expectError(.invalidField, ["num_key_value_heads", "must divide"]) { _ = try LlamaModel(directory: dir) }
    }

    func testUnsupportedRoPEAndActivation() throws {
        let dir = try copyOfFixture()
        try editConfig(dir) { $0["rope_parameters"] = ["rope_theta": 10000.0, "rope_type": "yarn", "factor": 4.0] }
        expectError(.unsupported, ["rope_parameters.rope_type", "yarn"]) { _ = try LlamaModel(directory: dir) }
        try editConfig(dir) { $0["rope_parameters"] = ["rope_theta": 10000.0]; $0["hidden_act"] = "gelu" }
        expectError(.unsupported, ["hidden_act", "gelu"]) { _ = try LlamaModel(directory: dir) }
    }

    // MARK: weights

    func testMissingWeights() throws {
        let dir = try copyOfFixture()
        try FileManager.default.removeItem(at: dir.appendingPathComponent("model.safetensors"))
        expectError(.missingFile, ["model.safetensors", "no weights"]) { _ = try LlamaModel(directory: dir) }
    }

    func testTruncatedWeights() throws {
        let dir = try copyOfFixture()
        let url = dir.appendingPathComponent("model.safetensors")
        let data = try Data(contentsOf: url)
        try data.prefix(data.count - 1000).write(to: url)
        expectError(.truncated, ["model.safetensors", "truncated"]) { _ = try LlamaModel(directory: dir) }
        try data.prefix(5).write(to: url)
        expectError(.truncated, ["model.safetensors", "5 bytes"]) { _ = try LlamaModel(directory: dir) }
    }

    /// Found by fuzz-safetensors (Fuzz/Corpus/fuzz-safetensors/regression-header-length-2pow63.safetensors):
    /// a length prefix of 2^63 or more trapped converting to Int. Every length from the file is
    /// checked against the format's cap and the file size before any arithmetic.
    func testHeaderLengthsThatOverflowedAreErrors() throws {
        for length: UInt64 in [1 << 63, UInt64.max, 0xA200_0000_0000_00B7, 100_000_001, 0, 1] {
            XCTAssertThrowsError(try SafetensorsHeader.headerLength(prefix: length.littleEndian, fileSize: 1 << 20, file: "x.safetensors"), "\(length)") {
                guard let e = $0 as? ModelError else { return XCTFail("\($0)") }
                XCTAssertEqual(e.kind, .corruptHeader)
                XCTAssertTrue(e.message.contains("header length \(length)"), e.message)
            }
        }
        XCTAssertEqual(try SafetensorsHeader.headerLength(prefix: UInt64(16).littleEndian, fileSize: 24, file: "x"), 16)
        XCTAssertThrowsError(try SafetensorsHeader.headerLength(prefix: UInt64(17).littleEndian, fileSize: 24, file: "x"))
    }

    /// What the format forbids, from the parser directly (the CLI tests cover the same through the binary).
    func testHeaderLayoutRules() throws {
        func parse(_ header: String, dataSize: Int) throws -> [SafetensorsEntry] {
            try Data(header.utf8).withUnsafeBytes { try SafetensorsHeader.parse($0, dataSize: dataSize, file: "h") }
        }
        let ok = try parse(#"{"b":{"dtype":"F16","shape":[2],"data_offsets":[4,8]},"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"__metadata__":{"k":"v"}}   "#, dataSize: 8)
        XCTAssertEqual(ok.map(\.name), ["a", "b"])
        XCTAssertEqual(ok.map(\.shape), [[], [2]])
        let bad: [(String, Int, String)] = [
            (#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, 8, "cover 4 bytes of a 8-byte data section"),
            (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, 4, "needs 8 bytes"),
            (#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#, 4, "not in order"),
            (#"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}}"#, 0, "more elements than fit in 64 bits"),
            (#"{"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}}"#, 0, "more than 2^63"),
            (#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}"#, 0, "non-negative integers"),
            (#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#, 8, "[begin, end]"),
            (#"{"a":{"dtype":"F32","shape":[1],"dtype":"F16","data_offsets":[0,4]}}"#, 4, "appears twice"),
            (#"{"__metadata__":{"k":1}}"#, 0, "expected a string value"),
            (#"{"__metadata__":{},"__metadata__":{}}"#, 0, "appears twice"),
            (#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}} x"#, 4, "unexpected data after"),
            (#"["a"]"#, 0, "expected an object"),
        ]
        for (header, size, needle) in bad {
            XCTAssertThrowsError(try parse(header, dataSize: size), header) { XCTAssertTrue("\($0)".contains(needle), "\(header): \($0)") }
        }
    }

    func testCorruptHeader() throws {
        let dir = try copyOfFixture()
        let url = dir.appendingPathComponent("model.safetensors")
        var data = try Data(contentsOf: url)
        // A header length far beyond the file.
        var huge = UInt64(1 << 40).littleEndian
        data.replaceSubrange(0..<8, with: Data(bytes: &huge, count: 8))
        try data.write(to: url)
        expectError(.corruptHeader, ["model.safetensors", "header length"]) { _ = try LlamaModel(directory: dir) }
        // Garbage where the JSON should be.
        var bytes = [UInt8](try Data(contentsOf: Fixtures.directory("tiny-bytelevel-gqa-f32").appendingPathComponent("model.safetensors")))
        for i in 8..<40 { bytes[i] = 0xFF }
        try Data(bytes).write(to: url)
        expectError(.corruptHeader, ["model.safetensors", "not valid JSON"]) { _ = try LlamaModel(directory: dir) }
    }

    /// Writes a model whose tensors are those of `config`, with one tensor changed by `alter`.
    func writeModel(_ config: ModelConfig, alter: (inout [SafetensorsWriter.Entry]) -> Void) throws -> URL {
        let dir = temp.appendingPathComponent("written")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try StandInModel.configJSON(config, dtype: .f32).write(to: dir.appendingPathComponent("config.json"))
        var entries: [SafetensorsWriter.Entry] = [.init(name: "model.embed_tokens.weight", dtype: .f32, shape: [config.vocabSize, config.hiddenSize])]
        for l in 0..<config.layerCount {
            let p = "model.layers.\(l)."
            entries += [
                .init(name: p + "input_layernorm.weight", dtype: .f32, shape: [config.hiddenSize]),
                .init(name: p + "self_attn.q_proj.weight", dtype: .f32, shape: [config.qDim, config.hiddenSize]),
                .init(name: p + "self_attn.k_proj.weight", dtype: .f32, shape: [config.kvDim, config.hiddenSize]),
                .init(name: p + "self_attn.v_proj.weight", dtype: .f32, shape: [config.kvDim, config.hiddenSize]),
                .init(name: p + "self_attn.o_proj.weight", dtype: .f32, shape: [config.hiddenSize, config.qDim]),
                .init(name: p + "post_attention_layernorm.weight", dtype: .f32, shape: [config.hiddenSize]),
                .init(name: p + "mlp.gate_proj.weight", dtype: .f32, shape: [config.intermediateSize, config.hiddenSize]),
                .init(name: p + "mlp.up_proj.weight", dtype: .f32, shape: [config.intermediateSize, config.hiddenSize]),
                .init(name: p + "mlp.down_proj.weight", dtype: .f32, shape: [config.hiddenSize, config.intermediateSize]),
            ]
        }
        entries.append(.init(name: "model.norm.weight", dtype: .f32, shape: [config.hiddenSize]))
        alter(&entries)
        let writer = try SafetensorsWriter(url: dir.appendingPathComponent("model.safetensors"), entries: entries)
        for e in entries { try writer.write([Float](repeating: 0.01, count: e.shape.reduce(1, *))) }
        try writer.finish()
        return dir
    }

    func testMissingTensor() throws {
        let dir = try writeModel(StandInShape.tiny.config) { $0.removeAll { $0.name == "model.layers.2.mlp.up_proj.weight" } }
        expectError(.missingTensor, ["model.safetensors", "model.layers.2.mlp.up_proj.weight", "[160, 64]"]) { _ = try LlamaModel(directory: dir) }
    }

    func testWrongShape() throws {
        let dir = try writeModel(StandInShape.tiny.config) { entries in
            let i = entries.firstIndex { $0.name == "model.layers.1.self_attn.k_proj.weight" }!
            entries[i].shape = [64, 64]
        }
        expectError(.wrongShape, ["model.layers.1.self_attn.k_proj.weight", "expected shape [32, 64]", "found [64, 64]"]) {
            _ = try LlamaModel(directory: dir)
        }
    }

    func testUnsupportedDType() throws {
        // Write a valid file, then rename the dtype of one tensor in its header to I32 (same width).
        let dir = try writeModel(StandInShape.tiny.config) { _ in }
        let url = dir.appendingPathComponent("model.safetensors")
        var data = try Data(contentsOf: url)
        let headerLength = Int(data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        var header = String(decoding: data[8..<(8 + headerLength)], as: UTF8.self)
        header = header.replacingOccurrences(of: "\"model.norm.weight\":{\"dtype\":\"F32\"", with: "\"model.norm.weight\":{\"dtype\":\"I32\"")
        data.replaceSubrange(8..<(8 + headerLength), with: Data(header.utf8))
        try data.write(to: url)
        expectError(.unsupportedDType, ["model.norm.weight", "I32", "F32, F16 or BF16"]) { _ = try LlamaModel(directory: dir) }
    }

    func testShardIndexNamingAMissingShard() throws {
        let dir = try copyOfFixture("tiny-spm-mha-bf16-sharded")
        try FileManager.default.removeItem(at: dir.appendingPathComponent("model-00002-of-00002.safetensors"))
        expectError(.missingFile, ["model-00002-of-00002.safetensors", "cannot open"]) { _ = try LlamaModel(directory: dir) }
    }

    func testMissingLMHeadWhenUntied() throws {
        var config = StandInShape.tiny.config
        config.tieWordEmbeddings = false
        let dir = try writeModel(config) { _ in }
        expectError(.missingTensor, ["lm_head.weight"]) { _ = try LlamaModel(directory: dir) }
    }
}
