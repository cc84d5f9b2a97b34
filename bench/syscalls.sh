#!/usr/bin/env bash
# System calls per proxied request, for Ferryman, Ferryman as deployed (access log +
# metrics), nginx, HAProxy and the bare relay, each with 1 worker pinned to CPU 0, in
# front of the same one-location nginx backend on NBACKENDS (6) ports, as the shared
# harness has, under the c50 load (wrk, 50 keep-alive connections, small response) on
# CPU 1. Beside them, from the same wrk run: TCP segments sent per request (nstat
# TcpOutSegs, the whole machine: client, proxy and backend legs; 4 is one data segment
# per leg and no bare ACKs), TCP connections opened per request (nstat TcpActiveOpens:
# wrk's are open before the count starts, so these are the proxy's upstream connects;
# 0 when its pool keeps every connection) and the proxy's CPU per request, user and
# system microseconds (its processes' /proc/PID/stat ticks; perf's counting adds a
# little). `nginx` keeps up to 1,024 idle upstream connections (bench/targets.sh,
# nginx-pool); `nginx-k32` is the shared harness's `keepalive 32`, which runs out at
# 50 clients: its connects and closes are then part of its requests' system calls.
#
#   bench/syscalls.sh          (make bench-syscalls)
#
# How: `perf stat -e raw_syscalls:sys_enter` on every process of the proxy (master,
# workers, admin: the whole proxy pays for a request) while wrk runs DURATION seconds;
# syscalls / requests completed is the figure. perf counts in the kernel without
# stopping the process, so the batching the proxy does under load (many events per
# epoll_wait, several responses per write) is what it is without the counter. Without
# perf (or PERF=0) `strace -c -f` is used instead; ptrace slows every system call by
# microseconds, which changes the batching, so that figure is an upper bound. STRACE=1
# also prints strace's breakdown per system call (a second run per target).
#
# Knobs (env): DURATION=5 CONNS=50 PYTHON (default .venv) OUT PERF=1 STRACE=0
# TARGETS="ferryman ferryman-full nginx nginx-k32 haproxy relay". Loopback only; every run
# time-bounded.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
DURATION=${DURATION:-5}
CONNS=${CONNS:-50}
OUT=${OUT:-/tmp/ferryman-bench-syscalls.$(date +%Y%m%d-%H%M%S)}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
RELAY="${RELAY:-$ROOT/../shared/reference/relay_sketch.py}"
TARGETS=${TARGETS:-"ferryman ferryman-full nginx nginx-k32 haproxy relay"}
BACKEND_PORT=${BACKEND_PORT:-9231}
PORT_BASE=${PORT_BASE:-8491}
# Six backend ports, as the shared harness has: with one, 50 clients outgrow the
# 32 idle upstream connections kept per peer and every few requests pay a connect.
export NBACKENDS=${NBACKENDS:-6}
BENCH=bench/syscalls.sh
export WORK="$OUT"   # bench/targets.sh writes its configuration under $WORK

# shellcheck source=bench/tls_common.sh
source "$HERE/tls_common.sh"   # process groups, wait_port, temp_paths, the backend conf
require_tools wrk nginx haproxy taskset pgrep nstat
use_perf=0
if [ "${PERF:-1}" = 1 ] && command -v perf >/dev/null \
    && perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1; then
    use_perf=1
else
    require_tools strace
fi

write_backend_conf "ferryman-syscalls-bench-backend-01"
start_group backend taskset -c 1 nginx -p "$OUT" -c "$OUT/backend.conf" -g 'daemon off;'
wait_port "$BACKEND_PORT"
backends=$(backend_list)

