import Dispatch
import NIOConcurrencyHelpers
import NIOCore

/// The one way into the loop from other threads: a lock-protected list of commands, and the
/// bound on publishes accepted and not yet completed (the seed's `publish_queue_maxsize`).
///
/// The first command of a batch returns the loop, and its caller schedules one drain there, so
/// a burst from many threads costs one wake-up. A publish made on the loop itself (in a callback)
/// skips the list when nothing waits in it: the caller hands it to the session at once, so the
/// loop's own publishes cost no task and no second lock (`Admission.acceptedOnLoop`). A publish
/// that finds no room may register a `RoomWaiter`, woken when the loop gives room back.
final class CommandInbox: Sendable {
    /// Who waits for room: a thread in a plain `publish`, or an async publish's next try.
    enum RoomWaiter: Sendable {
        case thread(DispatchSemaphore)
        case retry(@Sendable () -> Void)

        func wake() {
            switch self {
            case .thread(let s): s.signal()
            case .retry(let again): again()
            }
        }
    }

    enum Admission {
        case accepted
        /// Accepted, counted, and not queued: the caller is on the loop, nothing waits before it
        /// in the list and no drain is running, so it goes to the session now.
        case acceptedOnLoop
        case full
        case waiting
    }

    private struct State {
        var commands: [Command] = []
        var loop: EventLoop?
        var drainScheduled = false
        /// The loop is handing the commands it took to the session (`take` to `drained`): a
        /// publish made in a callback meanwhile must queue behind the ones not yet handed over.
        var draining = false
        /// Publishes accepted and not yet completed.
        var outstanding = 0
        var roomWaiters: [(ticket: UInt64, wake: RoomWaiter)] = []
        var lastTicket: UInt64 = 0

        /// The loop to drain on, if this command is the first of a batch.
        mutating func append(_ command: Command) -> EventLoop? {
            commands.append(command)
            guard let loop, !drainScheduled else { return nil }
            drainScheduled = true
            return loop
        }
    }

    private let state = NIOLockedValueBox(State())
    /// How many publishes may be outstanding.
    let limit: Int

    init(limit: Int) {
        self.limit = limit
    }

    var loop: EventLoop? { state.withLockedValue { $0.loop } }

    /// Queues a command; returns the loop on which the caller schedules a drain (nil: one is
    /// scheduled already, or there is no loop yet and the command waits for `attach`).
    func submit(_ command: Command) -> EventLoop? {
        state.withLockedValue { $0.append(command) }
    }

    /// Queues a publish if the bound allows; else registers `waiter`, if any.
    func admit(
        _ publish: MQTTPacket.Publish, _ completion: Completion, orWait waiter: (ticket: UInt64, wake: RoomWaiter)?
    )
        -> (Admission, drainOn: EventLoop?)
    {
        state.withLockedValue { s in
            guard s.outstanding < limit else {
                guard let waiter else { return (.full, nil) }
                s.roomWaiters.append(waiter)
                return (.waiting, nil)
            }
            s.outstanding += 1
            if !s.drainScheduled && !s.draining, let loop = s.loop, loop.inEventLoop { return (.acceptedOnLoop, nil) }
            // `State.append` written out: through the helper callgrind showed one more copy of
            // the command per publish.
            s.commands.append(.publish(publish, completion))
            guard let loop = s.loop, !s.drainScheduled else { return (.accepted, nil) }
            s.drainScheduled = true
            return (.accepted, loop)
        }
    }

    func newTicket() -> UInt64 {
        state.withLockedValue {
            $0.lastTicket &+= 1
            return $0.lastTicket
        }
    }

    /// Takes the ticket's waiter off the list; false if it was not on it (woken or accepted).
    @discardableResult
    func withdraw(_ ticket: UInt64) -> Bool {
        state.withLockedValue { s in
            guard let i = s.roomWaiters.firstIndex(where: { $0.ticket == ticket }) else { return false }
            s.roomWaiters.remove(at: i)
            return true
        }
    }

    /// Room of `n` messages completed (or stored) is given back; whoever waits for room tries again.
    func giveBack(_ n: Int) {
        let anyWaiting = state.withLockedValue { s -> Bool in
            s.outstanding -= n
            return !s.roomWaiters.isEmpty
        }
        guard anyWaiting else { return }  // the common case: one lock, nothing copied
        let waiting = state.withLockedValue { s -> [(ticket: UInt64, wake: RoomWaiter)] in
            defer { s.roomWaiters.removeAll(keepingCapacity: true) }
            return s.roomWaiters
        }
        for w in waiting { w.wake.wake() }
    }

    /// On the loop: the commands queued since the last drain; `drained` follows once they are
    /// handed over.
    func take() -> [Command] {
        state.withLockedValue { s in
            s.drainScheduled = false
            s.draining = true
            defer { s.commands.removeAll(keepingCapacity: true) }
            return s.commands
        }
    }

    func drained() { state.withLockedValue { $0.draining = false } }

    /// Commands go to `loop` from now on; the caller drains what waits.
    func attach(_ loop: EventLoop) {
        state.withLockedValue {
            $0.loop = loop
            $0.drainScheduled = true
        }
    }

    func detach() {
        state.withLockedValue {
            $0.loop = nil
            $0.drainScheduled = false
        }
    }
}
