/// The client's subscriptions as a value: what to send in SUBSCRIBE, what to restore after a
/// reconnect, which callbacks a message reaches. No I/O; `ClientCore` hands its SUBSCRIBE
/// requests to the `SessionMachine` and its deliveries to the callbacks.
struct SubscriptionTable {
    /// Not generic: a generic table's metadata was looked up at run time for every delivered
    /// message (callgrind, rtt +300 instructions per message).
    typealias Handler = @Sendable (MQTTMessage) -> Void

    struct Entry {
        var qos: QoS
        var options: SubscribeOptions
        var handler: Handler
        /// The broker acknowledged it on the current session.
        var confirmed = false
        /// 5.0 Subscription Identifier (§3.8.2.1.2): the broker tags each copy of a message with
        /// the identifiers of the subscriptions it matched, so each callback gets its copy once.
        var id: UInt32

        func packet(_ filter: String) -> MQTTPacket.Subscription {
            .init(
                filter: filter, qos: qos, noLocal: options.noLocal, retainAsPublished: options.retainAsPublished,
                retainHandling: options.retainHandling)
        }
    }

    /// One SUBSCRIBE packet's worth: the filters, and the identifier it carries (if any).
    struct Request: Equatable {
        var subscriptions: [MQTTPacket.Subscription]
        var properties: MQTTProperties
        var filters: [String] { subscriptions.map(\.filter) }
    }

    private(set) var entries: [String: Entry] = [:]
    private var nextID: UInt32 = 1
    /// 5.0 and not refused by the broker (Subscription Identifier Available 0).
    var usesIdentifiers = false

    /// A filter the broker said in CONNACK it does not support (5.0 §3.2.2.3.15-17).
    static func unsupported(_ filter: String, by info: MQTTConnectionInfo) -> String? {
        let p = info.properties
        if filter.hasPrefix("$share/") && p.sharedSubscriptionAvailable == 0 {
            return "the broker does not support shared subscriptions (Shared Subscription Available 0): cannot subscribe to \"\(filter)\""
        }
        if p.wildcardSubscriptionAvailable == 0 && (filter.contains("+") || filter.contains("#")) {
            return
                "the broker does not support wildcard subscriptions (Wildcard Subscription Available 0): cannot subscribe to \"\(filter)\""
        }
        return nil
    }

    /// Adds or replaces subscriptions (a replaced filter keeps its identifier), unconfirmed.
    mutating func add(_ filter: String, qos: QoS, options: SubscribeOptions, handler: @escaping Handler) {
        let id = entries[filter]?.id ?? takeID()
        entries[filter] = Entry(qos: qos, options: options, handler: handler, id: id)
    }

    mutating func remove(_ filters: [String]) {
        for f in filters { entries[f] = nil }
    }

    /// SUBSCRIBE packets for `filters`: one with them all, or one per filter with identifiers
    /// (a packet carries one Subscription Identifier for all its filters).
    func requests(for filters: [String]) -> [Request] {
        let subs = filters.compactMap { f in entries[f].map { (f, $0) } }
        guard usesIdentifiers else {
            return subs.isEmpty ? [] : [Request(subscriptions: subs.map { $0.1.packet($0.0) }, properties: .init())]
        }
        return subs.map { f, e in
            var props = MQTTProperties()
            props.subscriptionIdentifiers = [e.id]
            return Request(subscriptions: [e.packet(f)], properties: props)
        }
    }

    /// After CONNACK: what to subscribe again, in batches that keep each SUBSCRIBE small. With a
    /// session present only what the broker never confirmed; without one, everything (and
    /// nothing is confirmed any more).
    mutating func restore(sessionPresent: Bool) -> [Request] {
        if !sessionPresent { for k in entries.keys { entries[k]!.confirmed = false } }
        let filters = entries.filter { !sessionPresent || !$0.value.confirmed }.map(\.key).sorted()
        let batch = usesIdentifiers ? 1 : 32
        return stride(from: 0, to: filters.count, by: batch).flatMap { requests(for: Array(filters[$0..<min($0 + batch, filters.count)])) }
    }

    /// SUBACK: granted filters are confirmed; refused ones are removed and returned with their code.
    mutating func acknowledged(_ filters: [String], codes: [UInt8]) -> [(filter: String, code: UInt8)] {
        var refused: [(String, UInt8)] = []
        for (filter, code) in zip(filters, codes) {
            if ReasonCode(code).isFailure {
                entries[filter] = nil
                refused.append((filter, code))
            } else {
                entries[filter]?.confirmed = true
            }
        }
        return refused
    }

    /// The callbacks a message reaches: by its Subscription Identifiers when it has them, else
    /// by matching each filter; each callback once.
    func forEachHandler(for publish: MQTTPacket.Publish, _ body: (@escaping Handler) -> Void) {
        let ids = publish.properties.subscriptionIdentifiers
        for (filter, e) in entries where ids.isEmpty ? Topic.matches(filter: filter, topic: publish.topic) : ids.contains(e.id) {
            body(e.handler)
        }
    }

    /// The same as a list (tests).
    func handlers(for publish: MQTTPacket.Publish) -> [Handler] {
        var all: [Handler] = []
        forEachHandler(for: publish) { all.append($0) }
        return all
    }

    /// 1 ... 268,435,455 (the Variable Byte Integer's range, §3.8.2.1.2), then round again.
    private mutating func takeID() -> UInt32 {
        defer { nextID = nextID >= 268_435_455 ? 1 : nextID + 1 }
        return nextID
    }
}
