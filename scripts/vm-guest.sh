#!/bin/sh
# The checks scripts/vm-test.sh runs inside the booted arm64 guest, from its
# test disk (mounted on /mnt/test), one phase per boot:
#
#   main     install the .deb, enroll (the key made here, the request
#            signed by the host), start pinpost against the guest's
#            Mosquitto, hardening, watchdog, journal, the certificate
#            renewed over MQTT, a signed release fetched over MQTT (one
#            for armhf refused, a newer one kept in update/ready/, in the
#            same process); the root helper installs that one, rolls back
#            one whose pinpost exits at start; a signed config (made and
#            signed by the host) is applied, one that cannot connect is
#            rolled back and not applied again; then the helper is cut
#            (sysrq b, by this guest) in the middle of installing a third
#            release
#   installcut  what the helper made of that cut at boot (the broker
#            started at boot for it); then spool and wait for the cut
#   recover  what pinpost found after the cut, the spool drained to a
#            subscriber (every reading printed); then spool and wait again
#   last     as recover, then upgrade over the running agent, and purge
#   clock    the guest's clock at 1970 and no time source: install again,
#            start pinpost, then set the clock and make systemd-timesyncd's
#            mark; a witness session gets every reading
#
# Lines for the host: "VMTEST PASS|FAIL <check>: <detail>", "VMTEST INFO
# ...", "VMTEST CSR <base64> END" (the request for the host to sign),
# "VMTEST RENEWER" and "VMTEST RENEWED" (the host starts certs renew
# --watch, and stops it), "VMTEST RELEASE" (the host publishes the
# releases), "VMTEST PUBLISH <version> [again]" (the host signs that
# release now and publishes it), "VMTEST CONFIG good|bad [again]" (the
# host makes that config of pi-01, signs it now and publishes it, its
# SHA-256 first on the enrollment topic), "VMTEST WITNESS" (the host starts its own
# subscriber through the forward), "VMTEST MARK <label> <ms>" (guest Unix
# ms after which the host's witness must get readings), "VMTEST
# INSTALLCUT <ms> <step>" (the guest cuts its power now), "VMTEST RX
# <payload>" (drained readings), "VMTEST SPOOLING <ms>"
# then "VMTEST TICK <ms>" every 50 ms (guest clock, Unix ms) until the host
# kills the VM; in the clock phase "VMTEST CLOCKMARKS <start> <set>
# <trusted>" (Unix ms: pinpost started, the clock set, pinpost trusted it)
# and "VMTEST CLOCKRX <payload>" (every reading the witness got).
# shellcheck disable=SC2016,SC2012 # sh -c '...' expands inside; ls for people
set -u
T=/mnt/test
PHASE=${1:-main}
# The operator's certificate. Mosquitto makes a certificate's name its
# client id on 8883, so the subscriber listens there and commands go by
# 8884 (there the id is the subject): one would knock the other off.
OPKEYS="--cafile /root/op/ca.crt --cert /root/op/operator.crt --key /root/op/operator.key -h 127.0.0.1"
OP="$OPKEYS -p 8883"
PREFIX=pinpost/pi-01
# Where the host publishes pi-01's certificates (vm-test.sh's ENROLL_TOPIC):
# the operator may write only commands, to a device no agent is.
ENROLL_TOPIC=pinpost/vmtest-enroll/cmd

pass() { echo "VMTEST PASS $1: $2"; }
fail() { echo "VMTEST FAIL $1: $2"; }
info() { echo "VMTEST INFO $*"; }
check() { # check NAME DETAIL COMMAND...: PASS when COMMAND succeeds
  name=$1 detail=$2
  shift 2
  if "$@" >/dev/null 2>&1; then pass "$name" "$detail"; else fail "$name" "$detail"; fi
}
check_not() { # check_not NAME DETAIL COMMAND...: PASS when COMMAND fails
  name=$1 detail=$2
  shift 2
  if "$@" >/dev/null 2>&1; then fail "$name" "$detail"; else pass "$name" "$detail"; fi
}
has() { printf '%s\n' "$1" | grep -q -i -E -- "$2"; }
now_ms() { date +%s%3N; }
iso_now() { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }
# wait_for SECONDS COMMAND...: until COMMAND succeeds
wait_for() {
  limit=$1
  shift
  end=$(($(date +%s) + limit))
  while ! "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.2
  done
}
prop() { systemctl show -p "$1" --value pinpost; }
# mosquitto_sub as the operator, in the background, into FILE
sub_start() { # FILE TOPIC...
  file=$1
  shift
  : >"$file"
  # shellcheck disable=SC2086 # OP is a list of words
  for topic in "$@"; do set -- "$@" -t "$topic"; shift; done
  # shellcheck disable=SC2086
  stdbuf -oL mosquitto_sub $OP -q 1 -v "$@" >"$file" 2>&1 &
  SUB=$!
  sleep 1
}
# SIGKILL: its lines are out already (line-buffered), and a mosquitto_sub
# told to disconnect once sat there for minutes.
sub_stop() { kill -KILL "$SUB" 2>/dev/null; wait "$SUB" 2>/dev/null; }
pub() { # TOPIC PAYLOAD
  # shellcheck disable=SC2086
  mosquitto_pub $OPKEYS -p 8884 -q 1 -t "$1" -m "$2"
}

install_and_configure() {
  if apt-get install -y "$T/debs/$(cat "$T/debs/first")" >/tmp/apt.log 2>&1; then
    pass install "apt-get install ./$(cat "$T/debs/first") (offline)"
  else
    fail install "apt-get install: $(tail -n 3 /tmp/apt.log | tr '\n' ' ')"
  fi
  check user "user pinpost in groups gpio i2c spi: $(id pinpost 2>&1)" \
    sh -c 'id -nG pinpost | tr " " "\n" | grep -qx gpio && id -nG pinpost | tr " " "\n" | grep -qx i2c && id -nG pinpost | tr " " "\n" | grep -qx spi'
  check unit-enabled "systemctl is-enabled pinpost: $(systemctl is-enabled pinpost 2>&1)" \
    sh -c '[ "$(systemctl is-enabled pinpost)" = enabled ]'
  check config-installed "$(stat -c '%n %a %U:%G' /etc/pinpost/config.toml 2>&1)" \
    sh -c '[ "$(stat -c %a:%U:%G /etc/pinpost/config.toml)" = 640:root:pinpost ] && cmp -s /etc/pinpost/config.toml /usr/share/doc/pinpost/config.example.toml'
  # The broker's and the operator's certificates from `pinpost certs`
  # (made on the host; the CA key never comes here), installed as its
  # hints say.
  install -d -m 0755 /etc/mosquitto/certs /root/op
  install -m 0644 "$T/certs/broker/ca.crt" "$T/certs/broker/broker.crt" /etc/mosquitto/certs/
  install -m 0640 -g mosquitto "$T/certs/broker/broker.key" /etc/mosquitto/certs/
  install -m 0644 "$T/certs/broker/pinpost.conf" /etc/mosquitto/conf.d/pinpost.conf
  install -m 0644 "$T/certs/broker/pinpost.acl" /etc/mosquitto/pinpost.acl
  # A subscriber that is offline a while must not lose queued readings.
  echo "max_queued_messages 0" >/etc/mosquitto/conf.d/queue.conf
  # pi-01's key is not on the test disk: the main boot makes it (enroll),
  # and purge keeps it for the clock boot.
  # Another key in the folder, not the pinpost group's: must stay unreadable.
  install -m 0640 -g root "$T/certs/operator/operator.key" /etc/pinpost/certs/other.key
  install -m 0600 "$T/certs/operator/ca.crt" "$T/certs/operator/operator.crt" \
    "$T/certs/operator/operator.key" /root/op/
  install -m 0640 -g pinpost "$T/config.toml" /etc/pinpost/config.toml
  # The gpio group is new (postinst made it): udev applies the image's rule
  # for it now, as it does at every boot of a Pi that has the group.
  udevadm control --reload
  sleep 1
  udevadm trigger --action=change --sysname-match='gpiochip*'
  udevadm settle
  info "gpiochip0 after udev: $(stat -c '%a %U:%G' /dev/gpiochip0 2>&1); $(udevadm info -q property /dev/gpiochip0 2>&1 | grep -E '^(SUBSYSTEM|DEVNAME)=' | tr '\n' ' ')"
  # What the probe below is about is the unit's DeviceAllow, not udev: when
  # the rule did not take (seen here), the group is set as the rule says.
  if [ "$(stat -c %G /dev/gpiochip0)" != gpio ]; then
    chgrp gpio /dev/gpiochip0 && chmod 0660 /dev/gpiochip0
    info "gpiochip0: udev left it root:root; chgrp gpio by hand"
  fi
}

# The main boot's network: qemu's user-mode network with restrict=on, so
# the guest reaches nothing, and the host reaches only the guest's 8884
# (its forwarded port). No DHCP client here: the address slirp forwards to.
net_up() {
  wait_for 30 sh -c 'ls /sys/class/net | grep -q -v -x lo'
  dev=
  for path in /sys/class/net/*; do
    [ "${path##*/}" = lo ] || dev=${path##*/}
  done
  if [ -n "$dev" ] && ip link set "$dev" up && ip addr add 10.0.2.15/24 dev "$dev"; then
    info "network: $dev 10.0.2.15/24 (qemu user-mode, restrict=on; the host reaches 8884 only)"
  else
    fail network "no interface to bring up: $(ls /sys/class/net | tr '\n' ' ')"
  fi
}

# A message the host published retained (as the operator, through the
# forwarded port), on stdout as sent; waits up to SECONDS for it.
fetch() { # TOPIC SECONDS
  # shellcheck disable=SC2086 # OP is a list of words
  mosquitto_sub $OP -C 1 -N -W "$2" -t "$1"
}

# Enrollment as on a Pi: pinpost enroll makes the key (never leaving this
# disk) and a request; only the request goes to the host, on the serial
# line, and the host signs it with the CA it keeps and publishes ca.crt,
# pi-01.crt and release.pub (the fleet's release key, which certs sign put
# in pi-01's folder) retained on the guest's broker, where root fetches them.
enroll() {
  net_up
  systemctl start mosquitto
  key=/etc/pinpost/certs/pi-01.key csr=/etc/pinpost/certs/pi-01.csr
  out=$(pinpost enroll 2>&1) || fail enroll "pinpost enroll: $(printf '%s' "$out" | tr '\n' ' ')"
  check enroll-key "$(stat -c '%n %a %U:%G' $key 2>&1) (pinpost enroll: $(printf '%s' "$out" | head -n 1))" \
    sh -c "[ \"\$(stat -c %a:%U:%G $key)\" = 600:pinpost:pinpost ] && grep -q 'PRIVATE KEY' $key"
  t0=$(now_ms)
  echo "VMTEST CSR $(base64 -w 0 <$csr) END"
  fetch "$ENROLL_TOPIC/ca.crt" 180 >/run/ca.crt
  fetch "$ENROLL_TOPIC/pi-01.crt" 30 >/run/pi-01.crt
  fetch "$ENROLL_TOPIC/release.pub" 30 >/run/release.pub
  t1=$(now_ms)
  if grep -q 'BEGIN CERTIFICATE' /run/ca.crt && grep -q 'BEGIN CERTIFICATE' /run/pi-01.crt &&
    grep -q 'BEGIN PUBLIC KEY' /run/release.pub; then
    install -m 0644 /run/ca.crt /run/pi-01.crt /etc/pinpost/certs/
    # As install.sh does: the public key, readable by the agent's group.
    install -m 0644 -g pinpost /run/release.pub /etc/pinpost/certs/
    pass enroll "request ($(wc -c <$csr) bytes) out on the serial line, ca.crt, pi-01.crt and release.pub back from the host's signing in $((t1 - t0)) ms: $(ls /etc/pinpost/certs | tr '\n' ' ')"
  else
    fail enroll "no certificates and release key from the host $((t1 - t0)) ms after the request: $(head -c 200 /run/pi-01.crt | tr '\n' ' '); release.pub: $(head -c 60 /run/release.pub | tr '\n' ' ')"
  fi
}

