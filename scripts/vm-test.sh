#!/usr/bin/env bash
# Boots Debian 12 arm64 with systemd under qemu-system-aarch64 (machine
# `virt`, TCG) and proves on it what only a booted Pi can show: the arm64
# .deb installed with apt, the unit started by systemd (Type=notify, status
# text, hardening, watchdog, journal priorities), power cuts while spooling,
# upgrade and purge, and a boot with the clock at 1970 and no time source.
# Prints one PASS/FAIL line per check and a summary; exits non-zero when any
# check fails or is missing.
#
#   scripts/vm-test.sh              # needs target/debian/pinpost_*_arm64.deb
#   scripts/vm-test.sh --image      # only build (or reuse) the cached image
#
# The image (debootstrap minbase + systemd, mosquitto, Debian's arm64 kernel,
# a busybox initramfs) is built once into target/vm/ (about 6 min) and
# reused; each boot writes to a throwaway qcow2 overlay. The guest's
# Mosquitto listens on its own 127.0.0.1; the guest reaches no network. In
# the main boot it enrolls: pinpost enroll makes pi-01's key in the guest,
# the request comes out on the serial line, this host signs it with the CA
# it keeps and publishes the certificates on the guest's broker through one
# forwarded loopback port (qemu user-mode network with restrict=on: the
# guest can reach nothing, this host only that port); then the agent renews
# that short certificate over MQTT, answered by `certs renew --watch` here
# (scripts/vm-certs.sh), and fetches a signed release over MQTT: this host
# `release publish`es a repacked copy of the .deb labelled armhf (refused)
# and one with a newer version (fetched chunk by chunk, checked, kept in
# update/ready/, in the same process). Then the root helper installs
# releases (pinpost-update.path and .service from the package): that newer
# one is installed over MQTT and comes back healthy, one whose pinpost
# exits at start ($RELEASE_BROKEN) is rolled back by itself and refused
# when published again. Then a signed config of pi-01, made here from the
# guest's own config.toml, signed with `release sign-config` and
# published (vm-certs.sh's config_asked): a good one (sensor s's unit
# changed) is applied by the helper and delivers, a bad one (a broker port
# nothing listens on) is rolled back after health_timeout and not applied
# again when signed anew. During the install of another ($RELEASE_NEXT)
# the guest cuts its own power (sysrq b, no sync) while the helper's
# journal says "installing". The next boot (installcut, the same forward)
# shows what the helper made of it at boot. A witness on this host
# (mosquitto_sub through the forward, witness_figures) sees the agent
# deliver after each install and each config the helper applied or put
# back. The other boots have no network (-nic none).
# Checks run inside the guest from a second disk (target/vm/run/test.img)
# by vmtest.service, print to the serial console and power off. Six boots
# of one disk: main (install and most checks, ended by the guest's own
# power cut during an install), installcut (what that cut left, then
# spooling, cut), two recovering and cut while spooling, last (recovery,
# upgrade, purge), and clock (installed again, the guest's real-time clock
# started at 1970: see clock_figures).
# Needs root (debootstrap, chroot, binfmt_misc) and Debian's package mirror
# for the first build. Installs what it needs from Debian.
set -euo pipefail
cd "$(dirname "$0")/.."

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
VM=target/vm
# Bump when the recipe below changes, so a cached image is rebuilt.
IMAGE_RECIPE=3
ROOTFS_TAR=$VM/rootfs-$IMAGE_RECIPE.tar
BASE=$VM/base-$IMAGE_RECIPE.img
KERNEL=$VM/vmlinuz-$IMAGE_RECIPE
INITRD=$VM/initrd-$IMAGE_RECIPE.gz
RUN=$VM/run
# How each boot ends: boot 1 by the guest's own power cut during an install
# (self), boots 2 to 4 by the host's, in seconds after the guest starts
# spooling; boot 5 checks the last cut, upgrades and purges; boot 6 is the
# clock's.
CUTS=(self 1.3 3.7 6.1)
# A boot that does not end by itself within this is killed and fails (the
# main boot waits on three installs by the helper besides, each 1-2 min
# under emulation: a repack, dpkg and its maintainer scripts, and on two
# signed configs, the bad one rolled back after health_timeout, 60 s: about
# 10.5 min in all, so 15 would leave too little for a busy host).
BOOT_TIMEOUT=${VM_BOOT_TIMEOUT:-1200}

die() { echo "vm-test: $*" >&2; exit 1; }
say() { echo "vm-test: $*" >&2; }

# The certificates and the guest's enrollment, this host's side.
# shellcheck source=/dev/null # checked on its own
. scripts/vm-certs.sh

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot, binfmt_misc); run as root"

