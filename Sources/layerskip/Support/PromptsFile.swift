import Foundation

/// `--prompts-file`: a JSONL file of prompts, per line a JSON string or an object with a "text"
/// string; blank lines are skipped.
enum PromptsFile {
    static func read(_ path: String) throws -> [String] {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw CLIError(message: "--prompts-file \(path): cannot read it (\(error.localizedDescription))")
        }
        var texts: [String] = []
        for (n, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            let value = try? JSONSerialization.jsonObject(with: Data(trimmed.utf8), options: [.fragmentsAllowed])
            if let text = value as? String {
                texts.append(text)
            } else if let object = value as? [String: Any], let text = object["text"] as? String {
                texts.append(text)
            } else {
                throw CLIError(message: "--prompts-file \(path) line \(n + 1): expected a JSON string or an object with a \"text\" string")
            }
        }
        return texts
    }
}
