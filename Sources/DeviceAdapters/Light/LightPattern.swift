import FoundationEssentials
import NIOConcurrencyHelpers
import NIOCore

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

/// Plays patterns on a light: each step is a task scheduled on an event loop, on its monotonic
/// clock; the light's driver only sets the line. A new pattern takes over at once. What plays, and
/// the next step's timer, belong to the loop; `current` is a copy other threads can read.
public final class LightPlayer: Sendable {
    public let light: any StatusLight
    private let loop: any EventLoop
    private let onError: @Sendable (String) -> Void
    private let playing: NIOLoopBoundBox<Playing>
    private let shown = NIOLockedValueBox<LightPattern>(.off)

    struct Playing {
        var pattern: LightPattern?
        var timer: Scheduled<Void>?
        var stopped = false
    }

    public init(light: any StatusLight, loop: any EventLoop, onError: @escaping @Sendable (String) -> Void = { _ in }) {
        self.light = light
        self.loop = loop
        self.onError = onError
        playing = .makeBoxSendingValue(Playing(), eventLoop: loop)
    }

    public var current: LightPattern { shown.withLockedValue { $0 } }

    public func play(_ p: LightPattern) {
        loop.execute { self.start(p) }
    }

    /// Turns the light off; later patterns are ignored.
    public func stop() -> EventLoopFuture<Void> {
        loop.submit {
            self.playing.value.timer?.cancel()
            self.playing.value = Playing(stopped: true)
            self.shown.withLockedValue { $0 = .off }
            self.set(false)
        }
    }

    private func start(_ p: LightPattern) {
        guard !playing.value.stopped, playing.value.pattern != p else { return }
        playing.value.timer?.cancel()
        playing.value.timer = nil
        playing.value.pattern = p
        shown.withLockedValue { $0 = p }
        if p.steps.isEmpty { set(p.solid) } else { step(0, of: p, at: loop.now) }
    }

    /// Shows step `i` (even: on) and schedules the next at the end of its duration, counted from
    /// when this one was due, so the rhythm does not drift; a loop that was held up for more than
    /// a second (a suspended board) starts again from now instead of catching up.
    private func step(_ i: Int, of p: LightPattern, at due: NIODeadline) {
        set(i % 2 == 0)
        let now = loop.now
        let from = now - due > .seconds(1) ? now : due
        let next = from + .milliseconds(Int64(p.steps[i]))
        playing.value.timer = loop.scheduleTask(deadline: next) { [self] in
            guard playing.value.pattern == p else { return }
            step((i + 1) % p.steps.count, of: p, at: next)
        }
    }

    private func set(_ on: Bool) {
        do { try light.set(on) } catch { onError("\(error)") }
    }
}
