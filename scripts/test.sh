#!/usr/bin/env bash
# Runs every pinpost test: formatting, lints, unit tests and the integration
# tests against real Mosquitto brokers. Installs what the tests need first
# (Debian/Ubuntu, as root), so it works on a fresh machine with only Rust.
set -euo pipefail
cd "$(dirname "$0")/.."

# tool -> Debian package that provides it
declare -A needs=(
  [mosquitto]=mosquitto
  [mosquitto_sub]=mosquitto-clients
  [mosquitto_passwd]=mosquitto
  [openssl]=openssl
  [ip]=iproute2
  [stdbuf]=coreutils
  [systemd-analyze]=systemd
  [strace]=strace
  [shellcheck]=shellcheck
  [debootstrap]=debootstrap
  [dpkg-deb]=dpkg
  [faketime]=faketime
)
missing=()
for tool in "${!needs[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${needs[$tool]}")
done
if ((${#missing[@]})); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: missing ${missing[*]}; run as root, or first: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "scripts/test.sh: installing ${missing[*]}"
  # One architecture's index failing must not stop the install.
  apt-get update || echo "scripts/test.sh: apt-get update reported errors; installing anyway" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: the DNS test makes a network namespace and needs root" >&2
fi

cargo fmt --check
cargo clippy --all-targets -- -D warnings
# Pi builds leave the demo's broker out: they must build (and lint) too.
cargo clippy --no-default-features --all-targets -- -D warnings
# No RustSec advisory in Cargo.lock without a written exception
# (.cargo/audit.toml); installs cargo-audit when missing and reads
# ../shared/advisory-db offline when it is there (scripts/audit.sh says how).
scripts/audit.sh
# The release binaries for the Pi (run under qemu by tests/integration/arm.rs) and this
# PC, and their .deb packages; a Debian root to install them into
# (tests/integration/package.rs).
scripts/package.sh >/dev/null
scripts/throwaway-root.sh >/dev/null
# The arm64 package on Debian 12 booted under qemu-system-aarch64 with
# systemd: the unit, its hardening and watchdog, power cuts, upgrade and
# purge (README, "Development"). Builds its image once into target/vm/.
scripts/vm-test.sh
# pinpost's own arm64 and armv7 binaries on an emulated Raspberry Pi 3 and 2
# (QEMU raspi3b/raspi2b, Debian's kernels; QEMU 10 from bookworm-backports
# for I2C): GPIO, the agent, PWM, a BME280, an MCP23017 expander (an EEPROM
# standing in for its registers) and `sensors --scan`, with pin
# levels read by QEMU's monitor, and the errors a Debian Pi shows (issues
# 27 and 31). Reuses target/vm's root; caches the rest in target/pi-emu/.
scripts/pi-emu.sh
# A real kernel edge event through the character device, which QEMU's Pi
# GPIO cannot give: QEMU virt's PL061, whose line 3 QEMU pulses on
# system_powerdown, watched by pinpost (gpio watch, run, a held line).
scripts/pi-emu/virt-edges.sh
# Home Assistant 2024.3.3 and 2025.4.4 from PyPI, for tests/integration/homeassistant.rs
# (kept in target/homeassistant/; fails saying which Python to install).
scripts/homeassistant.sh
# RabbitMQ 3.10 (Debian's rabbitmq-server, its MQTT plugin) for
# tests/integration/rabbitmq.rs, which starts a 3-node cluster of its own;
# the package's own service is stopped and disabled when installed here.
scripts/rabbitmq.sh
cargo test
# The README's first command, exactly as a newcomer runs it (timed here).
cargo run --release -- demo --duration 10s
