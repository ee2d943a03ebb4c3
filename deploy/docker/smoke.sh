#!/usr/bin/env bash
# Smoke test of the Docker image and compose cluster, with whichever Compose
# is installed (deploy/docker/compose.sh): start the 5 nodes, wait until
# every container's healthcheck says healthy and all 5 are up, write through
# a eu seed, read through a joined us node, check that the joined nodes took
# over partitions (rebalancing), check n1's port published on the host, and
# always tear everything down (containers and volumes).
#   deploy/docker/smoke.sh          plaintext            (make docker-smoke)
#   deploy/docker/smoke.sh --tls    mutual TLS (compose.tls.yaml, certificates
#                                   in a temporary directory; make docker-smoke-tls):
#     the same checks with the admin client certificate, and plaintext
#     clients, clients without a certificate and plain HTTP to the metrics
#     port are refused.
set -euo pipefail
cd "$(dirname "$0")/../.."
tls=0
[ "${1:-}" = --tls ] && tls=1
KVCTL="${KVCTL:-bin/docker/kvctl}" # the static build `make docker-image` made
COMPOSE=(deploy/docker/compose.sh)
in=()   # kvctl's TLS flags inside a container
host=() # and on the host
scheme=http curlTLS=()
if [ $tls = 1 ]; then
  # A project and port of their own: the plaintext smoke may run next to it.
  export CAPKV_COMPOSE_PROJECT=capkvsmoketls
  export CAPKV_HOST_PORT="${CAPKV_HOST_PORT:-17002}"
  CAPKV_TLS_DIR="$(mktemp -d)"
  export CAPKV_TLS_DIR
  COMPOSE+=(--tls)
  in=(--cacert /certs/ca.crt --cert /certs/admin.crt --key /certs/admin.key)
  host=(--cacert "$CAPKV_TLS_DIR/ca.crt" --cert "$CAPKV_TLS_DIR/admin.crt" --key "$CAPKV_TLS_DIR/admin.key")
  scheme=https
  curlTLS=(--cacert "$CAPKV_TLS_DIR/ca.crt" --cert "$CAPKV_TLS_DIR/admin.crt" --key "$CAPKV_TLS_DIR/admin.key")
else
  export CAPKV_COMPOSE_PROJECT=capkvsmoke
  # A port of its own, so a `make run` cluster on 7001 does not collide.
  export CAPKV_HOST_PORT="${CAPKV_HOST_PORT:-17001}"
fi
mode=$([ $tls = 1 ] && echo "mutual TLS" || echo plaintext)
cleanup() {
  "${COMPOSE[@]}" down -v >/dev/null 2>&1 || true
  if [ $tls = 1 ]; then rm -rf "$CAPKV_TLS_DIR"; fi
}
trap cleanup EXIT
# kv NODE ARGS...: kvctl inside container NODE, talking to its own kvd.
kv() { local n=$1; shift; "${COMPOSE[@]}" exec -T "$n" /kvctl --endpoints "$n:7001" ${in[@]+"${in[@]}"} "$@"; }
"${COMPOSE[@]}" up -d
nodes="n1 n2 n3 n4 n5"
health() { docker inspect -f '{{.State.Health.Status}}' "$("${COMPOSE[@]}" ps -q "$1")" 2>/dev/null || echo missing; }
for i in $(seq 1 90); do
  healthy=0
  for n in $nodes; do [ "$(health $n)" = healthy ] && healthy=$((healthy + 1)); done
  [ $healthy = 5 ] && break
  sleep 1
done
if [ $healthy != 5 ]; then
  echo "docker smoke ($mode): $healthy of 5 containers healthy after 90s:"
  for n in $nodes; do echo "  $n: $(health $n)"; done
  "${COMPOSE[@]}" logs --tail 20; exit 1
fi
for i in $(seq 1 60); do
  up=$(kv n1 --timeout 2s cluster status 2>/dev/null | grep -c ' up ' || true)
  [ "$up" = 5 ] && break
  sleep 1
done
if [ "$up" != 5 ]; then
  echo "docker smoke ($mode): only $up of 5 nodes up after 60s"; "${COMPOSE[@]}" logs --tail 20; exit 1
