#!/bin/sh
# shellcheck shell=dash # busybox ash: `local` is there
# The checks inside the emulated Pi (busybox sh), run by scripts/pi-emu/init
# with the serial console as stdin and stdout:
#
#   guest.sh BOOT CHECK,CHECK,...
#
# Each check is a function below; it prints `@@PASS name: detail` or
# `@@FAIL name: why`. Pin levels and functions come from the machine, not
# from pinpost: `xp ADDR` prints `@@XP ADDR` and reads the answer the host
# (scripts/pi-emu/drive.py) got from QEMU's monitor.
BOOT=$1
CHECKS=$2
PREFIX=pinpost/pi-01
GPIO=0x3f200000
GPLEV0=0x3f200034
GPSET0=0x3f20001c
GPCLR0=0x3f200028
PWMSYS=/sys/class/pwm/pwmchip0

stty -echo 2>/dev/null
# The console, for requests made inside $(...), whose stdout is captured.
exec 3>&1
pass() { echo "@@PASS $1: $2"; }
fail() { echo "@@FAIL $1: $2"; }
info() { echo "@@INFO $*"; }
# One line: what a command printed, for a PASS/FAIL detail.
oneline() { tr '\n' ' ' | cut -c1-400; }

# ---------------------------------------------------------------- the machine
xp() { # ADDR: one 32-bit word of physical memory, read by QEMU's monitor
  local tag value
  echo "@@XP $1" >&3
  read -r tag value
  [ "$tag" = "@@=" ] || value=ERROR
  echo "$value"
}
level() { # PIN: its GPLEV0 bit
  local v
  v=$(xp $GPLEV0)
  echo $(((v >> $1) & 1))
}
function_of() { # PIN: its GPFSEL field (0 input, 1 output, 2 ALT5, 4 ALT0...)
  local v
  v=$(xp $((GPIO + 4 * ($1 / 10))))
  echo $(((v >> (3 * ($1 % 10))) & 7))
}
# Waits up to SECONDS for PIN's level to be WANT (and, given a PID, only
# while that process runs).
wait_level() { # PIN WANT SECONDS [PID]
  local i=0
  while [ "$(level "$1")" != "$2" ]; do
    [ -z "$4" ] || kill -0 "$4" 2>/dev/null || return 1
    i=$((i + 1))
    [ "$i" -le $(($3 * 5)) ] || return 1
    sleep 0.2
  done
}
wait_for() { # SECONDS COMMAND...
  local tries=$(($1 * 5))
  shift
  while ! "$@" >/dev/null 2>&1; do
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || return 1
    sleep 0.2
  done
}
# Drives an input's level from the guest, as a wire would: QEMU raises
# GPLEV for GPSET on an input pin (needs iomem=relaxed).
relaxed() { grep -q 'iomem=relaxed' /proc/cmdline; }
drive() { # PIN 1|0
  if [ "$2" = 1 ]; then devmem $GPSET0 32 $((1 << $1)); else devmem $GPCLR0 32 $((1 << $1)); fi
}

