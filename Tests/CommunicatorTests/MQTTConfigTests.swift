import Testing

@testable import Communicator

@Suite("MQTTConfig durations")
struct MQTTConfigTests {
    @Test("the seed's seconds become Durations: fractions kept, NaN refused by problems(), infinity clamped instead of a crash")
    func seedSeconds() {
        let c = MQTTConfig(brokerAddress: "127.0.0.1", timeout: 2.5, reconnectInitialDelay: 0.25, reconnectMaxDelay: 30)
        #expect(c.timeout == .milliseconds(2500) && c.reconnectInitialDelay == .milliseconds(250) && c.reconnectMaxDelay == .seconds(30))
        #expect(c.timeout.inSeconds == 2.5 && c.timeout.timeAmount == .milliseconds(2500))
        #expect(c.problems().isEmpty, "\(c.problems())")
        let nan = MQTTConfig(brokerAddress: "127.0.0.1", timeout: .nan)
        #expect(nan.timeout == .zero && nan.problems().contains { $0.contains("timeout 0.0 must be greater than 0 seconds") })
        let forever = MQTTConfig(brokerAddress: "127.0.0.1", timeout: .infinity)
        #expect(forever.timeout == .seconds(1_000_000_000_000) && forever.timeout.timeAmount == .nanoseconds(.max))
        #expect(forever.problems().isEmpty)
        var d = MQTTConfig(brokerAddress: "127.0.0.1")
        d.reconnectInitialDelay = .milliseconds(5)
        #expect(d.problems().contains { $0.contains("reconnect_initial_delay 0.005 must be at least 0.01 s") }, "\(d.problems())")
    }
}
