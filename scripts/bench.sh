#!/usr/bin/env bash
# Runs every benchmark in one go and prints a table of figures and ratios
# (see BENCHMARKS.md): pinpost beside mosquitto_pub on one Mosquitto with
# mutual TLS, its footprint beside mqtt-io's, the Pi binaries' sizes, a
# fleet's reconnect storm, the agent on a slow disk, and pulse counters on
# the sim board's meter. Installs Mosquitto,
# its clients, strace and Python's venv if missing (Debian, as root) and
# mqtt-io from PyPI into target/bench; builds the Pi binaries with
# scripts/cross-build.sh. Arguments name the figures to run (edge, command,
# throughput, one-shot, footprint, fleet, slow-disk, counting).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v stdbuf >/dev/null 2>&1 || missing+=(coreutils)
# The slow-disk figure delays the agent's fsyncs with strace's inject.
command -v strace >/dev/null 2>&1 || missing+=(strace)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3 python3-venv)
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/bench.sh: missing ${missing[*]}; run as root, or first: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  apt-get update || echo "scripts/bench.sh: apt-get update reported errors; installing anyway" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
# mqtt-io, the Python tool the footprint is measured beside, in its own venv.
MQTT_IO=target/bench/mqtt-io
if ! "$MQTT_IO/bin/python" -c 'import mqtt_io' >/dev/null 2>&1; then
  rm -rf "$MQTT_IO"
  python3 -m venv "$MQTT_IO"
  "$MQTT_IO/bin/pip" install --quiet --disable-pip-version-check mqtt-io==2.7.0 ||
    { echo "scripts/bench.sh: could not install mqtt-io 2.7.0 from PyPI (see above)" >&2; exit 1; }
fi
# The Pi binaries' sizes are reported as the sources are now: a no-op when
# scripts/test.sh has just built them, minutes when the code changed.
for target in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
  scripts/cross-build.sh "$target" >/dev/null
done
# A fleet of 1000 links needs more than the usual 1024 open files.
ulimit -n 8192 2>/dev/null || true
# Without the demo's broker, as the packages are built: the bench's own
# pinpost binary is then the one whose size it reports for this machine.
cargo bench --no-default-features --bench compare -- "$@"
