# lib.sh: shell helpers shared by the bench scripts (sourced, not run).

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

stop_pid() { # stop_pid PID NAME: TERM (forwarded by timeout), then KILL after 15s
  local pid=$1 name=$2 i child
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.5
  done
  log "cleanup: $name (pid $pid) still running after 15s, killing"
  for child in $(pgrep -P "$pid" 2>/dev/null || true); do kill -KILL "$child" 2>/dev/null || true; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
