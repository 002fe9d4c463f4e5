#!/usr/bin/env bash
# Boots pinpost's own arm binaries on an emulated Raspberry Pi (QEMU's
# raspi3b and raspi2b machines, Debian's own kernels and device trees) and
# proves there what the sim board cannot: GPIO through the kernel's
# character device and through rppal's registers, the agent against a
# Mosquitto inside the guest moving the BCM283x's real GPLEV bits, hardware
# PWM, a BME280 and an MCP23017 GPIO expander on a real I2C bus and the
# scan that finds them, and the errors a Debian Pi shows. Pin levels and pin functions are read from the
# machine by QEMU's monitor (scripts/pi-emu/drive.py), never from pinpost.
# Prints one PASS/FAIL line per check and a summary; exits non-zero when
# any check fails or is missing (issue 27, section 2).
#
#   scripts/pi-emu.sh            # every boot
#   scripts/pi-emu.sh BOOT...    # only these: stock relaxed overlay i2c pi2
#
# Boots (each a few seconds of kernel, then its checks):
#   stock    raspi3b, Debian's dtb, no kernel argument: what a Debian Pi
#            does out of the box (rppal refused, auto → the character
#            device, cdev GPIO and agent, a line held by another consumer,
#            PWM without the overlay)
#   relaxed  raspi3b with iomem=relaxed: rppal's GPIO, agent and PWM; inputs
#            driven from the guest (busybox devmem on GPSET/GPCLR)
#   overlay  raspi3b with a dtb routing PWM0 to GPIO18 (dtoverlay=pwm): PWM
#            through the character-device backend and /sys/class/pwm
#   i2c      raspi3b on bookworm-backports' QEMU 10 with a BME280 register
#            image behind an at24c EEPROM at 0x76, QEMU's tmp105 at 0x48
#            and a writable at24c at 0x20 standing in for an MCP23017's
#            register file on i2c-bus.1: the BME280 read through pinpost's
#            config; `pinpost sensors --scan` on every bus (only 0x20, 0x48
#            and 0x76 listed, 0x76 named a BME280, its [[sensor]] section
#            read back); `pinpost run` with the MCP23017 as an [[expander]]
#            (its setup, inputs, a command and re-setup after the guest
#            resets its registers, checked with busybox i2ctransfer) and a
#            PCF8574 where nothing answers (0x27) said in words
#   pi2      raspi2b, Debian's armhf kernel, the armv7 binary
#
# Material is cached under target/pi-emu/ (keyed by RECIPE below): the
# arm64 kernel, modules, busybox and Mosquitto come from target/vm's
# debootstrap root (scripts/vm-test.sh builds it first), the rest from
# Debian's packages. Each run packs the binaries, certificates and guest
# scripts into a small second initramfs appended to the cached one.
# Needs root for apt; installs what it needs from Debian.
set -euo pipefail
cd "$(dirname "$0")/.."

PE=target/pi-emu
# Bump when the cached material's recipe below changes.
RECIPE=1
MAT=$PE/material-$RECIPE
RUN=$PE/run
ROOTFS_TAR=${PI_EMU_ROOTFS:-target/vm/rootfs-3.tar}
ARM64_BIN=target/debian-rustc/aarch64-unknown-linux-gnu/release/pinpost
ARMHF_BIN=target/debian-rustc/armv7-unknown-linux-gnueabihf/release/pinpost
# A boot that has not ended within this is killed and fails.
BOOT_TIMEOUT=${PI_EMU_BOOT_TIMEOUT:-300}
RASPI3_APPEND="console=ttyAMA0 earlycon=pl011,mmio32,0x3f201000 quiet loglevel=1"

die() { echo "pi-emu: $*" >&2; exit 1; }
say() { echo "pi-emu: $*" >&2; }

# ---------------------------------------------------------------- tools
apt_updated=0
apt_update() {
  ((apt_updated)) && return 0
  # One architecture's index failing must not stop the rest.
  apt-get update -qq || say "apt-get update reported errors; going on"
  apt_updated=1
}

