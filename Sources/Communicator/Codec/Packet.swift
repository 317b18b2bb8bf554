import NIOCore

// The MQTT control packets of 3.1.1 (OASIS Standard, 2014) and 5.0 (OASIS Standard, 2019),
// as plain values. Encoding and decoding live in PacketEncoder.swift / PacketDecoder.swift and
// are pure functions over bytes: no sockets, no clocks.

/// The protocol level carried in CONNECT (3.1.1 §3.1.2.2, 5.0 §3.1.2.2).
public enum MQTTVersion: UInt8, Sendable, CustomStringConvertible {
    case v3_1_1 = 4
    case v5_0 = 5

    public var description: String { self == .v5_0 ? "5.0" : "3.1.1" }
}

/// Quality of service of a PUBLISH or a subscription.
public enum QoS: UInt8, Sendable, Comparable, CustomStringConvertible {
    case atMostOnce = 0
    case atLeastOnce = 1
    case exactlyOnce = 2

    public static func < (lhs: QoS, rhs: QoS) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { "QoS \(rawValue)" }
}

/// The fixed-header packet type (3.1.1 / 5.0 §2.1.2).
public enum PacketType: UInt8, Sendable, CustomStringConvertible {
    case connect = 1
    case connack, publish, puback, pubrec, pubrel, pubcomp
    case subscribe, suback, unsubscribe, unsuback, pingreq, pingresp, disconnect
    case auth  // 5.0 only

    public var description: String {
        switch self {
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
        case .pingreq: "PINGREQ"
        case .pingresp: "PINGRESP"
        case .disconnect: "DISCONNECT"
        case .auth: "AUTH"
        }
    }
}

/// One MQTT control packet.
public enum MQTTPacket: Sendable, Equatable {
    /// Boxed: CONNECT is sent once a connection and is by far the largest packet (136 bytes
    /// inline), and every packet, action and queue entry would be as large as it; a packet is now
    /// the size of a PUBLISH, which halved what each action copies.
    indirect case connect(Connect)
    case connack(Connack)
    case publish(Publish)
    /// PUBACK, PUBREC, PUBREL and PUBCOMP share one layout.
    case ack(Ack)
    case subscribe(Subscribe)
    case suback(Suback)
    case unsubscribe(Unsubscribe)
    case unsuback(Unsuback)
    case pingreq
    case pingresp
    case disconnect(Disconnect)
    case auth(Auth)

    public var type: PacketType {
        switch self {
        case .connect: .connect
        case .connack: .connack
        case .publish: .publish
        case .ack(let a): a.kind.packetType
        case .subscribe: .subscribe
        case .suback: .suback
        case .unsubscribe: .unsubscribe
        case .unsuback: .unsuback
        case .pingreq: .pingreq
        case .pingresp: .pingresp
        case .disconnect: .disconnect
        case .auth: .auth
        }
    }

    public struct Will: Sendable, Equatable {
        public var topic: String
        public var payload: ByteBuffer
        public var qos: QoS
        public var retain: Bool
        public var properties: MQTTProperties

        public init(topic: String, payload: ByteBuffer, qos: QoS, retain: Bool, properties: MQTTProperties = .init()) {
            self.topic = topic
            self.payload = payload
            self.qos = qos
            self.retain = retain
            self.properties = properties
        }
    }

    public struct Connect: Sendable, Equatable {
        public var version: MQTTVersion
        public var clientID: String
        /// Clean Session (3.1.1) / Clean Start (5.0).
        public var cleanStart: Bool
        public var keepAliveSeconds: UInt16
        public var username: String?
        public var password: ByteBuffer?
        public var will: Will?
        public var properties: MQTTProperties

        public init(
            version: MQTTVersion, clientID: String, cleanStart: Bool, keepAliveSeconds: UInt16,
            username: String? = nil, password: ByteBuffer? = nil, will: Will? = nil, properties: MQTTProperties = .init()
        ) {
            self.version = version
            self.clientID = clientID
            self.cleanStart = cleanStart
            self.keepAliveSeconds = keepAliveSeconds
            self.username = username
            self.password = password
            self.will = will
            self.properties = properties
        }
    }

    public struct Connack: Sendable, Equatable {
        public var sessionPresent: Bool
        /// 3.1.1 return code (0-5) or 5.0 reason code.
        public var returnCode: UInt8
        public var properties: MQTTProperties

        public init(sessionPresent: Bool, returnCode: UInt8, properties: MQTTProperties = .init()) {
            self.sessionPresent = sessionPresent
            self.returnCode = returnCode
            self.properties = properties
        }
    }

