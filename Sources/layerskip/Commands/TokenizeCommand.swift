import ArgumentParser
import Foundation
import Tokenization

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Print the token ids of a text (needs only the model folder's tokenizer.json).")

    @Option(help: "Model folder holding tokenizer.json, or the path of a tokenizer.json file.")
    var model: String

    @Flag(help: "Leave out the special tokens the post-processor adds (e.g. BOS).")
    var noSpecial = false

    @Flag(help: "Print one JSON object: ids, tokens and count.")
    var json = false

    @Argument(help: "The text to tokenize.")
    var text: String

    struct Output: Encodable {
        var ids: [Int]
        var tokens: [String]
        var count: Int
    }

    func run() throws {
        var url = URL(fileURLWithPath: model)
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue {
            url = url.appendingPathComponent("tokenizer.json")
        }
        let tokenizer = try Tokenizer(contentsOf: url)
        let ids = try tokenizer.encode(text, addSpecialTokens: !noSpecial)
        let tokens = ids.map { tokenizer.token(of: $0) ?? "" }
        if json {
            try printJSON(Output(ids: ids, tokens: tokens, count: ids.count))
        } else {
            print(ids.map(String.init).joined(separator: " "))
            standardError("\(ids.count) tokens: " + tokens.map { $0.debugDescription }.joined(separator: " "))
        }
    }
}