nginx_conf() {  # nginx_conf PORT KEEPALIVE: the harness's proxy settings, 1 worker
    cat >"$OUT/nginx.conf" <<CONF
worker_processes 1;
pid $OUT/nginx.pid;
error_log $OUT/logs/nginx.error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 10000000;
$(temp_paths p)
    upstream backend {
$(for b in ${backends//,/ }; do echo "        server $b;"; done)
        keepalive $2; keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$1;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
}

HAPROXY_TEMPLATE="${HAPROXY_TEMPLATE:-$ROOT/../shared/bench/conf/haproxy.cfg}"
haproxy_conf() {  # haproxy_conf PORT: the shared harness's own template, one thread
    local servers="" i=0
    for b in ${backends//,/ }; do i=$((i + 1)); servers+="    server s$i $b"$'\n'; done
    local template; template=$(<"$HAPROXY_TEMPLATE")
    template=${template//@WORKERS@/1}
    template=${template//@MAXCONN@/$(( $(ulimit -n) / 2 - 100 ))}
    template=${template//@PORT@/$1}
    template=${template//@HAPROXY_LB@/roundrobin}
    printf '%s\n' "${template//@HAPROXY_SERVERS@/$servers}" >"$OUT/haproxy.cfg"
}

start_target() {  # start_target NAME PORT -> the process group id in $PGID
    local name=$1 port=$2
    case "$name" in
    ferryman | ferryman-full)
        start_group "$name" taskset -c 0 bash "$HERE/targets.sh" "$name" "$port" "$backends" 1 ;;
    nginx | nginx-k32)
        nginx_conf "$port" "$([ "$name" = nginx ] && echo "$NGINX_POOL" || echo 32)"
        start_group "$name" taskset -c 0 nginx -p "$OUT" -c "$OUT/nginx.conf" -g 'daemon off;' ;;
    haproxy)
        haproxy_conf "$port"
        start_group "$name" taskset -c 0 haproxy -db -f "$OUT/haproxy.cfg" ;;
    relay)
        start_group "$name" taskset -c 0 "$PYTHON" "$RELAY" --port "$port" --backends "$backends" --workers 1 ;;
    *) echo "$BENCH: unknown target $name" >&2; exit 2 ;;
    esac
    PGID=${PGIDS[-1]}
    wait_port "$port"
    sleep 0.5   # workers forked and listening
}

load() {  # load PORT SECONDS -> requests completed
    taskset -c 1 timeout $(( $2 + 10 )) wrk -t1 -c"$CONNS" -d"$2s" "http://127.0.0.1:$1/" 2>/dev/null \
        | awk '/requests in/ { print $1 }'
}

ticks() {  # ticks PID... -> "user system" clock ticks summed over the processes
    for p in "$@"; do awk '{ print $14, $15 }' "/proc/$p/stat" 2>/dev/null || true; done \
        | awk '{ u += $1; s += $2 } END { print u + 0, s + 0 }'
}

count_perf() {  # count_perf PGID PORT -> "syscalls requests segments opens user_ticks sys_ticks"
    local pids; pids=$(pgrep -g "$1" | paste -sd, -)
    perf stat -x, -e raw_syscalls:sys_enter -p "$pids" -o "$OUT/perf.$1.txt" &
    local perf_pid=$!
    sleep 0.2
    local u0 s0 u1 s1 counters segments opens
    read -r u0 s0 < <(ticks ${pids//,/ })
    nstat -n >/dev/null 2>&1 || true   # the counters' history starts now
    local requests; requests=$(load "$2" "$DURATION")
    counters=$(nstat TcpOutSegs TcpActiveOpens 2>/dev/null || true)
    segments=$(awk '$1 == "TcpOutSegs" { print $2 }' <<<"$counters")
    opens=$(awk '$1 == "TcpActiveOpens" { print $2 }' <<<"$counters")
    read -r u1 s1 < <(ticks ${pids//,/ })
    kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
    local calls; calls=$(awk -F, '/raw_syscalls:sys_enter/ { print $1 }' "$OUT/perf.$1.txt")
    echo "${calls:-0} ${requests:-0} ${segments:-0} ${opens:-0} $((u1 - u0)) $((s1 - s0))"
}

count_strace() {  # count_strace PGID PORT NAME -> "syscalls requests" (+ the breakdown file)
    local args=()
    for p in $(pgrep -g "$1"); do args+=(-p "$p"); done
    strace -c -f -o "$OUT/strace.$3.txt" "${args[@]}" 2>/dev/null &
    local strace_pid=$!
    sleep 0.5
    local requests; requests=$(load "$2" "$DURATION")
    kill -INT "$strace_pid"; wait "$strace_pid" 2>/dev/null || true
    local calls; calls=$(awk '$NF == "total" { print ($4 ~ /^[0-9]+$/ ? $4 : $3) }' "$OUT/strace.$3.txt")
    echo "${calls:-0} ${requests:-0}"
}

method=$([ "$use_perf" = 1 ] && echo "perf stat raw_syscalls:sys_enter" || echo "strace -c -f")
hz=$(getconf CLK_TCK)
per() {  # per AMOUNT REQUESTS [SCALE] -> AMOUNT * SCALE / REQUESTS, 2 decimals, or n/a
    awk -v a="$1" -v r="$2" -v k="${3:-1}" 'BEGIN { printf (r > 0 ? "%.2f" : "n/a"), a * k / r }'
}
printf 'target\tmethod\tsyscalls\trequests\tsyscalls_per_request\tsegments_per_request\tconnects_per_request\tuser_us_per_request\tsys_us_per_request\n' \
    | tee "$OUT/results.tsv"
port=$PORT_BASE
for name in $TARGETS; do
    if [ "$name" = relay ] && [ ! -f "$RELAY" ]; then
        echo "$BENCH: no relay at $RELAY; skipped" >&2; continue
    fi
    start_target "$name" "$port"
    load "$port" 2 >/dev/null   # warm-up: the upstream pool filled, pages faulted in
    segments="" opens="" user="" sys=""
    if [ "$use_perf" = 1 ]; then read -r calls requests segments opens user sys < <(count_perf "$PGID" "$port")
    else read -r calls requests < <(count_strace "$PGID" "$port" "$name"); fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$method" "$calls" "$requests" \
        "$(per "$calls" "$requests")" \
        "$([ -n "$segments" ] && per "$segments" "$requests" || echo n/a)" \
        "$([ -n "$opens" ] && per "$opens" "$requests" || echo n/a)" \
        "$([ -n "$user" ] && per "$user" "$requests" "$((1000000 / hz))" || echo n/a)" \
        "$([ -n "$sys" ] && per "$sys" "$requests" "$((1000000 / hz))" || echo n/a)" \
        | tee -a "$OUT/results.tsv"
    if [ "${STRACE:-0}" = 1 ] && [ "$use_perf" = 1 ] && command -v strace >/dev/null; then
        read -r calls requests < <(count_strace "$PGID" "$port" "$name")
        echo "# $name under strace: $calls calls / $requests requests; per request:"
        awk -v r="$requests" 'NR > 2 && $NF != "total" && $NF ~ /^[a-z_0-9]+$/ && r > 0 {
            n = ($4 ~ /^[0-9]+$/ ? $4 : $3); printf "#   %-16s %.2f\n", $NF, n / r }' \
            "$OUT/strace.$name.txt" | sort -k3 -nr | head -8
    fi
    kill -TERM -- "-$PGID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 -- "-$PGID" 2>/dev/null || break; sleep 0.1; done
    port=$((port + 1))
done
echo "$BENCH: $OUT/results.tsv"
