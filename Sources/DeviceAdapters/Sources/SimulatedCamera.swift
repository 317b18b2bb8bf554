import NIOCore

/// A synthetic camera: detection and motion events at a steady rate (the default source for
/// development on x86): random labels, scores and boxes of a fixed shape.
public final class SimulatedCamera: EventSource {
    public let name: String
    public let kind = "simulated"
    public let rate: Double
    private let labels: [String]
    private let counts = Counters()

    /// `rate`: events per second (0.001...1000).
    public init(name: String, rate: Double, labels: [String] = ["person", "car", "bicycle", "dog"]) {
        self.name = name
        self.rate = rate
        self.labels = labels.isEmpty ? ["object"] : labels
    }

    public var counters: [String: Int] { counts.all }

    /// Ends with `CancellationError` when cancelled.
    public func run(_ context: SourceContext) async throws {
        context.ready()
        var rng = SystemRandomNumberGenerator()
        var n = 0
        // Scheduled on the loop's monotonic clock: a step of the wall clock changes nothing, and a
        // late wake-up (a suspended board) starts a new schedule instead of a burst.
        let step = TimeAmount.nanoseconds(Int64(1e9 / rate))
        var next = context.loop.now
        while true {
            n += 1
            context.sink(event(n, &rng))
            counts.add("emitted")
            next = next + step
            let now = context.loop.now
            if next > now {
                try await context.loop.sleep(until: next)
            } else {
                try Task.checkCancellation()
                if now - next > .seconds(1) { next = now }
            }
        }
    }

    private func event(_ n: Int, _ rng: inout SystemRandomNumberGenerator) -> SourceEvent {
        if n % 4 == 0 {
            return SourceEvent(
                type: "motion",
                fields: [
                    "area": .number((Double.random(in: 0.01...0.5, using: &rng) * 1000).rounded() / 1000),
                    "camera": .string(name),
                ])
        }
        let x = Int.random(in: 0..<1600, using: &rng)
        let y = Int.random(in: 0..<900, using: &rng)
        return SourceEvent(
            type: "detection",
            fields: [
                "label": .string(labels[Int.random(in: 0..<labels.count, using: &rng)]),
                "score": .number((Double.random(in: 0.5...0.99, using: &rng) * 1000).rounded() / 1000),
                "bbox": .object([
                    "x": .int(x), "y": .int(y), "w": .int(Int.random(in: 20...320, using: &rng)),
                    "h": .int(Int.random(in: 20...180, using: &rng)),
                ]),
                "camera": .string(name),
            ])
    }
}
