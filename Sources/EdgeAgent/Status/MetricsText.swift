/// The samples of a Prometheus text exposition (format 0.0.4): what `edge-agent status` reads.
/// Comments, and lines that are no sample, are skipped.
public struct MetricsText: Sendable {
    public struct Sample: Sendable, Equatable {
        public var name: String
        public var labels: [String: String]
        public var value: Double
    }

    public private(set) var samples: [Sample] = []

    public init(_ text: String) {
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            if let s = Self.sample(line) { samples.append(s) }
        }
    }

    /// `name{a="x",b="y"} value [timestamp]`, label values with \\ \" \n escapes.
    static func sample(_ line: Substring) -> Sample? {
        var rest = line[...]
        let nameEnd = rest.firstIndex { $0 == "{" || $0 == " " } ?? rest.endIndex
        let name = String(rest[..<nameEnd])
        guard !name.isEmpty else { return nil }
        rest = rest[nameEnd...]
        var labels: [String: String] = [:]
        if rest.first == "{" {
            rest = rest.dropFirst()
            while let c = rest.first, c != "}" {
                if c == "," || c == " " {
                    rest = rest.dropFirst()
                    continue
                }
                guard let eq = rest.firstIndex(of: "=") else { return nil }
                let key = String(rest[..<eq])
                rest = rest[rest.index(after: eq)...]
                guard rest.first == "\"" else { return nil }
                rest = rest.dropFirst()
                var value = ""
                var escaped = false
                while let ch = rest.first {
                    rest = rest.dropFirst()
                    if escaped {
                        value.append(ch == "n" ? "\n" : ch)
                        escaped = false
                    } else if ch == "\\" {
                        escaped = true
                    } else if ch == "\"" {
                        break
                    } else {
                        value.append(ch)
                    }
                }
                labels[key] = value
            }
            guard rest.first == "}" else { return nil }
            rest = rest.dropFirst()
        }
        guard let field = rest.split(separator: " ").first else { return nil }
        let value: Double? =
            switch field {
            case "+Inf": .infinity
            case "-Inf": -.infinity
            case "NaN": .nan
            default: Double(field)
            }
        return value.map { Sample(name: name, labels: labels, value: $0) }
    }

    /// The samples of `name` whose labels include `matching`.
    public func all(_ name: String, _ matching: [String: String] = [:]) -> [Sample] {
        samples.filter { s in s.name == name && matching.allSatisfy { s.labels[$0.key] == $0.value } }
    }

    /// The value of the first such sample.
    public func value(_ name: String, _ matching: [String: String] = [:]) -> Double? { all(name, matching).first?.value }

    /// The sum over every such sample (0 when there is none).
    public func sum(_ name: String, _ matching: [String: String] = [:]) -> Double { all(name, matching).reduce(0) { $0 + $1.value } }
}
