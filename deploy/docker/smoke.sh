#!/usr/bin/env bash
# Smoke test of the Docker image and compose cluster: start the 5 nodes,
# wait until all are up, write through a eu seed, read through a joined us
# node, and always tear everything down (containers and volumes).
set -euo pipefail
cd "$(dirname "$0")/../.."
COMPOSE="docker-compose -f deploy/docker/compose.yaml -p capkvsmoke"
cleanup() { $COMPOSE down -v >/dev/null 2>&1 || true; }
trap cleanup EXIT
$COMPOSE up -d
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
# Metrics, scraped from the host at the container's address.
ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$($COMPOSE ps -q n1)")
# (Read it whole first: grep -q stops reading at its match, and with pipefail
# curl's failed write would fail the check.)
metrics=$(curl -fsS --max-time 5 "http://$ip:9100/metrics" || true)
if ! grep -q 'capkv_keyspace_info{.*keyspace="accounts",mode="cp"' <<<"$metrics"; then
  echo "docker smoke: no capkv metrics at http://$ip:9100/metrics"; exit 1
fi
echo "docker smoke: 5 nodes up, write via n1 (eu) read back via n4 (us), metrics served: ok"
