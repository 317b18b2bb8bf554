import NIOConcurrencyHelpers
import NIOCore

/// Waits for a callback-style operation to call back, or for `amount` on the loop's monotonic
/// clock, whichever comes first; false when the time ran out. What `start` set going (a publish, a
/// probe) is not cancelled: only the wait ends. An error `start` throws is thrown.
func calledBack(
    within amount: TimeAmount, on loop: any EventLoop, _ start: (@escaping @Sendable () -> Void) throws -> Void
)
    async throws -> Bool
{
    let waiter = NIOLockedValueBox<CheckedContinuation<Bool, Never>?>(nil)
    let finish: @Sendable (Bool) -> Void = { answered in
        waiter.withLockedValue { w -> CheckedContinuation<Bool, Never>? in
            defer { w = nil }
            return w
        }?.resume(returning: answered)
    }
    var thrown: (any Error)?
    let answered = await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
        waiter.withLockedValue { $0 = c }
        let timer = loop.scheduleTask(in: amount) { finish(false) }
        do {
            try start {
                timer.cancel()
                finish(true)
            }
        } catch {
            thrown = error
            timer.cancel()
            finish(false)
        }
    }
    if let thrown { throw thrown }
    return answered
}
