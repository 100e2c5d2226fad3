import CKernels
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Element type of a stored tensor, as named in the safetensors header.
public enum DType: String, Sendable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16"

    public var byteSize: Int { self == .f32 ? 4 : 2 }
    var kernelType: ck_dtype {
        switch self {
        case .f32: return CK_F32
        case .f16: return CK_F16
        case .bf16: return CK_BF16
        }
    }
}

/// One tensor inside a memory-mapped safetensors file. `data` points into the mapping, so the
/// weights are used in their stored dtype without a copy; the owning `SafetensorsFile` must outlive it.
public struct TensorView: @unchecked Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    public let data: UnsafeRawPointer
    public let file: String

    public var elementCount: Int { shape.reduce(1, *) }
}

/// A read-only memory mapping of one `.safetensors` file: an 8-byte little-endian header length N,
/// N bytes of JSON (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": …}`),
/// then the tensor bytes, offsets relative to the end of the header.
public final class SafetensorsFile: @unchecked Sendable {
    public let path: String
    public private(set) var tensors: [String: TensorView] = [:]
    private let base: UnsafeMutableRawPointer?
    private let size: Int

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            let reason = String(cString: strerror(errno))
            throw ModelError(errno == ENOENT ? .missingFile : .unreadableFile, file: path, "cannot open: \(reason)")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw ModelError(.unreadableFile, file: path, "cannot stat: \(String(cString: strerror(errno)))")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw ModelError(.unreadableFile, file: path, "not a regular file")
        }
        size = Int(st.st_size)
        guard size >= 8 else {
            throw ModelError(.truncated, file: path, "file is \(size) bytes; a safetensors file starts with an 8-byte header length")
        }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw ModelError(.unreadableFile, file: path, "cannot map into memory: \(String(cString: strerror(errno)))")
        }
        base = mapped
        do {
            try parseHeader()
        } catch {
            munmap(mapped, size)
            throw error
        }
    }

    deinit {
        if let base { munmap(base, size) }
    }

    private func parseHeader() throws {
        guard let base else { return }
        let headerLength = Int(UInt64(littleEndian: base.loadUnaligned(as: UInt64.self)))
        guard headerLength > 1, headerLength <= size - 8 else {
            throw ModelError(.corruptHeader, file: path,
                             "header length \(headerLength) does not fit in a file of \(size) bytes (corrupt or truncated)")
        }
        let headerData = Data(bytesNoCopy: base + 8, count: headerLength, deallocator: .none)
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: headerData) } catch {
            throw ModelError(.corruptHeader, file: path, "header is not valid JSON (corrupt or not a safetensors file)")
        }
        guard let header = object as? [String: Any] else {
            throw ModelError(.corruptHeader, file: path, "header is not a JSON object")
        }
        let dataStart = 8 + headerLength
        let dataSize = size - dataStart
        for (name, entry) in header where name != "__metadata__" {
            guard let info = entry as? [String: Any],
                  let dtypeName = info["dtype"] as? String,
                  let shapeAny = info["shape"] as? [Any],
                  let offsetsAny = info["data_offsets"] as? [Any], offsetsAny.count == 2 else {
                throw ModelError(.corruptHeader, file: path, subject: name, "header entry needs dtype, shape and data_offsets [begin, end]")
            }
            let shape = shapeAny.compactMap { JSONFields.integer($0) }
            let offsets = offsetsAny.compactMap { JSONFields.integer($0) }
            guard shape.count == shapeAny.count, shape.allSatisfy({ $0 >= 0 }), offsets.count == 2 else {
                throw ModelError(.corruptHeader, file: path, subject: name, "shape and data_offsets must be non-negative integers")
            }
            guard let dtype = DType(rawValue: dtypeName) else {
                // Other dtypes are only an error if the tensor is used; record nothing for it.
                unsupported[name] = dtypeName
                continue
            }
            let (begin, end) = (offsets[0], offsets[1])
            guard begin >= 0, begin <= end else {
                throw ModelError(.corruptHeader, file: path, subject: name, "data_offsets [\(begin), \(end)] are not in order")
            }
            guard end <= dataSize else {
                throw ModelError(.truncated, file: path, subject: name,
                                 "data ends at byte \(end) of the data section but the file holds only \(dataSize) bytes (truncated)")
            }
            let count = shape.reduce(1, *)
            guard end - begin == count * dtype.byteSize else {
                throw ModelError(.corruptHeader, file: path, subject: name,
                                 "shape \(shape) of \(dtypeName) needs \(count * dtype.byteSize) bytes, data_offsets span \(end - begin)")
            }
            tensors[name] = TensorView(name: name, dtype: dtype, shape: shape,
                                       data: UnsafeRawPointer(base + dataStart + begin), file: path)
        }
    }

    /// Tensors whose dtype this engine does not compute with (name → dtype), reported when used.
    public private(set) var unsupported: [String: String] = [:]
}