main_checks() {
  systemctl start mosquitto
  check broker "mosquitto active" systemctl is-active mosquitto
  sub_start /run/sub "$PREFIX/#"
  t0=$(now_ms)
  if systemctl start pinpost; then
    pass start "systemctl start pinpost returned after READY in $(($(now_ms) - t0)) ms"
  else
    fail start "systemctl start pinpost failed: $(systemctl status pinpost --no-pager 2>&1 | tail -n 5 | tr '\n' ' ')"
  fi
  check config-dir-mode "after the start: $(stat -c '%n %a %U:%G' /etc/pinpost /etc/pinpost/certs | tr '\n' ' ')" \
    sh -c '[ "$(stat -c %a:%U:%G /etc/pinpost)" = 750:root:pinpost ] && [ "$(stat -c %a:%U:%G /etc/pinpost/certs)" = 750:root:pinpost ]'
  check active-running "ActiveState=$(prop ActiveState) SubState=$(prop SubState) Type=$(prop Type)" \
    sh -c '[ "$(systemctl show -p ActiveState --value pinpost)/$(systemctl show -p SubState --value pinpost)/$(systemctl show -p Type --value pinpost)" = active/running/notify ]'
  wait_for 20 sh -c 'systemctl show -p StatusText --value pinpost | grep -q connected'
  status=$(systemctl status pinpost --no-pager 2>&1 | grep 'Status:')
  check status-text "systemctl status says: ${status:-nothing}" has "$status" 'Status: "connected'
  check online "status online on the broker" wait_for 30 grep -q "^$PREFIX/status online" /run/sub
  check readings "readings of sensor s on the broker: $(grep -c "^$PREFIX/sensor/s " /run/sub)" \
    wait_for 30 grep -q "^$PREFIX/sensor/s {\"value\"" /run/sub
  pub "$PREFIX/cmd/relay" '{"id":"vm1","action":"on"}'
  check command-result "result: $(wait_for 20 grep -q "cmd/relay/result" /run/sub; grep "cmd/relay/result" /run/sub | head -n 1)" \
    grep -q "^$PREFIX/cmd/relay/result {\"id\":\"vm1\",\"ok\":true}" /run/sub
  check relay-on "output state: $(grep "/output/relay " /run/sub | tail -n 1)" \
    wait_for 20 sh -c "grep '^$PREFIX/output/relay ' /run/sub | tail -n 1 | grep -q '\"value\":true'"
  sub_stop

  # Hardening, seen on the running process.
  pid=$(prop MainPID)
  st=/proc/$pid/status
  info "process: $(grep -E '^(Uid|Gid|Groups|CapEff|CapBnd|NoNewPrivs|Seccomp):' "$st" | tr '\t\n' '  ')"
  check runs-as-pinpost "uid $(awk '/^Uid:/ {print $2}' "$st") = $(id -u pinpost)" \
    sh -c "[ \"\$(awk '/^Uid:/ {print \$2}' $st)\" = \"\$(id -u pinpost)\" ]"
  check no-capabilities "CapEff $(awk '/^CapEff:/ {print $2}' "$st")" \
    sh -c "awk '/^CapEff:/ {exit \$2 != \"0000000000000000\"}' $st"
  check seccomp "Seccomp $(awk '/^Seccomp:/ {print $2}' "$st")" sh -c "awk '/^Seccomp:/ {exit \$2 != 2}' $st"
  check no-new-privs "NoNewPrivs $(awk '/^NoNewPrivs:/ {print $2}' "$st")" sh -c "awk '/^NoNewPrivs:/ {exit \$2 != 1}' $st"
  check spool-written "$(ls -l /var/lib/pinpost/outbox 2>&1 | tr '\n' ' ')" \
    sh -c 'ls /var/lib/pinpost/outbox/outbox.lock || ls /var/lib/pinpost/outbox/outbox.wal'

  # Probes under the unit's own settings: every Key=Value of its [Service]
  # that says what the process may do (not how it is started or stopped).
  set --
  while IFS= read -r line; do
    case $line in
    Type=* | ExecStart=* | Restart=* | RestartSec=* | KillSignal=* | Timeout*=* | WatchdogSec=* | NotifyAccess=*) ;;
    [A-Z]*=*) set -- "$@" -p "$line" ;;
    esac
  done <<EOF
$(sed -n '/^\[Service\]/,/^\[/p' /usr/lib/systemd/system/pinpost.service)
EOF
  probe() { systemd-run --quiet --wait --pipe --collect "$@" -- /bin/sh -c "$PROBE" </dev/null; }
  PROBE='touch /var/lib/pinpost/probe && rm /var/lib/pinpost/probe'
  check probe-state-writable "can write its StateDirectory /var/lib/pinpost" probe "$@"
  PROBE='cat /etc/pinpost/certs/pi-01.key'
  check probe-own-key "can read its own key (the probe's control)" probe "$@"
  # The virt machine's PL061 is /dev/gpiochip0: the unit's DeviceAllow and
  # the gpio group (udev rule as on Raspberry Pi OS) let pinpost open it.
  PROBE='test -c /dev/gpiochip0 && : </dev/gpiochip0'
  check probe-gpiochip "can open /dev/gpiochip0 ($(stat -c '%a %U:%G' /dev/gpiochip0 2>&1))" probe "$@"
  PROBE='cat /etc/pinpost/certs/other.key'
  check_not probe-other-key "cannot read /etc/pinpost/certs/other.key (root:root 0640)" probe "$@"
  PROBE='cat /etc/shadow'
  check_not probe-shadow "cannot read /etc/shadow" probe "$@"
  # /tmp and /var/tmp are its own (PrivateTmp=yes): writable, but nothing
  # written there reaches the system's.
  PROBE='touch /var/tmp/vmtest-probe /tmp/vmtest-probe'
  probe "$@" >/dev/null 2>&1
  check_not private-tmp "what it writes in /tmp and /var/tmp stays private" \
    ls /var/tmp/vmtest-probe /tmp/vmtest-probe
  for dir in /etc/pinpost /etc /usr/local /var/log /root /home /var/lib; do
    PROBE="touch $dir/probe"
    if probe "$@" >/dev/null 2>&1; then
      rm -f "$dir/probe"
      fail "probe-write-$dir" "could write $dir"
    else
      pass "probe-write-$dir" "cannot write $dir"
    fi
  done
  exposure=$(systemd-analyze security pinpost 2>/dev/null | sed -n 's/.*Overall exposure level for pinpost.service: \([0-9.]*\).*/\1/p')
  check exposure "systemd-analyze security: ${exposure:-none} (at most 1.5, tests/integration/deploy.rs)" \
    awk -v e="${exposure:-99}" 'BEGIN { exit !(e <= 1.5) }'
  # What systemd said about the unit (its child logs directory trouble
  # before it runs pinpost, under the unit's name).
  said=$(journalctl -b --no-pager -o cat -u pinpost.service | grep -v -E '^(INFO|WARN|ERROR) ')
  warnings=$(printf '%s\n' "$said" | grep -i -E 'Directory|mode' | head -n 3)
  # The control: a unit without ConfigurationDirectoryMode on the same
  # folder is warned about, so the check above can see the warning.
  systemd-run --quiet --wait --collect --unit vmtest-dirmode -p ConfigurationDirectory=pinpost /bin/true
  control=$(journalctl -b --no-pager -o cat -u vmtest-dirmode.service | grep -i 'Directory' | head -n 1)
  check directory-warning-control "without ConfigurationDirectoryMode=0750: ${control:-no warning}" test -n "$control"
  check no-directory-warning "${warnings:-systemd warns about no pinpost directory}" test -z "$warnings"
  warnings=$(printf '%s\n' "$said" | grep -i -E 'unknown|ignoring|deprecated|invalid' | head -n 3)
  check unit-clean "${warnings:-no unit file warnings}" test -z "$warnings"

  # The journal holds pinpost's own lines, sent with journald's protocol.
  json=$(journalctl -u pinpost -o json --no-pager _COMM=pinpost)
  native=$(echo "$json" | grep -c '"_TRANSPORT":"journal"')
  stdout=$(echo "$json" | grep -c '"_TRANSPORT":"stdout"')
  prios=$(echo "$json" | grep '"_TRANSPORT":"journal"' | sed -n 's/.*"PRIORITY":"\([0-7]\)".*/\1/p' | sort -u | tr '\n' ' ')
  check journal-native "$native lines via journald's protocol (priorities: $prios), $stdout via stdout" \
    sh -c "[ $native -gt 0 ] && [ $stdout -eq 0 ] && [ -n '$prios' ]"

  # The watchdog: the event loop stopped (SIGSTOP), systemd kills and restarts.
  mkdir -p /etc/systemd/system/pinpost.service.d
  printf '[Service]\nWatchdogSec=5s\n' >/etc/systemd/system/pinpost.service.d/vmtest-watchdog.conf
  systemctl daemon-reload
  systemctl restart pinpost
  old=$(prop MainPID)
  since=$(date '+%Y-%m-%d %H:%M:%S')
  t0=$(now_ms)
  kill -STOP "$old"
  wait_for 60 sh -c "[ \"\$(systemctl show -p MainPID --value pinpost)\" != $old ] && [ \"\$(systemctl show -p MainPID --value pinpost)\" != 0 ] && systemctl is-active -q pinpost"
  t1=$(now_ms)
  why=$(journalctl -u pinpost --since "$since" --no-pager -o cat | grep -i -E 'watchdog|signal|Scheduled restart' | head -n 4 | tr '\n' '|')
  new=$(prop MainPID)
  if [ "$new" != "$old" ] && [ "$new" != 0 ] && has "$why" 'watchdog timeout'; then
    pass watchdog "stopped pid $old, restarted as $new after $((t1 - t0)) ms (WatchdogSec=5s drop-in, RestartSec=5s); journal: $why"
  else
    fail watchdog "stopped pid $old, MainPID now $new after $((t1 - t0)) ms; journal: $why"
  fi
  info "watchdog restart ms $((t1 - t0))"
  rm /etc/systemd/system/pinpost.service.d/vmtest-watchdog.conf
  systemctl daemon-reload
  systemctl restart pinpost
}

