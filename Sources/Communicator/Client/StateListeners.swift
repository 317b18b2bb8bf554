import NIOConcurrencyHelpers

/// The application's state-change callbacks (any thread adds and removes; the loop calls them,
/// in the order they were added).
final class StateListeners: Sendable {
    typealias Listener = @Sendable (ConnectionState) -> Void
    private let box = NIOLockedValueBox<(next: Int, all: [Int: Listener])>((0, [:]))

    /// Adds a listener; the returned key removes it again.
    @discardableResult
    func add(_ listener: @escaping Listener) -> Int {
        box.withLockedValue { l in
            l.next += 1
            l.all[l.next] = listener
            return l.next
        }
    }

    func remove(_ key: Int) {
        box.withLockedValue { _ = $0.all.removeValue(forKey: key) }
    }

    var count: Int { box.withLockedValue { $0.all.count } }

    /// Calls each listener outside the lock (a listener may add or remove listeners).
    func notify(_ state: ConnectionState) {
        for l in box.withLockedValue({ $0.all.sorted { $0.key < $1.key }.map(\.value) }) { l(state) }
    }
}
