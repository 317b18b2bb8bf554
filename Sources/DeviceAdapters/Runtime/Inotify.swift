import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One event of inotify(7): what happened (`mask`) and to which name in the watched folder ("" for
/// the folder itself).
public struct InotifyEvent: Sendable, Equatable {
    public var mask: UInt32
    public var name: String

    public init(mask: UInt32, name: String) {
        self.mask = mask
        self.name = name
    }

    public func has(_ flag: Int32) -> Bool { mask & UInt32(flag) != 0 }

    /// The events in what one read(2) of an inotify descriptor returned (the kernel returns whole
    /// events only; a truncated tail, which it never sends, is dropped rather than misread).
    public static func parse(_ bytes: ByteBuffer) -> [InotifyEvent] {
        var events: [InotifyEvent] = []
        bytes.withUnsafeReadableBytes { raw in
            var offset = 0
            while offset + 16 <= raw.count {
                let mask = raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)
                let length = Int(raw.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self))
                guard offset + 16 + length <= raw.count else { break }
                let name = raw[(offset + 16)..<(offset + 16 + length)].prefix { $0 != 0 }
                events.append(InotifyEvent(mask: mask, name: String(decoding: name, as: UTF8.self)))
                offset += 16 + length
            }
        }
        return events
    }
}

/// An inotify descriptor read on an event loop (a pipe channel of SwiftNIO over it): no thread
/// of its own and no polling; the watches are added on the descriptor by the body.
public enum Inotify {
    /// Runs `body` with a new inotify descriptor and the stream of what it reads; the descriptor
    /// is closed when `body` returns or throws, or its task is cancelled.
    public static func withDescriptor<Result: Sendable>(
        on loop: any EventLoop, source: String,
        _ body: (_ descriptor: CInt, _ reads: NIOAsyncChannelInboundStream<ByteBuffer>) async throws -> Result
    ) async throws -> Result {
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { throw SourceError(source, .system, "inotify_init1 failed: \(String(cString: strerror(errno)))") }
        let channel: NIOAsyncChannel<ByteBuffer, Never>
        do {
            channel = try await NIOPipeBootstrap(group: loop)
                // An event with a long name needs 16 + NAME_MAX + 1 bytes in one read.
                .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 64 * 1024))
                .takingOwnershipOfDescriptor(input: fd) { channel in
                    channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, Never>(wrappingChannelSynchronously: channel) }
                }
        } catch {
            // Not closed here: what fails in the bootstrap fails after NIO took the descriptor
            // (registering it, the channel's set-up), and NIO closes it then.
            throw SourceError(source, .system, "cannot read inotify events: \(error)")
        }
        return try await channel.executeThenClose { reads, _ in try await body(fd, reads) }
    }
}
