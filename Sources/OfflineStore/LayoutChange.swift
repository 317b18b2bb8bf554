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
        let found = try? existingOptions(directory: directory, fileSystem: fileSystem)
        if let markerSize = fileSystem.size(directory: directory, name: resizeMarker) {
            // A replacement of an empty store was cut short: finish it. The marker names the old
            // segment count; a marker torn before its data landed (zeros) was written before any
            // deletion, so the old files are all there and `found` counts them.
            var oldCount = 0
            if markerSize == pageSize {
                let page = try fileSystem.open(directory: directory, name: resizeMarker, size: pageSize).read(at: 0, count: 8)
                oldCount = min(page.reversed().reduce(0) { $0 << 8 | Int($1) }, maxSegments)
            }
            try replace(
                directory: directory, segmentCounts: [oldCount, found?.segmentCount ?? 0, options.segmentCount], fileSystem: fileSystem)
            let fresh = try RingStore(directory: directory, options: options, fileSystem: fileSystem)
            try fileSystem.remove(directory: directory, name: resizeMarker)
            return (fresh, nil)
        }
        // Segment files of the configured size but another count open without complaint: compare
        // the layout itself first.
        var mismatch: String?
        if let found, found.segmentCount != options.segmentCount || found.segmentSize != options.segmentSize {
            mismatch =
                "\(directory) holds \(found.segmentCount) segments of \(found.segmentSize) bytes, the configuration asks \(options.segmentCount) of \(options.segmentSize)"
        } else {
            do {
                return (try RingStore(directory: directory, options: options, fileSystem: fileSystem), nil)
            } catch .layout(let what) {
                mismatch = what
            }
        }
        guard let found, let mismatch else { throw .layout(mismatch ?? "\(directory): unknown layout") }
        var old = options
        old.capacity = found.capacity
        old.segmentCount = found.segmentCount
        let store: RingStore
        do { store = try RingStore(directory: directory, options: old, fileSystem: fileSystem) } catch .layout(let what) {
            throw .layout(
                "\(mismatch), and the files do not form a store of another size either (\(what)): move \(directory) away to start an empty store"
            )
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

    /// More segments than any store has: bounds a marker's count.
    static let maxSegments = 4096

    /// Deletes an empty store's files behind a synced marker holding the larger segment count
    /// (left for the caller to remove once the new store exists).
    private static func replace(directory: String, segmentCounts: [Int], fileSystem: StoreFileSystem) throws(StoreError) {
        let count = min(segmentCounts.max() ?? 0, maxSegments)
        if fileSystem.size(directory: directory, name: resizeMarker) == nil {
            let marker = try fileSystem.open(directory: directory, name: resizeMarker, size: pageSize)
            var page = [UInt8](repeating: 0, count: pageSize)
            for i in 0..<8 { page[i] = UInt8(truncatingIfNeeded: count >> (8 * i)) }
            try marker.write(page, at: 0)
            try marker.sync()
            try fileSystem.syncDirectory(directory)  // the marker is there before any deletion is
        }
        for name in fileNames(segmentCount: count) {
            try fileSystem.remove(directory: directory, name: name)
        }
        try fileSystem.syncDirectory(directory)
    }
}
