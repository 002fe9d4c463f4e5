#!/usr/bin/env bash
# Installs the two Home Assistant versions tests/integration/homeassistant.rs runs
# against, from PyPI, into venvs under target/homeassistant/ (kept between
# runs: a venv that already holds the right version is left alone):
#   - HA 2024.3.3 on Python 3.11 (per-entity discovery), `josepy<2` pinned:
#     otherwise every HTTP request fails with "module 'josepy' has no
#     attribute 'ComparableX509'";
#   - HA 2025.4.4 on pyenv's Python 3.13 (device-based discovery), with HA's
#     own constraints file (inside its wheel): without it pip builds
#     packages from source for many minutes.
# HA runs with --skip-pip in the tests, so the requirements of the
# integrations they use (mqtt, api) are installed here, and those of the
# frontend and what it depends on: without the frontend HA starts in
# recovery mode, which loads no MQTT.
# A missing Python is an error saying what to install, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
root=target/homeassistant
mkdir -p "$root"

pyenv_root=$( (command -v pyenv >/dev/null && pyenv root) || echo "$HOME/.pyenv")
# find_python <version> <candidates...>: the first that is that version and
# can make a venv (Debian splits venv and ensurepip off into python3-venv).
find_python() {
  local want=$1 c
  shift
  for c in "$@"; do
    if [ -x "$c" ] || command -v "$c" >/dev/null 2>&1; then
      if "$c" -c "import sys, venv, ensurepip; sys.exit(0 if '%d.%d' % sys.version_info[:2] == '$want' else 1)" 2>/dev/null; then
        command -v "$c" 2>/dev/null || echo "$c"
        return 0
      fi
    fi
  done
  return 1
}
# A Python named in the environment must be the right one; otherwise the
# usual places are searched.
py311_candidates=(python3.11 "$pyenv_root"/versions/3.11*/bin/python3 python3)
py313_candidates=("$pyenv_root"/versions/3.13*/bin/python3 python3.13)
[ -n "${PINPOST_HA_PYTHON_2024:-}" ] && py311_candidates=("$PINPOST_HA_PYTHON_2024")
[ -n "${PINPOST_HA_PYTHON_2025:-}" ] && py313_candidates=("$PINPOST_HA_PYTHON_2025")
py311=$(find_python 3.11 "${py311_candidates[@]}") || {
  echo "scripts/homeassistant.sh: Home Assistant 2024.3.3 needs Python 3.11 with venv, and none was found" >&2
  echo "  (looked at: ${py311_candidates[*]})." >&2
  echo "  Install it (Debian 12: sudo apt-get install python3 python3-venv; or: pyenv install 3.11)," >&2
  echo "  or name one with PINPOST_HA_PYTHON_2024=/path/to/python3.11." >&2
  exit 1
}
py313=$(find_python 3.13 "${py313_candidates[@]}") || {
  echo "scripts/homeassistant.sh: Home Assistant 2025.4.4 needs Python 3.13 with venv, and none was found" >&2
  echo "  (looked at: ${py313_candidates[*]})." >&2
  echo "  Install it with pyenv: pyenv install 3.13.0 (it goes to $pyenv_root/versions/3.13.0)," >&2
  echo "  or name one with PINPOST_HA_PYTHON_2025=/path/to/python3.13." >&2
  exit 1
}

# install <version> <python> [extra pip args...]
install() {
  local version=$1 python=$2
  shift 2
  local venv=$root/ha-$version
  local stamp=$venv/.pinpost-installed
  # Bump the recipe when what is installed changes: old venvs are redone.
  local recipe="$version recipe 3"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$recipe" ] &&
    "$venv/bin/python" -c "import sys, homeassistant.const as c; sys.exit(0 if c.__version__ == '$version' else 1)" 2>/dev/null; then
    echo "scripts/homeassistant.sh: Home Assistant $version already in $venv"
    return 0
  fi
  local started=$SECONDS
  echo "scripts/homeassistant.sh: installing Home Assistant $version into $venv with $python"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  local pip=("$venv/bin/python" -m pip --disable-pip-version-check --quiet)
  "${pip[@]}" install --upgrade pip wheel
  "${pip[@]}" install "$@" "homeassistant==$version"
  # The integrations the tests load and everything they depend on; HA
  # itself would pip-install these at run time, which --skip-pip turns off.
  local reqs
  reqs=$("$venv/bin/python" - <<'PY'
import json, pathlib, homeassistant
base = pathlib.Path(homeassistant.__file__).parent / "components"
todo, seen, reqs = ["mqtt", "api", "frontend", "hardware", "recorder"], set(), set()
while todo:
    domain = todo.pop()
    if domain in seen:
        continue
    seen.add(domain)
    manifest = json.loads((base / domain / "manifest.json").read_text())
    reqs.update(manifest.get("requirements", []))
    todo.extend(manifest.get("dependencies", []))
print("\n".join(sorted(reqs)))
PY
)
  if [ -n "$reqs" ]; then
    # shellcheck disable=SC2086
    "${pip[@]}" install "$@" $reqs
  fi
  echo "$recipe" >"$stamp"
  echo "scripts/homeassistant.sh: Home Assistant $version installed in $((SECONDS - started)) s"
}

install 2024.3.3 "$py311" "josepy<2"

constraints=$root/constraints-2025.4.4.txt
if [ ! -s "$constraints" ]; then
  dl=$root/download-2025.4.4
  rm -rf "$dl"
  "$py313" -m pip --disable-pip-version-check --quiet download --no-deps --dest "$dl" homeassistant==2025.4.4
  "$py313" - "$dl" "$constraints.tmp" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/homeassistant-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    data = z.read("homeassistant/package_constraints.txt")
open(sys.argv[2], "wb").write(data)
PY
  mv "$constraints.tmp" "$constraints"
  rm -rf "$dl"
fi
install 2025.4.4 "$py313" -c "$constraints"