    public struct Publish: Sendable, Equatable {
        public var topic: String
        public var payload: ByteBuffer
        public var qos: QoS
        public var retain: Bool
        public var dup: Bool
        /// Present exactly when qos > 0 (§2.3.1).
        public var packetID: UInt16?
        public var properties: MQTTProperties

        public init(
            topic: String, payload: ByteBuffer, qos: QoS, retain: Bool = false, dup: Bool = false,
            packetID: UInt16? = nil, properties: MQTTProperties = .init()
        ) {
            self.topic = topic
            self.payload = payload
            self.qos = qos
            self.retain = retain
            self.dup = dup
            self.packetID = packetID
            self.properties = properties
        }
    }

    public struct Ack: Sendable, Equatable {
        public enum Kind: Sendable, Equatable {
            case puback, pubrec, pubrel, pubcomp
            var packetType: PacketType {
                switch self {
                case .puback: .puback
                case .pubrec: .pubrec
                case .pubrel: .pubrel
                case .pubcomp: .pubcomp
                }
            }
        }
        public var kind: Kind
        public var packetID: UInt16
        /// 5.0 reason code; always 0 (success) for 3.1.1.
        public var reasonCode: UInt8
        public var properties: MQTTProperties

        public init(_ kind: Kind, packetID: UInt16, reasonCode: UInt8 = 0, properties: MQTTProperties = .init()) {
            self.kind = kind
            self.packetID = packetID
            self.reasonCode = reasonCode
            self.properties = properties
        }
    }

    public struct Subscription: Sendable, Equatable {
        public enum RetainHandling: UInt8, Sendable {
            case sendOnSubscribe = 0, sendOnNewSubscribe = 1, doNotSend = 2
        }
        public var filter: String
        public var qos: QoS
        // 5.0 subscription options (§3.8.3.1); ignored on 3.1.1.
        public var noLocal: Bool
        public var retainAsPublished: Bool
        public var retainHandling: RetainHandling

        public init(
            filter: String, qos: QoS, noLocal: Bool = false, retainAsPublished: Bool = false,
            retainHandling: RetainHandling = .sendOnSubscribe
        ) {
            self.filter = filter
            self.qos = qos
            self.noLocal = noLocal
            self.retainAsPublished = retainAsPublished
            self.retainHandling = retainHandling
        }
    }

    public struct Subscribe: Sendable, Equatable {
        public var packetID: UInt16
        public var subscriptions: [Subscription]
        public var properties: MQTTProperties

        public init(packetID: UInt16, subscriptions: [Subscription], properties: MQTTProperties = .init()) {
            self.packetID = packetID
            self.subscriptions = subscriptions
            self.properties = properties
        }
    }

    public struct Suback: Sendable, Equatable {
        public var packetID: UInt16
        /// Granted QoS (0-2) or a failure code (0x80, and 5.0's others), one per filter.
        public var reasonCodes: [UInt8]
        public var properties: MQTTProperties

        public init(packetID: UInt16, reasonCodes: [UInt8], properties: MQTTProperties = .init()) {
            self.packetID = packetID
            self.reasonCodes = reasonCodes
            self.properties = properties
        }
    }

    public struct Unsubscribe: Sendable, Equatable {
        public var packetID: UInt16
        public var filters: [String]
        public var properties: MQTTProperties

        public init(packetID: UInt16, filters: [String], properties: MQTTProperties = .init()) {
            self.packetID = packetID
            self.filters = filters
            self.properties = properties
        }
    }

    public struct Unsuback: Sendable, Equatable {
        public var packetID: UInt16
        /// Empty on 3.1.1 (no payload), one per filter on 5.0.
        public var reasonCodes: [UInt8]
        public var properties: MQTTProperties

        public init(packetID: UInt16, reasonCodes: [UInt8] = [], properties: MQTTProperties = .init()) {
            self.packetID = packetID
            self.reasonCodes = reasonCodes
            self.properties = properties
        }
    }

    public struct Disconnect: Sendable, Equatable {
        public var reasonCode: UInt8
        public var properties: MQTTProperties

        public init(reasonCode: UInt8 = 0, properties: MQTTProperties = .init()) {
            self.reasonCode = reasonCode
            self.properties = properties
        }
    }

    public struct Auth: Sendable, Equatable {
        public var reasonCode: UInt8
        public var properties: MQTTProperties

        public init(reasonCode: UInt8 = 0, properties: MQTTProperties = .init()) {
            self.reasonCode = reasonCode
            self.properties = properties
        }
    }
}
