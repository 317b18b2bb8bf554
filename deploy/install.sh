#!/usr/bin/env bash
# Installs edge-agent on a board without dpkg: the binary, the unit, the default configuration
# (kept if one exists), the board profiles, a system user, the state folder; enables the unit.
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
# The binary carries the Swift runtime; it still needs libc, libstdc++, libgpiod and libyaml.
if [ -z "$root" ] && missing=$(ldd "$binary" 2>/dev/null | awk '/not found/ {print $1}' | xargs) && [ -n "$missing" ]; then
    echo "$binary needs libraries this board lacks: $missing (Debian: libgpiod2 or libgpiod3, libyaml-0-2)" >&2
    exit 1
fi

install -d "$root/usr/local/bin" "$root/etc/systemd/system" "$root/etc/edge-agent" "$root/usr/local/share/edge-agent/hardware" "$root/var/lib/edge-agent"
install -m 0755 "$binary" "$root/usr/local/bin/edge-agent"
sed 's|/usr/bin/edge-agent|/usr/local/bin/edge-agent|' "$here/edge-agent.service" > "$root/etc/systemd/system/edge-agent.service"
install -m 0644 "$repo"/hardware/*.yaml "$root/usr/local/share/edge-agent/hardware/"
if [ -e "$root/etc/edge-agent/config.yaml" ]; then
    echo "keeping the existing $root/etc/edge-agent/config.yaml"
else
    sed 's|/usr/share/edge-agent/hardware|/usr/local/share/edge-agent/hardware|' "$here/config.yaml" > "$root/etc/edge-agent/config.yaml"
    chmod 0640 "$root/etc/edge-agent/config.yaml"
fi
if [ -n "$root" ]; then
    echo "installed into $root; on the board: create the user (useradd --system --user-group --home-dir /var/lib/edge-agent edge-agent), chown it /var/lib/edge-agent, systemctl enable --now edge-agent"
    exit 0
fi
getent passwd edge-agent >/dev/null || useradd --system --user-group --home-dir /var/lib/edge-agent --shell /usr/sbin/nologin edge-agent
for g in gpio video; do getent group "$g" >/dev/null && usermod -aG "$g" edge-agent || true; done
chown edge-agent:edge-agent /var/lib/edge-agent
chmod 0750 /var/lib/edge-agent
chgrp edge-agent /etc/edge-agent/config.yaml
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now edge-agent.service
fi
echo "edge-agent installed: /usr/local/bin/edge-agent, configuration /etc/edge-agent/config.yaml"
