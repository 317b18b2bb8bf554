import CGPIOShim
import FoundationEssentials
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The status LED, behind a small protocol: a real GPIO line or a simulated one. The agent
/// cannot tell them apart.
public protocol StatusLight: AnyObject, Sendable {
    /// What it is, for logs and the status document ("gpiochip0 line 17", "simulated").
    var name: String { get }
    func set(_ on: Bool) throws
}

public struct LightError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// A GPIO output line through libgpiod (1.x or 2.x, loaded at run time; see Sources/CGPIOShim).
/// `@unchecked Sendable`: the line is an opaque C handle, which Swift cannot see is safe to share;
/// it is set only under `lock`, and freed once, in `deinit`.
public final class GPIOLight: StatusLight, @unchecked Sendable {
    public let name: String
    private let line: OpaquePointer
    private let lock = NIOLock()

    public init(chip: String, line offset: UInt32, activeLow: Bool, consumer: String = "edge-agent") throws {
        var error: Int32 = 0
        guard let l = edge_gpio_open(chip, offset, activeLow ? 1 : 0, consumer, &error) else {
            if error == ELIBACC {
                throw LightError(description: "cannot open GPIO \(chip) line \(offset): \(String(cString: edge_gpio_library_error()))")
            }
            let reason = String(cString: strerror(error))
            let hint: String
            switch error {
            case ENOENT, ENODEV: hint = "no such GPIO chip: check led.chip (ls /dev/gpiochip*) and the board profile"
            case EINVAL: hint = "the chip has no line \(offset): check led.line (gpioinfo \(chip))"
            case EBUSY: hint = "line \(offset) is in use by another program or driver (gpioinfo \(chip))"
            case EACCES, EPERM: hint = "no permission: run as a member of the gpio group or give the service access to /dev/\(chip)"
            default: hint = "check led.chip and led.line"
            }
            throw LightError(description: "cannot open GPIO \(chip) line \(offset): \(reason) (errno \(error)); \(hint)")
        }
        self.line = l
        self.name = "\(chip) line \(offset)\(activeLow ? " (active low)" : "")"
    }

    deinit { edge_gpio_close(line) }

    public func set(_ on: Bool) throws {
        let rc = lock.withLock { edge_gpio_set(line, on ? 1 : 0) }
        if rc != 0 { throw LightError(description: "setting \(name) failed: \(String(cString: strerror(-rc)))") }
    }

    public static var libraryVersion: String { String(cString: edge_gpio_library_version()) }
}

/// A light in memory: records every transition with its time, and (if given a path) appends
/// "<ms since start> on|off" lines to a file, so tests and people can watch a running agent.
public final class SimulatedLight: StatusLight {
    public struct Transition: Sendable, Equatable {
        public var at: Double
        public var on: Bool
    }

    public let name = "simulated"
    private let state = NIOLockedValueBox<(transitions: [Transition], on: Bool?)>(([], nil))
    private let file: Int32?  // an O_APPEND descriptor
    private let start = ProcessInfo.processInfo.systemUptime

    public init(logPath: String? = nil) {
        if let logPath {
            let fd = open(logPath, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0o644)
            file = fd >= 0 ? fd : nil
        } else {
            file = nil
        }
    }

    public func set(_ on: Bool) {
        let t = ProcessInfo.processInfo.systemUptime - start
        let changed = state.withLockedValue { s -> Bool in
            guard s.on != on else { return false }
            s.on = on
            s.transitions.append(Transition(at: t, on: on))
            if s.transitions.count > 10_000 { s.transitions.removeFirst(5_000) }
            return true
        }
        if changed, let file {
            let line = Array("\(Int(t * 1000)) \(on ? "on" : "off")\n".utf8)
            _ = line.withUnsafeBytes { write(file, $0.baseAddress, $0.count) }
        }
    }

    deinit {
        if let file { close(file) }
    }

    public var transitions: [Transition] { state.withLockedValue { $0.transitions } }
    public var isOn: Bool { state.withLockedValue { $0.on ?? false } }
}
