#!/usr/bin/env bash
# Proves that a real kernel GPIO edge event reaches a program through the
# GPIO character device. QEMU's Raspberry Pi GPIO model has no interrupts;
# QEMU `virt` has an ARM PL061 that Linux drives as a real gpiochip with
# edge interrupts, and QEMU pulses its line 3 on the monitor command
# `system_powerdown`. The generated device tree hands that line to
# gpio-keys (the power button): this script removes that node, boots
# Debian 12's arm64 kernel with a small busybox initramfs, and holds line 3
# for both edges, first with libgpiod's gpiomon (uAPI v1), then with a
# small uAPI v2 program (sequence numbers, debounce), then with pinpost's
# character-device backend: `pinpost gpio --board cdev watch`, a line held
# by another program, and `pinpost run` (no broker in the guest: its log
# says which input changes it would publish; the publish itself is proven
# against a broker elsewhere). Last, `pinpost run` counting pulses on line 3
# (count = true, a 10 ms debounce the kernel takes): the host sends
# PI_EMU_COUNT_PULSES powerdowns (default 50) PI_EMU_COUNT_GAP_MS apart
# (default 250: QEMU holds each pulse 100 ms, closer ones merge), and the
# total in the agent's counters file after SIGTERM (decoded here, and read
# back by pinpost started again) must be exactly that many with
# edge = "rising", twice that with edge = "both".
#
#   scripts/pi-emu/virt-edges.sh [PINPOST]   # PINPOST: an aarch64 pinpost
#                                            # (default: the cross build's)
#
# Prints one PASS/FAIL line per check and a summary; exits non-zero when one
# fails. Needs root for apt-get (it installs what it lacks from Debian). The
# emulator runs without root, without KVM and without network (-nic none).
# Caches under target/pi-emu/virt/; the kernel and busybox come from the
# vm-test root (target/vm/rootfs-*.tar, or $PI_EMU_ROOTFS_TAR), else from
# Debian's arm64 packages.
set -euo pipefail
cd "$(dirname "$0")/../.."
for v in PI_EMU_COUNT_PULSES PI_EMU_COUNT_GAP_MS; do
  [[ ${!v:-1} =~ ^[1-9][0-9]{0,4}$ ]] || { echo "virt-edges: $v must be a whole number from 1 to 99999" >&2; exit 2; }
done

CACHE=target/pi-emu/virt
RUN=$CACHE/run
PINPOST=${1:-${PINPOST:-target/debian-rustc/aarch64-unknown-linux-gnu/release/pinpost}}
# The machine, the same for the dtb dump and the boot (the dtb depends on them).
MACHINE_OPTS=(-cpu cortex-a53 -accel tcg -smp 1 -m 512)
# The counting checks' pulses, and the host's time between them (ms): at
# 150 ms, 2 of 100 merged in QEMU on a loaded host (two powerdowns handled
# less than 100 ms apart, one pulse); 250 ms leaves room.
COUNT_PULSES=${PI_EMU_COUNT_PULSES:-50}
COUNT_GAP_MS=${PI_EMU_COUNT_GAP_MS:-250}
# The whole boot, checks included, is killed after this (the counting
# checks' pulses added: two runs of them).
BOOT_TIMEOUT=${PI_EMU_TIMEOUT:-$((300 + 2 * COUNT_PULSES * COUNT_GAP_MS / 1000))}

die() { echo "virt-edges: $*" >&2; exit 1; }
say() { echo "virt-edges: $*" >&2; }

# ---------------------------------------------------------------- tools
apt_updated=0
apt_update() {
  ((apt_updated)) && return 0
  # One index failing (a mirror mid-sync) must not stop us; a package that is
  # then missing fails below, in words.
  apt-get update -qq || say "apt-get update reported errors; going on"
  apt_updated=1
}

install_tools() {
  local -A needs=(
    [qemu-system-aarch64]=qemu-system-arm
    [dtc]=device-tree-compiler
    [socat]=socat
    [cpio]=cpio
    [depmod]=kmod
    [gzip]=gzip
    [readelf]=binutils
    [dpkg-deb]=dpkg
    [aarch64-linux-gnu-gcc]=gcc-aarch64-linux-gnu
  )
  local missing=() tool
  for tool in "${!needs[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${needs[$tool]}")
  done
  # The cross libc: its ld.so and libc for dynamically linked aarch64
  # programs (gpiomon, pinpost), and its headers (linux/gpio.h) and libc.a.
  [ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || missing+=(libc6-arm64-cross)
  [ -e /usr/aarch64-linux-gnu/lib/libc.a ] || missing+=(libc6-dev-arm64-cross)
  [ -e /usr/aarch64-linux-gnu/include/linux/gpio.h ] || missing+=(linux-libc-dev-arm64-cross)
  # pinpost links libgcc_s.
  [ -e /usr/aarch64-linux-gnu/lib/libgcc_s.so.1 ] || missing+=(libgcc-s1-arm64-cross)
  if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}: run as root to install them"
    say "installing ${missing[*]}"
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null || die "cannot install ${missing[*]}"
  fi
  # apt-get download of arm64 packages needs arm64 known to dpkg and apt.
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    [ "$(id -u)" -eq 0 ] || die "dpkg does not know arm64: run as root (dpkg --add-architecture arm64)"
    dpkg --add-architecture arm64
    apt_updated=0
  fi
}

# Downloads the arm64 .deb of PACKAGE into DIR (once) and prints its path.
arm64_deb() { # package dir
  local pkg=$1 dir=$2 deb
  mkdir -p "$dir"
  deb=$(find "$dir" -maxdepth 1 -name "${pkg}_*_arm64.deb" | sort -V | tail -n 1)
  if [ -z "$deb" ]; then
    apt_update
    (cd "$dir" && apt-get download -qq "$pkg:arm64" >/dev/null 2>&1) ||
      die "cannot download $pkg:arm64 (apt-get download $pkg:arm64; is arm64 in 'dpkg --print-foreign-architectures' and its index up to date?)"
    deb=$(find "$dir" -maxdepth 1 -name "${pkg}_*_arm64.deb" | sort -V | tail -n 1)
    [ -n "$deb" ] || die "apt-get download $pkg:arm64 left no .deb in $dir"
  fi
  echo "$deb"
}

