import NIOCore

/// The MQTT 5.0 properties (§2.2.2.2), every one of them. A property that is `nil` is absent.
/// On 3.1.1 connections properties are neither written nor read.
///
/// Each property reads and writes as a member (`properties.contentType = "image/jpeg"`). The
/// values live in one shared, copy-on-write box that exists only once a property is set: most
/// packets carry none, so a PUBLISH, an action or a queue entry copies one pointer instead of a
/// few hundred bytes of optionals (what the hot path measured, docs/PERFORMANCE.md).
@dynamicMemberLookup
public struct MQTTProperties: Sendable, Equatable {
    /// The values themselves; read and written through `MQTTProperties`' members.
    public struct Values: Sendable, Equatable {
        public var payloadFormatIndicator: UInt8?  // 0x01
        public var messageExpiryInterval: UInt32?  // 0x02
        public var contentType: String?  // 0x03
        public var responseTopic: String?  // 0x08
        public var correlationData: ByteBuffer?  // 0x09
        /// 0x0B; several may appear in a PUBLISH from the server (§3.3.2.3.8).
        public var subscriptionIdentifiers: [UInt32] = []
        public var sessionExpiryInterval: UInt32?  // 0x11
        public var assignedClientIdentifier: String?  // 0x12
        public var serverKeepAlive: UInt16?  // 0x13
        public var authenticationMethod: String?  // 0x15
        public var authenticationData: ByteBuffer?  // 0x16
        public var requestProblemInformation: UInt8?  // 0x17
        public var willDelayInterval: UInt32?  // 0x18
        public var requestResponseInformation: UInt8?  // 0x19
        public var responseInformation: String?  // 0x1A
        public var serverReference: String?  // 0x1C
        public var reasonString: String?  // 0x1F
        public var receiveMaximum: UInt16?  // 0x21
        public var topicAliasMaximum: UInt16?  // 0x22
        public var topicAlias: UInt16?  // 0x23
        public var maximumQoS: UInt8?  // 0x24
        public var retainAvailable: UInt8?  // 0x25
        /// 0x26; order is kept and names may repeat (§3.1.2.11.8).
        public var userProperties: [(name: String, value: String)] = []
        public var maximumPacketSize: UInt32?  // 0x27
        public var wildcardSubscriptionAvailable: UInt8?  // 0x28
        public var subscriptionIdentifierAvailable: UInt8?  // 0x29
        public var sharedSubscriptionAvailable: UInt8?  // 0x2A

        public init() {}

        public static func == (lhs: Values, rhs: Values) -> Bool {
            lhs.payloadFormatIndicator == rhs.payloadFormatIndicator
                && lhs.messageExpiryInterval == rhs.messageExpiryInterval
                && lhs.contentType == rhs.contentType
                && lhs.responseTopic == rhs.responseTopic
                && lhs.correlationData == rhs.correlationData
                && lhs.subscriptionIdentifiers == rhs.subscriptionIdentifiers
                && lhs.sessionExpiryInterval == rhs.sessionExpiryInterval
                && lhs.assignedClientIdentifier == rhs.assignedClientIdentifier
                && lhs.serverKeepAlive == rhs.serverKeepAlive
                && lhs.authenticationMethod == rhs.authenticationMethod
                && lhs.authenticationData == rhs.authenticationData
                && lhs.requestProblemInformation == rhs.requestProblemInformation
                && lhs.willDelayInterval == rhs.willDelayInterval
                && lhs.requestResponseInformation == rhs.requestResponseInformation
                && lhs.responseInformation == rhs.responseInformation
                && lhs.serverReference == rhs.serverReference
                && lhs.reasonString == rhs.reasonString
                && lhs.receiveMaximum == rhs.receiveMaximum
                && lhs.topicAliasMaximum == rhs.topicAliasMaximum
                && lhs.topicAlias == rhs.topicAlias
                && lhs.maximumQoS == rhs.maximumQoS
                && lhs.retainAvailable == rhs.retainAvailable
                && lhs.userProperties.elementsEqual(rhs.userProperties, by: { $0 == $1 })
                && lhs.maximumPacketSize == rhs.maximumPacketSize
                && lhs.wildcardSubscriptionAvailable == rhs.wildcardSubscriptionAvailable
                && lhs.subscriptionIdentifierAvailable == rhs.subscriptionIdentifierAvailable
                && lhs.sharedSubscriptionAvailable == rhs.sharedSubscriptionAvailable
        }
    }

    /// Mutated only while uniquely referenced (copy on write), so sharing it is safe.
    private final class Box: @unchecked Sendable {
        var values: Values
        init(_ values: Values) { self.values = values }
    }

