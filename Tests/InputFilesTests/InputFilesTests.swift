#if canImport(Glibc)
import Glibc
#endif
import Foundation
import InputFiles
import XCTest

final class StrictJSONTests: XCTestCase {
    func validate(_ text: String) throws { try Data(text.utf8).withUnsafeBytes { try JSONScanner.validate($0) } }

    func testAcceptsWhatRFC8259Allows() throws {
        for text in [#"{}"#, #"[]"#, #"{"a": [1, -2.5e3, true, false, null, "x\u00e9\ud83d\ude00"], "b": {"a": 1}}"#, "  0  ", #""\"\\\/\b\f\n\r\t""#] {
            XCTAssertNoThrow(try validate(text), text)
        }
    }

    func testRefusesDuplicateKeysAtAnyDepth() {
        for text in [#"{"a": 1, "a": 2}"#, #"{"x": {"b": 1, "b": 1}}"#, #"[{"c": 1, "c": null}]"#, #"{"\u0061": 1, "a": 2}"#] {
            XCTAssertThrowsError(try validate(text), text) { XCTAssertTrue("\($0)".contains("appears twice"), "\($0)") }
        }
        // The same key in sibling objects is fine.
        XCTAssertNoThrow(try validate(#"[{"a": 1}, {"a": 2}]"#))
    }

    func testRefusesMalformedInput() {
        for text in ["", "{", #"{"a"}"#, #"{"a": }"#, "[1,]", "[01]", "1.", "-", "1e", #""\x""#, #""\ud800""#, "\"\u{1}\"", "{} x", "tru", "[1 2]"] {
            XCTAssertThrowsError(try validate(text), text.debugDescription)
        }
        XCTAssertThrowsError(try Data([0x22, 0xFF, 0x22]).withUnsafeBytes { try JSONScanner.validate($0) })
    }

    func testNestingIsBounded() {
        XCTAssertNoThrow(try validate(String(repeating: "[", count: 60) + String(repeating: "]", count: 60)))
        // Deeper input is refused before it can exhaust the stack.
        XCTAssertThrowsError(try validate(String(repeating: "[", count: 100_000)))
    }

    func testIntegersAreExact() throws {
        func integer(_ text: String) throws -> Int? {
            try Data(text.utf8).withUnsafeBytes { raw in
                var s = JSONScanner(raw)
                return try s.readNonNegativeInteger()
            }
        }
        XCTAssertEqual(try integer("9223372036854775807"), Int.max)
        XCTAssertThrowsError(try integer("9223372036854775808"))
        XCTAssertThrowsError(try integer("1e14"))
        XCTAssertThrowsError(try integer("2.0"))
        XCTAssertThrowsError(try integer("-1"))
        XCTAssertNil(try integer("\"1\""))
    }
}

final class RegularFileTests: XCTestCase {
    var dir: URL!
    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("inputfiles-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }
    override func tearDown() { try? FileManager.default.removeItem(at: dir) }

    func testKindsAreNamedAndNothingBlocks() throws {
        let fifo = dir.appendingPathComponent("fifo").path
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let cases: [(String, InputFileError.Kind)] = [
            (fifo, .notRegular("a FIFO")), (dir.path, .notRegular("a directory")), ("/dev/null", .notRegular("a character device")),
            (dir.appendingPathComponent("missing").path, .missing),
        ]
        for (path, kind) in cases {
            XCTAssertThrowsError(try RegularFile.read(path, limit: 10)) { XCTAssertEqual(($0 as? InputFileError)?.kind, kind, path) }
        }
        let file = dir.appendingPathComponent("f")
        try Data("hello".utf8).write(to: file)
        XCTAssertEqual(try RegularFile.read(file.path, limit: 5), Data("hello".utf8))
        XCTAssertThrowsError(try RegularFile.read(file.path, limit: 4)) { XCTAssertEqual(($0 as? InputFileError)?.kind, .tooLarge(size: 5, limit: 4)) }
        // No following links, and no second names, where asked.
        let link = dir.appendingPathComponent("link").path
        XCTAssertEqual(symlink(file.path, link), 0)
        XCTAssertEqual(try RegularFile.read(link, limit: 5), Data("hello".utf8))
        XCTAssertThrowsError(try RegularFile.read(link, limit: 5, followSymlinks: false)) {
            XCTAssertEqual(($0 as? InputFileError)?.kind, .notRegular("a symbolic link"))
        }
        XCTAssertEqual(Glibc.link(file.path, dir.appendingPathComponent("second").path), 0)
        XCTAssertThrowsError(try RegularFile.read(file.path, limit: 5, singleLink: true)) {
            XCTAssertEqual(($0 as? InputFileError)?.kind, .hardLinked(2))
        }
    }
}
