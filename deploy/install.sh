#!/bin/sh
# Installs pinpost as a systemd service on a Raspberry Pi. Run as root on
# the Pi, from a folder holding what deploy/push.sh copies there:
#
#   pinpost               the binary built for this Pi
#   pinpost.service       the systemd unit
#   config.example.toml   used as /etc/pinpost/config.toml if there is none
#   config.toml           (optional) used instead of the example
#   certs/                (optional) exactly ca.crt, <id>.crt, <id>.key (and
#                         release.pub, when the fleet signs releases): the
#                         device's folder (pinpost certs device <id>); or
#                         ca.crt and <id>.crt alone when this Pi made its own
#                         key (pinpost enroll: /etc/pinpost/certs/<id>.key);
#                         refused, before anything changes, if it holds
#                         anything else or the key is not <id>.crt's
#
#   sudo ./install.sh             install, enable and (re)start the service
#   sudo ./install.sh --no-start  install and enable only (no systemd running,
#                                 or a config still to be edited)
#   sudo ./install.sh --enroll    also make this Pi's key where the config says
#                                 and a certificate request to sign (pinpost
#                                 enroll): the key never leaves the Pi; not
#                                 started until the certificate is installed
#
# Safe to run again: an existing /etc/pinpost/config.toml is kept, the binary
# and unit are replaced and the service restarted. What it does:
#   - groups gpio, i2c, spi (Raspberry Pi OS has them; other systems may not)
#   - system user pinpost in those groups, no login, no home
#   - /usr/local/bin/pinpost, mode 0755
#   - /etc/pinpost 0750 root:pinpost; config 0640; certs/<id>.key 0640,
#     certs/ca.crt and certs/<id>.crt 0644 (only those three files)
#   - /etc/systemd/system/pinpost.service, enabled
set -eu

here=$(cd "$(dirname "$0")" && pwd)
start=yes
enroll=no
for arg in "$@"; do
  case "$arg" in
    --no-start) start=no ;;
    --enroll) enroll=yes ;;
    -h | --help)
      sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "install.sh: unknown option $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

say() { echo "install.sh: $*"; }
die() {
  echo "install.sh: $*" >&2
  exit 1
}

[ "$(id -u)" -eq 0 ] || die "run me as root: sudo $0 $*"
[ -f "$here/pinpost" ] || die "no pinpost binary next to me in $here; deploy/push.sh copies it here"
[ -f "$here/pinpost.service" ] || die "no pinpost.service next to me in $here"

# The binary must run here before anything is changed: a 64-bit build on a
# 32-bit OS fails with "Exec format error", which says nothing useful.
chmod 0755 "$here/pinpost"
if ! version=$("$here/pinpost" --version 2>&1); then
  case "$(uname -m)" in
    aarch64) want=aarch64-unknown-linux-gnu ;;
    armv7l) want=armv7-unknown-linux-gnueabihf ;;
    armv6l) want=arm-unknown-linux-gnueabihf ;;
    *) want="the target for $(uname -m)" ;;
  esac
  die "the pinpost binary does not run on this machine ($(uname -m), $(getconf LONG_BIT)-bit userland): $version
Build it for $want, e.g. deploy/push.sh HOST $want"
fi
say "installing $version"

