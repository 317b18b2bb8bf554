import FoundationEssentials

/// The privileged helper's checks (`edge-agent update verify`, run as root by
/// edge-agent-update.service): the helper trusts nothing the agent wrote. It reads the request
/// and the package from its own copies, and checks again what the agent checked: the package's
/// size and SHA-256 against the manifest, the signature against `update.trusted_keys` of the
/// configuration, and that the version is newer than the installed package.
public enum UpdateCheck {
    public static func verify(
        request: [UInt8], package path: String, installed: String, config: AgentConfig
    ) throws(UpdateRefusal)
        -> UpdateManifest
    {
        let m: UpdateManifest
        do { m = try JSONDecoder().decode(UpdateManifest.self, from: Data(request)) } catch {
            throw UpdateRefusal(.badArguments, "the request is not an update manifest: \(error)")
        }
        _ = try UpdateManifest.parse([
            "version": .string(m.version), "size": .int(m.size), "sha256": .string(m.sha256), "signature": .string(m.signature),
        ])
        guard m.size <= config.update.maxBytes else {
            throw UpdateRefusal(.tooLarge, "the package is \(m.size) bytes, more than update.max_bytes \(config.update.maxBytes)")
        }
        _ = try m.signer(among: config.update.trustedKeys)
        let (sha, size): (String, Int)
        do { (sha, size) = try UpdateFiles.hash(path) } catch { throw UpdateRefusal(.storage, error.description) }
        guard size == m.size else { throw UpdateRefusal(.sizeMismatch, "the package has \(size) bytes, not the signed \(m.size)") }
        guard sha == m.sha256 else {
            throw UpdateRefusal(.hashMismatch, "the package's SHA-256 is \(sha.prefix(12))…, not the signed \(m.sha256.prefix(12))…")
        }
        try m.checkNewer(than: installed, allowDowngrade: config.update.allowDowngrade)
        return m
    }
}