    private var box: Box?
    private static let none = Values()

    public init() {}

    public init(values: Values) {
        if values != Self.none { box = Box(values) }
    }

    /// All values at once.
    public var values: Values { box?.values ?? Self.none }

    public subscript<T>(dynamicMember key: WritableKeyPath<Values, T>) -> T {
        // Without a box the static empty set answers: `box?.values ?? Self.none` copied (and
        // released) all 27 values on every read, most of them on packets that carry none.
        get {
            guard let box else { return Self.none[keyPath: key] }
            return box.values[keyPath: key]
        }
        set {
            if box == nil || !isKnownUniquelyReferenced(&box) { box = Box(values) }
            box!.values[keyPath: key] = newValue
        }
    }

    public var isEmpty: Bool { box.map { $0.values == Self.none } ?? true }

    public static func == (lhs: MQTTProperties, rhs: MQTTProperties) -> Bool {
        lhs.box === rhs.box || lhs.values == rhs.values
    }
}

/// Where a property set appears; each property is allowed in some of these only (5.0 §2.2.2.2 table).
enum PropertyContext: Sendable, CustomStringConvertible {
    case connect, connack, publish, will, puback, pubrec, pubrel, pubcomp
    case subscribe, suback, unsubscribe, unsuback, disconnect, auth

    var description: String {
        switch self {
        case .will: "Will"
        case .connect: "CONNECT"
        case .connack: "CONNACK"
        case .publish: "PUBLISH"
        case .puback: "PUBACK"
        case .pubrec: "PUBREC"
        case .pubrel: "PUBREL"
        case .pubcomp: "PUBCOMP"
        case .subscribe: "SUBSCRIBE"
        case .suback: "SUBACK"
        case .unsubscribe: "UNSUBSCRIBE"
        case .unsuback: "UNSUBACK"
        case .disconnect: "DISCONNECT"
        case .auth: "AUTH"
        }
    }
}

extension MQTTProperties {
    /// Property identifier → contexts in which it may appear.
    static func isAllowed(_ id: UInt8, in context: PropertyContext) -> Bool {
        switch id {
        case 0x01, 0x02, 0x03, 0x08, 0x09: return context == .publish || context == .will
        case 0x0B: return context == .publish || context == .subscribe
        case 0x11: return context == .connect || context == .connack || context == .disconnect
        case 0x12, 0x13, 0x1A, 0x24, 0x25, 0x28, 0x29, 0x2A: return context == .connack
        case 0x15, 0x16: return context == .connect || context == .connack || context == .auth
        case 0x17, 0x19: return context == .connect
        case 0x18: return context == .will
        case 0x1C: return context == .connack || context == .disconnect
        case 0x1F:
            switch context {
            case .connack, .puback, .pubrec, .pubrel, .pubcomp, .suback, .unsuback, .disconnect, .auth: return true
            default: return false
            }
        case 0x21, 0x22, 0x27: return context == .connect || context == .connack
        case 0x23: return context == .publish
        case 0x26: return true
        default: return false
        }
    }

    /// Bytes of the encoded property list, without its length prefix.
    var encodedLength: Int { box?.values.encodedLength ?? 0 }

    /// Writes the length-prefixed property list (§2.2.2.1), identifiers in ascending order.
    func write(to buffer: inout ByteBuffer) {
        if let box { box.values.write(to: &buffer) } else { buffer.writeInteger(UInt8(0)) }
    }

