import FoundationEssentials
import NIOCore

/// A synthetic camera: detection and motion events at a steady rate (the default source for
/// development on x86). Deterministic per seed, so tests can expect its fields.
public final class SimulatedCamera: EventSource, @unchecked Sendable {
    public let name: String
    public let kind = "simulated"
    public let rate: Double
    private let labels: [String]
    private let worker = Worker()
    private let counts = Counters()

    /// `rate`: events per second (0.001...1000).
    public init(name: String, rate: Double, labels: [String] = ["person", "car", "bicycle", "dog"]) {
        self.name = name
        self.rate = rate
        self.labels = labels.isEmpty ? ["object"] : labels
    }

    public var counters: [String: Int] { counts.all }

    public func start(_ sink: @escaping EventSink) throws {
        let labels = labels
        let interval = 1 / rate
        let counts = counts
        worker.start(name: "source-\(name)") { w in
            var rng = SystemRandomNumberGenerator()
            var n = 0
            // Scheduled on the monotonic clock: a step of the wall clock changes nothing, and a
            // late wake-up (a suspended board) starts a new schedule instead of a burst.
            let step = TimeAmount.nanoseconds(Int64(interval * 1e9))
            var next = NIODeadline.now()
            while !w.isStopped {
                n += 1
                let event: SourceEvent
                if n % 4 == 0 {
                    event = SourceEvent(
                        type: "motion",
                        fields: [
                            "area": .number((Double.random(in: 0.01...0.5, using: &rng) * 1000).rounded() / 1000),
                            "camera": .string(self.name),
                        ])
                } else {
                    let x = Int.random(in: 0..<1600, using: &rng)
                    let y = Int.random(in: 0..<900, using: &rng)
                    event = SourceEvent(
                        type: "detection",
                        fields: [
                            "label": .string(labels[Int.random(in: 0..<labels.count, using: &rng)]),
                            "score": .number((Double.random(in: 0.5...0.99, using: &rng) * 1000).rounded() / 1000),
                            "bbox": .object([
                                "x": .int(x), "y": .int(y), "w": .int(Int.random(in: 20...320, using: &rng)),
                                "h": .int(Int.random(in: 20...180, using: &rng)),
                            ]),
                            "camera": .string(self.name),
                        ])
                }
                sink(event)
                counts.add("emitted")
                next = next + step
                let now = NIODeadline.now()
                if next > now { if !w.sleep(until: next) { break } } else if now - next > .seconds(1) { next = now }
            }
        }
    }

    public func stop() { worker.stop() }
}
