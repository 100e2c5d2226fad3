// Fuzzes the safetensors header parser: the input is a whole .safetensors file.
//
// Each input goes through the in-memory parser (`SafetensorsHeader`) and through the file loader
// (`SafetensorsFile(path:)`, which opens and maps a file and then uses the same parser); both must
// agree, and what they accept must satisfy the format's invariants.
import Engine
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// FUZZ_SHOW_ERRORS=1 prints why each input was rejected (to check that seeds load).
private let showErrors = ProcessInfo.processInfo.environment["FUZZ_SHOW_ERRORS"] != nil

private func rejected(_ error: Any) {
    if showErrors { FileHandle.standardError.write(Data("rejected: \(error)\n".utf8)) }
}

/// An invariant of the parser's result. Unlike `precondition`, its message survives -O.
private func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError(message()) }
}

/// One scratch file for every input, unlinked at once so nothing is left behind (even after a
/// crash); the loader reaches it through /proc/self/fd. `SafetensorsFile(path:)` insists on a
/// regular file it can mmap, which rules out a pipe.
private let scratch: (fd: Int32, path: String) = {
    let pattern = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("fuzz-safetensors.XXXXXX").path
    var template = Array(pattern.utf8CString)
    let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
    check(fd >= 0, "mkstemp: \(String(cString: strerror(errno)))")
    unlink(String(cString: template))
    return (fd, "/proc/self/fd/\(fd)")
}()

/// The in-memory parse: the tensor names it accepts, or nil.
private func parseInMemory(_ bytes: UnsafeRawBufferPointer) -> Set<String>? {
    guard bytes.count >= 8 else { return nil }  // SafetensorsFile refuses these before the header
    do {
        let length = try SafetensorsHeader.headerLength(prefix: bytes.loadUnaligned(as: UInt64.self),
                                                        fileSize: bytes.count, file: "fuzz.safetensors")
        check(length >= 0 && length <= bytes.count - 8, "header length \(length) outside the input")
        let dataSize = bytes.count - 8 - length
        let entries = try SafetensorsHeader.parse(UnsafeRawBufferPointer(rebasing: bytes[8 ..< 8 + length]),
                                                  dataSize: dataSize, file: "fuzz.safetensors")
        // Documented: in data order, contiguous, covering the data section exactly.
        var end = 0
        for e in entries {
            check(e.begin == end && e.begin <= e.end && e.end <= dataSize, "entry \(e) breaks the tiling (at \(end) of \(dataSize))")
            end = e.end
        }
        check(end == dataSize, "entries cover \(end) of \(dataSize) bytes")
        return Set(entries.map(\.name))
    } catch {
        rejected(error)
        return nil
    }
}

/// The file loader on the same bytes: the tensor names it accepts, or nil.
private func parseFile(_ bytes: UnsafeRawBufferPointer) -> Set<String>? {
    check(ftruncate(scratch.fd, 0) == 0, "ftruncate: \(String(cString: strerror(errno)))")
    var written = 0
    while written < bytes.count {
        let n = pwrite(scratch.fd, bytes.baseAddress! + written, bytes.count - written, off_t(written))
        check(n > 0, "pwrite: \(String(cString: strerror(errno)))")
        written += n
    }
    let file: SafetensorsFile
    do { file = try SafetensorsFile(path: scratch.path) } catch { return nil }
    // Touch the first and last byte of every tensor: they must lie inside the mapping.
    var checksum: UInt8 = 0
    for tensor in file.tensors.values {
        let byteCount = tensor.elementCount * tensor.dtype.byteSize
        if byteCount > 0 {
            checksum ^= tensor.data.load(as: UInt8.self)
            checksum ^= tensor.data.load(fromByteOffset: byteCount - 1, as: UInt8.self)
        }
    }
    blackHole(checksum)
    return Set(file.tensors.keys).union(file.unsupported.keys)
}

@inline(never) private func blackHole(_ value: UInt8) { _ = value }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    let inMemory = parseInMemory(bytes)
    let fromFile = parseFile(bytes)
    check(inMemory == fromFile, "SafetensorsHeader accepts \(String(describing: inMemory)), SafetensorsFile \(String(describing: fromFile))")
    return 0
}
