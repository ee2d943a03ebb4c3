#!/usr/bin/env bash
# Smoke test of the Docker image and compose cluster, with whichever Compose
# is installed (deploy/docker/compose.sh): start the 5 nodes, wait until
# every container's healthcheck says healthy and all 5 are up, write through
# a eu seed, read through a joined us node, check that the joined nodes took
# over partitions (rebalancing), check n1's port published on the host, and
# always tear everything down (containers and volumes).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CAPKV_COMPOSE_PROJECT=capkvsmoke
# A port of its own, so a `make run` cluster on 7001 does not collide.
export CAPKV_HOST_PORT="${CAPKV_HOST_PORT:-17001}"
COMPOSE=deploy/docker/compose.sh
KVCTL="${KVCTL:-bin/docker/kvctl}" # the static build `make docker-image` made
cleanup() { $COMPOSE down -v >/dev/null 2>&1 || true; }
trap cleanup EXIT
$COMPOSE up -d
nodes="n1 n2 n3 n4 n5"
health() { docker inspect -f '{{.State.Health.Status}}' "$($COMPOSE ps -q "$1")" 2>/dev/null || echo missing; }
for i in $(seq 1 90); do
  healthy=0
  for n in $nodes; do [ "$(health $n)" = healthy ] && healthy=$((healthy + 1)); done
  [ $healthy = 5 ] && break
  sleep 1
done
if [ $healthy != 5 ]; then
  echo "docker smoke: $healthy of 5 containers healthy after 90s:"
  for n in $nodes; do echo "  $n: $(health $n)"; done
  $COMPOSE logs --tail 20; exit 1
fi
for i in $(seq 1 60); do
  up=$($COMPOSE exec -T n1 /kvctl --endpoints n1:7001 --timeout 2s cluster status 2>/dev/null | grep -c ' up ' || true)
  [ "$up" = 5 ] && break
  sleep 1
done
if [ "$up" != 5 ]; then
  echo "docker smoke: only $up of 5 nodes up after 60s"; $COMPOSE logs --tail 20; exit 1
fi
ok=0
for i in $(seq 1 30); do
  if $COMPOSE exec -T n1 /kvctl --endpoints n1:7001 put accounts/eu/1/smoke hello >/dev/null 2>&1; then ok=1; break; fi
  sleep 1
done
[ $ok = 1 ] || { echo "docker smoke: put failed"; exit 1; }
got=$($COMPOSE exec -T n4 /kvctl --endpoints n4:7001 get accounts/eu/1/smoke)
if [ "$got" != hello ]; then echo "docker smoke: read back '$got'"; exit 1; fi
# n1's port, published on the host's loopback: the cluster answers there.
status=$("$KVCTL" --endpoints "127.0.0.1:$CAPKV_HOST_PORT" --timeout 5s cluster status)
if [ "$(grep -c ' up ' <<<"$status")" != 5 ]; then
  echo "docker smoke: cluster status through the published port 127.0.0.1:$CAPKV_HOST_PORT:"; echo "$status"; exit 1
fi
# The us nodes joined after the seeds: the rebalancing gives them partitions
# of the keyspaces placed over all nodes (sessions), with their data.
us=0
for i in $(seq 1 120); do
  ring=$($COMPOSE exec -T n1 /kvctl --endpoints n1:7001 --timeout 5s ring sessions 2>/dev/null || true)
  us=$(grep -cE '(^|[ ,])n[45](,|$| )' <<<"$(grep '^sessions/' <<<"$ring")" || true)
  done_=$($COMPOSE exec -T n1 /kvctl --endpoints n1:7001 --timeout 5s rebalance status --json 2>/dev/null | grep -c '"complete": true' || true)
  [ "$us" -gt 0 ] && [ "$done_" = 1 ] && break
  sleep 1
done
if [ "$us" = 0 ] || [ "$done_" != 1 ]; then
  echo "docker smoke: the joined us nodes hold no sessions partition after 120s (rebalance complete: $done_):"
  $COMPOSE exec -T n1 /kvctl --endpoints n1:7001 rebalance status || true; exit 1
fi
# Metrics, scraped from the host at the container's address.
ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$($COMPOSE ps -q n1)")
# (Read it whole first: grep -q stops reading at its match, and with pipefail
# curl's failed write would fail the check.)
metrics=$(curl -fsS --max-time 5 "http://$ip:9100/metrics" || true)
if ! grep -q 'capkv_keyspace_info{.*keyspace="accounts",mode="cp"' <<<"$metrics"; then
  echo "docker smoke: no capkv metrics at http://$ip:9100/metrics"; exit 1
fi
echo "docker smoke ($($COMPOSE version --short 2>/dev/null | head -1 || true)): 5 containers healthy, 5 nodes up, write via n1 (eu) read back via n4 (us), $us sessions partitions on the joined us nodes, n1 answers on 127.0.0.1:$CAPKV_HOST_PORT, metrics served: ok"