# Renewal over MQTT in one process. The host signed the enrolled
# certificate for 3 minutes (backdated 45 s), so it is due at the middle of
# its life, 67.5 s after signing (renew_before = "3m" asks no earlier); the agent
# starts a renewal only on a trusted clock, so the time source's mark is
# made here, after the checks above restarted the agent for the last time.
# The host answers with `certs renew --watch` through the forward.
renewal() {
  pid=$(prop MainPID) restarts=$(prop NRestarts)
  # identity/ beside the spool (the config's outbox path).
  id=/var/lib/pinpost/outbox/identity
  sub_start /run/renew "$PREFIX/sensor/s" "$PREFIX/stats" "$PREFIX/status" "$PREFIX/cert/#"
  echo "VMTEST RENEWER"
  mkdir -p "${MARK%/*}" && : >"$MARK"
  t0=$(now_ms)
  renewing() { journalctl -b -o short-unix --no-pager "_PID=$pid" | grep 'certificate renewal'; }
  wait_for 240 sh -c "journalctl -b -o cat --no-pager _PID=$pid | grep -q 'switched to the renewed certificate'"
  # Readings after the switch, and the stats sent at the new connection.
  sleep 3
  sub_stop
  echo "VMTEST RENEWED"
  # When each step was said, in s after the mark.
  steps=$(renewing | awk -v t0="$t0" '{ t = $1 * 1000; $1 = $2 = ""; sub(/^ +/, "")
    sub(/^.*certificate renewal: /, ""); printf "+%.1f s %s|", (t - t0) / 1000, $0 }')
  check renew-switched "pid $pid: ${steps:-said nothing about a renewal}" has "$steps" 'switched to the renewed certificate'
  check renew-same-process "MainPID $pid -> $(prop MainPID), NRestarts $restarts -> $(prop NRestarts), $(prop ActiveState)" \
    sh -c "[ \"\$(systemctl show -p MainPID --value pinpost)\" = $pid ] && [ \"\$(systemctl show -p NRestarts --value pinpost)\" = $restarts ]"
  first=$(sed -n 's/.*"cert_ends":"\([^"]*\)".*/\1/p' /run/renew | head -n 1)
  last=$(sed -n 's/.*"cert_ends":"\([^"]*\)".*/\1/p' /run/renew | tail -n 1)
  check renew-cert-ends "cert_ends in stats: ${first:-none} before, ${last:-none} after ($(grep -c "^$PREFIX/stats " /run/renew) stats)" \
    awk -v a="$first" -v b="$last" 'BEGIN { exit !(a != "" && a < b) }'
  # The pair in use: a key made here (not enroll's), 0600 for pinpost, with
  # the certificate the host published; nothing left of the request.
  body() { sed -n "/BEGIN $1/,/END $1/p" | grep -v -e '-----' | tr -d '\n'; }
  issued=$(grep "^$PREFIX/cert/issued {" /run/renew | tail -n 1 | sed 's/.*"cert":"\([^"]*\)".*/\1/; s/\\n/\n/g' | body CERTIFICATE)
  cert=$(body CERTIFICATE <$id/current.pem 2>/dev/null)
  key=$(body 'PRIVATE KEY' <$id/current.pem 2>/dev/null)
  enrolled=$(body 'PRIVATE KEY' </etc/pinpost/certs/pi-01.key)
  mode=$(stat -c %a:%U:%G $id/current.pem 2>&1)
  left=$(ls $id 2>&1 | tr '\n' ' ')
  if [ "$mode" = 600:pinpost:pinpost ] && [ -n "$issued" ] && [ "$cert" = "$issued" ] &&
    [ -n "$key" ] && [ "$key" != "$enrolled" ] && [ "$left" = "current.pem " ]; then
    pass renew-key "$id/current.pem $mode: the certificate published on cert/issued and a key made here, not enroll's; $id holds $left"
  else
    same=no kind=new
    [ -n "$cert" ] && [ "$cert" = "$issued" ] && same=yes
    [ -n "$key" ] || kind=missing
    [ -n "$key" ] && [ "$key" = "$enrolled" ] && kind="enroll's"
    fail renew-key "$id/current.pem $mode; its certificate the one on cert/issued: $same; its key: $kind; $id holds $left"
  fi
  # Every reading of sensor s through the switch, none missing. What was
  # in flight at the reconnect goes again on the new connection: QoS 1's
  # duplicates (a seq at or below the highest seen) are counted, not gaps.
  switched=$(renewing | awk '/switched to the renewed/ { printf "%d\n", $1 }' | head -n 1)
  at=$(date -u -d "@${switched:-0}" +%Y-%m-%dT%H:%M:%S)
  verdict=$(grep "^$PREFIX/sensor/s " /run/renew | awk -v at="$at" '
    { if (!match($0, /"seq":[0-9]+/)) next; seq = substr($0, RSTART + 6, RLENGTH - 6) + 0
      match($0, /"ts":"[^"]*"/); ts = substr($0, RSTART + 6, 19)
      n++; if (ts < at) before++; else after++
      if (n == 1) { first = seq; top = seq }
      else if (seq <= top) { repeats++; if (seq != prev + 1) again = again " " prev "->" seq }
      else { if (seq != top + 1) { gaps++; gap_at = gap_at " " top "->" seq }; top = seq }
      prev = seq }
    END { printf "%s %d readings, seq %d to %d, %d gaps%s, %d repeats%s; %d made before the second of the switch (%s), %d from it on\n",
      (n > 0 && gaps == 0 && before > 0 && after > 0) ? "PASS" : "FAIL", n, first, top, gaps, gap_at, repeats + 0,
      (again == "" ? "" : " (sent again from" again ")"), before, at, after }')
  echo "VMTEST ${verdict%% *} renew-readings: ${verdict#* }"
  info "renewal: status messages: $(grep "^$PREFIX/status " /run/renew | cut -d' ' -f2 | tr '\n' ' '); switched $((${switched:-0} * 1000 - t0)) ms after the mark"
}

# A signed release over MQTT, in the agent's one process under its unit
# (the clock trusted since the renewal made the time source's mark): the
# host publishes a release labelled armhf, to be refused, then 0.1.0-2, a
# newer version of this arm64 package (the installed one is 0.1.0-1, per
# dpkg); the agent fetches it one chunk at a time into update/package.part,
# checks its size and SHA-256 against the signed manifest and keeps it in
# update/ready/. Then withdrawn, as an operator would. The root helper that
# installs what lands in ready/ (pinpost-update.path) is held off here, so
# the package can be looked at where the agent leaves it and the agent
# stays one process; helper() lets it work.
GOOD=0.1.0-2
update() {
  pid=$(prop MainPID) restarts=$(prop NRestarts)
  dir=/var/lib/pinpost/outbox/update
  deb=$dir/ready/pinpost_${GOOD}_arm64.deb
  systemctl stop pinpost-update.path 2>/dev/null
  sub_start /run/update "$PREFIX/update"
  echo "VMTEST RELEASE"
  t0=$(now_ms)
  reports() { grep "^$PREFIX/update " /run/update | cut -d' ' -f2-; }
  report() { reports | grep "\"state\":\"$1\"" | grep -m 1 "\"version\":\"$2\""; }
  ts_of() { sed -n 's/.*"ts":"\([^"]*\)".*/\1/p'; }
  wait_for 180 sh -c "grep '\"state\":\"refused\"' /run/update | grep -q '\"version\":\"0.1.0-3\"'"
  line=$(report refused 0.1.0-3)
  check update-refused "${line:-no refusal of 0.1.0-3 on $PREFIX/update after 180 s}" \
    has "$line" '"reason":"[^"]*built for armhf, and this device is arm64'
  if wait_for 300 sh -c "grep '\"state\":\"verified\"' /run/update | grep -q '\"version\":\"$GOOD\"'"; then
    t1=$(now_ms)
    first=$(report fetching "$GOOD" | ts_of)
    last=$(report verified "$GOOD" | ts_of)
    took=$(($(date -d "${last:-@0}" +%s%3N) - $(date -d "${first:-@0}" +%s%3N)))
    percents=$(reports | grep "\"version\":\"$GOOD\"" | sed -n 's/.*"state":"\([a-z]*\)".*"percent":\([0-9]*\).*/\1 \2/p' | tr '\n' ',')
    pass update-verified "$GOOD verified $((t1 - t0)) ms after the host was asked to publish; by the agent's reports $took ms from fetching to verified ($(stat -c %s "$deb" 2>&1) bytes; reports: ${percents%,})"
  else
    fail update-verified "no verified $GOOD after 300 s; reports: $(reports | tail -n 4 | tr '\n' '|')"
  fi
  info "update: pinpost said: $(journalctl -b -o cat --no-pager "_PID=$pid" | grep 'update' | tail -n 6 | tr '\n' '|')"
  # The package kept: its SHA-256 the signed manifest's (the manifest's
  # body is JSON inside the signed JSON envelope), the agent's, a package
  # dpkg reads as $GOOD, and no part left.
  sha=$(grep -o -E 'sha256[^0-9a-f]*[0-9a-f]{64}' "$deb.manifest" 2>/dev/null | grep -o -E '[0-9a-f]{64}' | head -n 1)
  got=$(sha256sum "$deb" 2>/dev/null | cut -d' ' -f1)
  owner=$(stat -c '%a %U:%G' "$deb" 2>&1)
  version=$(dpkg-deb -f "$deb" Version 2>&1)
  left=$(ls -A "$dir" 2>&1 | tr '\n' ' ')
  ready=$(ls -A "$dir/ready" 2>&1 | tr '\n' ' ')
  check update-file "$deb: $owner, sha256 ${got:-none}, the manifest's ${sha:-none}, dpkg-deb says Version ${version:-none}; update/ holds $left; ready/ holds $ready" \
    sh -c "[ -n '$sha' ] && [ '$got' = '$sha' ] && [ '${owner#* }' = pinpost:pinpost ] && [ '$version' = '$GOOD' ] && [ ! -e '$dir/package.part' ]"
  check update-same-process "MainPID $pid -> $(prop MainPID), NRestarts $restarts -> $(prop NRestarts), $(prop ActiveState)" \
    sh -c "[ \"\$(systemctl show -p MainPID --value pinpost)\" = $pid ] && [ \"\$(systemctl show -p NRestarts --value pinpost)\" = $restarts ]"
  hwm=$(awk '/^VmHWM:/ { print $2, $3 }' "/proc/$pid/status" 2>/dev/null)
  rss=$(awk '/^VmRSS:/ { print $2, $3 }' "/proc/$pid/status" 2>/dev/null)
  check update-memory "pid $pid after the fetch: VmHWM ${hwm:-unknown} (peak resident since its start), VmRSS ${rss:-unknown}" test -n "$hwm"
  # Withdrawn: the manifest cleared (retained, empty), as an operator would.
  # shellcheck disable=SC2086 # OPKEYS is a list of words
  mosquitto_pub $OPKEYS -p 8884 -q 1 -r -n -t "$PREFIX/release"
  wait_for 30 grep -q '"state":"withdrawn"' /run/update
  line=$(report withdrawn "$GOOD")
  check update-withdrawn "${line:-no withdrawn report}; ready/ then holds: $(ls -A "$dir/ready" 2>&1 | tr '\n' ' ')" \
    sh -c "[ -n '$line' ] && [ ! -e '$deb' ]"
  sub_stop
}

# The root helper (issue 30, section 3): pinpost-update.path starts
# pinpost-update.service (pinpost install-update, as root) when a checked
# package lands in the agent's update/ready/; it installs it with dpkg,
# restarts the agent and waits up to [update] health_timeout (60 s in this
# config) for it to be connected and delivering, else puts the previous
# package back. What it leaves is in /var/lib/pinpost-update.
BROKEN=0.1.0-4 NEXT=0.1.0-5
UPD=/var/lib/pinpost-update
HEALTH_TIMEOUT=60
# A field of a one-level JSON object (string values), from stdin.
json_field() { sed -n "s/.*\"$1\" *: *\"\(\([^\"\\\\]\|\\\\.\)*\)\".*/\1/p" | head -n 1; }
outcome() { json_field "$1" <$UPD/outcome.json 2>/dev/null; }
dpkg_says() { dpkg-query -W -f '${Version} ${Status}' pinpost 2>&1; }
uprop() { systemctl show -p "$1" --value pinpost-update.service; }
# The helper's journal, its lines in one ($J), read with the shell's own
# read (no process started: the watchers poll it every 20 ms); STEP is
# none when there is no journal.
journal_step() {
  J='' STEP=none
  [ -e $UPD/journal.json ] || return 0
  while IFS= read -r l || [ -n "$l" ]; do J="$J$l"; done <$UPD/journal.json 2>/dev/null
  case $J in
  *'"rolling-back"'* | *'"rolling back"'*) STEP='rolling back' ;;
  *'"checking"'*) STEP=checking ;;
  *'"installing"'*) STEP=installing ;;
  *) STEP="other: $J" ;;
  esac
}
# Every change of the helper's journal, in guest ms, into /run/steps (for
# how long each step took).
steps_start() {
  : >/run/steps
  (
    prev=none
    while :; do
      journal_step
      if [ "$STEP" != "$prev" ]; then
        echo "$(now_ms) $STEP" >>/run/steps
        prev=$STEP
      fi
      sleep 0.02
    done
  ) &
  STEPS=$!
}
steps_stop() { kill "$STEPS" 2>/dev/null; wait "$STEPS" 2>/dev/null; }
# The steps since guest ms T, as "+1.2 s installing|...".
steps_since() {
  awk -v t0="$1" '$1 >= t0 { t = $1; $1 = ""; printf "+%.1f s%s|", (t - t0) / 1000, $0 }' /run/steps
}
# When the step STEP first began at or after guest ms T.
step_at() { awk -v t0="$1" -v s="$2" '$1 >= t0 { t = $1; $1 = ""; sub(/^ /, ""); if ($0 == s) { print t; exit } }' /run/steps; }
# The agent's update reports and its releases seen by the operator's
# subscriber (/run/helper), payloads only.
updates() { grep "^$PREFIX/update " /run/helper | cut -d' ' -f2-; }
update_with() { updates | grep "\"state\":\"$1\"" | grep "$2" | tail -n 1; }
helper_said() { journalctl -b -o cat --no-pager -u pinpost-update.service --since "@$(($1 / 1000))" | tail -n "${2:-8}" | tr '\n' '|'; }
# Asks the host for its witness (a mosquitto_sub through the forward,
# CN=witness on 8884) and waits until Mosquitto says it connected.
witness() {
  log=/var/log/mosquitto/mosquitto.log
  n=$(grep -c 'as CN=witness' $log 2>/dev/null)
  echo "VMTEST WITNESS"
  wait_for 60 sh -c "[ \$(grep -c 'as CN=witness' $log) -gt ${n:-0} ]" ||
    info "the host's witness did not connect in 60 s"
}
# pinpost.service as it runs, in one line.
agent_line() { echo "pinpost $(prop ActiveState)/$(prop SubState) MainPID $(prop MainPID) NRestarts $(prop NRestarts); status: $(prop StatusText)"; }
delivering() { systemctl show -p StatusText --value pinpost | grep -q 'delivering'; }
is_elf() { [ "$(head -c 4 "$1" 2>/dev/null | od -A n -t x1 | tr -d ' ')" = 7f454c46 ]; }
# Waits for outcome.json to speak of VERSION; then OUT_MS is when.
wait_outcome() { # VERSION SECONDS
  wait_for "$2" sh -c "grep -q '\"version\" *: *\"$1\"' $UPD/outcome.json"
  ok=$?
  OUT_MS=$(now_ms)
  return $ok
}