    /// Reads a length-prefixed property list. A property outside its allowed packets, a repeated
    /// single-valued property, an unknown identifier or a bad value is a malformed packet
    /// (§2.2.2.2: "It is a Protocol Error to include the same property more than once").
    static func read(from buffer: inout ByteBuffer, context: PropertyContext) throws(MQTTDecodeError) -> MQTTProperties {
        let length = try VarInt.read(from: &buffer, what: "property length")
        guard var slice = buffer.readSlice(length: length) else {
            throw .malformed("\(context) property length \(length) runs past the end of the packet")
        }
        var p = Values()
        while slice.readableBytes > 0 {
            let id = try VarInt.read(from: &slice, what: "property identifier")
            guard id <= 0x7F, isAllowed(UInt8(id), in: context) else {
                throw .malformed("property \(hexByte(id)) is not allowed in \(context)")
            }
            func once<T>(_ current: T?, _ value: T) throws(MQTTDecodeError) -> T {
                guard current == nil else {
                    throw .malformed("property \(hexByte(id)) appears twice in \(context)")
                }
                return value
            }
            func byte(_ allowed: ClosedRange<UInt8> = 0...1) throws(MQTTDecodeError) -> UInt8 {
                guard let b = slice.readInteger(as: UInt8.self) else { throw .truncated("property \(hexByte(id))") }
                guard allowed.contains(b) else {
                    throw .malformed("property \(hexByte(id)) in \(context) has invalid value \(b)")
                }
                return b
            }
            func u16() throws(MQTTDecodeError) -> UInt16 {
                guard let v = slice.readInteger(as: UInt16.self) else { throw .truncated("property \(hexByte(id))") }
                return v
            }
            func u32() throws(MQTTDecodeError) -> UInt32 {
                guard let v = slice.readInteger(as: UInt32.self) else { throw .truncated("property \(hexByte(id))") }
                return v
            }
            func str() throws(MQTTDecodeError) -> String { try slice.readMQTTString(what: "property \(hexByte(id))") }
            func bin() throws(MQTTDecodeError) -> ByteBuffer { try slice.readMQTTBinary(what: "property \(hexByte(id))") }

            switch id {
            case 0x01: p.payloadFormatIndicator = try once(p.payloadFormatIndicator, try byte())
            case 0x02: p.messageExpiryInterval = try once(p.messageExpiryInterval, try u32())
            case 0x03: p.contentType = try once(p.contentType, try str())
            case 0x08: p.responseTopic = try once(p.responseTopic, try str())
            case 0x09: p.correlationData = try once(p.correlationData, try bin())
            case 0x0B:
                let v = try VarInt.read(from: &slice, what: "subscription identifier")
                // §3.8.2.1.2: "It is a Protocol Error if the Subscription Identifier has a value of 0."
                guard v > 0 else { throw .malformed("subscription identifier 0 in \(context)") }
                if context == .subscribe, !p.subscriptionIdentifiers.isEmpty {
                    throw .malformed("property 0x0B appears twice in SUBSCRIBE")
                }
                p.subscriptionIdentifiers.append(UInt32(v))
            case 0x11: p.sessionExpiryInterval = try once(p.sessionExpiryInterval, try u32())
            case 0x12: p.assignedClientIdentifier = try once(p.assignedClientIdentifier, try str())
            case 0x13: p.serverKeepAlive = try once(p.serverKeepAlive, try u16())
            case 0x15: p.authenticationMethod = try once(p.authenticationMethod, try str())
            case 0x16: p.authenticationData = try once(p.authenticationData, try bin())
            case 0x17: p.requestProblemInformation = try once(p.requestProblemInformation, try byte())
            case 0x18: p.willDelayInterval = try once(p.willDelayInterval, try u32())
            case 0x19: p.requestResponseInformation = try once(p.requestResponseInformation, try byte())
            case 0x1A: p.responseInformation = try once(p.responseInformation, try str())
            case 0x1C: p.serverReference = try once(p.serverReference, try str())
            case 0x1F: p.reasonString = try once(p.reasonString, try str())
            case 0x21:
                let v = try u16()
                guard v > 0 else { throw .malformed("Receive Maximum 0 in \(context)") }  // §3.2.2.3.3
                p.receiveMaximum = try once(p.receiveMaximum, v)
            case 0x22: p.topicAliasMaximum = try once(p.topicAliasMaximum, try u16())
            case 0x23:
                let v = try u16()
                guard v > 0 else { throw .malformed("Topic Alias 0 in \(context)") }  // §3.3.2.3.4
                p.topicAlias = try once(p.topicAlias, v)
            case 0x24: p.maximumQoS = try once(p.maximumQoS, try byte())
            case 0x25: p.retainAvailable = try once(p.retainAvailable, try byte())
            case 0x26:
                let name = try str()
                let value = try str()
                p.userProperties.append((name, value))
            case 0x27:
                let v = try u32()
                guard v > 0 else { throw .malformed("Maximum Packet Size 0 in \(context)") }  // §3.1.2.11.4
                p.maximumPacketSize = try once(p.maximumPacketSize, v)
            case 0x28: p.wildcardSubscriptionAvailable = try once(p.wildcardSubscriptionAvailable, try byte())
            case 0x29: p.subscriptionIdentifierAvailable = try once(p.subscriptionIdentifierAvailable, try byte())
            case 0x2A: p.sharedSubscriptionAvailable = try once(p.sharedSubscriptionAvailable, try byte())
            default: throw .malformed("unknown property \(hexByte(id))")
            }
        }
        return MQTTProperties(values: p)
    }
}

