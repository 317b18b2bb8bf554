#!/usr/bin/env bash
# Installs edge-agent on a board without dpkg: the binary, the unit and its reboot helper, the
# udev rule for GPIO chips, the default configuration (kept if one exists), the board profiles,
# a system user, the state folder; enables the units. The same layout as the Debian package.
#
#   deploy/install.sh --binary PATH [--root DIR]
#
# --root installs into another root file system (an image being prepared): no user is created
# and systemctl is not called there; deploy/install.sh prints what to do on the first boot.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
binary=""
root=""
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary=$2; shift 2 ;;
        --root) root=$2; shift 2 ;;
        *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
[ -n "$binary" ] && [ -x "$binary" ] || { echo "--binary PATH: the edge-agent executable for this board" >&2; exit 2; }
[ -n "$root" ] || [ "$(id -u)" -eq 0 ] || { echo "run as root (or with --root DIR)" >&2; exit 1; }
# The binary carries the Swift runtime; it still needs libc and libyaml (and loads libgpiod for a
# GPIO LED).
if [ -z "$root" ] && missing=$(ldd "$binary" 2>/dev/null | awk '/not found/ {print $1}' | xargs) && [ -n "$missing" ]; then
    echo "$binary needs libraries this board lacks: $missing (Debian: libyaml-0-2)" >&2
    exit 1
fi

install -d "$root/usr/local/bin" "$root/etc/systemd/system" "$root/etc/udev/rules.d" "$root/etc/edge-agent" \
    "$root/usr/local/share/edge-agent/hardware" "$root/var/lib/edge-agent"
install -m 0755 "$binary" "$root/usr/local/bin/edge-agent"
sed 's|/usr/bin/edge-agent|/usr/local/bin/edge-agent|' "$here/edge-agent.service" > "$root/etc/systemd/system/edge-agent.service"
install -m 0644 "$here/edge-agent-reboot.path" "$here/edge-agent-reboot.service" "$root/etc/systemd/system/"
install -m 0644 "$here/udev/60-edge-agent-gpio.rules" "$root/etc/udev/rules.d/"
install -m 0644 "$repo"/hardware/*.yaml "$root/usr/local/share/edge-agent/hardware/"
if [ -e "$root/etc/edge-agent/config.yaml" ]; then
    echo "keeping the existing $root/etc/edge-agent/config.yaml"
else
    sed 's|/usr/share/edge-agent/hardware|/usr/local/share/edge-agent/hardware|' "$here/config.yaml" > "$root/etc/edge-agent/config.yaml"
    chmod 0640 "$root/etc/edge-agent/config.yaml"
fi
# The broker password for the unit's LoadCredential= (root's alone; empty: no password).
[ -e "$root/etc/edge-agent/mqtt-password" ] || install -m 0600 /dev/null "$root/etc/edge-agent/mqtt-password"
if [ -n "$root" ]; then
    echo "installed into $root; on the board: run deploy/install.sh again, or create the user (useradd --system --user-group --home-dir /var/lib/edge-agent edge-agent), chown it /var/lib/edge-agent, systemctl enable --now edge-agent edge-agent-reboot.path"
    exit 0
fi
getent passwd edge-agent >/dev/null || useradd --system --user-group --home-dir /var/lib/edge-agent --shell /usr/sbin/nologin edge-agent
getent group gpio >/dev/null || groupadd --system gpio
for g in gpio video; do getent group "$g" >/dev/null && usermod -aG "$g" edge-agent || true; done
if command -v udevadm >/dev/null && [ -d /run/udev ]; then
    udevadm control --reload || true
    udevadm trigger --subsystem-match=gpio --action=change || true
fi
chown edge-agent:edge-agent /var/lib/edge-agent
chmod 0750 /var/lib/edge-agent
chown root:edge-agent /etc/edge-agent /etc/edge-agent/config.yaml
chmod 0770 /etc/edge-agent
chmod 0660 /etc/edge-agent/config.yaml
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now edge-agent.service edge-agent-reboot.path
fi
echo "edge-agent installed: /usr/local/bin/edge-agent, configuration /etc/edge-agent/config.yaml"