helper() {
  # Held off in update(); from now on as installed.
  systemctl start pinpost-update.path
  check helper-units "pinpost-update.path $(systemctl is-enabled pinpost-update.path 2>&1)/$(systemctl is-active pinpost-update.path 2>&1), pinpost-update.service $(systemctl is-enabled pinpost-update.service 2>&1); $(grep -h -E '^(PathExistsGlob|ExecStart|Type|User)=' /usr/lib/systemd/system/pinpost-update.path /usr/lib/systemd/system/pinpost-update.service 2>&1 | tr '\n' ' ')" \
    sh -c '[ "$(systemctl is-enabled pinpost-update.path)" = enabled ] && systemctl is-active -q pinpost-update.path && [ "$(systemctl is-enabled pinpost-update.service)" = enabled ]'
  sub_start /run/helper "$PREFIX/update" "$PREFIX/status" "$PREFIX/release"
  # The host's witness, through the forward (its certificate's subject is
  # its name on 8884).
  witness
  steps_start

  # 1. The release fetched and checked, installed by the helper.
  pid=$(prop MainPID) inv=$(prop InvocationID)
  t0=$(now_ms)
  echo "VMTEST PUBLISH $GOOD"
  if wait_outcome "$GOOD" 240; then
    wait_for 30 delivering
    t1=$(now_ms)
    echo "VMTEST MARK installed $OUT_MS"
    state=$(outcome state) previous=$(outcome previous)
    version=$(dpkg_says)
    check helper-installed "outcome.json $(outcome state) $(outcome version) (previous $previous) $(((OUT_MS - t0) / 100 / 10)).$(((OUT_MS - t0) / 100 % 10)) s after the host was asked to publish; dpkg: $version; helper: $(uprop Result), steps $(steps_since "$t0"); journal.json $([ -e $UPD/journal.json ] && echo left || echo gone); MainPID $pid -> $(prop MainPID); $(agent_line)" \
      sh -c "[ '$state' = installed ] && [ '$previous' = 0.1.0-1 ] && [ '$version' = '$GOOD install ok installed' ] && [ ! -e $UPD/journal.json ] && [ \"\$(systemctl show -p InvocationID --value pinpost)\" != '$inv' ] && systemctl is-active -q pinpost"
  else
    fail helper-installed "no outcome for $GOOD in 240 s: outcome.json: $(cat $UPD/outcome.json 2>&1); steps $(steps_since "$t0"); dpkg: $(dpkg_says); ready/: $(ls /var/lib/pinpost/outbox/update/ready 2>&1 | tr '\n' ' '); helper: $(helper_said "$t0")"
    t1=$(now_ms)
  fi
  info "helper: it said $(helper_said "$t0" 12)"
  line=$(update_with installed "\"installed\":\"$GOOD\"")
  check helper-installed-report "reported: ${line:-no installed report}; the last report: $(updates | tail -n 1)" \
    test -n "$line"
  online=$(awk '$1 == "'"$PREFIX"'/status" { print $2 }' /run/helper | tr '\n' ' ')
  check helper-installed-delivering "$(agent_line) ($((t1 - OUT_MS)) ms after the outcome); status messages seen (the first retained): ${online:-none}" \
    sh -c 'systemctl show -p StatusText --value pinpost | grep -q delivering && systemctl is-active -q pinpost'
  sleep 1

  # 2. A release whose pinpost exits at start: rolled back within the
  # health timeout.
  pid=$(prop MainPID) inv=$(prop InvocationID)
  t0=$(now_ms)
  echo "VMTEST PUBLISH $BROKEN"
  if wait_outcome "$BROKEN" $((HEALTH_TIMEOUT + 240)); then
    wait_for 60 delivering
    t1=$(now_ms)
    echo "VMTEST MARK rolled-back $OUT_MS"
    state=$(outcome state) reason=$(outcome reason) previous=$(outcome previous)
    checking=$(step_at "$t0" checking) back=$(step_at "$t0" 'rolling back')
    health=''
    [ -n "$checking" ] && [ -n "$back" ] && health="the broken version checked for $(((back - checking) / 100 / 10)).$(((back - checking) / 100 % 10)) s before the rollback began (health_timeout ${HEALTH_TIMEOUT} s), "
    exits=$(journalctl -b -o cat --no-pager -u pinpost.service --since "@$((t0 / 1000))" | grep -c 'status=3')
    broken=$(journalctl -b -o cat --no-pager -u pinpost.service --since "@$((t0 / 1000))" | grep -m 1 'broken on purpose')
    check rollback-outcome "outcome.json $state $(outcome version) (previous $previous): \"$reason\"; ${health}rolled back $(((OUT_MS - t0) / 100 / 10)).$(((OUT_MS - t0) / 100 % 10)) s after the host was asked to publish; steps $(steps_since "$t0"); pinpost.service exited with status 3 $exits times; its stderr: ${broken:-none}" \
      sh -c "[ '$state' = 'rolled back' ] && [ '$previous' = '$GOOD' ] && printf '%s' \"\$1\" | grep -q -E 'status 3|code 3|exit(ed)? (with )?3'" _ "$reason"
    if [ -n "$checking" ] && [ -n "$back" ] && [ $((back - checking)) -gt $((HEALTH_TIMEOUT * 1000 + 2000)) ]; then
      fail rollback-within "the rollback began $((back - checking)) ms after the check began, past health_timeout ${HEALTH_TIMEOUT} s"
    fi
  else
    fail rollback-outcome "no outcome for $BROKEN in $((HEALTH_TIMEOUT + 240)) s: outcome.json: $(cat $UPD/outcome.json 2>&1); steps $(steps_since "$t0"); dpkg: $(dpkg_says); helper: $(helper_said "$t0")"
    t1=$(now_ms)
  fi
  info "rollback: the helper said $(helper_said "$t0" 16)"
  audit=$(dpkg --audit 2>&1)
  version=$(dpkg_says)
  check rollback-dpkg "dpkg: $version; dpkg --audit: ${audit:-nothing}; /usr/bin/pinpost: $(if is_elf /usr/bin/pinpost; then echo ELF; else head -c 60 /usr/bin/pinpost | tr '\n' ' '; fi); $UPD/previous: $(ls $UPD/previous 2>&1 | tr '\n' ' ')" \
    sh -c "[ '$version' = '$GOOD install ok installed' ] && [ -z \"\$(dpkg --audit 2>&1)\" ] && [ \"\$(head -c 4 /usr/bin/pinpost | od -A n -t x1 | tr -d ' ')\" = 7f454c46 ]"
  check rollback-healthy "$(agent_line) ($((t1 - ${OUT_MS:-t1})) ms after the outcome); InvocationID new: $([ "$(prop InvocationID)" != "$inv" ] && echo yes || echo no)" \
    sh -c "systemctl is-active -q pinpost && systemctl show -p StatusText --value pinpost | grep -q delivering && [ \"\$(systemctl show -p InvocationID --value pinpost)\" != '$inv' ]"
  line=$(update_with 'rolled back' "\"version\":\"$BROKEN\"")
  check rollback-report "reported: ${line:-no rolled back report for $BROKEN}; the last report: $(updates | tail -n 1)" \
    sh -c 'printf "%s" "$1" | grep -q "\"reason\":\"[^\"]"' _ "$line"
  modes=$(stat -c '%n %a %U:%G' $UPD $UPD/outcome.json $UPD/rolled-back.json 2>&1 | tr '\n' ' ')
  check rollback-recorded "rolled-back.json: $(tr -d '\n' <$UPD/rolled-back.json 2>&1 | cut -c1-300); $modes" \
    sh -c "grep -q '\"version\" *: *\"$BROKEN\"' $UPD/rolled-back.json && [ \"\$(stat -c %a $UPD)\" = 755 ] && [ \"\$(stat -c %a $UPD/outcome.json)\" = 644 ] && [ \"\$(stat -c %a $UPD/rolled-back.json)\" = 644 ]"

  # Published again (signed anew, so not the manifest the agent has seen):
  # refused, and nothing fetched or installed.
  started=$(uprop ExecMainStartTimestampMonotonic)
  was=$(cat $UPD/outcome.json 2>/dev/null)
  manifests=$(grep -c "^$PREFIX/release " /run/helper)
  lines=$(wc -l </run/helper)
  t0=$(now_ms)
  echo "VMTEST PUBLISH $BROKEN again"
  wait_for 60 sh -c "[ \$(grep -c '^$PREFIX/release ' /run/helper) -gt $manifests ]"
  # Time to fetch it, were it fetched (the first fetch took about 3 s).
  sleep 10
  # The agent's word for the manifest of a release rolled back here: its
  # state "rolled back", and a reason that says it is not tried again.
  refused=$(updates | grep -E '"state":"(rolled back|refused)"' | grep "\"version\":\"$BROKEN\"" | grep -E '"reason":"[^"]*(not tried again|rolled back)' | tail -n 1)
  fetched=$(sed -n "$((lines + 1)),\$p" /run/helper | grep "^$PREFIX/update " | grep "\"version\":\"$BROKEN\"" | grep -c -E '"state":"(fetching|verified)"')
  said=$(journalctl -b -o cat --no-pager -u pinpost.service | grep "$BROKEN" | tail -n 2 | tr '\n' '|')
  check rollback-refused-again "after $BROKEN was published again: ${fetched} fetching/verified reports for it, helper started again: $([ "$(uprop ExecMainStartTimestampMonotonic)" = "$started" ] && echo no || echo yes), outcome.json $([ "$(cat $UPD/outcome.json 2>/dev/null)" = "$was" ] && echo unchanged || echo changed), ready/: $(ls -A /var/lib/pinpost/outbox/update/ready 2>&1 | tr '\n' ' '); refusal: ${refused:-none}; pinpost said: ${said:-nothing}" \
    sh -c "[ ${fetched:-0} -eq 0 ] && [ \"\$(systemctl show -p ExecMainStartTimestampMonotonic --value pinpost-update.service)\" = '$started' ] && [ \"\$(cat $UPD/outcome.json)\" = \"\$1\" ] && [ -n \"\$2\" ] && ! ls /var/lib/pinpost/outbox/update/ready/*$BROKEN* 2>/dev/null" _ "$was" "$refused"
  sub_stop
  steps_stop
}

