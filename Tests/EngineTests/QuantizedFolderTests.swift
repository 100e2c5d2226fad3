import TestFixtures
import Engine
import Foundation
import XCTest

/// `writeQuantizedFolder` (what `layerskip quantize` writes): the folder maps to exactly the logits
/// of quantise-on-load, and every way such a folder can be wrong is a named ModelError.
final class QuantizedFolderTests: XCTestCase {
    var temp: URL!

    override func setUpWithError() throws {
        temp = FileManager.default.temporaryDirectory.appendingPathComponent("layerskip-quantized-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: temp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: temp) }

    func testAQuantizedFolderLoadsToTheLogitsOfQuantizeOnLoad() throws {
        for name in Fixtures.models {
          for format in [WeightFormat.int8, .q4] {
            let onLoad = try LlamaModel(directory: Fixtures.directory(name), format: format)
            let folder = temp.appendingPathComponent("\(name)-\(format)")
            try onLoad.writeQuantizedFolder(to: folder)
            let mapped = try LlamaModel(directory: folder) // no format asked: the folder's own
            XCTAssertEqual(mapped.format, format)
            XCTAssertEqual(mapped.config.storedFormat, format)
            XCTAssertEqual(mapped.derivedByteCount, onLoad.derivedByteCount)
            XCTAssertTrue(FileManager.default.fileExists(atPath: folder.appendingPathComponent("tokenizer.json").path))
            for prompt in try Fixtures.expected(name).prompts {
                XCTAssertEqual(Fixtures.logits(mapped, prompt.ids), Fixtures.logits(onLoad, prompt.ids), "\(name) \(format): mapped vs quantised at load")
            }
          }
        }
    }

    /// A quantised folder holds no 16-bit weights, so its cheaper draft copies are requantised
    /// from its own values: their logits stray from the folder's own about as far as a q4 model's
    /// stray from the stored model's (a layout or scale mix-up would be far off). That 4-bit drafts
    /// there still reproduce its decoding token for token is QuantizedWeightsTests' third case.
    func testDraftsOnAQuantizedFolderAreRequantisedFromItsValues() throws {
        for name in Fixtures.models {
            let folder = temp.appendingPathComponent("\(name)-drafts")
            try LlamaModel(directory: Fixtures.directory(name), format: .int8).writeQuantizedFolder(to: folder)
            let model = try LlamaModel(directory: folder)
            let prompt = try Fixtures.expected(name).prompts[0].ids
            let exact = Fixtures.logits(model, prompt), draft = Fixtures.logits(model, prompt, precision: .q4)
            let stored = Fixtures.logits(try LlamaModel(directory: Fixtures.directory(name)), prompt)
            let q4 = Fixtures.logits(try LlamaModel(directory: Fixtures.directory(name), format: .q4), prompt)
            func meanError(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) }.reduce(0, +) / Float(a.count) }
            XCTAssertGreaterThan(meanError(exact, draft), 0)
            XCTAssertLessThan(meanError(exact, draft), 2 * meanError(stored, q4), name)
            XCTAssertEqual(model.quantizedHead(.q4).format, .q4)
        }
    }

    func expectError(_ kind: ModelError.Kind, _ fragments: [String], line: UInt = #line, _ body: () throws -> Void) {
        do {
            try body()
            XCTFail("expected a \(kind) error", line: line)
        } catch let error as ModelError {
            XCTAssertEqual(error.kind, kind, "\(error)", line: line)
            for f in fragments { XCTAssertTrue(error.description.contains(f), "\"\(error)\" lacks \"\(f)\"", line: line) }
        } catch {
            XCTFail("unexpected error \(error)", line: line)
        }
    }

    /// Rewrites `folder`'s model.safetensors without `drop` and with `patch` applied to one tensor's bytes.
    func rewrite(_ folder: URL, drop: String? = nil, patch: (name: String, apply: (UnsafeMutableRawBufferPointer) -> Void)? = nil) throws {
        let url = folder.appendingPathComponent("model.safetensors")
        var tensors: [(SafetensorsWriter.Entry, [UInt8])] = []
        do {
            let file = try SafetensorsFile(path: url.path)
            for (name, view) in file.tensors.sorted(by: { $0.key < $1.key }) where name != drop {
                var bytes = [UInt8](UnsafeRawBufferPointer(start: view.data, count: view.elementCount * view.dtype.byteSize))
                if let patch, patch.name == name { bytes.withUnsafeMutableBytes { patch.apply($0) } }
                tensors.append((.init(name: name, dtype: view.dtype, shape: view.shape), bytes))
            }
        }
        let writer = try SafetensorsWriter(url: url, entries: tensors.map(\.0))
        for (_, bytes) in tensors { try bytes.withUnsafeBytes { try writer.writeRaw($0) } }
        try writer.finish()
    }

