import Communicator
import Testing

@Suite("Topic names and filters")
struct TopicTests {
    // Examples from 3.1.1 §4.7.1 and 5.0 §4.7.
    static let matching: [(String, String, Bool)] = [
        ("sport/tennis/player1/#", "sport/tennis/player1", true),
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking", true),
        ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true),
        ("sport/#", "sport", true),
        ("#", "anything/at/all", true),
        ("sport/tennis/+", "sport/tennis/player1", true),
        ("sport/tennis/+", "sport/tennis/player1/ranking", false),
        ("sport/+", "sport", false),
        ("sport/+", "sport/", true),
        ("+/+", "/finance", true),
        ("/+", "/finance", true),
        ("+", "/finance", false),
        ("a/b", "a/b", true),
        ("a/b", "a/b/c", false),
        ("a/b", "a", false),
        ("a/+/c", "a/x/c", true),
        ("a/+/c", "a/x/y/c", false),
        ("+/+/+", "a/b/c", true),
        ("A/b", "a/b", false),
        // [MQTT-4.7.2-1] wildcards at the start do not match $-topics.
        ("#", "$SYS/broker/uptime", false),
        ("+/monitor/Clients", "$SYS/monitor/Clients", false),
        ("$SYS/#", "$SYS/monitor/Clients", true),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
        // Shared subscriptions match on the filter after the group.
        ("$share/g1/vision/#", "vision/events", true),
        ("$share/g1/vision/#", "device/status", false),
    ]

    @Test("matching follows §4.7", arguments: matching)
    func matches(_ c: (String, String, Bool)) {
        #expect(Topic.matches(filter: c.0, topic: c.1) == c.2, "\(c.0) vs \(c.1)")
    }

    @Test(
        "valid filters are accepted", arguments: ["#", "+", "a/#", "a/+/b", "+/+", "/", "a//b", "$SYS/#", "$share/g/a/+", "sport/tennis/#"])
    func validFilters(_ f: String) {
        #expect(Topic.filterProblem(f) == nil)
    }

    @Test(
        "invalid filters are refused with the rule",
        arguments: [
            ("", "empty"), ("a/#/b", "'#'"), ("a#", "'#'"), ("a/b#", "'#'"), ("a+", "'+'"), ("a/+b/c", "'+'"),
            ("$share/g", "$share/<group>/<filter>"), ("$share//a", "$share/<group>/<filter>"), ("$share/g+/a", "wildcard"),
            ("a\u{0}b", "U+0000"),
        ])
    func invalidFilters(_ c: (String, String)) {
        let problem = Topic.filterProblem(c.0)
        #expect(problem?.contains(c.1) == true, "\(String(describing: problem))")
    }

    @Test("topic names: no wildcards, not empty, no U+0000")
    func names() {
        #expect(Topic.nameProblem("vision/events") == nil)
        #expect(Topic.nameProblem("/") == nil)
        #expect(Topic.nameProblem("")?.contains("empty") == true)
        #expect(Topic.nameProblem("a/+")?.contains("wildcard") == true)
        #expect(Topic.nameProblem("a/#")?.contains("wildcard") == true)
        #expect(Topic.nameProblem("a/\u{0}/+")?.contains("U+0000") == true, "U+0000 is named before a wildcard")
        #expect(Topic.nameProblem("#/a")?.contains("wildcard") == true && Topic.nameProblem("a,b*c!\"$%&'()") == nil)
        #expect(Topic.nameProblem("caméra/événements/ü") == nil)
        #expect(Topic.nameProblem("a\u{0}")?.contains("U+0000") == true)
        #expect(Topic.nameProblem(String(repeating: "x", count: 65_536))?.contains("65535") == true)
    }
}
