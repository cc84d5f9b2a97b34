#!/usr/bin/env bash
# Forward proxy beside tinyproxy and Squid, in one interleaved run:
#
#   plain HTTP   requests/s through the proxy, wrk with 50 keep-alive connections sending
#                absolute-form requests (bench/forward/absolute.lua: wrk only speaks
#                origin-form, so the script puts `http://127.0.0.1:BACKEND/` in the request
#                line; ab -X would also do it, but ab is HTTP/1.0, one thread, and weaker
#                than the proxies it measures)
#   tunnel       CONNECT throughput in MB/s (10^6 bytes): curl --proxytunnel fetches a
#                SIZE_MB file from the backend through a CONNECT tunnel, REPS times; no
#                TLS inside, so the figure is the proxy's byte pump, not a cipher
#
# All proxies face the same tiny nginx backend, 1 worker each (Squid: no SMP, caching
# off: `cache deny all`), the proxy pinned to CPU 0 and load + backend to CPU 1, as
# bench/tls.sh pins; access logs off everywhere; every proxy adds Via (Ferryman's
# default `transparent` level also adds X-Forwarded-For, as Squid's forwarded_for on).
# tinyproxy closes the client connection after each response (it answers HTTP/1.0), so
# its req/s includes a TCP connect per request: that is how clients meet it too.
# Ratios are printed as ferryman/tinyproxy and ferryman/squid; a ratio above 1 means
# Ferryman is faster.
#
#   bench/forward.sh          (make bench-forward)    QUICK=1 bench/forward.sh: a smoke run
#
# Knobs (env): DURATION=10 ROUNDS=3 CONNS=50 SIZE_MB=512 REPS=3 TARGETS="tinyproxy squid
# ferryman" PYTHON (default .venv) OUT (results dir) FERRYMAN_PURE=1 (the pure-Python
# sources). A target that does not start (or answers wrongly) is left out with a
# message. Loopback only; every run time-bounded.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
if [ "${QUICK:-0}" = 1 ]; then
    DURATION=${DURATION:-3} ROUNDS=${ROUNDS:-1} SIZE_MB=${SIZE_MB:-128} REPS=${REPS:-2}
fi
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-50}
SIZE_MB=${SIZE_MB:-512}
REPS=${REPS:-3}
TARGETS=${TARGETS:-"tinyproxy squid ferryman"}
OUT=${OUT:-/tmp/ferryman-bench-forward.$(date +%Y%m%d-%H%M%S)}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
BACKEND_PORT=${BACKEND_PORT:-9211}
FERRYMAN_PORT=${FERRYMAN_PORT:-8471}
TINYPROXY_PORT=${TINYPROXY_PORT:-8472}
SQUID_PORT=${SQUID_PORT:-8473}
BODY="ferryman-forward-bench-backend-0123"

BENCH=bench/forward.sh
# shellcheck source=bench/tls_common.sh
source "$HERE/tls_common.sh"
require_tools wrk nginx curl taskset tinyproxy
export PATH="$PATH:/usr/sbin:/sbin"  # squid lives in sbin

# ---- the backend: a short answer at /, a SIZE_MB file at /big.bin (sendfile)
mkdir -p "$OUT/www"
truncate -s "$((SIZE_MB * 1024 * 1024))" "$OUT/www/big.bin"
cat >"$OUT/backend.conf" <<CONF
worker_processes 1;
pid $OUT/backend.pid;
error_log $OUT/logs/backend.error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 10000000;
    sendfile on;
$(temp_paths b)
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        location = / { return 200 "$BODY\n"; }
        location = /big.bin { root $OUT/www; }
    }
}
CONF
start_group backend taskset -c 1 nginx -p "$OUT" -c "$OUT/backend.conf" -g 'daemon off;'
wait_port "$BACKEND_PORT"

# ---- the proxies
port_of() {
    case "$1" in
        ferryman) echo "$FERRYMAN_PORT" ;; tinyproxy) echo "$TINYPROXY_PORT" ;; squid) echo "$SQUID_PORT" ;;
    esac
}

start_ferryman() {
    start_group ferryman taskset -c 0 bash -c "cd '$ROOT/src' && exec '$PYTHON' -m ferryman forward \
        --listen 127.0.0.1:$FERRYMAN_PORT --allow-private --connect-ports $BACKEND_PORT \
        --access-log off --workers 1"
}

start_tinyproxy() {
    mkdir -p "$OUT/tinyproxy"
    chmod 777 "$OUT/tinyproxy"
    cat >"$OUT/tinyproxy/tinyproxy.conf" <<CONF
User nobody
Group nogroup
Port $TINYPROXY_PORT
Listen 127.0.0.1
Timeout 60
MaxClients 1024
Allow 127.0.0.1
ConnectPort $BACKEND_PORT
LogLevel Critical
PidFile "$OUT/tinyproxy/tinyproxy.pid"
CONF
    start_group tinyproxy taskset -c 0 tinyproxy -d -c "$OUT/tinyproxy/tinyproxy.conf"
}

