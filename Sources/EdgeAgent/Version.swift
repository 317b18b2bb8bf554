/// The agent's version (also in the Debian package and the status document).
public enum EdgeAgentVersion {
    public static let current = "0.1.0"
}
