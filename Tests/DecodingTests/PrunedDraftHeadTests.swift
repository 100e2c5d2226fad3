import TestFixtures
import Decoding
import Engine
import Foundation
import SelfSpeculativePlugin
import Tokenization
import XCTest

/// `draft_vocab: K`: early-exit drafts score only K tokens through a copy of their LM-head rows;
/// verification scores every token, so the output is the full model's whatever K is.
final class PrunedDraftHeadTests: XCTestCase {
    func spec(_ e: Int, _ d: Int, vocab: Int?, precision: String? = nil, drafter: String = "early-exit") -> StrategySpec {
        var options: [String: ConfigValue] = ["exit_layer": .int(e), "speculations": .int(d), "drafter": .string(drafter)]
        if let vocab { options["draft_vocab"] = .int(vocab) }
        if let precision { options["draft_precision"] = .string(precision) }
        return StrategySpec(name: "self-speculative", options: options)
    }

    func context(_ name: String) throws -> StrategyContext {
        StrategyContext(tokenizer: try Tokenizer(contentsOf: Fixtures.directory(name).appendingPathComponent("tokenizer.json")))
    }

    /// Greedy self-speculation with a pruned draft head equals autoregressive decoding (the
    /// fixtures' transformers tokens) for every exit, several d and K, exact and int8 head copies;
    /// and K really changes the drafts: small K accepts differently from the full head.
    func testPrunedDraftHeadNeverChangesGreedyOutput() throws {
        for name in Fixtures.models {
            let model = try LlamaModel(directory: Fixtures.directory(name))
            let ctx = try context(name)
            let V = model.config.vocabSize
            var counts: [String: (drafted: Int, accepted: Int)] = [:]
            for prompt in try Fixtures.expected(name).prompts {
                let reference = try XCTUnwrap(prompt.greedy["autoregressive"]?.tokens)
                let n = reference.count
                for vocab in [nil, 16, 64, V / 2] {
                    for precision in vocab == V / 2 ? [nil] : [nil, "int8-head"] {
                        for e in 1..<model.layerCount {
                            for d in [1, 3, 6] {
                                let got = try generate(model, spec(e, d, vocab: vocab, precision: precision), prompt: prompt.ids,
                                                       maxNewTokens: n, minNewTokens: n, context: ctx)
                                XCTAssertEqual(got.tokens, reference, "\(name) K=\(vocab ?? V) \(precision ?? "exact") E=\(e) d=\(d)")
                                let key = "\(vocab ?? V) \(precision ?? "exact")"
                                counts[key, default: (0, 0)].drafted += got.metrics.drafted ?? 0
                                counts[key, default: (0, 0)].accepted += got.metrics.accepted ?? 0
                            }
                        }
                    }
                }
                // Hybrid drafting (lookup first) with a pruned head is exact too.
                let hybrid = try generate(model, spec(1, 4, vocab: 16, drafter: "hybrid"), prompt: prompt.ids, maxNewTokens: n,
                                          minNewTokens: n, context: ctx)
                XCTAssertEqual(hybrid.tokens, reference, "\(name) hybrid K=16")
            }
            for precision in ["exact", "int8-head"] {
                let full = try XCTUnwrap(counts["\(V) \(precision)"]), small = try XCTUnwrap(counts["16 \(precision)"])
                XCTAssertGreaterThan(full.accepted, 0)
                XCTAssertNotEqual(small.accepted * full.drafted, full.accepted * small.drafted,
                                  "\(name) \(precision): K=16 drafts must differ from the full head's (\(small) vs \(full))")
            }
        }
    }

