import Crypto
import Foundation

/// The spool's content hash (jobs.content_hash): SHA-256 of the file's bytes, as lowercase hex.
enum ContentHash {
    static func hex(_ data: Data) -> String {
        SHA256.hash(data: data).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }
}
