#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A bounded, flash-friendly, power-cut-safe log of opaque records (it knows nothing of MQTT).
///
/// Layout: `segmentCount` preallocated segment files of `capacity / segmentCount` bytes each,
/// created once and then only overwritten in place. Each segment starts with a 64-byte header
/// (magic, format, activation epoch, first sequence number, CRC-32C) and holds 8-byte aligned
/// records: a 32-byte header (magic, type, length, CRC-32C, sequence) and the body. The CRC covers
/// every header byte but itself, and the body, so a page of zeros or of 0xFF never decodes as a
/// record; sequence numbers rise by exactly one per record, so a stale record from an earlier lap
/// of the ring never continues the log. Acknowledgements are records too: nothing is ever
/// rewritten per message.
///
/// Writes are whole 4 KiB pages at aligned offsets; only the partially filled tail page is
/// written again, at the next sync, with its earlier bytes unchanged. `fdatasync` runs only when
/// something is dirty, per `SyncPolicy`. Idle means no writes at all.
///
/// A two-slot checkpoint file (`checkpoint.dat`, 2 × 4 KiB) records the head of the log (every
/// record below it is acknowledged or dropped), written at most every `checkpointInterval`
/// seconds, alternately to each slot, and only after the log itself is synced: a torn
/// checkpoint write leaves the other slot. Recovery skips the segments the checkpoint covers.
///
/// Not thread-safe: one owner calls it (the MQTT client's event loop, or a test).
public final class RingStore {
    public enum SyncPolicy: Equatable, Sendable {
        /// fdatasync when dirty, at most every `seconds` (via `tick`) or every `bytes` appended.
        case interval(seconds: Double, bytes: Int)
        /// fdatasync before `append` returns.
        case always
        /// Leave it to the kernel's writeback.
        case none

        public static let `default` = SyncPolicy.interval(seconds: 1, bytes: 1 << 20)
    }

    public enum FullPolicy: String, Sendable {
        /// Reclaim the oldest segment; its unacknowledged records are dropped and counted.
        case dropOldest = "drop_oldest"
        /// Refuse the new record with `StoreError.full`; nothing is written.
        case rejectNewest = "reject_newest"
    }

    public struct Options: Sendable {
        public var capacity: Int
        public var segmentCount: Int
        public var sync: SyncPolicy
        public var whenFull: FullPolicy
        /// At most this often (seconds, via `tick`) the head is written to the checkpoint file.
        public var checkpointInterval: Double

        public init(
            capacity: Int = 64 << 20, segmentCount: Int = 16, sync: SyncPolicy = .default, whenFull: FullPolicy = .dropOldest,
            checkpointInterval: Double = 30
        ) {
            self.capacity = capacity
            self.segmentCount = segmentCount
            self.sync = sync
            self.whenFull = whenFull
            self.checkpointInterval = checkpointInterval
        }

        var segmentSize: Int { (capacity / segmentCount) & ~(RingStore.pageSize - 1) }
    }

    public struct Record: Equatable, Sendable {
        public let seq: UInt64
        public let body: [UInt8]
    }

    /// What recovery found when the store was opened.
    public struct Recovery: Sendable {
        public var records = 0
        public var pending = 0
        /// Records that failed their CRC (or whole unreadable stretches), skipped and counted.
        public var corruptSkipped = 0
        /// Segments not read because the checkpoint says all their records are done.
        public var segmentsSkipped = 0
        /// The head found in the checkpoint file (nil: none valid).
        public var checkpointHead: UInt64?
    }

    public struct Stats: Sendable {
        public var capacity: Int
        public var pending: Int
        public var pendingBytes: Int
        public var liveSegments: Int
        public var oldestSeq: UInt64?
        public var newestSeq: UInt64?
        public var segments: Int
        public var dropped: Int
        public var syncs: Int
        public var bytesWritten: Int
        /// Share of segments holding unacknowledged records.
        public var fillRatio: Double { Double(liveSegments) / Double(max(1, segments)) }
    }

    static let pageSize = 4096
    static let segmentHeaderSize = 64
    static let recordHeaderSize = 32
    static let segmentMagic: UInt32 = 0x5347_4445  // "EDGS"
    static let recordMagic: UInt32 = 0x5247_4445  // "EDGR"
    static let formatVersion: UInt8 = 1
    static let typeData: UInt8 = 1
    static let typeAck: UInt8 = 2
    static let checkpointMagic: UInt32 = 0x4347_4445  // "EDGC"
    static let checkpointName = "checkpoint.dat"

