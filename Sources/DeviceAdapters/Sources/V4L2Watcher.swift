import FoundationEssentials

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Watches camera devices (`video<N>` in `directory`, normally /dev) appear and disappear and
/// reports `camera_online` / `camera_offline`, with the device's name and driver read from sysfs
/// (`<sysfs>/video<N>/name`, the `device/driver` link) where they exist. Devices present at start
/// are reported online once.
public final class V4L2Watcher: EventSource, @unchecked Sendable {
    public let name: String
    public let kind = "v4l2"
    public let directory: String
    public let sysfs: String
    public let pollInterval: Double
    private let worker = Worker()
    private let counts = Counters()

    public init(name: String, directory: String = "/dev", sysfs: String = "/sys/class/video4linux", pollInterval: Double = 2) {
        self.name = name
        self.directory = directory
        self.sysfs = sysfs
        self.pollInterval = pollInterval
    }

    public var counters: [String: Int] { counts.all }

    public func start(_ sink: @escaping EventSink) throws {
        var st = stat()
        guard stat(directory, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else {
            throw LightError(description: "v4l2 source \(name): \(directory) is not a directory (sources[].directory)")
        }
        worker.start(name: "source-\(name)") { [self] w in
            var known: Set<String> = []
            repeat {
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
            } while w.sleep(pollInterval)
        }
    }

    func devices() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { n in
            n.hasPrefix("video") && n.count > 5 && n.dropFirst(5).allSatisfy(\.isNumber)
        }
    }

    public func stop() { worker.stop() }
}