extension MQTTProperties.Values {
    /// Bytes of the encoded property list, without its length prefix.
    var encodedLength: Int {
        var n = 0
        if payloadFormatIndicator != nil { n += 2 }
        if messageExpiryInterval != nil { n += 5 }
        if let v = contentType { n += 3 + v.utf8.count }
        if let v = responseTopic { n += 3 + v.utf8.count }
        if let v = correlationData { n += 3 + v.readableBytes }
        for v in subscriptionIdentifiers { n += 1 + VarInt.size(Int(v)) }
        if sessionExpiryInterval != nil { n += 5 }
        if let v = assignedClientIdentifier { n += 3 + v.utf8.count }
        if serverKeepAlive != nil { n += 3 }
        if let v = authenticationMethod { n += 3 + v.utf8.count }
        if let v = authenticationData { n += 3 + v.readableBytes }
        if requestProblemInformation != nil { n += 2 }
        if willDelayInterval != nil { n += 5 }
        if requestResponseInformation != nil { n += 2 }
        if let v = responseInformation { n += 3 + v.utf8.count }
        if let v = serverReference { n += 3 + v.utf8.count }
        if let v = reasonString { n += 3 + v.utf8.count }
        if receiveMaximum != nil { n += 3 }
        if topicAliasMaximum != nil { n += 3 }
        if topicAlias != nil { n += 3 }
        if maximumQoS != nil { n += 2 }
        if retainAvailable != nil { n += 2 }
        for p in userProperties { n += 5 + p.name.utf8.count + p.value.utf8.count }
        if maximumPacketSize != nil { n += 5 }
        if wildcardSubscriptionAvailable != nil { n += 2 }
        if subscriptionIdentifierAvailable != nil { n += 2 }
        if sharedSubscriptionAvailable != nil { n += 2 }
        return n
    }

    /// Writes the length-prefixed property list (§2.2.2.1), identifiers in ascending order.
    func write(to buffer: inout ByteBuffer) {
        VarInt.write(encodedLength, to: &buffer)
        buffer.writeProperty(0x01, payloadFormatIndicator)
        buffer.writeProperty(0x02, messageExpiryInterval)
        buffer.writeProperty(0x03, string: contentType)
        buffer.writeProperty(0x08, string: responseTopic)
        buffer.writeProperty(0x09, binary: correlationData)
        for v in subscriptionIdentifiers {
            buffer.writeInteger(UInt8(0x0B))
            VarInt.write(Int(v), to: &buffer)
        }
        buffer.writeProperty(0x11, sessionExpiryInterval)
        buffer.writeProperty(0x12, string: assignedClientIdentifier)
        buffer.writeProperty(0x13, serverKeepAlive)
        buffer.writeProperty(0x15, string: authenticationMethod)
        buffer.writeProperty(0x16, binary: authenticationData)
        buffer.writeProperty(0x17, requestProblemInformation)
        buffer.writeProperty(0x18, willDelayInterval)
        buffer.writeProperty(0x19, requestResponseInformation)
        buffer.writeProperty(0x1A, string: responseInformation)
        buffer.writeProperty(0x1C, string: serverReference)
        buffer.writeProperty(0x1F, string: reasonString)
        buffer.writeProperty(0x21, receiveMaximum)
        buffer.writeProperty(0x22, topicAliasMaximum)
        buffer.writeProperty(0x23, topicAlias)
        buffer.writeProperty(0x24, maximumQoS)
        buffer.writeProperty(0x25, retainAvailable)
        for p in userProperties {
            buffer.writeInteger(UInt8(0x26))
            buffer.writeMQTTString(p.name)
            buffer.writeMQTTString(p.value)
        }
        buffer.writeProperty(0x27, maximumPacketSize)
        buffer.writeProperty(0x28, wildcardSubscriptionAvailable)
        buffer.writeProperty(0x29, subscriptionIdentifierAvailable)
        buffer.writeProperty(0x2A, sharedSubscriptionAvailable)
    }
}

extension ByteBuffer {
    /// One property: its identifier, then the value (nothing when the value is absent).
    @inline(__always)
    fileprivate mutating func writeProperty<T: FixedWidthInteger>(_ id: UInt8, _ value: T?) {
        guard let value else { return }
        writeInteger(id)
        writeInteger(value)
    }

    @inline(__always)
    fileprivate mutating func writeProperty(_ id: UInt8, string value: String?) {
        guard let value else { return }
        writeInteger(id)
        writeMQTTString(value)
    }

    @inline(__always)
    fileprivate mutating func writeProperty(_ id: UInt8, binary value: ByteBuffer?) {
        guard let value else { return }
        writeInteger(id)
        writeMQTTBinary(value)
    }
}
