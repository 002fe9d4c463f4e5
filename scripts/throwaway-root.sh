#!/usr/bin/env bash
# Makes target/rootfs/bookworm.tar: a minimal Debian 12 root (debootstrap
# --variant=minbase, plus init-system-helpers, which the package's scripts
# call to enable the unit), the stand-in for a Pi's root filesystem in
# tests/integration/package.rs. Each test unpacks its own copy and chroots into it.
# Prints the tarball's path. Safe to run again: an existing tarball is kept.
# Needs root (debootstrap, chroot) and Debian's package mirror.
set -euo pipefail
cd "$(dirname "$0")/.."

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
OUT=target/rootfs/bookworm.tar

die() { echo "throwaway-root: $*" >&2; exit 1; }

if [ -s "$OUT" ]; then
  echo "$OUT"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || die "needs root for debootstrap and chroot; run as root"
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq || echo "throwaway-root: apt-get update reported errors; going on" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap ||
    die "cannot install debootstrap"
fi
mkdir -p target/rootfs
work=$(mktemp -d target/rootfs/work.XXXXXX)
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase --include=init-system-helpers bookworm "$work/root" "$MIRROR" \
  >"$work/log" 2>&1 || die "debootstrap failed; its log: $(tail -5 "$work/log")"
tar -C "$work/root" -cf "$OUT.new" .
mv "$OUT.new" "$OUT"
echo "$OUT"
