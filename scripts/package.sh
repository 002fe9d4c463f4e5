#!/usr/bin/env bash
# Builds the pinpost .deb packages, each from the release binary that
# scripts/cross-build.sh makes with Debian's rustc (so the package and the
# emulated tests ship the same binary):
#
#   scripts/package.sh                                 # arm64, armhf and amd64
#   scripts/package.sh aarch64-unknown-linux-gnu       # one of them
#
# The packages land in target/debian/ as pinpost_<version>_<arch>.deb, and
# their paths are printed one per line. On the Pi: sudo apt install ./pinpost_*.deb
# Needs cargo-deb; installs the pinned version when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
OUT=target/debian

die() { echo "package: $*" >&2; exit 1; }

targets=("$@")
((${#targets[@]})) || targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf x86_64-unknown-linux-gnu)

if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
  echo "package: installing cargo-deb $CARGO_DEB_VERSION" >&2
  cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION" ||
    die "could not install cargo-deb $CARGO_DEB_VERSION (cargo install cargo-deb)"
fi

mkdir -p "$OUT"
for target in "${targets[@]}"; do
  scripts/cross-build.sh "$target" >/dev/null
  # cargo-deb finds target/debian-rustc/<target>/release/pinpost through the
  # target dir; the binary is already stripped by the release profile.
  deb=$(CARGO_TARGET_DIR=target/debian-rustc cargo deb --no-build --no-strip --quiet \
    --target "$target" --output "$OUT")
  [ -f "$deb" ] || die "cargo deb did not report a package for $target (it said: $deb)"
  echo "$deb"
done
