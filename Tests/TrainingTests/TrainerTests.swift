import Engine
import Tokenization
import XCTest
@testable import Training

final class TrainerTests: XCTestCase {
    func testFewStepsLowerValidationLoss() throws {
        let dir = TrainingFixtures.temporaryDirectory("loss")
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let corpus = TrainingFixtures.writeCorpus(in: dir)
        let config = try TrainingConfig(mapping: TrainingFixtures.mapping(corpus: corpus, output: dir.appendingPathComponent("out")), file: "test.yaml")
        let trainer = try Trainer(config: config)
        XCTAssertFalse(trainer.corpus.validationFiles.isEmpty)
        let before = try XCTUnwrap(trainer.validate())
        var last: StepReport?
        for _ in 0..<30 { last = trainer.trainStep() }
        let after = try XCTUnwrap(trainer.validate())
        XCTAssertEqual(last?.step, 30)
        for l in 0..<3 {
            XCTAssertLessThan(after[l], before[l] - 1.0, "exit \(l): validation loss \(before[l]) → \(after[l])")
        }
    }

    /// A run stopped after step 5 and resumed from its checkpoint in a new trainer ends with the same
    /// bits (parameters, AdamW moments, data position) as an uninterrupted run.
    func testKilledAndResumedRunIsBitIdentical() throws {
        let dir = TrainingFixtures.temporaryDirectory("resume")
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let corpus = TrainingFixtures.writeCorpus(in: dir)
        let mapping = TrainingFixtures.mapping(corpus: corpus, output: dir.appendingPathComponent("out"), steps: 12,
                                               extra: ["training": ["accumulation": 2],
                                                       "layerskip": ["dropout_time": "exp", "curriculum": "gradual"]])
        let config = try TrainingConfig(mapping: mapping, file: "test.yaml")
        let straight = try Trainer(config: config)
        for _ in 0..<12 { straight.trainStep() }

        let first = try Trainer(config: config)
        for _ in 0..<5 { first.trainStep() }
        let checkpoint = dir.appendingPathComponent("checkpoint")
        try first.saveCheckpoint(to: checkpoint)
        first.trainStep()   // work after the checkpoint that the "kill" loses

        let resumed = try Trainer(config: config)
        try resumed.loadCheckpoint(from: checkpoint)
        XCTAssertEqual(resumed.step, 5)
        for _ in 5..<12 { resumed.trainStep() }

        XCTAssertEqual(resumed.step, straight.step)
        XCTAssertEqual(resumed.dataPositions, straight.dataPositions)
        XCTAssertEqual(resumed.optimizer.updates, straight.optimizer.updates)
        for (a, b, name) in [(resumed.params, straight.params, "params"), (resumed.optimizer.m, straight.optimizer.m, "m"),
                             (resumed.optimizer.v, straight.optimizer.v, "v")] {
            XCTAssertEqual(memcmp(a.pointer, b.pointer, a.count * 4), 0, "\(name) differ after resuming")
        }
        // And the checkpoint refuses another model.
        var other = mapping
        other["model"] = ["hidden_size": 16, "intermediate_size": 32, "num_layers": 3, "num_heads": 2]
        let wrong = try Trainer(config: TrainingConfig(mapping: other, file: "test.yaml"))
        XCTAssertThrowsError(try wrong.loadCheckpoint(from: checkpoint)) { error in
            XCTAssertTrue("\(error)".contains("state.json"), "\(error)")
        }
    }

