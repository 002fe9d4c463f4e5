#!/usr/bin/env bash
# Builds pinpost for a Raspberry Pi, copies it there over ssh, installs it as
# a systemd service (deploy/install.sh) and shows the service's status.
# Run on the laptop, from anywhere in the repository:
#
#   deploy/push.sh pi@raspberrypi.local                # target asked of the Pi
#   deploy/push.sh pi@10.0.0.7 armv7-unknown-linux-gnueabihf
#   deploy/push.sh pi@10.0.0.7 --config pi-07.toml --certs certs/devices/pi-07
#
# TARGET is aarch64-unknown-linux-gnu (64-bit OS), armv7-unknown-linux-gnueabihf
# (32-bit OS, Pi 2 and newer) or arm-unknown-linux-gnueabihf (Pi Zero / 1);
# without it the Pi is asked (uname -m, getconf LONG_BIT).
# --config FILE  becomes /etc/pinpost/config.toml (only if the Pi has none)
# --certs DIR    the device's folder from `pinpost certs device <id>`:
#                exactly ca.crt, <id>.crt, <id>.key (and release.pub, the
#                release key's public half, when the fleet has one), which go to
#                /etc/pinpost/certs (the key 0640, the others 0644). Refused
#                before anything is built or copied if it holds any other
#                file, or these hold anything but their certificates and the
#                device's one key (checked with openssl).
# --no-start     install and enable, but do not start yet
#
# Builds with `cross` when Docker answers, else with scripts/cross-build.sh
# (Debian, no Docker; aarch64 and armv7 only). ssh and scp use your
# ~/.ssh/config; the remote user needs sudo.
set -euo pipefail

die() { echo "push: $*" >&2; exit 1; }
usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

host="" target="" config="" certs="" install_args=()
while (($#)); do
  case "$1" in
    --config) config=${2:?--config needs a file}; shift 2 ;;
    --certs) certs=${2:?--certs needs a folder}; shift 2 ;;
    --no-start) install_args+=(--no-start); shift ;;
    -h | --help) usage ;;
    -*) die "unknown option $1 (try --help)" ;;
    *)
      if [ -z "$host" ]; then host=$1
      elif [ -z "$target" ]; then target=$1
      else die "one HOST and at most one TARGET, not also $1"
      fi
      shift
      ;;
  esac
done
[ -n "$host" ] || usage
[ -z "$config" ] || [ -f "$config" ] || die "--config $config: no such file"
[ -z "$certs" ] || [ -d "$certs" ] || die "--certs $certs: no such folder"
# Resolve them before changing directory.
[ -z "$config" ] || config=$(cd "$(dirname "$config")" && pwd)/$(basename "$config")
[ -z "$certs" ] || certs=$(cd "$certs" && pwd)

# The [device] id in a config file, if it names one.
config_id() {
  awk '/^[[:space:]]*\[/ { device = ($0 ~ /^[[:space:]]*\[device\][[:space:]]*(#.*)?$/) }
       device && /^[[:space:]]*id[[:space:]]*=/ {
         sub(/^[^=]*=[[:space:]]*["'"'"']/, ""); sub(/["'"'"'].*$/, ""); print; exit }' "$1"
}

