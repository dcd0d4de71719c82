#!/bin/sh
# The subset of the official image's entrypoint that docker-compose.yml relies on.
set -eu
if [ "${1:-}" = postgres ]; then
    if [ "$(id -u)" = 0 ]; then
        install -d -o postgres -g postgres -m 0700 "$PGDATA"
        install -d -o postgres -g postgres -m 2775 /var/run/postgresql
        exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
    fi
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        password=${POSTGRES_PASSWORD:-}
        if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then password=$(cat "$POSTGRES_PASSWORD_FILE"); fi
        [ -n "$password" ] || { echo "POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE is required" >&2; exit 1; }
        pwfile=$(mktemp)
        printf '%s\n' "$password" >"$pwfile"
        initdb --username=postgres --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
        rm -f "$pwfile"
        echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
        echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    fi
fi
exec "$@"
