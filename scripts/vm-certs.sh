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
# left) the kept request is signed again by hand for the guest. The fleet
# has a release key: certs sign puts release.pub in pi-01's folder, and it
# is published with the certificates; after the renewal this host signs two
# repacked copies of the arm64 .deb (one newer, one labelled armhf) and
# `release publish`es them to pi-01 through the same port (publish_releases).
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
RELEASES_PUBLISHED=''
# The releases the guest fetches (make_releases): a newer version of the
# arm64 package, and one labelled for another architecture, to be refused.
RELEASE_GOOD=0.1.0-2
RELEASE_ARMHF=0.1.0-3

# The CA, the broker's certificate, the operator's, the release key and
# Mosquitto's settings, by this PC's pinpost (from the amd64 package, else
# the debug build); the broker's and the operator's folders onto the test
# disk. pi-01 has no folder yet, so the ACL has no 8884 rules for its tools
# (nothing here uses them); its release.pub goes with its certificates.
make_certs() { # test-disk-folder
  HOST_PINPOST=$(host_pinpost)
  (
    cd "$RUN"
    "$HOST_PINPOST" certs ca
    "$HOST_PINPOST" certs broker --host 127.0.0.1 --host localhost
    "$HOST_PINPOST" certs device operator
    "$HOST_PINPOST" certs release-key
    "$HOST_PINPOST" certs mosquitto
  ) >/dev/null 2>&1 || die "pinpost certs failed (with $HOST_PINPOST)"
  if [ ! -s "$RUN/certs/release.pub" ] || [ ! -s "$RUN/certs/private/release.key" ]; then
    die "certs release-key made no certs/release.pub and certs/private/release.key"
  fi
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
  # Everything certs sign put in pi-01's folder but the request: the
  # release key's public half came with it (the fleet has one).
  if [ ! -s "$signed/release.pub" ] || ! cmp -s "$signed/release.pub" "$RUN/certs/release.pub"; then
    result FAIL "$name/enroll-signed" "certs sign left no release.pub (the fleet's) in $signed: $(cd "$signed" && echo *)"
    return
  fi
  for file in ca.crt pi-01.crt release.pub; do
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
  # The releases, once the guest listens on its update topic (after the
  # renewal: the renewer is stopped, so the operator's name on 8884 is free).
  if [ -z "$RELEASES_PUBLISHED" ] && [ -z "$RENEWER_PID" ] && grep -a -q '^VMTEST RELEASE' "$serial"; then
    RELEASES_PUBLISHED=$SECONDS
    publish_releases "$1"
  fi
}

# Two releases of the arm64 package under test, repacked as Debian's tools
# do (dpkg-deb -R, the control's Version or Architecture, dpkg-deb -b) and
# signed with the fleet's release key: $RELEASE_GOOD, newer than the
# installed 0.1.0-1, and $RELEASE_ARMHF labelled armhf, which the arm64
# agent must refuse. In $RUN/release/, never on the test disk: the guest
# gets them only over MQTT.
make_releases() { # arm64-deb
  local deb=$1 dir=$RUN/release tree out arch version
  rm -rf "$dir"
  mkdir -p "$dir"
  for arch in arm64 armhf; do
    version=$RELEASE_GOOD
    [ "$arch" = arm64 ] || version=$RELEASE_ARMHF
    tree=$dir/tree
    dpkg-deb -R "$deb" "$tree"
    sed -i -e "s/^Version: .*/Version: $version/" -e "s/^Architecture: .*/Architecture: $arch/" \
      "$tree/DEBIAN/control"
    dpkg-deb --root-owner-group -b "$tree" "$dir/pinpost_${version}_$arch.deb" >/dev/null ||
      die "cannot repack $deb as $version for $arch"
    rm -rf "$tree"
    out=$(cd "$RUN" && "$HOST_PINPOST" release sign "release/pinpost_${version}_$arch.deb" \
      --key certs/private/release.key 2>&1) || die "release sign failed: $out"
    [ -s "$dir/pinpost_${version}_$arch.deb.manifest" ] || die "release sign wrote no manifest: $out"
  done
}