# Refuses a certificate folder that is not exactly device $2's: ca.crt,
# $2.crt and $2.key (or $2.csr, the request of a device that made its own
# key with pinpost enroll), nothing else (a CA key or another device's key on a Pi
# lets whoever holds it make certificates or act as that device, in
# whatever form it hides: a second PEM section, DER, PKCS#12, encrypted).
# The certificates hold certificates only; the key file exactly one private
# key, the one of $2.crt, a certificate for $2 that is not a CA.
check_certs() {
  local dir=$1 id=$2 file name pub cn
  refuse() { die "refusing --certs $dir (nothing was built or copied): $*; give the device's own folder, certs/devices/$id, made by pinpost certs device $id"; }
  command -v openssl >/dev/null ||
    die "openssl is needed to check what --certs holds before it leaves this machine (apt install openssl)"
  # Every name: plain, hidden (.x), and hidden with two dots (..x), which
  # .[!.]* alone does not match.
  for file in "$dir"/* "$dir"/.[!.]* "$dir"/..?*; do
    [ -e "$file" ] || [ -L "$file" ] || continue
    name=$(basename "$file")
    if [ -L "$file" ] || [ ! -f "$file" ]; then
      refuse "it holds $name, which is not a plain file"
    fi
    case "$name" in
      ca.crt | "$id.crt" | "$id.key" | "$id.csr" | release.pub) ;;
      release.key) refuse "it holds release.key, the release key's private half: whoever holds the Pi could sign packages for every device" ;;
      ca.key) refuse "it holds ca.key, the CA's private key: whoever holds the Pi could make certificates for every device and the operator" ;;
      *) refuse "it holds $name: a device gets exactly ca.crt, $id.crt and $id.key, nothing else" ;;
    esac
  done
  # A device that made its own key (pinpost enroll) has its request here
  # instead, the one pinpost certs sign signed: the key stays on the Pi.
  if [ -e "$dir/$id.csr" ]; then
    [ ! -e "$dir/$id.key" ] ||
      refuse "it holds both $id.key and $id.csr: a device that made its own key has no key here"
    third=$id.csr
  else
    third=$id.key
  fi
  for name in ca.crt "$id.crt" "$third"; do
    file=$dir/$name
    [ -f "$file" ] || refuse "it has no $name (a device gets exactly ca.crt, $id.crt and $id.key, or $id.csr when it made its own key)"
    [ "$(wc -c <"$file")" -le 65536 ] || refuse "$name is larger than 64 KiB, too large for a certificate or a key"
    # PEM is text: any other byte is something hidden (DER, a bundle).
    ! LC_ALL=C grep -q '[^[:print:][:space:]]' "$file" ||
      refuse "$name holds binary data: it must be PEM text only"
  done
  # The release key's public half: one PEM public key, nothing else.
  if [ -e "$dir/release.pub" ]; then
    [ "$(wc -c <"$dir/release.pub")" -le 65536 ] || refuse "release.pub is larger than 64 KiB, too large for a public key"
    ! LC_ALL=C grep -q '[^[:print:][:space:]]' "$dir/release.pub" ||
      refuse "release.pub holds binary data: it must be PEM text only"
    if [ "$(grep -c -- '-----BEGIN ' "$dir/release.pub")" -ne 1 ] ||
      ! grep -q -- '-----BEGIN PUBLIC KEY-----' "$dir/release.pub"; then
      refuse "release.pub must hold exactly one public key (the release key's public half, from pinpost certs release-key), never its private half"
    fi
  fi
  for name in ca.crt "$id.crt"; do
    grep -- '-----BEGIN ' "$dir/$name" | grep -qv -- '-----BEGIN CERTIFICATE-----' &&
      refuse "$name holds something other than certificates ($(grep -- '-----BEGIN ' "$dir/$name" | grep -v -- '-----BEGIN CERTIFICATE-----' | head -n 1 | tr -d '-'))"
    grep -q -- '-----BEGIN CERTIFICATE-----' "$dir/$name" || refuse "$name holds no certificate"
  done
  if [ "$third" = "$id.csr" ]; then
    if [ "$(grep -c -- '-----BEGIN ' "$dir/$id.csr")" -ne 1 ] ||
      ! grep -q -- '-----BEGIN CERTIFICATE REQUEST-----' "$dir/$id.csr"; then
      refuse "$id.csr must hold exactly one certificate request"
    fi
    pub=$(openssl req -in "$dir/$id.csr" -noout -pubkey 2>/dev/null) ||
      refuse "$id.csr is not a certificate request openssl can read"
    [ "$(openssl x509 -in "$dir/$id.crt" -noout -pubkey 2>/dev/null)" = "$pub" ] ||
      refuse "$id.crt is not for the key of $id.csr (signed for another request?)"
  else
    check_key "$dir" "$id"
  fi
  if openssl x509 -in "$dir/$id.crt" -noout -text 2>/dev/null | grep -q "CA:TRUE"; then
    refuse "$id.crt is a CA certificate, not the device's: whoever holds the Pi could make certificates for every device"
  fi
  cn=$(openssl x509 -in "$dir/$id.crt" -noout -subject -nameopt RFC2253 |
    sed -n 's/^subject=//; s/^\(.*,\)\{0,1\}CN=\([^,]*\).*$/\2/p')
  [ "$cn" = "$id" ] ||
    refuse "$id.crt is the certificate of ${cn:-no Common Name}, not of the device $id: whoever holds the Pi could act as ${cn:-it}"
}

# The device's key in $1 is exactly one plain private key, $2.crt's.
check_key() {
  local dir=$1 id=$2 pub
  [ "$(grep -c -- '-----BEGIN ' "$dir/$id.key")" -eq 1 ] ||
    refuse "$id.key must hold exactly one private key, but holds $(grep -c -- '-----BEGIN ' "$dir/$id.key") PEM sections"
  if grep -q -- '-----BEGIN ENCRYPTED' "$dir/$id.key"; then
    refuse "$id.key is encrypted: pinpost needs it plain (and no one can tell whose it is)"
  fi
  pub=$(openssl pkey -in "$dir/$id.key" -pubout 2>/dev/null) ||
    refuse "$id.key is not a private key openssl can read"
  [ "$(openssl x509 -in "$dir/$id.crt" -noout -pubkey 2>/dev/null)" = "$pub" ] ||
    refuse "$id.key is not the private key of $id.crt (another device's, the broker's or the CA's?)"
}

if [ -n "$certs" ]; then
  id=""
  [ -z "$config" ] || id=$(config_id "$config")
  # Without an id in the config, the folder's name is the device's.
  [ -n "$id" ] || id=$(basename "$certs")
  check_certs "$certs" "$id"
fi
cd "$(dirname "$0")/.."

if [ -z "$target" ]; then
  echo "push: asking $host what it runs" >&2
  machine=$(ssh "$host" 'echo "$(uname -m) $(getconf LONG_BIT)"') ||
    die "cannot reach $host over ssh; check 'ssh $host' works first"
  case "$machine" in
    "aarch64 64") target=aarch64-unknown-linux-gnu ;;
    # A 64-bit kernel under a 32-bit Raspberry Pi OS reports aarch64.
    "aarch64 32" | "armv7l 32" | "armv8l 32") target=armv7-unknown-linux-gnueabihf ;;
    "armv6l 32") target=arm-unknown-linux-gnueabihf ;;
    "x86_64 64") target=x86_64-unknown-linux-gnu ;;
    *) die "$host runs '$machine', which pinpost has no build for" ;;
  esac
  echo "push: $host is $machine: building $target" >&2
fi

# 1. Build.
if command -v cross >/dev/null && docker info >/dev/null 2>&1; then
  cross build --release --locked --no-default-features --target "$target" >&2
  bin="target/$target/release/pinpost"
else
  case "$target" in
    aarch64-unknown-linux-gnu | armv7-unknown-linux-gnueabihf | x86_64-unknown-linux-gnu)
      echo "push: no working Docker for cross; building with scripts/cross-build.sh" >&2
      bin=$(scripts/cross-build.sh "$target")
      ;;
    *) die "$target needs cross (cargo install cross) and a running Docker" ;;
  esac
fi
[ -x "$bin" ] || die "the build left no binary at $bin"

# 2. Stage what install.sh expects, and copy it over.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$bin" "$stage/pinpost"
cp deploy/pinpost.service deploy/config.example.toml deploy/install.sh deploy/60-pinpost.rules "$stage/"
[ -z "$config" ] || cp "$config" "$stage/config.toml"
if [ -n "$certs" ]; then
  mkdir "$stage/certs"
  # Exactly the files check_certs let through; a request stays here (the
  # Pi holds its key and needs only the certificates).
  cp "$certs/ca.crt" "$certs/$id.crt" "$stage/certs/"
  [ ! -e "$certs/$id.key" ] || cp "$certs/$id.key" "$stage/certs/"
  [ ! -e "$certs/release.pub" ] || cp "$certs/release.pub" "$stage/certs/"
fi
remote_dir=pinpost-install
echo "push: copying to $host:$remote_dir" >&2
# shellcheck disable=SC2029 # expanded here on purpose: the names are ours
ssh "$host" "rm -rf $remote_dir && mkdir -m 0700 $remote_dir" ||
  die "cannot reach $host over ssh; check 'ssh $host' works first"
scp -q -r "$stage"/. "$host:$remote_dir/" || die "copying to $host failed"

# 3. Install, then show how the service is doing.
# -t: sudo may ask for a password.
# shellcheck disable=SC2029
ssh -t "$host" "sudo sh $remote_dir/install.sh ${install_args[*]:-} && rm -rf $remote_dir" ||
  die "install.sh failed on $host (its words are above)"
ssh "$host" 'if [ -d /run/systemd/system ]; then systemctl --no-pager status pinpost; fi' || true
