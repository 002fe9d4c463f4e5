#!/usr/bin/env bash
# The VM test's certificates, this host's side: sourced by scripts/vm-test.sh
# (which has result, die, RUN and host_pinpost), not run alone.
#
# The CA and its key stay here, in target/vm/run/certs. The broker's and the
# operator's certificates go on the test disk; pi-01 enrolls as a Pi does:
# in the main boot `pinpost enroll` makes its key inside the guest, the
# request comes out on the serial line ("VMTEST CSR <base64> END"), this
# host signs it with `pinpost certs sign` and publishes ca.crt and pi-01.crt
# retained on the guest's Mosquitto, through the one port qemu forwards
# (FWD_PORT on 127.0.0.1 to the guest's 8884), and the key never leaves.
# That certificate is short (FIRST_LIFE): later in the main boot the agent
# renews it over MQTT, answered by `certs renew --watch` run here, and
# before the clock boot (which follows a purge, so only the enrolled key is
# left) the kept request is signed again by hand for the guest.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  echo "vm-certs.sh: sourced by scripts/vm-test.sh, not run alone" >&2
  exit 1
fi

# Where pi-01's certificates are published for the guest (vm-guest.sh's
# ENROLL_TOPIC): the operator may write only commands, here to a device no
# agent is, so no agent ever takes them for a command.
ENROLL_TOPIC=pinpost/vmtest-enroll/cmd
# The enrolled certificate's life: due for renewal at the middle of it,
# 67.5 s after signing (it is backdated a quarter), about when the main
# checks end, and it still works nearly 2 minutes after that, should they
# or the renewal be slow.
FIRST_LIFE=3m
RENEWER_PID='' RENEWER_STARTED='' RENEWER_STOPPED=''

# The CA, the broker's certificate, the operator's and Mosquitto's settings,
# by this PC's pinpost (from the amd64 package, else the debug build); the
# broker's and the operator's folders onto the test disk. pi-01 has no
# folder yet, so the ACL has no 8884 rules for its tools (nothing here uses
# them).
make_certs() { # test-disk-folder
  HOST_PINPOST=$(host_pinpost)
  (
    cd "$RUN"
    "$HOST_PINPOST" certs ca
    "$HOST_PINPOST" certs broker --host 127.0.0.1 --host localhost
    "$HOST_PINPOST" certs device operator
    "$HOST_PINPOST" certs mosquitto
  ) >/dev/null 2>&1 || die "pinpost certs failed (with $HOST_PINPOST)"
  cp -r "$RUN/certs/broker" "$1/certs/broker"
  cp -r "$RUN/certs/devices/operator" "$1/certs/operator"
}

# A loopback port nothing listens on, for qemu's forward (qemu fails to
# start, and the boot with it, if another takes it meanwhile).
free_port() {
  local port tries
  for tries in 1 2 3 4 5 6 7 8 9 10; do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  die "no free loopback port in $tries tries"
}

# pinpost publish as the operator through the forwarded port; a few tries,
# in case the forward's first connection meets a guest still busy.
op_publish() { # publish-args...
  local op=$RUN/certs/devices/operator tries out
  for tries in 1 2 3 4 5; do
    if out=$("$HOST_PINPOST" publish -h 127.0.0.1 -p "$FWD_PORT" --cafile "$op/ca.crt" \
      --cert "$op/operator.crt" --key "$op/operator.key" --connect-timeout 20s "$@" 2>&1); then
      return 0
    fi
    sleep 2
  done
  echo "$out" | tr '\n' ' ' | cut -c1-300
  return 1
}

# This host's side of the guest's enrollment, while the guest waits: its
# request off the serial line, signed with the CA kept here (certs sign
# checks it first), and ca.crt and pi-01.crt published retained.
serve_enrollment() { # boot-name
  local name=$1 dir=$RUN/enroll signed=$RUN/certs/devices/pi-01 out file t0=$SECONDS
  rm -rf "$dir"
  mkdir -p "$dir"
  tr -d '\r' <"$RUN/$name.serial" | sed -n 's|^VMTEST CSR \([A-Za-z0-9+/=]*\) END.*|\1|p' |
    head -n 1 | base64 -d >"$dir/pi-01.csr" 2>/dev/null
  if ! out=$(cd "$RUN" && "$HOST_PINPOST" certs sign enroll/pi-01.csr --valid-for "$FIRST_LIFE" 2>&1); then
    result FAIL "$name/enroll-signed" "certs sign refused the guest's request: $(tr '\n' ' ' <<<"$out" | cut -c1-300)"
    return
  fi
  for file in ca.crt pi-01.crt; do
    if ! out=$(op_publish -t "$ENROLL_TOPIC/$file" -f "$signed/$file" -r); then
      result FAIL "$name/enroll-signed" "cannot publish $file through 127.0.0.1:$FWD_PORT: $out"
      return
    fi
  done
  result PASS "$name/enroll-signed" "the guest's request ($(stat -c %s "$dir/pi-01.csr") bytes) signed here by certs sign (--valid-for $FIRST_LIFE) into $(cd "$signed" && echo *), published through 127.0.0.1:$FWD_PORT in $((SECONDS - t0)) s"
}

