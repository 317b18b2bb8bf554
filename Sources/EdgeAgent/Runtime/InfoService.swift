import NIOCore
import ServiceLifecycle

/// The info document's timer: one repeated task on the agent's loop (its monotonic clock),
/// rescheduled when `config/set` changes `status.info_interval`.
final class InfoPublisher: Sendable {
    private let loop: any EventLoop
    private let timer: NIOLoopBoundBox<RepeatedTask?>

    init(loop: any EventLoop) {
        self.loop = loop
        timer = .makeEmptyBox(valueType: RepeatedTask.self, eventLoop: loop)
    }

    /// Publishes every `seconds` from now on (replacing the schedule before).
    func schedule(every seconds: Double, _ publish: @escaping @Sendable () -> Void) {
        loop.execute {
            self.timer.value?.cancel()
            let every = TimeAmount(seconds: seconds)
            self.timer.value = self.loop.scheduleRepeatedTask(initialDelay: every, delay: every) { _ in publish() }
        }
    }

    func stop() async {
        try? await loop.submit {
            self.timer.value?.cancel()
            self.timer.value = nil
        }.get()
    }
}

extension Agent {
    /// The timer holds the agent until `InfoService` stops it at the shutdown (a weak capture here
    /// drew the optimizer's "weak reference will always be nil" where config/set calls this).
    func scheduleInfo(every seconds: Double) {
        infoTimer.schedule(every: seconds) { self.publishInfo() }
    }
}

/// Publishes the info document every `status.info_interval` until the shutdown.
struct InfoService: Service {
    let agent: Agent

    func run() async {
        agent.scheduleInfo(every: agent.config.infoInterval)
        try? await gracefulShutdown()
        await agent.infoTimer.stop()
    }
}
