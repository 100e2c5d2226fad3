import Foundation
import XCTest

final class GenerateAndTokenizeCLITests: XCTestCase {
    let models = ["tiny-bytelevel-gqa-f32", "tiny-spm-mha-bf16-sharded"]

    func testGenerateJSONMatchesTransformersGreedyAndEarlyExit() throws {
        for name in models {
            let dir = CLI.fixtures.appendingPathComponent(name).path
            let expected = try CLI.expected(name)
            let prompts = expected["prompts"] as! [[String: Any]]
            let exits = expected["exit_layers"] as! [Int]
            for prompt in prompts.prefix(2) {
                let text = prompt["text"] as! String
                let greedy = prompt["greedy"] as! [String: Any]
                var cases: [([String], String)] = [([], "autoregressive")]
                cases += exits.map { (["--exit-layer", "\($0)"], "early_exit_\($0)") }
                for (extra, key) in cases {
                    let reference = greedy[key] as! [Int]
                    let r = try CLI.run(["generate", "--model", dir, "--max-new-tokens", "\(reference.count)",
                                         "--min-new-tokens", "\(reference.count)", "--json"] + extra + [text])
                    XCTAssertEqual(r.status, 0, r.stderr)
                    let json = try XCTUnwrap(r.json, r.stdout)
                    XCTAssertEqual(json["tokens"] as? [Int], reference, "\(name) \(key) \(text.debugDescription)")
                    XCTAssertEqual(json["prompt_tokens"] as? Int, (prompt["ids"] as! [Int]).count)
                    XCTAssertNotNil(json["decode_ms"] as? Double)
                    XCTAssertNotNil(json["prefill_ms"] as? Double)
                }
            }
        }
    }

    /// Streaming output (text mode) is the same text the JSON mode reports.
    func testStreamedTextEqualsJSONText() throws {
        let dir = CLI.fixtures.appendingPathComponent("tiny-spm-mha-bf16-sharded").path
        let args = ["generate", "--model", dir, "--max-new-tokens", "20", "--min-new-tokens", "20", "Hello world"]
        let streamed = try CLI.run(args)
        let json = try CLI.run(args + ["--json"])
        XCTAssertEqual(streamed.status, 0, streamed.stderr)
        XCTAssertEqual(streamed.stdout, (json.json?["text"] as? String ?? "<no json>") + "\n")
        XCTAssertTrue(streamed.stderr.contains("decode"), streamed.stderr)
    }

    func testTokenizeMatchesFixtureCases() throws {
        for name in models {
            let dir = CLI.fixtures.appendingPathComponent(name).path
            let cases = try CLI.expected(name)["tokenizer_cases"] as! [[String: Any]]
            for c in cases.prefix(6) where !(c["text"] as! String).isEmpty {
                let text = c["text"] as! String
                let plain = try CLI.run(["tokenize", "--model", dir, "--no-special", "--json", text])
                XCTAssertEqual(plain.status, 0, plain.stderr)
                XCTAssertEqual(plain.json?["ids"] as? [Int], c["ids"] as? [Int], "\(name) \(text.debugDescription)")
                let special = try CLI.run(["tokenize", "--model", dir, text])
                XCTAssertEqual(special.stdout, (c["ids_with_special"] as! [Int]).map(String.init).joined(separator: " ") + "\n")
            }
        }
    }

    func testErrorsAndExitCodes() throws {
        let missing = try CLI.run(["generate", "--model", "/nonexistent/model", "hi"])
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.stderr.contains("/nonexistent/model"), missing.stderr)

        let dir = CLI.fixtures.appendingPathComponent("tiny-bytelevel-gqa-f32").path
        let badExit = try CLI.run(["generate", "--model", dir, "--exit-layer", "9", "hi"])
        XCTAssertEqual(badExit.status, 2)
        XCTAssertTrue(badExit.stderr.contains("--exit-layer: expected an integer in 1...4"), badExit.stderr)

        let badWeights = try CLI.run(["generate", "--model", dir, "--weights", "int4", "hi"])
        XCTAssertEqual(badWeights.status, 2)
        XCTAssertTrue(badWeights.stderr.contains("--weights: expected stored, int8, q4 or the checkpoint's dtype"), badWeights.stderr)
        let otherDType = try CLI.run(["generate", "--model", dir, "--weights", "bf16", "hi"])
        XCTAssertEqual(otherDType.status, 2)
        XCTAssertTrue(otherDType.stderr.contains("stores its weights as F32"), otherDType.stderr)
        let int8 = try CLI.run(["generate", "--model", dir, "--weights", "int8", "--max-new-tokens", "4", "--min-new-tokens", "4", "--json", "hi"])
        XCTAssertEqual(int8.status, 0, int8.stderr)
        XCTAssertEqual((int8.json?["tokens"] as? [Int])?.count, 4, int8.stdout)

