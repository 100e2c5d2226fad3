/// Prompt-lookup drafting (Saxena 2023; llama.cpp's and vLLM's "n-gram" speculation): the text
/// itself proposes the continuation. Summaries, edits, translations and code completions copy
/// spans of their prompt and of what they already wrote; when the newest tokens occurred before,
/// what followed them then is a free draft. A pure function of the token history, so a proposal
/// is a draft whose distribution q is one-hot on the proposed token — the acceptance rule stays
/// exact (`SpeculativeAcceptance.keepsProposal`).
public enum PromptLookup {
    /// The continuation of the longest, then most recent, earlier occurrence of the history's
    /// last n tokens, for n from `longestNgram` down to `shortestNgram`: up to `maxSpan` tokens.
    /// `history` is the prompt followed by every committed token (the pending one last). An
    /// occurrence must end before the history's last token, so the match is never the suffix
    /// itself; it may overlap the suffix (a repeated run proposes more of itself).
    public static func proposal(history: [Int], longestNgram: Int, shortestNgram: Int = 1, maxSpan: Int) -> ArraySlice<Int> {
        precondition(shortestNgram >= 1 && longestNgram >= shortestNgram && maxSpan >= 0)
        let count = history.count
        guard maxSpan > 0 else { return [] }
        return history.withUnsafeBufferPointer { h in
            for n in stride(from: min(longestNgram, count - 1), through: shortestNgram, by: -1) {
                let suffix = count - n
                // Newest first: a recent occurrence is the likelier one to continue the same way.
                var start = suffix - 1
                while start >= 0 {
                    var matched = true
                    for i in 0..<n where h[start + i] != h[suffix + i] {
                        matched = false
                        break
                    }
                    if matched {
                        let from = start + n
                        return history[from..<min(from + maxSpan, count)]
                    }
                    start -= 1
                }
            }
            return []
        }
    }
}
