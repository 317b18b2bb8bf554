/// Requests from any thread to the loop that owns the session (through `CommandInbox`).
enum Command: Sendable {
    case connect(Completion)
    case publish(MQTTPacket.Publish, Completion)
    case subscribe([(filter: String, qos: QoS, options: SubscribeOptions, handler: MessageHandler)], Completion)
    case unsubscribe([String], Completion)
    case disconnect(Completion)
    case setWill(MQTTPacket.Will?)
    /// Runs on the loop after everything queued before it (a liveness probe).
    case probe(@Sendable () -> Void)
    /// 5.0 re-authentication (AUTH 0x19).
    case reauthenticate(Completion)
    /// Brings the metrics up to date, then calls back (on the loop).
    case reportMetrics(@Sendable () -> Void)
}

/// What a finished request reports back to its caller.
enum Completion: Sendable {
    case none
    case done(@Sendable (Result<Void, any Error>) -> Void)
    case granted(filters: [String], @Sendable (Result<[UInt8], any Error>) -> Void)
    /// Subscriptions restored after a reconnect: results only logged.
    case restore(filters: [String])
    /// A message kept in the offline store under this sequence number (its caller's completion,
    /// if any, waits in the outbox).
    case stored(UInt64)

    var isStored: Bool {
        if case .stored = self { return true }
        return false
    }

    /// What a SUBSCRIBE's caller is told, with SUBACK's codes: a refused filter fails the
    /// request, naming the filter.
    static func subscribeResult(
        _ result: Result<Void, any Error>, filters: [String], granted: [UInt8], version: MQTTVersion
    )
        -> Result<[UInt8], any Error>
    {
        if case .failure(let e) = result { return .failure(e) }
        guard let (i, code) = granted.enumerated().first(where: { ReasonCode($0.element).isFailure }) else { return .success(granted) }
        let filter = i < filters.count ? filters[i] : "?"
        return .failure(
            ProtocolValidationError(
                "broker refused the subscription to \"\(filter)\" (SUBACK \(ReasonCode.describe(code, version: version))): check the filter and the broker's ACL",
                code: code, reason: .refused(ReasonCode(code))))
    }
}