    /// The exported folder loads in the engine, whose logits at every exit equal the trainer's.
    func testEngineReproducesTrainerLogits() throws {
        for tied in [true, false] {
            let dir = TrainingFixtures.temporaryDirectory("export-\(tied)")
            addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
            let corpus = TrainingFixtures.writeCorpus(in: dir, files: 6)
            let out = dir.appendingPathComponent("model")
            let mapping = TrainingFixtures.mapping(corpus: corpus, output: out, steps: 4,
                                                   extra: ["model": ["tie_embeddings": tied], "data": ["validation_fraction": 0.0]])
            let trainer = try Trainer(config: TrainingConfig(mapping: mapping, file: "test.yaml"))
            for _ in 0..<4 { trainer.trainStep() }
            try trainer.export(to: out, dtype: .f32)

            let model = try LlamaModel(directory: out)
            XCTAssertEqual(model.config.vocabSize, trainer.modelConfig.vocabSize)
            XCTAssertEqual(model.config.tieWordEmbeddings, tied)
            let tokens = try trainer.tokenizer.encode("def get_alpha(beta):\n    return beta + 3\n", addSpecialTokens: true)
            let n = tokens.count
            XCTAssertLessThanOrEqual(n, 32)
            for exit in 1...3 {
                let h = model.makeActivations(capacity: n)
                let cache = model.makeCache(capacity: 64)
                model.embed(tokens, into: h)
                model.forward(h, layers: 0..<exit, positions: 0..<n, cache: cache)
                let logits = model.makeLogits(capacity: n)
                model.exitLogits(h, rows: 0..<n, into: logits)
                let mine = trainer.logits(tokens: tokens.map(Int32.init), after: exit - 1)
                var worst: Float = 0, scale: Float = 0
                for i in 0..<n * model.config.vocabSize {
                    worst = max(worst, abs(mine[i] - logits.values[i]))
                    scale = max(scale, abs(mine[i]))
                }
                XCTAssertGreaterThan(scale, 0.1)
                XCTAssertLessThan(worst, 1e-4 * max(scale, 1), "tied \(tied), exit \(exit): max |Δlogit| \(worst)")
            }
        }
    }

