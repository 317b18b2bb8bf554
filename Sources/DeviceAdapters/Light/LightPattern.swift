import FoundationEssentials
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A repeating LED pattern: alternating on / off durations, starting with on.
/// Written in configuration as `on`, `off`, `blink ON_MS/OFF_MS` or `pattern A/B/C/D...`.
public struct LightPattern: Sendable, Equatable, CustomStringConvertible {
    /// Durations in milliseconds, alternately on and off; empty = solid `solid`.
    public var steps: [Int]
    public var solid: Bool

    public static let on = LightPattern(steps: [], solid: true)
    public static let off = LightPattern(steps: [], solid: false)
    public static func blink(_ onMs: Int, _ offMs: Int) -> LightPattern { LightPattern(steps: [onMs, offMs], solid: false) }

    public init(steps: [Int], solid: Bool) {
        self.steps = steps
        self.solid = solid
    }

    /// Parses the configuration form; the error says what is accepted.
    public init(parsing text: String) throws {
        let t = text.trimmed.lowercased()
        if t == "on" {
            self = .on
            return
        }
        if t == "off" {
            self = .off
            return
        }
        let parts = t.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0] == "blink" || parts[0] == "pattern" else {
            throw LightError(
                description:
                    "\"\(text)\" is not a pattern: use on, off, \"blink ON_MS/OFF_MS\" or \"pattern A/B/C/D\" (milliseconds, alternately on and off)"
            )
        }
        let ms = parts[1].split(separator: "/").map { Int($0.trimmed) }
        guard !ms.isEmpty, ms.count % 2 == 0, ms.allSatisfy({ ($0 ?? 0) >= 20 && ($0 ?? 0) <= 60_000 }) else {
            throw LightError(description: "\"\(text)\": give an even number of durations, each 20...60000 ms, like \"blink 100/100\"")
        }
        if parts[0] == "blink" && ms.count != 2 {
            throw LightError(description: "\"\(text)\": blink takes ON_MS/OFF_MS; use pattern for longer sequences")
        }
        self = LightPattern(steps: ms.map { $0! }, solid: false)
    }

    public var description: String {
        if steps.isEmpty { return solid ? "on" : "off" }
        return (steps.count == 2 ? "blink " : "pattern ") + steps.map(String.init).joined(separator: "/")
    }
}

/// Plays patterns on a light, on a thread of its own. A new pattern takes over at once.
public final class LightPlayer: @unchecked Sendable {
    public let light: StatusLight
    private let condition = Condition()
    private var pattern: LightPattern = .off
    private var generation = 0
    private var running = true
    private var thread: BackgroundThread?
    private let onError: @Sendable (String) -> Void

    public init(light: StatusLight, onError: @escaping @Sendable (String) -> Void = { _ in }) {
        self.light = light
        self.onError = onError
        let t = BackgroundThread(name: "status-light") { [self] in run() }
        thread = t
        t.start()
    }

    public var current: LightPattern {
        condition.lock()
        defer { condition.unlock() }
        return pattern
    }

    public func play(_ p: LightPattern) {
        condition.lock()
        if p != pattern {
            pattern = p
            generation += 1
            condition.broadcast()
        }
        condition.unlock()
    }

    /// Turns the light off and ends the thread.
    public func stop() {
        condition.lock()
        pattern = .off
        running = false
        generation += 1
        condition.broadcast()
        condition.unlock()
        var spins = 0
        while thread?.isFinished == false && spins < 200 {
            usleep(5_000)
            spins += 1
        }
        try? light.set(false)
    }

    private func set(_ on: Bool) {
        do { try light.set(on) } catch { onError("\(error)") }
    }

    private func run() {
        condition.lock()
        while running {
            let p = pattern
            let gen = generation
            if p.steps.isEmpty {
                condition.unlock()
                set(p.solid)
                condition.lock()
                while running && generation == gen { condition.wait() }
                continue
            }
            var i = 0
            while running && generation == gen {
                condition.unlock()
                set(i % 2 == 0)
                condition.lock()
                let until = NIODeadline.now() + .milliseconds(Int64(p.steps[i]))
                while running && generation == gen && NIODeadline.now() < until { _ = condition.wait(until: until) }
                i = (i + 1) % p.steps.count
            }
        }
        condition.unlock()
    }
}
