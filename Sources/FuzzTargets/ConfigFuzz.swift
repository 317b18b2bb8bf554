@testable import EdgeAgent

/// The YAML configuration file as an operator (or a damaged SD card) may leave it. Findings: a
/// trap, a hang (alias bombs, deep nesting), a file accepted whose rendering is not accepted in turn.
enum ConfigFuzz {
    static func run(_ data: [UInt8]) {
        let text = String(decoding: data, as: UTF8.self)
        guard let config = try? AgentConfig.parse(text, source: "fuzz.yaml", environment: [:], baseDirectory: "/nonexistent") else {
            return
        }
        let rendered = config.rendered()
        do {
            _ = try AgentConfig.parse(rendered, source: "rendered.yaml", environment: [:], baseDirectory: "/nonexistent")
        } catch {
            preconditionFailure("an accepted file renders as one that is refused: \(error)\n\(rendered)")
        }
    }
}