    /// K = vocab_size reads a pruned copy of every row: its draft logits are the unpruned head's bit
    /// for bit, and generation (greedy and seeded sampling) gives the same tokens and the same
    /// drafted and accepted counts.
    func testAPrunedHeadOfTheWholeVocabularyIsTheUnprunedPathBitForBit() throws {
        for name in Fixtures.models {
            let model = try LlamaModel(directory: Fixtures.directory(name))
            let ctx = try context(name)
            let V = model.config.vocabSize
            let prompt = try Fixtures.expected(name).prompts[1].ids
            for precision in [nil, "int8-head", "q4-head"] {
                let strategy = try registry.make(spec(2, 3, vocab: V, precision: precision), model: model, context: ctx)
                let vocabulary = try XCTUnwrap((strategy as? SelfSpeculativeStrategy)?.draftVocabulary)
                XCTAssertEqual(vocabulary.tokens, Array(0..<V))
                // The draft rows: the state leaving layer E − 1 at every prompt position, through both heads.
                let h = model.makeActivations(capacity: prompt.count)
                model.embed(prompt, into: h)
                model.forward(h, layers: 0..<2, positions: 0..<prompt.count, cache: model.makeCache(capacity: prompt.count))
                let head = WeightPrecision(rawValue: String((precision ?? "exact").prefix { $0 != "-" }))!
                for r in 0..<prompt.count {
                    let unpruned = model.makeLogits(), pruned = model.makeLogits()
                    model.exitLogits(h, rows: r..<(r + 1), into: unpruned, head: head)
                    model.exitLogits(h, rows: r..<(r + 1), into: pruned, head: head, vocabulary: vocabulary)
                    XCTAssertEqual(pruned.row(0).map(\.bitPattern), unpruned.row(0).map(\.bitPattern), "\(name) \(head) row \(r)")
                }
                for sampling in [SamplingParameters.greedy, SamplingParameters(temperature: 1, topK: 0, topP: 1, seed: 5)] {
                    for (e, d) in [(1, 2), (2, 3), (model.layerCount - 1, 5)] {
                        let a = try generate(model, spec(e, d, vocab: nil, precision: precision), prompt: prompt, maxNewTokens: 24,
                                             sampling: sampling, context: ctx)
                        let b = try generate(model, spec(e, d, vocab: V, precision: precision), prompt: prompt, maxNewTokens: 24,
                                             sampling: sampling, context: ctx)
                        let label = "\(name) \(precision ?? "exact") E=\(e) d=\(d) greedy \(sampling.isGreedy)"
                        XCTAssertEqual(b.tokens, a.tokens, label)
                        XCTAssertEqual(b.metrics.drafted, a.metrics.drafted, label)
                        XCTAssertEqual(b.metrics.accepted, a.metrics.accepted, label)
                        XCTAssertGreaterThan(a.metrics.drafted ?? 0, 0, label)
                    }
                }
            }
        }
    }