# ---------------------------------------------------------------- broker
# The operator's certificate; the broker makes its name the client id, so
# the subscriber (port 8883: "operator") and the publisher (8884:
# "CN=operator") use one listener each, or each would end the other.
OPKEYS="--cafile /etc/pe/operator/ca.crt --cert /etc/pe/operator/operator.crt --key /etc/pe/operator/operator.key -h 127.0.0.1"
broker_up() {
  [ -n "$BROKER" ] && return 0
  mkdir -p /etc/mosquitto/certs /etc/mosquitto/conf.d
  cp /etc/pe/broker/ca.crt /etc/pe/broker/broker.crt /etc/pe/broker/broker.key /etc/mosquitto/certs/
  chmod 644 /etc/mosquitto/certs/*
  cp /etc/pe/broker/pinpost.conf /etc/mosquitto/conf.d/
  cp /etc/pe/broker/pinpost.acl /etc/mosquitto/pinpost.acl
  printf 'per_listener_settings false\nlog_dest stderr\ninclude_dir /etc/mosquitto/conf.d\n' >/etc/mosquitto/mosquitto.conf
  mosquitto -c /etc/mosquitto/mosquitto.conf >/tmp/mosquitto.log 2>&1 &
  BROKER=$!
  if wait_for 30 grep -q 'listen socket on port 8884' /tmp/mosquitto.log; then
    info "mosquitto up: $(oneline </tmp/mosquitto.log)"
  else
    info "mosquitto did not start: $(oneline </tmp/mosquitto.log)"
  fi
}
sub_start() { # FILE
  : >"$1"
  # shellcheck disable=SC2086 # OPKEYS is a list of words
  mosquitto_sub $OPKEYS -p 8883 -q 1 -v -t "$PREFIX/#" >"$1" 2>&1 &
  SUB=$!
  sleep 1
}
sub_stop() { kill "$SUB" 2>/dev/null; wait "$SUB" 2>/dev/null; }
pub() { # TOPIC PAYLOAD
  # shellcheck disable=SC2086
  mosquitto_pub $OPKEYS -p 8884 -q 1 -t "$1" -m "$2"
}
# The config for `pinpost run` on BOARD, with the lines given after it.
agent_config() { # FILE BOARD [TOML...]
  local f=$1 board=$2 line
  shift 2
  cat >"$f" <<EOF
[device]
id = "pi-01"
[broker]
host = "127.0.0.1"
port = 8883
cli_port = 8884
connect_timeout = "10s"
[broker.tls]
ca_file = "/etc/pe/pi-01/ca.crt"
cert_file = "/etc/pe/pi-01/pi-01.crt"
key_file = "/etc/pe/pi-01/pi-01.key"
[reconnect]
initial = "1s"
max = "2s"
[outbox]
path = "/tmp/outbox-$board"
[board]
kind = "$board"
EOF
  for line in "$@"; do echo "$line" >>"$f"; done
}
# Starts `pinpost run` and waits for its status online (or its end);
# AGENT is its pid, its log /tmp/NAME.log. When it did not come online,
# each CHECK fails with what it said, and this returns 1.
agent_start() { # NAME CONFIG SUBSCRIBER_FILE CHECK...
  local name=$1 config=$2 sub=$3 check
  shift 3
  pinpost run --config "$config" >"/tmp/$name.log" 2>&1 &
  AGENT=$!
  wait_for 60 sh -c "grep -q '^$PREFIX/status online' $sub || ! kill -0 $AGENT"
  grep -q "^$PREFIX/status online" "$sub" && return 0
  kill -TERM "$AGENT" 2>/dev/null
  wait "$AGENT"
  rc=$?
  for check in "$@"; do
    fail "$check" "the agent did not come online (exit $rc): $(oneline <"/tmp/$name.log")"
  done
  sub_stop
  return 1
}
seen() { grep -q "$2" "$1"; } # FILE REGEX

# ---------------------------------------------------------------- GPIO
# rppal: `gpio write` leaves the pin driven; GPLEV and GPFSEL agree, and
# `gpio read` reads it back.
gpio_roundtrip_rppal() { # NAME BOARD
  name=$1 board=$2 bad='' seen_=''
  for pin in 17 22 27; do
    for lv in on off; do
      want=1 word=high
      [ "$lv" = off ] && want=0 word=low
      out=$(pinpost gpio --board "$board" write "$pin" "$lv" 2>&1) || { bad="$bad; write $pin $lv: $out"; continue; }
      got=$(level "$pin") fn=$(function_of "$pin")
      back=$(pinpost gpio --board "$board" read "$pin" 2>&1)
      seen_="$seen_ $pin=$lv:GPLEV$got,FSEL$fn,read '$back'"
      [ "$got" = "$want" ] || bad="$bad; write $pin $lv left GPLEV bit $got"
      [ "$fn" = 1 ] || bad="$bad; GPIO$pin's function is $fn after write, not output (1)"
      case $back in *"GPIO$pin $word"*) ;; *) bad="$bad; read $pin after $lv: $back" ;; esac
    done
  done
  if [ -z "$bad" ]; then pass "$name" "GPIO17/22/27 on/off:$seen_"; else fail "$name" "${bad#; }"; fi
}

# cdev: `gpio write` holds the line (here for --for 2s); GPLEV and GPFSEL
# are read while it holds; after it releases the line, the kernel makes it
# an input, whose GPLEV QEMU keeps, so `gpio read` reads the level back.
gpio_roundtrip_cdev() { # NAME
  name=$1 bad='' seen_=''
  for pin in 17 22 27; do
    for lv in on off; do
      want=1 word=high
      [ "$lv" = off ] && want=0 word=low
      pinpost gpio --board cdev write --for 2s "$pin" "$lv" >/tmp/write.log 2>&1 &
      w=$!
      wait_level "$pin" "$want" 10 "$w"
      got=$(level "$pin") fn=$(function_of "$pin")
      wait "$w"
      rc=$?
      said=$(oneline </tmp/write.log)
      back=$(pinpost gpio --board cdev read "$pin" 2>&1)
      seen_="$seen_ $pin=$lv:GPLEV$got,FSEL$fn,read '$back'"
      [ "$rc" = 0 ] || { bad="$bad; write --for 2s $pin $lv: exit $rc: $said"; continue; }
      [ "$got" = "$want" ] || bad="$bad; write $pin $lv held GPLEV bit $got"
      [ "$fn" = 1 ] || bad="$bad; GPIO$pin's function is $fn while held, not output (1)"
      case $said in *[Hh]old*) ;; *) bad="$bad; write does not say it holds the line: $said" ;; esac
      case $back in *"GPIO$pin $word"*) ;; *) bad="$bad; read $pin after $lv: $back" ;; esac
    done
  done
  if [ -z "$bad" ]; then pass "$name" "GPIO17/22/27 on/off:$seen_"; else fail "$name" "${bad#; }"; fi
}

gpio_rppal() { gpio_roundtrip_rppal gpio-rppal rppal; }
gpio_cdev() { gpio_roundtrip_cdev gpio-cdev; }

# ---------------------------------------------------------------- the agent
# `pinpost run` on BOARD against the guest's Mosquitto: relay on GPIO27
# (safe_state off), button on GPIO22 polled every 100 ms.
run_agent() { # BOARD
  board=$1 n=run-$1
  broker_up
  agent_config "/tmp/$n.toml" "$board" \
    '[[output]]' 'name = "relay"' 'pin = 27' 'initial = "off"' 'safe_state = "off"' \
    '[[input]]' 'name = "button"' 'pin = 22' 'debounce = "0ms"' 'poll_interval = "100ms"'
  relaxed && drive 22 0
  sub_start "/tmp/$n.sub"
  checks="$n/online $n/command-moves-pin $n/result $n/state $n/safe-state"
  relaxed && checks="$checks $n/input"
  # shellcheck disable=SC2086 # a list of names
  agent_start "$n" "/tmp/$n.toml" "/tmp/$n.sub" $checks || return
  pass "$n/online" "status online on the broker"
  before=$(level 27)
  pub "$PREFIX/cmd/relay" '{"id":"e1","action":"on"}'
  if wait_level 27 1 20; then
    pass "$n/command-moves-pin" "cmd/relay on: GPLEV bit 27 $before -> 1, GPFSEL function $(function_of 27)"
  else
    fail "$n/command-moves-pin" "cmd/relay on: GPLEV bit 27 still $(level 27) after 20 s (was $before); agent: $(oneline <"/tmp/$n.log")"
  fi
  if wait_for 20 seen "/tmp/$n.sub" "^$PREFIX/cmd/relay/result {\"id\":\"e1\",\"ok\":true}"; then
    pass "$n/result" "$(grep "cmd/relay/result" "/tmp/$n.sub" | head -n 1)"
  else
    fail "$n/result" "no ok result: $(grep "cmd/relay/result" "/tmp/$n.sub" | oneline)"
  fi
  if wait_for 20 sh -c "grep '^$PREFIX/output/relay ' /tmp/$n.sub | tail -n 1 | grep -q '\"value\":true'"; then
    pass "$n/state" "$(grep "^$PREFIX/output/relay " "/tmp/$n.sub" | tail -n 1)"
  else
    fail "$n/state" "output/relay not true: $(grep "/output/relay " "/tmp/$n.sub" | oneline)"
  fi
  # Inputs need the guest to drive a pin: /dev/mem, only under iomem=relaxed.
  if relaxed; then
    drive 22 1
    if wait_for 20 sh -c "grep '^$PREFIX/input/button ' /tmp/$n.sub | tail -n 1 | grep -q '\"value\":true'"; then
      drive 22 0
      if wait_for 20 sh -c "grep '^$PREFIX/input/button ' /tmp/$n.sub | tail -n 1 | grep -q '\"value\":false'"; then
        pass "$n/input" "GPSET/GPCLR on GPIO22 published: $(grep "^$PREFIX/input/button " "/tmp/$n.sub" | tail -n 2 | oneline)"
      else
        fail "$n/input" "GPCLR on GPIO22 not published: $(grep "/input/button " "/tmp/$n.sub" | oneline)"
      fi
    else
      fail "$n/input" "GPSET on GPIO22 (GPLEV bit $(level 22)) not published: $(grep "/input/button " "/tmp/$n.sub" | oneline); agent: $(oneline <"/tmp/$n.log")"
    fi
  fi
  kill -TERM "$AGENT"
  wait "$AGENT"
  rc=$?
  after=$(level 27)
  if [ "$after" = 0 ] && [ "$rc" = 0 ]; then
    pass "$n/safe-state" "SIGTERM: exit 0, GPLEV bit 27 1 -> 0 (safe_state off), GPFSEL function $(function_of 27)"
  else
    fail "$n/safe-state" "SIGTERM: exit $rc, GPLEV bit 27 is $after; agent: $(tail -n 3 "/tmp/$n.log" | oneline)"
  fi
  sub_stop
}
run_rppal() { run_agent rppal; }
run_cdev() { run_agent cdev; }

# ---------------------------------------------------------------- outputs
# Asks the host for QEMU's trace of device-register writes (on), or stops
# it and names what the host judges afterwards (off NAME PIN LEVEL).
trace() { # on | off NAME PIN LEVEL
  local tag rest
  echo "@@TRACE $*" >&3
  read -r tag rest
}

# The agent's outputs on BOARD, beyond on and off: a relay with initial on
# must never be seen low once it is an output (QEMU traces every register
# write while pinpost starts; the host judges them), a pulse goes and comes
# back by itself, software PWM on a pin without a channel toggles the pin.
outputs_agent() { # BOARD
  board=$1 n=outputs-$1
  broker_up
  agent_config "/tmp/$n.toml" "$board" \
    '[[output]]' 'name = "lamp"' 'pin = 23' 'initial = "on"' \
    '[[output]]' 'name = "door"' 'pin = 24' 'initial = "off"' \
    '[[output]]' 'name = "dimmer"' 'pin = 25' 'initial = "off"' 'pwm = true'
  sub_start "/tmp/$n.sub"
  before=$(level 23)
  trace on
  agent_start "$n" "/tmp/$n.toml" "/tmp/$n.sub" "$n/no-glitch" "$n/initial" "$n/pulse" "$n/soft-pwm" || {
    trace off
    return
  }
  trace off "$n/no-glitch" 23 1
  if [ "$before" = 0 ] && [ "$(level 23)" = 1 ] && [ "$(function_of 23)" = 1 ]; then
    pass "$n/initial" "GPIO23 (initial on): GPLEV 0 before pinpost, 1 and an output once it is online"
  else
    fail "$n/initial" "GPIO23 (initial on): GPLEV $before before, $(level 23) with function $(function_of 23) once online"
  fi
  # A pulse of 1.5 s: high while it lasts, low again without a command.
  pub "$PREFIX/cmd/door" '{"id":"u1","action":"pulse","ms":1500}'
  if wait_level 24 1 10; then
    up=$(date +%s)
    if wait_level 24 0 10; then
      pass "$n/pulse" "cmd/door pulse 1.5 s: GPLEV bit 24 went 1 and came back to 0 by itself ($(($(date +%s) - up)) s later by the guest's clock); $(grep 'cmd/door/result' "/tmp/$n.sub" | head -n 1)"
    else
      fail "$n/pulse" "GPIO24 stayed high after its 1.5 s pulse; agent: $(oneline <"/tmp/$n.log")"
    fi
  else
    fail "$n/pulse" "cmd/door pulse: GPLEV bit 24 never 1; $(grep 'cmd/door/result' "/tmp/$n.sub" | oneline)"
  fi
  # Software PWM at 10 Hz, half duty: sampled 40 times through the monitor.
  pub "$PREFIX/cmd/dimmer" '{"id":"w1","action":"pwm","duty":0.5,"hz":10}'
  wait_for 20 seen "/tmp/$n.sub" "cmd/dimmer/result {\"id\":\"w1\",\"ok\":true}"
  highs=0 lows=0 i=0
  while [ $i -lt 40 ]; do
    if [ "$(level 25)" = 1 ]; then highs=$((highs + 1)); else lows=$((lows + 1)); fi
    i=$((i + 1))
    sleep 0.05
  done
  fn=$(function_of 25)
  pub "$PREFIX/cmd/dimmer" '{"id":"w2","action":"off"}'
  wait_for 20 seen "/tmp/$n.sub" "cmd/dimmer/result {\"id\":\"w2\""
  sleep 0.3
  still=0 i=0
  while [ $i -lt 10 ]; do
    [ "$(level 25)" = 0 ] || still=$((still + 1))
    i=$((i + 1))
    sleep 0.05
  done
  if [ $highs -ge 5 ] && [ $lows -ge 5 ] && [ "$fn" = 1 ] && [ $still = 0 ]; then
    pass "$n/soft-pwm" "GPIO25 at 10 Hz, 50 %: $highs of 40 samples high, $lows low, function output; after off: low in 10 of 10"
  else
    fail "$n/soft-pwm" "GPIO25 at 10 Hz, 50 %: $highs high, $lows low of 40, function $fn; after off: $still of 10 still high; $(grep 'cmd/dimmer/result' "/tmp/$n.sub" | oneline)"
  fi
  kill -TERM "$AGENT"
  wait "$AGENT"
  sub_stop
}
outputs_cdev() { outputs_agent cdev; }
outputs_rppal() { outputs_agent rppal; }

# ---------------------------------------------------------------- PWM
# The agent with a PWM output on GPIO18 (PWM0); a pwm command at 1 kHz,
# 25 %, then on and off.
pwm_agent() { # BOARD
  board=$1 n=pwm-$1
  broker_up
  agent_config "/tmp/$n.toml" "$board" \
    '[[output]]' 'name = "fan"' 'pin = 18' 'initial = "off"' 'safe_state = "off"' 'pwm = true'
  sub_start "/tmp/$n.sub"
  last=on-leaves-pwm
  [ "$board" = cdev ] && last=on-off-duty
  agent_start "$n" "/tmp/$n.toml" "/tmp/$n.sub" "$n/alt5" "$n/sysfs" "$n/$last" || return
  fn0=$(function_of 18)
  pub "$PREFIX/cmd/fan" '{"id":"p1","action":"pwm","duty":0.25,"hz":1000}'
  wait_for 20 seen "/tmp/$n.sub" "cmd/fan/result {\"id\":\"p1\""
  fn=$(function_of 18)
  result=$(grep "cmd/fan/result {\"id\":\"p1\"" "/tmp/$n.sub" | head -n 1)
  if [ "$fn" = 2 ]; then
    pass "$n/alt5" "GPFSEL1 GPIO18 function $fn0 -> 2 (ALT5, PWM0); $result"
  else
    fail "$n/alt5" "GPIO18 function $fn0 -> $fn, not 2 (ALT5); $result; agent: $(oneline <"/tmp/$n.log")"
  fi
  p=$(cat $PWMSYS/pwm0/period 2>&1) d=$(cat $PWMSYS/pwm0/duty_cycle 2>&1) e=$(cat $PWMSYS/pwm0/enable 2>&1)
  if [ "$p" = 1000000 ] && [ "$d" = 250000 ] && [ "$e" = 1 ]; then
    pass "$n/sysfs" "pwmchip0/pwm0 period $p ns, duty_cycle $d ns, enable $e (1 kHz, 25 %); $(xp 0x3f20c014) in DAT1"
  else
    fail "$n/sysfs" "pwmchip0/pwm0 period '$p' duty_cycle '$d' enable '$e' (want 1000000, 250000, 1)"
  fi
  pub "$PREFIX/cmd/fan" '{"id":"p2","action":"on"}'
  wait_for 20 seen "/tmp/$n.sub" "cmd/fan/result {\"id\":\"p2\""
  fn_on=$(function_of 18) lv_on=$(level 18) d_on=$(cat $PWMSYS/pwm0/duty_cycle 2>/dev/null)
  pub "$PREFIX/cmd/fan" '{"id":"p3","action":"off"}'
  wait_for 20 seen "/tmp/$n.sub" "cmd/fan/result {\"id\":\"p3\""
  fn_off=$(function_of 18) lv_off=$(level 18) d_off=$(cat $PWMSYS/pwm0/duty_cycle 2>/dev/null)
  results=$(grep -E "cmd/fan/result \{\"id\":\"p[23]\"" "/tmp/$n.sub" | oneline)
  if [ "$board" = cdev ]; then
    # The character device keeps the pin in ALT5: on/off are 100 %/0 %.
    if [ "$fn_on" = 2 ] && [ "$fn_off" = 2 ] && [ "$d_on" = "$p" ] && [ "$d_off" = 0 ]; then
      pass "$n/on-off-duty" "on: ALT5, duty_cycle $d_on of $p; off: ALT5, duty_cycle $d_off; $results"
    else
      fail "$n/on-off-duty" "on: function $fn_on duty_cycle '$d_on'; off: function $fn_off duty_cycle '$d_off' (want 2, $p; 2, 0); $results"
    fi
  else
    if [ "$fn_on" = 1 ] && [ "$lv_on" = 1 ] && [ "$fn_off" = 1 ] && [ "$lv_off" = 0 ]; then
      pass "$n/on-leaves-pwm" "on: function 1 (output) GPLEV 1; off: function 1 GPLEV 0; $results"
    else
      fail "$n/on-leaves-pwm" "on: function $fn_on GPLEV $lv_on; off: function $fn_off GPLEV $lv_off (want 1 1, 1 0); $results"
    fi
  fi
  kill -TERM "$AGENT"
  wait "$AGENT"
  sub_stop
}
pwm_rppal() { pwm_agent rppal; }
pwm_cdev() { pwm_agent cdev; }

# The overlay dtb routed PWM0 to GPIO18 at boot (the pwm driver's pinctrl).
overlay_routes_pwm() {
  fn=$(function_of 18)
  if [ "$fn" = 2 ] && [ -d $PWMSYS ]; then
    pass overlay-routes-pwm "GPIO18 function 2 (ALT5) at boot, $(ls -d $PWMSYS) present"
  else
    fail overlay-routes-pwm "GPIO18 function $fn at boot, $(ls -d $PWMSYS 2>&1)"
  fi
}

# Debian's dtb routes PWM to GPIO40/41: PWM on GPIO18 through the character
# device must name the dtoverlay line to add.
pwm_cdev_needs_overlay() {
  broker_up
  agent_config /tmp/pwm-stock.toml cdev \
    '[[output]]' 'name = "fan"' 'pin = 18' 'initial = "off"' 'pwm = true'
  sub_start /tmp/pwm-stock.sub
  pinpost run --config /tmp/pwm-stock.toml >/tmp/pwm-stock.log 2>&1 &
  AGENT=$!
  wait_for 60 sh -c "grep -q '^$PREFIX/status online' /tmp/pwm-stock.sub || ! kill -0 $AGENT"
  if kill -0 "$AGENT" 2>/dev/null; then
    pub "$PREFIX/cmd/fan" '{"id":"s1","action":"pwm","duty":0.5,"hz":1000}'
    wait_for 20 seen /tmp/pwm-stock.sub "cmd/fan/result"
    kill -TERM "$AGENT"
  fi
  wait "$AGENT"
  said=$(cat /tmp/pwm-stock.log /tmp/pwm-stock.sub | grep -i -E 'pwm|overlay' | oneline)
  if grep -q 'dtoverlay=pwm' /tmp/pwm-stock.log /tmp/pwm-stock.sub; then
    pass pwm-cdev-needs-overlay "$said"
  else
    fail pwm-cdev-needs-overlay "no 'dtoverlay=pwm' in the agent's log or result: ${said:-$(oneline </tmp/pwm-stock.log)}"
  fi
  sub_stop
}

# ---------------------------------------------------------------- errors
# Debian's kernel has no /dev/gpiomem and refuses /dev/mem at the GPIO
# block: rppal must say so, not blame the gpio group.
rppal_refused() {
  out=$(pinpost gpio --board rppal read 17 2>&1)
  rc=$?
  info "rppal on this kernel (exit $rc): $out"
  case $out in
  *"gpio group"*) fail rppal-refused "exit $rc, the wrong advice: $(echo "$out" | oneline)" ;;
  *gpiomem* | *iomem*)
    if [ "$rc" != 0 ]; then pass rppal-refused "exit $rc: $(echo "$out" | oneline)"; else fail rppal-refused "exit 0: $(echo "$out" | oneline)"; fi ;;
  *) fail rppal-refused "exit $rc, names neither gpiomem nor iomem=relaxed: $(echo "$out" | oneline)" ;;
  esac
}

# auto on a kernel without /dev/gpiomem: the character device, said so.
auto_picks_cdev() {
  out=$(pinpost gpio read 17 2>&1)
  rc=$?
  if [ "$rc" = 0 ] && echo "$out" | grep -q -i -E 'cdev|character device'; then
    pass auto-picks-cdev "exit 0: $(echo "$out" | oneline)"
  else
    fail auto-picks-cdev "exit $rc, no word of the character device: $(echo "$out" | oneline)"
  fi
}

# A line another consumer holds: the error names the holder.
held_by() { # NAME HOLDER PIN COMMAND...
  name=$1 holder=$2 pin=$3
  shift 3
  "$@" >/tmp/holder.log 2>&1 &
  h=$!
  wait_for 10 sh -c "gpioinfo gpiochip0 | grep -E '^[[:space:]]*line[[:space:]]+$pin:' | grep -q '\"$holder\"'"
  held=$(gpioinfo gpiochip0 | grep -E "^[[:space:]]*line[[:space:]]+$pin:" | oneline)
  out=$(pinpost gpio --board cdev read "$pin" 2>&1)
  rc=$?
  kill -TERM "$h" 2>/dev/null
  wait "$h" 2>/dev/null
  if [ "$rc" != 0 ] && echo "$out" | grep -q "$holder"; then
    pass "$name" "gpioinfo: $held; pinpost exit $rc: $(echo "$out" | oneline)"
  else
    fail "$name" "gpioinfo: $held; pinpost exit $rc, does not name $holder: $(echo "$out" | oneline)"
  fi
}
# `pinpost check` on the board, without claiming a line: the backend and
# why, a line another program holds, and the overlay a PWM pin lacks.
check_board() {
  agent_config /tmp/check.toml auto \
    '[[input]]' 'name = "button"' 'pin = 17' \
    '[[output]]' 'name = "fan"' 'pin = 18' 'pwm = true'
  gpioset --mode=signal gpiochip0 17=1 >/tmp/holder.log 2>&1 &
  h=$!
  wait_for 10 sh -c "gpioinfo gpiochip0 | grep -E '^[[:space:]]*line[[:space:]]+17:' | grep -q gpioset"
  out=$(pinpost check --offline --config /tmp/check.toml 2>&1)
  kill -TERM "$h" 2>/dev/null
  wait "$h" 2>/dev/null
  bad=''
  echo "$out" | grep -q 'board: the kernel.s GPIO character device /dev/gpiochip0 "pinctrl-bcm2835" (54 lines) (auto: there is no /dev/gpiomem' || bad="$bad; no board line"
  echo "$out" | grep -q '! GPIO17 is already in use by "gpioset"' || bad="$bad; GPIO17's holder not named"
  echo "$out" | grep -q '! GPIO18: hardware PWM needs .*dtoverlay=pwm,pin=18,func=2' || bad="$bad; no overlay advice for GPIO18"
  if [ -z "$bad" ]; then
    pass check-board "$(echo "$out" | grep -E 'board:|GPIO1[78]' | oneline)"
  else
    fail check-board "${bad#; }: $(echo "$out" | oneline)"
  fi
}

held_by_gpioset() { held_by held-by-gpioset gpioset 17 gpioset --mode=signal gpiochip0 17=1; }
held_by_pinpost() { held_by held-by-pinpost pinpost 22 pinpost gpio --board cdev write --for 20s 22 on; }

# ---------------------------------------------------------------- I2C
# QEMU 10's at24c EEPROM at 0x76 on BSC1 answers as a BME280 whose
# registers the host wrote; the host's reading of the datasheet is in
# /etc/pe/bme280.expected.
# The sensor NAME's lines in `pinpost sensors` output FILE against the
# host's expected readings: sets `got` (what was read and wanted) and `bad`
# (the measurements missing or off; empty when all agree).
bme280_compare() { # NAME FILE
  local what want value ok
  bad='' got=''
  while read -r what want; do
    value=$(awk -v n="$1" -v m="$what" '$1 == n && $2 == m { print $3 }' "$2")
    got="$got $what $value (want $want)"
    ok=$(awk -v v="$value" -v w="$want" -v m="$what" 'BEGIN {
      tol = (m == "pressure") ? 0.1 : 0.01
      d = v - w; if (d < 0) d = -d
      print (v != "" && d <= tol) ? 1 : 0 }')
    [ "$ok" = 1 ] || bad="$bad $what"
  done </etc/pe/bme280.expected
}

bme280_reading() {
  cat >/tmp/i2c.toml <<'EOF'
[device]
id = "pi-01"
[broker]
host = "127.0.0.1"
[board]
kind = "sim"
[[sensor]]
name = "room"
kind = "bme280"
bus = 1
address = 0x76
retries = 0
[[sensor]]
name = "ghost"
kind = "bme280"
bus = 1
address = 0x77
retries = 0
EOF
  info "i2c devices: $(echo /dev/i2c-*); $(for d in /sys/bus/i2c/devices/i2c-*; do echo "$d $(cat "$d/name")"; done | oneline)"
  # Busybox's own reads of the same registers, to tell pinpost's errors
  # from the emulated bus's: the chip id three times and 0x89 after reads
  # that leave the EEPROM's pointer odd and even (its address bit 8 is the
  # last pointer's bit 0; scripts/pi-emu/bme280.py), want 0x60 and 0x6b.
  reads=''
  for reg in 0xd0 0xd0 0xd0 0x89 0x89 0x88 0x89; do reads="$reads $reg=$(i2cget -y 1 0x76 $reg 2>&1)"; done
  info "busybox i2cget -y 1 0x76:$reads; i2cdump: $(i2cdump -y 1 0x76 b 2>&1 | grep -E '^(80|d0|e0|f0):' | oneline)"
  pinpost sensors --config /tmp/i2c.toml >/tmp/sensors.out 2>&1
  info "pinpost sensors (exit $?): $(oneline </tmp/sensors.out)"
  bme280_compare room /tmp/sensors.out
  if [ -z "$bad" ]; then
    pass bme280-reading "room at i2c-1 0x76:$got"
  else
    fail bme280-reading "wrong or missing:$bad;$got; pinpost sensors: $(oneline </tmp/sensors.out)"
  fi
}

# The same table's line for 0x77, where nothing answers: a sentence that
# names the bus (i2c-1) and the address, without Rust's debug output of
# the error (`Io(Os { code: 121, ... })`).
bme280_absent() {
  line=$(grep '^ghost' /tmp/sensors.out | oneline)
  if [ -z "$line" ]; then
    fail bme280-absent "no line for ghost: $(oneline </tmp/sensors.out)"
  elif ! echo "$line" | grep -q '0x77' || ! echo "$line" | grep -q 'i2c-1'; then
    fail bme280-absent "does not name both i2c-1 and 0x77: $line"
  elif echo "$line" | grep -q -F -e 'Os {' -e 'Io('; then
    fail bme280-absent "Rust debug output in the sentence: $line"
  else
    pass bme280-absent "$line"
  fi
}

# `pinpost sensors --scan` on the same bus, which also holds QEMU's tmp105
# at 0x48 and the MCP23017 stand-in at 0x20: i2c-1 lists 0x76 as a BME280
# (its id register 0xD0 is 0x60), 0x48 with the chips known there and 0x20
# as a GPIO expander, and no address where nothing is (every other address
# on every bus, 0x77 and 0x27 among them); the [[sensor]] section it
# prints for 0x76, pasted into a config, reads what bme280_reading reads.
i2c_scan() {
  pinpost sensors --scan >/tmp/scan.out 2>&1
  rc=$?
  info "pinpost sensors --scan (exit $rc): $(tr '\n' ' ' </tmp/scan.out)"
  # The bus lines and the addresses under them, as "i2c-N 0xAA  words".
  listed=$(awk '/^I2C bus [0-9]+ / { bus = "i2c-" $3; next }
    /^[^ ]/ { bus = "" } bus != "" && /^  0x[0-9a-f][0-9a-f]  / { print bus " " substr($0, 3) }' /tmp/scan.out)
  bad=''
  [ "$rc" = 0 ] || bad="$bad; exit $rc"
  echo "$listed" | grep -q '^i2c-1 0x76  BME280 (id 0x60' || bad="$bad; i2c-1 does not list 0x76 as a BME280 (id 0x60)"
  case $(echo "$listed" | grep '^i2c-1 0x48  ') in
  *ADS1115*TMP102*) ;;
  *) bad="$bad; i2c-1 does not list 0x48 (QEMU's tmp105) with the chips known there (ADS1115, TMP102)" ;;
  esac
  echo "$listed" | grep -q '^i2c-1 0x20  .*MCP23017' || bad="$bad; i2c-1 does not list 0x20 as an MCP23017 (GPIO expander)"
  extra=$(echo "$listed" | grep -v -E '^i2c-1 0x(20|48|76)  ' | grep . | cut -c1-12 | oneline)
  [ -z "$extra" ] || bad="$bad; listed where no device is: $extra"
  echo "$listed" | grep -q ' 0x77  ' && bad="$bad; 0x77 listed (nothing is there)"
  # The printed section for 0x76, from its [[sensor]] line to the blank line.
  section=$(awk '/^\[\[sensor\]\]$/ { s = $0; on = 1; next }
    on && /^$/ { if (s ~ /address = 0x76/) print s; on = 0; next }
    on { s = s "\n" $0 }
    END { if (on && s ~ /address = 0x76/) print s }' /tmp/scan.out)
  if [ -z "$section" ]; then
    bad="$bad; no [[sensor]] section for 0x76"
    got=''
  else
    printf '[device]\nid = "pi-01"\n[broker]\nhost = "127.0.0.1"\n[board]\nkind = "sim"\n%s\n' "$section" >/tmp/scan.toml
    name=$(sed -n 's/^name = "\(.*\)"$/\1/p' /tmp/scan.toml)
    pinpost sensors --config /tmp/scan.toml >/tmp/scan-sensors.out 2>&1
    src=$?
    info "pinpost sensors on the scan's section (exit $src): $(oneline </tmp/scan.toml) -> $(oneline </tmp/scan-sensors.out)"
    scanbad=$bad
    bme280_compare "$name" /tmp/scan-sensors.out # sets bad and got
    if [ -n "$bad" ] || [ "$src" != 0 ]; then
      scanbad="$scanbad; the section for 0x76 (name $name) read wrong or missing:$bad (exit $src):$got: $(oneline </tmp/scan-sensors.out)"
    fi
    bad=$scanbad
  fi
  if [ -z "$bad" ]; then
    pass i2c-scan "buses $(sed -n 's/^I2C bus \([0-9]*\) .*/i2c-\1/p' /tmp/scan.out | oneline)listed: $(echo "$listed" | oneline)| section $(echo "$section" | oneline)read by pinpost sensors:$got"
  else
    fail i2c-scan "${bad#; }; the scan's I2C part: $(sed -n '/^I2C/,/^$/p' /tmp/scan.out | oneline)"
  fi
}