# 4. A signed config (issue 30, section 4): the host makes pi-01's config
# from this guest's own config.toml, signs it (release sign-config, which
# runs the device's checker) and release publishes it on $PREFIX/config;
# the agent checks it and hands it to the helper as
# update/ready/config.signed; the helper writes it with the old file's
# owner and mode, restarts the agent and runs the same health gate as for
# a package. good: sensor s's unit "V" made "volt" (vm-certs.sh's
# config_asked), harmless, and every reading made with it shows it; bad:
# the broker's port 8885, where nothing listens here, which the checker
# passes and with which the agent cannot connect, so the helper puts the
# good one back after health_timeout; then the bad one signed anew (a
# newer date, the same config), which is not applied again. The host
# sends each config's SHA-256 (sha256sum's, on the host) retained on
# $ENROLL_TOPIC/config-<what> before the signed config: what the file
# here, the agent's reports and outcome.json are held to.
CONFIG=/etc/pinpost/config.toml
CONFIG_UNIT=volt CONFIG_BAD_PORT=8885
sha_of() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }
# Milliseconds as seconds with one decimal.
secs() { echo "$(($1 / 1000)).$(($1 / 100 % 10))"; }
# ISO 8601 (as the agent and the helper write it) to Unix ms.
iso_ms() { date -d "${1:-@0}" +%s%3N 2>/dev/null || echo 0; }
field() { printf '%s\n' "$1" | json_field "$2"; }
# The agent's config/state reports seen by the operator's subscriber
# (/run/config), payloads only; the last with STATE for the config SHA.
cstates() { grep "^$PREFIX/config/state " /run/config | cut -d' ' -f2-; }
cstate() { cstates | grep "\"state\":\"$1\"" | grep "\"config\":\"$2\"" | tail -n 1; }
# The config file's SHA-256 at each change, in guest ms, into /run/cfgfile
# (when the helper wrote it, and put it back).
cfgfile_start() {
  : >/run/cfgfile
  (
    prev=''
    while :; do
      now=$(sha_of $CONFIG)
      if [ "$now" != "$prev" ]; then
        echo "$(now_ms) ${now:-none}" >>/run/cfgfile
        prev=$now
      fi
      sleep 0.2
    done
  ) &
  CFGFILE=$!
}
cfgfile_stop() { kill "$CFGFILE" 2>/dev/null; wait "$CFGFILE" 2>/dev/null; }
# When the file first had SHA at or after guest ms T.
cfgfile_at() { awk -v t0="$1" -v s="$2" '$1 >= t0 && $2 == s { print $1; exit }' /run/cfgfile; }
# The file's changes since guest ms T, as "+1.2 s 0123456789ab|...".
cfgfile_since() { awk -v t0="$1" '$1 >= t0 { printf "+%.1f s %s|", ($1 - t0) / 1000, substr($2, 1, 12) }' /run/cfgfile; }