    /// A run started from an exported model begins with exactly its weights (an f32 export round-trips),
    /// whatever its own seed; a folder of another architecture is refused naming the field.
    func testWarmStartBeginsWithTheModelsWeights() throws {
        let dir = TrainingFixtures.temporaryDirectory("warm-start")
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let corpus = TrainingFixtures.writeCorpus(in: dir, files: 6)
        let out = dir.appendingPathComponent("model")
        let first = try Trainer(config: TrainingConfig(mapping: TrainingFixtures.mapping(corpus: corpus, output: out, steps: 3), file: "a.yaml"))
        for _ in 0..<3 { first.trainStep() }
        try first.export(to: out, dtype: .f32)

        var mapping = TrainingFixtures.mapping(corpus: corpus, output: dir.appendingPathComponent("second"), steps: 3)
        mapping["training"] = (mapping["training"] as! [String: Any]).merging(["seed": 77]) { $1 }
        let second = try Trainer(config: TrainingConfig(mapping: mapping, file: "b.yaml"))
        let count = second.layout.count
        XCTAssertNotEqual(Array(UnsafeBufferPointer(start: second.params.pointer, count: count)),
                          Array(UnsafeBufferPointer(start: first.params.pointer, count: count)), "another seed starts elsewhere")
        try second.initialize(from: LlamaModel(directory: out), folder: out.path)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: second.params.pointer, count: count)),
                       Array(UnsafeBufferPointer(start: first.params.pointer, count: count)))
        XCTAssertEqual(second.step, 0, "a warm start is a new run: its own schedule from step 0")

        let wider = TrainingFixtures.mapping(corpus: corpus, output: dir.appendingPathComponent("third"), steps: 3,
                                             extra: ["model": ["intermediate_size": 96]])
        let third = try Trainer(config: TrainingConfig(mapping: wider, file: "c.yaml"))
        XCTAssertThrowsError(try third.initialize(from: LlamaModel(directory: out), folder: out.path)) { error in
            XCTAssertTrue("\(error)".contains("intermediate_size") && "\(error)".contains("64") && "\(error)".contains("96"), "\(error)")
        }
    }

    func testConfigErrorsNameFileAndField() {
        let dir = TrainingFixtures.temporaryDirectory("config")
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let corpus = TrainingFixtures.writeCorpus(in: dir, files: 2)
        var m = TrainingFixtures.mapping(corpus: corpus, output: dir)
        m["training"] = ["batch_sise": 4]
        XCTAssertThrowsError(try TrainingConfig(mapping: m, file: "run.yaml")) { error in
            XCTAssertEqual("\(error)", "run.yaml: training.batch_sise: unknown key")
        }
        m = TrainingFixtures.mapping(corpus: corpus, output: dir, extra: ["layerskip": ["curriculum": "sideways"]])
        XCTAssertThrowsError(try TrainingConfig(mapping: m, file: "run.yaml")) { error in
            XCTAssertTrue("\(error)".hasPrefix("run.yaml: layerskip.curriculum: expected one of none, rotational, gradual"), "\(error)")
        }
        m = TrainingFixtures.mapping(corpus: corpus, output: dir, extra: ["layerskip": ["exit_distillation": 1.5]])
        XCTAssertThrowsError(try TrainingConfig(mapping: m, file: "run.yaml")) { error in
            XCTAssertTrue("\(error)".hasPrefix("run.yaml: layerskip.exit_distillation: must be in [0, 1], found 1.5"), "\(error)")
        }
        m = TrainingFixtures.mapping(corpus: corpus, output: dir, extra: ["data": ["paths": ["/nonexistent/*.py"]]])
        let config = try! TrainingConfig(mapping: m, file: "run.yaml")
        XCTAssertThrowsError(try Trainer(config: config)) { error in
            XCTAssertTrue("\(error)".contains("data.paths"), "\(error)")
        }
    }

    /// The split is by file and stable; a stream resumed at a saved position continues identically.
    func testCorpusSplitAndStreamPositions() throws {
        let dir = TrainingFixtures.temporaryDirectory("corpus")
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let corpus = TrainingFixtures.writeCorpus(in: dir, files: 40)
        let a = try Corpus(paths: [corpus.path], extensions: [".py"], validationFraction: 0.25)
        let b = try Corpus(paths: [corpus.path + "/*.py"], validationFraction: 0.25)
        XCTAssertEqual(a.trainFiles.count + a.validationFiles.count, 40)
        XCTAssertEqual(Set(a.validationFiles), Set(b.validationFiles))
        XCTAssertTrue(Set(a.trainFiles).isDisjoint(with: a.validationFiles))
        XCTAssertFalse(a.validationFiles.isEmpty)

        let tok = try Tokenizer(contentsOf: URL(fileURLWithPath: TrainingFixtures.tokenizer))
        let s1 = TokenStream(files: a.trainFiles, tokenizer: tok, separator: 1, shuffleSeed: 9)
        var seqs: [[Int32]] = []
        // Enough sequences to cross several files and an epoch boundary.
        for _ in 0..<400 { seqs.append(s1.nextSequence(length: 40)) }
        XCTAssertGreaterThan(s1.position.epoch, 0)
        for i in 1..<seqs.count { XCTAssertEqual(seqs[i - 1].last, seqs[i].first) }
        let s2 = TokenStream(files: a.trainFiles, tokenizer: tok, separator: 1, shuffleSeed: 9)
        for _ in 0..<150 { _ = s2.nextSequence(length: 40) }
        let s3 = TokenStream(files: a.trainFiles, tokenizer: tok, separator: 1, shuffleSeed: 9)
        s3.seek(to: s2.position)
        for i in 150..<400 { XCTAssertEqual(s3.nextSequence(length: 40), seqs[i]) }
    }
}

final class LaneTests: XCTestCase {
    /// The lanes of a batch split each epoch's files between them: no file is read by two lanes.
    func testLanesPartitionTheFiles() throws {
        let dir = TrainingFixtures.temporaryDirectory("lanes")
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let corpus = try Corpus(paths: [TrainingFixtures.writeCorpus(in: dir, files: 12).path], validationFraction: 0)
        let tok = try Tokenizer(contentsOf: URL(fileURLWithPath: TrainingFixtures.tokenizer))
        var seen: [Set<String>] = []
        for lane in 0..<3 {
            let s = TokenStream(files: corpus.trainFiles, tokenizer: tok, separator: 1, shuffleSeed: 4, lane: lane, lanes: 3)
            var files = Set<String>()
            while s.position.epoch == 0 {
                files.insert(s.currentFile)
                _ = s.nextSequence(length: 16)
            }
            XCTAssertEqual(files.count, 4, "lane \(lane)")
            seen.append(files)
        }
        XCTAssertEqual(seen[0].union(seen[1]).union(seen[2]).count, 12)
    }
}
