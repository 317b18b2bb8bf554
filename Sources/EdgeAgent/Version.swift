#if canImport(Glibc)
import Glibc
#endif

/// The agent's version (also in the Debian package and the status document).
public enum EdgeAgentVersion {
    public static let current = "0.1.0"

    /// Where the Debian package records its own version (deploy/build-deb.sh): a package may be
    /// a rebuild of the same binary (0.1.0+fix1), and updates compare package versions.
    public static let packageVersionFile = "/usr/share/edge-agent/version"

    /// The installed package's version, if the package recorded one.
    public static var installedPackage: String? {
        guard let f = fopen(packageVersionFile, "r") else { return nil }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 80)
        guard fgets(&line, 80, f) != nil else { return nil }
        let text = String(decoding: line.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return DebianVersion(text) != nil ? text : nil
    }
}