        let usage = try CLI.run(["generate", "--model", dir, "--max-new-tokens", "0", "hi"])
        XCTAssertEqual(usage.status, 2)
        let unknown = try CLI.run(["frobnicate"])
        XCTAssertEqual(unknown.status, 2)

        let version = try CLI.run(["--version"])
        XCTAssertEqual(version.status, 0)
        XCTAssertTrue(version.stdout.contains("kernels"), version.stdout)
        let doctor = try CLI.run(["doctor", "--json"])
        XCTAssertEqual(doctor.status, 0)
        XCTAssertNotNil(doctor.json?["openblas_core"] as? String, doctor.stdout)
    }

    /// `--activations`: f32 is the default's numerics; bf16 runs where `doctor` lists it and is
    /// otherwise an error naming the option and what the CPU lacks.
    func testActivationsOption() throws {
        let dir = CLI.fixtures.appendingPathComponent("tiny-spm-mha-bf16-sharded").path
        let args = ["generate", "--model", dir, "--max-new-tokens", "6", "--min-new-tokens", "6", "--json", "hi"]
        let plain = try CLI.run(args)
        XCTAssertEqual(plain.status, 0, plain.stderr)
        let f32 = try CLI.run(args + ["--activations", "f32"])
        XCTAssertEqual(f32.status, 0, f32.stderr)
        XCTAssertEqual(f32.json?["tokens"] as? [Int], plain.json?["tokens"] as? [Int])
        let bad = try CLI.run(args + ["--activations", "f16"])
        XCTAssertEqual(bad.status, 2)
        XCTAssertTrue(bad.stderr.contains("--activations: expected f32 or bf16, found \"f16\""), bad.stderr)

        let doctor = try XCTUnwrap(try CLI.run(["doctor", "--json"]).json)
        let available = try XCTUnwrap(doctor["activations"] as? [String])
        let bf16 = try CLI.run(args + ["--activations", "bf16"])
        if available.contains("bf16") {
            XCTAssertEqual(bf16.status, 0, bf16.stderr)
            XCTAssertEqual((bf16.json?["tokens"] as? [Int])?.count, 6, bf16.stdout)
        } else {
            XCTAssertEqual(available, ["f32"])
            XCTAssertEqual(bf16.status, 2)
            XCTAssertTrue(bf16.stderr.contains("--activations bf16: bf16 activations need a CPU with AVX512_BF16"), bf16.stderr)
        }
    }

    /// `quantize` writes a folder that `generate` maps as it is: the same tokens as --weights int8
    /// (and q4).
    func testQuantizeWritesAFolderThatDecodesLikeInt8() throws {
        let source = CLI.fixtures.appendingPathComponent("tiny-spm-mha-bf16-sharded").path
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("layerskip-quantize-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        let q = try CLI.run(["quantize", "--model", source, "--out", out.path])
        XCTAssertEqual(q.status, 0, q.stderr)
        XCTAssertTrue(q.stderr.contains("quantised in"), q.stderr)
        let args = ["--max-new-tokens", "10", "--min-new-tokens", "10", "--json", "Hello world"]
        let mapped = try CLI.run(["generate", "--model", out.path] + args)
        let onLoad = try CLI.run(["generate", "--model", source, "--weights", "int8"] + args)
        XCTAssertEqual(mapped.status, 0, mapped.stderr)
        XCTAssertEqual(mapped.json?["tokens"] as? [Int], onLoad.json?["tokens"] as? [Int])
        XCTAssertNotNil(mapped.json?["tokens"] as? [Int], mapped.stdout)
        let again = try CLI.run(["quantize", "--model", source, "--out", out.path])
        XCTAssertEqual(again.status, 1)
        XCTAssertTrue(again.stderr.contains("exists and is not empty"), again.stderr)
        let badFormat = try CLI.run(["quantize", "--model", source, "--weights", "int4", "--out", out.path + "-x"])
        XCTAssertEqual(badFormat.status, 2)
        XCTAssertTrue(badFormat.stderr.contains("expected int8 or q4"), badFormat.stderr)

        let q4Out = out.path + "-q4"
        defer { try? FileManager.default.removeItem(atPath: q4Out) }
        let q4 = try CLI.run(["quantize", "--model", source, "--weights", "q4", "--out", q4Out])
        XCTAssertEqual(q4.status, 0, q4.stderr)
        let q4Mapped = try CLI.run(["generate", "--model", q4Out] + args)
        let q4OnLoad = try CLI.run(["generate", "--model", source, "--weights", "q4"] + args)
        XCTAssertEqual(q4Mapped.status, 0, q4Mapped.stderr)
        XCTAssertNotNil(q4Mapped.json?["tokens"] as? [Int], q4Mapped.stdout)
        XCTAssertEqual(q4Mapped.json?["tokens"] as? [Int], q4OnLoad.json?["tokens"] as? [Int])
    }

    func testInitModelWritesALoadableFolder() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("layerskip-init-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        let tokenizer = CLI.fixtures.appendingPathComponent("tiny-bytelevel-gqa-f32/tokenizer.json").path
        let r = try CLI.run(["init-model", "--shape", "tiny", "--dtype", "bf16", "--tokenizer", tokenizer,
                             "--out", out.path, "--seed", "3", "--late-scale", "0.02"])
        XCTAssertEqual(r.status, 0, r.stderr)
        for file in ["config.json", "model.safetensors", "tokenizer.json"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent(file).path), file)
        }
        let gen = try CLI.run(["generate", "--model", out.path, "--max-new-tokens", "5", "--min-new-tokens", "5", "--json", "x = 1"])
        XCTAssertEqual(gen.status, 0, gen.stderr)
        XCTAssertEqual((gen.json?["tokens"] as? [Int])?.count, 5)

        let bad = try CLI.run(["init-model", "--shape", "llama9-400b", "--tokenizer", tokenizer, "--out", out.path])
        XCTAssertEqual(bad.status, 2)
        XCTAssertTrue(bad.stderr.contains("llama3.2-1b"), bad.stderr)
    }
}