# ---------------------------------------------------------------- tools
install_tools() {
  local -A needs=(
    [qemu-system-aarch64]=qemu-system-arm
    [qemu-aarch64-static]=qemu-user-static
    [debootstrap]=debootstrap
    [mkfs.ext4]=e2fsprogs
    [debugfs]=e2fsprogs
    [cpio]=cpio
    [dpkg-deb]=dpkg
    [mosquitto_sub]=mosquitto-clients
    [stdbuf]=coreutils
  )
  local missing=() tool
  for tool in "${!needs[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${needs[$tool]}")
  done
  # qemu-img from Debian's own qemu-utils: a backported qemu-utils breaks
  # qemu-system-arm, so take the version qemu-system-arm comes in.
  command -v qemu-img >/dev/null 2>&1 || missing+=(qemu-utils)
  ((${#missing[@]})) || return 0
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  say "installing ${missing[*]}"
  apt-get update -qq || say "apt-get update reported errors; installing anyway"
  local pkgs=() version
  version=$(apt-cache policy qemu-system-arm | awk '/Candidate:/ {print $2}')
  for tool in "${missing[@]}"; do
    if [ "$tool" = qemu-utils ] || [ "$tool" = qemu-system-arm ]; then
      pkgs+=(qemu-system-arm "qemu-utils=$version")
    else
      pkgs+=("$tool")
    fi
  done
  mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    --allow-downgrades "${pkgs[@]}" >/dev/null || die "cannot install ${pkgs[*]}"
}

# ---------------------------------------------------------------- image
# binfmt_misc for the chroot's second stage: mounted and the arm64 handler
# registered only if they were not, and undone afterwards.
BINFMT=/proc/sys/fs/binfmt_misc
binfmt_mounted_here=0
binfmt_registered_here=0
binfmt_up() {
  if [ ! -e "$BINFMT/register" ]; then
    mount -t binfmt_misc binfmt_misc "$BINFMT" || die "cannot mount binfmt_misc"
    binfmt_mounted_here=1
  fi
  if [ ! -e "$BINFMT/qemu-aarch64" ]; then
    local conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    [ -f "$conf" ] || die "no $conf (qemu-user-static)"
    # F: the interpreter is opened now, so the chroot needs no copy of it.
    grep -v '^#' "$conf" | head -n1 >"$BINFMT/register" || die "cannot register $conf"
    binfmt_registered_here=1
  fi
}
binfmt_down() {
  if ((binfmt_registered_here)) && [ -e "$BINFMT/qemu-aarch64" ]; then
    echo -1 >"$BINFMT/qemu-aarch64" || true
  fi
  if ((binfmt_mounted_here)); then umount "$BINFMT" || true; fi
  binfmt_registered_here=0 binfmt_mounted_here=0
}

# The guest's part that is the same for every run: fstab, the test runner
# unit, and nothing started that the tests do not need.
configure_rootfs() {
  local root=$1
  echo pi-vm >"$root/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 pi-vm\n' >"$root/etc/hosts"
  echo '/dev/vda / ext4 errors=remount-ro 0 1' >"$root/etc/fstab"
  # A fixed machine id: no first-boot presets on every throwaway overlay.
  echo 5f3c0c1e4a9b4d2c8e7f60a1b2c3d4e5 >"$root/etc/machine-id"
  # The GPIO character devices for the gpio group, as Raspberry Pi OS does.
  mkdir -p "$root/etc/udev/rules.d"
  echo 'SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"' \
    >"$root/etc/udev/rules.d/60-gpio.rules"
  cat >"$root/usr/local/sbin/vmtest-run" <<'EOF'
#!/bin/sh
# Runs run.sh from the test disk (vdb) with the phase named on the kernel
# command line, its output on the serial console, then powers off.
exec >/dev/ttyAMA0 2>&1
phase=$(sed -n 's/.* vmtest.phase=\([^ ]*\).*/\1/p' /proc/cmdline)
mkdir -p /mnt/test
if mount -o ro /dev/vdb /mnt/test; then
  sh /mnt/test/run.sh "$phase"
  echo "VMTEST EXIT $?"
else
  echo "VMTEST FAIL runner cannot mount the test disk"
fi
sync
systemctl poweroff --no-block
EOF
  chmod 755 "$root/usr/local/sbin/vmtest-run"
  cat >"$root/etc/systemd/system/vmtest.service" <<'EOF'
[Unit]
Description=pinpost VM test runner
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/vmtest-run
StandardOutput=tty
TTYPath=/dev/ttyAMA0
IgnoreSIGPIPE=no
TimeoutStartSec=infinity
[Install]
WantedBy=multi-user.target
EOF
  ln -sf /etc/systemd/system/vmtest.service \
    "$root/etc/systemd/system/multi-user.target.wants/vmtest.service"
  # Nothing on the console but the tests; no timers or daily jobs.
  local unit
  for unit in serial-getty@ttyAMA0.service getty@tty1.service apt-daily.timer \
    apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
    man-db.timer dpkg-db-backup.timer systemd-tmpfiles-clean.timer; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
  done
  # The broker starts with the tests' config, not Debian's plain one.
  rm -f "$root/etc/systemd/system/multi-user.target.wants/mosquitto.service"
  # apt in the guest works offline from ./x.deb.
  : >"$root/etc/apt/sources.list"
}

# A busybox initramfs that loads the disk and ext4 modules from the kernel
# package and switches to /dev/vda (Debian's kernel has them as modules).
make_initrd() {
  local root=$1 out=$2 ver dir mods m
  ver=$(basename "$(ls -d "$root"/lib/modules/*)")
  dir=$(mktemp -d "$VM/initrd.XXXXXX")
  mkdir -p "$dir"/{bin,dev,proc,sys,newroot,lib/modules/"$ver"}
  cp "$root/bin/busybox" "$dir/bin/busybox"
  # The modules and everything they depend on, from modules.dep.
  mods=$(awk -v want="virtio_pci virtio_blk ext4 crc32c_generic" '
    BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) need[w[i]] = 1 }
    { f = $1; sub(/:$/, "", f); name = f; sub(/.*\//, "", name); sub(/\.ko.*/, "", name)
      gsub(/-/, "_", name); dep[f] = $0; byname[name] = f }
    END { for (k in need) walk(byname[k]) }
    function walk(f,   parts, i, n) { if (f == "" || seen[f]++) return
      print f; n = split(dep[f], parts, " "); for (i = 2; i <= n; i++) walk(parts[i]) }
  ' "$root/lib/modules/$ver/modules.dep")
  for m in $mods; do
    mkdir -p "$dir/lib/modules/$ver/$(dirname "$m")"
    cp "$root/lib/modules/$ver/$m" "$dir/lib/modules/$ver/$m"
    grep "^$m:" "$root/lib/modules/$ver/modules.dep" >>"$dir/lib/modules/$ver/modules.dep"
  done
  cat >"$dir/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in virtio_pci virtio_blk crc32c_generic ext4; do modprobe "$m"; done
i=0
while [ ! -b /dev/vda ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
# Read-only, as a normal boot: the kernel replays the journal, then
# systemd-fsck-root checks and remounts it read-write.
mount -t ext4 -o ro /dev/vda /newroot || { echo "initrd: cannot mount /dev/vda"; exec sh; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
EOF
  chmod 755 "$dir/init"
  (cd "$dir" && find . | cpio -o -H newc --quiet) | gzip -1 >"$out.new"
  rm -rf "$dir"
  mv "$out.new" "$out"
}

build_image() {
  if [ -s "$BASE" ] && [ -s "$KERNEL" ] && [ -s "$INITRD" ]; then
    return 0
  fi
  mkdir -p "$VM"
  local started=$SECONDS work
  work=$(mktemp -d "$VM/work.XXXXXX")
  # shellcheck disable=SC2064 # expand $work now
  trap "binfmt_down; rm -rf '$work'" EXIT
  if [ ! -s "$ROOTFS_TAR" ]; then
    say "building the arm64 bookworm root (debootstrap, about 6 min)"
    debootstrap --arch arm64 --variant=minbase --foreign \
      --include=systemd,systemd-sysv,udev,dbus,mosquitto,mosquitto-clients,kmod,iproute2,procps,linux-image-arm64,busybox-static \
      bookworm "$work/root" "$MIRROR" >"$work/log" 2>&1 ||
      die "debootstrap (first stage) failed; its log: $(tail -n 5 "$work/log")"
    binfmt_up
    # INITRD=No: the kernel's own initramfs is not made (slow under
    # emulation); the busybox one below boots it.
    INITRD=No chroot "$work/root" /debootstrap/debootstrap --second-stage >>"$work/log" 2>&1 ||
      die "debootstrap (second stage) failed; its log: $(tail -n 5 "$work/log")"
    binfmt_down
    configure_rootfs "$work/root"
    tar -C "$work/root" -cf "$ROOTFS_TAR.new" .
    mv "$ROOTFS_TAR.new" "$ROOTFS_TAR"
    rm -rf "$work/root"
  fi
  say "making the disk image from $ROOTFS_TAR"
  mkdir -p "$work/root"
  tar -C "$work/root" -xf "$ROOTFS_TAR"
  cp "$(ls "$work"/root/boot/vmlinuz-*)" "$KERNEL.new"
  make_initrd "$work/root" "$INITRD"
  rm -f "$BASE.new"
  mkfs.ext4 -q -L pi-root -d "$work/root" "$BASE.new" 3G >/dev/null || die "mkfs.ext4 -d failed"
  mv "$KERNEL.new" "$KERNEL"
  mv "$BASE.new" "$BASE"
  rm -rf "$work"
  trap - EXIT
  say "image ready in $((SECONDS - started)) s: $BASE"
}

# ---------------------------------------------------------------- results
declare -a RESULTS=()
failed=0
result() { # PASS|FAIL name detail
  RESULTS+=("$1 $2: $3")
  echo "$1 $2: $3"
  [ "$1" = PASS ] || failed=$((failed + 1))
}
# Every check the guest must report, in the order it runs; one missing fails.
GUEST_CHECKS=(install user unit-enabled config-installed enroll-key enroll broker start config-dir-mode active-running
  status-text online readings command-result relay-on runs-as-pinpost no-capabilities
  seccomp no-new-privs spool-written probe-state-writable probe-own-key probe-gpiochip probe-other-key
  probe-shadow private-tmp probe-write-/etc/pinpost probe-write-/etc probe-write-/usr/local
  probe-write-/var/log probe-write-/root probe-write-/home probe-write-/var/lib exposure
  directory-warning-control no-directory-warning unit-clean journal-native watchdog
  renew-switched renew-same-process renew-cert-ends renew-key renew-readings
  update-refused update-verified update-file update-same-process update-memory update-withdrawn
  helper-units helper-installed helper-installed-report helper-installed-delivering
  rollback-outcome rollback-dpkg rollback-healthy rollback-report rollback-recorded rollback-refused-again
  config-running config-applied config-delivering config-rolled-back config-rolled-back-report
  config-refused-again install-cut)
# The boot after the guest cut its power during an install, then as recover.
INSTALLCUT_CHECKS=(installcut-helper installcut-dpkg installcut-agent installcut-outcome installcut-report
  installcut-clean)
RECOVER_CHECKS=(ready-without-broker spool-recovered drained)
LAST_CHECKS=(upgrade-install upgrade-restarts upgrade-keeps-config purge-removes-config
  purge-keeps-certs purge-stops)
CLOCK_CHECKS=(clock-no-time-source install user unit-enabled config-installed broker clock-witness
  clock-ready clock-untrusted-said clock-tls-words clock-trusted-said clock-command-within
  clock-drained)

# The guest's PASS/FAIL lines for one boot, and a FAIL for each expected one
# it did not print.
collect() { # serial boot-name expected...
  local serial=$1 boot=$2 name line verdict rest
  shift 2
  while IFS= read -r line; do
    line=${line#VMTEST }
    verdict=${line%% *}
    rest=${line#* }
    result "$verdict" "$boot/${rest%%: *}" "${rest#*: }"
  done < <(tr -d '\r' <"$serial" | grep -a -E '^VMTEST (PASS|FAIL) ')
  for name in "$@"; do
    # Straight from the file: a pipe into grep -q would fail (pipefail) when
    # grep stops reading early.
    grep -a -q -F -e "PASS $name: " -e "FAIL $name: " "$serial" ||
      result FAIL "$boot/$name" "not reported (see $serial)"
  done
}

# ---------------------------------------------------------------- boots
# boot NAME PHASE [CUT_SECONDS|self]: boots the overlay; with CUT_SECONDS,
# kills qemu (SIGKILL) that long after the guest says it is spooling; with
# self, waits for the guest to cut its own power (sysrq b: qemu, run with
# -no-reboot, ends) after it said "VMTEST INSTALLCUT"; else waits for the
# guest to power off. Fails on a timeout.
boot() {
  local name=$1 phase=$2 cut=${3:-} serial=$RUN/$1.serial pid started end spooling=0 up
  local rtc=() append='' net=(-nic none)
  : >"$serial"
  if [ "$phase" = main ] || [ "$phase" = installcut ]; then
    # One way in, none out: restrict=on keeps the guest from reaching
    # anything (the host included); only this loopback port reaches the
    # guest's 8884 (the operator's port there: the guest's own operator
    # sessions use 8883, and one certificate's two sessions on one port
    # would knock each other off). romfile=: no PXE ROM (none installed,
    # and the kernel is booted directly).
    FWD_PORT=$(free_port)
    # shellcheck disable=SC2054 # qemu's options are comma lists
    net=(-netdev "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:$FWD_PORT-:8884"
      -device virtio-net-pci,netdev=net0,romfile=)
  fi
  if [ "$phase" = clock ]; then
    # The guest's real-time clock (the virt machine's PL031, which the
    # kernel sets its clock from) starts at 1970, as a Pi without one
    # does; the real Unix time rides on the kernel command line, for the
    # guest to set its clock from later, as NTP would. qemu takes the
    # host's second once, at its start, and the PL031 then counts the
    # host's whole seconds: started just after a second turns, qemu takes
    # the very second the guest is told.
    sleep "$(date +%N | awk '{ printf "%.3f", (1e9 - $1) / 1e9 }')"
    CLOCK_NOW=$(date +%s)
    rtc=(-rtc base=1970-01-01T00:00:00)
    append=" vmtest.now=$CLOCK_NOW"
  fi
  started=$SECONDS
  qemu-system-aarch64 -M virt -cpu cortex-a57 -smp 2 -m 1024 \
    -display none -monitor none "${net[@]}" -no-reboot "${rtc[@]}" \
    -serial "file:$serial" \
    -kernel "$KERNEL" -initrd "$INITRD" \
    -append "console=ttyAMA0 root=/dev/vda ro quiet loglevel=3 systemd.show_status=false vmtest.phase=$phase$append" \
    -drive "file=$RUN/disk.qcow2,format=qcow2,if=virtio,cache=writethrough" \
    -drive "file=$RUN/test.img,format=raw,if=virtio,readonly=on" \
    >"$RUN/$name.qemu.log" 2>&1 &
  pid=$!
  end=$((SECONDS + BOOT_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= end)); then
      kill -9 "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      if [ "$phase" = main ]; then renewer_stop "$name"; releases_stop "$name"; fi
      witness_stop
      result FAIL "$name/boot" "no end after ${BOOT_TIMEOUT}s: killed (see $serial)"
      return 1
    fi
    case $phase in
    main) serve_guest "$name" ;;
    installcut) serve_requests "$name" ;;
    esac
    if [ -n "$cut" ] && [ "$cut" != self ] && ((!spooling)) && grep -a -q '^VMTEST SPOOLING' "$serial"; then
      spooling=1
      sleep "$cut"
      kill -9 "$pid"
      wait "$pid" 2>/dev/null || true
      say "$name: power cut ${cut}s after spooling began ($((SECONDS - started)) s after power on)"
      break
    fi
    sleep 0.2
  done
  wait "$pid" 2>/dev/null || true
  if [ "$phase" = main ]; then renewer_stop "$name"; releases_stop "$name"; fi
  witness_stop
  BOOT_SECONDS=$((SECONDS - started))
  up=$(tr -d '\r' <"$serial" | sed -n 's/^VMTEST INFO kernel .* up \([0-9.]*\) s$/\1/p' | head -n 1)
  say "$name: ${BOOT_SECONDS}s from power on to off (tests started ${up:-?} s after the kernel)"
  if [ "$cut" = self ]; then
    if ! grep -a -q '^VMTEST INSTALLCUT ' "$serial"; then
      result FAIL "$name/boot" "ended after ${BOOT_SECONDS}s without the guest cutting its power during an install (see $serial)"
      return 1
    fi
    say "$name: the guest cut its own power during an install ($BOOT_SECONDS s after power on)"
  elif [ -n "$cut" ] && ((!spooling)); then
    result FAIL "$name/boot" "the guest never started spooling (see $serial)"
    return 1
  fi
  if [ -z "$cut" ] && ! grep -a -q "^VMTEST DONE $phase" "$serial"; then
    result FAIL "$name/boot" "the guest did not finish phase $phase (see $serial)"
    return 1
  fi
  result PASS "$name/boot" "${BOOT_SECONDS}s power on to off, tests started ${up:-?} s after the kernel"
}

# The filesystem after the cut, as the next boot finds it: the journal
# replayed, then a full read-only check must find nothing.
fsck_after_cut() { # name
  local raw=$RUN/fsck.raw out
  qemu-img convert -f qcow2 -O raw "$RUN/disk.qcow2" "$raw"
  e2fsck -E journal_only -y "$raw" >/dev/null 2>&1 || true
  if out=$(e2fsck -f -n "$raw" 2>&1); then
    result PASS "$1/fsck" "clean after journal replay: $(tail -n 1 <<<"$out")"
  else
    result FAIL "$1/fsck" "$(tr '\n' ' ' <<<"$out" | cut -c1-400)"
  fi
  rm -f "$raw"
}

# awk functions for the readings the guest prints: days() turns a date into
# days since 1970-01-01, ts_ms() a line's "ts" (RFC 3339 in UTC with ms, as
# pinpost writes it: 2026-11-30T07:05:12.345Z) into Unix ms, "" if none.
TS_AWK='
  function days(y, m, d,   era, yoe, doy, doe) {
    y -= (m <= 2); era = int(y / 400); yoe = y - era * 400
    doy = int((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1
    doe = yoe * 365 + int(yoe / 4) - int(yoe / 100) + doy
    return era * 146097 + doe - 719468 }
  function ts_ms(line,   ts) {
    if (!match(line, /"ts":"[^"]*"/)) return ""
    ts = substr(line, RSTART + 6, RLENGTH - 7)
    return (days(substr(ts, 1, 4) + 0, substr(ts, 6, 2) + 0, substr(ts, 9, 2) + 0) * 86400 \
      + substr(ts, 12, 2) * 3600 + substr(ts, 15, 2) * 60 + substr(ts, 18, 2)) * 1000 + substr(ts, 21, 3) }
'

# What reached the subscriber after a cut: every reading of sensor s made
# before (last tick - 200 ms), with no gap in seq. The guest's clock: the
# cut boot printed when spooling began and a tick every 50 ms until the
# kill, so the cut came at or after the last tick.
power_cut_figures() { # cut-boot next-boot
  local cutlog=$RUN/$1.serial nextlog=$RUN/$2.serial spool_ms last_ms verdict
  spool_ms=$(tr -d '\r' <"$cutlog" | sed -n 's/^VMTEST SPOOLING \([0-9]*\)$/\1/p' | tail -n 1)
  last_ms=$(tr -d '\r' <"$cutlog" | sed -n 's/^VMTEST TICK \([0-9]*\)$/\1/p' | tail -n 1)
  if [ -z "$spool_ms" ] || [ -z "$last_ms" ]; then
    result FAIL "$1/power-cut" "no spooling or tick lines in $cutlog"
    return
  fi
  verdict=$(tr -d '\r' <"$nextlog" | grep -a '^VMTEST RX ' | awk -v spool="$spool_ms" -v last="$last_ms" "$TS_AWK"'
    {
      if ((ms = ts_ms($0)) == "") next
      if (!match($0, /"seq":[0-9]+/)) next
      seq = substr($0, RSTART + 6, RLENGTH - 6) + 0
      # Readings of the next boot come tens of seconds after the cut (its
      # boot); those between the last tick and the cut are from this boot.
      if (ms > last + 5000) {
        if (next_seq == "") next_seq = seq
        next
      }
      if (ms < spool - 1000) next               # made while the broker was up
      n++
      if (n == 1) { first_seq = seq; first_ms = ms }
      else if (seq != prev + 1) { gaps++; gap_at = gap_at " " prev "->" seq }
      prev = seq; prev_ms = ms; at[n] = ms
    }
    END {
      if (n < 2) { print "FAIL no readings from before the cut reached the subscriber"; exit }
      spacing = (prev_ms - first_ms) / (n - 1)
      # The cut came after the last tick and after the newest reading that
      # survived it: the later of the two is the reference.
      cut = last > prev_ms ? last : prev_ms
      before = 0
      for (i = 1; i <= n; i++) if (at[i] <= cut - 200) { before++; newest_before = at[i] }
      # Seqs are handed out in order, so with no gap nothing made before the
      # newest received reading is missing. Readings made after it and
      # before cut-200 ms, at the spacing the sensor kept, would be.
      missing = prev_ms >= cut - 200 ? 0 : int((cut - 200 - prev_ms) / spacing)
      made = before + missing
      printf "%s made before cut-200ms %d (from seq %d), received %d, lost %d, gaps %d%s; " \
        "cut %d ms after spooling began (%s), newest reading received made %d ms before it, " \
        "%d more received from its last 200 ms, %.1f ms between readings\n", \
        (gaps == 0 && missing == 0 ? "PASS" : "FAIL"), made, first_seq, before, missing, \
        gaps + 0, gap_at, cut - spool, (last >= prev_ms ? "the last tick" : "the newest reading, after the last tick"), \
        cut - prev_ms, n - before, spacing
      # Readings made after the newest one received (in the last 200 ms,
      # which a cut may lose) took seqs the next run must not hand out again.
      tail = int((cut - prev_ms) / spacing)
      if (tail < 0) tail = 0
      printf "%s the next run went on at seq %s after %d, a gap of %d for the about %d readings lost in the last 200 ms\n", \
        (next_seq != "" && next_seq - prev - 1 >= tail ? "PASS" : "FAIL"), next_seq, prev, next_seq - prev - 1, tail
    }')
  local line
  line=$(head -n 1 <<<"$verdict")
  result "${line%% *}" "$1/power-cut" "${line#* }"
  line=$(sed -n 2p <<<"$verdict")
  [ -n "$line" ] || line="FAIL no seq after the cut"
  result "${line%% *}" "$1/seq-unique" "${line#* }"
}

# What the witness got in the clock boot (pinpost started at 1970 with no
# time source, unable to connect, then the clock set and trusted): every
# reading of sensor s from seq 1 without a gap (repeats allowed, if the
# same), ts never back in seq order, none flagged "clock":"untrusted" (each
# was still waiting when the clock became trusted, or made after), every ts
# between the boot's start (vmtest.now) and now, and the readings made at
# 1970 dated when they were made: after pinpost's start, before the clock
# was set.
clock_figures() { # boot
  local serial=$RUN/$1.serial end_ms verdict line
  end_ms=$(date +%s%3N)
  verdict=$(tr -d '\r' <"$serial" | grep -a -E '^VMTEST (CLOCKMARKS|CLOCKRX) ' |
    awk -v lo="$((CLOCK_NOW * 1000))" -v hi="$end_ms" "$TS_AWK"'
    $2 == "CLOCKMARKS" { start = $3; set = $4; trusted = $5; next }
    {
      n++
      if (index($0, "\"clock\":\"untrusted\"") || index($0, "\"uptime_ms\"")) flagged++
      if ((ms = ts_ms($0)) == "" || !match($0, /"seq":[0-9]+/)) { bad++; next }
      seq = substr($0, RSTART + 6, RLENGTH - 6) + 0
      if (seq in at) { repeats++; if (at[seq] != ms) differ++; next }
      at[seq] = ms; text[seq] = substr($0, index($0, "\"ts\":\"") + 6, 24)
      if (top == "" || seq > top) top = seq
      if (low == "" || seq < low) low = seq
      if (ms < lo || ms > hi) out++
    }
    END {
      if (set == "") { print "FAIL no CLOCKMARKS line from the guest"; exit }
      if (n == 0) { print "FAIL the witness got no reading"; exit }
      prev = ""
      for (s = low; s <= top; s++) {
        if (!(s in at)) { gaps++; if (gaps <= 3) gap_at = gap_at " " s; continue }
        if (prev != "" && at[s] < at[prev]) { back++; if (back <= 3) back_at = back_at " " prev "->" s }
        if (at[s] < set) { early++; last_early = at[s]; early_seq = s }
        prev = s
      }
      ok = low == 1 && gaps == 0 && back == 0 && flagged == 0 && differ == 0 && bad == 0 \
        && out == 0 && early > 0 && at[low] >= start - 1000
      printf "%s %d readings of sensor s, seq %d to %d (%d repeats, %d differing), %d gaps%s, " \
        "%d back in seq order%s, %d flagged untrusted, %d outside the boot; %d made at 1970, " \
        "dated %s to %s (from %.1f s after pinpost started to %.2f s before the clock was set), " \
        "the last %s; trusted %.1f s after the clock was set\n", \
        ok ? "PASS" : "FAIL", n, low, top, repeats, differ, gaps, gap_at, back, back_at, flagged, \
        out + bad, early, text[low], early ? text[early_seq] : "-", (at[low] - start) / 1000, \
        (set - last_early) / 1000, text[top], (trusted - set) / 1000
    }')
  line=$(head -n 1 <<<"$verdict")
  [ -n "$line" ] || line="FAIL no verdict on the clock readings"
  result "${line%% *}" "$1/clock-readings" "${line#* }"
}

# ---------------------------------------------------------------- test disk
host_pinpost() {
  local amd64 dir=$RUN/host-pinpost
  amd64=$(find target/debian -name 'pinpost_*_amd64.deb' 2>/dev/null | sort -V | tail -n 1)
  if [ "$(uname -m)" = x86_64 ] && [ -n "$amd64" ]; then
    rm -rf "$dir"
    dpkg-deb -x "$amd64" "$dir"
    echo "$PWD/$dir/usr/bin/pinpost"
  elif [ -x target/debug/pinpost ]; then
    echo "$PWD/target/debug/pinpost"
  else
    die "no pinpost for this PC to make certificates: run scripts/package.sh or cargo build"
  fi
}

make_test_disk() {
  local deb=$1 disk=$RUN/testdisk version newer
  rm -rf "$disk" "$RUN/certs" "$RUN/newer" "$RUN/enroll"
  mkdir -p "$disk/debs" "$disk/certs"
  cp scripts/vm-guest.sh "$disk/run.sh"
  cp "$deb" "$disk/debs/"
  basename "$deb" >"$disk/debs/first"
  # A newer package with the same contents, for the upgrade: newer than
  # any release the helper installed before (the last one is
  # $RELEASE_NEXT).
  dpkg-deb -R "$deb" "$RUN/newer"
  version=$RELEASE_NEXT+vmtest1
  sed -i "s/^Version: .*/Version: $version/" "$RUN/newer/DEBIAN/control"
  newer=pinpost_${version}_arm64.deb
  dpkg-deb --root-owner-group -b "$RUN/newer" "$disk/debs/$newer" >/dev/null
  echo "$newer" >"$disk/debs/second"
  rm -rf "$RUN/newer"
  make_certs "$disk"
  make_releases "$deb"
  if find "$disk" -name 'ca.key' | grep -q .; then die "the CA key must not reach the guest"; fi
  if find "$disk" -name 'release.key' | grep -q .; then die "the release key must not reach the guest"; fi
  cat >"$disk/config.toml" <<'TOML'
# pinpost in the VM test: the guest's own Mosquitto, the sim board, and a
# sim sensor read every 10 ms (100 readings/s) for the power cuts.
[device]
id = "pi-01"
[broker]
host = "127.0.0.1"
port = 8883
cli_port = 8884
connect_timeout = "5s"
[broker.tls]
ca_file = "/etc/pinpost/certs/ca.crt"
cert_file = "/etc/pinpost/certs/pi-01.crt"
key_file = "/etc/pinpost/certs/pi-01.key"
# No shorter than the enrolled certificate's life (vm-certs.sh's
# FIRST_LIFE), so its renewal is due at the middle of that life.
renew_before = "3m"
[reconnect]
initial = "1s"
max = "2s"
[board]
kind = "sim"
[[output]]
name = "relay"
pin = 27
initial = "off"
[[sensor]]
name = "s"
kind = "sim"
interval = "10ms"
unit = "V"
start = 0.0
step = 0.1
[outbox]
stats_interval = "10s"
# Signed releases over MQTT: the fleet's release.pub, which came with
# pi-01's certificates. The helper gives an installed release this long to
# be connected and delivering before it puts the previous one back
# (vm-guest.sh's HEALTH_TIMEOUT; 120 s by default).
[update]
release_key = "/etc/pinpost/certs/release.pub"
health_timeout = "60s"
TOML
  rm -f "$RUN/test.img"
  mkfs.ext4 -q -L vmtest -d "$disk" "$RUN/test.img" 64M >/dev/null || die "cannot make the test disk"
}

# ---------------------------------------------------------------- main
install_tools
t_image=$SECONDS
build_image
image_seconds=$((SECONDS - t_image))
say "image: $image_seconds s (0: cached)"
if [ "${1:-}" = --image ]; then
  exit 0
fi

deb=$(find target/debian -name 'pinpost_*_arm64.deb' 2>/dev/null | sort -V | tail -n 1)
[ -n "$deb" ] || die "no target/debian/pinpost_*_arm64.deb: run scripts/package.sh first"
# A package whose unit differs from deploy/ (comments aside) would test
# yesterday's unit.
check_dir=$(mktemp -d)
dpkg-deb -x "$deb" "$check_dir"
if ! cmp -s <(grep -v '^#' "$check_dir/usr/lib/systemd/system/pinpost.service") \
  <(grep -v '^#' deploy/pinpost.service); then
  rm -rf "$check_dir"
  die "$deb holds another unit than deploy/pinpost.service: run scripts/package.sh first"
fi
rm -rf "$check_dir"

mkdir -p "$RUN"
rm -f "$RUN"/*.serial "$RUN"/*.witness "$RUN/renewer.log"
# The renewer and the witness (serve_guest) must not outlive a run that
# stops early.
trap 'renewer_kill; witness_stop' EXIT
make_test_disk "$deb"
rm -f "$RUN/disk.qcow2"
qemu-img create -q -f qcow2 -b "$PWD/$BASE" -F raw "$RUN/disk.qcow2"
t_tests=$SECONDS

boots=(boot1 boot2 boot3 boot4 boot5 boot6)
phases=(main installcut recover recover last clock)
prev_cut=
for i in "${!boots[@]}"; do
  name=${boots[$i]}
  cut=${CUTS[$i]:-}
  case ${phases[$i]} in last | clock) cut= ;; esac
  if [ "${phases[$i]}" = clock ]; then hand_renewal "$RUN/testdisk"; fi
  if ! boot "$name" "${phases[$i]}" "$cut"; then
    break
  fi
  case ${phases[$i]} in
  main)
    collect "$RUN/$name.serial" "$name" "${GUEST_CHECKS[@]}"
    witness_figures "$name" installed rolled-back config-applied config-rolled-back
    ;;
  installcut)
    collect "$RUN/$name.serial" "$name" "${INSTALLCUT_CHECKS[@]}"
    witness_figures "$name" installcut
    ;;
  recover) collect "$RUN/$name.serial" "$name" "${RECOVER_CHECKS[@]}" ;;
  last) collect "$RUN/$name.serial" "$name" "${RECOVER_CHECKS[@]}" "${LAST_CHECKS[@]}" ;;
  clock)
    collect "$RUN/$name.serial" "$name" "${CLOCK_CHECKS[@]}"
    clock_figures "$name"
    ;;
  esac
  if [ -n "$cut" ]; then
    fsck_after_cut "$name"
  fi
  # The boot after a cut while spooling shows what the cut kept.
  if [ -n "$prev_cut" ] && [ "$prev_cut" != self ]; then
    power_cut_figures "${boots[$((i - 1))]}" "$name"
  fi
  prev_cut=$cut
done
# The boots that never ran fail too.
for name in "${boots[@]}"; do
  [ -s "$RUN/$name.serial" ] || result FAIL "$name/boot" "did not run"
done
key_stayed_in_guest

echo
echo "vm-test: $((${#RESULTS[@]} - failed)) passed, $failed failed; boots and checks took $((SECONDS - t_tests)) s, the image $image_seconds s (0: cached)"
((failed == 0))
