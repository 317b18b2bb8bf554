@testable import DeviceAdapters

/// A writer's bytes on the event socket, cut into lines in chunks chosen by the input. Findings:
/// a trap, a line longer than the limit handed on, a refusal whose log text is not escaped, a
/// split that changes the lines (the same stream in one chunk must give the same pieces).
enum SocketLineFuzz {
    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let maxLine = Int(input.byte()) * 4 + 64
        let chunk = Int(input.byte() % 32) + 1
        let stream = input.rest()
        var whole = LineFramer(maxLineBytes: maxLine)
        var expected: [LineFramer.Piece] = []
        whole.feed(stream) { expected.append($0) }
        whole.finish { expected.append($0) }
        var split = LineFramer(maxLineBytes: maxLine)
        var pieces: [LineFramer.Piece] = []
        var offset = 0
        while offset < stream.count {
            split.feed(stream[offset..<min(offset + chunk, stream.count)]) { pieces.append($0) }
            offset += chunk
        }
        split.finish { pieces.append($0) }
        precondition(pieces == expected, "chunks of \(chunk) bytes cut the stream differently")
        for case .line(let line) in pieces {
            precondition(line.count <= maxLine && !line.contains(UInt8(ascii: "\n")), "a line of \(line.count) bytes went on")
            switch SocketLine.parse(line) {
            case .blank:
                precondition(SocketLine.isBlank(line))
            case .event(let type, let fields):
                precondition(!type.isEmpty && type.count <= 64 && fields["type"] == nil)
            case .rejected(let reason, let message):
                precondition(!reason.isEmpty)
                // Escaped: printable ASCII, and the ellipsis of a cut line.
                precondition(
                    message.unicodeScalars.allSatisfy { ($0.value >= 0x20 && $0.value < 0x7F) || $0 == "…" },
                    "unescaped log text: \(message.debugDescription)")
            }
        }
    }
}
