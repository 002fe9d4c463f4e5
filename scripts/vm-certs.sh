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
# Later, when the guest asks ("VMTEST CONFIG good|bad [again]"), it makes
# pi-01's config from the guest's own config.toml, signs it with `release
# sign-config` and publishes it the same way (config_asked).
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
# Two more for the root helper that installs them (pinpost-update.service),
# signed only when the guest asks for them ("VMTEST PUBLISH <version>"),
# after $RELEASE_GOOD is installed: one whose pinpost exits at start (to be
# rolled back), and a good one the guest cuts its power in the middle of.
RELEASE_BROKEN=0.1.0-4
RELEASE_NEXT=0.1.0-5
# How many of the guest's "VMTEST PUBLISH" and "VMTEST CONFIG" lines were
# served, and in which boot.
PUBLISHED=0 CONFIGURED=0 PUBLISHED_BOOT=''
# The sensor unit the good signed config changes (config_asked), and the
# broker port the bad one names: nothing listens there in the guest.
CONFIG_UNIT_WAS=V CONFIG_UNIT=volt CONFIG_BAD_PORT=8885
# The host's witness (witness_start): a mosquitto_sub through the forward.
WITNESS_PID='' WITNESS_BOOT=''

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
    # The host's witness (witness_start): made after the ACL, which gets
    # its one rule below.
    "$HOST_PINPOST" certs device witness
  ) >/dev/null 2>&1 || die "pinpost certs failed (with $HOST_PINPOST)"
  if [ ! -s "$RUN/certs/release.pub" ] || [ ! -s "$RUN/certs/private/release.key" ]; then
    die "certs release-key made no certs/release.pub and certs/private/release.key"
  fi
  cp -r "$RUN/certs/broker" "$1/certs/broker"
  cp -r "$RUN/certs/devices/operator" "$1/certs/operator"
  # The witness's certificate names it on 8884 (CN=witness), so it never
  # takes the operator's session (release publish, the guest's commands).
  cat >>"$1/certs/broker/pinpost.acl" <<'ACL'

# The VM test's witness on the host, through the forwarded port: reads
# pi-01's topics, writes nothing.
user CN=witness
topic read pinpost/pi-01/#
ACL
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
  serve_requests "$1"
}