# ---------------------------------------------------------------- kernel, busybox
# $CACHE/kernel/: vmlinuz, busybox, and the kernel's lib/modules/VERSION
# metadata (modules.dep, modules.builtin) plus its gpio modules.
KDIR=$CACHE/kernel
get_kernel() {
  [ -s "$KDIR/vmlinuz" ] && [ -x "$KDIR/busybox" ] && [ -d "$KDIR/modules" ] && return 0
  rm -rf "$KDIR" "$KDIR.new"
  mkdir -p "$KDIR.new"
  local tar=${PI_EMU_ROOTFS_TAR:-} x=$KDIR.new/x
  if [ -z "$tar" ] && [ -d target/vm ]; then
    tar=$(find target/vm -maxdepth 1 -name 'rootfs-*.tar' | sort -V | tail -n 1)
  fi
  mkdir -p "$x"
  if [ -n "$tar" ]; then
    [ -s "$tar" ] || die "$tar: no such root tar"
    say "kernel and busybox from $tar"
    tar -C "$x" -xf "$tar" --wildcards './boot/vmlinuz-*' './usr/bin/busybox' \
      './usr/lib/modules/*/modules.*' './usr/lib/modules/*/kernel/drivers/gpio/*' \
      './usr/lib/modules/*/kernel/drivers/input/*' ||
      die "$tar lacks a kernel (linux-image-arm64) or busybox (busybox-static)"
  else
    say "kernel and busybox from Debian's arm64 packages (no target/vm/rootfs-*.tar)"
    local debs=$CACHE/debs image
    # linux-image-arm64 is a metapackage: its first dependency is the image.
    apt_update
    image=$(apt-cache depends linux-image-arm64:arm64 2>/dev/null |
      awk '/Depends: linux-image-[0-9]/ {sub(/:arm64$/, "", $2); print $2; exit}')
    [ -n "$image" ] || die "apt knows no linux-image-arm64:arm64 (is arm64 a foreign architecture with an index?)"
    local deb
    deb=$(arm64_deb "$image" "$debs")
    dpkg-deb -x "$deb" "$x"
    # What is kept of it is in $KDIR; the 60 MB package is not kept.
    rm -f "$deb"
    dpkg-deb -x "$(arm64_deb busybox-static "$debs")" "$x"
    # The package has no modules.dep (its postinst runs depmod): made here.
    local ver
    ver=$(find "$x/lib/modules" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)
    [ -n "$ver" ] || die "$image has no lib/modules/VERSION"
    command -v depmod >/dev/null 2>&1 || die "no depmod (Debian package kmod) to index $image's modules"
    depmod -b "$x" "$ver" || die "depmod -b $x $ver failed"
    if [ -d "$x/lib/modules" ] && [ ! -d "$x/usr/lib/modules" ]; then
      mkdir -p "$x/usr/lib" && mv "$x/lib/modules" "$x/usr/lib/modules"
    fi
    if [ -x "$x/bin/busybox" ] && [ ! -e "$x/usr/bin/busybox" ]; then
      mkdir -p "$x/usr/bin" && mv "$x/bin/busybox" "$x/usr/bin/busybox"
    fi
  fi
  local vmlinuz moddir
  vmlinuz=$(find "$x/boot" -name 'vmlinuz-*' | sort -V | tail -n 1)
  [ -n "$vmlinuz" ] || die "no boot/vmlinuz-* in the kernel source"
  moddir=$(find "$x/usr/lib/modules" -mindepth 1 -maxdepth 1 -type d | sort -V | tail -n 1)
  { [ -n "$moddir" ] && [ -s "$moddir/modules.dep" ]; } || die "no modules.dep beside $vmlinuz"
  [ -x "$x/usr/bin/busybox" ] || die "no usr/bin/busybox (busybox-static) in the kernel source"
  mv "$vmlinuz" "$KDIR.new/vmlinuz"
  mv "$x/usr/bin/busybox" "$KDIR.new/busybox"
  # Of the modules, only the index and what the PL061 driver needs.
  mkdir -p "$KDIR.new/modules"
  cp "$moddir/modules.dep" "$moddir/modules.builtin" "$KDIR.new/modules/"
  local m
  for m in $(module_files "$moddir" gpio-pl061); do
    mkdir -p "$KDIR.new/modules/$(dirname "$m")"
    cp "$moddir/$m" "$KDIR.new/modules/$m"
  done
  rm -rf "$x"
  mv "$KDIR.new" "$KDIR"
}

