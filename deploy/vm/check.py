#!/usr/bin/python3
"""A board in a box: boots a Debian arm64 image under qemu-system-aarch64, installs the
edge-agent package with apt, and checks from outside the VM (SSH, and MQTT through a forwarded
port to the VM's mosquitto) what a board in the field must do. deploy/vm/run.sh prepares the
image and the packages and calls this once per board.

One line per check, `PASS name: detail` or `FAIL name: detail`; the last line is
`<board>: N passed, M failed`.
"""

import argparse
import hashlib
import json
import os
import re
import shlex
import socket
import struct
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt

SCALE = float(os.environ.get("EDGE_VM_TIME_SCALE", "1"))


def log(text):
    print(f"  .. {text}", file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class VM:
    """One emulated board: qemu-system-aarch64 -M virt under TCG, SSH and mosquitto forwarded."""

    def __init__(self, work, kernel, initrd, disk, key):
        self.work, self.kernel, self.initrd, self.disk, self.key = work, kernel, initrd, disk, key
        self.ssh_port, self.mqtt_port = free_port(), free_port()
        self.monitor = os.path.join(work, "monitor.sock")
        self.process = None
        self.boots = 0

    def start(self):
        self.boots += 1
        if os.path.exists(self.monitor):
            os.unlink(self.monitor)
        fwd = f"hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22,hostfwd=tcp:127.0.0.1:{self.mqtt_port}-:1883"
        command = [
            "qemu-system-aarch64", "-M", "virt", "-cpu", "max,pauth-impdef=on", "-smp", "2", "-m", "1024",
            "-display", "none", "-kernel", self.kernel, "-initrd", self.initrd,
            "-append", "root=/dev/vda rw console=ttyAMA0 quiet",
            "-drive", f"file={self.disk},format=raw,if=virtio",
            "-netdev", f"user,id=n,{fwd}", "-device", "virtio-net-pci,netdev=n,romfile=",
            "-serial", f"file:{os.path.join(self.work, f'serial-{self.boots}.log')}",
            "-monitor", f"unix:{self.monitor},server,nowait",
        ]
        out = open(os.path.join(self.work, f"qemu-{self.boots}.log"), "w")
        self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.started = time.monotonic()

    def ssh(self, command, timeout=120):
        """(exit status, output) of a command run as root in the VM."""
        args = ["ssh", "-i", self.key, "-p", str(self.ssh_port), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
                "-o", "ConnectTimeout=5", "-o", "ServerAliveInterval=5", "root@127.0.0.1", command]
        try:
            r = subprocess.run(args, capture_output=True, text=True, timeout=timeout * SCALE)
            return r.returncode, (r.stdout + r.stderr).strip()
        except subprocess.TimeoutExpired:
            return 124, f"timed out after {timeout * SCALE:.0f} s: {command}"

    def out(self, command, timeout=120):
        return self.ssh(command, timeout)[1]

    def copy_in(self, local, remote):
        args = ["scp", "-q", "-i", self.key, "-P", str(self.ssh_port), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", local, f"root@127.0.0.1:{remote}"]
        subprocess.run(args, check=True, timeout=300 * SCALE)

    def wait_ssh(self, timeout=600):
        deadline = time.monotonic() + timeout * SCALE
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"qemu exited with status {self.process.returncode} (see {self.work}/qemu-{self.boots}.log)")
            if self.ssh("true", timeout=15)[0] == 0:
                return time.monotonic() - self.started
            time.sleep(2)
        raise RuntimeError(f"no SSH within {timeout * SCALE:.0f} s (serial console: {self.work}/serial-{self.boots}.log)")

    def boot_id(self):
        return self.out("cat /proc/sys/kernel/random/boot_id", timeout=20)

    def power_cut(self):
        """The monitor's quit: the emulator stops at once, nothing is shut down or flushed."""
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(30)
        s.connect(self.monitor)
        banner = b""
        while b"(qemu)" not in banner:  # the monitor's prompt: it reads commands now
            chunk = s.recv(4096)
            if not chunk:
                break
            banner += chunk
        s.sendall(b"quit\n")
        self.process.wait(timeout=30)
        s.close()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.ssh("systemctl poweroff", timeout=10)
            try:
                self.process.wait(timeout=60 * SCALE)
            except subprocess.TimeoutExpired:
                self.power_cut()


class Watch:
    """What the VM's broker delivers to one persistent MQTT session (QoS 1, clean session off), so
    that what is published while this side is away (the VM rebooting) is queued for it."""

    def __init__(self, port, device):
        self.device = device
        self.messages = []  # (monotonic time, topic, text, retained)
        self.cond = threading.Condition()
        self.client = mqtt.Client(client_id=f"board-check-{device}", clean_session=False, protocol=mqtt.MQTTv311)
        self.client.on_connect = self._connected
        self.client.on_message = self._message
        self.client.reconnect_delay_set(1, 2)
        self.client.connect_async("127.0.0.1", port, keepalive=20)
        self.client.loop_start()

    def _connected(self, client, userdata, flags, rc):
        # Once: the broker keeps the subscriptions with the session (a new SUBSCRIBE would send
        # the retained messages again, which then look like new ones).
        if not flags.get("session present"):
            client.subscribe([(f"devices/{self.device}/#", 1), ("vision/events", 1)])

    def _message(self, client, userdata, m):
        if "/update/" in m.topic:  # an update's chunks: not kept
            return
        with self.cond:
            self.messages.append((time.monotonic(), m.topic, m.payload.decode("utf-8", "replace"), bool(m.retain)))
            self.cond.notify_all()

    def mark(self):
        with self.cond:
            return len(self.messages)

    def since(self, mark, topic=None):
        with self.cond:
            return [m for m in self.messages[mark:] if topic is None or m[1] == topic]

    def wait(self, predicate, timeout, what):
        """Waits until predicate() is true (evaluated without the lock: it may run SSH)."""
        deadline = time.monotonic() + timeout * SCALE
        while True:
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {what} within {timeout * SCALE:.0f} s")
            with self.cond:
                self.cond.wait(min(left, 1))

    def events(self, mark=0):
        out = []
        for m in self.since(mark, "vision/events"):
            try:
                out.append(json.loads(m[2]))
            except ValueError:
                pass
        return out

    def publish(self, topic, payload):
        self.client.publish(topic, payload, qos=1)


class Board:
    def __init__(self, args):
        self.args = args
        self.name = args.name
        self.device = args.name  # device_id "{hostname}" of the packaged configuration
        self.results = []
        self.status_topic = f"devices/{self.device}/status"
        self.info_topic = f"devices/{self.device}/info"
        self.vm = VM(args.work, args.kernel, args.initrd, args.disk, args.key)
        self.watch = None
        self.times = {}

    def check(self, name, ok, detail):
        self.results.append((name, ok))
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)

    def attempt(self, name, function):
        try:
            ok, detail = function()
        except Exception as e:  # a check that raises has failed, with its reason
            ok, detail = False, f"{type(e).__name__}: {e}"
        self.check(name, ok, detail)
        return ok

    # --- helpers on the VM -------------------------------------------------------------------

    def unit(self, *props):
        text = self.vm.out("systemctl show edge-agent -p " + ",".join(props))
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def broker_log_offset(self):
        return int(self.vm.out("stat -c %s /var/log/mosquitto/mosquitto.log 2>/dev/null || echo 0") or 0)

    def broker_log(self, offset):
        return self.vm.out(f"tail -c +{offset + 1} /var/log/mosquitto/mosquitto.log")

    def statuses(self, mark):
        """The status messages published since the mark: live ones (not retained copies), a
        repeat in a row once (QoS 1 redelivers what a dropped connection left unacknowledged)."""
        out = []
        for m in self.watch.since(mark, self.status_topic):
            if not m[3] and (not out or out[-1] != m[2]):
                out.append(m[2])
        return out

    def command(self, name, args=None, timeout=30):
        """Sends one command (3.1.1 style: the answer on the default response topic) and returns its answer."""
        rid = f"{name}-{time.monotonic_ns()}"
        mark = self.watch.mark()
        self.watch.publish(f"devices/{self.device}/commands/{name}", json.dumps({"id": rid, "args": args or {}}))

        def answer():
            for m in self.watch.since(mark, f"devices/{self.device}/response"):
                try:
                    a = json.loads(m[2])
                except ValueError:
                    continue
                if a.get("id") == rid:
                    return a
            return None

        return self.watch.wait(answer, timeout, f"answer to {name}")

    def led_line(self):
        """The status LED's line as the kernel's gpiolib sees it: (direction, value) or None."""
        text = self.vm.out("cat /sys/kernel/debug/gpio")
        for line in text.splitlines():
            if "|edge-agent" in line:  # the consumer name the agent requests its line with
                m = re.search(r"\)\s+(in|out)\s+(hi|lo)", line)
                if m:
                    return m.group(1), m.group(2)
        return None

    def stored_event_ids(self):
        """event_id of every message the offline store holds now (edge-agent buffer inspect --dump)."""
        text = self.vm.out("edge-agent buffer inspect /var/lib/edge-agent/buffer --dump", timeout=60)
        ids = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
                ids.append(json.loads(record["payload"])["event_id"])
            except (ValueError, KeyError, TypeError):
                continue
        return ids

    def wait_buffered(self, count, timeout=60):
        deadline = time.monotonic() + timeout * SCALE
        while time.monotonic() < deadline:
            ids = self.stored_event_ids()
            if len(ids) >= count:
                return ids
            time.sleep(2)
        raise TimeoutError(f"fewer than {count} events in the offline store after {timeout * SCALE:.0f} s")

    def wait_for_events(self, ids, timeout):
        wanted = set(ids)
        self.watch.wait(lambda: wanted <= {e.get("event_id") for e in self.watch.events()}, timeout,
                        f"all {len(wanted)} events")
        return len(wanted)

    def missing_events(self, ids):
        seen = {e.get("event_id") for e in self.watch.events()}
        return sorted(set(ids) - seen)

    def wait_reboot(self, old_boot, timeout=600):
        deadline = time.monotonic() + timeout * SCALE
        while time.monotonic() < deadline:
            if self.vm.ssh("true", timeout=15)[0] == 0:
                b = self.vm.boot_id()
                if b and b != old_boot:
                    return
            time.sleep(3)
        raise TimeoutError(f"the board did not come back with a new boot within {timeout * SCALE:.0f} s")

    # --- the checks ----------------------------------------------------------------------------

    def run(self):
        a = self.args
        self.vm.start()
        t = self.vm.wait_ssh()
        self.times["first boot to SSH"] = t
        self.check("boot", True, f"{self.vm.out('. /etc/os-release; echo $PRETTY_NAME')}, kernel {self.vm.out('uname -r')}, "
                   f"{self.vm.out('ldd --version | head -1')}: SSH after {t:.0f} s")
        self.watch = Watch(self.vm.mqtt_port, self.device)
        self.watch.wait(lambda: self.watch.client.is_connected(), 60, "connection to the VM's mosquitto")

        def install():
            for deb in (a.deb, a.deb_next):
                self.vm.copy_in(deb, "/root/")
            rc, out = self.vm.ssh(f"apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q ./{os.path.basename(a.deb)}", timeout=1200)
            if rc != 0:
                return False, f"apt install failed ({rc}): {out[-1500:]}"
            deps = self.vm.out("dpkg-query -W -f '${Package} ${Version}\\n' edge-agent libgpiod2 libgpiod3 libyaml-0-2 libc6 2>/dev/null")
            return True, "apt install ./" + os.path.basename(a.deb) + " resolved Depends from the suite: " + "; ".join(deps.splitlines())
        if not self.attempt("install", install):
            return

        def binary():
            rc, version = self.vm.ssh("edge-agent version")
            missing = self.vm.out("ldd /usr/bin/edge-agent | grep 'not found' || true")
            glibc = self.vm.out("ldd --version | head -1")
            return rc == 0 and not missing, f"{version} runs on {glibc}; ldd: {missing or 'every library found'}"
        self.attempt("binary", binary)

        def out_of_the_box():
            # The packaged configuration as it is: started by the package's postinst.
            self.watch.wait(lambda: "online" in [m[2] for m in self.watch.since(0, self.status_topic)], 90, "online")
            info = self.watch.wait(lambda: self.watch.since(0, self.info_topic), 60, "info document")
            doc = json.loads(info[-1][2])
            mark = self.watch.mark()
            self.vm.ssh("printf '{\"type\":\"box_check\",\"n\":1}\\n' | nc -NU /run/edge-agent/events.sock")
            e = self.watch.wait(lambda: [x for x in self.watch.events(mark) if x.get("type") == "box_check"], 30, "the socket event")[0]
            return True, f"online (retained), info version {doc.get('version')} state {doc.get('state')}, socket event seq {e.get('seq')}"
        self.attempt("out of the box", out_of_the_box)

        # The operator's edit: every source, the real LED, commands, a small store.
        config = open(a.config).read().replace("@UPDATE_KEY@", self.update_public_key())
        self.vm.ssh("cat > /etc/edge-agent/config.yaml <<'EOF'\n" + config + "EOF")
        rc, problems = self.vm.ssh("edge-agent check-config /etc/edge-agent/config.yaml >/dev/null")
        if rc != 0:
            self.check("operator config", False, problems)

        def restart():
            mark, log_at = self.watch.mark(), self.broker_log_offset()
            rc, out = self.vm.ssh("systemctl restart edge-agent")
            if rc != 0:
                return False, f"systemctl restart failed: {out}"
            self.watch.wait(lambda: "online" in self.statuses(mark), 60, "online after the restart")
            seen = self.statuses(mark)
            broker = self.broker_log(log_at)
            clean = f"Client {self.device} disconnected" in broker
            lost = re.search(rf"Client {re.escape(self.device)} (closed its connection|has exceeded timeout)|Socket error on client {re.escape(self.device)}", broker)
            ok = seen[:2] == ["offline", "online"] and clean and not lost
            return ok, f"status {seen}; broker: {'clean DISCONNECT, no Will' if clean and not lost else broker[-600:]}"
        self.attempt("restart", restart)

        def credential():
            # The password as the operator gives it: a root-only file that systemd passes to the
            # agent alone (LoadCredential=); before, it was the empty file the package made (no password).
            mark = self.watch.mark()
            self.vm.ssh("install -m 0600 /dev/null /etc/edge-agent/mqtt-password && echo vm-secret-7 > /etc/edge-agent/mqtt-password && "
                        "systemctl restart edge-agent")
            self.watch.wait(lambda: "online" in self.statuses(mark), 60, "online with the password credential")
            journal = self.vm.out("journalctl -u edge-agent -o cat -n 40 | grep 'mqtt.password:' | tail -1")
            pid = self.unit("MainPID")["MainPID"]
            shown = self.vm.out(f"systemctl show edge-agent -p Environment; tr '\\0' '\\n' < /proc/{pid}/environ; "
                                "runuser -u nobody -- cat /etc/edge-agent/mqtt-password 2>&1 || true")
            leaked = "vm-secret-7" in shown
            ok = "from the systemd credential mqtt-password" in journal and not leaked
            return ok, f"{journal}; the secret {'LEAKED into the environment or to other users' if leaked else 'is in neither the environment nor readable by other users'}"
        self.attempt("credential", credential)

        def events():
            mark = self.watch.mark()
            self.vm.ssh("printf '{\"type\":\"box_check\",\"n\":2}\\n' | nc -NU /run/edge-agent/events.sock; "
                        "head -c 4096 /dev/urandom > /srv/snapshots/.snap.part && mv /srv/snapshots/.snap.part /srv/snapshots/snap-1.jpg")
            want = {"simulated", "socket", "directory"}
            got = self.watch.wait(lambda: want <= {e.get("source_type") for e in self.watch.events(mark)} and self.watch.events(mark), 60,
                                  "events from the simulated, socket and directory sources")
            by = {}
            for e in got:
                by.setdefault(e["source_type"], e)
            snap = by["directory"]["data"]
            return True, f"{len(got)} events; simulated {by['simulated']['type']}, socket {by['socket']['type']}, snapshot {snap.get('path')} {snap.get('size')} B"
        self.attempt("events", events)

        def status():
            # The metrics endpoint inside the unit's sandbox, read the way an operator does.
            rc, out = self.vm.ssh("edge-agent status --config /etc/edge-agent/config.yaml")
            rc2, doc = self.vm.ssh("edge-agent status --config /etc/edge-agent/config.yaml --json --interval 0")
            try:
                state = json.loads(doc)["connection"]["state"]
            except (ValueError, KeyError):
                state = None
            return rc == 0 and rc2 == 0 and state == "connected" and "connected to" in out, out.replace("\n", " | ")[:900]
        self.attempt("status", status)

        def led():
            journal = self.vm.out("journalctl -b -u edge-agent -o cat | grep 'status LED' | tail -1")
            line = self.watch.wait(lambda: self.led_line() == ("out", "hi") and self.led_line(), 20, "the LED line out and high")
            return "libgpiod" in journal, f"{journal}; gpiolib: the line is {line[0]} {line[1]} (solid while connected)"
        self.attempt("led", led)

        def config_set():
            answer = self.command("config/set", {"values": {"status.info_interval": 7}})
            text = self.vm.out("grep -n 'info_interval' /etc/edge-agent/config.yaml")
            owner = self.vm.out("stat -c '%U:%G %a' /etc/edge-agent/config.yaml")
            ok = answer.get("status") == "ok" and "7" in text
            return ok, f"answer {json.dumps(answer.get('result') or answer.get('error'))}; file: {text} ({owner})"
        self.attempt("config/set", config_set)

        def kill9():
            before = self.unit("MainPID", "NRestarts")
            mark, log_at = self.watch.mark(), self.broker_log_offset()
            self.vm.ssh(f"kill -9 {before['MainPID']}")
            self.watch.wait(lambda: self.statuses(mark)[:1] == ["offline"], 30, "the Will")
            will_at = time.monotonic()
            self.watch.wait(lambda: "online" in self.statuses(mark), 60, "online after the restart")
            after = self.unit("MainPID", "NRestarts", "ActiveState")
            broker = self.broker_log(log_at)
            unclean = f"Client {self.device} closed its connection" in broker or f"Socket error on client {self.device}" in broker
            ok = unclean and after["MainPID"] != before["MainPID"] and int(after["NRestarts"]) == int(before["NRestarts"]) + 1
            return ok, (f"Will 'offline' from the broker ({'connection lost' if unclean else 'broker log: ' + broker[-300:]}), "
                        f"restarted by systemd (NRestarts {before['NRestarts']} -> {after['NRestarts']}), online "
                        f"{time.monotonic() - will_at:.1f} s after the Will")
        self.attempt("kill -9", kill9)

        def watchdog():
            before = self.unit("MainPID", "NRestarts", "WatchdogUSec")
            limit = int(before["WatchdogUSec"]) / 1e6 if before["WatchdogUSec"].isdigit() else 30
            self.vm.ssh(f"kill -STOP {before['MainPID']}")
            t0 = time.monotonic()
            deadline = t0 + 240 * SCALE
            while time.monotonic() < deadline:
                now = self.unit("MainPID", "ActiveState")
                if now["MainPID"] not in ("0", before["MainPID"]) and now["ActiveState"] == "active":
                    break
                time.sleep(2)
            took = time.monotonic() - t0
            journal = self.vm.out("journalctl -b -u edge-agent -o cat | grep -i 'watchdog timeout' | tail -1")
            ok = "atchdog timeout" in journal and now["MainPID"] != before["MainPID"]
            return ok, f"stopped agent replaced after {took:.0f} s (WatchdogSec {limit:.0f} s, then SIGABRT, RestartSec): {journal}"
        self.attempt("watchdog", watchdog)

        # The reboot command; the board comes back and starts the agent at boot.
        boot0 = self.vm.boot_id()

        def reboot_command():
            mark = self.watch.mark()
            answer = self.command("reboot")
            t0 = time.monotonic()
            if answer.get("status") != "ok":
                return False, f"answer {answer}"
            self.wait_reboot(boot0)
            self.watch.wait(lambda: "online" in self.statuses(mark), 120, "online after the reboot")
            self.times["reboot command to online"] = time.monotonic() - t0
            helper = self.vm.out("journalctl -b -1 -u edge-agent-reboot.service -o cat | grep 'asked for a reboot' | tail -1")
            seen = self.statuses(mark)
            return seen[:2] == ["offline", "online"] and helper != "", (
                f"answer {answer['result']}; helper: {helper}; status {seen}; online {self.times['reboot command to online']:.0f} s after the answer")
        rebooted = self.attempt("reboot command", reboot_command)
        if not rebooted:
            self.vm.ssh("systemctl reboot", timeout=10)
            self.wait_reboot(boot0)

        def at_boot():
            enabled = self.vm.out("systemctl is-enabled edge-agent edge-agent-reboot.path").split()
            state = self.unit("ActiveState", "SubState", "StatusText", "ActiveEnterTimestampMonotonic", "After")
            ready = int(state["ActiveEnterTimestampMonotonic"]) / 1e6
            self.times["kernel start to READY"] = ready
            ok = enabled == ["enabled", "enabled"] and state["ActiveState"] == "active" and "network-online.target" in state["After"]
            return ok, (f"is-enabled {enabled}, {state['ActiveState']}/{state['SubState']} '{state['StatusText']}', "
                        f"READY {ready:.1f} s after the kernel started (Type=notify, After=network-online.target)")
        self.attempt("starts at boot", at_boot)

        # Broker away: the LED blinks, events wait in the store; then the power is cut.
        def led_offline():
            self.vm.ssh("systemctl stop mosquitto")
            values = set()
            deadline = time.monotonic() + 30 * SCALE
            while time.monotonic() < deadline and len(values) < 2:
                line = self.led_line()
                if line:
                    values.add(line[1])
                time.sleep(0.3)
            return values == {"hi", "lo"}, f"the line was {sorted(values)} while the broker was away (offline: blink 1000/1000)"
        self.attempt("led offline", led_offline)

        def power_cut():
            ids = self.wait_buffered(40)
            time.sleep(3)  # beyond the 1 s sync interval: what the dump showed is on the disk now
            self.vm.power_cut()
            self.vm.start()
            self.vm.wait_ssh()
            self.wait_for_events(ids, 180)
            recovery = self.vm.out("journalctl -b -u edge-agent -o cat | grep -i 'offline store' | head -2")
            return True, f"{len(ids)} events synced in the store at the cut, all delivered after the next boot; {recovery}"
        self.attempt("power cut", power_cut)

        def hardening():
            bad = self.vm.out("journalctl -u edge-agent -o cat --no-pager | grep -iE 'permission denied|operation not permitted|"
                              "read-only file system|errno (1|13|30)\\b|EACCES|EPERM|EROFS' | sort | uniq -c | head -20")
            files = self.vm.out("ls /var/lib/edge-agent /var/lib/edge-agent/buffer | tr '\\n' ' '")
            score = self.vm.out("systemd-analyze security edge-agent.service 2>/dev/null | tail -1")
            boots = self.vm.out("journalctl -u edge-agent -F _BOOT_ID | grep -c .")
            return bad == "", (f"no permission errors in the journal of {boots} boots" if not bad else bad) + (
                f" (state dir, offline store, socket source, config/set and the GPIO line exercised above); "
                f"state: {files}; {score}")
        self.attempt("hardening", hardening)

        def upgrade():
            self.vm.ssh("systemctl stop mosquitto")
            ids = self.wait_buffered(10)
            time.sleep(2)
            rc, out = self.vm.ssh(f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q ./{os.path.basename(a.deb_next)}", timeout=600)
            version = self.vm.out("dpkg-query -W -f '${Version}' edge-agent")
            kept = self.vm.out("grep -c -e 'info_interval: 7' -e 'driver: gpiod' /etc/edge-agent/config.yaml")
            active = self.vm.out("systemctl is-active edge-agent")
            self.vm.ssh("systemctl start mosquitto")
            self.wait_for_events(ids, 120)
            ok = rc == 0 and version == a.next_version and kept == "2" and active == "active"
            return ok, (f"{version} installed over the running agent ({active}); the operator's edits kept ({kept} of 2 lines); "
                        f"{len(ids)} events buffered before the upgrade all delivered after it" + ("" if rc == 0 else f"; apt: {out[-800:]}"))
        self.attempt("upgrade", upgrade)

        self.update_checks()

        def remove():
            rc, out = self.vm.ssh("DEBIAN_FRONTEND=noninteractive apt-get remove -y -q edge-agent", timeout=300)
            gone = self.vm.out("test -e /usr/bin/edge-agent && echo present || echo gone")
            kept = self.vm.out("ls /etc/edge-agent/config.yaml /var/lib/edge-agent/buffer/checkpoint.dat 2>&1")
            state = self.vm.out("systemctl is-active edge-agent")
            ok = rc == 0 and gone == "gone" and "No such" not in kept and state != "active"
            return ok, f"binary {gone}, agent {state}; kept: {' '.join(kept.split())}"
        self.attempt("remove", remove)

        def purge():
            rc, out = self.vm.ssh("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q edge-agent", timeout=300)
            left = self.vm.out("ls -d /etc/edge-agent /var/lib/edge-agent 2>/dev/null; getent passwd edge-agent")
            return rc == 0 and left == "", f"configuration, state and user removed" if not left else f"left behind: {left}"
        self.attempt("purge", purge)

    # --- signed updates over MQTT (docs/UPDATES.md) ---------------------------------------------

    def update_public_key(self):
        """The public key of the operator's pair (deploy/vm/run.sh made it with update keygen)."""
        return open(self.args.update_key.replace(".key", ".pub")).read().strip()

    def operator(self, *args, timeout=1200, background=False):
        """The operator's edge-agent send on this machine, through the forwarded MQTT port."""
        path = os.path.join(self.args.work, "operator.yaml")
        with open(path, "w") as f:
            f.write(f"device_id: operator\nmqtt:\n  host: 127.0.0.1\n  port: {self.vm.mqtt_port}\n"
                    "topics:\n  info: devices/{device_id}/info\n")
        command = [self.args.operator, "send", "--config", path, "--device", self.device, "--timeout", "20"] + list(args)
        if background:
            return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        r = subprocess.run(command, capture_output=True, text=True, timeout=timeout * SCALE)
        return r.returncode, (r.stdout + r.stderr).strip()

    def send_update(self, deb, *more, follow=600, background=False):
        return self.operator("agent/update", "--package", deb, "--key", self.args.update_key, "--follow", str(follow), *more,
                             background=background)

    def installed(self):
        return self.vm.out("dpkg-query -W -f '${Version} ${Status}' edge-agent")

    def info(self):
        docs = self.watch.since(0, self.info_topic)
        return json.loads(docs[-1][2]) if docs else {}

    def wait_running(self, version, timeout=240):
        """The agent online with the package `version` installed and in its info document."""
        self.watch.wait(lambda: self.installed() == f"{version} install ok installed" and
                        self.vm.out("systemctl is-active edge-agent") == "active" and
                        self.info().get("package_version", self.info().get("version")) == version and
                        self.info().get("state") == "connected", timeout, f"{version} online")

    def update_last(self):
        return (self.info().get("update") or {}).get("last") or {}

    def have_chunks(self):
        text = self.vm.out("cat /var/lib/edge-agent/update/transfer.json 2>/dev/null")
        try:
            return sum(bin(b).count("1") for b in json.loads(text)["have"])
        except (ValueError, KeyError):
            return 0

    def python_update(self, manifest, data, indexes=None):
        """The chunk protocol by hand (for what the operator's tool never sends): the announcement,
        then the chunks of `data` (all, or `indexes`) whatever the manifest says."""
        answer = self.command("agent/update", manifest)
        if answer.get("status") != "ok":
            return answer
        r = answer["result"]
        size, topic, window = r["chunk_size"], r["chunk_topic"], r["window"]
        wanted = list(range(r["chunks"]) if indexes is None else indexes)
        # At most the agent's window between two announcements (it answers once it wrote them).
        for start in range(0, len(wanted), window):
            for i in wanted[start:start + window]:
                part = data[i * size:(i + 1) * size]
                info = self.watch.client.publish(topic, struct.pack(">I", i) + hashlib.sha256(part).digest() + part, qos=1)
            info.wait_for_publish(60)
            if start + window < len(wanted):
                answer = self.command("agent/update", manifest)
        return answer

    def sign(self, path, version):
        r = subprocess.run([self.args.operator, "update", "sign", "--key", self.args.update_key, "--package", path,
                            "--package-version", version], capture_output=True, text=True, timeout=60)
        return json.loads(r.stdout)

    def pause_helper(self, phase, seconds):
        """A drop-in that makes the helper wait before `phase` (0: removed), so the power can be cut there."""
        d = "/etc/systemd/system/edge-agent-update.service.d"
        if seconds:
            self.vm.ssh(f"mkdir -p {d} && printf '[Service]\\nEnvironment=UPDATE_HELPER_PAUSE_{phase}={seconds}\\n' > {d}/pause.conf && systemctl daemon-reload")
        else:
            self.vm.ssh(f"rm -f {d}/pause.conf && systemctl daemon-reload")

    def wait_helper_log(self, text, timeout=600):
        self.watch.wait(lambda: text in self.vm.out(f"journalctl -b -u edge-agent-update -o cat | grep -F '{text}' | tail -1"),
                        timeout, f"'{text}' in the helper's journal")

    def cut_and_boot(self):
        self.vm.power_cut()
        self.vm.start()
        self.vm.wait_ssh()

    def update_checks(self):
        a = self.args
        before = self.installed().split()[0]
        v2 = self.vm_version(a.update)
        v3 = self.vm_version(a.update_broken)
        v4 = self.vm_version(a.update_last)

        def refused():
            out = []
            stranger = os.path.join(a.work, "stranger")
            if not os.path.exists(stranger + ".key"):
                subprocess.run([a.operator, "update", "keygen", "--out", stranger], capture_output=True, timeout=30)
            rc1, o1 = self.operator("agent/update", "--package", a.update, "--key", stranger + ".key", "--follow", "0")
            out.append(("bad signature", rc1 == 1 and "bad_signature" in o1, o1.splitlines()[-1] if o1 else ""))
            rc2, o2 = self.send_update(a.deb, follow=0)
            out.append(("downgrade", rc2 == 1 and "not_newer" in o2, o2.splitlines()[-1] if o2 else ""))
            # A wrong hash: the signed manifest of one package, the bytes of another of its size.
            blob = os.urandom(300_000)
            blob_path = os.path.join(a.work, "blob.deb")
            open(blob_path, "wb").write(blob)
            manifest = self.sign(blob_path, v4 + "+x")
            other = bytearray(blob)
            other[150_000] ^= 0xFF
            self.python_update(manifest, bytes(other))
            self.watch.wait(lambda: self.update_last().get("sha256") == manifest["sha256"], 120, "the hash mismatch reported")
            last = self.update_last()
            out.append(("wrong hash", last.get("result") == "refused" and "hash_mismatch" in (last.get("reason") or ""), last.get("reason")))
            # A truncated transfer: half the chunks, then nothing.
            manifest = self.sign(blob_path, v4 + "+y")
            answer = self.python_update(manifest, blob, indexes=range(2))
            time.sleep(5)
            state = (self.info().get("update") or {})
            left = self.vm.out("ls /var/lib/edge-agent/update /var/lib/edge-agent-update 2>/dev/null | tr '\\n' ' '")
            out.append(("truncated", state.get("state") == "receiving" and state.get("received_chunks") == 2 and "request.json" not in left,
                        f"{state.get('received_chunks')} of {state.get('chunks')} chunks, state {state.get('state')}; files: {left}"))
            now = self.installed()
            unchanged = now == f"{before} install ok installed"
            return all(ok for _, ok, _ in out) and unchanged, "; ".join(f"{n}: {'refused' if ok else 'NOT refused'} ({d})" for n, ok, d in out) + (
                f"; installed still {now}")
        self.attempt("update refused", refused)

        def download_cut():
            # The first 48 chunks of the package (the manifest the operator's tool also sends),
            # synced every 16; then the power goes.
            manifest = self.sign(a.update, v2)
            self.python_update(manifest, open(a.update, "rb").read(), indexes=range(48))
            self.watch.wait(lambda: self.have_chunks() >= 48, 300, "48 chunks on the board's disk")
            kept = self.have_chunks()
            self.cut_and_boot()
            self.watch.wait(lambda: self.info().get("state") == "connected" and self.installed().startswith(before), 240, "online again")
            resumed = self.vm.out("journalctl -b -u edge-agent -o cat | grep 'resuming the transfer' | tail -1")
            return kept >= 48 and "resuming" in resumed and self.installed() == f"{before} install ok installed", (
                f"power cut with {kept} chunks saved; after the boot {self.installed()} runs; {resumed}")
        cut_ok = self.attempt("update: power cut during download", download_cut)

        def signed_update():
            # The transfer resumes; the broker restarts twice during it (both sides reconnect).
            def restarts():
                for _ in range(2):
                    time.sleep(4)
                    self.vm.ssh("systemctl restart mosquitto", timeout=60)
            t0 = time.monotonic()
            cutter = threading.Thread(target=restarts)
            cutter.start()
            rc, out = self.send_update(a.update)
            cutter.join()
            took = time.monotonic() - t0
            self.wait_running(v2)
            first = next((l for l in out.splitlines() if l.startswith("device has")), "")
            size = os.path.getsize(a.update)
            last = self.update_last()
            ok = rc == 0 and last.get("result") == "installed" and (not cut_ok or not first.startswith("device has 0 "))
            return ok, (f"{before} -> {v2} ({size} B) in {took:.0f} s, through 2 broker restarts; resumed: '{first}'; "
                        f"result {json.dumps(last)}" + ("" if rc == 0 else f"; send: {out[-600:]}"))
        if not self.attempt("update", signed_update):
            return

        def rollback():
            t0 = time.monotonic()
            rc, out = self.send_update(a.update_broken, follow=900)
            self.wait_running(v2)
            last = self.update_last()
            journal = self.vm.out("journalctl -u edge-agent-update -o cat | grep -E 'rolled_back|installing' | tail -2 | tr '\\n' ' '")
            ok = rc == 1 and last.get("result") == "rolled_back" and last.get("version") == v3 and "did not come online" in (last.get("reason") or "")
            return ok, f"{v3} (its binary exits at once) rolled back to {v2} in {time.monotonic() - t0:.0f} s: {last.get('reason')}; helper: {journal}"
        self.attempt("update rollback", rollback)

        def install_cut():
            self.pause_helper("CONFIGURE", 900)
            rc, out = self.send_update(a.update_last, follow=0)
            self.wait_helper_log("before CONFIGURE")
            mid = self.installed()
            self.cut_and_boot()
            self.wait_running(v2)
            self.pause_helper("CONFIGURE", 0)
            last = self.update_last()
            audit = self.vm.out("dpkg --audit")
            ok = "unpacked" in mid and last.get("result") == "rolled_back" and "interrupted" in (last.get("reason") or "") and audit == ""
            return ok, f"cut with edge-agent '{mid}'; after the boot {self.installed()}: {last.get('reason')}; dpkg --audit: {audit or 'clean'}"
        self.attempt("update: power cut during install", install_cut)

        def confirm_cut():
            self.pause_helper("CONFIRM", 900)
            rc, out = self.send_update(a.update_last, follow=0)
            self.wait_helper_log("before CONFIRM")
            mid = self.installed()
            self.cut_and_boot()
            self.wait_running(v4)
            self.pause_helper("CONFIRM", 0)
            self.watch.wait(lambda: self.update_last().get("version") == v4, 180, "the result of the confirmation")
            last = self.update_last()
            return last.get("result") == "installed", f"cut with '{mid}' waiting for its confirmation; after the boot: {json.dumps(last)}"
        self.attempt("update: power cut during confirmation", confirm_cut)

    def vm_version(self, deb):
        return subprocess.run(["dpkg-deb", "-f", deb, "Version"], capture_output=True, text=True).stdout.strip()

    def finish(self):
        if self.watch:
            self.watch.client.loop_stop()
        self.vm.stop()
        times = ", ".join(f"{k} {v:.0f} s" for k, v in self.times.items())
        if times:
            print(f"times: {times}")
        passed = sum(1 for _, ok in self.results if ok)
        print(f"{self.name}: {passed} passed, {len(self.results) - passed} failed", flush=True)
        return len(self.results) - passed


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--name", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--kernel", required=True)
    p.add_argument("--initrd", required=True)
    p.add_argument("--disk", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--deb", required=True)
    p.add_argument("--deb-next", required=True)
    p.add_argument("--next-version", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--update", required=True, help="a newer package, for the signed update")
    p.add_argument("--update-broken", required=True, help="a newer package whose binary cannot start")
    p.add_argument("--update-last", required=True, help="the newest package")
    p.add_argument("--operator", required=True, help="the operator's edge-agent on this machine")
    p.add_argument("--update-key", required=True, help="the operator's private key (its .pub beside it)")
    board = Board(p.parse_args())
    try:
        board.run()
    except Exception as e:
        board.check("run", False, f"{type(e).__name__}: {e}")
    sys.exit(1 if board.finish() else 0)


if __name__ == "__main__":
    main()