# What the guest asks of this host in the boots with the forward (main and
# installcut), each once, in order: "VMTEST WITNESS" (start the witness),
# "VMTEST PUBLISH <version> [again]" (sign that arm64 release now and
# release publish it to pi-01) and "VMTEST CONFIG good|bad [again]" (make
# that config of pi-01, sign it now and release publish it).
serve_requests() { # boot-name
  local serial=$RUN/$1.serial lines line
  if [ "$PUBLISHED_BOOT" != "$1" ]; then
    PUBLISHED_BOOT=$1 PUBLISHED=0 CONFIGURED=0
  fi
  if [ "$WITNESS_BOOT" != "$1" ] && grep -a -q '^VMTEST WITNESS' "$serial"; then
    witness_start "$1"
  fi
  mapfile -t lines < <(tr -d '\r' <"$serial" | grep -a '^VMTEST PUBLISH ' || true)
  while ((PUBLISHED < ${#lines[@]})); do
    line=${lines[$PUBLISHED]}
    PUBLISHED=$((PUBLISHED + 1))
    # shellcheck disable=SC2086 # the version and the word again
    publish_asked "$1" ${line#VMTEST PUBLISH }
  done
  mapfile -t lines < <(tr -d '\r' <"$serial" | grep -a '^VMTEST CONFIG ' || true)
  while ((CONFIGURED < ${#lines[@]})); do
    line=${lines[$CONFIGURED]}
    CONFIGURED=$((CONFIGURED + 1))
    # shellcheck disable=SC2086 # good or bad, and the word again
    config_asked "$1" ${line#VMTEST CONFIG }
  done
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
  # For the helper: $RELEASE_BROKEN, the same package but for a pinpost
  # that says why on stderr and exits with status 3 (what a release that
  # cannot start looks like to systemd), and $RELEASE_NEXT, a plain
  # repack. Signed when published (sign_release).
  for version in "$RELEASE_BROKEN" "$RELEASE_NEXT"; do
    tree=$dir/tree
    dpkg-deb -R "$deb" "$tree"
    sed -i "s/^Version: .*/Version: $version/" "$tree/DEBIAN/control"
    if [ "$version" = "$RELEASE_BROKEN" ]; then
      printf '#!/bin/sh\necho "pinpost %s: broken on purpose by the VM test, exiting with status 3" >&2\nexit 3\n' \
        "$version" >"$tree/usr/bin/pinpost"
      chmod 0755 "$tree/usr/bin/pinpost"
      if [ -f "$tree/DEBIAN/md5sums" ]; then
        sed -i "s|^[0-9a-f]*  usr/bin/pinpost\$|$(md5sum <"$tree/usr/bin/pinpost" | cut -d' ' -f1)  usr/bin/pinpost|" \
          "$tree/DEBIAN/md5sums"
      fi
    fi
    dpkg-deb --root-owner-group -b "$tree" "$dir/pinpost_${version}_arm64.deb" >/dev/null ||
      die "cannot repack $deb as $version"
    rm -rf "$tree"
  done
}

# A manifest for release/pinpost_<version>_arm64.deb signed now (a new
# one each time: the date in it is when it was signed).
sign_release() { # version
  local out
  rm -f "$RUN/release/pinpost_$1_arm64.deb.manifest"
  if ! out=$(cd "$RUN" && "$HOST_PINPOST" release sign "release/pinpost_$1_arm64.deb" \
    --key certs/private/release.key 2>&1) || [ ! -s "$RUN/release/pinpost_$1_arm64.deb.manifest" ]; then
    echo "release sign: $(tr '\n' ' ' <<<"$out" | cut -c1-300)"
    return 1
  fi
}

# release publish of one signed file (a release's manifest or a signed
# config) to pi-01 as the operator through the forwarded port
# (op_publish's connection flags); a few tries, as op_publish: chunks
# published again are the same. What it said, or why it failed, on stdout.
publish_one() { # release/<file>.deb.manifest | config/<file>.toml.signed
  # op: from $RUN, where release publish runs (its --dir).
  local op=certs/devices/operator out tries
  for tries in 1 2 3; do
    if out=$(cd "$RUN" && "$HOST_PINPOST" release publish "$1" --devices pi-01 \
      --dir certs -h 127.0.0.1 -p "$FWD_PORT" --cafile "$op/ca.crt" --cert "$op/operator.crt" \
      --key "$op/operator.key" --connect-timeout 20s 2>&1); then
      grep '^Published ' <<<"$out" | cut -c1-200 || true
      return 0
    fi
    sleep 2
  done
  echo "release publish $1 through 127.0.0.1:$FWD_PORT ($tries tries): $(tr '\n' ' ' <<<"$out" | cut -c1-300)"
  return 1
}

# This host's side of the update, while the guest listens: the armhf
# release, then the good one, each `release publish`ed to pi-01 as the
# operator through the forwarded port (op_publish's connection flags).
publish_releases() { # boot-name
  local name=$1 file out said='' t0=$SECONDS
  for file in "pinpost_${RELEASE_ARMHF}_armhf.deb" "pinpost_${RELEASE_GOOD}_arm64.deb"; do
    if ! out=$(publish_one "release/$file.manifest"); then
      result FAIL "$name/release-published" "$out"
      return
    fi
    said+="$out | "
  done
  result PASS "$name/release-published" "in $((SECONDS - t0)) s through 127.0.0.1:$FWD_PORT: ${said% | }"
}

# A release the guest asked for ("VMTEST PUBLISH <version> [again]"),
# signed now and published: one result line for each, named after the
# version (publish-0.1.0-4, publish-0.1.0-4-again).
publish_asked() { # boot-name version [again]
  local name=$1 version=$2 check=publish-$2${3:+-$3} out t0=$SECONDS
  if [ ! -f "$RUN/release/pinpost_${version}_arm64.deb" ]; then
    result FAIL "$name/$check" "the guest asked for $version, which make_releases did not make"
    return
  fi
  if ! out=$(sign_release "$version") || ! out=$(publish_one "release/pinpost_${version}_arm64.deb.manifest"); then
    result FAIL "$name/$check" "$out"
    return
  fi
  result PASS "$name/$check" "signed and published in $((SECONDS - t0)) s through 127.0.0.1:$FWD_PORT: $out"
}

# A signed config of pi-01 the guest asked for ("VMTEST CONFIG good|bad
# [again]"), made here in $RUN/config/ (never on the test disk), signed
# now with `release sign-config` (which runs the device's checker first;
# signed when asked, so each is dated after the one before) and published
# to pi-01. good: the guest's own config.toml with sensor s's unit
# $CONFIG_UNIT_WAS written $CONFIG_UNIT, a harmless change every reading
# shows; bad: the good one with the broker's port $CONFIG_BAD_PORT, where
# nothing listens in the guest, so the checker passes it and the agent
# cannot connect with it; again: the bad one signed anew (a new date, the
# same config). Before the signed config, its SHA-256 as computed here
# (sha256sum) goes retained to $ENROLL_TOPIC/config-<what>, for the guest
# to compare with its file and the agent's reports. One result line each:
# config-good-published, config-bad-published, config-bad-again-published.
config_asked() { # boot-name good|bad [again]
  local name=$1 what=$2 check=config-$2${3:+-$3}-published dir=$RUN/config out sha said t0=$SECONDS
  mkdir -p "$dir"
  case $what in
  good)
    sed "s/^unit = \"$CONFIG_UNIT_WAS\"\$/unit = \"$CONFIG_UNIT\"/" "$RUN/testdisk/config.toml" >"$dir/good.toml"
    said="the guest's config.toml with sensor s's unit \"$CONFIG_UNIT_WAS\" made \"$CONFIG_UNIT\""
    ;;
  bad)
    sed 's/^port = 8883$/port = '"$CONFIG_BAD_PORT"'/' "$dir/good.toml" >"$dir/bad.toml" 2>/dev/null
    said="the good config with [broker] port 8883 made $CONFIG_BAD_PORT"
    ;;
  *)
    result FAIL "$name/$check" "the guest asked for a config \"$what\": good or bad"
    return
    ;;
  esac
  # Exactly one line changed, else the sed missed (and the test would
  # prove nothing).
  local from=$RUN/testdisk/config.toml
  [ "$what" = good ] || from=$dir/good.toml
  if [ "$(diff "$from" "$dir/$what.toml" | grep -c '^>')" != 1 ]; then
    result FAIL "$name/$check" "making the $what config changed $(diff "$from" "$dir/$what.toml" | grep -c '^>') lines, not 1"
    return
  fi
  rm -f "$dir/$what.toml.signed"
  if ! out=$(cd "$RUN" && "$HOST_PINPOST" release sign-config "config/$what.toml" \
    --key certs/private/release.key 2>&1) || [ ! -s "$dir/$what.toml.signed" ]; then
    result FAIL "$name/$check" "release sign-config config/$what.toml: $(tr '\n' ' ' <<<"$out" | cut -c1-300)"
    return
  fi
  sha=$(sha256sum <"$dir/$what.toml" | cut -d' ' -f1)
  if ! grep -q "SHA-256 $sha" <<<"$out"; then
    result FAIL "$name/$check" "sign-config names another SHA-256 than sha256sum's $sha: $(tr '\n' ' ' <<<"$out" | cut -c1-300)"
    return
  fi
  if ! out=$(op_publish -t "$ENROLL_TOPIC/config-$what${3:+-$3}" -m "$sha" -r) ||
    ! out=$(publish_one "config/$what.toml.signed"); then
    result FAIL "$name/$check" "$out"
    return
  fi
  result PASS "$name/$check" "$said, SHA-256 $sha ($(stat -c %s "$dir/$what.toml") bytes), signed (release sign-config passed it: $(stat -c %s "$dir/$what.toml.signed") bytes signed) and published in $((SECONDS - t0)) s through 127.0.0.1:$FWD_PORT: $out"
}

# After the main boot: a guest that never asked for the releases fails here.
releases_stop() { # boot-name
  [ -n "$RELEASES_PUBLISHED" ] ||
    result FAIL "$1/release-published" "the guest never asked for the releases (VMTEST RELEASE)"
}

# The host's own subscriber to pi-01's topics, through the forwarded port
# (CN=witness, whose ACL rule make_certs adds): what reached the broker is
# seen here, not taken from the agent's PUBACKs or from the guest. One line
# per message: host receive time (Unix s.ns), retained flag, topic,
# payload. Kept from the guest's "VMTEST WITNESS" to the boot's end.
witness_start() { # boot-name
  local w=$RUN/certs/devices/witness
  witness_stop
  WITNESS_BOOT=$1
  stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$FWD_PORT" --cafile "$w/ca.crt" --cert "$w/witness.crt" \
    --key "$w/witness.key" -q 1 -F '%U %r %t %p' -t 'pinpost/pi-01/#' >"$RUN/$1.witness" 2>&1 &
  WITNESS_PID=$!
}

witness_stop() {
  if [ -n "$WITNESS_PID" ]; then
    kill "$WITNESS_PID" 2>/dev/null || true
    wait "$WITNESS_PID" 2>/dev/null || true
    WITNESS_PID=''
  fi
}

# For each "VMTEST MARK <label> <ms>" the guest printed (its clock, Unix
# ms: a moment after which the agent must be delivering, e.g. the helper's
# outcome written), what the host's witness got: the first reading of
# sensor s made at or after the mark and when it reached this host, how
# many came in the 3 s after, and the agent's live status messages since
# the previous mark. PASS when such a reading arrived. One result per
# label expected: <boot>/<label>-witnessed, a FAIL when the guest printed
# no such mark.
witness_figures() { # boot-name label...
  local boot=$1 serial=$RUN/$1.serial log=$RUN/$1.witness label ms prev=0 verdict
  shift
  for label in "$@"; do
    ms=$(tr -d '\r' <"$serial" | sed -n "s/^VMTEST MARK $label \([0-9]*\)$/\1/p" | head -n 1)
    if [ -z "$ms" ]; then
      result FAIL "$boot/$label-witnessed" "the guest printed no mark for $label (see $serial)"
      continue
    fi
    if [ ! -s "$log" ]; then
      result FAIL "$boot/$label-witnessed" "the host's witness got nothing ($(head -c 300 "$log" 2>/dev/null | tr '\n' ' '))"
      continue
    fi
    verdict=$(awk -v mark="$ms" -v prev="$prev" "$TS_AWK"'
      $3 == "pinpost/pi-01/status" && $2 == 0 {
        # Its live status messages (not retained copies at the subscribe).
        at = int($1 * 1000)
        if (at >= prev && at <= mark + 3000) status = status sprintf(" %s at %+.1f s", $4, (at - mark) / 1000)
      }
      $3 == "pinpost/pi-01/sensor/s" {
        if ((ms = ts_ms($0)) == "" || ms < mark) next
        at = int($1 * 1000)
        if (first == "") { first = ms; got = at; match($0, /"seq":[0-9]+/); seq = substr($0, RSTART + 6, RLENGTH - 6) }
        if (ms <= first + 3000) n++
      }
      END {
        if (first == "") { printf "FAIL no reading of sensor s made after the mark reached the host; status messages:%s\n", status ? status : " none"; exit }
        printf "PASS the first reading made after the mark (seq %s) was made %d ms after it and reached this host at mark%+d ms (this host'"'"'s clock against the guest'"'"'s); %d readings made in the 3 s from it; the agent'"'"'s live status messages since the step before:%s\n", \
          seq, first - mark, got - mark, n, status ? status : " none"
      }' "$log")
    result "${verdict%% *}" "$boot/$label-witnessed" "${verdict#* }"
    prev=$ms
  done
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
# but the CA's, the broker's, the operator's, the host witness's and the
# release key, none in
# what the guest printed, and pi-01's folder here holds only what certs
# sign wrote (with the release key's public half).
key_stayed_in_guest() {
  local found keys signed
  found=$(find "$RUN" -name 'pi-01.key*' | tr '\n' ' ')
  found+=$(grep -r -l -I -e '-----BEGIN .*PRIVATE KEY-----' "$RUN" |
    grep -v -E '/(ca|broker|operator|witness|release)\.key$' | tr '\n' ' ' || true)
  # || true: grep finding nothing is the good case (set -e, pipefail).
  keys=$(grep -a -l 'PRIVATE KEY' "$RUN"/*.serial | tr '\n' ' ' || true)
  signed=$(cd "$RUN/certs/devices/pi-01" 2>/dev/null && echo *)
  if [ -z "$found" ] && [ -z "$keys" ] && [ "$signed" = "ca.crt pi-01.crt pi-01.csr release.pub" ]; then
    result PASS host/key-stayed-in-guest "no pi-01.key under $RUN, no private key on the serial lines; certs/devices/pi-01 holds $signed"
  else
    result FAIL host/key-stayed-in-guest "files: ${found:-none}; serial lines with a private key: ${keys:-none}; certs/devices/pi-01: ${signed:-nothing}"
  fi
}