start_squid() {
    command -v squid >/dev/null || { echo "$BENCH: squid not installed: left out" >&2; return 1; }
    mkdir -p "$OUT/squid"
    chmod 777 "$OUT/squid"
    cat >"$OUT/squid/squid.conf" <<CONF
http_port 127.0.0.1:$SQUID_PORT
workers 1
pid_filename $OUT/squid/squid.pid
cache_log $OUT/squid/cache.log
coredump_dir $OUT/squid
access_log none
cache deny all
cache_mem 8 MB
max_filedescriptors 65536
visible_hostname ferryman-bench
shutdown_lifetime 0 seconds
via on
forwarded_for on
acl local src 127.0.0.0/8
acl tunnel_ports port $BACKEND_PORT
acl CONNECT method CONNECT
http_access deny CONNECT !tunnel_ports
http_access allow local
http_access deny all
CONF
    start_group squid taskset -c 0 squid -N -f "$OUT/squid/squid.conf"
}

# A target takes part only if it starts within 10 s and proxies both ways correctly.
ready() {
    local port=$1
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}
check_target() {
    local name=$1 port body size
    port=$(port_of "$name")
    ready "$port" || { echo "$BENCH: $name did not start (see $OUT/logs/$name.log): left out" >&2; return 1; }
    body=$(curl -s -m 5 -x "http://127.0.0.1:$port" "http://127.0.0.1:$BACKEND_PORT/" || true)
    if [ "$body" != "$BODY" ]; then
        echo "$BENCH: $name answered ${body:0:80}: left out" >&2; return 1
    fi
    size=$(curl -s -m 30 -p -x "http://127.0.0.1:$port" "http://127.0.0.1:$BACKEND_PORT/big.bin" \
        -o /dev/null -w '%{size_download}' || true)
    if [ "$size" != "$((SIZE_MB * 1024 * 1024))" ]; then
        echo "$BENCH: $name's CONNECT tunnel gave ${size:-nothing} bytes: left out" >&2; return 1
    fi
}

active=()
for name in $TARGETS; do
    if "start_$name" && check_target "$name"; then active+=("$name"); fi
done
[ ${#active[@]} -gt 0 ] || { echo "$BENCH: no target started" >&2; exit 1; }

# ---- the measurements
http_run() {  # wrk through the proxy at $1 (absolute-form); its report goes to $2
    TARGET="http://127.0.0.1:$BACKEND_PORT/" taskset -c 1 timeout $((DURATION + 20)) \
        wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$HERE/forward/absolute.lua" \
        "http://127.0.0.1:$1/" >"$2" 2>&1 || true
}
wrk_field() {  # wrk_field REPORT rps|non2xx|errors|closes
    awk -v want="$2" '
        /^Requests\/sec/ { rps = $2 }
        /Non-2xx/ { non2xx = $NF }
        /Socket errors/ { gsub(",", ""); errors = $4 + $8 + $10; closes = $6 }
        END {
            if (want == "rps") printf "%.0f\n", rps
            else if (want == "non2xx") print non2xx + 0
            else if (want == "errors") print errors + 0
            else print closes + 0
        }' "$1"
}
tunnel_mbps() {  # CONNECT tunnel MB/s: REPS downloads of SIZE_MB, bytes over seconds
    local port=$1 bytes=0 secs=0 out
    for _ in $(seq "$REPS"); do
        out=$(taskset -c 1 curl -s -m 120 -p -x "http://127.0.0.1:$port" \
            "http://127.0.0.1:$BACKEND_PORT/big.bin" -o /dev/null -w '%{size_download} %{time_total}')
        bytes=$(awk -v a="$bytes" -v b="${out% *}" 'BEGIN {print a + b}')
        secs=$(awk -v a="$secs" -v b="${out#* }" 'BEGIN {print a + b}')
    done
    awk -v b="$bytes" -v s="$secs" 'BEGIN { if (s > 0) printf "%.0f\n", b / s / 1e6; else print 0 }'
}

# non2xx: answers other than 2xx/3xx; sock_errors: connect/write/timeout errors;
# closes: reads that found the connection closed (tinyproxy closes after every answer).
printf 'round\ttarget\thttp_rps\tnon2xx\tsock_errors\tcloses\ttunnel_MBps\n' | tee "$OUT/results.tsv"
for round in $(seq "$ROUNDS"); do
    for name in "${active[@]}"; do  # interleaved, so drift hits all alike
        port=$(port_of "$name")
        echo "$BENCH: round $round/$ROUNDS: $name (HTTP, then the CONNECT tunnel)" >&2
        report="$OUT/logs/wrk-$name-$round.txt"
        DURATION=1 http_run "$port" "$report.warmup"  # warm-up (and the upstream pools)
        http_run "$port" "$report"
        mbps=$(tunnel_mbps "$port")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$(wrk_field "$report" rps)" \
            "$(wrk_field "$report" non2xx)" "$(wrk_field "$report" errors)" \
            "$(wrk_field "$report" closes)" "${mbps:-0}" | tee -a "$OUT/results.tsv"
    done
done
awk -F'\t' 'NR > 1 { rps[$2] += $3; mb[$2] += $7; seen[$2] = 1 }
    END {
        for (t in seen) if (t != "ferryman" && ("ferryman" in seen)) {
            if (rps[t] > 0) printf "ferryman/%s plain-HTTP req/s ratio: %.3f\n", t, rps["ferryman"] / rps[t]
            if (mb[t] > 0) printf "ferryman/%s CONNECT tunnel MB/s ratio: %.3f\n", t, mb["ferryman"] / mb[t]
        }
    }' "$OUT/results.tsv" | sort | tee "$OUT/ratios.txt"
echo "$BENCH: results in $OUT"
