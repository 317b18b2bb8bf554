import FoundationEssentials

/// What a source is (`sources[].type`).
public enum SourceKind: String, Sendable, CaseIterable, ConfigChoice {
    case simulated
    case socket
    case v4l2
    case directory

    /// The comment on `type` in the example file.
    var about: String {
        switch self {
        case .simulated: "synthetic detections and motion"
        case .socket: "the vision pipeline writes one JSON object per line"
        case .v4l2: "camera_online / camera_offline as /dev/video* come and go"
        case .directory: "a snapshot event per complete new file (path, size, sha256)"
        }
    }
}

/// One key of a source (`sources[i].<name>`), for the kinds that take it; declared once like
/// `ConfigKey` (the default is the value in a fresh `Source` of that kind).
struct SourceKey {
    let name: String
    let kinds: Set<SourceKind>
    var note = ""
    let read: (ConfigTree, _ path: String, ConfigTree.Value, inout AgentConfig.Source) -> Void
    let show: (AgentConfig.Source) -> String

    static func int(
        _ name: String, _ key: WritableKeyPath<AgentConfig.Source, Int>, _ range: ClosedRange<Int>, _ kinds: Set<SourceKind>,
        note: String = ""
    ) -> SourceKey {
        SourceKey(
            name: name, kinds: kinds, note: note, read: { t, p, item, s in s[keyPath: key] = t.int(p, s[keyPath: key], range, in: item) },
            show: { "\($0[keyPath: key])" })
    }

    static func text(
        _ name: String, _ key: WritableKeyPath<AgentConfig.Source, String>, _ kinds: Set<SourceKind>, note: String = ""
    )
        -> SourceKey
    {
        SourceKey(
            name: name, kinds: kinds, note: note,
            read: { t, p, item, s in s[keyPath: key] = t.string(p, s[keyPath: key], in: item) ?? s[keyPath: key] },
            show: { YAML.quote($0[keyPath: key]) })
    }
}

extension AgentConfig.Source {
    static var keys: [SourceKey] {
        [
            SourceKey(
                name: "rate", kinds: [.simulated], note: "events per second",
                read: { t, p, item, s in s.rate = t.double(p, s.rate, 0.001...1000, in: item) }, show: { ConfigKey.number($0.rate) }),
            SourceKey(
                name: "labels", kinds: [.simulated], note: "empty: person, car, bicycle, dog",
                read: { t, p, item, s in
                    guard let labels = item.child("labels") else { return }
                    guard case .sequence(let ls) = labels else { return t.problem("\(p): expected a list of labels") }
                    s.labels = ls.compactMap { if case .scalar(let l, _) = $0 { l } else { nil } }
                }, show: { "[" + $0.labels.map(YAML.quote).joined(separator: ", ") + "]" }),
            SourceKey(
                name: "path", kinds: [.socket, .directory], note: "socket: where writers connect; directory: the folder watched",
                read: { t, p, item, s in
                    s.path = t.string(p, s.path, in: item) ?? s.path
                    if s.path.isEmpty && s.type == .directory { t.problem("\(p): missing; the snapshot folder to watch") }
                }, show: { YAML.quote($0.path) }),
            .int("max_line_bytes", \.maxLineBytes, 64...16_777_216, [.socket]),
            .int("max_connections", \.maxConnections, 1...4096, [.socket], note: "writers at once; more are closed at once"),
            .int("max_lines_per_second", \.maxLinesPerSecond, 1...1_000_000, [.socket], note: "per writer; beyond it lines are dropped"),
            .text("directory", \.directory, [.v4l2]),
            .text("sysfs", \.sysfs, [.v4l2]),
            SourceKey(
                name: "poll_interval", kinds: [.v4l2], note: "seconds, where inotify cannot see a change",
                read: { t, p, item, s in s.pollInterval = t.double(p, s.pollInterval, 0.05...3600, in: item) },
                show: { ConfigKey.number($0.pollInterval) }),
            .int("max_hash_bytes", \.maxHashBytes, 4096...(1 << 36), [.directory], note: "a larger file is reported without sha256"),
            .int(
                "max_image_bytes", \.maxImageBytes, 0...(16 << 20), [.directory],
                note: "a JPEG/PNG up to this size is published on topics.snapshot (0: none); a larger one only as its event"),
            SourceKey(
                name: "event_types", kinds: [.socket], note: "the types its writers send (Home Assistant's event entity)",
                read: { t, p, item, s in
                    guard let types = item.child("event_types") else { return }
                    guard case .sequence(let ts) = types else { return t.problem("\(p): expected a list of event types") }
                    s.eventTypes = ts.compactMap { if case .scalar(let v, _) = $0, !v.isEmpty { v } else { nil } }
                    if s.eventTypes.count != ts.count { t.problem("\(p): every event type is a non-empty text") }
                }, show: { "[" + $0.eventTypes.map(YAML.quote).joined(separator: ", ") + "]" }),
        ]
    }

    /// The sources the example file shows: one of each kind.
    static let samples: [AgentConfig.Source] = [
        .init(type: .simulated, name: "cam0", labels: ["person", "car", "bicycle", "dog"]),
        .init(type: .socket, name: "pipeline"),
        .init(type: .v4l2, name: "cameras"),
        .init(type: .directory, name: "snapshots", path: "/var/lib/edge-agent/snapshots"),
    ]
}

extension AgentConfig {
    static var sourcesKey: ConfigKey {
        ConfigKey(
            path: "sources", example: renderSources(Source.samples, notes: true), read: readSources,
            show: { renderSources($0.sources, notes: false) })
    }

    private static func readSources(_ t: ConfigTree, _ c: inout AgentConfig) {
        var names: Set<String> = []
        for (i, item) in t.list("sources").enumerated() {
            let p = "sources[\(i)]"
            guard case .mapping(let pairs) = item else {
                t.problem("\(p): expected a mapping with type and name")
                continue
            }
            guard item.child("type") != nil else {
                t.problem("\(p).type: missing; one of \(SourceKind.choices.map(\.rawValue).joined(separator: ", "))")
                continue
            }
            guard let kind: SourceKind = t.choice("\(p).type", in: item) else { continue }
            var s = Source(type: kind, name: "")
            s.name = t.string("\(p).name", "\(kind.rawValue)\(i)", in: item) ?? ""
            if !names.insert(s.name).inserted { t.problem("\(p).name: \"\(s.name)\" is used by another source; names must be unique") }
            let keys = Source.keys.filter { $0.kinds.contains(kind) }
            for k in keys { k.read(t, "\(p).\(k.name)", item, &s) }
            let allowed = Set(["type", "name"] + keys.map(\.name))
            for (k, _) in pairs where !allowed.contains(k) {
                t.problem("\(p).\(k): unknown key for a \(kind.rawValue) source (known: \(allowed.sorted().joined(separator: ", ")))")
            }
            c.sources.append(s)
        }
    }

    /// The list as YAML lines (indented as a top-level key's value), each source with its kind's keys.
    static func renderSources(_ sources: [Source], notes: Bool) -> String {
        guard !sources.isEmpty else { return "[]" }
        var out = ""
        for s in sources {
            out += "\n" + ConfigKey.line("  - type: \(s.type.rawValue)", note: notes ? s.type.about : "")
            out += "\n" + "    name: \(YAML.quote(s.name))"
            for k in Source.keys where k.kinds.contains(s.type) {
                out += "\n" + ConfigKey.line("    \(k.name): \(k.show(s))", note: notes ? k.note : "")
            }
        }
        return out
    }
}