    struct Entry {
        var seq: UInt64
        var segment: Int
        var offset: Int
        var length: Int
        var done: Bool
    }

    public let options: Options
    public private(set) var recovery = Recovery()
    private let files: [StoreFile]
    private let segmentSize: Int
    private var liveCount: [Int]
    /// Body bytes of the unacknowledged records (kept as they change: no scan).
    private var liveBytes = 0
    private var entries: [Entry] = []
    private var head = 0
    private var cur = 0
    private var pos = 0
    private var buf: [UInt8] = []
    private var bufStart = 0
    private var nextSeq: UInt64 = 1
    private var nextEpoch: UInt64 = 1
    /// Each segment's activation epoch and first sequence number (as in its header).
    private var segmentEpoch: [UInt64]
    private var segmentFirst: [UInt64]
    /// The checkpoint read at opening: head, and the header of the segment holding it.
    private var checkpointFound: (head: UInt64, epoch: UInt64, first: UInt64)?
    private var dirty: Set<Int> = []
    private var unsyncedBytes = 0
    private var dirtySince: Double?
    private var dropped = 0
    private(set) var syncs = 0  // internal: the power-cut test reads it per operation, where `stats` would be O(n)
    private var bytesWritten = 0
    private let checkpointFile: StoreFile
    private var checkpointGeneration: UInt64 = 0
    private var checkpointedHead: UInt64 = 0
    private var checkpointAt: Double?
    private var deferred = false

    /// Opens (creating on first use) the store in `directory` and recovers what it holds.
    public init(directory: String, options: Options = .init(), fileSystem: StoreFileSystem = PosixFileSystem()) throws(StoreError) {
        precondition(options.segmentCount >= 2 && options.segmentSize >= 2 * Self.pageSize, "store too small")
        self.options = options
        segmentSize = options.segmentSize
        var files: [StoreFile] = []
        for i in 0..<options.segmentCount {
            files.append(
                try fileSystem.open(directory: directory, name: Self.fileNames(segmentCount: options.segmentCount)[i], size: segmentSize))
        }
        self.files = files
        checkpointFile = try fileSystem.open(directory: directory, name: Self.checkpointName, size: 2 * Self.pageSize)
        liveCount = Array(repeating: 0, count: options.segmentCount)
        segmentEpoch = Array(repeating: 0, count: options.segmentCount)
        segmentFirst = Array(repeating: 0, count: options.segmentCount)
        var rec = Recovery()
        checkpointFound = try readCheckpoint()
        try recover(&rec)
        recovery = rec
        checkpointedHead = headSeq
    }

    /// The layout of the store already in `directory`, read from its files (for tools that
    /// inspect a store without its configuration, and for a store whose configuration changed).
    public static func existingOptions(
        directory: String, fileSystem: StoreFileSystem = PosixFileSystem(readOnly: true)
    ) throws(StoreError) -> Options {
        var count = 0
        var size = 0
        while let s = fileSystem.size(directory: directory, name: fileNames(segmentCount: count + 1)[count]) {
            if count == 0 { size = s }
            count += 1
        }
        guard count >= 2, size >= 2 * pageSize else {
            var st = stat()
            if stat(directory, &st) != 0 { throw .io(operation: "stat", path: directory, errno: errno) }
            throw .layout("\(directory) holds no store (no segment-00.dat and segment-01.dat of at least 8 KiB)")
        }
        return Options(capacity: size * count, segmentCount: count)
    }

    /// The names of the files a store in a directory consists of (fixed for its segment count).
    public static func fileNames(segmentCount: Int) -> [String] {
        (0..<segmentCount).map { "segment-\($0 < 10 ? "0" : "")\($0).dat" } + [checkpointName]
    }

    // MARK: - Appending and acknowledging

    /// The largest body a record may carry.
    public var maxBodySize: Int { segmentSize - Self.segmentHeaderSize - Self.recordHeaderSize }