    func editConfig(_ folder: URL, _ edit: (inout [String: Any]) -> Void) throws {
        let url = folder.appendingPathComponent("config.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        edit(&json)
        try JSONSerialization.data(withJSONObject: json).write(to: url)
    }

    func testMalformedQuantizedFoldersAreNamedErrors() throws {
        let source = Fixtures.directory("tiny-bytelevel-gqa-f32")
        let good = temp.appendingPathComponent("good")
        try LlamaModel(directory: source, format: .int8).writeQuantizedFolder(to: good)
        var n = 0
        func variant() throws -> URL {
            n += 1
            let dir = temp.appendingPathComponent("bad\(n)")
            try FileManager.default.copyItem(at: good, to: dir)
            return dir
        }
        let scale = "model.layers.0.self_attn.q_proj.weight_scale"

        let marker = try variant()
        try editConfig(marker) { $0["layerskip_weights"] = "int4" }
        expectError(.invalidField, ["config.json", "layerskip_weights", "expected \"int8\" or \"q4\"", "int4"]) { _ = try LlamaModel(directory: marker) }

        let missing = try variant()
        try rewrite(missing, drop: scale)
        expectError(.missingTensor, [scale]) { _ = try LlamaModel(directory: missing) }

        let nan = try variant()
        try rewrite(nan, patch: (scale, { $0.storeBytes(of: Float.nan, toByteOffset: 8, as: Float.self) }))
        expectError(.invalidField, [scale, "row 2", "finite positive"]) { _ = try LlamaModel(directory: nan) }

        let unmarked = try variant()
        try editConfig(unmarked) { $0["layerskip_weights"] = nil }
        expectError(.unsupportedDType, ["self_attn.q_proj.weight", "I8", "layerskip quantize"]) { _ = try LlamaModel(directory: unmarked) }

        // The marker over the source's own f32 tensors.
        let stored = try variant()
        try FileManager.default.removeItem(at: stored.appendingPathComponent("model.safetensors"))
        try FileManager.default.copyItem(at: source.appendingPathComponent("model.safetensors"), to: stored.appendingPathComponent("model.safetensors"))
        expectError(.unsupportedDType, ["self_attn.q_proj.weight", "F32 here: expected I8", "layerskip_weights: int8"]) {
            _ = try LlamaModel(directory: stored)
        }
        XCTAssertNoThrow(try LlamaModel(directory: good))
    }

    /// The q4 layout's own ways to be wrong: scales of the wrong dtype or shape, a non-finite
    /// block scale, values of the int8 layout under a q4 marker, and a q4 folder marked int8.
    func testMalformedQ4FoldersAreNamedErrors() throws {
        let source = Fixtures.directory("tiny-bytelevel-gqa-f32")
        let good = temp.appendingPathComponent("good-q4"), int8 = temp.appendingPathComponent("good-int8")
        try LlamaModel(directory: source, format: .q4).writeQuantizedFolder(to: good)
        try LlamaModel(directory: source, format: .int8).writeQuantizedFolder(to: int8)
        let c = try LlamaModel(directory: good).config
        let blocks = (c.hiddenSize + 31) / 32
        var n = 0
        func variant(_ from: URL) throws -> URL {
            n += 1
            let dir = temp.appendingPathComponent("bad-q4-\(n)")
            try FileManager.default.copyItem(at: from, to: dir)
            return dir
        }
        let weight = "model.layers.0.mlp.up_proj.weight", scale = weight + "_scale"

        let inf = try variant(good)
        try rewrite(inf, patch: (scale, { $0.storeBytes(of: Float16.infinity.bitPattern, toByteOffset: 2 * (blocks + 1), as: UInt16.self) }))
        expectError(.invalidField, [scale, "row 1, block 1", "finite"]) { _ = try LlamaModel(directory: inf) }

        let missing = try variant(good)
        try rewrite(missing, drop: scale)
        expectError(.missingTensor, [scale, "\(c.intermediateSize), \(blocks)"]) { _ = try LlamaModel(directory: missing) }

        let int8Values = try variant(int8)
        try editConfig(int8Values) { $0["layerskip_weights"] = "q4" }
        expectError(.unsupportedDType, ["self_attn.q_proj.weight", "I8 here: expected U8", "layerskip_weights: q4"]) {
            _ = try LlamaModel(directory: int8Values)
        }

        let markedInt8 = try variant(good)
        try editConfig(markedInt8) { $0["layerskip_weights"] = "int8" }
        expectError(.unsupportedDType, ["self_attn.q_proj.weight", "U8 here: expected I8", "layerskip_weights: int8"]) {
            _ = try LlamaModel(directory: markedInt8)
        }

        let unmarked = try variant(good)
        try editConfig(unmarked) { $0["layerskip_weights"] = nil }
        expectError(.unsupportedDType, ["U8", "layerskip quantize"]) { _ = try LlamaModel(directory: unmarked) }
        XCTAssertNoThrow(try LlamaModel(directory: good))
    }
}
