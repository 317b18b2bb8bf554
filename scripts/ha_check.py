"""What scripts/ha-check runs once Home Assistant is installed: see that script. Standard library only."""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import atexit
import uuid

venv, version = sys.argv[1], sys.argv[2]
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
agent_bin = os.path.join(repo, ".build", "debug", "edge-agent")
work = tempfile.mkdtemp(prefix="edge-agent-ha-")
results = []
children = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(("PASS " if ok else "FAIL ") + name + (f": {detail}" if detail else ""), flush=True)
    return ok


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(what, timeout, condition, every=0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = condition()
            if value:
                return value
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(every)
    return None


def start(args, log, env=None):
    p = subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
    children.append(p)
    return p


def stop_children():
    for p in children:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


atexit.register(stop_children)  # also when a check raises: nothing is left running


def finish():
    stop_children()
    passed = sum(results)
    print(f"work folder: {work}")
    print(f"{passed} passed, {len(results) - passed} failed")
    sys.exit(0 if results and all(results) else 1)


mqtt_port, ha_port = free_port(), free_port()
base = f"http://127.0.0.1:{ha_port}"
with open(f"{work}/mosquitto.conf", "w") as f:
    f.write(f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\n")
start(["mosquitto", "-c", f"{work}/mosquitto.conf"], f"{work}/mosquitto.log")

# Home Assistant, as small as it gets: the REST API and what MQTT needs.
os.makedirs(f"{work}/ha")
with open(f"{work}/ha/configuration.yaml", "w") as f:
    f.write(
        f"""homeassistant:
  name: edge-agent check
  latitude: 52.5
  longitude: 13.4
  elevation: 30
  unit_system: metric
  time_zone: UTC
  country: DE
http:
  server_host: 127.0.0.1
  server_port: {ha_port}
api:
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: debug
"""
    )
start([f"{venv}/bin/hass", "-c", f"{work}/ha"], f"{work}/hass.log")


def call(method, path, body=None, token=None, form=False):
    data = None
    headers = {}
    if body is not None:
        if form:
            data = urllib.parse.urlencode(body).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read().decode()
        return json.loads(text) if text else None


started = wait_for("Home Assistant's API", 600, lambda: call("GET", "/api/onboarding") is not None, every=2)
if not check(f"Home Assistant {version} started", started is not None, f"log {work}/hass.log"):
    finish()
client_id = base + "/"
code = call(
    "POST", "/api/onboarding/users",
    {"client_id": client_id, "name": "check", "username": "check", "password": "check-password-1", "language": "en"},
)["auth_code"]
token = call("POST", "/auth/token", {"grant_type": "authorization_code", "code": code, "client_id": client_id}, form=True)["access_token"]

# The MQTT integration on the private broker, through its config flow.
flow = call("POST", "/api/config/config_entries/flow", {"handler": "mqtt", "show_advanced_options": False}, token)
for _ in range(6):
    if flow.get("type") == "create_entry" or flow.get("type") == "abort":
        break
    if flow.get("type") == "menu":
        answer = {"next_step_id": "broker" if "broker" in flow.get("menu_options", []) else flow["menu_options"][0]}
    else:
        fields = {f["name"] for f in flow.get("data_schema", [])}
        answer = {k: v for k, v in {"broker": "127.0.0.1", "port": mqtt_port}.items() if k in fields}
    flow = call("POST", f"/api/config/config_entries/flow/{flow['flow_id']}", answer, token)
if not check("the MQTT integration on the test broker", flow.get("type") == "create_entry", json.dumps(flow)[:300]):
    finish()

# The agent: simulated camera, a socket source, the simulated LED, Home Assistant on.
device = "ha-check-" + uuid.uuid4().hex[:6]
slug = device.replace("-", "_")
led_log = f"{work}/led.log"
with open(f"{work}/agent.yaml", "w") as f:
    f.write(
        f"""device_id: {device}
mqtt:
  host: 127.0.0.1
  port: {mqtt_port}
  keepalive: 5
  reconnect_initial_delay: 0.2
  reconnect_max_delay: 1
topics:
  status: devices/{{device_id}}/status
  info: devices/{{device_id}}/info
  events: devices/{{device_id}}/events
status:
  info_interval: 2
offline_store:
  directory: {work}/buffer
  capacity_mb: 2
led:
  driver: simulated
  simulated_log: {led_log}
sources:
  - type: simulated
    name: cam0
    rate: 0.2
  - type: socket
    name: pipeline
    path: {work}/events.sock
    event_types: [seen]
  - type: directory
    name: snaps
    path: {work}/snapshots
state_dir: {work}/state
home_assistant:
  enabled: true
  republish_delay: 1
"""
    )
os.makedirs(f"{work}/snapshots")
agent = start([agent_bin, "run", "--config", f"{work}/agent.yaml"], f"{work}/agent.log")


def states():
    return {s["entity_id"]: s for s in call("GET", "/api/states", token=token)}


expected = [
    f"binary_sensor.{slug}_connectivity", f"event.{slug}_cam0_events", f"event.{slug}_pipeline_events",
    f"sensor.{slug}_uptime", f"sensor.{slug}_buffered_messages", f"sensor.{slug}_cam0_source", f"button.{slug}_identify",
    f"image.{slug}_snapshot",
]
found = wait_for("the entities", 60, lambda: all(e in states() for e in expected) and states())
mine = sorted(e for e in (found or states()) if slug in e)
check("the device's entities exist", found is not None, ", ".join(mine) if found else f"missing {[e for e in expected if e not in states()]}; have {mine}")
check("connectivity on", wait_for("on", 20, lambda: states()[f"binary_sensor.{slug}_connectivity"]["state"] == "on"))
check(
    "sensors from the info document",
    wait_for("uptime", 20, lambda: states()[f"sensor.{slug}_uptime"]["state"].replace(".", "").isdigit()),
    f"uptime {states().get(f'sensor.{slug}_uptime', {}).get('state')}",
)

# An event on the socket shows up in the pipeline's event entity, with its type.
def write_socket(line):
    s = socket.socket(socket.AF_UNIX)
    s.connect(f"{work}/events.sock")
    s.sendall((line + "\n").encode())
    s.close()

before = states()[f"event.{slug}_pipeline_events"]["state"]
write_socket('{"type": "seen", "what": "a fox"}')
event = wait_for(
    "the event", 20,
    lambda: (s := states()[f"event.{slug}_pipeline_events"])["state"] != before and s["attributes"].get("event_type") == "seen" and s,
)
check("an event reaches the event entity", event, json.dumps(event["attributes"])[:200] if event else "")

# A snapshot in the folder: the image entity shows it, the same bytes.
jpeg = bytes([0xFF, 0xD8, 0xFF, 0xE0]) + bytes(i % 251 for i in range(3000))
with open(f"{work}/snapshots/cam-1.jpg", "wb") as f:
    f.write(jpeg)


def image_bytes():
    req = urllib.request.Request(f"{base}/api/image_proxy/image.{slug}_snapshot", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read(), r.headers.get("Content-Type")


shown = wait_for("the image", 20, lambda: image_bytes()[0] == jpeg and image_bytes())
check("the snapshot image reaches the image entity", shown, f"{len(shown[0])} bytes, {shown[1]}" if shown else "")

# The identify button blinks the LED (150/150 ms).
def led_transitions():
    with open(led_log) as f:
        return [int(line.split()[0]) for line in f if line.strip()]

mark = len(led_transitions())
call("POST", "/api/services/button/press", {"entity_id": f"button.{slug}_identify"}, token)
blinking = wait_for("the LED", 10, lambda: len(led_transitions()) >= mark + 6)
gaps = [b - a for a, b in zip(led_transitions()[mark:], led_transitions()[mark + 1:])]
check("the identify button blinks the LED", blinking and all(100 <= g <= 300 for g in gaps[1:6]), f"gaps {gaps[:6]} ms")

# SIGKILL: the broker publishes the Will; the entities become unavailable, connectivity off.
agent.send_signal(signal.SIGKILL)
agent.wait()
gone = wait_for(
    "unavailable", 30,
    lambda: states()[f"binary_sensor.{slug}_connectivity"]["state"] == "off" and states()[f"sensor.{slug}_uptime"]["state"] == "unavailable",
)
check("availability follows the agent (SIGKILL: unavailable, connectivity off)", gone)

# Back again, then `edge-agent ha remove`: Home Assistant drops the entities.
agent = start([agent_bin, "run", "--config", f"{work}/agent.yaml"], f"{work}/agent2.log")
check("available again after a restart", wait_for("on", 30, lambda: states()[f"sensor.{slug}_uptime"]["state"] != "unavailable"))
agent.terminate()
agent.wait()
out = subprocess.run([agent_bin, "ha", "remove", "--config", f"{work}/agent.yaml"], capture_output=True, text=True)
removed = wait_for("removed", 30, lambda: not any(slug in e for e in states()) or None)
check("ha remove takes the device out of Home Assistant", out.returncode == 0 and removed, out.stdout.strip() or out.stderr.strip())
finish()
