import Foundation
import Testing

@testable import DeviceAdapters

/// The snapshots' SHA-256 against FIPS 180-4's examples, NIST's million-byte message and
/// `sha256sum`, fed in pieces of every size.
@Suite("SHA-256")
struct SHA256Tests {
    static func digest(_ bytes: [UInt8]) -> String {
        var h = SHA256()
        h.update(bytes)
        return h.hexDigest()
    }

    @Test("FIPS 180-4's examples and NIST's one million \"a\"")
    func vectors() {
        #expect(Self.digest(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(Self.digest([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(
            Self.digest(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        var million = SHA256()
        let thousand = [UInt8](repeating: UInt8(ascii: "a"), count: 1000)
        for _ in 0..<1000 { million.update(thousand) }
        #expect(million.hexDigest() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test("every length around the block and padding edges, in uneven pieces, as sha256sum says")
    func againstSha256sum() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sha-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for length in [1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 70_001] {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ length) }
            let file = dir.appendingPathComponent("\(length)")
            try Data(bytes).write(to: file)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
            p.arguments = [file.path]
            let out = Pipe()
            p.standardOutput = out
            try p.run()
            p.waitUntilExit()
            let expected = String(decoding: out.fileHandleForReading.readDataToEndOfFile().prefix(64), as: UTF8.self)
            var pieces = SHA256()
            var at = 0
            var step = 1
            while at < length {
                let n = min(step, length - at)
                pieces.update(Array(bytes[at..<at + n]))
                at += n
                step = step % 97 + 1
            }
            #expect(pieces.hexDigest() == expected, "length \(length)")
            #expect(Self.digest(bytes) == expected, "length \(length) in one piece")
        }
    }
}
