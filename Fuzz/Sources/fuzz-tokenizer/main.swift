// Fuzzes tokenizer.json loading, then encoding and decoding.
//
// Input: a tokenizer.json, optionally followed by a NUL byte and a text to encode (a NUL cannot
// occur in valid JSON, so the seeds are plain tokenizer.json files). Every tokenizer that loads
// also encodes a fixed set of short texts.
import Foundation
import Tokenization

/// FUZZ_SHOW_ERRORS=1 prints why each input was rejected (to check that seeds load).
private let showErrors = ProcessInfo.processInfo.environment["FUZZ_SHOW_ERRORS"] != nil

private func rejected(_ error: Any) {
    if showErrors { FileHandle.standardError.write(Data("rejected: \(error)\n".utf8)) }
}

/// Larger tokenizers make one input take far longer than a millisecond; the loader's behaviour
/// does not depend on size beyond this.
private let maxInputBytes = 64 << 10

private let fixedTexts = [
    "", " ", "Hello, world!", "  two  spaces\tand\ttabs\n\nnewlines ",
    "def fibonacci(n):\n    return n", "ünïcödé 日本語 🦙 \u{200B}e\u{301}",
    "<s></s><unk><|endoftext|>[CLS]", "1234567890 3.14 -42",
]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    guard count <= maxInputBytes else { return 0 }
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    let split = bytes.firstIndex(of: 0)
    let json = Data(bytes[..<(split ?? count)])
    let tokenizer: Tokenizer
    do { tokenizer = try Tokenizer(data: json, source: "tokenizer.json") } catch { rejected(error); return 0 }
    var texts = fixedTexts
    if let split { texts.append(String(decoding: bytes[(split + 1)...], as: UTF8.self)) }
    for text in texts {
        for special in [true, false] {
            // encode throws when a pre-tokenizer regex runs past its work budget.
            do {
                let ids = try tokenizer.encode(text, addSpecialTokens: special)
                _ = tokenizer.decode(ids, skipSpecialTokens: !special)
            } catch { rejected(error) }
        }
    }
    return 0
}
