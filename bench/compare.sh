#!/usr/bin/env bash
# compare.sh: capkv against etcd v3.7.3, side by side, on this machine.
#
# Builds etcd (cached under bench/.cache/), the etcd load generator
# (bench/etcd/loadgen) and capkv (make build), starts a 3-member etcd cluster
# and a 3-node `kvd dev` cluster on 127.0.0.1, and runs the same workloads
# against both, alternating systems workload by workload. Prints a markdown
# table and writes it to bench/results/compare-<date>.md.
#
# Environment:
#   DURATION        length of each measured run (default 12s; Ns or Nm)
#   KEYS            key space (default 100000)
#   VALUE_SIZE      value size in bytes (default 256)
#   ETCD_PORT       first etcd client port (default 23790; peers use ETCD_PEER_PORT, 23800)
#   KVD_PORT        first kvd port (default 27101)
#   TLS=1           also run capkv with mutual TLS (`kvd dev --tls`, a second cluster on
#                   KVD_TLS_PORT, default KVD_PORT+10, next to the plaintext one): every
#                   workload runs on it too, and a second table gives TLS/plain ratios
#   SERVER_LIFETIME hard cap in seconds on every server process (default 3600)
#   KEEP_WORK=1     keep the temporary directory (server logs, raw JSON) for a post-mortem
#
# Every process it starts runs under `timeout`, is tracked by PID and is
# stopped on exit, whatever the exit path. Traffic goes to 127.0.0.1 only.
set -euo pipefail
export LC_ALL=C

DURATION=${DURATION:-12s}
KEYS=${KEYS:-100000}
VALUE_SIZE=${VALUE_SIZE:-256}
ETCD_PORT=${ETCD_PORT:-23790}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-23800}
KVD_PORT=${KVD_PORT:-27101}
TLS=${TLS:-0}
KVD_TLS_PORT=${KVD_TLS_PORT:-$((KVD_PORT + 10))}
SERVER_LIFETIME=${SERVER_LIFETIME:-3600}
ETCD_VERSION=v3.7.3

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
CACHE=$BENCH_DIR/.cache
RESULTS_DIR=$BENCH_DIR/results
export GOWORK=off

# shellcheck source=lib.sh
source "$BENCH_DIR/lib.sh" # log, stop_pid
DUMP_LOGS=""
show() { # a command line as one could paste it, paths relative to the repo
  local a out=""
  for a in "$@"; do
    a=${a#"$REPO/"}
    if [[ $a =~ ^[A-Za-z0-9_./:,=@%+-]+$ ]]; then out+="$a "; else out+="'${a//\'/\'\\\'\'}' "; fi
  done
  printf '%s' "${out% }"
}
die() { log "ERROR: $*"; DUMP_LOGS=1; exit 1; }

case $DURATION in
  *[0-9]s) DUR_S=${DURATION%s} ;;
  *[0-9]m) DUR_S=$(( ${DURATION%m} * 60 )) ;;
  *) die "DURATION=$DURATION: want Ns or Nm (e.g. 12s, 1m)" ;;
esac
[[ $DUR_S =~ ^[0-9]+$ && $DUR_S -gt 0 ]] || die "DURATION=$DURATION: want Ns or Nm"
[[ $TLS == 0 || $TLS == 1 ]] || die "TLS=$TLS: want 0 or 1"
# The systems under test; capkv_tls is the same kvd dev with mutual TLS.
SYSTEMS=(etcd capkv)
((TLS)) && SYSTEMS+=(capkv_tls)
# Bound on one load-generator run: the run itself plus a generous preload.
RUN_LIMIT=$(( DUR_S + 600 ))

for tool in go make timeout; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
if command -v jq >/dev/null; then
  jfield() { jq -r ".results[0].$2 // empty" "$1"; }
elif command -v python3 >/dev/null; then
  jfield() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print(r.get(sys.argv[2], ""))' "$1" "$2"; }
else
  die "need jq or python3 to read the JSON results"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/capkv-compare.XXXXXX")
PIDS=()  # the `timeout` wrappers of every server started


cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  if ((${#PIDS[@]})); then
    log "cleanup: stopping ${#PIDS[@]} server process(es)"
    for i in "${!PIDS[@]}"; do stop_pid "${PIDS[$i]}" "server $i"; done
  fi
  if [[ -n $DUMP_LOGS && -d $WORK ]]; then
    for f in "$WORK"/*.log; do
      [[ -f $f ]] || continue
      log "--- last lines of $(basename "$f") ---"
      tail -n 15 "$f" >&2 || true
    done
  fi
  if [[ -n ${KEEP_WORK:-} ]]; then log "kept $WORK (KEEP_WORK set)"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'DUMP_LOGS=1; exit 130' INT
trap 'exit 143' TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ETCD_CLIENT_PORTS=("$ETCD_PORT" $((ETCD_PORT + 1)) $((ETCD_PORT + 2)))
ETCD_PEER_PORTS=("$ETCD_PEER_PORT" $((ETCD_PEER_PORT + 1)) $((ETCD_PEER_PORT + 2)))
KVD_PORTS=("$KVD_PORT" $((KVD_PORT + 1)) $((KVD_PORT + 2)))
KVD_TLS_PORTS=()
((TLS)) && KVD_TLS_PORTS=("$KVD_TLS_PORT" $((KVD_TLS_PORT + 1)) $((KVD_TLS_PORT + 2)))
for p in "${ETCD_CLIENT_PORTS[@]}" "${ETCD_PEER_PORTS[@]}" "${KVD_PORTS[@]}" ${KVD_TLS_PORTS[@]+"${KVD_TLS_PORTS[@]}"}; do
  port_busy "$p" && die "port 127.0.0.1:$p is in use (set ETCD_PORT / ETCD_PEER_PORT / KVD_PORT / KVD_TLS_PORT)"
done
ETCD_EPS=$(printf '127.0.0.1:%s,' "${ETCD_CLIENT_PORTS[@]}"); ETCD_EPS=${ETCD_EPS%,}
KVD_EPS=$(printf '127.0.0.1:%s,' "${KVD_PORTS[@]}"); KVD_EPS=${KVD_EPS%,}
if ((TLS)); then KVD_TLS_EPS=$(printf '127.0.0.1:%s,' "${KVD_TLS_PORTS[@]}"); KVD_TLS_EPS=${KVD_TLS_EPS%,}; fi

# ---------------------------------------------------------------- build
mkdir -p "$CACHE" "$RESULTS_DIR"
ETCD_BIN=$CACHE/etcd-$ETCD_VERSION
ETCDCTL_BIN=$CACHE/etcdctl-$ETCD_VERSION
LOADGEN_BIN=$CACHE/etcd-loadgen
if [[ -x $ETCD_BIN && -x $ETCDCTL_BIN ]] && "$ETCD_BIN" --version 2>/dev/null | grep -q "etcd Version: ${ETCD_VERSION#v}"; then
  log "etcd $ETCD_VERSION: cached at ${ETCD_BIN#"$REPO"/}"
else
  log "etcd $ETCD_VERSION: building in a throwaway module (a few minutes on a cold module cache)"
  mkdir -p "$WORK/etcd-build"
  (
    cd "$WORK/etcd-build"
    go mod init throwaway
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "go.etcd.io/etcd/etcdctl/v3@$ETCD_VERSION"
    go build -o "$ETCD_BIN.tmp" go.etcd.io/etcd/server/v3
    go build -o "$ETCDCTL_BIN.tmp" go.etcd.io/etcd/etcdctl/v3
  ) >"$WORK/etcd-build.log" 2>&1 || { tail -n 30 "$WORK/etcd-build.log" >&2; die "etcd build failed"; }
  mv "$ETCD_BIN.tmp" "$ETCD_BIN"
  mv "$ETCDCTL_BIN.tmp" "$ETCDCTL_BIN"
  "$ETCD_BIN" --version | grep -q "etcd Version: ${ETCD_VERSION#v}" || die "built etcd does not report $ETCD_VERSION"
  log "etcd $ETCD_VERSION: built"
fi
log "building the etcd load generator (bench/etcd/loadgen)"
(cd "$BENCH_DIR" && go build -o "$LOADGEN_BIN" ./etcd/loadgen) || die "loadgen build failed"
log "building capkv (make build)"
make -C "$REPO" build >"$WORK/make.log" 2>&1 || { cat "$WORK/make.log" >&2; die "make build failed"; }
KVD=$REPO/bin/kvd
# What was built: the commit, and a fingerprint of uncommitted changes outside bench/.
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY_FILES=$(git -C "$REPO" status --porcelain -- . ':(exclude)bench' 2>/dev/null | awk '{ print $2 }' | tr '\n' ' ' || true)
if [[ -n $DIRTY_FILES ]]; then
  DIFF_SHA=$( (git -C "$REPO" diff HEAD -- . ':(exclude)bench'; git -C "$REPO" ls-files --others --exclude-standard -- . ':(exclude)bench' | while read -r f; do cat "$REPO/$f"; done) 2>/dev/null | sha256sum | cut -c1-12)
  BUILT="commit $COMMIT plus uncommitted changes (diff sha256 $DIFF_SHA) in: ${DIRTY_FILES% }"
else
  BUILT="commit $COMMIT, clean working tree"
fi
log "capkv built from $BUILT"
KVCTL=$REPO/bin/kvctl

# ---------------------------------------------------------------- start the clusters
alive_or_die() {
  local i
  for i in "${!PIDS[@]}"; do
    kill -0 "${PIDS[$i]}" 2>/dev/null || die "server process ${PIDS[$i]} ($1) exited; see the logs below"
  done
}

log "starting etcd: 3 members, clients on $ETCD_EPS, peers on 127.0.0.1:${ETCD_PEER_PORTS[0]}-${ETCD_PEER_PORTS[2]}"
initial_cluster=""
for i in 0 1 2; do initial_cluster+="e$((i + 1))=http://127.0.0.1:${ETCD_PEER_PORTS[$i]},"; done
initial_cluster=${initial_cluster%,}
ETCD_CMDS=()
for i in 0 1 2; do
  cmd=("$ETCD_BIN" --name "e$((i + 1))" --data-dir "$WORK/etcd/e$((i + 1))"
    --listen-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORTS[$i]}"
    --advertise-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORTS[$i]}"
    --listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORTS[$i]}"
    --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORTS[$i]}"
    --initial-cluster "$initial_cluster" --initial-cluster-token capkv-compare
    --initial-cluster-state new --log-level warn)
  ETCD_CMDS+=("$(show "${cmd[@]}")")
  timeout -k 10 --signal=TERM "$SERVER_LIFETIME" "${cmd[@]}" >"$WORK/etcd-e$((i + 1)).log" 2>&1 &
  PIDS+=($!)
done

log "starting capkv: kvd dev, 3 nodes on $KVD_EPS"
KVD_CMD=("$KVD" dev --nodes 3 --base-port "$KVD_PORT" --data-dir "$WORK/kvd" --log-level warn --sync=true)
timeout -k 10 --signal=TERM "$SERVER_LIFETIME" "${KVD_CMD[@]}" >"$WORK/kvd.log" 2>&1 &
PIDS+=($!)
KVD_TLS_CMD=()
if ((TLS)); then
  # The same cluster with mutual TLS: kvd dev --tls makes a CA, the node
  # certificates and the client certificate dev-client in DATA-DIR/tls.
  log "starting capkv with mutual TLS: kvd dev --tls, 3 nodes on $KVD_TLS_EPS"
  KVD_TLS_CMD=("$KVD" dev --tls --nodes 3 --base-port "$KVD_TLS_PORT" --data-dir "$WORK/kvd-tls" --log-level warn --sync=true)
  timeout -k 10 --signal=TERM "$SERVER_LIFETIME" "${KVD_TLS_CMD[@]}" >"$WORK/kvd-tls.log" 2>&1 &
  PIDS+=($!)
  PKI=$WORK/kvd-tls/tls
  KVCTL_TLS=(--cacert "$PKI/ca.crt" --cert "$PKI/dev-client.crt" --key "$PKI/dev-client.key")
fi

log "waiting for etcd to be healthy"
ok=""
for _ in $(seq 1 120); do
  alive_or_die "while waiting for etcd"
  if timeout 5 "$ETCDCTL_BIN" --endpoints "$ETCD_EPS" --command-timeout 2s endpoint health >/dev/null 2>&1; then ok=1; break; fi
  sleep 0.5
done
[[ -n $ok ]] || die "etcd not healthy after 60s"
log "etcd ready"
ETCD_STATUS=$(timeout 10 "$ETCDCTL_BIN" --endpoints "$ETCD_EPS" endpoint status -w table 2>&1 || true)
echo "$ETCD_STATUS" >&2

for kl in kvd ${KVD_TLS_CMD[@]+kvd-tls}; do
  log "waiting for capkv ($kl.log: the 'Ctrl-C stops the cluster' banner line)"
  ok=""
  for _ in $(seq 1 180); do
    alive_or_die "while waiting for $kl"
    if grep -q "Ctrl-C stops the cluster" "$WORK/$kl.log"; then ok=1; break; fi
    sleep 0.5
  done
  [[ -n $ok ]] || die "kvd dev ($kl) not ready after 90s"
done
log "capkv ready"

# The server processes themselves (children of the timeout wrappers), for CPU accounting.
ETCD_SRV=(); KVD_SRV=(); KVD_TLS_SRV=()
for i in 0 1 2; do ETCD_SRV+=($(pgrep -P "${PIDS[$i]}")); done
KVD_SRV+=($(pgrep -P "${PIDS[3]}"))
((TLS)) && KVD_TLS_SRV+=($(pgrep -P "${PIDS[4]}"))
((${#ETCD_SRV[@]} == 3 && ${#KVD_SRV[@]} == 1 && ${#KVD_TLS_SRV[@]} == TLS)) ||
  die "cannot find the server processes (etcd: ${ETCD_SRV[*]:-none}, kvd: ${KVD_SRV[*]:-none}, kvd --tls: ${KVD_TLS_SRV[*]:-none})"
# SRV[system]: the PIDs of its server processes.
declare -A SRV=([etcd]="${ETCD_SRV[*]}" [capkv]="${KVD_SRV[*]}" [capkv_tls]="${KVD_TLS_SRV[*]:-}")
# shellcheck disable=SC2206 # SRV holds space-separated PIDs
ALL_SRV=(${SRV[etcd]} ${SRV[capkv]} ${SRV[capkv_tls]})
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # cpu_ticks PID...: user+system clock ticks, summed
  local p t=0 v
  for p in "$@"; do
    v=$(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)
    t=$((t + v))
  done
  echo "$t"
}
# Busy ticks of the whole machine (user nice system irq softirq steal), and the
# CPU of this script's waited-for children (the load generators).
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
children_ticks() { awk '{ sub(/.*\) /, ""); print $14 + $15 }' "/proc/$$/stat"; }
pct_core() { awk -v t="$1" -v hz="$CLK_TCK" -v a="$2" -v b="$3" 'BEGIN { v = 100 * t / hz / (b - a); if (v < 0) v = 0; printf "%.0f", v }'; }
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
BG_LINE="background CPU before the runs (3s sample, outside both clusters): $(
  m0=$(machine_ticks); s0=$(cpu_ticks "${ALL_SRV[@]}"); w0=$(date +%s.%N)
  sleep 3
  m1=$(machine_ticks); s1=$(cpu_ticks "${ALL_SRV[@]}"); w1=$(date +%s.%N)
  pct_core $(( (m1 - m0) - (s1 - s0) )) "$w0" "$w1")% of a core; idle clusters: ${SYSTEMS[*]} together $(
  a=$(cpu_ticks "${ALL_SRV[@]}"); w0=$(date +%s.%N); sleep 2
  b=$(cpu_ticks "${ALL_SRV[@]}"); w1=$(date +%s.%N)
  pct_core $((b - a)) "$w0" "$w1")%"
log "$BG_LINE"

# ---------------------------------------------------------------- runs
CAPKV_KEYFMT='accounts/eu/%d/bench'
CAPKV_AP_KEYFMT='sessions/%d'
ETCD_KEYFMT='%08d'
COMMANDS=()    # every command, for the results file
declare -A R   # R[name,system,field]
FAILED=0


# run NAME SYSTEM CMD...: runs a load generator printing JSON, records the figures.
run() {
  local name=$1 sys=$2; shift 2
  local out="$WORK/$name-$sys.json" err="$WORK/$name-$sys.stderr" rc=0 f
  COMMANDS+=("$(show "$@")")
  log "run $name on $sys: $(show "$@")"
  local s0 a0 w0 m0 c0 s1 a1 w1 m1 c1
  # shellcheck disable=SC2086 # SRV holds space-separated PIDs
  s0=$(cpu_ticks ${SRV[$sys]}); a0=$(cpu_ticks "${ALL_SRV[@]}"); m0=$(machine_ticks); c0=$(children_ticks); w0=$(date +%s.%N)
  timeout --foreground -k 10 "$RUN_LIMIT" "$@" >"$out" 2>"$err" || rc=$?
  # shellcheck disable=SC2086
  s1=$(cpu_ticks ${SRV[$sys]}); a1=$(cpu_ticks "${ALL_SRV[@]}"); m1=$(machine_ticks); c1=$(children_ticks); w1=$(date +%s.%N)
  R[$name,$sys,loadgen_pct]=$(pct_core $((c1 - c0)) "$w0" "$w1")
  R[$name,$sys,rest_pct]=$(pct_core $(( (m1 - m0) - (a1 - a0) - (c1 - c0) )) "$w0" "$w1")
  # CPU of the system under load per op, and of the idle ones (in % of one core).
  local mine=$((s1 - s0)) other=$(( (a1 - a0) - (s1 - s0) ))
  R[$name,$sys,cpu_s]=$(awk -v t="$mine" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", t / hz }')
  R[$name,$sys,other_pct]=$(pct_core "$other" "$w0" "$w1")
  if [[ $rc -ne 0 ]] || ! jfield "$out" ops_per_sec >/dev/null 2>&1 || [[ -z $(jfield "$out" ops_per_sec 2>/dev/null) ]]; then
    FAILED=1
    R[$name,$sys,failed]="exit $rc"
    log "run $name on $sys FAILED (exit $rc); stderr tail:"
    tail -n 15 "$err" >&2 || true
    R[$name,$sys,stderr]=$(tail -n 5 "$err" | tr '\n' ' ' | cut -c1-400)
    return 0
  fi
  for f in ops errors ops_per_sec p50_ms p99_ms p999_ms max_ms example_error; do
    R[$name,$sys,$f]=$(jfield "$out" "$f")
  done
  R[$name,$sys,cpu_us_op]=$(awk -v t="$mine" -v hz="$CLK_TCK" -v n="${R[$name,$sys,ops]}" 'BEGIN { if (n > 0) printf "%.0f", 1e6 * t / hz / n; else printf "–" }')
  log "  $sys: $(printf '%.0f' "${R[$name,$sys,ops_per_sec]}") ops/s, p50 ${R[$name,$sys,p50_ms]} ms, p99 ${R[$name,$sys,p99_ms]} ms, errors ${R[$name,$sys,errors]}"
  if [[ ${R[$name,$sys,errors]} != 0 ]]; then
    log "  $sys: ${R[$name,$sys,errors]} errors, e.g. ${R[$name,$sys,example_error]}"
  fi
  alive_or_die "after $name on $sys"
}


# Workloads, in order. Get runs use keys written once by the preload step, so
# every get hits a key and no run pays for a preload.
NAMES=(put-1 put-128 get-1 get-128 sget-128)
declare -A LABEL=(
  [put-1]="put, 1 client"
  [put-128]="put, 128 clients / 8 conns"
  [get-1]="linearizable get, 1 client"
  [get-128]="linearizable get, 128 clients / 8 conns"
  [sget-128]="serializable get (etcd) / stale get (capkv), 128 / 8"
  [ap-put-128]="ap put at quorum, 128 clients / 8 conns"
  [ap-put-1]="ap put at quorum, 1 client"
  [ap-get-128]="ap get at one, 128 clients / 8 conns"
  [ap-get-1]="ap get at one, 1 client"
)
# capkv only: its ap keyspace ('sessions') against its own cp rows of the
# same run (AP_VS names the cp row each is compared with).
AP_NAMES=(ap-put-128 ap-put-1 ap-get-128 ap-get-1)
declare -A AP_VS=([ap-put-128]=put-128 [ap-put-1]=put-1 [ap-get-128]=get-128 [ap-get-1]=get-1)
run_etcd() {
  local d=$DURATION
  [[ $1 == preload ]] && d=1s
  local ETCD_COMMON=(--endpoints "$ETCD_EPS" --duration "$d" --keys "$KEYS" --value-size "$VALUE_SIZE" --key-format "$ETCD_KEYFMT" --json)
  case $1 in
    put-1)    run "$1" etcd "$LOADGEN_BIN" "${ETCD_COMMON[@]}" --workload put --clients 1 --conns 1 ;;
    put-128)  run "$1" etcd "$LOADGEN_BIN" "${ETCD_COMMON[@]}" --workload put --clients 128 --conns 8 ;;
    get-1)    run "$1" etcd "$LOADGEN_BIN" "${ETCD_COMMON[@]}" --workload get --clients 1 --conns 1 --preload=false ;;
    get-128)  run "$1" etcd "$LOADGEN_BIN" "${ETCD_COMMON[@]}" --workload get --clients 128 --conns 8 --preload=false ;;
    sget-128) run "$1" etcd "$LOADGEN_BIN" "${ETCD_COMMON[@]}" --workload get-serializable --clients 128 --conns 8 --preload=false ;;
    preload)  run "$1" etcd "$LOADGEN_BIN" "${ETCD_COMMON[@]}" --workload get --clients 128 --conns 8 ;;
  esac
}
run_capkv_tls() { run_capkv "$1" capkv_tls; }
run_capkv() { # run_capkv NAME [capkv_tls]
  local d=$DURATION sys=${2:-capkv}
  [[ $1 == preload ]] && d=1s
  local CAPKV_GLOBAL=(--endpoints "$KVD_EPS" --json)
  [[ $1 == ap-preload ]] && d=1s
  [[ $sys == capkv_tls ]] && CAPKV_GLOBAL=(--endpoints "$KVD_TLS_EPS" "${KVCTL_TLS[@]}" --json)
  local CAPKV_COMMON=(--duration "$d" --keys "$KEYS" --value-size "$VALUE_SIZE" --key-format "$CAPKV_KEYFMT")
  local CAPKV_AP=(--duration "$d" --keys "$KEYS" --value-size "$VALUE_SIZE" --key-format "$CAPKV_AP_KEYFMT")
  case $1 in
    put-1)    run "$1" "$sys" "$KVCTL" "${CAPKV_GLOBAL[@]}" bench "${CAPKV_COMMON[@]}" --workload write --clients 1 --conns 1 ;;
    put-128)  run "$1" "$sys" "$KVCTL" "${CAPKV_GLOBAL[@]}" bench "${CAPKV_COMMON[@]}" --workload write --clients 128 --conns 8 ;;
    get-1)    run "$1" "$sys" "$KVCTL" "${CAPKV_GLOBAL[@]}" --consistency linearizable bench "${CAPKV_COMMON[@]}" --workload read --clients 1 --conns 1 --preload=false ;;
    get-128)  run "$1" "$sys" "$KVCTL" "${CAPKV_GLOBAL[@]}" --consistency linearizable bench "${CAPKV_COMMON[@]}" --workload read --clients 128 --conns 8 --preload=false ;;
    sget-128) run "$1" "$sys" "$KVCTL" "${CAPKV_GLOBAL[@]}" --consistency stale bench "${CAPKV_COMMON[@]}" --workload read --clients 128 --conns 8 --preload=false ;;
    preload)  run "$1" "$sys" "$KVCTL" "${CAPKV_GLOBAL[@]}" bench "${CAPKV_COMMON[@]}" --workload read --clients 128 --conns 8 ;;
    ap-put-128) run "$1" "$sys" "$KVCTL" "${CAPKV_GLOBAL[@]}" --consistency quorum bench "${CAPKV_AP[@]}" --workload write --clients 128 --conns 8 ;;
    ap-put-1)   run "$1" "$sys" "$KVCTL" "${CAPKV_GLOBAL[@]}" --consistency quorum bench "${CAPKV_AP[@]}" --workload write --clients 1 --conns 1 ;;
    ap-get-128) run "$1" "$sys" "$KVCTL" "${CAPKV_GLOBAL[@]}" --consistency one bench "${CAPKV_AP[@]}" --workload read --clients 128 --conns 8 --preload=false ;;
    ap-get-1)   run "$1" "$sys" "$KVCTL" "${CAPKV_GLOBAL[@]}" --consistency one bench "${CAPKV_AP[@]}" --workload read --clients 1 --conns 1 --preload=false ;;
    ap-preload) run "$1" "$sys" "$KVCTL" "${CAPKV_GLOBAL[@]}" --consistency quorum bench "${CAPKV_AP[@]}" --workload read --clients 128 --conns 8 ;;
  esac
}

# Alternate which system goes first, workload by workload, so that slow drift
# of the shared machine does not always favour the same side.
step=0
for name in "${NAMES[@]}"; do
  if [[ $name == get-1 ]]; then
    log "preload: writing all $KEYS keys into both systems (128 clients; followed by a 1s get run, not reported)"
    for sys in "${SYSTEMS[@]}"; do
      for attempt in 1 2; do
        before=$FAILED
        FAILED=0
        "run_$sys" preload
        if ((FAILED == 0)); then FAILED=$before; R[preload,$sys,note]="ok"; break; fi
        FAILED=$before
        R[preload,$sys,note]+="attempt $attempt failed: ${R[preload,$sys,stderr]}. "
        unset "R[preload,$sys,failed]"
        log "preload on $sys failed (attempt $attempt)"
      done
      if [[ ${R[preload,$sys,note]} != ok ]]; then
        FAILED=1
        log "preload on $sys failed twice: its get runs below include misses (a miss counts as an answer)"
      fi
    done
  fi
  log "== ${LABEL[$name]}"
  # The first system rotates: with two, etcd first, then capkv first, ...
  for i in "${!SYSTEMS[@]}"; do
    ((i > 0)) && sleep 2
    "run_${SYSTEMS[(step + i) % ${#SYSTEMS[@]}]}" "$name"
  done
  sleep 2
  step=$((step + 1))
done
for name in "${AP_NAMES[@]}"; do
  if [[ $name == ap-get-128 ]]; then
    log "preload: writing all $KEYS keys into capkv's ap keyspace (128 clients; followed by a 1s get run, not reported)"
    before=$FAILED
    FAILED=0
    run_capkv ap-preload
    if ((FAILED == 0)); then R[ap-preload,capkv,note]="ok"; else R[ap-preload,capkv,note]="failed: ${R[ap-preload,capkv,stderr]:-}"; fi
    FAILED=$before
    [[ ${R[ap-preload,capkv,note]} == ok ]] || { FAILED=1; log "ap preload failed: the ap get runs below include misses"; }
  fi
  log "== ${LABEL[$name]} (capkv only)"
  run_capkv "$name"
  sleep 2
done

# ---------------------------------------------------------------- report
fmt_ops() { [[ -n ${1:-} ]] && printf '%.0f' "$1" || printf 'FAILED'; }
cell() { # cell NAME SYS: "ops/s | p50 | p99"
  local n=$1 s=$2
  if [[ -n ${R[$n,$s,failed]:-} ]]; then printf 'FAILED (%s) | – | –' "${R[$n,$s,failed]}"; return; fi
  printf '%s | %s | %s' "$(fmt_ops "${R[$n,$s,ops_per_sec]}")" "${R[$n,$s,p50_ms]}" "${R[$n,$s,p99_ms]}"
}
ratio() { # ratio NAME [A B [FIELD]]: A's FIELD (default ops/s) over B's
  local n=$1 a=${2:-capkv} b=${3:-etcd} f=${4:-ops_per_sec}
  if [[ -n ${R[$n,$a,failed]:-} || -n ${R[$n,$b,failed]:-} ]]; then printf '–'; return; fi
  awk -v a="${R[$n,$a,$f]}" -v b="${R[$n,$b,$f]}" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else printf "–" }'
}

TABLE=$(
  echo "| workload | etcd ops/s | etcd p50 ms | etcd p99 ms | capkv ops/s | capkv p50 ms | capkv p99 ms | capkv/etcd ops/s |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for n in "${NAMES[@]}"; do
    echo "| ${LABEL[$n]} | $(cell "$n" etcd) | $(cell "$n" capkv) | $(ratio "$n") |"
  done
  if ((TLS)); then
    echo
    echo "capkv with mutual TLS (\`kvd dev --tls\`, client certificate) against plaintext, same run:"
    echo
    echo "| workload | capkv ops/s | capkv p50 ms | capkv p99 ms | capkv-TLS ops/s | capkv-TLS p50 ms | capkv-TLS p99 ms | TLS/plain ops/s | TLS/plain p50 |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for n in "${NAMES[@]}"; do
      echo "| ${LABEL[$n]} | $(cell "$n" capkv) | $(cell "$n" capkv_tls) | $(ratio "$n" capkv_tls capkv) | $(ratio "$n" capkv_tls capkv p50_ms) |"
    done
  fi
)
ap_ratio() { # ap_ratio NAME: the ap row's ops/s over its cp row's
  local n=$1 c=${AP_VS[$1]}
  if [[ -n ${R[$n,capkv,failed]:-} || -n ${R[$c,capkv,failed]:-} ]]; then printf '–'; return; fi
  awk -v a="${R[$n,capkv,ops_per_sec]}" -v b="${R[$c,capkv,ops_per_sec]}" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else printf "–" }'
}
AP_TABLE=$(
  echo "| workload | ap ops/s | ap p50 ms | ap p99 ms | ap server CPU µs/op | cp row | cp ops/s | cp server CPU µs/op | ap/cp ops/s |"
  echo "|---|---:|---:|---:|---:|---|---:|---:|---:|"
  for n in "${AP_NAMES[@]}"; do
    c=${AP_VS[$n]}
    echo "| ${LABEL[$n]} | $(cell "$n" capkv) | ${R[$n,capkv,cpu_us_op]:-–} | ${LABEL[$c]} | $(fmt_ops "${R[$c,capkv,ops_per_sec]:-}") | ${R[$c,capkv,cpu_us_op]:-–} | $(ap_ratio "$n") |"
  done
)
DETAILS=$(
  echo "| workload | system | ops | errors | ops/s | p50 ms | p99 ms | p99.9 ms | max ms | server CPU µs/op | load generator CPU % | idle systems CPU % | rest of machine CPU % | example error |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  for n in "${NAMES[@]}"; do
    for s in "${SYSTEMS[@]}"; do
      if [[ -n ${R[$n,$s,failed]:-} ]]; then
        echo "| ${LABEL[$n]} | $s | FAILED (${R[$n,$s,failed]}) | | | | | | | | | | | ${R[$n,$s,stderr]//|/\\|} |"
      else
        echo "| ${LABEL[$n]} | $s | ${R[$n,$s,ops]} | ${R[$n,$s,errors]} | $(fmt_ops "${R[$n,$s,ops_per_sec]}") | ${R[$n,$s,p50_ms]} | ${R[$n,$s,p99_ms]} | ${R[$n,$s,p999_ms]} | ${R[$n,$s,max_ms]} | ${R[$n,$s,cpu_us_op]} | ${R[$n,$s,loadgen_pct]} | ${R[$n,$s,other_pct]} | ${R[$n,$s,rest_pct]} | ${R[$n,$s,example_error]//|/\\|} |"
      fi
    done
  done
  for n in "${AP_NAMES[@]}"; do
    s=capkv
    if [[ -n ${R[$n,$s,failed]:-} ]]; then
      echo "| ${LABEL[$n]} | $s | FAILED (${R[$n,$s,failed]}) | | | | | | | | | | | ${R[$n,$s,stderr]//|/\\|} |"
    else
      echo "| ${LABEL[$n]} | $s | ${R[$n,$s,ops]} | ${R[$n,$s,errors]} | $(fmt_ops "${R[$n,$s,ops_per_sec]}") | ${R[$n,$s,p50_ms]} | ${R[$n,$s,p99_ms]} | ${R[$n,$s,p999_ms]} | ${R[$n,$s,max_ms]} | ${R[$n,$s,cpu_us_op]} | ${R[$n,$s,loadgen_pct]} | ${R[$n,$s,other_pct]} | ${R[$n,$s,rest_pct]} | ${R[$n,$s,example_error]//|/\\|} |"
    fi
  done
)

STAMP=$(date +%Y-%m-%d-%H%M%S)
OUT=$RESULTS_DIR/compare-$STAMP.md
CPU=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
{
  echo "# capkv vs etcd $ETCD_VERSION, $(date '+%Y-%m-%d %H:%M:%S %Z')"
  echo
  echo "Produced by \`bench/compare.sh\` (DURATION=$DURATION, KEYS=$KEYS, VALUE_SIZE=$VALUE_SIZE, TLS=$TLS)."
  ((TLS)) && echo "With TLS=1 a third cluster, capkv-TLS, is \`kvd dev --tls\` (mutual TLS, TLS 1.3 negotiated, ECDSA P-256)."
  echo "Every cluster: 3 members on 127.0.0.1, fsync on, running side by side; the load"
  echo "generator on the same machine. Shared, noisy machine: compare the ratios of this run,"
  echo "not absolute numbers across runs."
  echo
  echo "$TABLE"
  echo
  echo "## capkv ap against capkv cp"
  echo
  echo "The ap keyspace ('sessions', leaderless, 3 replicas) against the cp rows above, same"
  echo "run and cluster: puts at quorum (2 of 3 fsynced), gets at one (the serving replica's"
  echo "copy). An ap put without a session context reads the key first (the Go client's"
  echo "read-modify-write), so most ap puts here are a quorum get and a quorum put."
  echo
  echo "$AP_TABLE"
  echo
  echo "## Details"
  echo
  echo "$DETAILS"
  echo
  echo "Server CPU µs/op: user+system CPU of the loaded system's server processes (all three"
  echo "members) during the run, divided by the ops completed. CPU percentages are of one core"
  echo "($(nproc) cores in all) over the run: the load generator, the other (idle) clusters, and"
  echo "everything else on the machine: other tenants, steal, and kernel work not charged to"
  echo "any process (softirq for loopback networking, kworker/jbd2 threads flushing the"
  echo "fsyncs of the loaded system). A high last column can thus mean a disturbed run or an"
  echo "I/O-heavy workload; compare it with the same workload's other row."
  echo
  echo "Preload (all $KEYS keys written once with 128 clients before the get runs):"
  echo "etcd: ${R[preload,etcd,note]:-not run}; capkv: ${R[preload,capkv,note]:-not run}$( ((TLS)) && echo "; capkv-TLS: ${R[preload,capkv_tls,note]:-not run}"); capkv ap keyspace: ${R[ap-preload,capkv,note]:-not run}."
  echo
  echo "## Machine"
  echo
  echo "- nproc: $(nproc)"
  echo "- uname -r: $(uname -r)"
  [[ -n $CPU ]] && echo "- cpu: $CPU"
  echo "- $(go version)"
  echo "- etcd: $("$ETCD_BIN" --version | head -1) (built from go.etcd.io/etcd/server/v3@$ETCD_VERSION)"
  echo "- capkv (bin/kvd, bin/kvctl from make build at the start): $BUILT"
  echo "- load average at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- $BG_LINE"
  echo
  echo "## etcd members at the start"
  echo
  echo "Each etcd connection is pinned to one endpoint (connection i to endpoint i mod 3, as"
  echo "in etcd's tools/benchmark), so the 1-client runs talk to the first member listed."
  echo
  echo '```'
  echo "$ETCD_STATUS"
  echo '```'
  echo
  echo "## Commands"
  echo
  echo "Servers (\$WORK is a temporary directory, removed afterwards):"
  echo
  echo '```'
  for c in "${ETCD_CMDS[@]}"; do echo "$c" | sed "s|$WORK|\$WORK|g"; done
  echo "$(show "${KVD_CMD[@]}" | sed "s|$WORK|\$WORK|g")"
  ((TLS)) && echo "$(show "${KVD_TLS_CMD[@]}" | sed "s|$WORK|\$WORK|g")"
  echo '```'
  echo
  echo "Load, in the order run (bench/.cache/etcd-loadgen is bench/etcd/loadgen):"
  echo
  echo '```'
  for c in "${COMMANDS[@]}"; do echo "$c" | sed "s|$WORK|\$WORK|g"; done
  echo '```'
  if (( FAILED )); then
    echo
    echo "## Server log tails (some runs failed)"
    echo
    echo "kvd.log (\`--log-level warn\`), last 40 lines:"
    echo
    echo '```'
    tail -n 40 "$WORK/kvd.log" | sed "s|$WORK|\$WORK|g"
    echo '```'
    if ((TLS)); then
      echo
      echo "kvd-tls.log, last 40 lines:"
      echo
      echo '```'
      tail -n 40 "$WORK/kvd-tls.log" | sed "s|$WORK|\$WORK|g"
      echo '```'
    fi
  fi
} >"$OUT"

echo
echo "$TABLE"
echo
log "results written to ${OUT#"$REPO"/}"
if (( FAILED )); then
  log "some runs FAILED; see the table"
  exit 1
fi
