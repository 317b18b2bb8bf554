/// A store whose configured size changed since its files were made (an operator edited
/// `capacity_mb` or the segment count). The store never resizes files that hold messages; what
/// happens instead:
/// - messages wait in it: it opens with the layout its files have, and says so; the configured
///   layout applies at the first open that finds it empty;
/// - it is empty: its files are replaced by ones of the configured layout. A `resizing` marker
///   holding the old segment count, synced before the first file is deleted and removed after
///   the new store exists, lets an open after a power cut in between finish the replacement (the
///   store was empty, so nothing can be lost) instead of finding a mix of old and new files.
extension RingStore {
    public enum LayoutChange: Equatable, Sendable {
        /// The store was empty; its files now have the configured layout (the old one here).
        case replaced(capacity: Int, segmentCount: Int)
        /// `pending` records wait in it; it keeps the layout its files have (here) until it is
        /// found empty at an open.
        case kept(capacity: Int, segmentCount: Int, pending: Int)
    }

    static let resizeMarker = "resizing"

    /// Opens the store in `directory` like `init`, but adapts to a store of another layout (see
    /// the type's comment) instead of refusing it. Throws `.layout` only for files that match
    /// neither the configured layout nor any layout (a mix, or not a store).
    public static func open(
        directory: String, options: Options, fileSystem: StoreFileSystem = PosixFileSystem()
    ) throws(StoreError) -> (store: RingStore, change: LayoutChange?) {
        if fileSystem.size(directory: directory, name: resizeMarker) == pageSize {
            let page = try fileSystem.open(directory: directory, name: resizeMarker, size: pageSize).read(at: 0, count: 8)
            let oldCount = page.reversed().reduce(0) { $0 << 8 | Int($1) }
            try replace(directory: directory, segmentCounts: [oldCount, options.segmentCount], fileSystem: fileSystem)
            let fresh = try RingStore(directory: directory, options: options, fileSystem: fileSystem)
            try fileSystem.remove(directory: directory, name: resizeMarker)
            return (fresh, nil)
        }
        let mismatch: String
        do {
            return (try RingStore(directory: directory, options: options, fileSystem: fileSystem), nil)
        } catch .layout(let what) {
            mismatch = what
        }
        guard let found = try? existingOptions(directory: directory, fileSystem: fileSystem) else { throw .layout(mismatch) }
        var old = options
        old.capacity = found.capacity
        old.segmentCount = found.segmentCount
        let store: RingStore
        do { store = try RingStore(directory: directory, options: old, fileSystem: fileSystem) } catch .layout(let what) {
            throw .layout("\(mismatch), and the files do not form a store of another size either (\(what)): move \(directory) away to start an empty store")
        }
        let pending = store.pendingCount
        if pending > 0 {
            return (store, .kept(capacity: found.capacity, segmentCount: found.segmentCount, pending: pending))
        }
        try store.close()
        try replace(directory: directory, segmentCounts: [found.segmentCount, options.segmentCount], fileSystem: fileSystem)
        let fresh = try RingStore(directory: directory, options: options, fileSystem: fileSystem)
        try fileSystem.remove(directory: directory, name: resizeMarker)
        return (fresh, .replaced(capacity: found.capacity, segmentCount: found.segmentCount))
    }

    /// Deletes an empty store's files behind a synced marker holding the larger segment count
    /// (left for the caller to remove once the new store exists).
    private static func replace(directory: String, segmentCounts: [Int], fileSystem: StoreFileSystem) throws(StoreError) {
        if fileSystem.size(directory: directory, name: resizeMarker) == nil {
            let marker = try fileSystem.open(directory: directory, name: resizeMarker, size: pageSize)
            var page = [UInt8](repeating: 0, count: pageSize)
            for i in 0..<8 { page[i] = UInt8(truncatingIfNeeded: (segmentCounts.max() ?? 0) >> (8 * i)) }
            try marker.write(page, at: 0)
            try marker.sync()
        }
        for name in fileNames(segmentCount: segmentCounts.max() ?? 0) {
            try fileSystem.remove(directory: directory, name: name)
        }
    }
}
