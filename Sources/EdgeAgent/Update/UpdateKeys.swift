import CEd25519
import DeviceAdapters
import FoundationEssentials

#if canImport(Glibc)
import Glibc
#endif

/// Ed25519 keys of signed updates (docs/UPDATES.md). A public key is written as
/// `ed25519:<base64 of its 32 bytes>` (in `update.trusted_keys` and `edge-agent update keygen`'s
/// `.pub` file); the private key file holds `ed25519-private:<base64 of the 32-byte seed>`.
/// The crypto is the system's OpenSSL (CEd25519).
public enum UpdateKeys {
    public static let publicPrefix = "ed25519:"
    public static let privatePrefix = "ed25519-private:"

    public struct Problem: Error, CustomStringConvertible {
        public var description: String
    }

    /// The 32 bytes of a public key written as `ed25519:<base64>` (nil with the reason otherwise).
    public static func publicKey(_ text: String) -> Result<[UInt8], Problem> {
        decode(text, prefix: publicPrefix, what: "public key")
    }

    public static func privateKey(_ text: String) -> Result<[UInt8], Problem> {
        decode(text, prefix: privatePrefix, what: "private key")
    }

    private static func decode(_ text: String, prefix: String, what: String) -> Result<[UInt8], Problem> {
        let t = text.trimmed
        guard t.hasPrefix(prefix) else {
            return .failure(Problem(description: "an Ed25519 \(what) is written \(prefix)<base64 of 32 bytes> (edge-agent update keygen)"))
        }
        guard let data = Data(base64Encoded: String(t.dropFirst(prefix.count))), data.count == 32 else {
            return .failure(Problem(description: "the \(what) after \(prefix) is not the base64 of 32 bytes"))
        }
        return .success(Array(data))
    }

    public static func text(publicKey: [UInt8]) -> String { publicPrefix + Data(publicKey).base64EncodedString() }
    public static func text(privateKey: [UInt8]) -> String { privatePrefix + Data(privateKey).base64EncodedString() }

    /// Why Ed25519 cannot be used here (no libcrypto), or nil.
    public static var unavailable: String? {
        let e = String(cString: edge_ed25519_library_error())
        return e.isEmpty ? nil : e
    }

    public static var libraryVersion: String { String(cString: edge_ed25519_library_version()) }

    /// True when `signature` (64 bytes) is `key`'s over `message`. Throws when there is no libcrypto.
    public static func verify(_ signature: [UInt8], of message: [UInt8], by key: [UInt8]) throws(Problem) -> Bool {
        guard signature.count == 64, key.count == 32 else { return false }
        let r = key.withUnsafeBufferPointer { k in
            signature.withUnsafeBufferPointer { s in
                message.withUnsafeBufferPointer { m in edge_ed25519_verify(k.baseAddress, m.baseAddress, m.count, s.baseAddress) }
            }
        }
        if r < 0 { throw Problem(description: unavailable ?? "Ed25519 is unavailable") }
        return r == 1
    }

    public static func sign(_ message: [UInt8], with seed: [UInt8]) throws(Problem) -> [UInt8] {
        var signature = [UInt8](repeating: 0, count: 64)
        let r = seed.withUnsafeBufferPointer { k in
            message.withUnsafeBufferPointer { m in edge_ed25519_sign(k.baseAddress, m.baseAddress, m.count, &signature) }
        }
        if r != 0 { throw Problem(description: unavailable ?? "Ed25519 signing failed") }
        return signature
    }

    public static func publicKey(of seed: [UInt8]) throws(Problem) -> [UInt8] {
        var key = [UInt8](repeating: 0, count: 32)
        if seed.withUnsafeBufferPointer({ edge_ed25519_public_key($0.baseAddress, &key) }) != 0 {
            throw Problem(description: unavailable ?? "not an Ed25519 private key")
        }
        return key
    }

    /// A new private key (seed) from the kernel's random source.
    public static func generate() throws(Problem) -> [UInt8] {
        var seed = [UInt8](repeating: 0, count: 32)
        guard seed.withUnsafeMutableBytes({ getentropy($0.baseAddress, 32) == 0 ? 32 : -1 }) == 32 else {
            throw Problem(description: "no random bytes from the kernel: \(String(cString: strerror(errno)))")
        }
        return seed
    }
}
