#!/usr/bin/env bash
# Runs Docker Compose on capkv's compose file with whichever client is
# installed: the v2 plugin (`docker compose`) or the v1 binary
# (`docker-compose`, what Debian ships). The project is named capkv
# (CAPKV_COMPOSE_PROJECT overrides it), so its containers, network and
# volumes are capkv_* wherever this is run from.
#   deploy/docker/compose.sh up -d
#   deploy/docker/compose.sh exec n1 /kvctl --endpoints n1:7001 cluster status
# --tls (first argument) lays compose.tls.yaml over it: mutual TLS on every
# node, with certificates made on first use into $CAPKV_TLS_DIR (default
# bin/docker-tls) by the image's kvctl (`kvctl certs`; the image must exist:
# make docker-image). Existing certificates are kept.
#   deploy/docker/compose.sh --tls up -d
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
files=(-f "$here/compose.yaml")
project="${CAPKV_COMPOSE_PROJECT:-capkv}"
image="${CAPKV_IMAGE:-capkv:dev}"

# certs makes what is missing of the CA, the node certificates (SANs: the
# container's host name, and localhost and 127.0.0.1 for its healthcheck and
# the published port) and the admin client certificate.
certs() {
  local dir=$1
  mkdir -p "$dir"
  # As the calling user, so the files are theirs (the image has no users:
  # a numeric uid needs none); root in the containers reads them anyway.
  kvctl() { docker run --rm --user "$(id -u):$(id -g)" -v "$dir:/certs" --entrypoint /kvctl "$image" "$@" >/dev/null; }
  [ -f "$dir/ca.crt" ] || kvctl certs init --dir /certs
  for n in n1 n2 n3 n4 n5; do
    [ -f "$dir/$n.crt" ] || kvctl certs node --dir /certs --id "$n" --host "$n,localhost,127.0.0.1"
  done
  [ -f "$dir/admin.crt" ] || kvctl certs client --dir /certs --name admin
}

if [ "${1:-}" = --tls ]; then
  shift
  # Not under bin/docker: that is the image's build context, and keys stay out of it.
  CAPKV_TLS_DIR="${CAPKV_TLS_DIR:-$here/../../bin/docker-tls}"
  mkdir -p "$CAPKV_TLS_DIR"
  # Absolute: compose resolves a relative bind mount against compose.yaml's folder.
  export CAPKV_TLS_DIR="$(cd "$CAPKV_TLS_DIR" && pwd)"
  certs "$CAPKV_TLS_DIR"
  files+=(-f "$here/compose.tls.yaml")
fi

if docker compose version >/dev/null 2>&1; then
  exec docker compose "${files[@]}" -p "$project" "$@"
elif command -v docker-compose >/dev/null 2>&1; then
  exec docker-compose "${files[@]}" -p "$project" "$@"
fi
echo "compose.sh: neither 'docker compose' (the Compose v2 plugin) nor 'docker-compose' is installed" >&2
exit 127
