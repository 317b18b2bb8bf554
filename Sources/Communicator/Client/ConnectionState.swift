/// The connection's state, as the application sees it.
public enum ConnectionState: Sendable, Equatable, CustomStringConvertible {
    case idle
    case connecting
    case connected
    /// Waiting `nextDelay` seconds before reconnect attempt number `attempt`.
    case reconnecting(attempt: Int, nextDelay: Double)
    case disconnected(reason: String?)

    public var description: String {
        switch self {
        case .idle: "idle"
        case .connecting: "connecting"
        case .connected: "connected"
        case .reconnecting(let a, let d): "reconnecting (attempt \(a) in \((d * 10).rounded() / 10) s)"
        case .disconnected(let r): "disconnected" + (r.map { ": \($0)" } ?? "")
        }
    }
}
