#!/usr/bin/env bash
# Builds the release binary for a Raspberry Pi target without Docker, with
# Debian's rustc-web 1.85 (pinpost's MSRV) and its arm standard libraries,
# Debian's cross gcc, and qemu-user-static to run the result here.
#
#   scripts/cross-build.sh aarch64-unknown-linux-gnu      # Pi 3/4/5, Zero 2 W, 64-bit OS
#   scripts/cross-build.sh armv7-unknown-linux-gnueabihf  # Pi 2/3/4, 32-bit OS
#   scripts/cross-build.sh x86_64-unknown-linux-gnu       # this PC, same compiler
#   scripts/cross-build.sh --setup-only                   # install the toolchain, build nothing
#
# Prints the binary's path last. Safe to run again: it installs only what is
# missing. Needs Debian 12 (bookworm) and root for the installs; without
# root it says what is missing and stops. Pi Zero / Pi 1 (ARMv6) need
# `cross build --target arm-unknown-linux-gnueabihf` (Debian's armhf is ARMv7).
set -euo pipefail
cd "$(dirname "$0")/.."

RUST_VERSION=1.85
SYSROOT_RUSTC=/usr/bin/rustc
TARGET_DIR=target/debian-rustc

die() { echo "cross-build: $*" >&2; exit 1; }

usage() {
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

case "${1:-}" in
  aarch64-unknown-linux-gnu) arch=arm64 gnu=aarch64-linux-gnu qemu=qemu-aarch64-static ;;
  armv7-unknown-linux-gnueabihf) arch=armhf gnu=arm-linux-gnueabihf qemu=qemu-arm-static ;;
  # The host, with the same compiler, for the amd64 package.
  x86_64-unknown-linux-gnu) arch=amd64 gnu=x86_64-linux-gnu qemu="" ;;
  --setup-only) arch="" ;;
  *) usage ;;
esac
target="${1:-}"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  else
    die "needs root to run: $*  (run this script as root, or run that command with sudo first)"
  fi
}

apt_updated=""
apt_update() {
  [ -n "$apt_updated" ] && return 0
  # One architecture's index failing (a mirror mid-sync) must not stop us;
  # the candidates are checked below.
  as_root apt-get update -qq || echo "cross-build: apt-get update reported errors; going on" >&2
  apt_updated=1
}

apt_install() {
  apt_update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# 1. Foreign architectures, so apt knows the arm packages.
for a in arm64 armhf; do
  if ! dpkg --print-foreign-architectures | grep -qx "$a"; then
    as_root dpkg --add-architecture "$a"
    apt_updated=""
  fi
done

# 2. Debian's rustc at the MSRV, the same version as the arm standard libraries.
version_of() { # newest 1.85 version apt offers for package $1
  apt-cache madison "$1" 2>/dev/null | awk -v v="$RUST_VERSION" '$3 ~ "^"v"\\." {print $3; exit}'
}
if ! "$SYSROOT_RUSTC" --version 2>/dev/null | grep -q "^rustc $RUST_VERSION\."; then
  apt_update
  ver=$(version_of rustc-web)
  [ -n "$ver" ] || die "apt offers no rustc-web $RUST_VERSION (Debian 12 bookworm has 1.85.0+dfsg3-1~deb12u3)"
  apt_install "rustc-web=$ver" "libstd-rust-web-dev=$ver" "libstd-rust-web-1.85=$ver"
fi
rust_ver=$(dpkg-query -W -f '${Version}' rustc-web)

# 3. The standard library for each arm target, unpacked into that sysroot.
rustlib=$("$SYSROOT_RUSTC" --print sysroot)/lib/rustlib
for pair in arm64:aarch64-unknown-linux-gnu armhf:armv7-unknown-linux-gnueabihf; do
  a=${pair%%:*} t=${pair#*:}
  [ -d "$rustlib/$t/lib" ] && continue
  apt_update
  work=$(mktemp -d)
  (cd "$work" && apt-get download "libstd-rust-web-dev:$a=$rust_ver") ||
    die "cannot download libstd-rust-web-dev:$a=$rust_ver; check 'apt-cache madison libstd-rust-web-dev:$a'"
  dpkg-deb -x "$work"/libstd-rust-web-dev_*_"$a".deb "$work/root"
  [ -d "$work/root/usr/lib/rustlib/$t" ] || die "libstd-rust-web-dev:$a has no usr/lib/rustlib/$t"
  as_root cp -a "$work/root/usr/lib/rustlib/$t" "$rustlib/"
  rm -rf "$work"
done

# 4. Cross linkers and C compilers (ring builds C), and qemu to run the result.
need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v arm-linux-gnueabihf-gcc >/dev/null || need+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
((${#need[@]} == 0)) || apt_install "${need[@]}"

[ -n "$arch" ] || { echo "cross-build: toolchain ready (rustc-web $rust_ver)"; exit 0; }

# 5. Build. A separate target dir keeps rustup's host builds apart from
# Debian's rustc (cargo would rebuild each time the compiler changes).
export RUSTC="$SYSROOT_RUSTC"
# Run from inside cargo (a test, say), the variables cargo sets for its own
# crate leak in; ring's build script watches CARGO_MANIFEST_DIR, so they
# would make every build from scratch.
while read -r name; do unset "$name"; done < <(compgen -e | grep -E '^CARGO_(PKG_|MANIFEST_|CRATE_|PRIMARY_|BIN_|TARGET_TMPDIR)' || true)
if [ -n "$qemu" ]; then
  export "CC_${target//-/_}=$gnu-gcc"
  export "AR_${target//-/_}=$gnu-ar"
fi
# --no-default-features: the demo's built-in broker (~1.8 MiB) stays on laptops.
cargo build --release --locked --no-default-features --target "$target" --target-dir "$TARGET_DIR" >&2
bin="$TARGET_DIR/$target/release/pinpost"
[ -x "$bin" ] || die "the build did not produce $bin"
# A quick check that it runs (under emulation for arm).
if [ -n "$qemu" ]; then
  "$qemu" -L "/usr/$gnu" "$bin" --version >&2 || die "$bin does not run under $qemu"
else
  "$bin" --version >&2 || die "$bin does not run"
fi
echo "$bin"
