import NIOCore

// The connection's lifecycle, on the loop: the connection machine decides (which broker, when,
// whether to give up); this carries out its actions (attempts and their timeouts, the back-off
// timer, the session hop, the callers waiting on connect and disconnect, the state reports).
extension ClientCore {
    func startConnect(_ completion: Completion) {
        if machine.isConnected {
            complete(completion, .success(()))
            return
        }
        connectWaiters.append(completion)
        lifecycle(.connect)
    }

    func startDisconnect(_ completion: Completion) {
        disconnectWaiters.append(completion)
        lifecycle(.disconnect(linkOpen: channel != nil))
    }

    /// One event into the connection machine; its actions at once. Session actions they produce
    /// wait in `actions` for the caller's `runActions`.
    func lifecycle(_ event: ConnectionMachine.Event) {
        var todo: [ConnectionMachine.Action] = []
        connection.handle(event, now: now(), into: &todo)
        for action in todo { perform(action) }
    }

    private func perform(_ action: ConnectionMachine.Action) {
        switch action {
        case .dial(let d):
            machine.options.version = d.version
            machine.options.cleanStart = d.cleanStart
            update { $0.broker = d.broker }
            startAttempt()
        case .hop:
            // The clean session is open (old state wiped): leave it and come back with Clean
            // Session 0 so that this session outlives a dropped link. The next CONNECT waits for
            // the broker to close this link: a CONNECT with our identifier that overtook the
            // DISCONNECT (a proxy or load balancer in between) would take the session over, and
            // the broker would publish this link's Will.
            machine.options.cleanStart = false
            machine.disconnect(now: now(), awaitClose: true, into: &actions)
            let thisAttempt = attempt
            loop?.scheduleTask(in: min(.seconds(1), config.timeout).timeAmount) { [self] in
                if attempt == thisAttempt { channel?.close(promise: nil) }
            }
        case .up:
            sessionUp()
        case .report(let s):
            guard view.state != s else { return }
            update { $0.state = s }
            logger.info("MQTT \(s)", metadata: ["broker": "\(current)"])
            listeners.notify(s)
        case .scheduleRetry(let delay):
            guard let loop else { return }
            reconnectTask = loop.scheduleTask(in: Duration(seedSeconds: delay).timeAmount) { [self] in
                reconnectTask = nil
                lifecycle(.backoffElapsed)
                runActions()
            }
        case .cancelRetry:
            reconnectTask?.cancel()
            reconnectTask = nil
        case .closeLink:
            machine.disconnect(now: now(), into: &actions)
            if !machine.isConnected && machine.state != .closing { channel?.close(promise: nil) }
        case .abandonAttempt:
            // A TCP/TLS connect may still be under way: its result is now stale and is closed.
            attempt &+= 1
            cancelAttemptTimeout()
        case .failQueued:
            machine.failAll(.connectionLost, into: &actions)
        case .connectSucceeded:
            finishConnectWaiters(.success(()))
        case .connectFailed(let error):
            finishConnectWaiters(.failure(error))
        case .disconnectFinished:
            closeStore()
            for w in disconnectWaiters { complete(w, .success(())) }
            disconnectWaiters.removeAll()
            if config.mode == .blocking, let loop {
                detach()
                loop.shutdownGracefully { _ in }
            }
        case .gaveUp(let error):
            update { $0.lastError = error }
            machine.failAll(.connectionLost, into: &actions)
        case .log(let level, let message):
            logger.log(level: level, "\(message)")
        }
    }

    private func startAttempt() {
        guard let loop else { return }
        attempt &+= 1
        let thisAttempt = attempt
        lastFailure = nil
        if config.tlsInsecureSkipVerify && tlsContext != nil {
            logger.warning("TLS certificate verification is OFF (tls_insecure_skip_verify): the broker's identity is not checked")
        }
        cancelAttemptTimeout()
        attemptTimeout = loop.scheduleTask(in: config.timeout.timeAmount) { [self] in
            guard attempt == thisAttempt, case .connecting = connection.state else { return }
            fail(
                ProtocolConnectionError(
                    "no answer from \(current) within \(config.timeout.inSeconds) s (TCP, TLS and CONNACK): check the address, the port and that the broker is up",
                    reason: .timeout))
        }
        dial(loop, current, machine.options.version, self, thisAttempt).whenComplete { [self] result in
            guard attempt == thisAttempt else {
                if case .success(let ch) = result { ch.close(promise: nil) }
                return
            }
            switch result {
            case .success(let ch):
                channel = ch
            case .failure(let error):
                lastFailure = lastFailure ?? mapTransportError(error)
                attemptEnded()
            }
        }
    }

    private func finishConnectWaiters(_ result: Result<Void, any Error>) {
        let waiters = connectWaiters
        connectWaiters.removeAll()
        for w in waiters { complete(w, result) }
    }

    private func fail(_ error: any CommunicatorError) {
        if lastFailure == nil { lastFailure = error }
        if let channel { channel.close(promise: nil) } else { attemptEnded() }
    }

    private func cancelAttemptTimeout() {
        attemptTimeout?.cancel()
        attemptTimeout = nil
    }

    /// CONNACK accepted this session (after any hop): keep-alive, subscriptions, queued messages.
    private func sessionUp() {
        guard let info = machine.connectionInfo else { return }
        update {
            $0.sessionPresent = info.sessionPresent
            $0.connectionInfo = info
            $0.clientID = machine.options.clientID  // the broker's, if it assigned one
        }
        connections += 1
        cancelAttemptTimeout()
        startTicking()
        logger.debug(
            "CONNACK: session present \(info.sessionPresent), keep-alive \(info.keepAliveSeconds) s, receive maximum \(info.receiveMaximum)"
        )
        let now = self.now()
        restoreSubscriptions(info, now: now)
        machine.sendQueued(now: now, into: &actions)
    }

    /// The connection attempt or the connection ended: the connection machine decides what next.
    func attemptEnded() {
        cancelAttemptTimeout()
        tickTask?.cancel()
        tickTask = nil
        let failure = lastFailure
        if let failure { update { $0.lastError = failure } }
        lifecycle(.ended(.init(error: failure)))
        runActions()
    }

    /// Keep-alive, retries and expiry: the session machine's tick, at the interval it asks for.
    private func startTicking() {
        guard let loop else { return }
        tickTask?.cancel()
        let interval = TimeAmount.nanoseconds(Int64(machine.tickIntervalNanoseconds))
        tickTask = loop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { [self] _ in
            machine.tick(now: now(), into: &actions)
            runActions()
        }
    }
}
