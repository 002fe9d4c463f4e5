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
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  echo "vm-certs.sh: sourced by scripts/vm-test.sh, not run alone" >&2
  exit 1
fi

# Where pi-01's certificates are published for the guest (vm-guest.sh's
# ENROLL_TOPIC): the operator may write only commands, here to a device no
# agent is, so no agent ever takes them for a command.
ENROLL_TOPIC=pinpost/vmtest-enroll/cmd

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
  if ! out=$(cd "$RUN" && "$HOST_PINPOST" certs sign enroll/pi-01.csr 2>&1); then
    result FAIL "$name/enroll-signed" "certs sign refused the guest's request: $(tr '\n' ' ' <<<"$out" | cut -c1-300)"
    return
  fi
  for file in ca.crt pi-01.crt; do
    if ! out=$(op_publish -t "$ENROLL_TOPIC/$file" -f "$signed/$file" -r); then
      result FAIL "$name/enroll-signed" "cannot publish $file through 127.0.0.1:$FWD_PORT: $out"
      return
    fi
  done
  result PASS "$name/enroll-signed" "the guest's request ($(stat -c %s "$dir/pi-01.csr") bytes) signed here by certs sign into $(cd "$signed" && echo *), published through 127.0.0.1:$FWD_PORT in $((SECONDS - t0)) s"
}

# pi-01's key was made in the guest and never came out: no file of that
# name anywhere under the run folder (the CA's folder, the test disk's
# source and image, what was signed), no private key in what the guest
# printed, and pi-01's folder here holds only what certs sign wrote.
key_stayed_in_guest() {
  local found keys signed
  found=$(find "$RUN" -name 'pi-01.key*' | tr '\n' ' ')
  # || true: grep finding nothing is the good case (set -e, pipefail).
  keys=$(grep -a -l 'PRIVATE KEY' "$RUN"/*.serial | tr '\n' ' ' || true)
  signed=$(cd "$RUN/certs/devices/pi-01" 2>/dev/null && echo *)
  if [ -z "$found" ] && [ -z "$keys" ] && [ "$signed" = "ca.crt pi-01.crt pi-01.csr" ]; then
    result PASS host/key-stayed-in-guest "no pi-01.key under $RUN, no private key on the serial lines; certs/devices/pi-01 holds $signed"
  else
    result FAIL host/key-stayed-in-guest "files: ${found:-none}; serial lines with a private key: ${keys:-none}; certs/devices/pi-01: ${signed:-nothing}"
  fi
}
