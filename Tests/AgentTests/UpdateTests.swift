import Foundation
import NIOCore
import Testing

@testable import DeviceAdapters
@testable import EdgeAgent

/// Signed updates without a broker: Ed25519 against RFC 8032's vectors, Debian version order
/// against dpkg, the manifest's checks, the chunk protocol and the helper's verification.
@Suite("Signed updates")
struct UpdateTests {
    static func bytes(_ hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            out.append(UInt8(hex[i..<j], radix: 16)!)
            i = j
        }
        return out
    }

    /// RFC 8032 section 7.1, tests 1 and 2.
    static let vectors: [(seed: String, key: String, message: String, signature: String)] = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
        ),
    ]

    @Test("Ed25519 from libcrypto: RFC 8032's keys and signatures, and a changed byte anywhere fails")
    func rfc8032() throws {
        #expect(UpdateKeys.unavailable == nil, "\(UpdateKeys.unavailable ?? "")")
        #expect(UpdateKeys.libraryVersion.hasPrefix("OpenSSL"))
        for v in Self.vectors {
            let (seed, key, message, signature) = (Self.bytes(v.seed), Self.bytes(v.key), Self.bytes(v.message), Self.bytes(v.signature))
            #expect(try UpdateKeys.publicKey(of: seed) == key)
            #expect(try UpdateKeys.sign(message, with: seed) == signature)
            #expect(try UpdateKeys.verify(signature, of: message, by: key))
            for i in [0, 31, 32, 63] {
                var bad = signature
                bad[i] ^= 1
                #expect(try !UpdateKeys.verify(bad, of: message, by: key), "signature byte \(i) changed")
            }
            #expect(try !UpdateKeys.verify(signature, of: message + [0], by: key))
            var otherKey = key
            otherKey[5] ^= 0x40
            #expect(try !UpdateKeys.verify(signature, of: message, by: otherKey))
            #expect(try !UpdateKeys.verify(Array(signature.prefix(63)), of: message, by: key), "a short signature")
        }
    }

    @Test("keys as text: ed25519:<base64>, and what is wrong with a bad one")
    func keyText() throws {
        let seed = try UpdateKeys.generate()
        #expect(try seed != UpdateKeys.generate())
        let pub = UpdateKeys.text(publicKey: try UpdateKeys.publicKey(of: seed))
        #expect(pub.hasPrefix("ed25519:"))
        #expect(try UpdateKeys.publicKey(pub).get() == UpdateKeys.publicKey(of: seed))
        #expect(try UpdateKeys.privateKey(UpdateKeys.text(privateKey: seed) + "\n").get() == seed)
        guard case .failure(let p1) = UpdateKeys.publicKey("ssh-ed25519 AAAA") else {
            Issue.record("accepted")
            return
        }
        #expect(p1.description.contains("ed25519:<base64 of 32 bytes>"))
        guard case .failure(let p2) = UpdateKeys.publicKey("ed25519:AAAA") else {
            Issue.record("accepted")
            return
        }
        #expect(p2.description.contains("not the base64 of 32 bytes"))
        guard case .failure = UpdateKeys.privateKey(pub) else {
            Issue.record("a public key taken as private")
            return
        }
    }

    static let versionPairs = [
        ("1.0", "1.1"), ("1.0~rc1", "1.0"), ("1.0", "1.0+b1"), ("2.0", "1:0.1"), ("1.0-1", "1.0-2"), ("1.9", "1.10"),
        ("0.1.0", "0.1.0+box1"), ("1.0", "1.0a"), ("1.0a", "1.0+"), ("1.0~~", "1.0~"), ("1.0", "1.0.0"), ("1.01", "1.1"),
        ("0.1.0+box1", "0.1.0+box2"), ("1.2-3~bpo1", "1.2-3"), ("9", "10"), ("1.0-1", "1.0.1-1"), ("2:1", "10:0"),
    ]

    @Test("Debian versions compare as dpkg --compare-versions says")
    func debianVersions() throws {
        for (a, b) in Self.versionPairs {
            let (x, y) = (try #require(DebianVersion(a)), try #require(DebianVersion(b)))
            let expected = Self.dpkg(a, b)
            #expect(DebianVersion.compare(x, y) == expected, "\(a) vs \(b): dpkg says \(expected)")
            #expect(DebianVersion.compare(y, x) == -expected)
        }
        #expect(DebianVersion("1.01")! == DebianVersion("1.1")!)
        for bad in ["", "v1.0", "1.0 beta", "1.0-", "a:1.0", "1.0/2", String(repeating: "1", count: 65)] {
            #expect(DebianVersion(bad) == nil, "\(bad)")
        }
    }

    /// dpkg's own answer: -1, 0 or 1.
    static func dpkg(_ a: String, _ b: String) -> Int {
        func holds(_ op: String) -> Bool {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/dpkg")
            p.arguments = ["--compare-versions", a, op, b]
            try? p.run()
            p.waitUntilExit()
            return p.terminationStatus == 0
        }
        return holds("lt") ? -1 : holds("eq") ? 0 : 1
    }

    static func manifest(_ package: [UInt8], version: String = "0.2.0", seed: [UInt8]) throws -> UpdateManifest {
        var h = SHA256()
        h.update(package)
        return try UpdateManifest.signed(version: version, size: package.count, sha256: hexString(h.finalize()), seed: seed)
    }

    static func args(_ m: UpdateManifest) -> [String: JSONValue] {
        ["version": .string(m.version), "size": .int(m.size), "sha256": .string(m.sha256), "signature": .string(m.signature)]
    }

    @Test("the manifest: each field's form, the signer among the trusted keys, newer than the running version")
    func manifestChecks() throws {
        let seed = try UpdateKeys.generate()
        let trusted = UpdateKeys.text(publicKey: try UpdateKeys.publicKey(of: seed))
        let stranger = UpdateKeys.text(publicKey: try UpdateKeys.publicKey(of: try UpdateKeys.generate()))
        let m = try Self.manifest(Array(repeating: 7, count: 5000), seed: seed)
        #expect(try UpdateManifest.parse(Self.args(m)) == m)
        #expect(try m.signer(among: [stranger, trusted]) == trusted)

        func refusal(_ body: () throws -> Void) -> UpdateRefusal? {
            do { try body() } catch { return error as? UpdateRefusal }
            return nil
        }
        var a = Self.args(m)
        a["sha256"] = .string(String(m.sha256.uppercased()))
        #expect(refusal { _ = try UpdateManifest.parse(a) }?.reason == .badArguments)
        a = Self.args(m)
        a["size"] = .int(0)
        #expect(refusal { _ = try UpdateManifest.parse(a) }?.message.contains("\"size\"") == true)
        a = Self.args(m)
        a["version"] = .string("latest")
        #expect(refusal { _ = try UpdateManifest.parse(a) }?.message.contains("not a Debian package version") == true)
        a = Self.args(m)
        a["signature"] = .string("c2lnbmF0dXJl")
        #expect(refusal { _ = try UpdateManifest.parse(a) }?.message.contains("64-byte") == true)
        a = Self.args(m)
        a.removeValue(forKey: "version")
        #expect(refusal { _ = try UpdateManifest.parse(a) }?.message.contains("missing argument \"version\"") == true)

        #expect(refusal { _ = try m.signer(among: [stranger]) }?.reason == .badSignature)
        #expect(refusal { _ = try m.signer(among: []) }?.reason == .noTrustedKeys)
        // Any signed field changed: the signature no longer holds.
        for change in [
            { (x: inout UpdateManifest) in x.size += 1 }, { $0.version = "0.2.1" }, { $0.sha256 = String(repeating: "0", count: 64) },
        ] {
            var forged = m
            change(&forged)
            #expect(refusal { _ = try forged.signer(among: [trusted]) }?.reason == .badSignature)
        }
        #expect(refusal { try m.checkNewer(than: "0.1.0", allowDowngrade: false) } == nil)
        let same = refusal { try m.checkNewer(than: "0.2.0", allowDowngrade: false) }
        #expect(same?.reason == .notNewer && same?.message.contains("update.allow_downgrade") == true)
        #expect(refusal { try m.checkNewer(than: "0.10.0", allowDowngrade: false) }?.reason == .notNewer)
        #expect(refusal { try m.checkNewer(than: "0.10.0", allowDowngrade: true) } == nil)
    }

    @Test("chunks: new, duplicate, refused for a bad hash, length, index or header; missing runs; progress saved as JSON")
    func chunks() throws {
        let seed = try UpdateKeys.generate()
        let package = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let m = try Self.manifest(package, seed: seed)
        var t = UpdateTransfer(manifest: m, chunkSize: 1024, chunkTopic: "u/x")
        #expect(t.chunkCount == 10)
        #expect(t.length(of: 9) == 784)
        #expect(t.missing() == [[0, 9]])
        for i in [0, 1, 2, 5, 9] {
            let c = UpdateSender.chunk(package, index: i, chunkSize: 1024)
            #expect(t.check(c) == .new(index: i, offset: i * 1024))
            t.mark(i)
            #expect(t.check(c) == .duplicate(index: i))
        }
        #expect(t.missing() == [[3, 4], [6, 8]])
        #expect(t.missing(limit: 1) == [[3, 4]])
        #expect(t.receivedChunks == 5)
        #expect(t.receivedBytes == 4 * 1024 + 784)
        #expect(!t.isComplete)

        var damaged = UpdateSender.chunk(package, index: 3, chunkSize: 1024)
        damaged.setInteger(UInt8(0xff), at: 100)
        guard case .refused(let why) = t.check(damaged) else {
            Issue.record("a damaged chunk taken")
            return
        }
        #expect(why.contains("does not match its SHA-256"))
        var wrongIndex = UpdateSender.chunk(package, index: 3, chunkSize: 1024)
        wrongIndex.setInteger(UInt32(10), at: 0)
        guard case .refused(let past) = t.check(wrongIndex) else {
            Issue.record("index 10 taken")
            return
        }
        #expect(past.contains("past the last"))
        let short = UpdateSender.chunk(package, index: 3, chunkSize: 1000)
        guard case .refused(let length) = t.check(short) else {
            Issue.record("a short chunk taken")
            return
        }
        #expect(length.contains("not 1024"))
        guard case .refused = t.check(ByteBuffer(bytes: [0, 0, 0])) else {
            Issue.record("a header taken")
            return
        }

        let saved = try JSONEncoder().encode(t)
        let loaded = try JSONDecoder().decode(UpdateTransfer.self, from: saved)
        #expect(loaded == t)
        // A saved map that does not fit the package is refused, not trusted.
        var bent = try JSONSerialization.jsonObject(with: saved) as! [String: Any]
        bent["have"] = [255]
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(UpdateTransfer.self, from: JSONSerialization.data(withJSONObject: bent))
        }
        t.mark(0)
        #expect(t.receivedChunks == 5, "a chunk marked twice counts once")
        for i in [3, 4, 6, 7, 8] { t.mark(i) }
        #expect(t.isComplete && t.missing().isEmpty && t.receivedBytes == package.count)
    }

    @Test("the helper's check: the package against the signed request, the trusted keys, the installed version")
    func helperCheck() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "update-check-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let seed = try UpdateKeys.generate()
        var config = AgentConfig()
        config.update.trustedKeys = [UpdateKeys.text(publicKey: try UpdateKeys.publicKey(of: seed))]
        let package = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let path = dir.appendingPathComponent("package.deb").path
        try Data(package).write(to: URL(fileURLWithPath: path))
        let m = try Self.manifest(package, seed: seed)
        let request = Array(try JSONEncoder().encode(m))

        #expect(try UpdateCheck.verify(request: request, package: path, installed: "0.1.0", config: config) == m)
        func reason(_ request: [UInt8], installed: String = "0.1.0", _ c: AgentConfig? = nil) -> UpdateRefusal.Reason? {
            do { _ = try UpdateCheck.verify(request: request, package: path, installed: installed, config: c ?? config) } catch {
                return error.reason
            }
            return nil
        }
        #expect(reason(request, installed: "0.2.0") == .notNewer)
        var other = config
        other.update.trustedKeys = [UpdateKeys.text(publicKey: try UpdateKeys.publicKey(of: try UpdateKeys.generate()))]
        #expect(reason(request, other) == .badSignature)
        other = config
        other.update.maxBytes = 1000
        #expect(reason(request, other) == .tooLarge)
        #expect(reason(Array("{}".utf8)) == .badArguments)
        // The same signed request, the package changed after the agent checked it.
        var changed = package
        changed[1234] ^= 1
        try Data(changed).write(to: URL(fileURLWithPath: path))
        #expect(reason(request) == .hashMismatch)
        try Data(package.prefix(1000)).write(to: URL(fileURLWithPath: path))
        #expect(reason(request) == .sizeMismatch)

    }
}
