import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import Communicator

@Suite("Subscription table: SUBSCRIBE requests, restore after a reconnect, SUBACK, routing")
struct SubscriptionTableTests {
    typealias Table = SubscriptionTable

    /// A handler that says its name when called (the table holds closures).
    static func named(_ name: String, _ calls: NIOLockedValueBox<[String]>) -> Table.Handler {
        { _ in calls.withLockedValue { $0.append(name) } }
    }
    /// Where the handlers say their names (only the routing test calls them).
    static let calls = NIOLockedValueBox<[String]>([])
    /// The names of the handlers a message reaches.
    static func names(_ t: Table, _ p: MQTTPacket.Publish) -> [String] {
        var names: [String] = []
        for h in t.handlers(for: p) {
            Self.calls.withLockedValue { $0.removeAll() }
            h(MQTTMessage(topic: p.topic, payload: p.payload, qos: p.qos, retain: false, properties: .init()))
            names += Self.calls.withLockedValue { $0 }
        }
        return names
    }

    static func info(_ change: (inout MQTTProperties) -> Void) -> MQTTConnectionInfo {
        var p = MQTTProperties()
        change(&p)
        return MQTTConnectionInfo(
            sessionPresent: false, keepAliveSeconds: 60, receiveMaximum: 10, maximumPacketSize: 1 << 20, maximumQoS: .exactlyOnce,
            retainAvailable: true, assignedClientID: nil, properties: p)
    }

    @Test("without identifiers: the filters in one SUBSCRIBE; with them: one per filter, each with its own identifier, kept when replaced")
    func requests() {
        var t = Table()
        t.add("a/#", qos: .atLeastOnce, options: .init(), handler: Self.named("A", Self.calls))
        t.add("b/+", qos: .exactlyOnce, options: .init(noLocal: true), handler: Self.named("B", Self.calls))
        let one = t.requests(for: ["a/#", "b/+"])
        #expect(one.count == 1 && one[0].filters == ["a/#", "b/+"] && one[0].properties.subscriptionIdentifiers.isEmpty)
        #expect(one[0].subscriptions[1].noLocal && one[0].subscriptions[1].qos == .exactlyOnce)
        t.usesIdentifiers = true
        let each = t.requests(for: ["a/#", "b/+"])
        #expect(each.map(\.filters) == [["a/#"], ["b/+"]])
        #expect(each.map(\.properties.subscriptionIdentifiers) == [[1], [2]])
        t.add("a/#", qos: .atMostOnce, options: .init(), handler: Self.named("A2", Self.calls))
        #expect(t.requests(for: ["a/#"])[0].properties.subscriptionIdentifiers == [1], "a replaced filter keeps its identifier")
        #expect(t.requests(for: ["unknown"]).isEmpty)
    }

    @Test("restore: without a session everything again (in batches of 32), with one only what was never confirmed")
    func restore() {
        var t = Table()
        for i in 0..<40 { t.add("f/\(i)", qos: .atLeastOnce, options: .init(), handler: Self.named("\(i)", Self.calls)) }
        let all = t.restore(sessionPresent: false)
        #expect(all.map(\.subscriptions.count) == [32, 8])
        _ = t.acknowledged(all[0].filters, codes: Array(repeating: 1, count: 32))
        let rest = t.restore(sessionPresent: true)
        #expect(rest.flatMap(\.filters) == all[1].filters, "the broker kept the confirmed ones")
        #expect(t.restore(sessionPresent: false).flatMap(\.filters).count == 40, "a lost session forgets every confirmation")
        t.usesIdentifiers = true
        #expect(t.restore(sessionPresent: false).count == 40, "one per filter with identifiers")
    }

    @Test("SUBACK: granted filters confirmed, refused ones removed and reported with their code")
    func suback() {
        var t = Table()
        t.add("ok", qos: .atLeastOnce, options: .init(), handler: Self.named("ok", Self.calls))
        t.add("denied", qos: .atLeastOnce, options: .init(), handler: Self.named("denied", Self.calls))
        let refused = t.acknowledged(["ok", "denied"], codes: [1, ReasonCode.notAuthorized.rawValue])
        #expect(refused.map(\.filter) == ["denied"] && refused.map(\.code) == [0x87])
        #expect(t.entries["ok"]?.confirmed == true && t.entries["denied"] == nil)
    }

    @Test("routing: by Subscription Identifier when the message has them, else by matching filters; each callback once")
    func routing() {
        var t = Table()
        t.add("cam/+/events", qos: .atLeastOnce, options: .init(), handler: Self.named("events", Self.calls))  // id 1
        t.add("cam/#", qos: .atLeastOnce, options: .init(), handler: Self.named("all", Self.calls))  // id 2
        var p = MQTTPacket.Publish(topic: "cam/1/events", payload: ByteBuffer(), qos: .atLeastOnce)
        #expect(Set(Self.names(t, p)) == ["events", "all"])
        p.properties.subscriptionIdentifiers = [2]
        #expect(Self.names(t, p) == ["all"], "the broker says which subscription matched")
        p = MQTTPacket.Publish(topic: "other", payload: ByteBuffer(), qos: .atMostOnce)
        #expect(Self.names(t, p).isEmpty)
    }

    @Test("filters the broker said it does not support (Shared / Wildcard Subscription Available 0)")
    func unsupported() {
        let noShared = Self.info { $0.sharedSubscriptionAvailable = 0 }
        #expect(Table.unsupported("$share/g/a", by: noShared)?.contains("shared subscriptions") == true)
        #expect(Table.unsupported("a/+", by: noShared) == nil)
        let noWildcards = Self.info { $0.wildcardSubscriptionAvailable = 0 }
        #expect(Table.unsupported("a/#", by: noWildcards)?.contains("wildcard") == true)
        #expect(Table.unsupported("a/b", by: noWildcards) == nil)
    }
}
