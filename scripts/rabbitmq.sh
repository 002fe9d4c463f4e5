#!/usr/bin/env bash
# Installs RabbitMQ (Debian's rabbitmq-server, 3.10 on Debian 12, with its
# MQTT plugin) for tests/integration/rabbitmq.rs, which starts a 3-node
# cluster of its own on loopback. The tests never use the system's node:
# their own node names, ports, data directories and a private epmd port keep
# them apart from it. When this script installs the package it also stops
# and disables the service the package sets up, so an unused RabbitMQ does
# not hold ports, memory or CPU. A package that cannot be installed is an
# error, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

# What tests/integration/common/rabbitmq.rs runs: the scripts themselves
# (not the /usr/sbin wrappers, which su to the rabbitmq user), epmd, and
# the MQTT plugin.
have() {
  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] &&
    [ -x /usr/lib/rabbitmq/bin/rabbitmqctl ] &&
    command -v epmd >/dev/null 2>&1 &&
    compgen -G "/usr/lib/rabbitmq/lib/rabbitmq_server-*/plugins/rabbitmq_mqtt-*" >/dev/null
}

installed_now=false
if ! have; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/rabbitmq.sh: RabbitMQ is not installed; run as root, or first: sudo apt-get install rabbitmq-server" >&2
    exit 1
  fi
  started=$SECONDS
  echo "scripts/rabbitmq.sh: installing rabbitmq-server"
  # One architecture's index failing must not stop the install.
  apt-get update || echo "scripts/rabbitmq.sh: apt-get update reported errors; installing anyway" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server
  have || {
    echo "scripts/rabbitmq.sh: rabbitmq-server installed, but rabbitmq-server, rabbitmqctl or the MQTT plugin is missing" >&2
    exit 1
  }
  installed_now=true
  echo "scripts/rabbitmq.sh: rabbitmq-server installed in $((SECONDS - started)) s"
fi

# The package enables (and, under systemd, starts) a node of its own,
# rabbit@<host> with AMQP on every address's port 5672, and epmd on 4369
# through epmd.socket. The tests do not need them: stop and disable what
# this script just installed. A RabbitMQ that was there before is someone's
# and is left alone; the tests' nodes do not meet it.
if $installed_now && command -v systemctl >/dev/null 2>&1; then
  units=(rabbitmq-server.service epmd.socket epmd.service)
  if [ -d /run/systemd/system ]; then
    echo "scripts/rabbitmq.sh: stopping and disabling the package's ${units[*]} (the tests start their own nodes)"
    systemctl disable --now "${units[@]}"
  else
    # No systemd running (a container): nothing was started; keep it so.
    echo "scripts/rabbitmq.sh: disabling the package's ${units[*]} (the tests start their own nodes)"
    systemctl disable "${units[@]}" 2>/dev/null || true
  fi
fi

version=$(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo unknown)
echo "scripts/rabbitmq.sh: rabbitmq-server $version ready (the tests start their own nodes)"