# The main boot's part of the loop in boot(), every 0.2 s: serves the
# guest's request once it is printed, starts the renewer once the guest
# asks (after its last use of 8884, where the renewer takes the operator's
# name) and stops it once the guest has seen the switch.
serve_guest() { # boot-name
  local serial=$RUN/$1.serial
  if [ ! -e "$RUN/enroll" ] && grep -a -q '^VMTEST CSR [A-Za-z0-9+/=]* END' "$serial"; then
    serve_enrollment "$1"
  fi
  if [ -z "$RENEWER_STARTED" ] && grep -a -q '^VMTEST RENEWER' "$serial"; then
    # The new certificate lasts certs renew's default (825 days), so the
    # later boots are not due again.
    (cd "$RUN" && exec "$HOST_PINPOST" certs renew --watch --dir certs -h 127.0.0.1 -p "$FWD_PORT") \
      >"$RUN/renewer.log" 2>&1 &
    RENEWER_PID=$!
    RENEWER_STARTED=$SECONDS
  fi
  if [ -n "$RENEWER_PID" ] && grep -a -q '^VMTEST RENEWED' "$serial"; then
    renewer_kill
  fi
}

renewer_kill() {
  if [ -n "$RENEWER_PID" ]; then
    kill "$RENEWER_PID" 2>/dev/null || true
    wait "$RENEWER_PID" 2>/dev/null || true
    RENEWER_PID=''
    RENEWER_STOPPED=$SECONDS
  fi
}

# After the main boot: the renewer stopped, and what it did.
renewer_stop() { # boot-name
  local said
  if [ -z "$RENEWER_STARTED" ]; then
    result FAIL "$1/renewer" "the guest never asked for certs renew --watch"
    return
  fi
  renewer_kill
  said=$(tr '\n' '|' <"$RUN/renewer.log" | cut -c1-600)
  if grep -q '^pi-01: signed its renewal request' "$RUN/renewer.log"; then
    result PASS "$1/renewer" "certs renew --watch served $((RENEWER_STOPPED - RENEWER_STARTED)) s through 127.0.0.1:$FWD_PORT; it said: $said"
  else
    result FAIL "$1/renewer" "certs renew --watch signed nothing in $((RENEWER_STOPPED - RENEWER_STARTED)) s; it said: ${said:-nothing}"
  fi
}

# Before the clock boot: the purge took the renewed pair with
# /var/lib/pinpost, and the enrolled certificate has ended, so the request
# kept here is signed again (renewal by hand, as README says: the same key,
# a new certificate) and goes on the test disk.
hand_renewal() { # test-disk-folder
  local out
  out=$(cd "$RUN" && "$HOST_PINPOST" certs sign enroll/pi-01.csr --force 2>&1) ||
    die "certs sign --force of the kept request failed: $out"
  mkdir -p "$1/certs/pi-01"
  cp "$RUN/certs/devices/pi-01/ca.crt" "$RUN/certs/devices/pi-01/pi-01.crt" "$1/certs/pi-01/"
  rm -f "$RUN/test.img"
  mkfs.ext4 -q -L vmtest -d "$1" "$RUN/test.img" 64M >/dev/null || die "cannot make the test disk again"
}

# pi-01's keys were made in the guest and never came out: no file named
# pi-01.key anywhere under the run folder (the CA's folder, the test disk's
# source and image, what was signed), no private key in a text file there
# but the CA's, the broker's and the operator's, none in what the guest
# printed, and pi-01's folder here holds only what certs sign wrote.
key_stayed_in_guest() {
  local found keys signed
  found=$(find "$RUN" -name 'pi-01.key*' | tr '\n' ' ')
  found+=$(grep -r -l -I -e '-----BEGIN .*PRIVATE KEY-----' "$RUN" |
    grep -v -E '/(ca|broker|operator)\.key$' | tr '\n' ' ' || true)
  # || true: grep finding nothing is the good case (set -e, pipefail).
  keys=$(grep -a -l 'PRIVATE KEY' "$RUN"/*.serial | tr '\n' ' ' || true)
  signed=$(cd "$RUN/certs/devices/pi-01" 2>/dev/null && echo *)
  if [ -z "$found" ] && [ -z "$keys" ] && [ "$signed" = "ca.crt pi-01.crt pi-01.csr" ]; then
    result PASS host/key-stayed-in-guest "no pi-01.key under $RUN, no private key on the serial lines; certs/devices/pi-01 holds $signed"
  else
    result FAIL host/key-stayed-in-guest "files: ${found:-none}; serial lines with a private key: ${keys:-none}; certs/devices/pi-01: ${signed:-nothing}"
  fi
}
