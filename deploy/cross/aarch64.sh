#!/usr/bin/env bash
# The aarch64 cross-build of edge-agent, and the run of the agent and of the whole test suite on
# aarch64 under qemu-user-static. Idempotent: each step is skipped when its result is there.
#
#   deploy/cross/aarch64.sh [all|package|rootfs|sysroot12|sdk|build|release|test|agent|deb|shell-arm64|shell-amd64|run-arm64 CMD]
#
#   rootfs    two Debian sid root filesystems made with mmdebstrap: an arm64 one (the sysroot
#             of the debug build, where the tests later run under qemu) and an amd64 one
#             holding Debian's swiftlang 6.2.3, the compiler that matches sid's Swift modules
#   sysroot12 the release build's sysroot: Debian 12's arm64 C library, libstdc++ 12 and
#             libyaml (extracted, nothing runs under qemu), plus sid's Swift modules and static
#             Swift runtime; what it links runs on Debian 12 and every newer system
#   sdk       the Swift SDK bundle: deploy/cross/sdk/ (one variant per sysroot), as
#             `swift build --swift-sdk` expects
#   build     debug build of everything, tests included, for aarch64-unknown-linux-gnu (sid)
#   release   release edge-agent against the Debian 12 sysroot: Swift runtime and libstdc++
#             linked statically, stripped; its size, and deploy/check-abi.sh against Debian 12
#   test      the whole test suite under qemu in the arm64 root filesystem; last line
#             `aarch64: N passed, M failed`
#   agent     starts the aarch64 agent (dev config, simulated hardware) against the arm64
#             mosquitto for a few seconds and shows what it published
#   deb       the arm64 Debian package from the release binary, checked with dpkg-deb
#   package   only what the package needs: the amd64 root, sysroot12, sdk, release, deb
#             (about 10 minutes the first time; no arm64 root, no tests)
#   all       (default) every step above, in that order
#   shell-arm64, shell-amd64, run-arm64 COMMAND: a shell, or one command, in either root
#
# Needs root (mmdebstrap, chroot, mounts), and installs mmdebstrap and qemu-user-static itself.
# The root filesystems live in $EDGE_AGENT_CROSS_DIR (default ~/.cache/edge-agent-cross, about
# 8 GB); build output in .build-cross-arm64/ (debug, sid) and .build-cross-arm64-debian12/
# (release). See deploy/cross/README.md for times and limits.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=${EDGE_AGENT_CROSS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-agent-cross}
arm=$work/rootfs-arm64
amd=$work/rootfs-amd64
sys12=$work/sysroot-arm64-debian12
sdks=$work/sdks
sdk_id=edge-agent-aarch64-debian-sid
sdk12_id=edge-agent-aarch64-debian12
scratch=.build-cross-arm64
scratch12=.build-cross-arm64-debian12
mirror=${EDGE_AGENT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Debian's arm64 binaries use pointer authentication; this emulates it about 20 % cheaper.
export QEMU_CPU=${QEMU_CPU:-max,pauth-impdef=on}

# What the arm64 sysroot carries: the Swift runtime and modules (swiftlang), the C libraries the
# agent links (libgpiod), libstdc++ for the static Swift runtime (g++), and what the tests use.
arm_packages=swiftlang,libgpiod-dev,libyaml-dev,g++,pkg-config,mosquitto,mosquitto-clients,openssl,python3-paho-mqtt,systemd,adduser,binutils,procps,util-linux,mount,ca-certificates,faketime,gcc
amd_packages=swiftlang,libc6-dev,g++,git,pkg-config,ca-certificates
# The release sysroot: Debian 12's C library and libstdc++ 12 (the floor), libyaml, and
# libgpiod-dev 1.6 only so the shim's constants are checked against a real header.
sys12_packages=libc6-dev,libstdc++-12-dev,libgcc-12-dev,linux-libc-dev,libyaml-dev,libgpiod-dev

say() { printf '\n== %s\n' "$*" >&2; }
die() { echo "aarch64.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap, chroot and bind mounts need it)"

host_tools() {
    source "$repo/scripts/lib.sh"
    ensure_packages mmdebstrap arch-test qemu-user-static binfmt-support
    # qemu-aarch64 in binfmt_misc with the F flag (the interpreter is opened now, so it also
    # works inside the chroot).
    [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
    grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "qemu-aarch64 is registered without the F flag"
}

# mmdebstrap into a temporary folder, renamed only when complete, so a cut run starts over.
make_rootfs() { # ARCH DIR PACKAGES
    local arch=$1 dir=$2 packages=$3
    [ -e "$dir/.complete" ] && return 0
    say "making the $arch sid root filesystem in $dir (arm64: about 17 minutes, amd64: about 3)"
    rm -rf "$dir.tmp"
    mkdir -p "$work"
    # sid's Release file can be past its Valid-Until on a mirror snapshot.
    mmdebstrap --mode=root --variant=apt --architectures="$arch" \
        --aptopt='Acquire::Check-Valid-Until "false"' --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --include="$packages" sid "$dir.tmp" "$mirror"
    touch "$dir.tmp/.complete"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
}

# Runs a command in a root filesystem, in a mount namespace of its own (mounts vanish with it):
# /proc (Swift's driver needs it), /dev, the repository at its own path, and EXTRA bind mounts.
in_root() { # ROOT "EXTRA_DIRS" COMMAND
    local root=$1 extra=$2 command=$3
    # A PID namespace of its own too: whatever a step leaves running (a broker of a crashed test
    # run) ends with it.
    unshare --mount --pid --fork --propagation private -- bash -euc '
        root=$1 repo=$2 extra=$3 command=$4
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        for d in "$repo" $extra; do mkdir -p "$root$d"; mount --bind "$d" "$root$d"; done
        exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb QEMU_CPU="$QEMU_CPU" \
            PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin /bin/bash -euc "cd $repo; $command"
    ' _ "$root" "$repo" "$extra" "$command"
}

# Packages added to the lists after a root filesystem was made are installed into it.
sync_packages() { # ROOT PACKAGES
    local root=$1 missing
    missing=$(in_root "$root" "" "for p in ${2//,/ }; do dpkg-query -W -f='\${Status}' \$p 2>/dev/null | grep -q 'install ok installed' || echo \$p; done" | xargs)
    [ -z "$missing" ] && return 0
    say "installing into $root: $missing"
    cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
    in_root "$root" "" "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1"
}

amd_rootfs() {
    host_tools
    make_rootfs amd64 "$amd" "$amd_packages"
    sync_packages "$amd" "$amd_packages"
    # The compiler's root reads the packages from the local mirror the way the host does.
    git config --file "$amd/etc/gitconfig" --replace-all url./opt/swift-packages/.insteadOf https://github.com/
    git config --file "$amd/etc/gitconfig" --replace-all safe.directory '*'
    in_root "$amd" "" "swift --version 2>&1 | grep -m1 version"
}

rootfs() {
    amd_rootfs
    make_rootfs arm64 "$arm" "$arm_packages"
    sync_packages "$arm" "$arm_packages"
    # Fixes for Debian's swiftlang 6.2.3 in the sysroot (deploy/cross/README.md, "Pitfalls"):
    # the static runtime where the driver looks for it with --static-swift-stdlib,
    ln -sfn ../libexec/swift/lib/swift_static "$arm/usr/lib/swift_static"
    # and an empty lib_Testing_Foundation.a: Debian ships the module but not the library, and
    # SwiftPM's generated test runner links it (toolset.json adds -L=/usr/local/lib/swift-stubs).
    if [ ! -e "$arm/usr/local/lib/swift-stubs/lib_Testing_Foundation.a" ]; then
        mkdir -p "$arm/usr/local/lib/swift-stubs"
        printf '!<arch>\n' > "$arm/usr/local/lib/swift-stubs/lib_Testing_Foundation.a"
    fi
    in_root "$arm" "" "echo \"arm64 sysroot: libgpiod \$(pkg-config --modversion libgpiod), \$(ldd --version | grep -m1 GLIBC), \$(uname -m) under qemu\""
}

# Debian 12's arm64 libraries, extracted (no maintainer scripts, so nothing runs under qemu),
# and the Swift modules, static runtime and clang headers of sid's arm64 swiftlang 6.2.3, the
# version of the compiler in the amd64 root. libstdc++.so is removed from the copy, so the
# runtime's C++ links statically from GCC 12's libstdc++.a.
sysroot12() {
    host_tools
    # The Swift modules must be those of the compiler's version: pinned to the amd64 root's.
    local version key swift=$work/swiftlang-arm64.tmp
    version=$(in_root "$amd" "" "dpkg-query -W -f='\${Version}' swiftlang")
    key="$sys12_packages swiftlang=$version"
    [ "$(cat "$sys12/.complete" 2>/dev/null)" = "$key" ] && return 0
    say "making the Debian 12 arm64 release sysroot in $sys12 (about 3 minutes)"
    rm -rf "$sys12.tmp" "$swift"
    mkdir -p "$work"
    mmdebstrap --mode=root --variant=extract --architectures=arm64 --include="$sys12_packages" \
        bookworm "$sys12.tmp" "$mirror"
    if [ -e "$arm/.complete" ] && [ "$(in_root "$arm" "" "dpkg-query -W -f='\${Version}' swiftlang")" = "$version" ]; then
        swift=$arm
    else
        mmdebstrap --mode=root --variant=extract --architectures=arm64 \
            --aptopt='Acquire::Check-Valid-Until "false"' --include="swiftlang=$version" sid "$swift" "$mirror" ||
            die "sid's arm64 swiftlang $version (the compiler's version) is not in the archive: remove $amd to make the compiler's root again"
    fi
    mkdir -p "$sys12.tmp/usr/libexec/swift/lib"
    cp -a "$swift/usr/libexec/swift/lib/swift" "$swift/usr/libexec/swift/lib/swift_static" \
        "$swift/usr/libexec/swift/lib/clang" "$sys12.tmp/usr/libexec/swift/lib/"
    ln -sfn ../libexec/swift/lib/swift_static "$sys12.tmp/usr/lib/swift_static"
    rm -f "$sys12.tmp/usr/lib/gcc/aarch64-linux-gnu/12/libstdc++.so"
    # Absolute links (libm.so -> /lib/aarch64-linux-gnu/libm.so.6) would point out of the
    # sysroot; the linker then takes libm.a instead, silently. Made relative.
    local link target
    find "$sys12.tmp" -type l -lname '/*' | while read -r link; do
        target=$(readlink "$link")
        ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$sys12.tmp$target")" "$link"
    done
    [ "$swift" = "$arm" ] || rm -rf "$swift"
    echo "$key" > "$sys12.tmp/.complete"
    rm -rf "$sys12"
    mv "$sys12.tmp" "$sys12"
}

sdk() {
    local bundle=$sdks/edge-agent-aarch64.artifactbundle variant root
    mkdir -p "$bundle"
    cp "$repo/deploy/cross/sdk/info.json" "$bundle/"
    for variant in debian-sid debian12; do
        mkdir -p "$bundle/$variant"
        cp "$repo/deploy/cross/sdk/$variant/swift-sdk.json" "$repo/deploy/cross/sdk/$variant/toolset.json" "$bundle/$variant/"
        root=$arm; [ "$variant" = debian12 ] && root=$sys12
        ln -sfn "$root" "$bundle/$variant/sysroot"
    done
    rm -rf "$sdks/$sdk_id.artifactbundle"  # the single-variant bundle of earlier versions
}

# swift build in the amd64 root, for aarch64 with an SDK. SwiftPM does not look for .pc files
# in the sysroot by itself: --pkg-config-path plus PKG_CONFIG_SYSROOT_DIR.
cross_build_with() { # SYSROOT SDK SCRATCH ARGS...
    local root=$1 id=$2 dir=$3 mirror_dir=/opt/swift-packages
    shift 3
    [ -d "$mirror_dir" ] || mirror_dir=""
    in_root "$amd" "$root $sdks $mirror_dir" \
        "PKG_CONFIG_SYSROOT_DIR=$root swift build --scratch-path $dir --swift-sdks-path $sdks --swift-sdk $id \
         --pkg-config-path $root/usr/lib/aarch64-linux-gnu/pkgconfig $*"
}
cross_build() { cross_build_with "$arm" "$sdk_id" "$scratch" "$@"; }

build() {
    say "debug build for aarch64, tests included"
    local log; log=$(mktemp)
    cross_build --build-tests 2>&1 | tee "$log"
    if grep -E "^$repo/(Sources|Tests)/.*warning:" "$log" | sort -u | grep .; then
        rm -f "$log"; die "the aarch64 build has warnings in the project's own code (above)"
    fi
    rm -f "$log"
    file "$repo/$scratch/debug/edge-agent" 2>/dev/null || true
}

release() {
    say "release build for aarch64 against Debian 12: Swift runtime and libstdc++ linked statically"
    local compat=$repo/$scratch12/glibc-compat
    mkdir -p "$compat"
    # The few glibc 2.38+ functions sid's static runtime calls (deploy/cross/glibc-compat.c).
    in_root "$amd" "$sys12" "/usr/libexec/swift/bin/clang --target=aarch64-linux-gnu --sysroot=$sys12 -std=c11 -O2 -fPIC -Wall -Werror \
        -c deploy/cross/glibc-compat.c -o $compat/glibc-compat.o && rm -f $compat/libglibc-compat.a && \
        /usr/libexec/swift/bin/llvm-ar rcs $compat/libglibc-compat.a $compat/glibc-compat.o"
    cross_build_with "$sys12" "$sdk12_id" "$scratch12" -c release --product edge-agent --static-swift-stdlib \
        -Xlinker "$compat/libglibc-compat.a"
    local bin=$repo/$scratch12/release/edge-agent out=$repo/$scratch12/edge-agent-stripped
    # llvm-objcopy ships with Debian's swiftlang (llvm-strip does not) and knows every architecture.
    in_root "$amd" "" "/usr/libexec/swift/bin/llvm-objcopy --strip-unneeded $bin $out"
    echo "aarch64 release edge-agent: $(stat -c %s "$bin") bytes, stripped $(stat -c %s "$out") bytes ($(( $(stat -c %s "$out") / 1048576 )) MiB)"
    echo "needs: $(readelf -d "$out" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | xargs)"
    "$repo/deploy/check-abi.sh" "$out" --floor "$sys12"
    [ -e "$arm/.complete" ] && in_root "$arm" "" "$out version"
    return 0
}

test_suite() {
    say "the whole test suite on aarch64 under qemu-user ($QEMU_CPU)"
    local log=$repo/$scratch/aarch64-test.log status
    set +e
    # Emulation is several times slower than native: the test tooling's timeouts stretch by this.
    in_root "$arm" "" "EDGE_TEST_TIME_SCALE=${EDGE_TEST_TIME_SCALE:-6} $scratch/debug/edge-agentPackageTests.xctest --testing-library swift-testing" 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    set -e
    source "$repo/scripts/lib.sh"
    echo "aarch64: $(test_summary "$log" "$status")"
    echo "$status" > "$log.status"
    return "$status"
}

agent() {
    say "the aarch64 agent (config/dev.yaml, simulated hardware) against the arm64 mosquitto"
    in_root "$arm" "" '
        port=$(( 20000 + RANDOM % 20000 )); state=$(mktemp -d)
        printf "listener %s 127.0.0.1\nallow_anonymous true\nuser root\n" $port > $state/m.conf
        mosquitto -c $state/m.conf > $state/m.log 2>&1 & broker=$!
        sleep 2
        timeout 40 mosquitto_sub -p $port -t "devices/#" -t "vision/events" -v -C 4 > $state/sub.out & sub=$!
        mkdir -p $state/snapshots
        # config/dev.yaml with its .run/ paths moved to a scratch folder, the port from the environment.
        sed "s|\.run/|$state/|g" config/dev.yaml > $state/dev.yaml
        EDGE_AGENT_MQTT__PORT=$port \
            '"$scratch"'/debug/edge-agent run --config $state/dev.yaml > $state/agent.log 2>&1 & pid=$!
        wait $sub || true
        kill -TERM $pid 2>/dev/null || echo "the agent had already stopped"
        status=0; wait $pid || status=$?; echo "agent exit status $status"
        kill $broker || true
        echo "--- agent log"; cat $state/agent.log
        echo "--- received by mosquitto_sub"; cut -c1-200 $state/sub.out
        grep -q "devices/dev-board/status online" $state/sub.out'
}

deb() {
    say "arm64 Debian package"
    local out=$repo/$scratch12/deb
    EDGE_AGENT_ALLOW_TOOLCHAIN_RUNTIME=0 "$repo/deploy/build-deb.sh" --arch arm64 --binary "$repo/$scratch12/release/edge-agent" \
        --floor "$sys12" --out "$out" | tail -1 > "$out.path"
    echo "$sys12" > "$repo/$scratch12/sysroot.path"  # the floor, for packages made later (deploy/vm/run.sh)
    local debfile; debfile=$(cat "$out.path")
    dpkg-deb --info "$debfile"
    dpkg-deb --contents "$debfile"
    ls -l "$debfile"
}

step=${1:-all}
case "$step" in
    rootfs) rootfs ;;
    sysroot12) sysroot12 ;;
    sdk) sdk ;;
    package) amd_rootfs; sysroot12; sdk; release; deb ;;
    build) sdk; build ;;
    release) sdk; release ;;
    test) test_suite ;;
    agent) agent ;;
    deb) deb ;;
    shell-arm64) in_root "$arm" "" "exec bash -i" ;;
    run-arm64) shift; in_root "$arm" "" "$*" ;;
    shell-amd64) in_root "$amd" "$arm $sdks" "exec bash -i" ;;
    all)
        start=$SECONDS
        t() { local s=$SECONDS; "$@"; echo "step $1: $((SECONDS - s)) s" >&2; }
        t rootfs; t sysroot12; t sdk; t build; t release; t deb; t agent
        t test_suite || status=$?
        echo "aarch64.sh all: $((SECONDS - start)) s"
        source "$repo/scripts/lib.sh"
        echo "aarch64: $(test_summary "$repo/$scratch/aarch64-test.log" "${status:-0}")"
        exit "${status:-0}" ;;
    *) die "unknown step $step (see the header of $0)" ;;
esac
