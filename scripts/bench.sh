#!/usr/bin/env bash
# Runs every benchmark in one go and prints a table of figures and ratios
# (see BENCHMARKS.md): pinpost beside mosquitto_pub on one Mosquitto with
# mutual TLS, its footprint, the Pi binaries' sizes, and a fleet's
# reconnect storm. Installs Mosquitto and its clients if missing (Debian,
# as root); builds the Pi binaries with scripts/cross-build.sh if absent.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v stdbuf >/dev/null 2>&1 || missing+=(coreutils)
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/bench.sh: missing ${missing[*]}; run as root, or first: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  apt-get update || echo "scripts/bench.sh: apt-get update reported errors; installing anyway" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
# The sizes reported are of the binaries as the sources are now: a no-op
# when scripts/test.sh has just built them, minutes when the code changed.
for target in x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
  scripts/cross-build.sh "$target" >/dev/null
done
# A fleet of 1000 links needs more than the usual 1024 open files.
ulimit -n 8192 2>/dev/null || true
cargo bench --bench compare
