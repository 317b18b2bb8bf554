import Dispatch
import NIOCore

// Publishes enter from any thread: within the bound on outstanding messages at once, or after
// waiting for room (the seed's `Queue.put` with a timeout).
extension ClientCore {
    /// Accepts a publish if the bound on outstanding messages allows it.
    func submitPublish(_ publish: MQTTPacket.Publish, _ completion: Completion) -> Bool {
        if case .accepted = admit(publish, completion, orWait: nil) { return true }
        return false
    }

    /// Accepts a publish, waiting up to `wait` for room in a full queue (a thread other than
    /// the network thread: the network thread makes the room).
    func submitPublish(_ publish: MQTTPacket.Publish, _ completion: Completion, waitingUpTo wait: Duration) -> Bool {
        let deadline = DispatchTime.now() + wait.inSeconds
        let ticket = inbox.newTicket()
        while true {
            let wake = DispatchSemaphore(value: 0)
            guard case .waiting = admit(publish, completion, orWait: (ticket, .thread(wake))) else { return true }
            if wake.wait(timeout: deadline) == .timedOut {
                inbox.withdraw(ticket)
                return submitPublish(publish, completion)  // room may have come with the deadline
            }
        }
    }

    /// The async form: no thread waits. Each time room is given back the loop tries again (on the
    /// loop), until `wait` has passed; then `failed` runs.
    func submitPublish(
        _ publish: MQTTPacket.Publish, _ completion: Completion, waitingUpTo wait: Duration, failed: @escaping @Sendable () -> Void
    ) {
        let ticket = inbox.newTicket()
        @Sendable func attempt() -> CommandInbox.Admission { admit(publish, completion, orWait: (ticket, .retry({ _ = attempt() }))) }
        guard case .waiting = attempt() else { return }
        guard let loop = currentLoop else {
            inbox.withdraw(ticket)
            failed()
            return
        }
        loop.scheduleTask(in: wait.timeAmount) { [self] in
            // Still waiting at the deadline (wakes and this run on the loop, one after the other).
            if inbox.withdraw(ticket) && !submitPublish(publish, completion) { failed() }
        }
    }

    private func admit(
        _ publish: MQTTPacket.Publish, _ completion: Completion, orWait waiter: (ticket: UInt64, wake: CommandInbox.RoomWaiter)?
    ) -> CommandInbox.Admission {
        switch inbox.admit(publish, completion, orWait: waiter) {
        case (.acceptedOnLoop, _):
            acceptOnLoop(publish, completion)
            return .accepted
        case (let admission, let loop):
            drain(on: loop)
            return admission
        }
    }
}