# Prints the module files (relative to the modules dir, dependencies first)
# that MODULE needs, or nothing when the kernel has it built in.
module_files() { # modules-dir module-name
  local mods=$1 name=$2
  if grep -Eq "/$name\.ko(\.[a-z]+)?$" "$mods/modules.builtin"; then
    return 0
  fi
  awk -v want="$name" '
    { f = $1; sub(/:$/, "", f); n = f; sub(/.*\//, "", n); sub(/\.ko.*/, "", n)
      gsub(/-/, "_", n); dep[f] = $0; byname[n] = f }
    END { w = want; gsub(/-/, "_", w); if (!(w in byname)) exit 1; walk(byname[w]) }
    function walk(f,   p, i, n) { if (f == "" || seen[f]++) return
      n = split(dep[f], p, " "); for (i = 2; i <= n; i++) walk(p[i]); print f }
  ' "$mods/modules.dep" || die "the kernel has $name neither built in nor in modules.dep"
}

# ---------------------------------------------------------------- dtb
DTB=$CACHE/virt-no-gpio-keys.dtb
make_dtb() {
  local key
  key="$(qemu-system-aarch64 --version | head -n 1) ${MACHINE_OPTS[*]}"
  if [ -s "$DTB" ] && [ "$(cat "$DTB.key" 2>/dev/null)" = "$key" ]; then
    return 0
  fi
  say "dumping QEMU's dtb: qemu-system-aarch64 -M virt,dumpdtb=$CACHE/virt.dtb ${MACHINE_OPTS[*]} -display none -nic none"
  qemu-system-aarch64 -M "virt,dumpdtb=$CACHE/virt.dtb" "${MACHINE_OPTS[@]}" -display none -nic none \
    >"$CACHE/dumpdtb.log" 2>&1 || die "qemu could not dump the virt dtb: $(cat "$CACHE/dumpdtb.log")"
  dtc -q -I dtb -O dts -o "$CACHE/virt.dts" "$CACHE/virt.dtb" || die "dtc cannot decompile $CACHE/virt.dtb"
  grep -q 'compatible = "gpio-keys"' "$CACHE/virt.dts" ||
    die "QEMU's virt dtb has no gpio-keys node (another QEMU?): nothing ties line 3 to system_powerdown"
  grep -q 'arm,pl061' "$CACHE/virt.dts" || die "QEMU's virt dtb has no PL061"
  # The node holds no phandle, so nothing else refers to it: delete it.
  awk '
    /^\tgpio-keys \{$/ { skip = 1; next }
    skip && /^\t\};$/ { skip = 0; getline; if ($0 != "") print; next }
    !skip { print }
  ' "$CACHE/virt.dts" >"$CACHE/virt-no-gpio-keys.dts"
  if grep -q 'gpio-keys\|GPIO Key' "$CACHE/virt-no-gpio-keys.dts"; then
    die "the gpio-keys node is still in $CACHE/virt-no-gpio-keys.dts (the dts layout changed)"
  fi
  dtc -q -I dts -O dtb -o "$DTB" "$CACHE/virt-no-gpio-keys.dts" || die "dtc cannot compile $CACHE/virt-no-gpio-keys.dts"
  echo "$key" >"$DTB.key"
}

# ---------------------------------------------------------------- guest programs
GPIOD=$CACHE/gpiod
get_gpiod() {
  [ -x "$GPIOD/usr/bin/gpiomon" ] && return 0
  rm -rf "$GPIOD"
  local p
  for p in gpiod libgpiod2; do
    dpkg-deb -x "$(arm64_deb "$p" "$CACHE/debs")" "$GPIOD"
  done
  [ -x "$GPIOD/usr/bin/gpiomon" ] || die "the gpiod:arm64 package has no usr/bin/gpiomon"
}

HELPER=$CACHE/gpio-edge-v2
build_helper() {
  local src=scripts/pi-emu/gpio-edge-v2.c
  [ -x "$HELPER" ] && [ "$HELPER" -nt "$src" ] && return 0
  aarch64-linux-gnu-gcc -static -O2 -Wall -Werror -o "$HELPER" "$src" ||
    die "aarch64-linux-gnu-gcc cannot build $src"
}

# Copies the shared libraries ELF needs (recursively) into ROOT/lib/aarch64-linux-gnu.
copy_libs() { # root elf...
  local root=$1 f lib dir found
  shift
  local queue=("$@") seen=" "
  while ((${#queue[@]})); do
    f=${queue[0]}
    queue=("${queue[@]:1}")
    while read -r lib; do
      [[ $seen == *" $lib "* ]] && continue
      seen+="$lib "
      found=""
      for dir in "$GPIOD/usr/lib/aarch64-linux-gnu" /usr/aarch64-linux-gnu/lib; do
        if [ -e "$dir/$lib" ]; then found=$dir/$lib; break; fi
      done
      [ -n "$found" ] || die "no aarch64 $lib (needed by $f) in $GPIOD or /usr/aarch64-linux-gnu/lib"
      cp -L "$found" "$root/lib/aarch64-linux-gnu/$lib"
      queue+=("$found")
    done < <(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  done
}

# ---------------------------------------------------------------- initramfs
INITRD=$RUN/initrd.gz
make_initrd() { # with-pinpost(0|1)
  local dir=$RUN/initrd m f
  rm -rf "$dir"
  mkdir -p "$dir"/{bin,dev,proc,sys,usr/bin,usr/local/bin,lib/aarch64-linux-gnu,lib/modules}
  cp "$KDIR/busybox" "$dir/bin/busybox"
  cp -L /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 "$dir/lib/ld-linux-aarch64.so.1"
  for f in gpiomon gpioinfo gpiodetect gpioget; do
    cp "$GPIOD/usr/bin/$f" "$dir/usr/bin/$f"
  done
  cp "$HELPER" "$dir/usr/local/bin/gpio-edge-v2"
  if (($1)); then
    cp "$PINPOST" "$dir/usr/local/bin/pinpost"
  fi
  copy_libs "$dir" "$dir"/usr/bin/* "$dir"/usr/local/bin/*
  # The PL061 driver, when this kernel has it as a module (Debian's has it
  # built in): uncompressed here, so busybox's insmod loads it in any case.
  : >"$dir/modules.list"
  for m in $(module_files "$KDIR/modules" gpio-pl061); do
    f=$dir/lib/modules/$(basename "${m%.ko*}").ko
    case $m in
      *.ko) cp "$KDIR/modules/$m" "$f" ;;
      *.ko.xz) xz -dc "$KDIR/modules/$m" >"$f" ;;
      *.ko.zst) zstd -qdc "$KDIR/modules/$m" >"$f" ;;
      *.ko.gz) gzip -dc "$KDIR/modules/$m" >"$f" ;;
      *) die "cannot unpack module $m" ;;
    esac
    echo "/lib/modules/${f##*/}" >>"$dir/modules.list"
  done
  write_init "$dir/init"
  chmod 755 "$dir/init"
  (cd "$dir" && find . | cpio -o -H newc --quiet) | gzip -1 >"$INITRD"
  rm -rf "$dir"
}

# The guest: finds the PL061 chip, then runs each step: a program holding
# line 3 in the background; once the kernel shows the line held, it asks the
# host (WANT) for powerdowns; every line the program prints is echoed with
# the step's name for the host to judge.
write_init() {
  cat >"$1" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin:/usr/local/bin LD_LIBRARY_PATH=/lib/aarch64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() { echo "EDGES $*"; }
for m in $(cat /modules.list); do insmod "$m" || say INFO "insmod $m failed"; done
say UP "$(cut -d' ' -f1 /proc/uptime)"
say INFO "kernel $(uname -r)"
chip=""
for d in /sys/bus/gpio/devices/gpiochip*; do
  case $(readlink -f "$d") in *pl061*) chip=${d##*/} ;; esac
done
gpiodetect 2>&1 | while IFS= read -r l; do say INFO "gpiodetect: $l"; done
if [ -e /proc/device-tree/gpio-keys ]; then say DT gpio-keys-present; else say DT gpio-keys-absent; fi
if [ -z "$chip" ]; then
  say CHIP none
  say DONE
  poweroff -f
fi
say CHIP "$chip $(cat /sys/bus/gpio/devices/"$chip"/../of_node/compatible 2>/dev/null | tr '\0' ' ')"
say LINE3 "$(gpioinfo "$chip" | grep -E '^[[:space:]]+line +3:' | tr -s ' \t' ' ')"

# gpioinfo 1.6 ends a held line with "[used]" (a free one says "unused").
held() { gpioinfo "$chip" | grep -E '^[[:space:]]+line +3:' | grep -q '\[used'; }
# step NAME POWERDOWNS GAP_MS COMMAND...
step() {
  name=$1 n=$2 gap=$3
  shift 3
  say BEGIN "$name"
  { timeout 30 "$@" 2>&1; echo "RC $?"; } | while IFS= read -r l; do say OUT "$name" "$l"; done &
  job=$!
  i=0
  while ! held && kill -0 "$job" 2>/dev/null && [ "$i" -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
  if held; then say WANT "$name" "$n" "$gap"; else say NOTREADY "$name"; fi
  wait "$job"
  say LEVEL "$name" "$(gpioget "$chip" 3 2>&1)"
  say END "$name"
}
step gpiomon 1 0 gpiomon -n 2 -r -f -F 'GPIOMON %e %o %s %n' "$chip" 3
step v2-twice 2 1000 gpio-edge-v2 "/dev/$chip" 3 0 4 5000
step v2-burst 2 20 gpio-edge-v2 "/dev/$chip" 3 0 4 2000
step v2-debounce-10ms 1 0 gpio-edge-v2 "/dev/$chip" 3 10000 2 5000
step v2-debounce-300ms 1 0 gpio-edge-v2 "/dev/$chip" 3 300000 1 2000
if [ -x /usr/local/bin/pinpost ]; then
  say INFO "pinpost $(pinpost --version 2>&1)"
  # trace: the kernel edge events (timestamp, sequence number) pinpost reads.
  step pinpost-watch 1 0 env RUST_LOG=pinpost=trace pinpost gpio --board cdev --chip "$chip" watch 3 --count 2
  # Line 3 held by another program: pinpost must say who holds it.
  say BEGIN pinpost-busy
  gpio-edge-v2 "/dev/$chip" 3 0 1 30000 >/dev/null 2>&1 &
  holder=$!
  i=0
  while ! held && [ "$i" -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
  { timeout 15 pinpost gpio --board cdev --chip "$chip" watch 3 --count 1 2>&1; echo "RC $?"; } |
    while IFS= read -r l; do say OUT pinpost-busy "$l"; done
  kill "$holder"
  say END pinpost-busy
  # The agent (pinpost run) on line 3, with no broker in the guest: what
  # it decides to publish is in its log ("input changed"), whether or not
  # the publish can leave. Once with the default debounce (50 ms, asked of
  # the kernel too), once with none.
  mkdir -p /tmp/pp /var/lib/pinpost
  (cd /tmp/pp && pinpost certs ca && pinpost certs device pi-01) >/dev/null 2>&1 || say INFO "pinpost certs failed"
  for deb in default 0ms; do
    name=pinpost-run-$deb
    {
      printf '[device]\nid = "pi-01"\n[broker]\nhost = "127.0.0.1"\nport = 8883\n'
      printf '[broker.tls]\nca_file = "/tmp/pp/certs/ca.crt"\n'
      printf 'cert_file = "/tmp/pp/certs/devices/pi-01/pi-01.crt"\nkey_file = "/tmp/pp/certs/devices/pi-01/pi-01.key"\n'
      printf '[board]\nkind = "cdev"\nchip = "%s"\n[[input]]\nname = "button"\npin = 3\n' "$chip"
      [ "$deb" = default ] || printf 'debounce = "%s"\n' "$deb"
    } >/tmp/pp/$name.toml
    say BEGIN "$name"
    : >/tmp/pp/$name.log
    { RUST_LOG=info,pinpost::board::cdev=trace timeout 30 pinpost run --config /tmp/pp/$name.toml 2>&1; echo "RC $?"; } |
      tee /tmp/pp/$name.log | while IFS= read -r l; do say OUT "$name" "$l"; done &
    job=$!
    # The press comes once the agent serves, not merely holds the line:
    # a press that starts and ends before its first read of the input is
    # only its starting level. With no broker here, its first connection
    # attempt failing says the loop runs.
    i=0
    while ! { held && grep -q "cannot reach" /tmp/pp/$name.log; } && kill -0 "$job" 2>/dev/null &&
      [ "$i" -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
    if held; then say WANT "$name" 1 0; else say NOTREADY "$name"; fi
    sleep 2
    kill -TERM $(pidof pinpost) 2>/dev/null
    wait "$job"
    if held; then say RELEASED "$name" no; else say RELEASED "$name" yes; fi
    say END "$name"
  done
  # The agent counting pulses on line 3 (count = true), no broker, with a
  # 10 ms debounce the kernel takes: the host sends count_n powerdowns
  # count_gap ms apart (each a ~100 ms pulse). Once the agent's trace holds
  # the kernel's 2 x count_n edges (or their time is up), SIGTERM; then the
  # counters file, in hex, for the host to decode.
  count_n=$(sed -n 's/.* edges\.count=\([0-9]*\).*/\1/p' /proc/cmdline)
  count_gap=$(sed -n 's/.* edges\.gap=\([0-9]*\).*/\1/p' /proc/cmdline)
  for edge in rising both; do
    name=pinpost-count-$edge
    {
      printf '[device]\nid = "pi-01"\n[broker]\nhost = "127.0.0.1"\nport = 8883\n'
      printf '[broker.tls]\nca_file = "/tmp/pp/certs/ca.crt"\n'
      printf 'cert_file = "/tmp/pp/certs/devices/pi-01/pi-01.crt"\nkey_file = "/tmp/pp/certs/devices/pi-01/pi-01.key"\n'
      printf '[outbox]\npath = "/tmp/pp/%s"\n' "$name"
      printf '[board]\nkind = "cdev"\nchip = "%s"\n[[input]]\nname = "meter"\npin = 3\n' "$chip"
      printf 'count = true\nedge = "%s"\ndebounce = "10ms"\ninterval = "1s"\n' "$edge"
    } >/tmp/pp/$name.toml
    say BEGIN "$name"
    : >/tmp/pp/$name.log
    { RUST_LOG=info,pinpost::board::cdev=trace timeout $((count_n * count_gap / 1000 + 40)) \
      pinpost run --config /tmp/pp/$name.toml 2>&1; echo "RC $?"; } |
      tee /tmp/pp/$name.log | while IFS= read -r l; do say OUT "$name" "$l"; done &
    job=$!
    i=0
    while ! { held && grep -q "cannot reach" /tmp/pp/$name.log; } && kill -0 "$job" 2>/dev/null &&
      [ "$i" -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
    if held; then
      say LINEINFO "$name" "$(gpio-edge-v2 "/dev/$chip" 3 info 2>&1)"
      say WANT "$name" "$count_n" "$count_gap"
      i=0
      while [ "$(grep -c ' edge pin=3 ' /tmp/pp/$name.log)" -lt $((2 * count_n)) ] &&
        kill -0 "$job" 2>/dev/null && [ "$i" -lt $(((count_n * count_gap / 1000 + 10) * 20)) ]; do
        sleep 0.05
        i=$((i + 1))
      done
      # The last falling edge's pulse is taken and written by now.
      sleep 1
    else
      say NOTREADY "$name"
    fi
    kill -TERM $(pidof pinpost) 2>/dev/null
    wait "$job"
    say COUNTERS "$name" "$(od -An -tx1 -v /tmp/pp/$name/counters/meter 2>&1 | tr -s ' \n' '  ')"
    if held; then say RELEASED "$name" no; else say RELEASED "$name" yes; fi
    # The agent started again reads the same total from the file.
    : >/tmp/pp/$name.again
    timeout 30 pinpost run --config /tmp/pp/$name.toml >/tmp/pp/$name.again 2>&1 &
    job=$!
    i=0
    while ! grep -q "counting from" /tmp/pp/$name.again && [ "$i" -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
    say AGAIN "$name" "$(grep -o 'counting from [0-9]* pulses' /tmp/pp/$name.again)"
    kill -KILL $(pidof pinpost) 2>/dev/null
    wait "$job"
    say END "$name"
  done
fi
say DONE
poweroff -f
EOF
}

# ---------------------------------------------------------------- boot
# Each serial line gets the host's clock in front; a WANT line is answered at
# once by writing system_powerdown to the monitor.
SERIAL=$RUN/serial.log
MON=$RUN/monitor.sock
reader() {
  local line t name n gap i mon_open=0
  while IFS= read -r line; do
    t=$EPOCHREALTIME
    line=${line%$'\r'}
    printf '%s %s\n' "$t" "$line"
    if [[ $line == "EDGES WANT "* ]]; then
      read -r _ _ name n gap <<<"$line"
      if ((!mon_open)); then
        exec 3> >(exec socat - "UNIX-CONNECT:$MON" >"$RUN/monitor.log" 2>&1)
        mon_open=1
      fi
      # In the background: the serial lines must get their time while the
      # next powerdown waits.
      for ((i = 1; i <= n; i++)); do
        if ((i > 1)); then sleep "$(awk -v g="$gap" 'BEGIN { printf "%.3f", g / 1000 }')"; fi
        printf '%s HOST SENT %s %s\n' "$EPOCHREALTIME" "$name" "$i"
        printf 'system_powerdown\n' >&3
      done &
    fi
  done
}

boot() {
  local reader_pid started
  rm -f "$MON" "$SERIAL" "$RUN/qemu.pid"
  local cmd=(qemu-system-aarch64 -M virt "${MACHINE_OPTS[@]}" -display none -nic none -no-reboot
    -kernel "$KDIR/vmlinuz" -initrd "$INITRD" -dtb "$DTB"
    -append "console=ttyAMA0 quiet loglevel=3 panic=-1 edges.count=$COUNT_PULSES edges.gap=$COUNT_GAP_MS"
    -serial stdio -monitor "unix:$MON,server=on,wait=off" -pidfile "$RUN/qemu.pid")
  say "booting: ${cmd[*]}"
  printf '%s\n' "${cmd[*]}" >"$RUN/qemu.cmd"
  started=$EPOCHREALTIME
  echo "$started HOST START" >"$RUN/start.log"
  "${cmd[@]}" </dev/null 2>"$RUN/qemu.err" | reader >"$SERIAL" &
  reader_pid=$!
  local end=$((SECONDS + BOOT_TIMEOUT))
  while kill -0 "$reader_pid" 2>/dev/null; do
    if ((SECONDS >= end)); then
      # Our own qemu, by the pid it wrote.
      if [ -s "$RUN/qemu.pid" ]; then kill "$(cat "$RUN/qemu.pid")" 2>/dev/null || true; fi
      wait "$reader_pid" 2>/dev/null || true
      result FAIL boot "no power off after ${BOOT_TIMEOUT}s (see $SERIAL)"
      return 1
    fi
    sleep 0.2
  done
  wait "$reader_pid" || true
  BOOT_WALL=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
}

# ---------------------------------------------------------------- results
declare -a RESULTS=()
failed=0
result() { # PASS|FAIL|INFO name detail
  RESULTS+=("$1 $2: $3")
  echo "$1 $2: $3"
  [ "$1" != FAIL ] || failed=$((failed + 1))
}

# The lines a step's program printed, without the host clock and prefix.
out_of() { awk -v s="$1" '$2 == "EDGES" && $3 == "OUT" && $4 == s { $1 = $2 = $3 = $4 = ""; sub(/^ +/, ""); print }' "$SERIAL"; }
# Host clock of the first line of a step matching a regex, and of the first send.
time_of_out() { awk -v s="$1" -v re="$2" '$3 == "OUT" && $4 == s && $0 ~ re { print $1; exit }' "$SERIAL"; }
time_of_sent() { awk -v s="$1" '$2 == "HOST" && $3 == "SENT" && $4 == s { print $1; exit }' "$SERIAL"; }
ms_between() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "") print "?"; else printf "%.0f", (b - a) * 1000 }'; }
level_of() { awk -v s="$1" '$3 == "LEVEL" && $4 == s { print $5; exit }' "$SERIAL"; }
wanted() { grep -q "EDGES WANT $1 " "$SERIAL"; }

# The counters file (pinpost's src/counter/store.rs), from its hex dump:
# two 32-byte slots, each "PPC1", the CRC-32 (LE) of its bytes 8..32, the
# generation (u64 LE) at 8..16 and the count (u64 LE) at 16..24. Prints
# "COUNT GENERATION" of the whole slot with the highest generation, or
# nothing when neither is whole.
crc32_hex() { # "aa bb ..." -> the IEEE CRC-32 (crc32fast's), decimal
  local crc=$((0xFFFFFFFF)) b k
  for b in $1; do
    crc=$((crc ^ 16#$b))
    for ((k = 0; k < 8; k++)); do
      if ((crc & 1)); then crc=$(((crc >> 1) ^ 0xEDB88320)); else crc=$((crc >> 1)); fi
    done
  done
  echo $((crc ^ 0xFFFFFFFF))
}
le_hex() { # "aa bb ..." little-endian -> decimal (up to 2^63)
  local -a b
  local v=0 i
  read -ra b <<<"$1"
  for ((i = ${#b[@]} - 1; i >= 0; i--)); do v=$(((v << 8) | 16#${b[i]})); done
  echo "$v"
}
counters_total() { # hex dump of the file
  local -a b
  local s o gen count="" best=-1
  read -ra b <<<"$1"
  ((${#b[@]} == 64)) || return 0
  for s in 0 1; do
    o=$((s * 32))
    [ "${b[*]:o:4}" = "50 50 43 31" ] || continue
    [ "$(le_hex "${b[*]:o+4:4}")" = "$(crc32_hex "${b[*]:o+8:24}")" ] || continue
    gen=$(le_hex "${b[*]:o+8:8}")
    if ((gen > best)); then best=$gen count=$(le_hex "${b[*]:o+16:8}"); fi
  done
  [ -z "$count" ] || echo "$count $best"
}

# Events of a v2 step as "KIND line_seqno seqno ts_ns" lines.
v2_events() { out_of "$1" | sed -n 's/^EVENT \([A-Z]*\) ts_ns=\([0-9]*\) seqno=\([0-9]*\) line_seqno=\([0-9]*\).*/\1 \4 \3 \2/p'; }

judge() {
  local up t_up t_start delay kinds pulse out rc

  t_start=$(awk '{ print $1 }' "$RUN/start.log")
  up=$(awk '$2 == "EDGES" && $3 == "UP" { print $4; exit }' "$SERIAL")
  t_up=$(awk '$2 == "EDGES" && $3 == "UP" { print $1; exit }' "$SERIAL")
  if [ -z "$up" ]; then
    result FAIL boot "the guest never came up (see $SERIAL, $RUN/qemu.err)"
    return
  fi
  result PASS boot "init ran $(ms_between "$t_start" "$t_up") ms after qemu started (guest uptime ${up} s); power on to off ${BOOT_WALL} s"

  if grep -q 'EDGES DT gpio-keys-absent' "$SERIAL"; then
    result PASS dtb "the booted device tree has no gpio-keys node (edited: $DTB)"
  else
    result FAIL dtb "the booted device tree still has gpio-keys (or the guest did not say)"
  fi
  local chip
  chip=$(awk '$3 == "CHIP" { $1 = $2 = $3 = ""; sub(/^ +/, ""); print; exit }' "$SERIAL")
  if [ -n "$chip" ] && [ "$chip" != none ] && grep -q 'EDGES LINE3 .*unused' "$SERIAL"; then
    result PASS chip "PL061 is ${chip}; line 3: $(awk '$3 == "LINE3" { $1 = $2 = $3 = ""; sub(/^ +/, ""); print; exit }' "$SERIAL")"
  else
    result FAIL chip "no PL061 gpiochip with a free line 3 (chip: ${chip:-not reported}; see $SERIAL)"
    return
  fi

  # gpiomon (uAPI v1): one powerdown gives a rising then a falling edge.
  kinds=$(out_of gpiomon | awk '$1 == "GPIOMON" { printf "%s", ($2 == 1 ? "R" : "F") }')
  pulse=$(out_of gpiomon | awk '$1 == "GPIOMON" { t[++n] = $4 + $5 / 1e9 } END { if (n >= 2) printf "%.1f", (t[2] - t[1]) * 1000 }')
  if ! wanted gpiomon; then
    result FAIL gpiomon-edge "gpiomon never held line 3: $(out_of gpiomon | tr '\n' ' ')"
  elif [ "$kinds" = RF ]; then
    # gpiomon's stdout is a pipe here, so it prints at exit: no latency from it.
    result PASS gpiomon-edge "one system_powerdown: rising then falling edge on line 3, ${pulse} ms apart by the kernel's timestamps"
  else
    result FAIL gpiomon-edge "expected rising then falling, got '${kinds}': $(out_of gpiomon | tr '\n' ' ')"
  fi
  if [ "$kinds" = RF ] && [ "$(level_of gpiomon)" = 0 ]; then
    result PASS auto-lower "QEMU lowers line 3 by itself after ${pulse} ms (a pulse, not a level); it reads 0 afterwards"
  else
    result FAIL auto-lower "line 3 did not come back low by itself (edges '${kinds}', level afterwards '$(level_of gpiomon)')"
  fi

  # uAPI v2: two powerdowns, a second of guest time apart: two pulses,
  # sequence numbers 1 to 4.
  out=$(v2_events v2-twice)
  kinds=$(awk '{ printf "%s", substr($1, 1, 1) }' <<<"$out")
  local seqs
  seqs=$(awk '{ printf "%s/%s ", $2, $3 }' <<<"$out")
  if [ "$kinds" = RFRF ] && [ "$seqs" = "1/1 2/2 3/3 4/4 " ]; then
    delay=$(ms_between "$(time_of_sent v2-twice)" "$(time_of_out v2-twice '^[^ ]+ EDGES OUT v2-twice EVENT RISING')")
    result PASS v2-two-powerdowns "two system_powerdowns: edges RFRF with line_seqno/seqno ${seqs% }, kernel ts (ns) $(awk '{ printf "%s ", $4 }' <<<"$out"); the first rising edge printed ${delay} ms after the host sent system_powerdown"
  else
    result FAIL v2-two-powerdowns "expected RFRF with seqno 1..4, got '${kinds}' (${seqs% }): $(out_of v2-twice | tr '\n' ' ')"
  fi

  # Two powerdowns 20 ms apart: QEMU restarts its 100 ms timer, so one
  # longer pulse (a fact, not a requirement).
  out=$(v2_events v2-burst)
  kinds=$(awk '{ printf "%s", substr($1, 1, 1) }' <<<"$out")
  pulse=$(awk '{ t[NR] = $4 } END { if (NR >= 2) printf "%.1f", (t[2] - t[1]) / 1e6 }' <<<"$out")
  result INFO v2-burst "two powerdowns sent $(ms_between "$(time_of_sent v2-burst)" "$(awk '$3 == "SENT" && $4 == "v2-burst" { t = $1 } END { print t }' "$SERIAL")") ms apart: edges '${kinds}', first pulse ${pulse:-?} ms"

  # Debounce: PL061 has no hardware debounce; gpiolib-cdev debounces in
  # software and reports the period back.
  out=$(out_of v2-debounce-10ms)
  kinds=$(v2_events v2-debounce-10ms | awk '{ printf "%s", substr($1, 1, 1) }')
  if grep -q '^REQUESTED .*debounce_us=10000 ' <<<"$out" && [ "$kinds" = RF ]; then
    result PASS v2-debounce-10ms "a 10 ms debounce is accepted on PL061 (the kernel reports debounce_us=10000) and the 100 ms pulse still gives rising and falling"
  else
    result FAIL v2-debounce-10ms "expected the request with debounce_us=10000 and edges RF: $(tr '\n' ' ' <<<"$out")"
  fi
  out=$(out_of v2-debounce-300ms)
  if grep -q '^REQUESTED .*debounce_us=300000 ' <<<"$out" && grep -q '^TIMEOUT events=0' <<<"$out"; then
    result PASS v2-debounce-300ms "with a 300 ms debounce the 100 ms pulse gives no event at all: the kernel debounces in software"
  else
    result FAIL v2-debounce-300ms "expected the request with debounce_us=300000 and no event: $(tr '\n' ' ' <<<"$out")"
  fi

  # pinpost's character-device backend.
  if [ ! -x "$PINPOST" ]; then
    result FAIL pinpost-watch "no aarch64 pinpost at $PINPOST: run scripts/cross-build.sh aarch64-unknown-linux-gnu"
    return
  fi
  out=$(out_of pinpost-watch)
  rc=$(sed -n 's/^RC //p' <<<"$out")
  kinds=$(grep -E 'GPIO3 (high|low)$' <<<"$out" | grep -v watching | awk '{ printf "%s", ($NF == "high" ? "H" : "L") }' || true)
  delay=$(ms_between "$(time_of_sent pinpost-watch)" "$(time_of_out pinpost-watch 'GPIO3 high$')")
  if ! wanted pinpost-watch; then
    result FAIL pinpost-watch "pinpost never held line 3 (rc ${rc:-?}): $(tr '\n' ' ' <<<"$out" | cut -c1-400)"
  elif [ "$kinds" = HL ] && [ "$rc" = 0 ]; then
    result PASS pinpost-watch "pinpost gpio --board cdev watch 3 --count 2 printed high then low for one system_powerdown, high ${delay} ms after the host sent it"
  else
    result FAIL pinpost-watch "expected high then low and exit 0, got '${kinds}' rc ${rc:-?}: $(tr '\n' ' ' <<<"$out" | cut -c1-400)"
  fi
  # Its trace shows it read the kernel's events, not the 20 ms polling it
  # falls back to when a chip refuses edges.
  local edges
  edges=$(sed -n 's/.* edge pin=3 kernel_ns=\([0-9]*\) seq=\([0-9]*\) kind=\([A-Za-z]*\).*/\3 seq=\2 kernel_ns=\1/p' <<<"$out")
  if grep -q 'every 20 ms' <<<"$out"; then
    result FAIL pinpost-kernel-events "pinpost fell back to polling: $(grep 'every 20 ms' <<<"$out")"
  elif [ "$(awk '{ printf "%s %s,", $1, $2 }' <<<"$edges")" = "Rising seq=1,Falling seq=2," ]; then
    result PASS pinpost-kernel-events "pinpost read the kernel's edge events: $(tr '\n' ';' <<<"$edges" | sed 's/;$//; s/;/; /g')"
  else
    result FAIL pinpost-kernel-events "no trace of kernel edge events Rising seq=1, Falling seq=2 (RUST_LOG=pinpost=trace): $(tr '\n' ' ' <<<"$out" | cut -c1-400)"
  fi
  # The agent, no broker: its decisions ("input changed") after the kernel's
  # events, with the debounce the config gives (asked of the kernel too).
  local step label published t_pub
  for step in pinpost-run-default pinpost-run-0ms; do
    label="debounce ${step#pinpost-run-}"
    [ "$step" = pinpost-run-default ] && label="the default debounce (50 ms)"
    out=$(out_of "$step")
    rc=$(sed -n 's/^RC //p' <<<"$out")
    edges=$(sed -n 's/.* edge pin=3 kernel_ns=[0-9]* seq=\([0-9]*\) kind=\([A-Za-z]*\).*/\2 seq=\1/p' <<<"$out" | tr '\n' ',')
    published=$(sed -n 's/.*input changed input=button value=\([a-z]*\) seq=\([0-9]*\).*/\1/p' <<<"$out" | tr '\n' ',')
    t_pub=$(time_of_out "$step" 'input changed input=button value=true')
    delay=$(ms_between "$(time_of_sent "$step")" "$t_pub")
    if ! wanted "$step"; then
      result FAIL "$step" "pinpost run never held line 3 (rc ${rc:-?}): $(tr '\n' ' ' <<<"$out" | cut -c1-400)"
    elif [ "$edges" = "Rising seq=1,Falling seq=2," ] && [ "$published" = "true,false," ] &&
      [ "$rc" = 0 ] && grep -q "EDGES RELEASED $step yes" "$SERIAL"; then
      result PASS "$step" "pinpost run with ${label}, no broker: kernel events Rising seq=1, Falling seq=2; input button changed to true ${delay} ms after the host sent system_powerdown, then to false; SIGTERM: exit 0, line 3 released"
    else
      result FAIL "$step" "expected kernel events Rising/Falling, input changes true,false, exit 0 on SIGTERM and line 3 released; got events '${edges}', changes '${published}', rc ${rc:-?}: $(tr '\n' ' ' <<<"$out" | cut -c1-400)"
    fi
  done

  out=$(out_of pinpost-busy)
  rc=$(sed -n 's/^RC //p' <<<"$out")
  if [ -n "$rc" ] && [ "$rc" != 0 ] && [ "$rc" != 124 ] && [ "$rc" != 2 ] && grep -q 'gpio-edge-v2' <<<"$out"; then
    result PASS pinpost-busy "with line 3 held by another program, pinpost exits ${rc} naming it: $(grep -v '^RC ' <<<"$out" | tr '\n' ' ' | cut -c1-300)"
  else
    result FAIL pinpost-busy "expected an error naming the holder gpio-edge-v2, got rc ${rc:-?}: $(tr '\n' ' ' <<<"$out" | cut -c1-400)"
  fi

  # The agent counting: the total in its counters file after SIGTERM is
  # every pulse sent, through the kernel's debounce (its line info while
  # the agent held the line says which).
  local want sent deb rises falls seqs rate hex total gen again
  for step in pinpost-count-rising pinpost-count-both; do
    out=$(out_of "$step")
    rc=$(sed -n 's/^RC //p' <<<"$out")
    want=$COUNT_PULSES
    [ "$step" = pinpost-count-both ] && want=$((2 * COUNT_PULSES))
    sent=$(awk -v s="$step" '$2 == "HOST" && $3 == "SENT" && $4 == s { n++ } END { print n + 0 }' "$SERIAL")
    deb=$(awk -v s="$step" '$3 == "LINEINFO" && $4 == s { print; exit }' "$SERIAL" | sed -n 's/.* debounce_us=\([0-9]*\).*/\1/p')
    # "KIND seq kernel_ns" of each edge the agent read.
    edges=$(sed -n 's/.* edge pin=3 kernel_ns=\([0-9]*\) seq=\([0-9]*\) kind=\([A-Za-z]*\).*/\3 \2 \1/p' <<<"$out")
    rises=$(awk '$1 == "Rising" { n++ } END { print n + 0 }' <<<"$edges")
    falls=$(awk '$1 == "Falling" { n++ } END { print n + 0 }' <<<"$edges")
    seqs=$(awk 'NF { n++; if ($2 != n) gap = 1 } END { print (n && !gap ? "seq 1.." n " without a gap" : "seq with gaps or none") }' <<<"$edges")
    rate=$(awk '$1 == "Rising" { if (!n++) a = $3; b = $3 } END { if (n >= 2 && b > a) printf "%.2f", (n - 1) / ((b - a) / 1e9); else print "?" }' <<<"$edges")
    hex=$(awk -v s="$step" '$3 == "COUNTERS" && $4 == s { $1 = $2 = $3 = $4 = ""; sub(/^ +/, ""); print; exit }' "$SERIAL")
    total="" gen=""
    read -r total gen <<<"$(counters_total "$hex")" || true
    again=$(awk -v s="$step" '$3 == "AGAIN" && $4 == s { print $7; exit }' "$SERIAL")
    if ! wanted "$step"; then
      result FAIL "$step" "pinpost run never held line 3 (rc ${rc:-?}): $(tr '\n' ' ' <<<"$out" | cut -c1-400)"
    elif [ "$total" = "$want" ] && [ "$sent" = "$COUNT_PULSES" ] && [ "$deb" = 10000 ] &&
      grep -q 'counting from 0 pulses' <<<"$out" && [ "$rc" = 0 ] && grep -q "EDGES RELEASED $step yes" "$SERIAL" &&
      [ "$again" = "$want" ]; then
      result PASS "$step" "pinpost run counting edge = \"${step#pinpost-count-}\", no broker: ${sent} system_powerdowns sent ${COUNT_GAP_MS} ms apart, the kernel debouncing line 3 (${deb} us, its line info while the agent held it); the agent read ${rises} rising and ${falls} falling kernel edges (${seqs}), ${rate} pulses a second by their timestamps; after SIGTERM (exit 0, line 3 released) the counters file holds ${total} (generation ${gen}), exactly ${want}, and pinpost started again says counting from ${again} pulses"
    else
      # Fewer kernel edges than powerdowns: they merged in QEMU (closer than
      # its 100 ms pulse), before any program could count them.
      if ((rises < COUNT_PULSES)); then
        result INFO "$step" "the kernel gave ${rises} rising edges for ${COUNT_PULSES} powerdowns: pulses merged in QEMU (a longer PI_EMU_COUNT_GAP_MS than ${COUNT_GAP_MS}?)"
      fi
      result FAIL "$step" "expected a total of ${want} for ${COUNT_PULSES} powerdowns (sent ${sent}) with the kernel's debounce 10000 us, a start 'counting from 0 pulses', exit 0, line 3 released and the same total read back by pinpost started again; got total '${total:-none}' (file: ${hex:-none}), read back '${again:-none}', debounce '${deb:-?}', kernel edges ${rises} rising ${falls} falling (${seqs}), rc ${rc:-?}: $(grep -v ' edge pin=3 ' <<<"$out" | tr '\n' ' ' | cut -c1-600)"
    fi
  done
}

# ---------------------------------------------------------------- main
t0=$SECONDS
install_tools
mkdir -p "$CACHE" "$RUN"
get_kernel
make_dtb
get_gpiod
build_helper
with_pinpost=0
if [ -x "$PINPOST" ]; then
  readelf -h "$PINPOST" | grep -q 'Machine:.*AArch64' || die "$PINPOST is not an aarch64 program"
  with_pinpost=1
  newer=$(find src Cargo.toml Cargo.lock -newer "$PINPOST" -print -quit)
  [ -z "$newer" ] || say "warning: $newer is newer than $PINPOST; this tests an older build (scripts/cross-build.sh aarch64-unknown-linux-gnu)"
fi
make_initrd "$with_pinpost"
say "prepared in $((SECONDS - t0)) s (initramfs $(du -k "$INITRD" | cut -f1) KiB)"
if boot; then
  judge
fi
echo
echo "virt-edges: $((${#RESULTS[@]} - failed)) lines without failure, $failed failed; $((SECONDS - t0)) s in all"
((failed == 0))
