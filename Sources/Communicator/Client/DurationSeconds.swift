import NIOCore

// `MQTTConfig` holds its durations as `Duration`; the seed's initialiser, the machines and the
// messages count in seconds.
extension Duration {
    /// The seed's seconds. A value that is not a number becomes zero (which `problems()` refuses);
    /// beyond ±10^12 s it is clamped (`Duration` cannot hold an infinity).
    init(seedSeconds s: Double) {
        if s.isNaN {
            self = .zero
        } else {
            self = .seconds(Swift.max(-1e12, Swift.min(1e12, s)))
        }
    }

    /// In seconds, for the machines (which count in seconds) and for messages.
    var inSeconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }

    /// For NIO's timers.
    var timeAmount: TimeAmount {
        let (s, atto) = components
        return .nanoseconds(s.multipliedReportingOverflow(by: 1_000_000_000).overflow ? .max : s * 1_000_000_000 + atto / 1_000_000_000)
    }
}