fi
ok=0
for i in $(seq 1 30); do
  if kv n1 put accounts/eu/1/smoke hello >/dev/null 2>&1; then ok=1; break; fi
  sleep 1
done
[ $ok = 1 ] || { echo "docker smoke ($mode): put failed"; kv n1 put accounts/eu/1/smoke hello || true; exit 1; }
got=$(kv n4 get accounts/eu/1/smoke)
if [ "$got" != hello ]; then echo "docker smoke ($mode): read back '$got'"; exit 1; fi
# n1's port, published on the host's loopback: the cluster answers there.
status=$("$KVCTL" --endpoints "127.0.0.1:$CAPKV_HOST_PORT" ${host[@]+"${host[@]}"} --timeout 5s cluster status)
if [ "$(grep -c ' up ' <<<"$status")" != 5 ]; then
  echo "docker smoke ($mode): cluster status through the published port 127.0.0.1:$CAPKV_HOST_PORT:"; echo "$status"; exit 1
fi
refused=""
if [ $tls = 1 ]; then
  # No plaintext listener: a plaintext client, and a TLS client without a
  # client certificate, are refused on the published port.
  for c in plaintext no-client-cert; do
    flags=()
    [ $c = no-client-cert ] && flags=(--cacert "$CAPKV_TLS_DIR/ca.crt")
    if msg=$("$KVCTL" --endpoints "127.0.0.1:$CAPKV_HOST_PORT" ${flags[@]+"${flags[@]}"} --timeout 3s get accounts/eu/1/smoke 2>&1); then
      echo "docker smoke ($mode): a $c client read '$msg' through 127.0.0.1:$CAPKV_HOST_PORT: want refused"; exit 1
    fi
    echo "docker smoke ($mode): $c client refused: $msg"
  done
  refused=", plaintext and certificate-less clients refused"
fi
# The us nodes joined after the seeds: the rebalancing gives them partitions
# of the keyspaces placed over all nodes (sessions), with their data.
us=0
for i in $(seq 1 120); do
  ring=$(kv n1 --timeout 5s ring sessions 2>/dev/null || true)
  us=$(grep -cE '(^|[ ,])n[45](,|$| )' <<<"$(grep '^sessions/' <<<"$ring")" || true)
  done_=$(kv n1 --timeout 5s rebalance status --json 2>/dev/null | grep -c '"complete": true' || true)
  [ "$us" -gt 0 ] && [ "$done_" = 1 ] && break
  sleep 1
done
if [ "$us" = 0 ] || [ "$done_" != 1 ]; then
  echo "docker smoke ($mode): the joined us nodes hold no sessions partition after 120s (rebalance complete: $done_):"
  kv n1 rebalance status || true; exit 1
fi
# Metrics, scraped from the host at the container's address (with TLS, over
# HTTPS with the admin certificate, n1's name resolved to that address).
ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$("${COMPOSE[@]}" ps -q n1)")
# (Read it whole first: grep -q stops reading at its match, and with pipefail
# curl's failed write would fail the check.)
metrics=$(curl -fsS --max-time 5 --resolve "n1:9100:$ip" ${curlTLS[@]+"${curlTLS[@]}"} "$scheme://n1:9100/metrics" || true)
if ! grep -q 'capkv_keyspace_info{.*keyspace="accounts",mode="cp"' <<<"$metrics"; then
  echo "docker smoke ($mode): no capkv metrics at $scheme://n1:9100/metrics (n1 = $ip)"; exit 1
fi
if [ $tls = 1 ]; then
  if curl -fsS --max-time 5 "http://$ip:9100/metrics" >/dev/null 2>&1; then
    echo "docker smoke ($mode): the metrics port answers plain HTTP"; exit 1
  fi
  refused+=", plain HTTP to metrics refused"
fi
echo "docker smoke ($mode, $("${COMPOSE[@]}" version --short 2>/dev/null | head -1 || true)): 5 containers healthy, 5 nodes up, write via n1 (eu) read back via n4 (us), $us sessions partitions on the joined us nodes, n1 answers on 127.0.0.1:$CAPKV_HOST_PORT, metrics served$refused: ok"
