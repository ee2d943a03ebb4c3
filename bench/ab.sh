#!/usr/bin/env bash
# ab.sh: the same kvctl bench workloads against kvd dev clusters of different
# builds or flags, the variants rotated round by round so that a noisy,
# shared machine drifts over all of them alike. Prints each run and, per
# variant and workload, the median ops/s, p50 and p99 with every round's
# ops/s.
#
#   bash bench/ab.sh LABEL=BINDIR[:extra kvd dev flags] ...
#   e.g. bash bench/ab.sh off=bin "sampled=bin:--trace-sample 1" old=/tmp/old-bin
#
# BINDIR holds kvd and kvctl (each variant's own kvctl drives its cluster).
# Environment: DUR (8s per run), KEYS (100000), ROUNDS (3), PORT (27301; the
# nodes listen on PORT..PORT+2), OUT (raw JSON, default a temporary directory),
# WORKLOADS (any of put128 put1 get1 get128 apput128; default
# "put128 put1 get1").
# One cluster runs at a time, under `timeout`, stopped by PID on exit;
# traffic goes to 127.0.0.1 only.
set -uo pipefail
[[ $# -gt 0 ]] || { sed -n 2,17p "$0" >&2; exit 2; }
DUR=${DUR:-8s}; KEYS=${KEYS:-100000}; ROUNDS=${ROUNDS:-3}; PORT=${PORT:-27301}
WORKLOADS=${WORKLOADS:-"put128 put1 get1"}
OUT=${OUT:-$(mktemp -d /tmp/capkv-ab.XXXXXX)}; mkdir -p "$OUT"
EPS="127.0.0.1:$PORT,127.0.0.1:$((PORT+1)),127.0.0.1:$((PORT+2))"
PID="" d=""
cleanup() {
  [[ -n $PID ]] && { kill -TERM "$PID" 2>/dev/null; sleep 2; kill -KILL "$PID" 2>/dev/null; }
  [[ -n $d ]] && rm -rf "$d"
}
trap cleanup EXIT
variants=("$@")
ops() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["results"][0]; print("%.0f %.2f %.2f" % (d["ops_per_sec"], d["p50_ms"], d["p99_ms"]))' "$1"; }
for r in $(seq 1 "$ROUNDS"); do
  n=${#variants[@]}
  for i in $(seq 0 $((n-1))); do
    v=${variants[$(( (i + r) % n ))]}
    label=${v%%=*}; rest=${v#*=}; bin=${rest%%:*}; extra=""; [[ $rest == *:* ]] && extra=${rest#*:}
    d=$(mktemp -d /tmp/capkv-ab-data.XXXXXX)
    timeout 900 "$bin/kvd" dev --nodes 3 --base-port "$PORT" --data-dir "$d" --log-level warn --sync=true $extra > "$d/log" 2>&1 &
    PID=$!
    for _ in $(seq 1 120); do grep -q "Ctrl-C stops the cluster" "$d/log" && break; sleep 0.5; done
    K=("$bin/kvctl" --endpoints "$EPS" --json --timeout 5s)
    for w in $WORKLOADS; do
      f=$OUT/$label.$w.$r.json
      case $w in
        put128) "${K[@]}" bench --workload write --clients 128 --conns 8 --duration "$DUR" --keys "$KEYS" > "$f" 2>/dev/null ;;
        put1) "${K[@]}" bench --workload write --clients 1 --conns 1 --duration "$DUR" --keys "$KEYS" > "$f" 2>/dev/null ;;
        get1) "${K[@]}" --consistency linearizable bench --workload read --clients 1 --conns 1 --duration "$DUR" --keys "$KEYS" --preload=false > "$f" 2>/dev/null ;;
        get128) "${K[@]}" --consistency linearizable bench --workload read --clients 128 --conns 8 --duration "$DUR" --keys "$KEYS" --preload=false > "$f" 2>/dev/null ;;
        apput128) "${K[@]}" --consistency quorum bench --workload write --clients 128 --conns 8 --duration "$DUR" --keys "$KEYS" --key-format 'sessions/%d' > "$f" 2>/dev/null ;;
      esac
      printf '%s round %d %-8s %-9s %s\n' "$(date +%T)" "$r" "$label" "$w" "$(ops "$f" 2>/dev/null || echo FAILED)"
    done
    kill -TERM "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; PID=""
    rm -rf "$d"
  done
done
echo "== medians (ops/s p50 p99)"
for v in "${variants[@]}"; do label=${v%%=*}
  for w in $WORKLOADS; do
    python3 - "$OUT" "$label" "$w" <<'PY'
import json,sys,glob,statistics
out,l,w=sys.argv[1:]
rs=[json.load(open(f))["results"][0] for f in sorted(glob.glob(f"{out}/{l}.{w}.*.json"))]
rs=[r for r in rs if r.get("ops_per_sec")]
if rs: print(f"{l:10} {w:9} ops/s {statistics.median(r['ops_per_sec'] for r in rs):8.0f}  p50 {statistics.median(r['p50_ms'] for r in rs):6.2f} ms  p99 {statistics.median(r['p99_ms'] for r in rs):6.2f} ms  n={len(rs)}  each={[round(r['ops_per_sec']) for r in rs]}")
PY
  done
done