reconfig() {
  sub_start /run/config "$PREFIX/config/state" "$PREFIX/config" "$PREFIX/sensor/s"
  steps_start
  cfgfile_start
  # Before any signed config: the running agent's retained report.
  wait_for 30 grep -q "^$PREFIX/config/state " /run/config
  was=$(sha_of $CONFIG)
  line=$(cstates | tail -n 1)
  check config-running "config/state: ${line:-nothing}; sha256sum $CONFIG: $was; the test disk's config.toml: $(cmp -s $CONFIG $T/config.toml && echo the same bytes || echo other bytes)" \
    sh -c "[ '$(field "$line" state)' = running ] && [ '$(field "$line" running)' = '$was' ] && cmp -s $CONFIG $T/config.toml"

  # The good config: applied, the agent restarted with it and delivering.
  inv=$(prop InvocationID) pid=$(prop MainPID)
  t0=$(now_ms)
  echo "VMTEST CONFIG good"
  good=$(fetch "$ENROLL_TOPIC/config-good" 120)
  if [ -n "$good" ] && wait_outcome "config:$good" 240; then
    wait_for 30 delivering
    wait_for 60 sh -c "grep '^$PREFIX/config/state ' /run/config | grep '\"state\":\"applied\"' | grep -q '\"config\":\"$good\"'"
    t1=$(now_ms)
    echo "VMTEST MARK config-applied $OUT_MS"
    state=$(outcome state) kind=$(outcome kind) previous=$(outcome previous)
    applying=$(cstate applying "$good") applied=$(cstate applied "$good")
    handed=$(iso_ms "$(field "$applying" ts)") done_ms=$(iso_ms "$(outcome ts)")
    now=$(sha_of $CONFIG) mode=$(stat -c %a:%U:%G $CONFIG 2>&1)
    left=$(ls -A /etc/pinpost | tr '\n' ' ')
    check config-applied "$CONFIG sha256 $now, the host's (sha256sum there) $good, $mode; outcome.json $kind $state (previous $previous) $(secs $((OUT_MS - t0))) s after the host was asked to publish, $(secs $((done_ms - handed))) s after the agent's applying report; helper: $(uprop Result), steps $(steps_since "$t0"); the file $(cfgfile_since "$t0"); config/state applying: ${applying:-none}; applied: ${applied:-none}; MainPID $pid -> $(prop MainPID), InvocationID new: $([ "$(prop InvocationID)" != "$inv" ] && echo yes || echo no); $(agent_line); /etc/pinpost holds $left" \
      sh -c "[ '$now' = '$good' ] && [ '$mode' = 640:root:pinpost ] && [ '$state' = applied ] && [ '$kind' = config ] && [ '$previous' = 'config:$was' ] && [ '$(field "$applying" config)' = '$good' ] && [ '$(field "$applied" running)' = '$good' ] && [ \"\$(systemctl show -p InvocationID --value pinpost)\" != '$inv' ] && systemctl is-active -q pinpost && systemctl show -p StatusText --value pinpost | grep -q delivering && ! ls -A /etc/pinpost | grep -q pinpost-tmp && [ ! -e $UPD/journal.json ]"
  else
    fail config-applied "no outcome for config:${good:-(no SHA-256 from the host in 120 s)} $(secs $(($(now_ms) - t0))) s after the host was asked: outcome.json: $(tr -d '\n' <$UPD/outcome.json 2>&1); steps $(steps_since "$t0"); config/state: $(cstates | tail -n 3 | tr '\n' '|'); ready/: $(ls -A /var/lib/pinpost/outbox/update/ready 2>&1 | tr '\n' ' '); helper: $(helper_said "$t0")"
    t1=$(now_ms)
  fi
  info "config: the helper said $(helper_said "$t0" 6)"
  # Readings made with it, as the operator's subscriber got them: each
  # made from the agent's start with it carries unit "volt", none made
  # after the first of those says "V".
  wait_for 30 grep -q "^$PREFIX/sensor/s .*\"unit\":\"$CONFIG_UNIT\"" /run/config
  verdict=$(grep "^$PREFIX/sensor/s " /run/config | awk -v unit="$CONFIG_UNIT" '
    { if (!match($0, /"ts":"[^"]*"/)) next; ts = substr($0, RSTART + 6, RLENGTH - 7)
      match($0, /"seq":[0-9]+/); seq = substr($0, RSTART + 6, RLENGTH - 6)
      if (index($0, "\"unit\":\"" unit "\"")) { n++; if (n == 1) { first = ts; fseq = seq }; last = ts; lseq = seq }
      else { m++; if (n > 0 && ts >= first) late++; old = ts } }
    END { printf "%s %d readings with unit %s received, seq %s made %s to seq %s made %s; before them %d with the old unit, the last made %s; %d with the old unit made after the first new one\n",
      (n > 0 && late == 0) ? "PASS" : "FAIL", n, unit, fseq, first, lseq, last, m, old, late + 0 }')
  echo "VMTEST ${verdict%% *} config-delivering: ${verdict#* } (the helper's outcome at $(outcome ts); $(agent_line))"

  # The bad config: written, the agent cannot connect, the good one back
  # within health_timeout.
  inv=$(prop InvocationID)
  t0=$(now_ms)
  echo "VMTEST CONFIG bad"
  bad=$(fetch "$ENROLL_TOPIC/config-bad" 120)
  listeners=$(ss -H -l -t -n "sport = :$CONFIG_BAD_PORT" 2>&1 | wc -l)
  if [ -n "$bad" ] && wait_outcome "config:$bad" $((HEALTH_TIMEOUT + 240)); then
    at_outcome=$(wc -l </run/config)
    wait_for 60 delivering
    wait_for 60 sh -c "grep '^$PREFIX/config/state ' /run/config | grep '\"state\":\"rolled back\"' | grep -q '\"config\":\"$bad\"'"
    t1=$(now_ms)
    echo "VMTEST MARK config-rolled-back $OUT_MS"
    state=$(outcome state) kind=$(outcome kind) previous=$(outcome previous) reason=$(outcome reason)
    checking=$(step_at "$t0" checking) back=$(step_at "$t0" 'rolling back')
    written=$(cfgfile_at "$t0" "$bad") restored=$(cfgfile_at "${written:-$t0}" "$good")
    gate=$((${back:-0} - ${checking:-0}))
    said=$(journalctl -b -o cat --no-pager -u pinpost.service --since "@$((t0 / 1000))" | grep -m 1 -F ":$CONFIG_BAD_PORT")
    now=$(sha_of $CONFIG) mode=$(stat -c %a:%U:%G $CONFIG 2>&1)
    check config-rolled-back "outcome.json $kind $state (previous $previous): \"$reason\"; the bad config in $CONFIG from +$(secs $((${written:-t0} - t0))) s to +$(secs $((${restored:-t0} - t0))) s after the host was asked to publish (the file: $(cfgfile_since "$t0")); checked $(secs $gate) s before the rollback began (health_timeout $HEALTH_TIMEOUT s; the gate looks every 1 s, then reads the agent's log); rolled back $(secs $((OUT_MS - t0))) s after the host was asked; steps $(steps_since "$t0"); $listeners listeners on $CONFIG_BAD_PORT; the agent said: ${said:-nothing naming $CONFIG_BAD_PORT}; now $CONFIG sha256 $now (the good one's $good), $mode; rolled-back.json: $(tr -d '\n' <$UPD/rolled-back.json 2>&1 | grep -o "config:${bad}[^}]*" | cut -c1-120); $(agent_line), InvocationID new: $([ "$(prop InvocationID)" != "$inv" ] && echo yes || echo no)" \
      sh -c "[ '$state' = 'rolled back' ] && [ '$kind' = config ] && [ '$previous' = 'config:$good' ] && [ -n \"\$1\" ] && [ -n '$written' ] && [ -n '$restored' ] && [ '$listeners' = 0 ] && [ $gate -ge $((HEALTH_TIMEOUT * 1000 - 1000)) ] && [ $gate -le $((HEALTH_TIMEOUT * 1000 + 10000)) ] && [ '$now' = '$good' ] && [ '$mode' = 640:root:pinpost ] && grep -q 'config:$bad' $UPD/rolled-back.json && [ \"\$(systemctl show -p InvocationID --value pinpost)\" != '$inv' ] && systemctl is-active -q pinpost && systemctl show -p StatusText --value pinpost | grep -q delivering" _ "$reason"
  else
    fail config-rolled-back "no outcome for config:${bad:-(no SHA-256 from the host in 120 s)} $(secs $(($(now_ms) - t0))) s after the host was asked: outcome.json: $(tr -d '\n' <$UPD/outcome.json 2>&1); steps $(steps_since "$t0"); the file: $(cfgfile_since "$t0"); config/state: $(cstates | tail -n 3 | tr '\n' '|'); helper: $(helper_said "$t0")"
    t1=$(now_ms)
  fi
  info "config: the helper said $(helper_said "$t0" 8)"
  line=$(cstate 'rolled back' "$bad")
  # The outbox sends in order: the report comes after the readings spooled
  # while the agent could not connect.
  backlog=$(sed -n "$((${at_outcome:-0} + 1)),\$p" /run/config | awk -v p="$PREFIX" '
    index($0, p "/config/state ") == 1 && index($0, "\"state\":\"rolled back\"") { found = 1; exit }
    index($0, p "/sensor/s ") == 1 { n++ } END { print found ? n : 0 }')
  check config-rolled-back-report "reported $(secs $((t1 - ${OUT_MS:-t1}))) s after the outcome, behind $backlog readings the subscriber got in between (spooled while the agent could not connect: the outbox sends in order): ${line:-no rolled back report for $bad}; the last report: $(cstates | tail -n 1)" \
    sh -c "[ '$(field "$line" running)' = '$good' ] && [ -n '$bad' ] && printf '%s' \"\$1\" | grep -q '\"reason\":\"[^\"]'" _ "$line"

  # The bad config signed anew (not the bytes the agent has judged):
  # neither handed over nor applied again.
  started=$(uprop ExecMainStartTimestampMonotonic)
  was=$(cat $UPD/outcome.json 2>/dev/null)
  inv=$(prop InvocationID)
  configs=$(grep -c "^$PREFIX/config " /run/config)
  # A signed config is JSON over several lines: its signed body (with its
  # date) on one.
  first=$(grep '^ *"body":' /run/config | tail -n 1)
  lines=$(wc -l </run/config)
  t0=$(now_ms)
  echo "VMTEST CONFIG bad again"
  wait_for 60 sh -c "[ \$(grep -c '^$PREFIX/config ' /run/config) -gt $configs ]"
  again=$(grep '^ *"body":' /run/config | tail -n 1)
  # Time to hand it over and start the helper, were it applied (the
  # good one was written about a second after the host published it).
  sleep 10
  since=$(sed -n "$((lines + 1)),\$p" /run/config | grep "^$PREFIX/config/state " | cut -d' ' -f2- | tr '\n' '|')
  retained=$(fetch "$PREFIX/config/state" 10)
  said=$(journalctl -b -o cat --no-pager -u pinpost.service --since "@$((t0 / 1000))" | grep -i 'config' | tail -n 2 | tr '\n' '|')
  check config-refused-again "the bad config signed anew reached the broker $([ -n "$again" ] && [ "$again" != "$first" ] && echo 'as another signed copy' || echo 'NOT as another copy'); 10 s later: helper started again: $([ "$(uprop ExecMainStartTimestampMonotonic)" = "$started" ] && echo no || echo yes), outcome.json $([ "$(cat $UPD/outcome.json 2>/dev/null)" = "$was" ] && echo unchanged || echo changed), ready/: $(ls -A /var/lib/pinpost/outbox/update/ready 2>&1 | tr '\n' ' '), $CONFIG sha256 $(sha_of $CONFIG) (the good one's: $([ "$(sha_of $CONFIG)" = "$good" ] && echo yes || echo no)), InvocationID the same: $([ "$(prop InvocationID)" = "$inv" ] && echo yes || echo no); config/state reports since: ${since:-none}; config/state retained: ${retained:-none}; pinpost said: ${said:-nothing}" \
    sh -c "[ -n \"\$2\" ] && [ \"\$2\" != \"\$3\" ] && [ \"\$(systemctl show -p ExecMainStartTimestampMonotonic --value pinpost-update.service)\" = '$started' ] && [ \"\$(cat $UPD/outcome.json)\" = \"\$1\" ] && [ \"\$(sha256sum $CONFIG | cut -d' ' -f1)\" = '$good' ] && [ \"\$(systemctl show -p InvocationID --value pinpost)\" = '$inv' ] && ! printf '%s' \"\$4\" | grep -q '\"state\":\"applying\"' && ! ls /var/lib/pinpost/outbox/update/ready/config.signed 2>/dev/null && printf '%s' \"\$5\" | grep -E '\"state\":\"(rolled back|refused)\"' | grep '\"config\":\"$bad\"' | grep -q '\"reason\":\"[^\"]'" \
    _ "$was" "$again" "$first" "$since" "$retained"
  # Withdrawn, as an operator would: the later boots' agents (the clock
  # boot's installed afresh, with no record of the rollback) must not meet
  # it on the broker.
  # shellcheck disable=SC2086 # OPKEYS is a list of words
  mosquitto_pub $OPKEYS -p 8884 -q 1 -r -n -t "$PREFIX/config"
  cfgfile_stop
  sub_stop
  steps_stop
}

# 3. A power cut in the middle of an install: $NEXT published, and when the
# helper's journal says "installing" (at best while dpkg has the new binary
# unpacked beside the old, /usr/bin/pinpost.dpkg-new), the power goes:
# sysrq b reboots at once, without syncing (qemu, run with -no-reboot,
# ends). The next boot (installcut) shows what the helper made of it. For
# that boot: the broker starts at boot, as a Pi's is there when it boots
# (the helper waits for the agent to deliver), and a subscriber that starts
# before pinpost keeps every update report the agent makes (this boot's
# broker is cut too, so nothing of now is retained there then).
install_cut() {
  systemctl enable mosquitto 2>/dev/null
  # Started once subscribed (up to 15 s), so pinpost starts after that.
  cat >/usr/local/sbin/vmtest-witness <<SCRIPT
#!/bin/sh
stdbuf -oL mosquitto_sub $OP -d -q 1 -v -t "$PREFIX/#" >>/run/vmtest-witness 2>&1 &
i=0
while [ \$i -lt 150 ] && ! grep -q "received SUBACK" /run/vmtest-witness; do sleep 0.1; i=\$((i + 1)); done
SCRIPT
  chmod 755 /usr/local/sbin/vmtest-witness
  cat >/etc/systemd/system/vmtest-witness.service <<UNIT
[Unit]
Description=VM test: the operator's subscriber to pi-01, from before pinpost starts
Wants=mosquitto.service
After=mosquitto.service
Before=pinpost.service pinpost-update.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/vmtest-witness
[Install]
WantedBy=multi-user.target
UNIT
  systemctl enable vmtest-witness.service 2>/dev/null
  sync
  t0=$(now_ms)
  (
    first='' how=''
    while :; do
      journal_step
      case $STEP in
      installing)
        now=$(now_ms)
        [ -n "$first" ] || first=$now
        if [ -e /usr/bin/pinpost.dpkg-new ]; then
          how="with /usr/bin/pinpost.dpkg-new on disk (dpkg unpacking)"
        elif [ $((now - first)) -ge 30000 ]; then
          how="no /usr/bin/pinpost.dpkg-new seen in 30 s"
        fi
        ;;
      none) ;;
      *) [ -z "$first" ] || how="the journal went on to $STEP before a dpkg-new file was seen" ;;
      esac
      if [ -n "$how" ]; then
        pass install-cut "cut $(($(now_ms) - t0)) ms after the host was asked to publish $NEXT, $(($(now_ms) - first)) ms into \"installing\", $how; the journal: $J"
        echo "VMTEST INSTALLCUT $(now_ms) $STEP"
        echo b >/proc/sysrq-trigger
      fi
      sleep 0.02
    done
  ) &
  echo "VMTEST PUBLISH $NEXT"
  wait_for 300 false
  kill $! 2>/dev/null
  fail install-cut "no \"installing\" in the helper's journal 300 s after $NEXT was published: outcome.json: $(cat $UPD/outcome.json 2>&1); dpkg: $(dpkg_says); helper: $(helper_said "$t0")"
  # The boot ends as if cut, so the later boots still run.
  echo "VMTEST INSTALLCUT $(now_ms) none"
  echo b >/proc/sysrq-trigger
}

