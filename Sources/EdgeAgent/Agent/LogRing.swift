import Logging
import NIOConcurrencyHelpers

/// The last log lines in memory, for `log/tail` (read a board's log over MQTT): at most `capacity`
/// lines (`log_ring_lines`; 0: none kept), each cut to `maxLineBytes`; the oldest go first.
public final class LogRing: Sendable {
    public struct Line: Sendable, Equatable {
        public var level: Logger.Level
        /// As written to stderr without systemd: time, level, label, message, metadata.
        public var text: String
    }

    /// What one line keeps at most (a longer one is cut and ends in "…").
    public static let maxLineBytes = 1024
    /// The process's ring (what `AgentLogHandler` writes into).
    public static let shared = LogRing(capacity: 500)

    private struct State {
        var lines: [Line] = []
        /// Where the oldest line is once the ring is full.
        var start = 0
        var capacity: Int
    }

    private let state: NIOLockedValueBox<State>

    public init(capacity: Int) { state = NIOLockedValueBox(State(capacity: max(0, capacity))) }

    /// Keeps at most `capacity` lines from now on (the newest of those held).
    public func resize(_ capacity: Int) {
        state.withLockedValue { s in
            let held = Self.ordered(s)
            s = State(lines: Array(held.suffix(max(0, capacity))), capacity: max(0, capacity))
        }
    }

    public func append(_ level: Logger.Level, _ text: String) {
        var line = text
        if line.utf8.count > Self.maxLineBytes {
            // Whole characters only, and room for the mark (3 bytes).
            var bytes = 0
            line =
                String(
                    text.prefix { c in
                        bytes += c.utf8.count
                        return bytes <= Self.maxLineBytes - 3
                    }) + "…"
        }
        state.withLockedValue { s in
            guard s.capacity > 0 else { return }
            if s.lines.count < s.capacity {
                s.lines.append(Line(level: level, text: line))
            } else {
                s.lines[s.start] = Line(level: level, text: line)
                s.start = (s.start + 1) % s.capacity
            }
        }
    }

    /// How many lines it keeps.
    public var capacity: Int { state.withLockedValue { $0.capacity } }

    /// The last `count` lines at or above `level`, oldest first.
    public func tail(_ count: Int, atLeast level: Logger.Level) -> [Line] {
        Array(state.withLockedValue { Self.ordered($0) }.filter { $0.level >= level }.suffix(max(0, count)))
    }

    private static func ordered(_ s: State) -> [Line] { Array(s.lines[s.start...] + s.lines[..<s.start]) }
}