    /// Appends a record and returns its sequence number. Durable per the sync policy; with
    /// `commit: false` a `.always` store waits for the caller's `sync()` (group commit: one
    /// fdatasync for a batch of appends).
    @discardableResult
    public func append(_ body: [UInt8], now: Double = 0, commit: Bool = true) throws(StoreError) -> UInt64 {
        deferred = !commit
        defer { deferred = false }
        guard body.count <= maxBodySize else { throw .tooLarge(bytes: body.count, limit: maxBodySize) }
        let size = Self.align8(Self.recordHeaderSize + body.count)
        if pos + size > segmentSize { try advanceSegment(dropping: true) }
        let seq = nextSeq
        writeRecord(type: Self.typeData, seq: seq, body: body)
        entries.append(Entry(seq: seq, segment: cur, offset: pos - size, length: body.count, done: false))
        liveCount[cur] += 1
        liveBytes += body.count
        try afterWrite(size: size, now: now)
        return seq
    }

    /// Marks a record as delivered; it will not come back after a restart (once synced).
    /// Returns false when the acknowledgement could only be kept in memory (the log had no room
    /// without dropping data): after a crash that record comes back once more.
    @discardableResult
    public func acknowledge(_ seq: UInt64, now: Double = 0) throws(StoreError) -> Bool {
        guard let i = index(of: seq), !entries[i].done else { return false }
        entries[i].done = true
        liveCount[entries[i].segment] -= 1
        liveBytes -= entries[i].length
        advanceHead()
        var body = [UInt8](repeating: 0, count: 8)
        Self.put64(seq, into: &body, at: 0)
        let size = Self.align8(Self.recordHeaderSize + 8)
        if pos + size > segmentSize {
            // An acknowledgement never drops data: if the next segment is still in use, the
            // acknowledgement stays in memory (after a crash the record comes back: at least once).
            guard liveCount[(cur + 1) % files.count] == 0 else { return false }
            try advanceSegment(dropping: false)
        }
        writeRecord(type: Self.typeAck, seq: nextSeq, body: body)
        try afterWrite(size: size, now: now)
        return true
    }

    /// Unacknowledged records, oldest first.
    public func pending(limit: Int = .max) throws(StoreError) -> [Record] {
        var out: [Record] = []
        var i = head
        while i < entries.count && out.count < limit {
            let e = entries[i]
            if !e.done { out.append(Record(seq: e.seq, body: try readBody(e))) }
            i += 1
        }
        return out
    }

    /// Unacknowledged records with a sequence number above `seq`, oldest first (a cursor for
    /// draining without reading from the start each time).
    public func pending(after seq: UInt64, limit: Int) throws(StoreError) -> [Record] {
        var out: [Record] = []
        var i = max(head, firstIndex(above: seq))
        while i < entries.count && out.count < limit {
            let e = entries[i]
            if !e.done { out.append(Record(seq: e.seq, body: try readBody(e))) }
            i += 1
        }
        return out
    }

    public var pendingCount: Int { liveCount.reduce(0, +) }

    /// Body bytes of the unacknowledged records (cheap: no scan).
    public var pendingBytes: Int { liveBytes }

    /// Whether `seq` is a record still waiting for its acknowledgement.
    public func isPending(_ seq: UInt64) -> Bool {
        guard let i = index(of: seq) else { return false }
        return !entries[i].done
    }

    /// The sequence number of the newest record written (0 before the first).
    public var lastSeq: UInt64 { nextSeq - 1 }

    /// Records dropped by `drop_oldest` since the store was opened.
    public var droppedCount: Int { dropped }

    /// Share of segments holding unacknowledged records (cheap: no scan).
    public var fill: Double { Double(liveCount.lazy.filter { $0 > 0 }.count) / Double(files.count) }

    /// Every record below this sequence number is acknowledged or dropped.
    public var headSeq: UInt64 { head < entries.count ? entries[head].seq : nextSeq }

    /// Applies the interval policy; call it periodically (e.g. every 100 ms).
    public func tick(now: Double) throws(StoreError) {
        if case .interval(let seconds, _) = options.sync, let since = dirtySince, now - since >= seconds { try sync() }
        if headSeq != checkpointedHead {
            guard let at = checkpointAt else {
                checkpointAt = now  // the interval starts with the first change
                return
            }
            if now - at >= options.checkpointInterval {
                try writeCheckpoint()
                checkpointAt = now
            }
        }
    }

    /// Syncs everything and writes the checkpoint: call before the owner goes away.
    public func close() throws(StoreError) {
        try sync()
        if headSeq != checkpointedHead { try writeCheckpoint() }
    }

