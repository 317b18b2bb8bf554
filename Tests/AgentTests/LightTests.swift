import DeviceAdapters
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing

@testable import EdgeAgent

/// A light that records each change at the time of the loop that set it.
final class RecordingLight: StatusLight {
    let name = "recording"
    private let loop: EmbeddedEventLoop
    private let changes = NIOLockedValueBox<[(at: NIODeadline, on: Bool)]>([])

    init(loop: EmbeddedEventLoop) { self.loop = loop }

    func set(_ on: Bool) {
        changes.withLockedValue { c in
            if c.last?.on != on { c.append((loop.now, on)) }
        }
    }

    var transitions: [(at: NIODeadline, on: Bool)] { changes.withLockedValue { $0 } }

    /// Milliseconds between the transitions after the first `from`.
    func gaps(after from: Int) -> [Int64] {
        let t = Array(transitions.dropFirst(from))
        return zip(t, t.dropFirst()).map { ($1.at - $0.at).nanoseconds / 1_000_000 }
    }
}

@Suite("Status light")
struct LightTests {
    @Test("patterns parse from the configuration's words, and bad ones say what is accepted")
    func parsing() throws {
        #expect(try LightPattern(parsing: "on") == .on)
        #expect(try LightPattern(parsing: " OFF ") == .off)
        #expect(try LightPattern(parsing: "blink 100/300") == .blink(100, 300))
        #expect(try LightPattern(parsing: "pattern 100/100/100/700").steps == [100, 100, 100, 700])
        for bad in ["blink", "blink 100", "blink 5/5", "pattern 100/100/100", "strobe 1/1", "blink 100/100/100/100"] {
            #expect(throws: LightError.self, "\(bad)") { try LightPattern(parsing: bad) }
        }
    }

    /// The gaps (ms) between transitions of `pattern` played for `time` on a fresh light.
    func rhythm(_ pattern: LightPattern, for time: TimeAmount) -> [Int64] {
        let loop = EmbeddedEventLoop()
        let light = RecordingLight(loop: loop)
        LightPlayer(light: light, loop: loop).play(pattern)
        loop.advanceTime(by: time)
        return light.gaps(after: 0)
    }

    /// On the embedded loop's virtual clock: each step exactly its duration, no sleeps.
    @Test("each agent state plays its pattern on the light, step by step on the loop's clock")
    func statesOnTheLight() {
        let p = AgentState.defaultPatterns
        #expect(rhythm(p[.connected]!, for: .seconds(3)) == [], "connected: solid, no blinking")
        #expect(rhythm(p[.connecting]!, for: .milliseconds(1050)) == Array(repeating: 100, count: 10), "connecting: blink 100/100")
        #expect(rhythm(p[.offline]!, for: .milliseconds(4500)) == [1000, 1000, 1000, 1000], "offline: blink 1000/1000")
        // Three short flashes, then a long pause: the distinct error pattern.
        #expect(rhythm(p[.error]!, for: .milliseconds(3050)) == [100, 100, 100, 100, 100, 1000] + [100, 100, 100, 100, 100, 1000])
        #expect(rhythm(p[.stopped]!, for: .seconds(3)) == [])
    }

    @Test("a new pattern takes over at once, mid-step; a stopped player turns the light off and ignores later patterns")
    func takeOverAndStop() throws {
        let loop = EmbeddedEventLoop()
        let light = RecordingLight(loop: loop)
        let player = LightPlayer(light: light, loop: loop)
        let start = loop.now
        player.play(.blink(1000, 1000))
        loop.advanceTime(by: .milliseconds(300))
        player.play(.off)
        loop.run()
        #expect(light.transitions.map { ($0.at - start).nanoseconds / 1_000_000 } == [0, 300])
        #expect(light.transitions.map(\.on) == [true, false] && player.current == .off)
        loop.advanceTime(by: .seconds(3))
        #expect(light.transitions.count == 2, "the old pattern's next step does not come")
        player.play(.on)
        loop.run()
        #expect(light.transitions.last?.on == true && player.current == .on)
        let stopped = player.stop()
        loop.run()
        try stopped.wait()
        #expect(light.transitions.last?.on == false)
        player.play(.blink(100, 100))
        loop.advanceTime(by: .seconds(1))
        #expect(light.transitions.last?.on == false && player.current == .off)
    }
}
