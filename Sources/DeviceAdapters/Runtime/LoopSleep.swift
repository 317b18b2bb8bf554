import NIOConcurrencyHelpers
import NIOCore

extension EventLoop {
    /// Suspends the calling task until `deadline` on this loop's monotonic clock (`NIODeadline`,
    /// CLOCK_MONOTONIC): a step of the wall clock neither stalls nor hurries it. Cancelling the
    /// task ends the wait at once with `CancellationError`. The agent's one way to wait: every
    /// timer of the runtime is a task scheduled on the one event-loop group.
    public func sleep(until deadline: NIODeadline) async throws {
        let scheduled = NIOLockedValueBox<Scheduled<Void>?>(nil)
        try await withTaskCancellationHandler {
            let task = scheduleTask(deadline: deadline) {}
            scheduled.withLockedValue { $0 = task }
            if Task.isCancelled { task.cancel() }
            do { try await task.futureResult.get() } catch { throw CancellationError() }
        } onCancel: {
            scheduled.withLockedValue { $0 }?.cancel()
        }
    }

    /// Suspends the calling task for `amount` from the loop's `now` (see `sleep(until:)`).
    public func sleep(for amount: TimeAmount) async throws {
        try await sleep(until: now + amount)
    }
}
