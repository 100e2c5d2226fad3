#if canImport(Glibc)
import Glibc
#endif
import Foundation
import XCTest

/// The sd_notify protocol as systemd sees it: a datagram socket named by $NOTIFY_SOCKET.
final class SystemdNotifyTests: XCTestCase {
    final class NotifySocket {
        let path: String
        let fd: Int32

        init(path: String) throws {
            self.path = path
            fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                for (i, b) in path.utf8.enumerated() { raw[i] = b }
            }
            let ok = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard ok == 0 else { throw NSError(domain: "bind", code: Int(errno)) }
        }

        deinit { close(fd); unlink(path) }

        /// Messages received until one contains `needle` (or the timeout).
        func receive(until needle: String, timeout: Double) -> [String] {
            var messages: [String] = []
            let deadline = Date().addingTimeInterval(timeout)
            var buffer = [UInt8](repeating: 0, count: 4096)
            while Date() < deadline {
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&pfd, 1, 100) > 0 else { continue }
                let n = recv(fd, &buffer, buffer.count, 0)
                if n > 0 {
                    let message = String(decoding: buffer[0..<n], as: UTF8.self)
                    messages.append(message)
                    if message.contains(needle) { break }
                }
            }
            return messages
        }
    }

    func testReadyStatusWatchdogAndStopping() throws {
        let install = try Installation()
        let socket = try NotifySocket(path: install.root.appendingPathComponent("notify.sock").path)
        try FileManager.default.createDirectory(at: install.incoming, withIntermediateDirectories: true)
        try install.drop("first.yaml", jobYAML())
        try install.start(environment: ["NOTIFY_SOCKET": socket.path, "WATCHDOG_USEC": "400000"], waitReady: false)
        let startup = socket.receive(until: "READY=1", timeout: 30)
        let ready = try XCTUnwrap(startup.last, "no READY=1")
        XCTAssertTrue(ready.contains("READY=1"), ready)
        XCTAssertTrue(ready.contains("STATUS="), ready)
        // READY only after the first scan: the file dropped before start is already recorded.
        XCTAssertFalse(try install.jobs().isEmpty)
        XCTAssertTrue(socket.receive(until: "WATCHDOG=1", timeout: 5).contains { $0.contains("WATCHDOG=1") })
        try install.drop("second.yaml", jobYAML())
        XCTAssertTrue(socket.receive(until: "prompt 1 of 1 done", timeout: 20).contains { $0.hasPrefix("STATUS=") })
        XCTAssertEqual(install.stop(SIGTERM), 0)
        XCTAssertTrue(socket.receive(until: "STOPPING=1", timeout: 5).contains { $0.contains("STOPPING=1") })
        // journald priority prefixes on every stderr line.
        let lines = install.lastLog.split(separator: "\n")
        XCTAssertFalse(lines.isEmpty)
        XCTAssertTrue(lines.allSatisfy { $0.range(of: #"^<[3-7]>"#, options: .regularExpression) != nil }, install.lastLog)
    }
}
