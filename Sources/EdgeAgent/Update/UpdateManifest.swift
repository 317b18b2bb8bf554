import DeviceAdapters
import FoundationEssentials

/// Why an update is not taken: a code programs can switch on (the command's error code, the
/// info document's `update.last.result`) and a message that says the cause and the fix.
public struct UpdateRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Reason: String, Sendable {
        case badArguments = "bad_arguments"
        case noTrustedKeys = "no_trusted_keys"
        case cryptoUnavailable = "crypto_unavailable"
        case badSignature = "bad_signature"
        case notNewer = "not_newer"
        case tooLarge = "too_large"
        case noSpace = "no_space"
        case sizeMismatch = "size_mismatch"
        case hashMismatch = "hash_mismatch"
        case busy
        case storage
    }
    public var reason: Reason
    public var message: String
    public var description: String { "\(reason.rawValue): \(message)" }

    init(_ reason: Reason, _ message: String) {
        self.reason = reason
        self.message = message
    }
}

/// What the operator announces and signs: the package's version, size and SHA-256. The
/// signature (Ed25519, by a key in `update.trusted_keys`) covers `signedText`, one field a line,
/// so no field can be read as another; the package itself is then checked against size and
/// hash. The same manifest goes to the privileged helper, which checks it all again.
public struct UpdateManifest: Codable, Equatable, Sendable {
    public var version: String
    public var size: Int
    /// 64 lowercase hex digits.
    public var sha256: String
    /// Base64 of the 64-byte signature.
    public var signature: String

    public init(version: String, size: Int, sha256: String, signature: String) {
        self.version = version
        self.size = size
        self.sha256 = sha256
        self.signature = signature
    }

    public static func signedText(version: String, size: Int, sha256: String) -> [UInt8] {
        Array("edge-agent update\nversion \(version)\nsize \(size)\nsha256 \(sha256)\n".utf8)
    }

    public var signedText: [UInt8] { Self.signedText(version: version, size: size, sha256: sha256) }

    /// A manifest signed with `seed` (the operator's side: `edge-agent send ... agent/update`).
    public static func signed(version: String, size: Int, sha256: String, seed: [UInt8]) throws -> UpdateManifest {
        let signature = try UpdateKeys.sign(signedText(version: version, size: size, sha256: sha256), with: seed)
        return UpdateManifest(version: version, size: size, sha256: sha256, signature: Data(signature).base64EncodedString())
    }

    /// The manifest of an `agent/update` request's arguments, every field checked for form.
    static func parse(_ args: [String: JSONValue]) throws(UpdateRefusal) -> UpdateManifest {
        func text(_ key: String) throws(UpdateRefusal) -> String {
            guard case .string(let s)? = args[key] else {
                throw UpdateRefusal(
                    .badArguments, "missing argument \"\(key)\" (a string): an update names version, size, sha256 and signature")
            }
            return s
        }
        let version = try text("version")
        guard DebianVersion(version) != nil else {
            throw UpdateRefusal(
                .badArguments, "\"version\" \"\(printable(version.utf8, limit: 64))\" is not a Debian package version (e.g. 1.4.2-1)")
        }
        guard case .int(let size)? = args["size"], size > 0 else {
            throw UpdateRefusal(.badArguments, "\"size\" must be the package's size in bytes, a whole number above 0")
        }
        let sha = try text("sha256")
        guard sha.utf8.count == 64, sha.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }) else {
            throw UpdateRefusal(.badArguments, "\"sha256\" must be the package's SHA-256 as 64 lowercase hex digits")
        }
        let signature = try text("signature")
        guard let bytes = Data(base64Encoded: signature), bytes.count == 64 else {
            throw UpdateRefusal(.badArguments, "\"signature\" must be the base64 of a 64-byte Ed25519 signature")
        }
        return UpdateManifest(version: version, size: size, sha256: sha, signature: signature)
    }

    /// The trusted key that signed this manifest, or why none did.
    func signer(among trusted: [String]) throws(UpdateRefusal) -> String {
        guard !trusted.isEmpty else {
            throw UpdateRefusal(
                .noTrustedKeys, "this device trusts no update key: add the .pub of edge-agent update keygen to update.trusted_keys")
        }
        if let why = UpdateKeys.unavailable { throw UpdateRefusal(.cryptoUnavailable, why) }
        let signature = Array(Data(base64Encoded: self.signature) ?? Data())
        for key in trusted {
            guard case .success(let k) = UpdateKeys.publicKey(key) else { continue }
            do { if try UpdateKeys.verify(signature, of: signedText, by: k) { return key } } catch {
                throw UpdateRefusal(.cryptoUnavailable, error.description)
            }
        }
        throw UpdateRefusal(
            .badSignature,
            "the signature over version \(version), size \(size) and sha256 \(sha256.prefix(12))… is not made by any key in update.trusted_keys (\(trusted.count)); nothing changed"
        )
    }

    /// Newer than `running`, unless downgrades are allowed.
    func checkNewer(than running: String, allowDowngrade: Bool) throws(UpdateRefusal) {
        guard !allowDowngrade else { return }
        guard let new = DebianVersion(version), let old = DebianVersion(running) else { return }
        if !(new > old) {
            throw UpdateRefusal(
                .notNewer,
                "version \(version) is not newer than the running \(running); nothing changed (update.allow_downgrade: true installs it anyway)"
            )
        }
    }
}
