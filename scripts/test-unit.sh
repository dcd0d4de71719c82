#!/usr/bin/env bash
# The fast tier: tests marked `unit` (pure logic). Where this user may create a network namespace
# (root, util-linux's unshare), they run inside one of their own, whose loopback has no server
# behind it: that proves they need no PostgreSQL, Redis, RabbitMQ or memcached. Elsewhere they
# run as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTEST="${PYTEST:-.venv/bin/pytest}"
args=(-m unit -q -p no:cacheprovider "$@")
if [ "$(id -u)" = 0 ] && unshare --net true 2>/dev/null; then
  exec unshare --net bash -c 'ip link set lo up 2>/dev/null || true; exec "$0" "$@"' "$PYTEST" "${args[@]}"
fi
exec "$PYTEST" "${args[@]}"
