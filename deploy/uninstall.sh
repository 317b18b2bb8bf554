#!/usr/bin/env bash
# Removes what deploy/install.sh installed. Keeps the configuration and the buffered messages
# unless --purge.   deploy/uninstall.sh [--purge] [--root DIR]
set -euo pipefail
purge=0
root=""
while [ $# -gt 0 ]; do
    case "$1" in
        --purge) purge=1; shift ;;
        --root) root=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    systemctl disable --now edge-agent.service edge-agent-reboot.path 2>/dev/null || true
fi
rm -f "$root/usr/local/bin/edge-agent" "$root/etc/systemd/system/edge-agent.service" \
    "$root/etc/systemd/system/edge-agent-reboot.path" "$root/etc/systemd/system/edge-agent-reboot.service" \
    "$root/etc/udev/rules.d/60-edge-agent-gpio.rules"
rm -rf "$root/usr/local/share/edge-agent"
if [ "$purge" = 1 ]; then
    rm -rf "$root/etc/edge-agent" "$root/var/lib/edge-agent"
    [ -z "$root" ] && getent passwd edge-agent >/dev/null && userdel edge-agent || true
fi
[ -z "$root" ] && [ -d /run/systemd/system ] && systemctl daemon-reload || true
echo "edge-agent removed$([ "$purge" = 1 ] && echo ", with its configuration and data" || echo "; configuration and data kept (--purge removes them)")"
