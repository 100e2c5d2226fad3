import Foundation
import Tokenization
import XCTest
@testable import Training

final class BPETrainerTests: XCTestCase {
    func trainedTokenizer(vocabSize: Int, run: String = "a") throws -> (Tokenizer, BPETrainer.Result, URL) {
        let dir = TrainingFixtures.temporaryDirectory("bpe-\(run)")
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let corpus = TrainingFixtures.writeCorpus(in: dir, files: 10)
        var trainer = BPETrainer(vocabSize: vocabSize)
        for file in try FileManager.default.contentsOfDirectory(atPath: corpus.path).sorted() {
            trainer.add(text: try String(contentsOf: corpus.appendingPathComponent(file), encoding: .utf8))
        }
        let result = trainer.train()
        let url = dir.appendingPathComponent("tokenizer.json")
        try trainer.tokenizerJSON(result).write(to: url)
        return (try Tokenizer(contentsOf: url), result, url)
    }

    /// The written tokenizer.json loads in the Tokenization module, encodes with the learned merges,
    /// and decodes every text (ASCII, Unicode, odd whitespace) back unchanged.
    func testTrainedTokenizerRoundTrips() throws {
        let (tok, result, _) = try trainedTokenizer(vocabSize: 320)
        XCTAssertEqual(result.vocabulary.count, 320)
        XCTAssertEqual(tok.vocabularySize, 320)
        XCTAssertEqual(tok.id(of: "<|begin_of_text|>"), 0)
        XCTAssertEqual(tok.id(of: "<|end_of_text|>"), 1)
        XCTAssertTrue(tok.isSpecial(1))
        let code = "def get_alpha(beta):\n    return beta + 3\n"
        let ids = try tok.encode(code, addSpecialTokens: false)
        // Merges learned from the corpus compress its own text well below one token per byte.
        XCTAssertLessThan(ids.count, code.utf8.count / 2, "\(ids)")
        try XCTAssertEqual(tok.encode(code, addSpecialTokens: true), [0] + ids)
        for text in [code, "héllo wörld — 数字 123456 ☃\n\n\t  x = 1  \r\n", "<|end_of_text|>tail", ""] {
            try XCTAssertEqual(tok.decode(tok.encode(text, addSpecialTokens: false)), text)
        }
        // Every learned token is reachable: encoding a token's own text yields that token.
        var reached = 0
        for id in 258..<320 {
            let text = tok.decode([id])
            if try tok.encode(text, addSpecialTokens: false) == [id] { reached += 1 }
        }
        XCTAssertGreaterThan(reached, 40)
    }

    func testTrainingIsDeterministic() throws {
        let (_, a, urlA) = try trainedTokenizer(vocabSize: 300, run: "first")
        let (_, b, urlB) = try trainedTokenizer(vocabSize: 300, run: "second")
        XCTAssertNotEqual(urlA, urlB)
        XCTAssertEqual(a.vocabulary, b.vocabulary)
        XCTAssertEqual(try Data(contentsOf: urlA), try Data(contentsOf: urlB))
    }
}
