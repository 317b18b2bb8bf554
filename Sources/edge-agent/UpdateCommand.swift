import ArgumentParser
import DeviceAdapters
import EdgeAgent
import FoundationEssentials

#if canImport(Glibc)
import Glibc
#endif

/// `edge-agent update`: the keys of signed updates, and the privileged helper's two steps
/// (docs/UPDATES.md). Sending an update is `edge-agent send ... agent/update --package F --key K`.
struct UpdateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "update", abstract: "Signed agent updates: make a key pair, sign a package; the helper's check.",
        subcommands: [Keygen.self, Sign.self, Verify.self])

    struct Keygen: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Makes an Ed25519 key pair: PREFIX.key (private, 0600: keep it off the boards) and PREFIX.pub.",
            discussion: "Put the line of PREFIX.pub in update.trusted_keys of every board that should take updates signed with PREFIX.key.")

        @Option(help: "Where the two files go (PREFIX.key, PREFIX.pub).")
        var out: String = "edge-agent-update"

        func run() throws {
            do {
                let seed = try UpdateKeys.generate()
                let pub = UpdateKeys.text(publicKey: try UpdateKeys.publicKey(of: seed))
                let keyFile = out + ".key"
                try UpdateCommand.create(keyFile, UpdateKeys.text(privateKey: seed), mode: 0o600)
                try UpdateCommand.create(out + ".pub", pub, mode: 0o644)
                print("private key: \(keyFile) (keep it secret, off the boards)")
                print("public key:  \(out).pub")
                print("on each board, in the configuration:\n  update:\n    trusted_keys: [\"\(pub)\"]")
            } catch let p as UpdateKeys.Problem {
                printError("edge-agent: \(p)")
                throw ExitCode.failure
            }
        }
    }

    /// A new file (never one that exists: a key is not overwritten) with `text` and a line break, synced.
    static func create(_ path: String, _ text: String, mode: mode_t) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else {
            printError("edge-agent: cannot make \(path): \(String(cString: strerror(errno))) (an existing key file is never overwritten)")
            throw ExitCode.failure
        }
        let line = text + "\n"
        let ok = line.withCString { write(fd, $0, strlen($0)) } == line.utf8.count && fsync(fd) == 0
        close(fd)
        guard ok else {
            printError("edge-agent: cannot write \(path): \(String(cString: strerror(errno)))")
            throw ExitCode.failure
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The helper's check of a package before it installs it (run as root by edge-agent-update.service).",
            discussion: """
                Prints "version V" and "confirm_timeout S" and exits 0 when the package matches the signed request, is \
                signed by a key of update.trusted_keys and is newer than --installed; otherwise prints "CODE: reason" and exits 65.
                """)

        @Option(help: "The configuration with update.trusted_keys.") var config: String
        @Option(help: "The request (manifest) the agent wrote.") var request: String
        @Option(help: "The package.") var package: String
        @Option(help: "The installed package's version.") var installed: String

        func run() throws {
            let agentConfig = try loadConfiguration(config)
            guard let bytes = FileManager.default.contents(atPath: request) else {
                print("storage: cannot read \(request)")
                throw ExitCode(65)
            }
            do {
                let m = try UpdateCheck.verify(request: Array(bytes), package: package, installed: installed, config: agentConfig)
                print("version \(m.version)")
                print("confirm_timeout \(Int(agentConfig.update.confirmTimeout.rounded(.up)))")
            } catch {
                print(error.description)
                throw ExitCode(65)
            }
        }
    }

    struct Sign: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Prints the signed manifest of a package (what agent/update announces) as JSON.",
            discussion: "For tools of one's own; edge-agent send ... agent/update --package signs and sends in one step.")

        @Option(help: "The private key file (edge-agent update keygen).") var key: String
        @Option(help: "The package.") var package: String
        @Option(help: "The package's version (default: what dpkg-deb -f says).") var packageVersion: String?

        func run() throws {
            let (manifest, _) = try signedPackage(package, key: key, version: packageVersion)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(manifest), as: UTF8.self))
        }
    }
}

/// A package read and its manifest signed with the key file, or exit 1 saying why.
func signedPackage(_ path: String, key: String, version: String?) throws -> (UpdateManifest, [UInt8]) {
    guard let bytes = FileManager.default.contents(atPath: path) else {
        printError("edge-agent: cannot read the package \(path)")
        throw ExitCode.failure
    }
    guard let keyText = FileManager.default.contents(atPath: key),
        case .success(let seed) = UpdateKeys.privateKey(String(decoding: keyText, as: UTF8.self))
    else {
        printError("edge-agent: \(key) is not a private key of edge-agent update keygen (ed25519-private:<base64>)")
        throw ExitCode.failure
    }
    guard let version = version ?? debVersion(path) else {
        printError("edge-agent: cannot read the version of \(path) (dpkg-deb -f): pass --package-version")
        throw ExitCode.failure
    }
    var hash = SHA256()
    hash.update(Array(bytes))
    do {
        return (
            try UpdateManifest.signed(version: version, size: bytes.count, sha256: hexString(hash.finalize()), seed: seed), Array(bytes)
        )
    } catch {
        printError("edge-agent: cannot sign: \(error)")
        throw ExitCode.failure
    }
}

/// `dpkg-deb -f PATH Version`, nil without dpkg-deb.
func debVersion(_ path: String) -> String? {
    let quoted = "'" + path.replacing("'", with: "'\\''") + "'"
    guard let p = popen("dpkg-deb -f \(quoted) Version 2>/dev/null", "r") else { return nil }
    var line = [CChar](repeating: 0, count: 128)
    let got = fgets(&line, 128, p) != nil
    let status = pclose(p)
    guard got, status == 0 else { return nil }
    let text = String(decoding: line.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return text.isEmpty ? nil : text
}