# This host's side of the update, while the guest listens: the armhf
# release, then the good one, each `release publish`ed to pi-01 as the
# operator through the forwarded port (op_publish's connection flags).
publish_releases() { # boot-name
  # op: from $RUN, where release publish runs (its --dir).
  local name=$1 op=certs/devices/operator file out said='' tries ok t0=$SECONDS
  for file in "pinpost_${RELEASE_ARMHF}_armhf.deb" "pinpost_${RELEASE_GOOD}_arm64.deb"; do
    # A few tries, as op_publish: chunks published again are the same.
    ok=0
    for tries in 1 2 3; do
      if out=$(cd "$RUN" && "$HOST_PINPOST" release publish "release/$file.manifest" --devices pi-01 \
        --dir certs -h 127.0.0.1 -p "$FWD_PORT" --cafile "$op/ca.crt" --cert "$op/operator.crt" \
        --key "$op/operator.key" --connect-timeout 20s 2>&1); then
        ok=1
        break
      fi
      sleep 2
    done
    if ((!ok)); then
      result FAIL "$name/release-published" "release publish $file through 127.0.0.1:$FWD_PORT ($tries tries): $(tr '\n' ' ' <<<"$out" | cut -c1-300)"
      return
    fi
    said+="$(grep '^Published ' <<<"$out" | cut -c1-200 || true) | "
  done
  result PASS "$name/release-published" "in $((SECONDS - t0)) s through 127.0.0.1:$FWD_PORT: ${said% | }"
}

# After the main boot: a guest that never asked for the releases fails here.
releases_stop() { # boot-name
  [ -n "$RELEASES_PUBLISHED" ] ||
    result FAIL "$1/release-published" "the guest never asked for the releases (VMTEST RELEASE)"
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
  cp "$RUN/certs/devices/pi-01/ca.crt" "$RUN/certs/devices/pi-01/pi-01.crt" \
    "$RUN/certs/devices/pi-01/release.pub" "$1/certs/pi-01/"
  rm -f "$RUN/test.img"
  mkfs.ext4 -q -L vmtest -d "$1" "$RUN/test.img" 64M >/dev/null || die "cannot make the test disk again"
}

# pi-01's keys were made in the guest and never came out: no file named
# pi-01.key anywhere under the run folder (the CA's folder, the test disk's
# source and image, what was signed), no private key in a text file there
# but the CA's, the broker's, the operator's and the release key, none in
# what the guest printed, and pi-01's folder here holds only what certs
# sign wrote (with the release key's public half).
key_stayed_in_guest() {
  local found keys signed
  found=$(find "$RUN" -name 'pi-01.key*' | tr '\n' ' ')
  found+=$(grep -r -l -I -e '-----BEGIN .*PRIVATE KEY-----' "$RUN" |
    grep -v -E '/(ca|broker|operator|release)\.key$' | tr '\n' ' ' || true)
  # || true: grep finding nothing is the good case (set -e, pipefail).
  keys=$(grep -a -l 'PRIVATE KEY' "$RUN"/*.serial | tr '\n' ' ' || true)
  signed=$(cd "$RUN/certs/devices/pi-01" 2>/dev/null && echo *)
  if [ -z "$found" ] && [ -z "$keys" ] && [ "$signed" = "ca.crt pi-01.crt pi-01.csr release.pub" ]; then
    result PASS host/key-stayed-in-guest "no pi-01.key under $RUN, no private key on the serial lines; certs/devices/pi-01 holds $signed"
  else
    result FAIL host/key-stayed-in-guest "files: ${found:-none}; serial lines with a private key: ${keys:-none}; certs/devices/pi-01: ${signed:-nothing}"
  fi
}