# QEMU 10's at24c EEPROM at 0x20 on BSC1 stands in for an MCP23017's
# register file (BANK = 0): it keeps what is written from the pointer on
# and reads back from the pointer, as the chip does; its GPIO registers do
# not follow pins. It starts zeroed; this writes the chip's power-on
# registers into it (IODIR 0xFF 0xFF, every other register 0; DS20001952C
# table 3-1) and GPIOA = 0b00000101, the input levels pinpost must read
# (A0 and A2 high, A1 low), before pinpost starts. Each write is its own
# transfer: of several write messages in one I2C_RDWR, only the first
# reaches the EEPROM on this QEMU and kernel (a write and a read in one
# I2C_RDWR work, as mcp_regs shows). `pinpost run`
# on the cdev board with the chip as mcp0 (inputs A0, A1 pulled up, A2 not;
# outputs B0 initial on, B1 off) and a PCF8574 "ghost" at 0x27, where
# nothing answers. Registers are read with busybox i2ctransfer (one I2C_RDWR
# of a write and a read, so the pointer cannot move between them).
mcp_put() { # REGISTER A B
  i2ctransfer -y 1 w3@0x20 "$1" "$2" "$3" || info "cannot write $1 at 0x20"
}
mcp_regs() { # REGISTER: its two bytes, A then B ("0xff 0xfc")
  i2ctransfer -y 1 w1@0x20 "$1" r2@0x20 2>&1 | oneline | sed 's/ *$//'
}
mcp23017_pins() {
  n=mcp23017
  broker_up
  agent_config "/tmp/$n.toml" cdev \
    '[[expander]]' 'name = "mcp0"' 'chip = "mcp23017"' 'bus = 1' 'address = 0x20' 'poll_interval = "100ms"' \
    '[[expander]]' 'name = "ghost"' 'chip = "pcf8574"' 'bus = 1' 'address = 0x27' \
    '[[input]]' 'name = "a0"' 'pin = "mcp0:A0"' 'pull = "up"' \
    '[[input]]' 'name = "a1"' 'pin = "mcp0:A1"' 'pull = "up"' \
    '[[input]]' 'name = "a2"' 'pin = "mcp0:A2"' 'pull = "none"' \
    '[[input]]' 'name = "g0"' 'pin = "ghost:P0"' \
    '[[output]]' 'name = "b0"' 'pin = "mcp0:B0"' 'initial = "on"' \
    '[[output]]' 'name = "b1"' 'pin = "mcp0:B1"' 'initial = "off"'
  mcp_put 0x00 0xff 0xff
  mcp_put 0x12 0x05 0x00
  info "before pinpost: IODIR $(mcp_regs 0x00), OLAT $(mcp_regs 0x14), GPIO $(mcp_regs 0x12)"
  sub_start "/tmp/$n.sub"
  agent_start "$n" "/tmp/$n.toml" "/tmp/$n.sub" "$n/setup" "$n/inputs" "$n/command" "$n/forgot-setup" "$n/ghost" || return
  log=/tmp/$n.log
  # Setup: directions (B0, B1 outputs), latches (B0 on), pull-ups (A0, A1).
  wait_for 10 seen "$log" 'expander mcp0 .* set up'
  iodir=$(mcp_regs 0x00) olat=$(mcp_regs 0x14) gppu=$(mcp_regs 0x0c) iocon=$(i2cget -y 1 0x20 0x0a 2>&1)
  said=$(grep 'expander mcp0 .* set up' "$log" | head -n 1 | oneline)
  if [ "$iodir" = "0xff 0xfc" ] && [ "$olat" = "0x00 0x01" ] && [ "$gppu" = "0x03 0x00" ] && [ "$iocon" = 0x00 ] && [ -n "$said" ]; then
    pass "$n/setup" "IODIR A,B $iodir, OLAT $olat, GPPU $gppu, IOCON $iocon; log: $said"
  else
    fail "$n/setup" "IODIR '$iodir' (want 0xff 0xfc), OLAT '$olat' (want 0x00 0x01), GPPU '$gppu' (want 0x03 0x00), IOCON '$iocon' (want 0x00), set up said: '$said'; agent: $(oneline <"$log")"
  fi
  # The inputs as the agent published them: the image's GPIOA 0b101.
  got='' bad=''
  for pv in a0:true a1:false a2:true; do
    p=${pv%%:*} want=${pv#*:}
    wait_for 10 sh -c "grep -q '^$PREFIX/input/$p ' /tmp/$n.sub"
    line=$(grep "^$PREFIX/input/$p " "/tmp/$n.sub" | tail -n 1)
    got="$got input/$p $(echo "$line" | grep -o '"value":[a-z]*' | head -n 1);"
    echo "$line" | grep -q "\"value\":$want" || bad="$bad $p (want $want)"
  done
  if [ -z "$bad" ]; then
    pass "$n/inputs" "GPIOA $(mcp_regs 0x12 | cut -d' ' -f1) (A0 high, A1 low, A2 high) published as:$got"
  else
    fail "$n/inputs" "wrong or missing:$bad; published:$got GPIO $(mcp_regs 0x12); agent: $(oneline <"$log")"
  fi
  # A command turns B1 on: OLATB 0x01 -> 0x03, A's latch untouched.
  before=$(i2cget -y 1 0x20 0x15 2>&1)
  pub "$PREFIX/cmd/b1" '{"id":"x1","action":"on"}'
  wait_for 20 seen "/tmp/$n.sub" "cmd/b1/result {\"id\":\"x1\""
  result=$(grep 'cmd/b1/result' "/tmp/$n.sub" | head -n 1)
  after=$(i2cget -y 1 0x20 0x15 2>&1) olat=$(mcp_regs 0x14)
  if [ "$before" = 0x01 ] && [ "$after" = 0x03 ] && [ "$olat" = "0x00 0x03" ] && echo "$result" | grep -q '"ok":true'; then
    pass "$n/command" "cmd/b1 on: OLATB $before -> $after (OLAT A,B $olat), IODIR $(mcp_regs 0x00); $result"
  else
    fail "$n/command" "cmd/b1 on: OLATB $before -> $after (want 0x01 -> 0x03), OLAT '$olat'; result: '$result'; agent: $(oneline <"$log")"
  fi
  # A power-on reset as the chip would see it, written from the guest:
  # latches and pull-ups 0, then every pin an input (IODIR last: it is what
  # the agent asks for every second). The agent must set the chip up again,
  # its latches as last set (B1 on). Only a "forgot" said after the reset
  # counts.
  forgot0=$(grep -c 'forgot its setup' "$log")
  mcp_put 0x14 0x00 0x00
  mcp_put 0x0c 0x00 0x00
  t0=$(cut -d' ' -f1 /proc/uptime)
  mcp_put 0x00 0xff 0xff
  # Registers 0x00-0x15 in one read, at once (the agent may already be
  # setting the chip up again: it writes IODIR last).
  reset="registers 0x00-0x15 just after: $(i2ctransfer -y 1 w1@0x20 0x00 r22@0x20 2>&1 | oneline | sed 's/ *$//') (forgot said $forgot0 times before)"
  if wait_for 3 sh -c "[ \$(grep -c 'expander mcp0 .* forgot its setup' $log) -gt $forgot0 ]"; then
    t1=$(cut -d' ' -f1 /proc/uptime)
    sleep 0.3
    iodir=$(mcp_regs 0x00) olat=$(mcp_regs 0x14) gppu=$(mcp_regs 0x0c)
    said=$(grep 'forgot its setup' "$log" | tail -n 1 | oneline)
    took=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    if [ "$iodir" = "0xff 0xfc" ] && [ "$olat" = "0x00 0x03" ] && [ "$gppu" = "0x03 0x00" ] && [ "$forgot0" = 0 ]; then
      pass "$n/forgot-setup" "the guest wrote OLAT 0x00 0x00, GPPU 0x00 0x00, IODIR 0xff 0xff; $reset; said $took s after IODIR was reset: $said; then IODIR $iodir, OLAT $olat (B1 on kept), GPPU $gppu"
    else
      fail "$n/forgot-setup" "$reset (want 0 before); said $took s after IODIR was reset, then IODIR '$iodir' (want 0xff 0xfc), OLAT '$olat' (want 0x00 0x03), GPPU '$gppu' (want 0x03 0x00)"
    fi
  else
    fail "$n/forgot-setup" "$reset; no 'forgot its setup' within 3 s; IODIR now $(mcp_regs 0x00); agent: $(oneline <"$log")"
  fi
  # The ghost: said once, in words, and the agent goes on (it is still
  # running and answered the command above).
  line=$(grep 'expander ghost' "$log" | grep 'does not answer' | head -n 1 | oneline)
  if echo "$line" | grep -q 'does not answer: nothing answers at 0x27' && kill -0 "$AGENT" 2>/dev/null; then
    pass "$n/ghost" "agent still running, status $(grep "^$PREFIX/status " "/tmp/$n.sub" | tail -n 1 | cut -d' ' -f2); log: $line"
  else
    fail "$n/ghost" "want 'does not answer: nothing answers at 0x27' and the agent running ($(kill -0 "$AGENT" 2>/dev/null && echo running || echo ended)); log: ${line:-$(grep ghost "$log" | oneline)}"
  fi
  kill -TERM "$AGENT"
  wait "$AGENT"
  sub_stop
}

# ---------------------------------------------------------------- main
info "up $(cut -d' ' -f1 /proc/uptime) s: boot $BOOT, kernel $(uname -r), $(tr '\0' ' ' </proc/device-tree/compatible), $(date -u +%FT%TZ), $(echo /dev/gpiochip* /dev/gpiomem*)"
for check in $(echo "$CHECKS" | tr ',' ' '); do
  start=$(cut -d' ' -f1 /proc/uptime)
  if ! command -v "$check" >/dev/null; then
    fail "$check" "no such check in guest.sh"
    continue
  fi
  "$check"
  info "$check took $(awk -v a="$start" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.1f", b - a }') s"
done
[ -n "$BROKER" ] && kill "$BROKER" 2>/dev/null
info "dmesg warnings: $(dmesg | grep -i -E 'error|fail|warn|gpio|pwm|i2c' | tail -n 15 | oneline)"
