import Logging

enum LoggingSetup {
    /// Only warnings and errors, on stderr: stdout carries the one JSON line.
    static func quiet() {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = .warning
            return h
        }
    }
}
