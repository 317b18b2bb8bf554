// Subscriptions, on the loop: the table (`SubscriptionTable`) remembers them and their
// callbacks; the session machine sends the SUBSCRIBE and UNSUBSCRIBE requests, now or when the
// connection comes up, and restores them on a new session.
extension ClientCore {
    func subscribe(
        _ entries: [(filter: String, qos: QoS, options: SubscribeOptions, handler: MessageHandler)], _ completion: Completion, now: UInt64
    ) {
        if let info = machine.connectionInfo,
            let problem = entries.lazy.compactMap({ SubscriptionTable.unsupported($0.filter, by: info) }).first
        {
            complete(completion, .failure(ProtocolValidationError(problem, reason: .brokerLimit)))
            return
        }
        for e in entries { subscriptions.add(e.filter, qos: e.qos, options: e.options, handler: e.handler) }
        guard machine.isConnected else {
            // Sent when the connection comes up (with the others being restored).
            complete(completion, .success(()), granted: entries.map { $0.qos.rawValue })
            return
        }
        // One request (the caller's filters share one SUBSCRIBE, or one filter with its identifier).
        for r in subscriptions.requests(for: entries.map(\.filter)) {
            machine.subscribe(r.subscriptions, properties: r.properties, token: completion, now: now, into: &actions)
        }
    }

    func unsubscribe(_ filters: [String], _ completion: Completion, now: UInt64) {
        subscriptions.remove(filters)
        guard machine.isConnected else {
            complete(completion, .success(()))
            return
        }
        machine.unsubscribe(filters, token: completion, now: now, into: &actions)
    }

    /// A new session: which filters use identifiers, and the SUBSCRIBEs that restore them.
    func restoreSubscriptions(_ info: MQTTConnectionInfo, now: UInt64) {
        subscriptions.usesIdentifiers = machine.options.version == .v5_0 && (info.properties.subscriptionIdentifierAvailable ?? 1) == 1
        for r in subscriptions.restore(sessionPresent: info.sessionPresent) {
            machine.subscribe(r.subscriptions, properties: r.properties, token: .restore(filters: r.filters), now: now, into: &actions)
        }
    }

    func markSubscribed(_ filters: [String], _ codes: [UInt8]) {
        for (filter, code) in subscriptions.acknowledged(filters, codes: codes) {
            logger.error(
                "broker refused subscription to \"\(filter)\" (SUBACK \(ReasonCode.describe(code, version: machine.options.version)))")
        }
    }
}