# The boot after that cut: the helper ran at boot (pinpost-update.service
# is wanted by multi-user.target, which the tests run after), and the
# agent must be active and delivering, dpkg consistent, the version either
# the previous one or $NEXT, and what happened said in outcome.json and on
# update. Then back to the later boots' ways (no broker at boot), and
# spooling until the host cuts.
installcut() {
  net_up
  witness
  ran=$(uprop ExecMainStartTimestamp) result=$(uprop Result)
  s0=$(uprop ExecMainStartTimestampMonotonic) s1=$(uprop ExecMainExitTimestampMonotonic)
  took=$(((${s1:-0} - ${s0:-0}) / 100000))
  said=$(journalctl -b -o cat --no-pager -u pinpost-update.service | tail -n 12 | tr '\n' '|')
  check installcut-helper "pinpost-update.service at boot: started ${ran:-never}, $result (status $(uprop ExecMainStatus)), $((took / 10)).$((took % 10)) s; it said: ${said:-nothing}" \
    sh -c "[ -n '$ran' ] && [ '$result' = success ]"
  wait_for 60 delivering
  version=$(dpkg_says) audit=$(dpkg --audit 2>&1)
  check installcut-dpkg "dpkg: $version; dpkg --audit: ${audit:-nothing}; /usr/bin/pinpost: $(is_elf /usr/bin/pinpost && echo ELF || echo not ELF); journal.json: $(cat $UPD/journal.json 2>&1 | tr '\n' ' ')" \
    sh -c "[ -z \"\$1\" ] && { [ '$version' = '$GOOD install ok installed' ] || [ '$version' = '$NEXT install ok installed' ]; } && [ \"\$(head -c 4 /usr/bin/pinpost | od -A n -t x1 | tr -d ' ')\" = 7f454c46 ] && [ ! -e $UPD/journal.json ]" _ "$audit"
  echo "VMTEST MARK installcut $(now_ms)"
  check installcut-agent "$(agent_line); up since $(prop ActiveEnterTimestamp)" \
    sh -c 'systemctl is-active -q pinpost && systemctl show -p StatusText --value pinpost | grep -q delivering'
  state=$(outcome state) oversion=$(outcome version) reason=$(outcome reason)
  installed=${version%% *}
  case "$installed/$state/$oversion" in
  "$NEXT/installed/$NEXT") case_is="the install was finished: $NEXT runs" ;;
  "$GOOD/interrupted/$NEXT") case_is="the install was undone, to be fetched again: $GOOD runs again" ;;
  "$GOOD/rolled back/$NEXT") case_is="the install was finished, then rolled back: $GOOD runs again" ;;
  *) case_is='' ;;
  esac
  check installcut-outcome "${case_is:-inconsistent}: dpkg $installed, outcome.json $state $oversion (previous $(outcome previous)) \"$reason\" at $(outcome ts); rolled-back.json: $(tr -d '\n' <$UPD/rolled-back.json 2>&1 | cut -c1-200)" \
    test -n "$case_is"
  reports=$(grep "^$PREFIX/update " /run/vmtest-witness | cut -d' ' -f2- | tr '\n' '|')
  # The agent says the helper's "interrupted" as failed, with its words.
  case $state in
  installed) want="\"state\":\"installed\",\"installed\":\"$NEXT\"" ;;
  interrupted) want="\"state\":\"failed\",\"installed\":\"$GOOD\",\"version\":\"$NEXT\",.*\"reason\":\"[^\"]*interrupted" ;;
  *) want="\"state\":\"rolled back\",\"installed\":\"$GOOD\",\"version\":\"$NEXT\"" ;;
  esac
  check installcut-report "the update reports since boot (a subscriber started before pinpost): ${reports:-none}" \
    has "$reports" "$want"
  info "installcut: pinpost said $(journalctl -b -o cat --no-pager -u pinpost.service | grep -i -E 'update|install' | tail -n 6 | tr '\n' '|')"
  # The later boots have no broker at boot and no early subscriber.
  systemctl disable vmtest-witness.service mosquitto 2>/dev/null
  rm -f /etc/systemd/system/vmtest-witness.service /usr/local/sbin/vmtest-witness
  systemctl daemon-reload
  sync
  check installcut-clean "for the later boots: mosquitto $(systemctl is-enabled mosquitto 2>&1) at boot, vmtest-witness $(systemctl is-enabled vmtest-witness 2>&1)" \
    sh -c '[ "$(systemctl is-enabled mosquitto)" = disabled ]'
  systemctl stop vmtest-witness 2>/dev/null
}

# What this boot's pinpost (started by systemd at boot, broker down) said,
# then the spool drained to a subscriber.
recover() {
  # Started at boot with the broker down: READY after the first attempt.
  check ready-without-broker "$(prop ActiveState)/$(prop SubState) with mosquitto $(systemctl is-active mosquitto); status: $(prop StatusText)" \
    sh -c '[ "$(systemctl show -p ActiveState --value pinpost)" = active ] && ! systemctl is-active -q mosquitto'
  log=$(journalctl -b -u pinpost --no-pager -o cat | grep -E 'did not stop cleanly|kept in|damaged' | tr '\n' '|')
  info "pinpost at boot: $log; its certificate: $(journalctl -b -u pinpost --no-pager -o cat | grep -m 1 -E 'renewed certificate|renewal' || echo 'the config'\''s')"
  check spool-recovered "$log" has "$log" 'messages kept in .* by an earlier run'
  info "dmesg: $(dmesg | grep -E 'EXT4-fs|recovery' | tr '\n' '|')"
  info "fsck: $(journalctl -b -u systemd-fsck-root --no-pager -o cat | tr '\n' '|')"
  systemctl stop pinpost
  systemctl start mosquitto
  sub_start /run/rx "$PREFIX/sensor/s"
  started=$(iso_now)
  systemctl start pinpost
  # Sent in order: once a reading made after this start arrives, the spool
  # has been sent.
  # A line without a ts (none yet, or half written) proves nothing.
  if wait_for 240 sh -c "tail -n 1 /run/rx | sed -n 's/.*\"ts\":\"\([^\"]*\)\".*/\1/p' | awk -v s='$started' '{ late = (\$0 > s) } END { exit !late }'"; then
    pass drained "the spool reached the subscriber ($(wc -l </run/rx) readings)"
  else
    fail drained "no reading newer than $started after 240 s ($(wc -l </run/rx) readings)"
  fi
  sub_stop
  sed 's/^[^ ]* /VMTEST RX /' /run/rx
}

# The clock boot: the host started the guest's real-time clock (PL031) at
# 1970-01-01T00:00:00 and put the real Unix time it did so on the kernel
# command line (vmtest.now); there is no network and no time service. The
# PL031 counts the host's whole seconds since then, so at the moment it
# ticks to N the real time is vmtest.now + N s: the tests set the clock
# from it "as NTP would". rtc_tick waits for the next tick: N in RTC.
rtc_tick() {
  read -r was </sys/class/rtc/rtc0/since_epoch
  # read is built in: no fork between the tick and its sight.
  while read -r RTC </sys/class/rtc/rtc0/since_epoch && [ "$RTC" = "$was" ]; do :; done
}
# What systemd-timesyncd makes once it has set the clock (clock.mark).
MARK=/run/systemd/timesync/synchronized
up_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
# The time of pinpost's first journal line matching PATTERN, in Unix ms
# (journald's, so read after the clock was set right).
said_at() { journalctl -b -u pinpost -o short-unix --no-pager | grep -m 1 -E -- "$1" | awk '{ printf "%.0f\n", $1 * 1000 }'; }
said() { journalctl -b -u pinpost -o cat --no-pager | grep -m 1 -E -- "$1"; }
# The operator's persistent session (-c; Mosquitto names it after the
# certificate): once subscribed, Mosquitto queues every QoS 1 message for
# it while it is away. -d says when the subscription is made.
witness_start() { # FILE
  # shellcheck disable=SC2086 # OP is a list of words
  stdbuf -oL mosquitto_sub $OP -d -c -i clockwitness -q 1 -v -t "$PREFIX/#" >>"$1" 2>&1 &
  SUB=$!
  wait_for 30 grep -q 'received SUBACK' "$1"
}

