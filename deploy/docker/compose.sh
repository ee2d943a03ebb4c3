#!/usr/bin/env bash
# Runs Docker Compose on capkv's compose file with whichever client is
# installed: the v2 plugin (`docker compose`) or the v1 binary
# (`docker-compose`, what Debian ships). The project is named capkv
# (CAPKV_COMPOSE_PROJECT overrides it), so its containers, network and
# volumes are capkv_* wherever this is run from.
#   deploy/docker/compose.sh up -d
#   deploy/docker/compose.sh exec n1 /kvctl --endpoints n1:7001 cluster status
set -euo pipefail
file="$(cd "$(dirname "$0")" && pwd)/compose.yaml"
project="${CAPKV_COMPOSE_PROJECT:-capkv}"
if docker compose version >/dev/null 2>&1; then
  exec docker compose -f "$file" -p "$project" "$@"
elif command -v docker-compose >/dev/null 2>&1; then
  exec docker-compose -f "$file" -p "$project" "$@"
fi
echo "compose.sh: neither 'docker compose' (the Compose v2 plugin) nor 'docker-compose' is installed" >&2
exit 127
