#!/usr/bin/env bash
# Start the servers the test suite talks to that are not running: PostgreSQL, Redis, RabbitMQ,
# memcached (installed from Debian's packages first when it is missing and we may install).
# Used by `make test` and `.ci/run`. A server that cannot be started is reported, not fatal here:
# the tests that need it fail and say which.
set -uo pipefail

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
wait_port() {  # host port what
  for _ in $(seq 1 60); do
    port_open "$1" "$2" && return 0
    sleep 1  # polling a port that is coming up; bounded by the loop
  done
  echo "servers.sh: $3 did not come up on $1:$2" >&2
  return 1
}
can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

if ! port_open 127.0.0.1 5432 && command -v pg_ctlcluster >/dev/null 2>&1; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi
if ! port_open 127.0.0.1 6379 && command -v redis-server >/dev/null 2>&1; then
  mkdir -p /tmp/aioshop-redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /tmp/aioshop-redis --logfile /tmp/aioshop-redis/redis.log
fi
if ! port_open 127.0.0.1 5672 && command -v rabbitmq-server >/dev/null 2>&1; then
  rabbitmq-server -detached
fi
if ! port_open 127.0.0.1 11211; then
  if ! command -v memcached >/dev/null 2>&1 && can_install; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends memcached >/dev/null
  fi
  if command -v memcached >/dev/null 2>&1; then
    memcached -d -u memcache -l 127.0.0.1 -p 11211 -m 64 2>/dev/null \
      || memcached -d -u "$(id -un)" -l 127.0.0.1 -p 11211 -m 64
  else
    echo "servers.sh: memcached is not installed (Debian: apt-get install memcached)" >&2
  fi
fi

status=0
wait_port 127.0.0.1 5432 PostgreSQL || status=1
wait_port 127.0.0.1 6379 Redis || status=1
wait_port 127.0.0.1 5672 RabbitMQ || status=1
wait_port 127.0.0.1 11211 memcached || status=1
exit "$status"
