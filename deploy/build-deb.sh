#!/usr/bin/env bash
# Builds the Debian package of edge-agent with dpkg-deb (no network).
#
#   deploy/build-deb.sh [--arch amd64|arm64] [--binary PATH] [--version X.Y.Z] [--out DIR] [--floor DIR]
#
# Without --binary it builds the release binary for this machine with the Swift runtime linked
# statically (`swift build -c release --static-swift-stdlib`). For arm64 pass the cross-built
# binary (deploy/cross/aarch64.sh package). The binary must run on the floor system, Debian 12
# (deploy/check-abi.sh; --floor is the root of its files: / on this Debian 12 machine, the arm64
# sysroot for arm64). Depends: is worked out from the binary's shared libraries, with libc6 at
# least the highest glibc version it needs, plus libgpiod (loaded at run time: libgpiod3 on
# Debian 13, libgpiod2 on Debian 12). A binary that still needs the Swift toolchain's shared
# runtime is refused, unless EDGE_AGENT_ALLOW_TOOLCHAIN_RUNTIME=1 (the tests use it, to package
# the debug binary they already have).
set -euo pipefail
cd "$(dirname "$0")/.."

arch=$(dpkg --print-architecture)
binary=""
version=$(sed -n 's/.*current = "\(.*\)".*/\1/p' Sources/EdgeAgent/Version.swift)
out=".build/deb"
floor=/
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch=$2; shift 2 ;;
        --floor) floor=$2; shift 2 ;;
        --binary) binary=$2; shift 2 ;;
        --version) version=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
case "$arch" in amd64|arm64) ;; *) echo "--arch must be amd64 or arm64, not $arch" >&2; exit 2 ;; esac

if [ -z "$binary" ]; then
    [ "$arch" = "$(dpkg --print-architecture)" ] || { echo "for $arch, pass --binary (a cross-built edge-agent)" >&2; exit 2; }
    swift build -c release --product edge-agent --static-swift-stdlib
    binary=.build/release/edge-agent
fi
[ -x "$binary" ] || { echo "no executable at $binary" >&2; exit 1; }

# The floor: every library, symbol version and symbol the binary needs exists on Debian 12.
runtime=('libswift*' 'libFoundation*' 'lib_FoundationICU*' 'libdispatch*' 'libBlocksRuntime*' 'libicu*' 'lib_Testing*')
skip=()
if [ "${EDGE_AGENT_ALLOW_TOOLCHAIN_RUNTIME:-0}" = 1 ]; then for g in "${runtime[@]}"; do skip+=(--skip "$g"); done; fi
abi=$(deploy/check-abi.sh "$binary" --floor "$floor" "${skip[@]+"${skip[@]}"}") || {
    echo "$abi" >&2
    echo "build-deb.sh: $binary would not run on the floor system; nothing packaged" >&2
    exit 1
}
echo "$abi" >&2
glibc=$(readelf -V -W "$binary" | { grep -oE 'Name: GLIBC_[0-9.]+' || true; } | cut -d_ -f2 | sort -V | tail -1)

# Shared libraries → Debian packages.
deps=()
unknown=()
for lib in $(readelf -d "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    case "$lib" in
        libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|libutil.so.*|ld-linux-*.so.*) deps+=("libc6${glibc:+ (>= $glibc)}") ;;
        libgcc_s.so.*) deps+=("libgcc-s1") ;;
        libstdc++.so.*) deps+=("libstdc++6") ;;
        libz.so.*) deps+=("zlib1g") ;;
        libyaml-0.so.2) deps+=("libyaml-0-2") ;;
        libswift*|libFoundation*|lib_FoundationICU*|libdispatch*|libBlocksRuntime*|libicu*|lib_Testing*)
            [ "${EDGE_AGENT_ALLOW_TOOLCHAIN_RUNTIME:-0}" = 1 ] || unknown+=("$lib (the Swift runtime: build with --static-swift-stdlib)") ;;
        *) unknown+=("$lib") ;;
    esac
done
if [ ${#unknown[@]} -gt 0 ]; then
    echo "cannot map these libraries of $binary to Debian packages: ${unknown[*]}" >&2
    exit 1
fi
# libgpiod is loaded at run time (Sources/CGPIOShim): 2.x where there is one, else 1.x.
deps+=("libgpiod3 | libgpiod2")
# libcrypto for the Ed25519 of signed updates, also loaded at run time (Sources/CEd25519).
deps+=("libssl3t64 | libssl3 | libssl1.1")
depends=$(printf '%s\n' "${deps[@]}" | sort -u | paste -sd, | sed 's/,/, /g')

stage=$(mktemp -d)
chmod 0755 "$stage"  # mktemp makes it 0700, and it becomes the package's ./
trap 'rm -rf "$stage"' EXIT
install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/usr/lib/edge-agent" "$stage/lib/systemd/system" "$stage/lib/udev/rules.d" \
    "$stage/usr/share/edge-agent/hardware" "$stage/usr/share/doc/edge-agent"
install -m 0755 "$binary" "$stage/usr/bin/edge-agent"
# Stripped (symbols are not needed on the board; llvm-strip knows every architecture).
if command -v llvm-strip >/dev/null; then llvm-strip --strip-unneeded "$stage/usr/bin/edge-agent"
elif [ "$arch" = arm64 ] && command -v aarch64-linux-gnu-strip >/dev/null; then aarch64-linux-gnu-strip --strip-unneeded "$stage/usr/bin/edge-agent"
elif [ "$arch" = "$(dpkg --print-architecture)" ] && command -v strip >/dev/null; then strip --strip-unneeded "$stage/usr/bin/edge-agent"; fi
install -m 0644 deploy/edge-agent.service deploy/edge-agent-reboot.path deploy/edge-agent-reboot.service \
    deploy/edge-agent-update.path deploy/edge-agent-update.service "$stage/lib/systemd/system/"
install -m 0755 deploy/edge-agent-update-helper "$stage/usr/lib/edge-agent/update-helper"
# The package's own version (a rebuild of one binary may be 0.1.0+fix1): updates compare it.
echo "$version" > "$stage/usr/share/edge-agent/version"
install -m 0644 deploy/udev/60-edge-agent-gpio.rules "$stage/lib/udev/rules.d/"
# The default configuration: postinst makes /etc/edge-agent/config.yaml from it once (not a conffile).
install -m 0644 deploy/config.yaml "$stage/usr/share/edge-agent/config.yaml"
install -m 0644 hardware/*.yaml "$stage/usr/share/edge-agent/hardware/"
install -m 0644 README.md docs/EVENTS.md docs/COMMANDS.md docs/UPDATES.md config/edge-agent.example.yaml config/mosquitto-acl.example \
    "$stage/usr/share/doc/edge-agent/"
size=$(du -sk "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: edge-agent
Version: $version
Architecture: $arch
Maintainer: edge-agent developers <edge-agent@localhost>
Depends: $depends, adduser
Installed-Size: $size
Section: net
Priority: optional
Description: MQTT agent for ARM Linux camera gateways
 Keeps an MQTT session to a broker, publishes vision events and a retained
 device status with a Will, drives a GPIO status LED, buffers QoS 1/2 messages
 on flash while offline and answers commands on MQTT command topics.
CONTROL
install -m 0755 deploy/debian/postinst deploy/debian/prerm deploy/debian/postrm "$stage/DEBIAN/"
mkdir -p "$out"
deb="$out/edge-agent_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zgzip --build "$stage" "$deb" >/dev/null
echo "$deb"
