import CKernels
import Foundation

/// Writes a `.safetensors` file tensor by tensor, streaming the data so a multi-gigabyte model
/// never sits in memory. The file appears under its final name only once complete (temp + rename).
public final class SafetensorsWriter {
    public struct Entry: Sendable {
        public var name: String
        public var dtype: DType
        public var shape: [Int]
        public init(name: String, dtype: DType, shape: [Int]) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
        }
        var byteCount: Int { shape.reduce(1, *) * dtype.byteSize }
    }

    private let url: URL
    private let tempURL: URL
    private let handle: FileHandle
    private let entries: [Entry]
    private var current = 0
    private var writtenInCurrent = 0
    /// Conversion scratch for one chunk (bytes in the stored dtype).
    private var scratch = [UInt8]()

    public init(url: URL, entries: [Entry], metadata: [String: String] = [:]) throws {
        self.url = url
        self.entries = entries
        tempURL = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        guard FileManager.default.createFile(atPath: tempURL.path, contents: nil) else {
            throw ModelError(.unreadableFile, file: tempURL.path, "cannot create file")
        }
        handle = try FileHandle(forWritingTo: tempURL)

        // Header: tensors in the order given, offsets relative to the end of the header, padded
        // with spaces to a multiple of 8 bytes so the data that follows is aligned.
        var offset = 0
        var parts: [String] = []
        if !metadata.isEmpty {
            let meta = metadata.sorted { $0.key < $1.key }.map { "\(Self.quote($0.key)):\(Self.quote($0.value))" }
            parts.append("\"__metadata__\":{\(meta.joined(separator: ","))}")
        }
        for e in entries {
            let shape = e.shape.map(String.init).joined(separator: ",")
            parts.append("\(Self.quote(e.name)):{\"dtype\":\"\(e.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + e.byteCount)]}")
            offset += e.byteCount
        }
        var header = Array("{\(parts.joined(separator: ","))}".utf8)
        while (header.count + 8) % 8 != 0 { header.append(0x20) }
        var length = UInt64(header.count).littleEndian
        try handle.write(contentsOf: Data(bytes: &length, count: 8))
        try handle.write(contentsOf: Data(header))
        skipEmptyEntries()
    }

    private static func quote(_ s: String) -> String {
        let data = try! JSONSerialization.data(withJSONObject: [s], options: [.fragmentsAllowed])
        let text = String(decoding: data, as: UTF8.self)
        return String(text.dropFirst().dropLast())
    }

    private func skipEmptyEntries() {
        while current < entries.count && entries[current].byteCount == 0 { current += 1 }
    }

    /// Appends values to the current tensor (converted to its dtype); moves on when it is full.
    public func write(_ values: UnsafeBufferPointer<Float>) throws {
        var remaining = values
        while !remaining.isEmpty {
            precondition(current < entries.count, "more data than the declared tensors hold")
            let entry = entries[current]
            let elementsLeft = (entry.byteCount - writtenInCurrent) / entry.dtype.byteSize
            let n = min(elementsLeft, remaining.count)
            let bytes = n * entry.dtype.byteSize
            if scratch.count < bytes { scratch = [UInt8](repeating: 0, count: bytes) }
            scratch.withUnsafeMutableBytes { raw in
                ck_from_f32(entry.dtype.kernelType, remaining.baseAddress!, raw.baseAddress!, n)
            }
            try handle.write(contentsOf: scratch.withUnsafeBytes { Data($0.prefix(bytes)) })
            writtenInCurrent += bytes
            remaining = UnsafeBufferPointer(rebasing: remaining[n...])
            if writtenInCurrent == entry.byteCount {
                current += 1
                writtenInCurrent = 0
                skipEmptyEntries()
            }
        }
    }

    /// Appends bytes as they are (already in the current tensors' dtypes); moves on as tensors fill.
    public func writeRaw(_ bytes: UnsafeRawBufferPointer) throws {
        var remaining = bytes
        while !remaining.isEmpty {
            precondition(current < entries.count, "more data than the declared tensors hold")
            let n = min(entries[current].byteCount - writtenInCurrent, remaining.count)
            try handle.write(contentsOf: Data(remaining.prefix(n)))
            writtenInCurrent += n
            remaining = UnsafeRawBufferPointer(rebasing: remaining[n...])
            if writtenInCurrent == entries[current].byteCount {
                current += 1
                writtenInCurrent = 0
                skipEmptyEntries()
            }
        }
    }

    public func write(_ values: [Float]) throws {
        try values.withUnsafeBufferPointer { try write($0) }
    }

    /// Checks every declared byte was written, flushes to disk and renames into place.
    public func finish() throws {
        precondition(current == entries.count, "tensor \(entries[min(current, entries.count - 1)].name) was not completely written")
        try handle.synchronize()
        try handle.close()
        if FileManager.default.fileExists(atPath: url.path) { try FileManager.default.removeItem(at: url) }
        try FileManager.default.moveItem(at: tempURL, to: url)
    }

    deinit {
        if current < entries.count {
            try? handle.close()
            try? FileManager.default.removeItem(at: tempURL)
        }
    }
}
