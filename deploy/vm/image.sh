#!/usr/bin/env bash
# Makes a bootable Debian arm64 disk image for deploy/vm/run.sh: a board in a box.
#
#   deploy/vm/image.sh SUITE OUT_DIR SSH_PUBLIC_KEY
#
# OUT_DIR gets disk.img (ext4, 2 GiB sparse, the whole root file system), vmlinuz and initrd.img.
# The system: Debian SUITE (bookworm, trixie) arm64 minbase with its kernel, systemd as PID 1,
# udev, systemd-networkd (DHCP on the emulator's network), mosquitto listening on every address
# (persistent sessions, deep queues, a log), OpenSSH with the given key for root, a persistent
# journal, and a root shell on the serial console. Not libgpiod or anything else edge-agent's
# package depends on: `apt install ./edge-agent_*.deb` must bring those from the suite.
#
# Needs root and qemu-user-static in binfmt_misc (run.sh sees to both): maintainer scripts run
# under emulation. Debian's initramfs with MODULES=most runs an emulated process per module,
# twice (35 minutes); with MODULES=list and the three modules a virt machine needs to reach
# its root it takes about 5.
set -euo pipefail
suite=$1 out=$2 key=$3
mirror=${EDGE_AGENT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=linux-image-arm64,systemd,systemd-sysv,udev,kmod,iproute2,e2fsprogs,procps,mosquitto,openssh-server,netcat-openbsd
root=$out/root.tmp
rm -rf "$root" "$out/disk.img.tmp"
mkdir -p "$out"

# Before the kernel is installed: a small initramfs (virtio disk and ext4; udev loads the rest
# from the root file system later).
essential_hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/etc/initramfs-tools/hooks"
echo MODULES=list > "$1/etc/initramfs-tools/conf.d/edge-agent-vm"
cat > "$1/etc/initramfs-tools/hooks/edge-agent-vm" <<"HOOK"
#!/bin/sh
[ "$1" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
manual_add_modules virtio_pci virtio_blk ext4
HOOK
chmod 0755 "$1/etc/initramfs-tools/hooks/edge-agent-vm"'

mmdebstrap --mode=root --variant=minbase --architectures=arm64 \
    --aptopt='Acquire::Check-Valid-Until "false"' --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --essential-hook="$essential_hook" --include="$packages" "$suite" "$root" "$mirror"

board=board-$( [ "$suite" = bookworm ] && echo debian12 || { [ "$suite" = trixie ] && echo debian13 || echo "$suite"; } )
echo "$board" > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 %s\n::1 localhost ip6-localhost ip6-loopback\n' "$board" > "$root/etc/hosts"
echo '/dev/vda / ext4 errors=remount-ro 0 1' > "$root/etc/fstab"
# The emulator's user network: DHCP, its DNS forwarder (no resolved in minbase).
mkdir -p "$root/etc/systemd/network"
printf '[Match]\nName=en*\n\n[Network]\nDHCP=yes\n' > "$root/etc/systemd/network/20-wired.network"
rm -f "$root/etc/resolv.conf"
echo 'nameserver 10.0.2.3' > "$root/etc/resolv.conf"
systemctl --root="$root" enable systemd-networkd.service systemd-networkd-wait-online.service >/dev/null 2>&1
# mosquitto for the host to watch through a forwarded port; persistent sessions of the checker
# survive its restarts (saved at every clean stop and each second), queues deep enough for a
# buffered backlog.
cat > "$root/etc/mosquitto/conf.d/board-in-a-box.conf" <<'CONF'
listener 1883 0.0.0.0
allow_anonymous true
max_queued_messages 100000
autosave_interval 1
CONF
# The journal of every boot, for the checks that read earlier boots.
mkdir -p "$root/var/log/journal" "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=persistent\n' > "$root/etc/systemd/journald.conf.d/persistent.conf"
# root over SSH with the run's key; a root shell on the serial console for a person watching.
install -d -m 0700 "$root/root/.ssh"
install -m 0600 "$key" "$root/root/.ssh/authorized_keys"
mkdir -p "$root/etc/systemd/system/serial-getty@ttyAMA0.service.d"
printf '[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --noclear %%I 115200 linux\n' \
    > "$root/etc/systemd/system/serial-getty@ttyAMA0.service.d/autologin.conf"
# A folder for the directory source's test files.
mkdir -p "$root/srv/snapshots"

cp "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)" "$out/vmlinuz"
cp "$(ls "$root"/boot/initrd.img-* | sort -V | tail -1)" "$out/initrd.img"
mkfs.ext4 -q -F -L root -d "$root" "$out/disk.img.tmp" 2G
mv "$out/disk.img.tmp" "$out/disk.img"
du -sh --apparent-size "$out/disk.img" | sed 's/\t.*//' | xargs echo "image $out/disk.img: apparent size" >&2
du -sh "$out/disk.img" "$root" | sed 's/\t/ /' >&2
rm -rf "$root"
