# Shared helpers for the scripts in this folder (sourced, not run).

# Installs the Debian packages the project needs, once; later runs only check.
ensure_packages() {
    local wanted=(mosquitto mosquitto-clients libgpiod-dev libyaml-dev pkg-config python3-paho-mqtt openssl faketime "$@")
    local missing=()
    for p in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing Debian packages: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The Debian package starts a system broker on 1883; the scripts manage their own.
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A TCP port on 127.0.0.1 that nothing listens on (from the kernel's ephemeral range).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# "N passed, M failed" from the output of a Swift Testing run: tests run, less the distinct
# tests that failed (a parameterized test counts once). A run that ended without Swift Testing's
# closing line, or with a failing exit status but no failed test, says so instead of looking green.
test_summary() { # LOG EXIT_STATUS
    local total failed
    total=$( (grep -aoE "Test run with [0-9]+ test" "$1" || true) | grep -oE "[0-9]+" | tail -1)
    failed=$( (grep -aE "✘ Test \"" "$1" || true) | (grep -avE "recorded an issue" || true) | sed -E 's/ with [0-9]+ test cases? failed.*| failed after.*//' | sort -u | wc -l)
    if [ -z "$total" ]; then
        echo "0 passed, 1 failed (the run ended with status ${2:-?} before Swift Testing reported a result)"
    elif [ "$failed" -eq 0 ] && [ "${2:-0}" -ne 0 ]; then
        echo "$total passed, 1 failed (every test passed, but the run ended with status $2)"
    else
        echo "$((total - failed)) passed, $failed failed"
    fi
}