# The certificates must be this device's alone, checked before anything
# changes: a CA key or another device's key on a Pi lets whoever holds the
# Pi act as any device, or make new ones. The folder must hold exactly
# ca.crt, <id>.crt and <id>.key, and only those are installed. The id is
# the config's that will be in effect (the kept one, else the one given,
# else the example's); verify reads only its [device] id, since the files
# the config names are not in place before a first install.
if [ -d "$here/certs" ]; then
  if [ -e /etc/pinpost/config.toml ]; then
    config=/etc/pinpost/config.toml
  elif [ -f "$here/config.toml" ]; then
    config=$here/config.toml
  else
    config=$here/config.example.toml
  fi
  # The certificate's name gives the id (verify refuses any other file).
  device=""
  for file in "$here"/certs/*.crt; do
    name=$(basename "$file" .crt)
    [ "$name" = ca ] || device=$name
  done
  [ -n "$device" ] ||
    die "refusing to install $here/certs (nothing was changed): it holds no <id>.crt"
  if [ -e "$here/certs/$device.key" ]; then
    held=""
    "$here/pinpost" certs verify "$here/certs" --config "$config" ||
      die "refusing to install $here/certs (nothing was changed): it must hold exactly ca.crt, <id>.crt and <id>.key for this device, as in certs/devices/<id>/ made by pinpost certs device <id>"
  else
    # This Pi made its own key (pinpost enroll): the folder brings the
    # certificates for it, and the key must be there and theirs.
    held=/etc/pinpost/certs/$device.key
    [ -f "$held" ] ||
      die "refusing to install $here/certs (nothing was changed): it brings no $device.key, and this Pi holds none at $held; run pinpost enroll on this Pi first (the key is made here), or give the folder pinpost certs device $device made"
    "$here/pinpost" certs verify "$here/certs" --config "$config" --held-key "$held" ||
      die "refusing to install $here/certs (nothing was changed): it must hold exactly ca.crt and $device.crt, the certificate pinpost certs sign made for $held"
  fi
fi

for group in gpio i2c spi pinpost; do
  if ! getent group "$group" >/dev/null; then
    groupadd --system "$group"
    say "created group $group"
  fi
done
if ! getent passwd pinpost >/dev/null; then
  useradd --system --gid pinpost --groups gpio,i2c,spi \
    --home-dir /var/lib/pinpost --no-create-home \
    --shell /usr/sbin/nologin --comment "pinpost agent" pinpost
  say "created system user pinpost"
else
  usermod --append --groups gpio,i2c,spi pinpost
fi

install -m 0755 "$here/pinpost" /usr/local/bin/pinpost.new
mv -f /usr/local/bin/pinpost.new /usr/local/bin/pinpost

install -d -m 0750 -o root -g pinpost /etc/pinpost
if [ -e /etc/pinpost/config.toml ]; then
  say "kept the existing /etc/pinpost/config.toml"
elif [ -f "$here/config.toml" ]; then
  install -m 0640 -o root -g pinpost "$here/config.toml" /etc/pinpost/config.toml
  say "installed /etc/pinpost/config.toml"
elif [ -f "$here/config.example.toml" ]; then
  install -m 0640 -o root -g pinpost "$here/config.example.toml" /etc/pinpost/config.toml
  say "installed the example as /etc/pinpost/config.toml: edit it before starting"
  start=no
else
  die "no config.toml or config.example.toml next to me, and none in /etc/pinpost"
fi

if [ -d "$here/certs" ]; then
  install -d -m 0750 -o root -g pinpost /etc/pinpost/certs
  # Only the files a device gets, whatever else the folder holds; a key
  # this Pi made itself stays as enroll left it.
  names="ca.crt $device.crt"
  [ -n "$held" ] || names="$names $device.key"
  # The release key's public half, for [update] release_key (verify has
  # checked it holds a public key and nothing else).
  [ ! -e "$here/certs/release.pub" ] || names="$names release.pub"
  for name in $names; do
    case "$name" in
      # The key is readable by the service's group only, never by others.
      *.key) mode=0640 ;;
      *) mode=0644 ;;
    esac
    install -m "$mode" -o root -g pinpost "$here/certs/$name" "/etc/pinpost/certs/$name"
    say "installed /etc/pinpost/certs/$name ($mode)"
  done
fi

# The key is made here, by the binary just installed, and owned by the
# service's user; only the request leaves the Pi.
if [ "$enroll" = yes ]; then
  install -d -m 0750 -o root -g pinpost /etc/pinpost/certs
  /usr/local/bin/pinpost enroll --config /etc/pinpost/config.toml ||
    die "pinpost enroll failed (above); fix the config's [device] id and [broker.tls] key_file, then run me again with --enroll"
  if ! /usr/local/bin/pinpost check --offline --config /etc/pinpost/config.toml >/dev/null 2>&1; then
    start=no
    say "not started: it starts once the signed certificate is installed (pinpost certs sign on the laptop, then deploy/push.sh --certs)"
  fi
fi

# /dev/gpiochip*, I2C, SPI and PWM for the service's groups: Raspberry Pi
# OS has such rules already, Debian's kernel leaves them to root.
if [ -f "$here/60-pinpost.rules" ]; then
  # A root without udev (a container, an image being prepared) has no
  # rules folder yet; the rule waits there for udev.
  mkdir -p /etc/udev/rules.d
  install -m 0644 "$here/60-pinpost.rules" /etc/udev/rules.d/60-pinpost.rules.new
  mv -f /etc/udev/rules.d/60-pinpost.rules.new /etc/udev/rules.d/60-pinpost.rules
  if command -v udevadm >/dev/null 2>&1 && [ -d /run/udev ]; then
    udevadm control --reload || true
    udevadm trigger --subsystem-match=gpio --subsystem-match=i2c-dev \
      --subsystem-match=spidev --subsystem-match=pwm || true
  fi
  say "installed /etc/udev/rules.d/60-pinpost.rules (GPIO, I2C, SPI and PWM for their groups)"
fi

# The unit in the repository runs the packaged /usr/bin/pinpost; installed
# by hand, the binary lives in /usr/local/bin.
sed 's#/usr/bin/pinpost#/usr/local/bin/pinpost#g' "$here/pinpost.service" \
  >/etc/systemd/system/pinpost.service.new
chmod 0644 /etc/systemd/system/pinpost.service.new
mv -f /etc/systemd/system/pinpost.service.new /etc/systemd/system/pinpost.service

if [ ! -d /run/systemd/system ]; then
  # A chroot or an image being prepared: enable by link, as systemctl would.
  mkdir -p /etc/systemd/system/multi-user.target.wants
  ln -sf /etc/systemd/system/pinpost.service \
    /etc/systemd/system/multi-user.target.wants/pinpost.service
  say "systemd is not running here: enabled pinpost.service; it starts at the next boot"
  exit 0
fi
systemctl daemon-reload
systemctl enable pinpost.service
if [ "$start" = yes ]; then
  systemctl restart pinpost.service
  say "started; follow it with: journalctl -u pinpost -f"
else
  say "enabled but not started; when the config is ready: systemctl restart pinpost"
fi