clock_boot() {
  now0=$(sed -n 's/.* vmtest.now=\([0-9]*\).*/\1/p' /proc/cmdline)
  read -r rtc </sys/class/rtc/rtc0/since_epoch
  # The kernel set the clock from the RTC (1970); systemd moves a clock
  # that reads before its own build time up to that time, at its start.
  info "at the tests' start: the RTC reads $(date -u -d "@$rtc" +%Y-%m-%dT%H:%M:%SZ), the system clock $(date -u +%Y-%m-%dT%H:%M:%SZ); the kernel: $(dmesg | grep -i -m 1 'system clock' | tr -s ' ')"
  # Nothing may set the clock or make the mark but the test.
  sources=$(systemctl list-unit-files --no-legend systemd-timesyncd.service chrony.service ntp.service ntpsec.service openntpd.service 2>/dev/null | awk '{ printf "%s ", $1 }')
  check clock-no-time-source "vmtest.now=${now0:-none}; time services: ${sources:-none installed}; $MARK $([ -e "$MARK" ] && echo exists || echo absent)" \
    sh -c "[ -n '$now0' ] && [ -z '$sources' ] && [ ! -e $MARK ]"
  install_and_configure
  # The purge took the renewed pair (/var/lib/pinpost) and the enrolled
  # certificate has ended: the host signed the kept request again (the
  # same key, which the purge kept) for this boot.
  install -m 0644 "$T/certs/pi-01/ca.crt" "$T/certs/pi-01/pi-01.crt" /etc/pinpost/certs/
  install -m 0644 -g pinpost "$T/certs/pi-01/release.pub" /etc/pinpost/certs/
  info "certificates: $(ls -l /etc/pinpost/certs | tail -n +2 | awk '{ printf "%s %s %s; ", $1, $3, $NF }')"
  # Mosquitto's log also says when a client subscribes (Unix seconds): when
  # the agent could first get a command.
  printf 'log_type %s\n' error warning notice information subscribe >/etc/mosquitto/conf.d/log.conf
  systemctl start mosquitto
  check broker "mosquitto active" systemctl is-active mosquitto

  # The witness subscribes at the real time (TLS needs it), and leaves.
  rtc_tick
  date -s "@$((now0 + RTC))" >/dev/null
  : >/run/witness
  if witness_start /run/witness; then
    pass clock-witness "persistent session subscribed to $PREFIX/# at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  else
    fail clock-witness "no SUBACK: $(tail -n 3 /run/witness | tr '\n' ' ')"
  fi
  sub_stop
  # Back to 1970, where the RTC says a boot with no time source is.
  rtc_tick
  date -s "@$RTC" >/dev/null
  up0=$(up_ms)
  if systemctl start pinpost; then
    pass clock-ready "systemctl start pinpost at $(date -u +%Y-%m-%dT%H:%M:%SZ) returned after READY in $(($(up_ms) - up0)) ms: $(prop ActiveState)/$(prop SubState); status: $(prop StatusText)"
  else
    fail clock-ready "systemctl start pinpost at 1970 failed: $(systemctl status pinpost --no-pager 2>&1 | tail -n 5 | tr '\n' ' ')"
  fi
  # 10 s of readings (100/s) that cannot leave: no certificate is valid yet.
  sleep 10
  line=$(said 'the clock is not trusted')
  check clock-untrusted-said "${line:-no line says the clock is not trusted}" has "$line" 'the clock is not trusted: it reads 1970-01-01T'
  line=$(said "certificate is valid only from")
  check clock-tls-words "${line:-no line names when the certificate starts}" has "$line" "the broker's certificate is valid only from .*, but this machine's clock says 1970-01-01"
  info "status at 1970: $(prop StatusText)"

  # Time arrives as systemd-timesyncd brings it: its runtime directory is
  # there from its start; when its server answers it steps the clock and
  # makes the mark straight after (": >" is the shell's own: no process
  # starts between the two).
  mkdir -p "${MARK%/*}"
  rtc_tick
  date -s "@$((now0 + RTC))" >/dev/null && : >"$MARK"
  set_ms=$(now_ms)
  set_up=$(up_ms)
  : >/run/clockrx
  witness_start /run/clockrx || fail clock-witness "no SUBACK after the clock was set: $(tail -n 3 /run/clockrx | tr '\n' ' ')"
  # A stamped command about every second until one is applied. Those sent
  # before the agent is back on the broker are lost (it keeps no session);
  # results come after the readings kept at 1970, so any command's counts.
  i=0 ok='' sent=''
  while [ "$i" -lt 30 ] && [ -z "$ok" ]; do
    i=$((i + 1))
    t=$(now_ms)
    sent="$sent c$i=$t"
    pub "$PREFIX/cmd/relay" "{\"id\":\"c$i\",\"action\":\"on\",\"ts\":$t}"
    wait_for 1 grep -q "^$PREFIX/cmd/relay/result {\"id\":\"c[0-9]*\",\"ok\":true" /run/clockrx
    ok=$(sed -n "s|^$PREFIX/cmd/relay/result {\"id\":\"\(c[0-9]*\)\",\"ok\":true.*|\1|p" /run/clockrx | head -n 1)
  done
  answered_ms=$(now_ms)
  trusted_ms=$(said_at 'the clock is trusted')
  connected_ms=$(said_at ': (INFO )?connected$')
  line=$(said 'the clock is trusted')
  check clock-trusted-said "${line:-no line says the clock is trusted}, $((${trusted_ms:-0} - set_ms)) ms after the clock was set" \
    sh -c "[ -n '$trusted_ms' ] && [ $((${trusted_ms:-0} - set_ms)) -le 3000 ] && [ -n '$line' ]"
  # The outbox drained: a reading made after the command is in (sent in order).
  last=$(date -u -d "@$((answered_ms / 1000))" +%Y-%m-%dT%H:%M:%S)
  if wait_for 240 sh -c "grep '^$PREFIX/sensor/s ' /run/clockrx | tail -n 1 | sed -n 's/.*\"ts\":\"\([^\"]*\)\".*/\1/p' | awk -v s='$last' '{ late = (\$0 > s) } END { exit !late }'"; then
    pass clock-drained "the readings kept at 1970 and since reached the witness ($(grep -c "^$PREFIX/sensor/s " /run/clockrx) readings)"
  else
    fail clock-drained "no reading newer than $last after 240 s ($(grep -c "^$PREFIX/sensor/s " /run/clockrx) readings)"
  fi
  # Every command's answer, now that late ones are in; when its
  # mosquitto_pub started, in s after the set (its TLS connection takes a
  # good part of a second here).
  answers='' sent_ms=0
  for kv in $sent; do
    id=${kv%%=*} t=${kv#*=}
    [ "$id" = "$ok" ] && sent_ms=$t
    answer=$(grep -m 1 "^$PREFIX/cmd/relay/result {\"id\":\"$id\"" /run/clockrx)
    [ -n "$answer" ] || answer="- none"
    answers="$answers $id at +$(((t - set_ms) / 100 / 10)).$(((t - set_ms) / 100 % 10)) s: ${answer#* };"
  done
  on=$(grep -m 1 "^$PREFIX/output/relay {\"value\":true" /run/clockrx | sed 's/.*"ts":"\([^"]*\)".*/\1/')
  on_ms=$(date -d "${on:-@0}" +%s%3N)
  if [ -n "$ok" ] && [ $((sent_ms - set_ms)) -le 10000 ]; then
    pass clock-command-within "$ok, its mosquitto_pub started $(((sent_ms - set_ms) / 1000)).$(((sent_ms - set_ms) % 1000 / 100)) s after the clock was set, turned the relay on at $on ($((on_ms - sent_ms)) ms after that); the agent said connected $((${connected_ms:-0} - set_ms)) ms after the set; results (by when their mosquitto_pub started):$answers"
  else
    fail clock-command-within "no stamped command applied in 10 s (${ok:-none} in $i tries); results:$answers"
  fi
  sub_stop
  info "pinpost said: $(journalctl -b -u pinpost -o cat --no-pager | grep -i -E 'clock|certificate|connected' | sort | uniq -c | sort -rn | head -n 8 | tr -s ' ' | tr '\n' '|')"
  info "the relay and stats, last: $(grep -E "^$PREFIX/(output/relay|stats) " /run/clockrx | tail -n 2 | tr '\n' '|')"
  info "command results the witness got, in the end: $(grep "cmd/relay/result " /run/clockrx | tr '\n' '|')"
  info "mosquitto on pi-01 since the clock was set ($((set_ms / 1000))): $(awk -v t="$((set_ms / 1000))" '{ s = $1; sub(/:$/, "", s) } s + 0 >= t && /pi-01/ && !/operator/' /var/log/mosquitto/mosquitto.log | head -n 6 | tr '\n' '|')"
  # For the host: when pinpost started and when the clock was set, in real
  # Unix ms (the start from boot time, which the setting did not move), and
  # when pinpost said it trusted the clock.
  echo "VMTEST CLOCKMARKS $((set_ms - (set_up - up0))) $set_ms ${trusted_ms:-0}"
  grep "^$PREFIX/sensor/s " /run/clockrx | sed 's/^[^ ]* /VMTEST CLOCKRX /'
}

# The broker goes away; pinpost spools 100 readings/s until the host cuts
# the power.
spool_until_cut() {
  systemctl stop mosquitto
  sleep 1
  echo "VMTEST SPOOLING $(now_ms)"
  while :; do
    echo "VMTEST TICK $(now_ms)"
    sleep 0.05
  done
}

upgrade_and_purge() {
  before=$(md5sum </etc/pinpost/config.toml)
  old=$(prop MainPID)
  if apt-get install -y "$T/debs/$(cat "$T/debs/second")" >/tmp/apt.log 2>&1; then
    pass upgrade-install "apt-get install ./$(cat "$T/debs/second") over the running agent"
  else
    fail upgrade-install "$(tail -n 3 /tmp/apt.log | tr '\n' ' ')"
  fi
  wait_for 30 systemctl is-active -q pinpost
  new=$(prop MainPID)
  check upgrade-restarts "MainPID $old -> $new, $(prop ActiveState), version $(dpkg-query -W -f '${Version}' pinpost)" \
    sh -c "[ '$new' != '$old' ] && [ '$new' != 0 ] && systemctl is-active -q pinpost"
  check upgrade-keeps-config "config.toml unchanged" sh -c "[ \"\$(md5sum </etc/pinpost/config.toml)\" = '$before' ]"
  apt-get purge -y pinpost >/tmp/apt.log 2>&1 || fail purge "$(tail -n 3 /tmp/apt.log | tr '\n' ' ')"
  check purge-removes-config "config.toml gone: $(ls /etc/pinpost 2>&1 | tr '\n' ' ')" test ! -e /etc/pinpost/config.toml
  check purge-keeps-certs "$(ls /etc/pinpost/certs 2>&1 | tr '\n' ' ')" \
    sh -c 'test -s /etc/pinpost/certs/pi-01.key && test -s /etc/pinpost/certs/pi-01.crt && test -s /etc/pinpost/certs/ca.crt'
  check purge-stops "pinpost not running: $(systemctl is-active pinpost 2>&1)" sh -c '! systemctl is-active -q pinpost'
  info "after the purge, the update helper's folder: $(ls -la /var/lib/pinpost-update 2>&1 | tail -n +2 | awk '{ printf "%s %s; ", $1, $NF }'); its units: $(systemctl is-enabled pinpost-update.path pinpost-update.service 2>&1 | tr '\n' ' ')"
}

echo "VMTEST START $PHASE $(now_ms)"
info "kernel $(uname -r), $(systemctl --version | head -n 1), up $(cut -d' ' -f1 /proc/uptime) s"
case $PHASE in
main)
  install_and_configure
  enroll
  main_checks
  renewal
  update
  helper
  reconfig
  install_cut
  ;;
installcut)
  installcut
  spool_until_cut
  ;;
recover)
  recover
  spool_until_cut
  ;;
last)
  recover
  upgrade_and_purge
  ;;
clock)
  clock_boot
  ;;
*) fail phase "unknown phase $PHASE" ;;
esac
echo "VMTEST DONE $PHASE"
