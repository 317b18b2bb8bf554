import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// systemd's side of the agent (sd_notify): the first service told of a shutdown (it says
/// STOPPING=1), and the watchdog. WATCHDOG=1 goes out every half `WatchdogSec` only while every
/// health probe answers within a quarter of it: the agent's event loop, the MQTT client's queue (the
/// same one publishes go through) and each source's supervisor. A stuck part stops feeding the
/// watchdog and systemd restarts the agent. (A stuck loop also holds up the probes' own timeout,
/// which runs on it: then nothing is logged, and still no WATCHDOG=1 goes out.)
struct SystemdService: Service {
    let agent: Agent
    /// Each probe calls back once the part it asks has taken it.
    let probes: [(name: String, probe: @Sendable (@escaping @Sendable () -> Void) -> Void)]

    func run() async {
        if agent.notifier.isActive, let interval = agent.notifier.watchdogInterval {
            await cancelWhenGracefulShutdown { await watch(every: interval) }
        } else {
            try? await gracefulShutdown()
        }
        agent.beginStopping(cancelled: Task.isCancelled)
    }

    /// Every `interval` (half `WatchdogSec`): all probes at once, each given half the interval.
    private func watch(every interval: Double) async {
        let budget = TimeAmount(seconds: max(0.05, interval / 2))
        var round = agent.loop.now
        while !Task.isCancelled {
            if agent.isReady {
                let answered = NIOLockedValueBox<Set<String>>([])
                let all =
                    (try? await calledBack(within: budget, on: agent.loop) { done in
                        for p in probes {
                            p.probe {
                                let complete = answered.withLockedValue { a in
                                    a.insert(p.name)
                                    return a.count == probes.count
                                }
                                if complete { done() }
                            }
                        }
                    }) ?? false
                if all {
                    agent.notifier.notify("WATCHDOG=1")
                } else {
                    let seen = answered.withLockedValue { $0 }
                    let stuck = probes.map(\.name).filter { !seen.contains($0) }
                    agent.logger.error(
                        "watchdog not fed: no answer within \(Double(budget.nanoseconds) / 1e9) s from \(stuck.joined(separator: ", "))")
                }
            }
            round = round + TimeAmount(seconds: interval)
            if agent.loop.now - round > TimeAmount(seconds: interval) { round = agent.loop.now }  // held up: no burst
            guard (try? await agent.loop.sleep(until: round)) != nil else { return }
        }
    }
}
