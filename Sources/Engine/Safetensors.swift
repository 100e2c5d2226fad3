import CKernels
import Foundation
import InputFiles

#if canImport(Glibc)
import Glibc
#endif

/// Element type of a stored tensor, as named in the safetensors header.
public enum DType: String, Sendable {
    /// I8 and U8 hold the matrices of a folder that `layerskip quantize` wrote (int8: I8 with a
    /// `.weight_scale` F32 tensor of one scale per row beside each; q4: U8 nibbles with F16 block
    /// scales); the engine computes with them only there.
    case f32 = "F32", f16 = "F16", bf16 = "BF16", i8 = "I8", u8 = "U8"

    public var byteSize: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .i8, .u8: return 1
        }
    }
    /// A float dtype the matrix kernels and conversions take as stored weights.
    public var isFloat: Bool { self != .i8 && self != .u8 }
    var kernelType: ck_dtype {
        switch self {
        case .f32: return CK_F32
        case .f16: return CK_F16
        case .bf16: return CK_BF16
        case .i8: return CK_I8
        case .u8: return CK_Q4
        }
    }
}

/// One tensor inside a memory-mapped safetensors file. `data` points into the mapping, so the
/// weights are used in their stored dtype without a copy; the owning `SafetensorsFile` must outlive it.
// `@unchecked Sendable`: `data` points into a read-only mapping that the owning file keeps alive.
public struct TensorView: @unchecked Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    public let data: UnsafeRawPointer
    public let file: String

    /// Checked against the data section when the header was read, so it cannot overflow.
    public var elementCount: Int { shape.reduce(1, *) }
}

/// One tensor entry of a safetensors header, before the file is mapped: offsets are relative to
/// the start of the data section.
public struct SafetensorsEntry: Sendable, Equatable {
    public var name: String
    /// As written in the header; `DType(rawValue:)` is nil for dtypes the engine does not compute with.
    public var dtype: String
    public var shape: [Int]
    public var begin: Int
    public var end: Int
}

/// The JSON header of a safetensors file, read by the format's own rules (huggingface/safetensors):
/// at most 100 MB; a JSON object of tensor name → {dtype, shape, data_offsets: [begin, end]} plus an
/// optional `__metadata__` object of strings; no key twice; every element count and byte size fits
/// in 64 bits; and the tensors' byte ranges tile the data section exactly, without overlaps or gaps.
public enum SafetensorsHeader {
    /// The format's cap on the header length (the reference implementation refuses longer ones).
    public static let maxLength = 100_000_000

    /// Bytes per element of every dtype the format defines (the engine computes with F32, F16, BF16).
    static let elementSizes: [String: Int] = [
        "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
        "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
    ]

    /// Reads the 8-byte little-endian length that starts a file of `fileSize` bytes and checks it.
    public static func headerLength(prefix: UInt64, fileSize: Int, file: String) throws -> Int {
        let length = UInt64(littleEndian: prefix)
        guard length <= UInt64(maxLength) else {
            throw ModelError(.corruptHeader, file: file, "header length \(length) is over the format's limit of \(maxLength) bytes (corrupt or not a safetensors file)")
        }
        guard length >= 2, Int(length) <= fileSize - 8 else {
            throw ModelError(.corruptHeader, file: file, "header length \(length) does not fit in a file of \(fileSize) bytes (corrupt or truncated)")
        }
        return Int(length)
    }

    /// Parses and checks a header against a data section of `dataSize` bytes. The entries come
    /// back in data order. Memory: the entries themselves; no JSON tree is built.
    public static func parse(_ header: UnsafeRawBufferPointer, dataSize: Int, file: String) throws -> [SafetensorsEntry] {
        var entries: [SafetensorsEntry] = []
        var scanner = JSONScanner(header)
        func corrupt(_ subject: String?, _ message: String) -> ModelError {
            ModelError(.corruptHeader, file: file, subject: subject, message)
        }
        do {
            guard scanner.peek() == UInt8(ascii: "{") else { throw corrupt(nil, "header is not valid JSON (expected an object; corrupt or not a safetensors file)") }
            try scanner.readObject { s, name in
                if name == "__metadata__" {
                    guard s.peek() == UInt8(ascii: "{") else { throw corrupt(name, "expected an object of strings") }
                    try s.readObject(depth: 1) { s, key in
                        guard s.peek() == UInt8(ascii: "\"") else { throw corrupt("__metadata__.\(key)", "expected a string value") }
                        _ = try s.readString()
                    }
                    return
                }
                entries.append(try entry(&s, name: name, file: file))
            }
            // The format allows trailing spaces as padding; anything else is not a header.
            scanner.skipWhitespace()
            guard scanner.atEnd else { throw corrupt(nil, "unexpected data after the header object") }
        } catch let error as JSONScanError {
            throw corrupt(nil, "header is not valid JSON: \(error)")
        }

        entries.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
        var expectedBegin = 0
        for e in entries {
            guard e.begin <= e.end else {
                throw corrupt(e.name, "data_offsets [\(e.begin), \(e.end)] are not in order")
            }
            guard e.begin == expectedBegin else {
                throw corrupt(e.name, e.begin < expectedBegin
                    ? "data_offsets [\(e.begin), \(e.end)] overlap the previous tensor, which ends at \(expectedBegin)"
                    : "data_offsets [\(e.begin), \(e.end)] leave a gap after byte \(expectedBegin) (tensors must be contiguous)")
            }
            guard e.end <= dataSize else {
                throw ModelError(.truncated, file: file, subject: e.name,
                                 "data ends at byte \(e.end) of the data section but the file holds only \(dataSize) bytes (truncated)")
            }
            if let size = elementSizes[e.dtype] {
                var count = 1
                for d in e.shape {
                    let (product, overflow) = count.multipliedReportingOverflow(by: d)
                    guard !overflow else { throw corrupt(e.name, "shape \(e.shape) has more elements than fit in 64 bits") }
                    count = product
                }
                let (bytes, overflow) = count.multipliedReportingOverflow(by: size)
                guard !overflow, bytes == e.end - e.begin else {
                    throw corrupt(e.name, "shape \(e.shape) of \(e.dtype) needs \(overflow ? "more than 2^63" : String(bytes)) bytes, data_offsets span \(e.end - e.begin)")
                }
            }
            expectedBegin = e.end
        }
        guard expectedBegin == dataSize else {
            throw ModelError(.corruptHeader, file: file,
                             "the tensors cover \(expectedBegin) bytes of a \(dataSize)-byte data section (trailing bytes, or a corrupt header)")
        }
        return entries
    }

