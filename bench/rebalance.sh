#!/usr/bin/env bash
# rebalance.sh: what a join costs. Starts a 3-node `kvd dev` cluster on
# 127.0.0.1, loads KEYS cp keys and KEYS ap keys, measures cp write
# throughput for DURATION, then starts a 4th node with --join and measures
# the same load while its partitions move, and reports the moves (count,
# moved fraction, time per move, keys streamed) and the two throughputs.
#
# Environment: KEYS (default 20000), DURATION (default 10s), BASE_PORT
# (default 27301; the 4th node listens on BASE_PORT+10), CLIENTS (default 16).
# Every process runs under `timeout` and is stopped by PID on exit.
set -euo pipefail
KEYS=${KEYS:-20000}
DURATION=${DURATION:-10s}
BASE_PORT=${BASE_PORT:-27301}
CLIENTS=${CLIENTS:-16}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d /tmp/capkv-rebalance.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

make -C "$REPO" -s build
KVD=$REPO/bin/kvd KVCTL=$REPO/bin/kvctl
EPS="127.0.0.1:$BASE_PORT,127.0.0.1:$((BASE_PORT + 1)),127.0.0.1:$((BASE_PORT + 2))"
timeout 1800 "$KVD" dev --nodes 3 --base-port "$BASE_PORT" --data-dir "$WORK/dev" --log-level warn > "$WORK/dev.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 120); do
  "$KVCTL" --endpoints "$EPS" cluster status --check > /dev/null 2>&1 && break
  sleep 0.5
done
kv() { "$KVCTL" --endpoints "$EPS" --timeout 5m "$@"; }
bench() { # bench KEYFORMAT: one cp write run, prints ops/s
  kv --json bench --workload write --clients "$CLIENTS" --keys "$KEYS" --duration "$DURATION" --key-format "$1" \
    2> /dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin)["results"][0]; print("%.0f ops/s, p50 %.1f ms, p99 %.1f ms, %d errors" % (d["ops_per_sec"], d["p50_ms"], d["p99_ms"], d["errors"]))'
}
log "loading $KEYS cp and $KEYS ap keys"
kv bench --workload read --clients 32 --keys "$KEYS" --duration 1s --key-format 'accounts/eu/%d/bench' > /dev/null
kv bench --workload read --clients 32 --keys "$KEYS" --duration 1s --key-format 'sessions/%d/bench' > /dev/null
log "cp writes before the join"
before=$(bench 'accounts/eu/%d/load')
log "before: $before"

JOIN_PORT=$((BASE_PORT + 10))
timeout 1800 "$KVD" --id n4 --listen "127.0.0.1:$JOIN_PORT" --region eu --data-dir "$WORK/n4" --join "127.0.0.1:$BASE_PORT" --log-level warn > "$WORK/n4.log" 2>&1 &
PIDS+=($!)
joined=$(date +%s.%N)
log "n4 joining; cp writes during the moves"
during=$(bench 'accounts/eu/%d/load')
log "during: $during"
for _ in $(seq 1 600); do
  kv rebalance status --json | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["complete"] else 1)' && break
  sleep 0.5
done
done_at=$(date +%s.%N)
kv rebalance status --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
took = [m["took_ms"] for m in d["moves"] if "took_ms" in m]
took.sort()
print("moves: %d (%d of %d replicas, %.1f%%), %d keys / %d bytes moved" % (len(d["moves"]), d["moved_replicas"], d["replicas"], 100.0 * d["moved_replicas"] / max(d["replicas"], 1), d["keys"], d["bytes"]))
if took:
    print("time per move: median %d ms, max %d ms" % (took[len(took) // 2], took[-1]))
# Per keyspace: cp moves are Raft membership changes, ap moves a stream.
for ks, how in (("accounts", "cp, Raft catch-up"), ("sessions", "ap, streamed")):
    ms = sorted((m for m in d["moves"] if m["partition"].startswith(ks + "/") and "took_ms" in m), key=lambda m: m["took_ms"])
    if ms:
        keys = sorted(m["keys"] for m in ms)
        print("  %s (%s): %d moves, median %d ms, max %d ms, median %d keys per partition" % (ks, how, len(ms), ms[len(ms) // 2]["took_ms"], ms[-1]["took_ms"], keys[len(keys) // 2]))
'
python3 -c "print('join to last move done: %.1f s' % ($done_at - $joined))"
echo "cp writes before the join: $before"
echo "cp writes during the moves: $during"
