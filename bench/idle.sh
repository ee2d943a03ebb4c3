#!/usr/bin/env bash
# idle.sh: CPU and memory of an idle `kvd dev --nodes 3` cluster.
#
# Builds capkv (make build), starts `kvd dev --nodes 3` on 127.0.0.1 with its
# data in a temporary directory, waits for it to be ready, optionally creates a
# cp keyspace with EXTRA_GROUPS partitions (one Raft group each), lets the
# cluster settle, then measures the kvd process's CPU (utime+stime from
# /proc/PID/stat, with its reaped children's cutime+cstime; kvd dev runs every
# node in one process) over MEASURE seconds. Prints "% of one core" and the
# resident memory (RSS summed over the process and its children), and writes
# the result to bench/results/idle-<date>.md.
#
# Environment:
#   EXTRA_GROUPS    partitions of an extra cp keyspace, 0 for none (default 0)
#   KVD_PORT        first kvd port (default 27201)
#   SETTLE          seconds to wait before measuring (default 10)
#   MEASURE         seconds measured (default 30)
#   DEBUG_ADDR      serve pprof on this address (e.g. 127.0.0.1:6061); off by default
#   PROFILE=1       with DEBUG_ADDR: also take a CPU profile over the measured window
#                   (written next to the results file; it costs a little CPU itself)
#   LABEL           free text for the results file (e.g. "baseline")
#   BIN_DIR         use the kvd and kvctl already built in this directory (e.g. of an
#                   older commit, for a before/after comparison) instead of make build
#   SERVER_LIFETIME hard cap in seconds on the server process (default 600)
#   KEEP_WORK=1     keep the temporary directory (server log) for a post-mortem
#
# Every process it starts runs under `timeout`, is tracked by PID and is
# stopped on exit, whatever the exit path. Traffic goes to 127.0.0.1 only.
set -euo pipefail
export LC_ALL=C

EXTRA_GROUPS=${EXTRA_GROUPS:-0}
KVD_PORT=${KVD_PORT:-27201}
SETTLE=${SETTLE:-10}
MEASURE=${MEASURE:-30}
DEBUG_ADDR=${DEBUG_ADDR:-}
PROFILE=${PROFILE:-}
LABEL=${LABEL:-}
SERVER_LIFETIME=${SERVER_LIFETIME:-600}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
RESULTS_DIR=$BENCH_DIR/results
export GOWORK=off

# shellcheck source=lib.sh
source "$BENCH_DIR/lib.sh" # log, stop_pid
DUMP_LOGS=""
die() { log "ERROR: $*"; DUMP_LOGS=1; exit 1; }

for v in EXTRA_GROUPS KVD_PORT SETTLE MEASURE SERVER_LIFETIME; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v=${!v}: want a non-negative integer"
done
((MEASURE > 0)) || die "MEASURE must be > 0"
for tool in go make timeout awk getconf; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
[[ -r /proc/self/stat ]] || die "needs /proc (Linux)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/capkv-idle.XXXXXX")
PIDS=()  # the `timeout` wrappers of every process started


cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  if ((${#PIDS[@]})); then
    log "cleanup: stopping ${#PIDS[@]} process(es)"
    for i in "${!PIDS[@]}"; do stop_pid "${PIDS[$i]}" "process $i"; done
  fi
  if [[ -n $DUMP_LOGS && -f $WORK/kvd.log ]]; then
    log "--- last lines of kvd.log ---"
    tail -n 15 "$WORK/kvd.log" >&2 || true
  fi
  if [[ -n ${KEEP_WORK:-} ]]; then log "kept $WORK (KEEP_WORK set)"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'DUMP_LOGS=1; exit 130' INT
trap 'exit 143' TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
KVD_PORTS=("$KVD_PORT" $((KVD_PORT + 1)) $((KVD_PORT + 2)))
for p in "${KVD_PORTS[@]}"; do
  port_busy "$p" && die "port 127.0.0.1:$p is in use (set KVD_PORT)"
done
KVD_EPS=$(printf '127.0.0.1:%s,' "${KVD_PORTS[@]}"); KVD_EPS=${KVD_EPS%,}

# ---------------------------------------------------------------- build
mkdir -p "$RESULTS_DIR"
if [[ -n ${BIN_DIR:-} ]]; then
  KVD=$BIN_DIR/kvd
  KVCTL=$BIN_DIR/kvctl
  [[ -x $KVD && -x $KVCTL ]] || die "BIN_DIR=$BIN_DIR: no kvd and kvctl there"
  COMMIT="binaries in $BIN_DIR"
else
  log "building capkv (make build)"
  make -C "$REPO" build >"$WORK/make.log" 2>&1 || { cat "$WORK/make.log" >&2; die "make build failed"; }
  KVD=$REPO/bin/kvd
  KVCTL=$REPO/bin/kvctl
  COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [[ -n $(git -C "$REPO" status --porcelain -- . ':(exclude)bench' 2>/dev/null || true) ]]; then
    COMMIT="$COMMIT+dirty"
  fi
fi

# ---------------------------------------------------------------- start
KVD_CMD=("$KVD" dev --nodes 3 --base-port "$KVD_PORT" --data-dir "$WORK/kvd" --log-level warn)
[[ -n $DEBUG_ADDR ]] && KVD_CMD+=(--debug-addr "$DEBUG_ADDR")
log "starting: ${KVD_CMD[*]}"
timeout -k 10 --signal=TERM "$SERVER_LIFETIME" "${KVD_CMD[@]}" >"$WORK/kvd.log" 2>&1 &
PIDS+=($!)

alive_or_die() { kill -0 "${PIDS[0]}" 2>/dev/null || die "kvd dev exited $1"; }
ok=""
for _ in $(seq 1 180); do
  alive_or_die "while starting"
  if grep -q "Ctrl-C stops the cluster" "$WORK/kvd.log"; then ok=1; break; fi
  sleep 0.5
done
[[ -n $ok ]] || die "kvd dev not ready after 90s"
KVD_SRV=$(pgrep -P "${PIDS[0]}" | head -n 1)
[[ -n $KVD_SRV ]] || die "cannot find the kvd process under timeout (pid ${PIDS[0]})"
log "kvd dev ready (pid $KVD_SRV)"

if ((EXTRA_GROUPS > 0)); then
  log "creating cp keyspace 'idle' with $EXTRA_GROUPS partitions"
  timeout 120 "$KVCTL" --endpoints "$KVD_EPS" keyspace create idle --mode cp --replicas 3 \
    --partitions "$EXTRA_GROUPS" >"$WORK/kvctl.log" 2>&1 || { cat "$WORK/kvctl.log" >&2; die "keyspace create failed"; }
fi

log "settling for ${SETTLE}s"
sleep "$SETTLE"
alive_or_die "while settling"

# ---------------------------------------------------------------- measure
CLK_TCK=$(getconf CLK_TCK)
tree() { # the process and its descendants
  local p=$1 c
  echo "$p"
  for c in $(pgrep -P "$p" 2>/dev/null || true); do tree "$c"; done
}
cpu_ticks() { # utime+stime+cutime+cstime over the tree
  local p t=0 v
  for p in $(tree "$KVD_SRV"); do
    # Fields after the ")" of the command name: utime is the 12th, then stime, cutime, cstime.
    v=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)
    t=$((t + v))
  done
  echo "$t"
}
rss_kib() {
  local p t=0 v
  for p in $(tree "$KVD_SRV"); do
    v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
STAMP=$(date -u +%Y-%m-%d-%H%M%S)
PROF_FILE=""
PROF_PID=""
if [[ -n $PROFILE && -n $DEBUG_ADDR ]]; then
  PROF_FILE=$RESULTS_DIR/idle-$STAMP-groups$EXTRA_GROUPS.pprof
  timeout $((MEASURE + 30)) go tool pprof -proto -output "$PROF_FILE" \
    "http://$DEBUG_ADDR/debug/pprof/profile?seconds=$MEASURE" >"$WORK/pprof.log" 2>&1 &
  PROF_PID=$!
  PIDS+=("$PROF_PID")
fi
log "measuring for ${MEASURE}s"
t0=$(cpu_ticks); s0=$(date +%s%N)
sleep "$MEASURE"
t1=$(cpu_ticks); s1=$(date +%s%N)
alive_or_die "while measuring"
RSS=$(rss_kib)
THREADS=$(awk '/^Threads:/ { print $2 }' "/proc/$KVD_SRV/status")
PCT=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v ns=$((s1 - s0)) 'BEGIN { printf "%.1f", 100 * (d / hz) / (ns / 1e9) }')
RSS_MB=$(awk -v k="$RSS" 'BEGIN { printf "%.0f", k / 1024 }')
[[ -n $PROF_PID ]] && { wait "$PROF_PID" || log "pprof failed: $(tail -n 3 "$WORK/pprof.log")"; }

# ---------------------------------------------------------------- report
OUT=$RESULTS_DIR/idle-$STAMP.md
{
  echo "# idle cluster: $STAMP${LABEL:+ ($LABEL)}"
  echo
  echo "commit $COMMIT, $(nproc) cores, \`kvd dev --nodes 3\` on 127.0.0.1, settle ${SETTLE}s, measured ${MEASURE}s"
  echo
  echo "| extra cp groups | CPU (% of one core) | RSS (MiB) | threads |"
  echo "|---:|---:|---:|---:|"
  echo "| $EXTRA_GROUPS | $PCT | $RSS_MB | $THREADS |"
  [[ -n $PROF_FILE && -s $PROF_FILE ]] && { echo; echo "CPU profile: ${PROF_FILE#"$REPO/"}"; }
} >"$OUT"
cat "$OUT"
log "wrote ${OUT#"$REPO/"}"
echo "idle: extra_groups=$EXTRA_GROUPS cpu=${PCT}% of one core rss=${RSS_MB}MiB"
