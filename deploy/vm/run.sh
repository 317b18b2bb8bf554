#!/usr/bin/env bash
# Boards in a box: the arm64 package on Debian 12 and Debian 13, booted under qemu-system-aarch64
# (software emulation, -M virt), installed with apt, started at boot by a real systemd, and
# checked from outside the VM (deploy/vm/check.py: one line per check).
#
#   sudo deploy/vm/run.sh [debian12|debian13|all]        (default: all)
#
# Idempotent and cached in $EDGE_AGENT_VM_DIR (default ~/.cache/edge-agent-vm): the package is
# rebuilt by deploy/cross/aarch64.sh package (incremental), a disk image only when
# deploy/vm/image.sh changed; every run boots a fresh copy of the image. The first run takes
# about an hour on 2 cores (the release cross build, two images); later runs about 15 minutes
# per board. The last lines read `board-debian12: N passed, M failed` (and the same for 13).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cache=${EDGE_AGENT_VM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-agent-vm}
say() { printf '\n== %s\n' "$*" >&2; }
die() { echo "run.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap and binfmt_misc need it)"

case "${1:-all}" in
    debian12) boards=(debian12) ;;
    debian13) boards=(debian13) ;;
    all) boards=(debian12 debian13) ;;
    *) die "unknown board ${1} (debian12, debian13 or all)" ;;
esac
suite_of() { case "$1" in debian12) echo bookworm ;; debian13) echo trixie ;; esac; }

start=$SECONDS
source "$repo/scripts/lib.sh"
ensure_packages qemu-system-arm openssh-client e2fsprogs

# The package (and qemu-user in binfmt_misc, which the image build needs too).
mkdir -p "$cache"
log=$cache/package.log
say "the arm64 package (deploy/cross/aarch64.sh package)"
"$repo/deploy/cross/aarch64.sh" package >"$log" 2>&1 || { tail -40 "$log"; die "the package build failed (log: $log)"; }
grep -E '^(aarch64 release|needs:|abi:|lib.*needs at most)' "$log" >&2 || true
built=$repo/.build-cross-arm64-debian12
deb=$(cat "$built/deb.path")
version=$(dpkg-deb -f "$deb" Version)
next="$version+box1"
deb_next=$("$repo/deploy/build-deb.sh" --arch arm64 --binary "$built/release/edge-agent" --floor "$(cat "$built/sysroot.path")" \
    --version "$next" --out "$cache/debs" 2>>"$log" | tail -1) || { tail -20 "$log"; die "the upgrade package failed (log: $log)"; }
echo "packages: $deb ($(stat -c %s "$deb") bytes), $deb_next for the upgrade" >&2

# Signed updates over MQTT: two newer packages of the same binary, one whose binary cannot
# start (for the rollback), the operator's key, and the operator's edge-agent on this machine.
updates=()
for n in 2 4; do
    updates+=("$("$repo/deploy/build-deb.sh" --arch arm64 --binary "$built/release/edge-agent" --floor "$(cat "$built/sysroot.path")" \
        --version "$version+box$n" --out "$cache/debs" 2>>"$log" | tail -1)") || die "the update package failed (log: $log)"
done
broken=$cache/debs/edge-agent_${version}+box3_arm64.deb
tmp=$(mktemp -d)
dpkg-deb -R "${updates[0]}" "$tmp/p"
printf '#!/bin/sh\necho "edge-agent: a test build that cannot start" >&2\nexit 1\n' > "$tmp/p/usr/bin/edge-agent"
sed -i "s/^Version: .*/Version: $version+box3/" "$tmp/p/DEBIAN/control"
echo "$version+box3" > "$tmp/p/usr/share/edge-agent/version"
dpkg-deb --root-owner-group -Zgzip --build "$tmp/p" "$broken" >/dev/null
rm -rf "$tmp"
(cd "$repo" && swift build --product edge-agent >>"$log" 2>&1) || die "the operator's edge-agent (swift build) failed (log: $log)"
operator=$repo/.build/debug/edge-agent
[ -e "$cache/update/fleet.key" ] || { mkdir -p "$cache/update" && "$operator" update keygen --out "$cache/update/fleet" >/dev/null; }
echo "updates: ${updates[*]} $broken (cannot start)" >&2

# One key for the runs' SSH, made here, never committed.
if [ ! -e "$cache/ssh/id_ed25519" ]; then
    mkdir -p "$cache/ssh"
    ssh-keygen -q -t ed25519 -N '' -C board-in-a-box -f "$cache/ssh/id_ed25519"
fi

summaries=()
status=0
for board in "${boards[@]}"; do
    suite=$(suite_of "$board")
    dir=$cache/$board
    key=$(cat "$repo/deploy/vm/image.sh" "$cache/ssh/id_ed25519.pub" | sha256sum | cut -c1-16)-$suite
    if [ "$(cat "$dir/image/key" 2>/dev/null)" != "$key" ]; then
        say "making the $board ($suite arm64) image (about 6 minutes)"
        t=$SECONDS
        rm -rf "$dir/image.tmp"
        "$repo/deploy/vm/image.sh" "$suite" "$dir/image.tmp" "$cache/ssh/id_ed25519.pub"
        echo "$key" > "$dir/image.tmp/key"
        rm -rf "$dir/image"
        mv "$dir/image.tmp" "$dir/image"
        echo "image: $((SECONDS - t)) s" >&2
    fi
    say "board-$board: booting a fresh copy of the image"
    run=$dir/run
    rm -rf "$run"
    mkdir -p "$run"
    cp --sparse=always "$dir/image/disk.img" "$run/disk.img"
    t=$SECONDS
    set +e
    /usr/bin/python3 "$repo/deploy/vm/check.py" --name "board-$board" --work "$run" \
        --kernel "$dir/image/vmlinuz" --initrd "$dir/image/initrd.img" --disk "$run/disk.img" \
        --key "$cache/ssh/id_ed25519" --deb "$deb" --deb-next "$deb_next" --next-version "$next" \
        --update "${updates[0]}" --update-broken "$broken" --update-last "${updates[1]}" \
        --operator "$operator" --update-key "$cache/update/fleet.key" \
        --config "$repo/deploy/vm/board-config.yaml" | tee "$run/check.log"
    code=${PIPESTATUS[0]}
    set -e
    [ "$code" -eq 0 ] || status=1
    echo "board-$board: $((SECONDS - t)) s (logs: $run)" >&2
    summaries+=("$(tail -1 "$run/check.log")")
done
echo "run.sh: $((SECONDS - start)) s in all"
printf '%s\n' "${summaries[@]}"
exit "$status"