    /// The merge-order ranking by hand on the fixtures' tokenizers and Llama 3's: the alphabet (bytes)
    /// first, then merge products by their first merge, added tokens last; and the K tokens always
    /// hold the end-of-sequence ids.
    func testMergeRankingOfFixtureTokenizers() throws {
        // Byte level: ids 2...257 are the 256 byte characters, 0 and 1 the special tokens.
        let byteLevel = try Tokenizer(contentsOf: Fixtures.directory("tiny-bytelevel-gqa-f32").appendingPathComponent("tokenizer.json"))
        let b = byteLevel.mergeRanking
        XCTAssertEqual(b.count, 512)
        XCTAssertEqual(Array(b.prefix(256)), Array(2...257))
        XCTAssertEqual(b[256], byteLevel.id(of: "ĠĠ"), "the first merge's product (Ġ Ġ)")
        XCTAssertEqual(b[257], byteLevel.id(of: "ĠĠĠĠ"), "the second merge's (ĠĠ ĠĠ)")
        XCTAssertEqual(Array(b.suffix(2)), [0, 1])
        XCTAssertEqual(Set(b), Set(0..<512))

        // SentencePiece with byte fallback: the "<0xNN>" tokens (ids 3...258, listed as special added
        // tokens in this file) are the alphabet; <unk> <s> </s> come last.
        let spm = try Tokenizer(contentsOf: Fixtures.directory("tiny-spm-mha-bf16-sharded").appendingPathComponent("tokenizer.json"))
        let s = spm.mergeRanking
        XCTAssertEqual(s.count, 600)
        XCTAssertEqual(Array(s.prefix(256)), Array(3...258))
        XCTAssertEqual(s[256], spm.id(of: "\t"), "then the other single characters, by id")
        XCTAssertEqual(s[366], spm.id(of: "▁▁"), "after the 110 of them, the first merge's product")
        XCTAssertEqual(s[367], spm.id(of: "▁▁▁▁"))
        XCTAssertEqual(Array(s.suffix(3)), [0, 1, 2])
        let config = try ModelConfig.load(from: Fixtures.directory("tiny-spm-mha-bf16-sharded").appendingPathComponent("config.json"))
        XCTAssertEqual(config.eosTokenIds, [2])
        let top = StrategyContext(tokenizer: spm).ranking(for: config).top(16, always: config.eosTokenIds)
        XCTAssertEqual(top, [2] + Array(3...17), "</s> ranks last but is always kept; the 15 first bytes fill K")

        // Llama 3: bytes 0..<256, then 'ĠĠ' (merge 0), 'ĠĠĠĠ' (merge 1: Ġ ĠĠĠ; merge 2 makes it again), …;
        // the special tokens last: 128000..<128256, and this file's <|endoftext|> at 128256, which the
        // model has no row for (dropped from a model's ranking). A token that several merges produce
        // ranks by the first.
        let llama3 = try Tokenizer(contentsOf: Fixtures.root.appendingPathComponent("tokenizers/llama3/tokenizer.json"))
        let l = llama3.mergeRanking
        XCTAssertEqual(l.count, 128_257)
        XCTAssertEqual(Array(l.prefix(256)), Array(0..<256))
        XCTAssertEqual(l[256], llama3.id(of: "ĠĠ"))
        XCTAssertEqual(l[257], llama3.id(of: "ĠĠĠĠ"))
        XCTAssertEqual(Set(l).count, l.count, "merges 1 and 2 both make ĠĠĠĠ: it is listed once")
        XCTAssertEqual(Array(l.suffix(257)), Array(128_000...128_256))
        let shape = StandInShape.llama32_1b.config
        XCTAssertEqual(shape.vocabSize, 128_256)
        let ranking = StrategyContext(tokenizer: llama3).ranking(for: shape)
        XCTAssertEqual(ranking.tokens, Array(l.dropLast()))
        let eos = [128_001, 128_008, 128_009]
        let k = ranking.top(8192, always: eos)
        XCTAssertEqual(k.count, 8192)
        XCTAssertTrue(eos.allSatisfy(k.contains))
        XCTAssertEqual(Array(k.prefix(256)), Array(0..<256))
    }

    /// Sampling with a pruned draft head draws from exactly the full model's distribution (the χ²
    /// test of SamplingLosslessTests, its exact distribution and bound). With K = 16 by merge order
    /// (none of which the full model samples here: every draft is rejected, the residual does all);
    /// with K = 16 from an explicit ranking (the `tune` path) led by the tokens it does sample, so
    /// drafts from a q that is zero outside the K are kept and rejected; and with K = 2 tokens: the end of sequence
    /// (banned here) and one token `outside` that no continuation of the full model's support
    /// holds: then every draft is that token and none is ever kept. A draft from outside the K
    /// tokens could be kept, so acceptance 0 with drafts made shows they never leave the K.
    func testSamplingWithAPrunedDraftHeadMatchesTheFullModelDistribution() throws {
        let name = "tiny-bytelevel-gqa-f32"
        let model = try LlamaModel(directory: Fixtures.directory(name))
        let prompt = try Fixtures.expected(name).prompts[1].ids
        let support = ExactSamplingCheck()
        let exact = support.exactDistribution(model, prompt: prompt)
        let (df, bound) = support.chiSquareBound(exact)
        let seen = Set(exact.keys.joined())
        let eos = model.config.eosTokenIds
        let outside = try XCTUnwrap((0..<model.config.vocabSize).first { !seen.contains($0) && !eos.contains($0) })
        let never = StrategyContext(tokenRanking: try TokenRanking([outside], vocabularySize: model.config.vocabSize))
        // As a corpus count would rank them: the tokens the full model samples here first.
        let counted = StrategyContext(tokenRanking: try TokenRanking(seen.sorted(), vocabularySize: model.config.vocabSize))
        XCTAssertLessThan(seen.count, 15, "K = 16 holds them all")
        let samples = 2500
        XCTAssertTrue(seen.isDisjoint(with: try context(name).ranking(for: model.config).top(16, always: eos)),
                      "the merge order's first 16 are bytes the full model does not sample here")
        for (label, spec, ctx, vocabularySize) in [("merge order", spec(1, 2, vocab: 16), try context(name), 16),
                                                   ("counted", spec(2, 3, vocab: 16, precision: "int8-head"), counted, 16),
                                                   ("never sampled", spec(2, 3, vocab: 2), never, 2)] {
            let strategy = try registry.make(spec, model: model, context: ctx)
            let vocabulary = try XCTUnwrap((strategy as? SelfSpeculativeStrategy)?.draftVocabulary)
            XCTAssertEqual(vocabulary.count, vocabularySize)
            XCTAssertTrue(eos.allSatisfy(vocabulary.tokens.contains))
            var counts: [[Int]: Int] = [:]
            var drafted = 0, accepted = 0
            for seed in 0..<samples {
                var params = support.sampling
                params.seed = UInt64(seed) &* 7919 &+ 11
                let run = try generate(model, spec, prompt: prompt, maxNewTokens: support.steps, minNewTokens: support.steps,
                                       sampling: params, context: ctx)
                counts[run.tokens, default: 0] += 1
                drafted += run.metrics.drafted ?? 0
                accepted += run.metrics.accepted ?? 0
            }
            let chi = support.chiSquare(counts, exact, samples: samples)
            XCTAssertLessThan(chi, bound, "\(label): chi-square \(chi), df \(df), \(accepted)/\(drafted) drafts kept")
            // Three tokens leave room for one draft a sample.
            XCTAssertEqual(drafted, samples, label)
            if seen.isDisjoint(with: vocabulary.tokens) {
                XCTAssertEqual(accepted, 0, "\(label): drafts from the K tokens only, none of which the full model samples")
            } else {
                XCTAssertGreaterThan(accepted, samples / 10, label)
                XCTAssertLessThan(accepted, samples, label)
            }
        }
    }

