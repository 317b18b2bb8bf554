import FoundationEssentials
import NIOConcurrencyHelpers
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// Foundation's Thread and NSCondition are not in FoundationEssentials, and full Foundation
// brings ICU (36 MB of the static binary). The light and the event sources need only a named
// thread that can be waited for and a condition variable: these are thin POSIX wrappers.

/// A loop on a POSIX thread of its own, named (as `ps -L` and `top -H` show it; 15 bytes at most).
public final class BackgroundThread: @unchecked Sendable {
    private let finished = NIOLockedValueBox(false)
    private let name: String
    private var body: (@Sendable () -> Void)?

    public init(name: String, _ body: @escaping @Sendable () -> Void) {
        self.name = name
        self.body = body
    }

    public var isFinished: Bool { finished.withLockedValue { $0 } }

    /// Names the calling thread through /proc (pthread_setname_np is not visible to Swift's
    /// Glibc module); a kernel without /proc/thread-self leaves it unnamed.
    private func setOwnName() {
        let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        let bytes = Array(name.utf8.prefix(15))
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    /// Starts the thread; it is detached and ends when the body returns.
    public func start() {
        let retained = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(
            &thread, nil,
            { arg in
                let me = Unmanaged<BackgroundThread>.fromOpaque(arg!).takeRetainedValue()
                me.setOwnName()
                me.body?()
                me.body = nil
                me.finished.withLockedValue { $0 = true }
                return nil
            }, retained)
        guard status == 0 else {
            Unmanaged<BackgroundThread>.fromOpaque(retained).release()
            preconditionFailure("cannot start thread \(name): \(String(cString: strerror(status)))")
        }
        pthread_detach(thread)
    }
}

/// A mutex with a condition variable, used like NSCondition. Its timed waits run on the
/// monotonic clock (`NIODeadline`, CLOCK_MONOTONIC): a step of the wall clock, by NTP or
/// `date -s`, neither stalls nor hurries them.
public final class Condition: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    public init() {
        pthread_mutex_init(mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    public func lock() { pthread_mutex_lock(mutex) }
    public func unlock() { pthread_mutex_unlock(mutex) }
    public func wait() { pthread_cond_wait(cond, mutex) }
    public func broadcast() { pthread_cond_broadcast(cond) }

    /// Waits until signalled or `deadline`; false when the deadline passed.
    @discardableResult
    public func wait(until deadline: NIODeadline) -> Bool {
        let ns = deadline.uptimeNanoseconds
        var ts = timespec(tv_sec: Int(ns / 1_000_000_000), tv_nsec: Int(ns % 1_000_000_000))
        return pthread_cond_timedwait(cond, mutex, &ts) == 0
    }

    /// Waits until signalled or `seconds` have passed on the monotonic clock.
    @discardableResult
    public func wait(seconds: Double) -> Bool {
        wait(until: .now() + .nanoseconds(Int64(max(0, seconds) * 1e9)))
    }
}