final class KernelSelectionCLITests: XCTestCase {
    /// CK_AVX512 chooses the matmul kernel set for the whole process, where the CPU has AVX-512.
    func testAVX512KernelsCanBeTurnedOnAndOff() throws {
        let plain = try CLI.run(["doctor", "--json"], removing: ["CK_AVX512"])
        let features = plain.json?["cpu_features"] as? [String] ?? []
        try XCTSkipUnless(["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"].allSatisfy(features.contains), "needs an AVX-512 CPU")
        let off = try CLI.run(["doctor", "--json"], environment: ["CK_AVX512": "0"])
        XCTAssertEqual(off.json?["kernels"] as? String, "avx2-fma-f16c", off.stdout)
        let on = try CLI.run(["doctor", "--json"], environment: ["CK_AVX512": "1"])
        XCTAssertEqual(on.json?["kernels"] as? String, "avx512-avx2-fma-f16c", on.stdout)
    }
}

final class OpenBLASSelectionCLITests: XCTestCase {
    /// When OpenBLAS reports a generic pre-AVX2 kernel set on an AVX2 machine, layerskip re-executes
    /// itself with OPENBLAS_CORETYPE set; a user's own OPENBLAS_CORETYPE is left alone.
    func testGenericKernelFallbackIsFixedByReexec() throws {
        let plain = try CLI.run(["doctor", "--json"])
        let features = plain.json?["cpu_features"] as? [String] ?? []
        try XCTSkipUnless(features.contains("avx2") && features.contains("fma"), "needs an AVX2 CPU")
        // The machine's own OPENBLAS_CORETYPE (some set one) would be the user's choice, left alone.
        let fixed = try CLI.run(["doctor", "--json"], environment: ["LAYERSKIP_TEST_OPENBLAS_CORENAME": "Prescott"], removing: ["OPENBLAS_CORETYPE"])
        XCTAssertEqual(fixed.status, 0, fixed.stderr)
        let source = fixed.json?["openblas_core_source"] as? String ?? ""
        XCTAssertTrue(source.contains("set by layerskip to"), source)
        let core = (fixed.json?["openblas_core"] as? String ?? "").lowercased()
        XCTAssertTrue(["haswell", "zen", "skylakex", "cooperlake"].contains(core), core)

        let user = try CLI.run(["doctor", "--json"], environment: ["OPENBLAS_CORETYPE": "Haswell", "LAYERSKIP_TEST_OPENBLAS_CORENAME": "Prescott"])
        XCTAssertEqual(user.json?["openblas_core"] as? String, "Haswell")
        XCTAssertTrue((user.json?["openblas_core_source"] as? String ?? "").contains("from the environment"))
    }
}