    private static func entry(_ s: inout JSONScanner, name: String, file: String) throws -> SafetensorsEntry {
        func corrupt(_ message: String) -> ModelError { ModelError(.corruptHeader, file: file, subject: name, message) }
        guard s.peek() == UInt8(ascii: "{") else { throw corrupt("expected an object with dtype, shape and data_offsets") }
        var dtype: String?
        var shape: [Int]?
        var offsets: [Int]?
        func integers(_ s: inout JSONScanner, _ field: String) throws -> [Int] {
            guard s.peek() == UInt8(ascii: "[") else { throw corrupt("\(field) must be a list of non-negative integers") }
            var out: [Int] = []
            do {
                try s.readArray(depth: 2) { s, _ in
                    guard let n = try s.readNonNegativeInteger() else { throw corrupt("\(field) must be a list of non-negative integers") }
                    out.append(n)
                }
            } catch let error as JSONScanError {
                throw corrupt("\(field) must be a list of non-negative integers (\(error))")
            }
            return out
        }
        try s.readObject(depth: 1) { s, key in
            switch key {
            case "dtype":
                guard s.peek() == UInt8(ascii: "\"") else { throw corrupt("dtype must be a string") }
                dtype = try s.readString()
            case "shape": shape = try integers(&s, "shape")
            case "data_offsets": offsets = try integers(&s, "data_offsets")
            default: try s.skipValue(depth: 2)
            }
        }
        guard let dtype, let shape, let offsets else {
            throw corrupt("header entry needs dtype, shape and data_offsets [begin, end]")
        }
        guard offsets.count == 2 else { throw corrupt("data_offsets must be [begin, end], found \(offsets.count) numbers") }
        return SafetensorsEntry(name: name, dtype: dtype, shape: shape, begin: offsets[0], end: offsets[1])
    }
}

/// A read-only memory mapping of one `.safetensors` file: an 8-byte little-endian header length N,
/// N bytes of JSON (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": …}`),
/// then the tensor bytes, offsets relative to the end of the header.
// `@unchecked Sendable`: a read-only memory mapping and immutable `let`s.
public final class SafetensorsFile: @unchecked Sendable {
    public let path: String
    public let tensors: [String: TensorView]
    /// Tensors whose dtype this engine does not compute with (name → dtype), reported when used.
    public let unsupported: [String: String]
    private let base: UnsafeMutableRawPointer
    private let size: Int

    public init(path: String) throws {
        self.path = path
        let opened: (fd: Int32, size: Int)
        do { opened = try RegularFile.open(path) } catch {
            throw ModelError(error.kind == .missing ? .missingFile : .unreadableFile, file: path, "cannot open: \(error.reason)")
        }
        let (fd, size) = opened
        self.size = size
        defer { close(fd) }
        guard size >= 8 else {
            throw ModelError(.truncated, file: path, "file is \(size) bytes; a safetensors file starts with an 8-byte header length")
        }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw ModelError(.unreadableFile, file: path, "cannot map into memory: \(String(cString: strerror(errno)))")
        }
        // Everything is read into locals first: a throw before `base` is set runs no deinit, so
        // the mapping is released exactly once, here.
        var tensors: [String: TensorView] = [:]
        var unsupported: [String: String] = [:]
        do {
            let length = try SafetensorsHeader.headerLength(prefix: mapped.loadUnaligned(as: UInt64.self), fileSize: size, file: path)
            let dataStart = 8 + length
            let entries = try SafetensorsHeader.parse(UnsafeRawBufferPointer(start: mapped + 8, count: length),
                                                      dataSize: size - dataStart, file: path)
            tensors.reserveCapacity(entries.count)
            for e in entries {
                guard let dtype = DType(rawValue: e.dtype) else {
                    // Other dtypes are only an error if the tensor is used; record nothing for it.
                    unsupported[e.name] = e.dtype
                    continue
                }
                tensors[e.name] = TensorView(name: e.name, dtype: dtype, shape: e.shape,
                                             data: UnsafeRawPointer(mapped + dataStart + e.begin), file: path)
            }
        } catch {
            munmap(mapped, size)
            throw error
        }
        base = mapped
        self.tensors = tensors
        self.unsupported = unsupported
    }

    deinit { munmap(base, size) }
}
