#!/usr/bin/env bash
# The dependency gate: fails if any crate in Cargo.lock has a RustSec
# advisory (a vulnerability, or an unmaintained or unsound crate) that
# .cargo/audit.toml does not list with its reason. scripts/test.sh runs it.
#
# The advisory database, in this order:
#   $PINPOST_ADVISORY_DB            a RustSec advisory-db folder (git or not)
#   ../shared/advisory-db           beside the repository, when it exists
#   otherwise                       fetched by cargo-audit (~/.cargo/advisory-db)
# A given folder is copied first and read offline, so a read-only one is
# never written to.
set -euo pipefail
cd "$(dirname "$0")/.."

# The version the gate was written against; one already installed is reused.
# It needs Rust 1.88 to build (the machine's rustup toolchain, not the 1.85
# MSRV), and crates.io.
version=0.22.2
if ! cargo audit --version >/dev/null 2>&1; then
  echo "scripts/audit.sh: installing cargo-audit $version"
  cargo install --locked cargo-audit --version "$version"
fi

db="${PINPOST_ADVISORY_DB:-}"
if [ -z "$db" ] && [ -d ../shared/advisory-db ]; then
  db=../shared/advisory-db
fi

args=(audit --deny unmaintained --deny unsound)
if [ -n "$db" ]; then
  if [ ! -d "$db/crates" ]; then
    echo "scripts/audit.sh: $db is not a RustSec advisory database (no crates/ folder)" >&2
    exit 1
  fi
  copy="$(mktemp -d)"
  trap 'rm -rf "$copy"' EXIT
  cp -R "$db/." "$copy/"
  chmod -R u+w "$copy"
  if [ -f "$db/SNAPSHOT.txt" ]; then
    date="$(head -n 1 "$db/SNAPSHOT.txt")"
  elif git -C "$db" rev-parse --git-dir >/dev/null 2>&1; then
    date="commit $(git -C "$db" log -1 --format='%h of %cd')"
  else
    date="the newest advisory is dated $(grep -rhoE '^date = "[0-9-]+"' "$db/crates" | sort | tail -n 1 | cut -d'"' -f2)"
  fi
  echo "scripts/audit.sh: advisory database $db, read offline ($date)"
  args+=(--no-fetch --db "$copy")
else
  echo "scripts/audit.sh: no local advisory database; cargo-audit fetches the current one"
fi
echo "scripts/audit.sh: cargo-audit $(cargo audit --version | awk '{print $NF}')"
echo "scripts/audit.sh: exceptions with their reasons in .cargo/audit.toml:" \
  "$(grep -oE '^ *"RUSTSEC-[0-9]+-[0-9]+"' .cargo/audit.toml | tr -d ' "' | paste -sd ' ' -)"
status=0
cargo "${args[@]}" || status=$?
if [ -z "$db" ]; then
  fetched="$HOME/.cargo/advisory-db"
  if git -C "$fetched" rev-parse --git-dir >/dev/null 2>&1; then
    echo "scripts/audit.sh: used $fetched at commit $(git -C "$fetched" log -1 --format='%h of %cd')"
  fi
fi
if [ "$status" -ne 0 ]; then
  echo "scripts/audit.sh: a RustSec advisory above applies to a crate in Cargo.lock." \
    "Move off it (cargo update -p CRATE, or drop what brings it in); only if it cannot" \
    "apply to what pinpost ships, add its id to .cargo/audit.toml with the reason why." >&2
  exit 1
fi
echo "scripts/audit.sh: no advisory without a written exception"