    /// Sequences whose drafts read different heads (pruned or not, different K, int8) share the
    /// passes of one decode loop: each gets the drafts, and so the drafted and accepted counts, of a
    /// run of its own (the engine packs only rows of the same head copy into one product), and the
    /// full model's tokens.
    func testABatchMixingDraftHeadsGivesEachSequenceItsOwnDrafts() throws {
        for name in Fixtures.models {
            let model = try LlamaModel(directory: Fixtures.directory(name))
            let ctx = try context(name)
            let prompts = try Fixtures.expected(name).prompts
            var specs: [StrategySpec] = []
            for (vocab, precision) in [(16, nil), (nil, nil), (64, "int8-head"), (16, nil), (nil, "int8-head"), (64, nil)] as [(Int?, String?)] {
                var s = spec(2, 3, vocab: vocab, precision: precision)
                s.options["adaptive"] = .bool(false)
                specs.append(s)
            }
            let n = 20
            var alone: [(tokens: [Int], drafted: Int?, accepted: Int?)] = []
            for (i, s) in specs.enumerated() {
                let run = try generate(model, s, prompt: prompts[i % prompts.count].ids, maxNewTokens: n, minNewTokens: n, context: ctx)
                alone.append((run.tokens, run.metrics.drafted, run.metrics.accepted))
            }
            let loop = DecodeLoop(model: model, caches: KVCachePool(config: model.config, budget: 1 << 26), maxBatch: specs.count)
            var together: [Int: (tokens: [Int], drafted: Int?, accepted: Int?)] = [:]
            for (i, s) in specs.enumerated() {
                let request = GenerationRequest(prompt: prompts[i % prompts.count].ids, maxNewTokens: n, minNewTokens: n,
                                                eosTokenIds: Set(model.config.eosTokenIds))
                let output = GenerationOutput(request: request, tokenizer: nil)
                loop.submit(request, strategy: try registry.make(s, model: model, context: ctx), output: output) {
                    together[i] = (output.tokens, $0.metrics?.drafted, $0.metrics?.accepted)
                }
            }
            loop.run()
            for i in specs.indices {
                let got = try XCTUnwrap(together[i])
                XCTAssertEqual(got.tokens, alone[i].tokens, "\(name) sequence \(i)")
                XCTAssertEqual(got.drafted, alone[i].drafted, "\(name) sequence \(i)")
                XCTAssertEqual(got.accepted, alone[i].accepted, "\(name) sequence \(i) \(specs[i])")
            }
            XCTAssertNotEqual(alone[0].accepted, alone[1].accepted, "\(name): the heads' drafts differ, or the test proves nothing")
        }
    }
}
