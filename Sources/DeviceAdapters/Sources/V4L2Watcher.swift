import FoundationEssentials
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Watches camera devices (`video<N>` in `directory`, normally /dev) appear and disappear and
/// reports `camera_online` / `camera_offline`, with the device's name and driver read from sysfs
/// (`<sysfs>/video<N>/name`, the `device/driver` link) where they exist. Devices present at start
/// are reported online once. Hot-plug is seen through inotify on `directory` (devtmpfs and udev
/// both create and remove the nodes there); only where inotify cannot watch it is the folder
/// listed again every `pollInterval` seconds, on the event loop's monotonic clock.
public final class V4L2Watcher: EventSource {
    public let name: String
    public let kind = "v4l2"
    public let directory: String
    public let sysfs: String
    public let pollInterval: Double
    private let counts = Counters()

    public init(name: String, directory: String = "/dev", sysfs: String = "/sys/class/video4linux", pollInterval: Double = 2) {
        self.name = name
        self.directory = directory
        self.sysfs = sysfs
        self.pollInterval = pollInterval
    }

    public var counters: [String: Int] { counts.all }

    static let watchMask = UInt32(IN_CREATE) | UInt32(IN_DELETE) | UInt32(IN_MOVED_FROM) | UInt32(IN_MOVED_TO) | UInt32(IN_DELETE_SELF)

    public func run(_ context: SourceContext) async throws {
        var st = stat()
        guard stat(directory, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else {
            throw SourceError(name, .badPath, "\(directory) is not a directory (sources[].directory)")
        }
        var known: Set<String> = []
        var watched = false
        do {
            watched = try await watch(context, &known)
        } catch let error as SourceError where error.reason == .system {
            counts.add("no_inotify")  // no descriptor to be had (fs.inotify.max_user_instances): the listing below
        }
        if watched {
            try Task.checkCancellation()
            throw SourceError(name, .ended, "the inotify descriptor was closed")
        }
        // No inotify on this folder: list it on a schedule.
        counts.add("polling")
        rescan(&known, context.sink)
        context.ready()
        while true {
            try await context.loop.sleep(for: .nanoseconds(Int64(pollInterval * 1e9)))
            rescan(&known, context.sink)
        }
    }

    /// Watches the folder through inotify until cancelled; false when inotify cannot watch it.
    /// Throws `SourceError.system` only when no inotify descriptor could be had.
    private func watch(_ context: SourceContext, _ known: inout Set<String>) async throws -> Bool {
        try await Inotify.withDescriptor(on: context.loop, source: name) { fd, reads -> Bool in
            guard inotify_add_watch(fd, directory, Self.watchMask) >= 0 else { return false }
            rescan(&known, context.sink)
            context.ready()
            for try await chunk in reads {
                let events = InotifyEvent.parse(chunk)
                if events.contains(where: { $0.has(IN_DELETE_SELF) }) {
                    throw SourceError(name, .badPath, "\(directory) was removed (sources[].directory)")
                }
                if events.contains(where: { $0.has(IN_Q_OVERFLOW) || Self.isDevice($0.name) }) { rescan(&known, context.sink) }
            }
            return true
        }
    }

    /// Reports the devices that came and went since `known`.
    private func rescan(_ known: inout Set<String>, _ sink: EventSink) {
        let now = Set(devices())
        for d in now.subtracting(known).sorted() {
            var fields: [String: JSONValue] = ["device": .string(directory + "/" + d)]
            if let n = try? String(contentsOfFile: "\(sysfs)/\(d)/name", encoding: .utf8) {
                fields["name"] = .string(n.trimmed)
            }
            if let link = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(sysfs)/\(d)/device/driver") {
                fields["driver"] = .string(String(link.split(separator: "/").last ?? ""))
            }
            sink(SourceEvent(type: "camera_online", fields: fields))
            counts.add("camera_online")
        }
        for d in known.subtracting(now).sorted() {
            sink(SourceEvent(type: "camera_offline", fields: ["device": .string(directory + "/" + d)]))
            counts.add("camera_offline")
        }
        known = now
    }

    static func isDevice(_ n: String) -> Bool { n.hasPrefix("video") && n.count > 5 && n.dropFirst(5).allSatisfy(\.isNumber) }

    func devices() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter(Self.isDevice)
    }
}