install_tools() {
  local -A needs=(
    [qemu-system-aarch64]=qemu-system-arm
    [dtc]=device-tree-compiler
    [cpio]=cpio
    [python3]=python3
    [readelf]=binutils
    [dpkg-deb]=dpkg
    [gzip]=gzip
  )
  local missing=() tool
  for tool in "${!needs[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${needs[$tool]}")
  done
  local arch
  for arch in arm64 armhf; do
    if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
      [ "$(id -u)" -eq 0 ] || die "needs root to add the $arch architecture (apt-get download of arm packages)"
      dpkg --add-architecture "$arch"
      apt_updated=0
    fi
  done
  ((${#missing[@]})) || return 0
  [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; run as root, or first: sudo apt-get install ${missing[*]}"
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  say "installing ${missing[*]}"
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    die "cannot install ${missing[*]}"
}

# apt-get download into DIR, with a word on failure.
download() { # DIR PACKAGE...
  local dir=$1
  shift
  mkdir -p "$dir"
  apt_update
  (cd "$dir" && apt-get download -qq "$@" 2>&1 | grep -v 'unsandboxed' >&2) || true
  local p
  for p in "$@"; do
    p=${p%%:*}
    p=${p%%/*}
    compgen -G "$dir/${p}_*.deb" >/dev/null || die "cannot download $p from Debian (apt-get download $*)"
  done
}

# ---------------------------------------------------------------- material
# Every shared library FILE needs, found under LIBDIRS, as paths.
elf_closure() { # "LIBDIR..." FILE...
  local dirs=$1 todo name dir found
  shift
  local -A seen=()
  todo=("$@")
  while ((${#todo[@]})); do
    local f=${todo[0]}
    todo=("${todo[@]:1}")
    while read -r name; do
      [ -n "${seen[$name]:-}" ] && continue
      seen[$name]=1
      found=
      for dir in $dirs; do
        if [ -e "$dir/$name" ]; then found=$dir/$name; break; fi
      done
      [ -n "$found" ] || die "no $name (needed by $f) under $dirs"
      echo "$found"
      todo+=("$(readlink -f "$found")")
    done < <(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  done
}

# Copies FILE (and, for a symlink, what it points to) to the same path
# under DEST, its path taken relative to ROOT.
copy_in() { # ROOT DEST FILE
  local root=$1 dest=$2 file=$3 rel real
  rel=${file#"$root"}
  mkdir -p "$dest/$(dirname "$rel")"
  real=$(readlink -f "$file")
  cp "$real" "$dest/$rel"
}

pack() { # DIR OUT.gz
  (cd "$1" && find . | cpio -o -H newc --quiet) | gzip -1 >"$2.new"
  mv "$2.new" "$2"
}

# Modules and everything they depend on, from modules.dep, as paths
# relative to the module directory.
module_closure() { # MODDIR NAME...
  local moddir=$1
  shift
  awk -v want="$*" '
    BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) need[w[i]] = 1 }
    { f = $1; sub(/:$/, "", f); name = f; sub(/.*\//, "", name); sub(/\.ko.*/, "", name)
      gsub(/-/, "_", name); dep[f] = $0; byname[name] = f }
    END { for (k in need) { if (!(k in byname)) print "MISSING " k; walk(byname[k]) } }
    function walk(f,   parts, i, n) { if (f == "" || seen[f]++) return
      print f; n = split(dep[f], parts, " "); for (i = 2; i <= n; i++) walk(parts[i]) }
  ' "$moddir/modules.dep"
}

# arm64: Debian's kernel, dtb, modules, busybox, Mosquitto and its
# libraries from the debootstrap root; libgpiod's tools from Debian.
make_arm64_material() {
  local out=$MAT/arm64
  [ -s "$out/initrd.gz" ] && [ -s "$out/vmlinuz" ] && [ -s "$out/stock.dtb" ] && [ -s "$out/overlay.dtb" ] && return 0
  [ -s "$ROOTFS_TAR" ] || die "no $ROOTFS_TAR: scripts/vm-test.sh --image builds it (debootstrap, about 6 min)"
  say "making the arm64 material from $ROOTFS_TAR"
  local work root stage ver m f
  work=$(mktemp -d "$PE/work.XXXXXX")
  root=$work/root stage=$work/stage
  mkdir -p "$root" "$stage"/{bin,dev,proc,sys,tmp,etc,run,var/lib/mosquitto,lib}
  tar -C "$root" -xf "$ROOTFS_TAR" --wildcards ./boot ./usr/lib/modules './usr/lib/linux-image-*' \
    ./usr/bin/busybox ./usr/sbin/mosquitto ./usr/bin/mosquitto_sub ./usr/bin/mosquitto_pub \
    ./usr/lib/aarch64-linux-gnu ./usr/lib/ld-linux-aarch64.so.1 2>/dev/null ||
    tar -C "$root" -xf "$ROOTFS_TAR" --wildcards ./boot ./usr/lib/modules './usr/lib/linux-image-*' \
      ./usr/bin/busybox ./usr/sbin/mosquitto ./usr/bin/mosquitto_sub ./usr/bin/mosquitto_pub \
      ./usr/lib/aarch64-linux-gnu || die "cannot extract the kernel and tools from $ROOTFS_TAR"
  download "$work/debs" gpiod:arm64 libgpiod2:arm64
  for f in "$work"/debs/*.deb; do dpkg-deb -x "$f" "$root"; done
  ver=$(basename "$(ls -d "$root"/usr/lib/modules/*)")
  cp "$root/boot/vmlinuz-$ver" "$out.vmlinuz.tmp" 2>/dev/null || { mkdir -p "$out"; cp "$root/boot/vmlinuz-$ver" "$out.vmlinuz.tmp"; }
  mkdir -p "$out"
  mv "$out.vmlinuz.tmp" "$out/vmlinuz"
  make_dtbs "$root/usr/lib/linux-image-$ver/broadcom/bcm2837-rpi-3-b.dtb" "$out"
  # Binaries and their libraries (merged /usr: /lib is a link).
  ln -s usr/lib "$stage/lib64" 2>/dev/null || true
  rmdir "$stage/lib"
  ln -s usr/lib "$stage/lib"
  ln -s bin "$stage/sbin"
  mkdir -p "$stage/usr/bin" "$stage/usr/sbin"
  for f in usr/bin/busybox usr/sbin/mosquitto usr/bin/mosquitto_sub usr/bin/mosquitto_pub \
    usr/bin/gpioset usr/bin/gpioget usr/bin/gpioinfo; do
    cp "$root/$f" "$stage/$f"
  done
  mv "$stage/usr/bin/busybox" "$stage/bin/busybox"
  local libdirs="$root/usr/lib/aarch64-linux-gnu $root/usr/lib"
  while read -r f; do copy_in "$root" "$stage" "$f"; done < <(
    elf_closure "$libdirs" "$root/usr/sbin/mosquitto" "$root/usr/bin/mosquitto_sub" \
      "$root/usr/bin/gpioset" "$ARM64_BIN" | sort -u)
  # The ELF interpreter every binary names.
  cp "$(readlink -f "$root/usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1")" "$stage/usr/lib/ld-linux-aarch64.so.1"
  mkdir -p "$stage/usr/lib/aarch64-linux-gnu"
  ln -sf ../ld-linux-aarch64.so.1 "$stage/usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1"
  # Modules: I2C and PWM (Debian builds them as modules; GPIO is built in).
  local moddir=$root/usr/lib/modules/$ver
  mkdir -p "$stage/usr/lib/modules/$ver"
  : >"$stage/usr/lib/modules/$ver/modules.dep"
  while read -r m; do
    case $m in MISSING*) die "the kernel $ver has no module ${m#MISSING } (modules.dep)" ;; esac
    mkdir -p "$stage/usr/lib/modules/$ver/$(dirname "$m")"
    cp "$moddir/$m" "$stage/usr/lib/modules/$ver/$m"
    grep "^$m:" "$moddir/modules.dep" >>"$stage/usr/lib/modules/$ver/modules.dep"
  done < <(module_closure "$moddir" i2c_bcm2835 i2c_dev pwm_bcm2835)
  printf 'root:x:0:0:root:/root:/bin/sh\nmosquitto:x:100:101::/var/lib/mosquitto:/bin/false\n' >"$stage/etc/passwd"
  printf 'root:x:0:\nmosquitto:x:101:\ngpio:x:102:\n' >"$stage/etc/group"
  pack "$stage" "$out/initrd.gz"
  rm -rf "$work"
}

# Debian's Pi 3 dtb, edited with dtc (decompiled, changed, compiled):
#   stock.dtb    only the PL011's Bluetooth child removed. On a Pi 3 the
#                PL011 carries Bluetooth, so the kernel gives its tty to
#                serdev and there is no /dev/ttyAMA0 to talk to the host on;
#                QEMU has no Bluetooth chip. PWM stays on GPIO40/41.
#   overlay.dtb  also PWM0 routed to GPIO18 (ALT5), which is what Raspberry
#                Pi OS's `dtoverlay=pwm,pin=18,func=2` does: the pwm node's
#                pinctrl-0 points at a new pin group for GPIO18 function 2.
make_dtbs() { # DEBIAN_DTB OUT_DIR
  local dts
  dts=$(mktemp -d)
  dtc -q -I dtb -O dts "$1" >"$dts/debian.dts" || die "dtc cannot decompile $1"
  python3 - "$dts" <<'PY' || die "cannot edit the dtb ($dts)"
import re, sys
d = sys.argv[1]
text = open(d + "/debian.dts").read()

def node_end(text, start):
    """Index just past the closing brace of the node opened before start."""
    depth, at = 1, start
    while depth:
        depth += (text[at] == "{") - (text[at] == "}")
        at += 1
    return at

uart = re.search(r"serial@7e201000 \{\n", text)
bt = re.compile(r"\n\t+bluetooth \{\n").search(text, uart.end()) if uart else None
if not bt or bt.start() > node_end(text, uart.end()):
    sys.exit("no bluetooth node under serial@7e201000")
end = node_end(text, bt.end())
stock = text[:bt.start()] + text[end + 1:]  # the node and its ";"
open(d + "/stock.dts", "w").write(stock)

text = stock
gpio = re.search(r"\n(\t+)gpio@7e200000 \{\n", text)
if not gpio:
    sys.exit("no gpio@7e200000 node")
indent = gpio.group(1) + "\t"
group = (f"{indent}pinemu_pwm0_gpio18 {{\n{indent}\tbrcm,pins = <0x12>;\n"
         f"{indent}\tbrcm,function = <0x02>;\n{indent}\tphandle = <0x7ffe>;\n{indent}}};\n")
at = text.rfind("\n", 0, node_end(text, gpio.end())) + 1  # after its last subnode
text = text[:at] + group + text[at:]
pwm = re.search(r"pwm@7e20c000 \{\n", text)
if not pwm:
    sys.exit("no pwm@7e20c000 node")
end = node_end(text, pwm.end())
body = text[pwm.end():end]
new = re.sub(r"pinctrl-0 = <[^>]*>;", "pinctrl-0 = <0x7ffe>;", body)  # PWM1 off GPIO41
if new == body:
    sys.exit("the pwm node has no pinctrl-0")
new = re.sub(r'status = "[a-z]*";', 'status = "okay";', new)
open(d + "/overlay.dts", "w").write(text[:pwm.end()] + new + text[end:])
PY
  dtc -q -I dts -O dtb -o "$2/stock.dtb" "$dts/stock.dts" || die "dtc cannot compile $dts/stock.dts"
  dtc -q -I dts -O dtb -o "$2/overlay.dtb" "$dts/overlay.dts" || die "dtc cannot compile $dts/overlay.dts"
  rm -rf "$dts"
}

# armhf: Debian's armmp kernel and its Pi 2 dtb, busybox-static, and the
# cross C library for the armv7 binary.
make_armhf_material() {
  local out=$MAT/armhf
  [ -s "$out/initrd.gz" ] && [ -s "$out/vmlinuz" ] && [ -s "$out/pi2.dtb" ] && return 0
  say "making the armhf material from Debian's packages"
  local work kpkg f stage
  work=$(mktemp -d "$PE/work.XXXXXX")
  apt_update
  kpkg=$(apt-cache depends linux-image-armmp:armhf 2>/dev/null | sed -n 's/.*Depends: \(linux-image-[0-9].*-armmp\).*/\1/p' | head -n 1)
  [ -n "$kpkg" ] || die "apt knows no linux-image-armmp:armhf (is the armhf architecture's index there?)"
  download "$work/debs" "$kpkg:armhf" busybox-static:armhf
  for f in "$work"/debs/*.deb; do dpkg-deb -x "$f" "$work/root"; done
  mkdir -p "$out"
  cp "$(ls "$work"/root/boot/vmlinuz-*)" "$out/vmlinuz"
  f=$(find "$work/root/usr/lib" -name bcm2836-rpi-2-b.dtb | head -n 1)
  [ -n "$f" ] || die "$kpkg has no bcm2836-rpi-2-b.dtb"
  cp "$f" "$out/pi2.dtb"
  stage=$work/stage
  mkdir -p "$stage"/{bin,dev,proc,sys,tmp,etc,run,usr/bin}
  ln -s bin "$stage/sbin"
  cp "$work/root/bin/busybox" "$stage/bin/busybox"
  local sysroot=/usr/arm-linux-gnueabihf
  [ -d "$sysroot/lib" ] || die "no $sysroot/lib (libc6-armhf-cross; scripts/cross-build.sh installs it)"
  mkdir -p "$stage/lib"
  while read -r f; do cp "$(readlink -f "$f")" "$stage/lib/$(basename "$f")"; done < <(
    elf_closure "$sysroot/lib" "$ARMHF_BIN" | sort -u)
  cp "$(readlink -f "$sysroot/lib/ld-linux-armhf.so.3")" "$stage/lib/ld-linux-armhf.so.3"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$stage/etc/passwd"
  printf 'root:x:0:\ngpio:x:102:\n' >"$stage/etc/group"
  pack "$stage" "$out/initrd.gz"
  rm -rf "$work"
}

# bookworm-backports' QEMU 10 (real BCM2835 I2C), unpacked beside the
# system's 7.2 with a private apt configuration; nothing is installed.
QEMU10=
make_qemu10() {
  local dir=$MAT/qemu10 apt=$PE/apt mirror
  QEMU10=$dir/usr/bin/qemu-system-aarch64
  [ -x "$QEMU10" ] && return 0
  say "fetching QEMU 10 from bookworm-backports (apt-get download, unpacked under $dir)"
  # The mirror the system's bookworm comes from.
  # shellcheck disable=SC2016 # apt expands $(REPO_URI), not the shell
  mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null |
    awk '$2 == "bookworm" { print $1; exit }' || true)
  mirror=${mirror:-http://deb.debian.org/debian/}
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$dir.debs"
  echo "deb $mirror bookworm-backports main" >"$apt/sources.list"
  cat >"$apt/apt.conf" <<EOF
Dir::Etc::SourceList "$PWD/$apt/sources.list";
Dir::Etc::SourceParts "/nonexistent";
Dir::State::Lists "$PWD/$apt/lists";
Dir::Cache "$PWD/$apt/cache";
APT::Architectures { "amd64"; };
EOF
  APT_CONFIG=$apt/apt.conf apt-get update -qq || die "cannot read bookworm-backports' index from $mirror"
  (cd "$dir.debs" && APT_CONFIG=$OLDPWD/$apt/apt.conf apt-get download -qq \
    qemu-system-arm/bookworm-backports qemu-system-common/bookworm-backports \
    qemu-system-data/bookworm-backports 2>&1 | grep -v unsandboxed >&2) || true
  local f n=0
  for f in "$dir.debs"/*.deb; do
    [ -e "$f" ] || continue
    dpkg-deb -x "$f" "$dir"
    n=$((n + 1))
  done
  ((n == 3)) || die "cannot download qemu-system-arm, -common and -data from bookworm-backports"
  rm -rf "$dir.debs"
  "$QEMU10" --version >/dev/null || die "bookworm-backports' QEMU 10 does not run here: $("$QEMU10" --version 2>&1 | head -n 1)"
}

# ---------------------------------------------------------------- per run
host_pinpost() {
  local b
  for b in target/debian-rustc/x86_64-unknown-linux-gnu/release/pinpost target/release/pinpost target/debug/pinpost; do
    [ -x "$b" ] && { echo "$b"; return; }
  done
  say "no pinpost for this PC: cargo build (debug) for pinpost certs"
  cargo build --quiet >&2 || die "cargo build failed"
  echo target/debug/pinpost
}

# The per-run initramfs: the binary, the guest scripts, certificates from
# the host's `pinpost certs` (the CA key stays on the host) and the
# configs. Appended to the cached one (the kernel unpacks both).
make_run_initrd() { # ARCH BIN OUT
  local arch=$1 bin=$2 out=$3 stage=$RUN/stage-$1 pinpost
  rm -rf "$stage"
  mkdir -p "$stage/usr/bin" "$stage/pe" "$stage/etc/pe"
  cp "$bin" "$stage/usr/bin/pinpost"
  cp scripts/pi-emu/init "$stage/init"
  cp scripts/pi-emu/guest.sh "$stage/pe/guest.sh"
  chmod 755 "$stage/init" "$stage/pe/guest.sh"
  if [ ! -d "$RUN/certs" ]; then
    pinpost=$(host_pinpost)
    (
      cd "$RUN"
      "$OLDPWD/$pinpost" certs ca
      "$OLDPWD/$pinpost" certs broker --host 127.0.0.1 --host localhost
      "$OLDPWD/$pinpost" certs device pi-01
      "$OLDPWD/$pinpost" certs device operator
      "$OLDPWD/$pinpost" certs mosquitto
    ) >"$RUN/certs.log" 2>&1 || die "pinpost certs failed: $(tail -n 3 "$RUN/certs.log")"
  fi
  cp -r "$RUN/certs/broker" "$stage/etc/pe/broker"
  cp -r "$RUN/certs/devices/pi-01" "$stage/etc/pe/pi-01"
  cp -r "$RUN/certs/devices/operator" "$stage/etc/pe/operator"
  cp "$RUN/bme280.expected" "$stage/etc/pe/bme280.expected"
  if find "$stage" -name ca.key | grep -q .; then die "the CA key must not reach the guest"; fi
  [ "$arch" = arm64 ] || rm -rf "$stage/etc/pe/broker"
  pack "$stage" "$out"
}

# ---------------------------------------------------------------- results
declare -a RESULTS=()
failed=0
result() { # PASS|FAIL name detail
  RESULTS+=("$1 $2: $3")
  if [ "$1" = PASS ]; then echo "PASS $2: $3"; else echo "FAIL $2: $3"; failed=$((failed + 1)); fi
}

# The guest's @@PASS/@@FAIL lines of one boot, and a FAIL for each
# expected check it did not report.
collect() { # BOOT EXPECTED...
  local boot=$1 log=$RUN/$1.serial line verdict rest name
  shift
  while IFS= read -r line; do
    line=${line#*@@}
    verdict=${line%% *}
    rest=${line#* }
    result "$verdict" "$boot/${rest%%: *}" "${rest#*: }"
  done < <(tr -d '\r' <"$log" | grep -a -o -E '@@(PASS|FAIL) .*')
  for name in "$@"; do
    grep -a -q -E "@@(PASS|FAIL) $name: " "$log" || result FAIL "$boot/$name" "not reported (see $log)"
  done
}

# boot NAME QEMU MACHINE KERNEL DTB INITRD APPEND [EXTRA QEMU ARGS...]
boot() {
  local name=$1 qemu=$2 machine=$3 kernel=$4 dtb=$5 initrd=$6 append=$7 rc=0 took
  shift 7
  local started=$SECONDS
  python3 scripts/pi-emu/drive.py "$RUN/$name.serial" "$BOOT_TIMEOUT" \
    "$qemu" -M "$machine" -accel tcg,thread=single -display none -monitor none -no-reboot \
    -kernel "$kernel" -dtb "$dtb" -initrd "$initrd" \
    -append "$append pe.boot=$name pe.now=$(date +%s)" -D "$RUN/$name.trace" -d trace:memory_region_ops_write "$@" || rc=$?
  took=$((SECONDS - started))
  BOOT_TIMES+=("$name ${took}s")
  local up
  up=$(tr -d '\r' <"$RUN/$name.serial" | sed -n 's/.*@@INFO up \([0-9.]*\).*/\1/p' | head -n 1)
  if ((rc == 3)); then
    result FAIL "$name/boot" "no end after ${BOOT_TIMEOUT}s: killed (see $RUN/$name.serial)"
  elif ! grep -a -q '@@END' "$RUN/$name.serial"; then
    result FAIL "$name/boot" "the guest did not finish (QEMU exit $rc; see $RUN/$name.serial)"
  else
    result PASS "$name/boot" "${took}s power on to off, checks started ${up:-?} s after the kernel"
  fi
}

declare -a BOOT_TIMES=()

# ---------------------------------------------------------------- boots
# Each boot's checks are functions of scripts/pi-emu/guest.sh, named by
# pe.checks on the kernel command line; the guest reports each by name.
boot_stock() {
  boot stock qemu-system-aarch64 raspi3b "$MAT/arm64/vmlinuz" "$MAT/arm64/stock.dtb" "$RUN/arm64.gz" \
    "$RASPI3_APPEND pe.checks=rppal_refused,auto_picks_cdev,gpio_cdev,run_cdev,outputs_cdev,pwm_cdev_needs_overlay,held_by_gpioset,held_by_pinpost,check_board"
  collect stock rppal-refused auto-picks-cdev gpio-cdev run-cdev/online run-cdev/command-moves-pin \
    run-cdev/result run-cdev/state run-cdev/safe-state outputs-cdev/no-glitch outputs-cdev/initial \
    outputs-cdev/pulse outputs-cdev/soft-pwm pwm-cdev-needs-overlay held-by-gpioset held-by-pinpost check-board
}

boot_relaxed() {
  boot relaxed qemu-system-aarch64 raspi3b "$MAT/arm64/vmlinuz" "$MAT/arm64/stock.dtb" "$RUN/arm64.gz" \
    "$RASPI3_APPEND iomem=relaxed pe.checks=gpio_rppal,run_rppal,outputs_rppal,pwm_rppal,run_cdev"
  collect relaxed gpio-rppal run-rppal/online run-rppal/command-moves-pin run-rppal/result run-rppal/state \
    run-rppal/input run-rppal/safe-state outputs-rppal/no-glitch outputs-rppal/initial outputs-rppal/pulse \
    outputs-rppal/soft-pwm pwm-rppal/alt5 pwm-rppal/sysfs pwm-rppal/on-leaves-pwm \
    run-cdev/online run-cdev/command-moves-pin run-cdev/result run-cdev/state run-cdev/input run-cdev/safe-state
}

boot_overlay() {
  boot overlay qemu-system-aarch64 raspi3b "$MAT/arm64/vmlinuz" "$MAT/arm64/overlay.dtb" "$RUN/arm64.gz" \
    "$RASPI3_APPEND pe.checks=overlay_routes_pwm,pwm_cdev"
  collect overlay overlay-routes-pwm pwm-cdev/alt5 pwm-cdev/sysfs pwm-cdev/on-off-duty
}

boot_i2c() {
  local image=$RUN/bme280.img
  python3 scripts/pi-emu/bme280.py "$image" >"$RUN/bme280.expected"
  # Its own modules, not the system 7.2's (which it refuses to load).
  # The EEPROM at 0x20 stands in for an MCP23017's register file. It has no
  # drive: QEMU counts a drive's size in 512-byte sectors, so a 256-byte
  # image is refused, and with 512 bytes and a one-byte pointer the
  # EEPROM's address bit 8 is the previous pointer's bit 0, so writes
  # would land in either half. It starts zeroed; the guest writes the
  # chip's power-on registers into it (guest.sh, mcp23017_pins).
  QEMU_MODULE_DIR=$MAT/qemu10/usr/lib/x86_64-linux-gnu/qemu \
    boot i2c "$QEMU10" raspi3b "$MAT/arm64/vmlinuz" "$MAT/arm64/stock.dtb" "$RUN/arm64.gz" \
    "$RASPI3_APPEND pe.checks=bme280_reading,bme280_absent,i2c_scan,mcp23017_pins" \
    -L "$MAT/qemu10/usr/share/qemu" \
    -drive "if=none,id=bme280,format=raw,file=$image" \
    -device at24c-eeprom,bus=i2c-bus.1,address=0x76,rom-size=512,address-size=1,writable=off,drive=bme280 \
    -device tmp105,bus=i2c-bus.1,address=0x48 \
    -device at24c-eeprom,bus=i2c-bus.1,address=0x20,rom-size=256,address-size=1,writable=on
  collect i2c bme280-reading bme280-absent i2c-scan mcp23017/setup mcp23017/inputs mcp23017/command \
    mcp23017/forgot-setup mcp23017/ghost
}

boot_pi2() {
  # nosmp: with its 4 cores under QEMU 7.2, Debian's armmp kernel stops
  # after the UART probes and never runs /init (measured 2026-12-06).
  boot pi2 qemu-system-arm raspi2b "$MAT/armhf/vmlinuz" "$MAT/armhf/pi2.dtb" "$RUN/armhf.gz" \
    "$RASPI3_APPEND nosmp iomem=relaxed pe.checks=gpio_rppal,gpio_cdev"
  collect pi2 gpio-rppal gpio-cdev
}

# ---------------------------------------------------------------- main
ALL_BOOTS=(stock relaxed overlay i2c pi2)
boots=("$@")
((${#boots[@]})) || boots=("${ALL_BOOTS[@]}")
for b in "${boots[@]}"; do
  case " ${ALL_BOOTS[*]} " in *" $b "*) ;; *) die "no boot named $b (boots: ${ALL_BOOTS[*]})" ;; esac
done

install_tools
[ -x "$ARM64_BIN" ] || die "no $ARM64_BIN: scripts/cross-build.sh aarch64-unknown-linux-gnu builds it"
[ -x "$ARMHF_BIN" ] || die "no $ARMHF_BIN: scripts/cross-build.sh armv7-unknown-linux-gnueabihf builds it"
mkdir -p "$MAT" "$RUN"
t_material=$SECONDS
make_arm64_material
make_armhf_material
make_qemu10
material_seconds=$((SECONDS - t_material))
rm -rf "$RUN/certs" "$RUN"/*.serial
python3 scripts/pi-emu/bme280.py "$RUN/bme280.img" >"$RUN/bme280.expected"
make_run_initrd arm64 "$ARM64_BIN" "$RUN/arm64-run.gz"
make_run_initrd armhf "$ARMHF_BIN" "$RUN/armhf-run.gz"
cat "$MAT/arm64/initrd.gz" "$RUN/arm64-run.gz" >"$RUN/arm64.gz"
cat "$MAT/armhf/initrd.gz" "$RUN/armhf-run.gz" >"$RUN/armhf.gz"

t_checks=$SECONDS
for b in "${boots[@]}"; do
  "boot_$b"
done

echo
echo "pi-emu: boots: ${BOOT_TIMES[*]}"
echo "pi-emu: $((${#RESULTS[@]} - failed)) passed, $failed failed; boots and checks took $((SECONDS - t_checks)) s, the material $material_seconds s (0: cached)"
((failed == 0))
