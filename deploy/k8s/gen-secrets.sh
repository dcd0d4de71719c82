#!/bin/sh
# Make the files the `dev` overlay turns into Secrets (its secretGenerator), in
# deploy/k8s/overlays/dev/secrets/ (or the directory given): random passwords of the in-cluster
# PostgreSQL, RabbitMQ, Redis and MongoDB, the URLs the apps connect with, the servers'
# configuration fragments that carry a password, the gateway's identity secret, an Ed25519 JWT
# key pair and a self-signed certificate for the Ingress host. Nothing of it is ever committed
# (overlays/dev/.gitignore); the repository ships no secret value.
#
#   sh deploy/k8s/gen-secrets.sh [DIR [HOST]]   # HOST: the Ingress host, aioshop.localtest.me
#   kubectl kustomize deploy/k8s/overlays/dev
#
# A file that exists is kept, so running this again changes nothing. To change a password,
# delete its files and the server's PersistentVolumeClaim (a server keeps its first password).
# Needs openssl (the key pair and the certificate).
set -eu

dir=${1:-"$(dirname "$0")/overlays/dev/secrets"}
host=${2:-aioshop.localtest.me}
command -v openssl >/dev/null 2>&1 || { echo "gen-secrets.sh: openssl is needed" >&2; exit 1; }
umask 077
mkdir -p "$dir"
chmod 700 "$dir"

# The passwords, URLs and configuration fragments are the compose file's (same server names in
# the dev overlay): made by its script, then readable by their owner only (kustomize reads them
# here; nothing else does).
sh "$(dirname "$0")/../gen-secrets.sh" "$dir" 2>/dev/null
chmod 600 "$dir"/*

if [ ! -e "$dir/jwt_private_key.pem" ]; then
    openssl genpkey -algorithm ed25519 -out "$dir/.jwt_private_key.pem.tmp"
    openssl pkey -in "$dir/.jwt_private_key.pem.tmp" -pubout -out "$dir/jwt_public_key.pem"
    mv "$dir/.jwt_private_key.pem.tmp" "$dir/jwt_private_key.pem"
fi

if [ ! -e "$dir/tls.key" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
        -subj "/CN=$host" -addext "subjectAltName=DNS:$host" \
        -keyout "$dir/.tls.key.tmp" -out "$dir/tls.crt" 2>/dev/null
    mv "$dir/.tls.key.tmp" "$dir/tls.key"
fi

echo "secrets in $dir" >&2
