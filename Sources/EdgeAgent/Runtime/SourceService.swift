import DeviceAdapters
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle

/// One event source as a service of the agent's group: runs it under its `SourceSupervisor`,
/// restarts it with its own back-off when it fails, and takes `source/enable|disable|restart`.
/// Each run is a child task of the service's task group, cancelled on its own when a command
/// asks (a one-shot stop signal beside it), so a stop ends everything the run opened and leaves
/// nothing behind; a graceful shutdown cancels the whole group.
final class SourceService: Service {
    typealias Reply = CheckedContinuation<SourceStatus, Never>
    typealias Machine = SourceSupervisor<Reply>

    enum Input: Sendable {
        case machine(Machine.Event)
        /// The watchdog's health probe: answered when the supervisor's loop reaches it.
        case probe(@Sendable () -> Void)
    }

    let source: any EventSource
    private let loop: any EventLoop
    private let threadPool: NIOThreadPool
    private let sink: EventSink
    private let restart: (initial: TimeAmount, max: TimeAmount)
    private let logger: Logger
    private let inputs: AsyncStream<Input>
    private let input: AsyncStream<Input>.Continuation
    private let shown = NIOLockedValueBox(SourceStatus(state: "starting", enabled: true, restarts: 0, errors: 0))

    init(
        source: any EventSource, loop: any EventLoop, threadPool: NIOThreadPool, restart: (initial: TimeAmount, max: TimeAmount),
        logger: Logger, sink: @escaping EventSink
    ) {
        self.source = source
        self.loop = loop
        self.threadPool = threadPool
        self.restart = restart
        self.logger = logger
        self.sink = sink
        (inputs, input) = AsyncStream.makeStream(of: Input.self)
    }

    var name: String { source.name }
    var status: SourceStatus { shown.withLockedValue { $0 } }

    /// A command's change; returns once it took effect (the source runs, failed, or stopped).
    func control(_ change: @escaping @Sendable (Reply?) -> Machine.Event) async -> SourceStatus {
        await withCheckedContinuation { (reply: Reply) in
            if case .terminated = input.yield(.machine(change(reply))) { reply.resume(returning: status) }
        }
    }

    func probe(_ answered: @escaping @Sendable () -> Void) { input.yield(.probe(answered)) }

    func run() async {
        await cancelWhenGracefulShutdown { await self.supervise() }
        input.finish()
        logger.info("source \(source.name) (\(source.kind)) stopped")
    }

    private func supervise() async {
        var machine = Machine(initialDelay: restart.initial, maxDelay: restart.max)
        var stops: [Int: AsyncStream<Void>.Continuation] = [:]
        await withDiscardingTaskGroup { group in
            var actions = machine.handle(.begin)
            var iterator = inputs.makeAsyncIterator()
            while true {
                for action in actions {
                    switch action {
                    case .start(let run):
                        let (stopped, stop) = AsyncStream.makeStream(of: Void.self)
                        stops[run] = stop
                        let context = SourceContext(
                            loop: loop, threadPool: threadPool, sink: sink,
                            ready: { [input, loop] in input.yield(.machine(.ready(run: run, at: loop.now))) })
                        group.addTask { [source, input, loop] in
                            let error = await Self.runOnce(source, context, until: stopped)
                            input.yield(.machine(.ended(run: run, error: error, at: loop.now)))
                        }
                    case .cancel(let run):
                        stops.removeValue(forKey: run)?.finish()
                    case .retry(let run, let delay):
                        group.addTask { [loop, input] in
                            guard (try? await loop.sleep(for: delay)) != nil else { return }
                            input.yield(.machine(.retryDue(run: run)))
                        }
                    case .failed(_, let error, let delay):
                        logger.error(
                            "source \(source.name) (\(source.kind)) failed: \(error); starting it again in \(Double(delay.nanoseconds) / 1e9) s"
                        )
                    case .answer:
                        let status = machine.status
                        for reply in machine.takeWaiting() { reply.resume(returning: status) }
                    }
                }
                shown.withLockedValue { $0 = machine.status }
                guard let next = await iterator.next() else { break }  // the shutdown cancelled the service
                switch next {
                case .probe(let answered):
                    answered()
                    actions = []
                case .machine(let event):
                    if case .ended(let run, _, _) = event { stops[run] = nil }
                    actions = machine.handle(event)
                    if case .ready(let run, _) = event, case .running(run, _) = machine.phase {
                        logger.info("source \(source.name) (\(source.kind)) started")
                    }
                }
            }
            for stop in stops.values { stop.finish() }
        }
        let status = machine.status
        for reply in machine.takeWaiting() { reply.resume(returning: status) }
    }

    /// One run of the source, until it ends, fails, or `stopped` finishes; the reason it failed,
    /// nil when it was stopped or cancelled.
    private static func runOnce(_ source: any EventSource, _ context: SourceContext, until stopped: AsyncStream<Void>) async -> String? {
        enum Outcome: Sendable {
            case returned
            case cancelled
            case failed(String)
            case stopRequested
        }
        return await withTaskGroup(of: Outcome.self) { group in
            group.addTask {
                do {
                    try await source.run(context)
                    return Task.isCancelled ? .cancelled : .returned
                } catch is CancellationError {
                    return .cancelled
                } catch let error as SourceError {
                    return .failed(error.message)
                } catch {
                    return .failed("\(error)")
                }
            }
            group.addTask {
                for await _ in stopped {}
                return .stopRequested
            }
            let first = await group.next()!
            group.cancelAll()
            switch first {
            case .failed(let reason): return reason
            case .returned: return "it stopped by itself"
            case .cancelled, .stopRequested: return nil
            }
        }
    }
}