    /// Whether appended records wait for a sync.
    public var isDirty: Bool { dirtySince != nil || !dirty.isEmpty }

    /// Writes and fdatasyncs everything appended so far (no-op when nothing is dirty).
    public func sync() throws(StoreError) {
        guard dirtySince != nil || !dirty.isEmpty else { return }
        try writePages()
        for i in dirty.sorted(by: { a, b in a == cur ? false : (b == cur ? true : a < b) }) { try files[i].sync() }
        dirty.removeAll()
        unsyncedBytes = 0
        dirtySince = nil
        syncs += 1
    }

    public var stats: Stats {
        let live = entries[head...].filter { !$0.done }
        return Stats(
            capacity: options.capacity, pending: live.count, pendingBytes: live.reduce(0) { $0 + $1.length },
            liveSegments: liveCount.filter { $0 > 0 }.count, oldestSeq: live.first?.seq, newestSeq: live.last?.seq,
            segments: files.count, dropped: dropped, syncs: syncs, bytesWritten: bytesWritten)
    }

    // MARK: - Writing

    private func writeRecord(type: UInt8, seq: UInt64, body: [UInt8]) {
        let size = Self.align8(Self.recordHeaderSize + body.count)
        var header = [UInt8](repeating: 0, count: Self.recordHeaderSize)
        Self.put32(Self.recordMagic, into: &header, at: 0)
        header[4] = type
        header[5] = Self.formatVersion
        Self.put32(UInt32(body.count), into: &header, at: 8)
        Self.put64(seq, into: &header, at: 16)
        Self.put32(Self.recordCRC(header: header, body: body[...]), into: &header, at: 12)
        buf.append(contentsOf: header)
        buf.append(contentsOf: body)
        buf.append(contentsOf: repeatElement(0, count: size - Self.recordHeaderSize - body.count))
        pos += size
        nextSeq = seq + 1
    }

    private func afterWrite(size: Int, now: Double) throws(StoreError) {
        unsyncedBytes += size
        if dirtySince == nil { dirtySince = now }
        dirty.insert(cur)
        switch options.sync {
        case .always: if !deferred { try sync() }
        case .interval(_, let bytes): if unsyncedBytes >= bytes { try sync() }
        case .none:
            // Still whole pages: hand full pages to the kernel as they fill.
            if pos - bufStart >= Self.pageSize * 16 { try writePages() }
        }
    }

    /// Writes the buffered bytes as whole pages; keeps the partial tail page in memory.
    private func writePages() throws(StoreError) {
        guard pos > bufStart, !buf.isEmpty else { return }
        var pages = buf
        let padded = Self.alignPage(pages.count)
        pages.append(contentsOf: [UInt8](repeating: 0, count: padded - pages.count))  // an Array: one copy, also in debug builds
        try files[cur].write(pages, at: bufStart)
        bytesWritten += pages.count
        dirty.insert(cur)
        let newStart = pos & ~(Self.pageSize - 1)
        buf = Array(buf[(newStart - bufStart)...])
        bufStart = newStart
    }

    /// Closes the current segment and starts the next one in the ring.
    private func advanceSegment(dropping: Bool) throws(StoreError) {
        let next = (cur + 1) % files.count
        if liveCount[next] > 0 {
            guard options.whenFull == .dropOldest, dropping else { throw .full(capacity: options.capacity) }
            for i in head..<entries.count where entries[i].segment == next && !entries[i].done {
                entries[i].done = true
                liveBytes -= entries[i].length
                dropped += 1
            }
            liveCount[next] = 0
            advanceHead()
        }
        try writePages()
        cur = next
        pos = 0
        bufStart = 0
        buf = []
        var header = [UInt8](repeating: 0, count: Self.segmentHeaderSize)
        Self.put32(Self.segmentMagic, into: &header, at: 0)
        header[4] = Self.formatVersion
        Self.put64(nextEpoch, into: &header, at: 8)
        segmentEpoch[cur] = nextEpoch
        segmentFirst[cur] = nextSeq
        Self.put64(nextSeq, into: &header, at: 16)
        Self.put32(CRC32C.checksum(Array(header[0..<60])), into: &header, at: 60)
        nextEpoch += 1
        buf = header
        pos = Self.segmentHeaderSize
        dirty.insert(cur)
    }

