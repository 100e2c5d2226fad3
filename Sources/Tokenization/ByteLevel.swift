/// GPT-2's reversible byte <-> character table used by byte-level BPE.
///
/// Printable bytes map to themselves; the remaining 68 (controls, space, DEL, NBSP, soft
/// hyphen, ...) map to U+0100 and up, in byte order, so every token is printable text.
enum ByteLevelTable {
    static let byteToScalar: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable {
                table[b] = Unicode.Scalar(UInt8(b))
            } else {
                table[b] = Unicode.Scalar(next) ?? " "
                next += 1
            }
        }
        return table
    }()

    /// Indexed by scalar value; -1 where the scalar is not part of the table.
    static let scalarToByte: [Int16] = {
        var table = [Int16](repeating: -1, count: 0x144)
        for (b, scalar) in byteToScalar.enumerated() {
            table[Int(scalar.value)] = Int16(b)
        }
        return table
    }()

    static func byte(for scalar: Unicode.Scalar) -> UInt8? {
        let v = Int(scalar.value)
        guard v < scalarToByte.count else { return nil }
        let b = scalarToByte[v]
        return b < 0 ? nil : UInt8(b)
    }

    /// The UTF-8 bytes of `scalars`, each written as its table character.
    static func encode(_ scalars: Scalars) -> Scalars {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(scalars.count * 2)
        for s in scalars { appendUTF8(s, to: &bytes) }
        return bytes.map { byteToScalar[Int($0)] }
    }

    /// GPT-2's own split pattern, used by the ByteLevel pre-tokenizer when `use_regex` is true.
    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
}
