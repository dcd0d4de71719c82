#!/bin/sh
# Make the secret files docker-compose.yml reads, in deploy/secrets/ (or the directory given):
# random passwords of PostgreSQL, RabbitMQ, Redis, MongoDB and Grafana, the URLs the apps connect
# with, the servers' configuration fragments that carry a password, the gateway's identity secret
# and TLS certificate, and the token Alertmanager shows the dashboard. The JWT key pair is not here: the compose file's keygen service makes it in a volume.
#
#   sh deploy/gen-secrets.sh && docker compose up --build
#
# A file that exists is kept, so running this again changes nothing. To change a password,
# delete its files and the server's volume (a server keeps the password it first started with).
# The directory is 0700; the files are 0644 because each container reads them as its own user
# (postgres, rabbitmq, redis, mongodb, aioshop) and Compose mounts them with the host's modes.
set -eu

dir=${1:-"$(dirname "$0")/secrets"}
umask 077
mkdir -p "$dir"
chmod 700 "$dir"

random() {
    # 32 random bytes as hex: safe inside URLs and configuration files without quoting.
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
}

put() {
    # put NAME CONTENT: write the file NAME unless it exists (atomically: no half file).
    [ -e "$dir/$1" ] && return 0
    printf '%s\n' "$2" >"$dir/.$1.tmp"
    chmod 644 "$dir/.$1.tmp"
    mv "$dir/.$1.tmp" "$dir/$1"
}

put postgres_password "$(random)"
pg=$(cat "$dir/postgres_password")
for service in users products orders; do
    put "${service}_database_url" "postgresql://postgres:$pg@postgres:5432/aioshop_$service"
done
# The dashboard's event archive (on PostgreSQL unless deploy/compose.mongodb.yml is used).
put archive_database_url "postgresql://postgres:$pg@postgres:5432/aioshop_archive"

put rabbitmq_password "$(random)"
mq=$(cat "$dir/rabbitmq_password")
put rabbitmq_conf "default_user = aioshop
default_pass = $mq"
# heartbeat=10: a connection cut off silently (a partition, a host gone) is noticed after three
# missed heartbeats, 33 s, instead of 3 minutes with the default 60 (aiormq), and reconnected.
put amqp_url "amqp://aioshop:$mq@rabbitmq:5672/?heartbeat=10"

put redis_password "$(random)"
rd=$(cat "$dir/redis_password")
put redis_conf "requirepass $rd"
put redis_url "redis://:$rd@redis:6379/0"

put mongodb_password "$(random)"
mg=$(cat "$dir/mongodb_password")
put mongodb_url "mongodb://aioshop:$mg@mongodb:27017/aioshop?authSource=admin"

put identity_secret "$(random)"
put dashboard_alerts_token "$(random)"
put grafana_admin_password "$(random)"

# The gateway's TLS certificate: self-signed, for the names a client of this machine and the
# containers use (localhost, gateway), 90 days; replace both files with a real pair to serve
# others. openssl writes the two files, or neither.
if [ ! -e "$dir/gateway_tls_cert" ] || [ ! -e "$dir/gateway_tls_key" ]; then
    command -v openssl >/dev/null 2>&1 || { echo "openssl is needed for the gateway's certificate" >&2; exit 1; }
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 \
        -subj "/CN=localhost" \
        -addext "subjectAltName=DNS:localhost,DNS:gateway,IP:127.0.0.1,IP:::1" \
        -keyout "$dir/.gateway_tls_key.tmp" -out "$dir/.gateway_tls_cert.tmp" 2>/dev/null
    chmod 644 "$dir/.gateway_tls_key.tmp" "$dir/.gateway_tls_cert.tmp"
    mv "$dir/.gateway_tls_key.tmp" "$dir/gateway_tls_key"
    mv "$dir/.gateway_tls_cert.tmp" "$dir/gateway_tls_cert"
fi

echo "secrets in $dir" >&2
