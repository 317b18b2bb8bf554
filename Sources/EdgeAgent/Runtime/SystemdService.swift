import NIOCore
import ServiceLifecycle

/// systemd's side of the agent (sd_notify): the first service told of a shutdown (it says
/// STOPPING=1), and the watchdog. WATCHDOG=1 goes out every half `WatchdogSec` only while every
/// health probe answers within that half: the agent's event loop, the MQTT client's queue (the
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
        agent.beginStopping()
    }

    private func watch(every interval: Double) async {
        let budget = TimeAmount(seconds: max(0.05, interval / 2))
        while !Task.isCancelled {
            if agent.isReady {
                var stuck: [String] = []
                for p in probes where (try? await calledBack(within: budget, on: agent.loop, { p.probe($0) })) != true {
                    stuck.append(p.name)
                }
                if stuck.isEmpty {
                    agent.notifier.notify("WATCHDOG=1")
                } else {
                    agent.logger.error(
                        "watchdog not fed: no answer within \(Double(budget.nanoseconds) / 1e9) s from \(stuck.joined(separator: ", "))")
                }
            }
            guard (try? await agent.loop.sleep(for: TimeAmount(seconds: interval))) != nil else { return }
        }
    }
}