    private func advanceHead() {
        while head < entries.count && entries[head].done { head += 1 }
        if head > 4096 && head * 2 > entries.count {
            entries.removeFirst(head)
            head = 0
        }
    }

    /// The index of the first entry with a sequence number above `seq`.
    private func firstIndex(above seq: UInt64) -> Int {
        var lo = head
        var hi = entries.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if entries[mid].seq <= seq { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    private func index(of seq: UInt64) -> Int? {
        var lo = head
        var hi = entries.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if entries[mid].seq < seq { lo = mid + 1 } else { hi = mid }
        }
        return lo < entries.count && entries[lo].seq == seq ? lo : nil
    }

    private func readBody(_ e: Entry) throws(StoreError) -> [UInt8] {
        let start = e.offset + Self.recordHeaderSize
        if e.segment == cur && e.offset >= bufStart {
            let from = start - bufStart
            return Array(buf[from..<(from + e.length)])
        }
        return try files[e.segment].read(at: start, count: e.length)
    }

    // MARK: - Checkpoint

    /// The log is synced first, so the head it records is never ahead of what the log says.
    private func writeCheckpoint() throws(StoreError) {
        try sync()
        let headNow = headSeq
        let headSegment = head < entries.count ? entries[head].segment : cur
        checkpointGeneration += 1
        var page = [UInt8](repeating: 0, count: Self.pageSize)
        Self.put32(Self.checkpointMagic, into: &page, at: 0)
        page[4] = Self.formatVersion
        Self.put64(checkpointGeneration, into: &page, at: 8)
        Self.put64(headNow, into: &page, at: 16)
        Self.put64(nextSeq, into: &page, at: 24)
        // The header of the segment holding the head: a checkpoint is trusted only beside it.
        Self.put64(segmentEpoch[headSegment], into: &page, at: 32)
        Self.put64(segmentFirst[headSegment], into: &page, at: 40)
        Self.put32(CRC32C.checksum(Array(page[0..<60])), into: &page, at: 60)
        try checkpointFile.write(page, at: Int(checkpointGeneration % 2) * Self.pageSize)
        try checkpointFile.sync()
        bytesWritten += Self.pageSize
        syncs += 1
        checkpointedHead = headNow
    }

    /// The newer valid slot (nil when neither is valid).
    private func readCheckpoint() throws(StoreError) -> (head: UInt64, epoch: UInt64, first: UInt64)? {
        let data = try checkpointFile.read(at: 0, count: 2 * Self.pageSize)
        var best: (gen: UInt64, head: UInt64, epoch: UInt64, first: UInt64)?
        for slot in 0..<2 {
            let p = slot * Self.pageSize
            let h = Array(data[p..<(p + 64)])
            guard Self.get32(h, 0) == Self.checkpointMagic, h[4] == Self.formatVersion,
                Self.get32(h, 60) == CRC32C.checksum(Array(h[0..<60]))
            else { continue }
            let gen = Self.get64(h, 8)
            if best == nil || gen > best!.gen { best = (gen, Self.get64(h, 16), Self.get64(h, 32), Self.get64(h, 40)) }
        }
        checkpointGeneration = best?.gen ?? 0
        return best.map { ($0.head, $0.epoch, $0.first) }
    }

    // MARK: - Recovery

    struct SegmentHeader {
        var index: Int
        var epoch: UInt64
        var firstSeq: UInt64
    }

    /// Scans every segment in log order, validating each record; corrupt records are skipped and
    /// counted, the store is never refused or wiped.
    private func recover(_ rec: inout Recovery) throws(StoreError) {
        var headers: [SegmentHeader] = []
        var maxEpoch: UInt64 = 0
        for i in 0..<files.count {
            let h = try files[i].read(at: 0, count: Self.segmentHeaderSize)
            if Self.get32(h, 0) == Self.segmentMagic && h[4] == Self.formatVersion && Self.get32(h, 60) == CRC32C.checksum(Array(h[0..<60]))
            {
                headers.append(SegmentHeader(index: i, epoch: Self.get64(h, 8), firstSeq: Self.get64(h, 16)))
                maxEpoch = max(maxEpoch, Self.get64(h, 8))
                segmentEpoch[i] = Self.get64(h, 8)
                segmentFirst[i] = Self.get64(h, 16)
            } else if h.contains(where: { $0 != 0 }) {
                // A damaged header: the segment's first record still tells where it belongs.
                if let r = try firstRecord(segment: i) {
                    headers.append(SegmentHeader(index: i, epoch: 0, firstSeq: r.seq))
                    rec.corruptSkipped += 1
                }
            }
        }
        headers.sort { $0.firstSeq < $1.firstSeq }
        // The checkpoint counts only beside the very segment it names (same activation epoch and
        // first record): a checkpoint left from other segment files, or from an earlier lap, is
        // ignored, and the whole log is read.
        if let cp = checkpointFound {
            maxEpoch = max(maxEpoch, cp.epoch)  // a new store never reuses the epoch it names
            if headers.contains(where: { $0.epoch == cp.epoch && $0.firstSeq == cp.first && $0.epoch > 0 }) {
                rec.checkpointHead = cp.head
            }
        }
        var expected: UInt64?
        var acked: Set<UInt64> = []
        var tail: (segment: Int, end: Int)?
        // Damaged records seen since the last good one: the next good record's sequence number
        // tells how many were really lost; without one (the end of the log) these are counted.
        var damaged = 0
        for (n, h) in headers.enumerated() {
            let segmentIndex = h.index
            // Covered by the checkpoint: the next segment starts at or below its head, so every
            // record here is done. Not read at all.
            if let cp = rec.checkpointHead, n + 1 < headers.count, h.epoch > 0,
                headers[n + 1].firstSeq <= cp, headers[n + 1].firstSeq > h.firstSeq, expected == nil || h.firstSeq == expected
            {
                expected = headers[n + 1].firstSeq
                rec.segmentsSkipped += 1
                continue
            }
            if let e = expected, h.firstSeq > e {
                rec.corruptSkipped += max(Int(h.firstSeq - e), damaged)
                damaged = 0
                expected = h.firstSeq
            } else if let e = expected, h.firstSeq < e {
                continue  // stale: older than the log's end
            }
            if expected == nil { expected = h.firstSeq }
            let data = try files[segmentIndex].read(at: 0, count: segmentSize)
            var p = Self.segmentHeaderSize
            var lastEnd = p
            while p + Self.recordHeaderSize <= segmentSize {
                if let r = Self.decode(data, at: p, expected: expected!) {
                    rec.corruptSkipped += max(Int(r.seq - expected!), damaged)
                    damaged = 0
                    if r.type == Self.typeData {
                        entries.append(Entry(seq: r.seq, segment: segmentIndex, offset: p, length: r.length, done: false))
                        liveCount[segmentIndex] += 1
                        liveBytes += r.length
                        rec.records += 1
                    } else if r.type == Self.typeAck, r.length == 8 {
                        acked.insert(Self.get64(data, p + Self.recordHeaderSize))
                    }
                    expected = r.seq + 1
                    p += Self.align8(Self.recordHeaderSize + r.length)
                    lastEnd = p
                    continue
                }
                // A damaged record (one flipped bit leaves either its magic or its sequence number
                // intact) is counted and stepped over; anything else is searched through for
                // the next record that continues the log.
                // (Its length may be the damaged field: the search goes on 8 bytes further.)
                if Self.isDamagedRecord(data, at: p, expected: expected!) { damaged += 1 }
                p += 8
            }
            tail = (segmentIndex, lastEnd)
        }
        rec.corruptSkipped += damaged
        // Acknowledged records are done, and so is everything below the checkpoint's head.
        let cpHead = rec.checkpointHead ?? 0
        for i in entries.indices where acked.contains(entries[i].seq) || entries[i].seq < cpHead {
            entries[i].done = true
            liveCount[entries[i].segment] -= 1
            liveBytes -= entries[i].length
        }
        advanceHead()
        rec.pending = entries.count - head - entries[head...].filter(\.done).count
        nextEpoch = maxEpoch + 1
        // New records continue above the last valid one, and above the checkpoint's head: records
        // below the head count as done at the next open, so a damaged record at the end of the
        // log (its number lost with it) must not make a new record reuse a number under the head.
        nextSeq = max(expected ?? 1, rec.checkpointHead ?? 0, nextSeq)
        if let tail {
            // Go on after the last valid record; its page is rewritten with its earlier bytes as
            // they are, and whatever followed (torn or stale) is overwritten or stays invalid.
            cur = tail.segment
            pos = tail.end
            bufStart = pos & ~(Self.pageSize - 1)
            let existing = try files[cur].read(at: bufStart, count: pos - bufStart)
            buf = existing
        } else {
            // A new store (or nothing readable): start in segment 0.
            cur = files.count - 1
            try advanceSegment(dropping: false)
            dirty.remove(cur)
        }
    }

    /// The first valid record of a segment whose header is unreadable.
    private func firstRecord(segment: Int) throws(StoreError) -> (type: UInt8, seq: UInt64, length: Int)? {
        let data = try files[segment].read(at: 0, count: segmentSize)
        return Self.decode(data, at: Self.segmentHeaderSize, expected: 0)
    }

    /// Where a record lives (for tests that damage it on purpose).
    func location(of seq: UInt64) -> (segment: Int, offset: Int, size: Int)? {
        guard let i = index(of: seq) else { return nil }
        let e = entries[i]
        return (e.segment, e.offset, Self.align8(Self.recordHeaderSize + e.length))
    }

    /// A valid record at `p` whose sequence is at least `expected`, or nil.
    static func decode(_ data: [UInt8], at p: Int, expected: UInt64) -> (type: UInt8, seq: UInt64, length: Int)? {
        guard p + recordHeaderSize <= data.count, get32(data, p) == recordMagic, data[p + 5] == formatVersion else { return nil }
        let type = data[p + 4]
        guard type == typeData || type == typeAck else { return nil }
        let length = Int(get32(data, p + 8))
        guard p + align8(recordHeaderSize + length) <= data.count else { return nil }
        let seq = get64(data, p + 16)
        guard seq >= expected, seq - expected < 1 << 32 else { return nil }
        let header = Array(data[p..<(p + recordHeaderSize)])
        guard get32(data, p + 12) == recordCRC(header: header, body: data[(p + recordHeaderSize)..<(p + recordHeaderSize + length)]) else {
            return nil
        }
        return (type, seq, length)
    }

    /// Whether a record that fails its check sits at `p`, where record `expected` should be:
    /// one flipped bit leaves its magic or its sequence number intact. Zeros, other junk and
    /// whole stale records of an earlier lap are not damage.
    static func isDamagedRecord(_ data: [UInt8], at p: Int, expected: UInt64) -> Bool {
        guard p + recordHeaderSize <= data.count else { return false }
        let magicIntact = get32(data, p) == recordMagic && data[p + 5] == formatVersion
        guard magicIntact || get64(data, p + 16) == expected else { return false }
        let length = Int(get32(data, p + 8))
        if magicIntact && p + align8(recordHeaderSize + length) <= data.count {
            let header = Array(data[p..<(p + recordHeaderSize)])
            let body = data[(p + recordHeaderSize)..<(p + recordHeaderSize + length)]
            if get32(data, p + 12) == recordCRC(header: header, body: body) { return false }
        }
        return true
    }

    static func recordCRC(header: [UInt8], body: ArraySlice<UInt8>) -> UInt32 {
        var crc: UInt32 = header.withUnsafeBytes { CRC32C.update(0, UnsafeRawBufferPointer(rebasing: $0[0..<12])) }
        crc = header.withUnsafeBytes { CRC32C.update(crc, UnsafeRawBufferPointer(rebasing: $0[16..<32])) }
        return body.withUnsafeBytes { CRC32C.update(crc, $0) }
    }

    // MARK: - Little-endian helpers

    static func align8(_ n: Int) -> Int { (n + 7) & ~7 }
    static func alignPage(_ n: Int) -> Int { (n + pageSize - 1) & ~(pageSize - 1) }

    static func put32(_ v: UInt32, into b: inout [UInt8], at i: Int) {
        for k in 0..<4 { b[i + k] = UInt8(truncatingIfNeeded: v >> (8 * k)) }
    }

    static func put64(_ v: UInt64, into b: inout [UInt8], at i: Int) {
        for k in 0..<8 { b[i + k] = UInt8(truncatingIfNeeded: v >> (8 * k)) }
    }

    static func get32(_ b: [UInt8], _ i: Int) -> UInt32 {
        var v: UInt32 = 0
        for k in 0..<4 { v |= UInt32(b[i + k]) << (8 * k) }
        return v
    }

    static func get64(_ b: [UInt8], _ i: Int) -> UInt64 {
        var v: UInt64 = 0
        for k in 0..<8 { v |= UInt64(b[i + k]) << (8 * k) }
        return v
    }
}
