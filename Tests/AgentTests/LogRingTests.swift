import Logging
import Testing

@testable import EdgeAgent

@Suite("Log ring")
struct LogRingTests {
    @Test("keeps the newest lines up to its capacity, oldest first; filters by level; cuts a long line; resizes keeping the newest")
    func ring() {
        let ring = LogRing(capacity: 3)
        for i in 1...5 { ring.append(i % 2 == 0 ? .warning : .info, "line \(i)") }
        #expect(ring.tail(10, atLeast: .trace).map(\.text) == ["line 3", "line 4", "line 5"])
        #expect(ring.tail(2, atLeast: .trace).map(\.text) == ["line 4", "line 5"])
        #expect(ring.tail(10, atLeast: .warning).map(\.text) == ["line 4"])
        ring.append(.error, String(repeating: "x", count: 5000))
        let long = ring.tail(1, atLeast: .error)[0].text
        #expect(long.utf8.count <= LogRing.maxLineBytes && long.hasSuffix("…"))
        ring.resize(2)
        #expect(ring.tail(10, atLeast: .trace).map(\.text) == ["line 5", long])
        ring.append(.info, "line 7")
        #expect(ring.tail(10, atLeast: .trace).map(\.text) == [long, "line 7"])
        // A cut falls between whole characters: no replacement character, within the bound.
        ring.append(.info, String(repeating: "é", count: 600))  // 1200 bytes
        let cut = ring.tail(1, atLeast: .trace)[0].text
        #expect(cut.utf8.count <= LogRing.maxLineBytes && !cut.contains("\u{FFFD}") && cut.hasPrefix("éé") && cut.hasSuffix("…"))
        // log/tail's budget counts what JSON makes of a line.
        #expect(CommandServer.jsonLength("ab") == 5 && CommandServer.jsonLength("a\"b") == 7 && CommandServer.jsonLength("\u{1}") == 9)
        let none = LogRing(capacity: 0)
        none.append(.error, "dropped")
        #expect(none.tail(10, atLeast: .trace).isEmpty)
    }
}
