/// Text that came from a job file or a spool file name, made safe to show on a terminal.
///
/// Anyone in the spool group chooses file names, prompt ids and prompt text; printed raw, an
/// escape sequence among them would drive the terminal of whoever runs `layerskip jobs` (clear the
/// screen, set the window title, hide text). Human output therefore shows every control character
/// as a visible escape: C0 and C1 controls and DEL as `\x1B`, and the bidirectional overrides
/// and isolates (which reorder what is displayed) as `\u{202E}`. `--json` output stays exact.
public enum TerminalText {
    /// - Parameter keepLayout: leave newlines and tabs as they are (generated text); otherwise they
    ///   are escaped too, so that one value stays on one line of a table.
    public static func escaped(_ text: String, keepLayout: Bool = false) -> String {
        guard text.unicodeScalars.contains(where: { needsEscape($0, keepLayout: keepLayout) }) else { return text }
        var out = ""
        out.reserveCapacity(text.utf8.count + 8)
        for scalar in text.unicodeScalars {
            guard needsEscape(scalar, keepLayout: keepLayout) else {
                out.unicodeScalars.append(scalar)
                continue
            }
            switch scalar {
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                let hex = String(scalar.value, radix: 16, uppercase: true)
                out += scalar.value < 0x100 ? "\\x" + (hex.count == 1 ? "0" + hex : hex) : "\\u{\(hex)}"
            }
        }
        return out
    }

    static func needsEscape(_ s: Unicode.Scalar, keepLayout: Bool) -> Bool {
        switch s.value {
        case 0x0A, 0x09: return !keepLayout
        case 0x00...0x1F, 0x7F...0x9F: return true
        case 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069: return true
        default: return false
        }
    }
}
