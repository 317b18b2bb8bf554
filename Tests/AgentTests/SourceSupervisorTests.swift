import NIOCore
import Testing

@testable import EdgeAgent

/// The supervisor event by event, without sources or tasks: integers for replies, a clock in hand.
@Suite("Source supervisor")
struct SourceSupervisorTests {
    typealias Machine = SourceSupervisor<Int>
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    func machine() -> Machine { Machine(initialDelay: .seconds(1), maxDelay: .seconds(8), stableAfter: .seconds(30)) }

    @Test("a failing source is started again after a back-off that doubles to its maximum; a run that stayed up resets it")
    func backOff() {
        var m = machine()
        #expect(m.handle(.begin) == [.start(run: 1)])
        #expect(m.handle(.ready(run: 1, at: t0)) == [])
        #expect(m.status.state == "running")
        var delays: [TimeAmount] = []
        var run = 1
        for _ in 0..<6 {
            let actions = m.handle(.ended(run: run, error: "boom", at: t0 + .seconds(1)))
            guard case .failed(run, "boom", let delay) = actions.first, case .retry(let next, delay) = actions.last else {
                Issue.record("\(actions)")
                return
            }
            #expect(m.status.state == "backing_off" && m.status.lastError == "boom")
            delays.append(delay)
            #expect(m.handle(.retryDue(run: next)) == [.start(run: next)])
            run = next
        }
        #expect(delays == [1, 2, 4, 8, 8, 8].map { TimeAmount.seconds($0) })
        #expect(m.status.errors == 6 && m.status.restarts == 6)
        // Up for 30 s, then a failure: the first delay again.
        #expect(m.handle(.ready(run: run, at: t0)) == [])
        let after = m.handle(.ended(run: run, error: "it stopped by itself", at: t0 + .seconds(31)))
        #expect(after.first == .failed(run: run, error: "it stopped by itself", retryIn: .seconds(1)))
    }

    @Test("restart and disable cancel the run and answer once it has ended (restart: once the new run is up); stale events change nothing")
    func commands() {
        var m = machine()
        _ = m.handle(.begin)
        _ = m.handle(.ready(run: 1, at: t0))
        #expect(m.handle(.restart(7)) == [.cancel(run: 1)])
        #expect(m.status.state == "stopping")
        #expect(m.handle(.ready(run: 1, at: t0)) == [], "a late ready of the old run")
        #expect(m.handle(.ended(run: 1, error: nil, at: t0)) == [.start(run: 2)])
        #expect(m.handle(.ready(run: 2, at: t0)) == [.answer])
        #expect(m.takeWaiting() == [7] && m.status.running && m.status.restarts == 1)
        #expect(m.handle(.disable(8)) == [.cancel(run: 2)])
        #expect(m.handle(.ended(run: 2, error: nil, at: t0)) == [.answer])
        #expect(m.takeWaiting() == [8] && m.status.state == "disabled" && !m.status.enabled)
        // Disabled: nothing starts by itself, a stale retry does nothing; enable starts a new run.
        #expect(m.handle(.retryDue(run: 2)) == [])
        #expect(m.handle(.enable(9)) == [.start(run: 3)])
        #expect(m.handle(.ended(run: 3, error: "no such folder", at: t0)).last == .answer, "a failed start answers too")
        #expect(m.takeWaiting() == [9] && m.status.state == "backing_off" && m.status.lastError == "no such folder")
        // Cancelled from outside (the shutdown): not a failure.
        _ = m.handle(.retryDue(run: 4))
        _ = m.handle(.ready(run: 4, at: t0))
        #expect(m.handle(.ended(run: 4, error: nil, at: t0)) == [] && m.status.errors == 1)
    }

    @Test("source_restart takes a back-off whose maximum is not below its start, and says which key is wrong")
    func restartKeys() throws {
        let base = "device_id: d\nsources:\n  - {type: simulated, name: c}\n"
        let c = try AgentConfig.parse(
            base + "source_restart:\n  initial_delay: 2\n  max_delay: 30\n", source: "t", environment: [:], baseDirectory: "/x")
        #expect(c.sourceRestart.initialDelay == 2 && c.sourceRestart.maxDelay == 30)
        #expect {
            try AgentConfig.parse(
                base + "source_restart:\n  initial_delay: 10\n  max_delay: 5\n", source: "t", environment: [:], baseDirectory: "/x")
        } throws: { "\($0)".contains("source_restart.max_delay: 5.0 is below initial_delay 10.0") }
    }

    @Test("during a back-off, enable and restart start at once and the timer's end is ignored; disable stops the retries")
    func duringBackOff() {
        var m = machine()
        _ = m.handle(.begin)
        let failed = m.handle(.ended(run: 1, error: "x", at: t0))
        #expect(failed.contains(.retry(run: 2, after: .seconds(1))))
        #expect(m.handle(.restart(nil)) == [.start(run: 3)])
        #expect(m.handle(.retryDue(run: 2)) == [], "the back-off's timer, after the restart")
        _ = m.handle(.ended(run: 3, error: "x", at: t0))
        #expect(m.handle(.disable(1)) == [.answer])
        #expect(m.status.state == "disabled")
        #expect(m.handle(.retryDue(run: 4)) == [])
        // Disable, then enable while it is stopping: it starts again once stopped.
        _ = m.handle(.enable(nil))
        #expect(m.handle(.disable(nil)) == [.cancel(run: 5)])
        #expect(m.handle(.enable(2)) == [])
        #expect(m.handle(.ended(run: 5, error: nil, at: t0)) == [.start(run: 6)])
    }
}
