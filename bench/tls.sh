#!/usr/bin/env bash
# TLS beside nginx, in one run: new full handshakes per second (`openssl s_time -new`)
# and HTTPS keep-alive requests per second (wrk, 50 connections), both proxies in front
# of the same tiny nginx backend, each proxy with 1 worker pinned to CPU 0 and the load
# on CPU 1 (as bench/run.sh pins). The shared harness speaks plain HTTP only, hence
# this script; ratios are printed as ferryman/nginx.
#
#   bench/tls.sh            (make bench-tls)
#
# Knobs (env): DURATION=10 ROUNDS=1 CONNS=50 PYTHON (default .venv) OUT (results dir)
# FERRYMAN_PURE=1 (the pure-Python sources). Loopback only; every run time-bounded.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-1}
CONNS=${CONNS:-50}
OUT=${OUT:-/tmp/ferryman-bench-tls.$(date +%Y%m%d-%H%M%S)}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
BACKEND_PORT=${BACKEND_PORT:-9201}
FERRYMAN_PORT=${FERRYMAN_PORT:-8461}
NGINX_PORT=${NGINX_PORT:-8462}

BENCH=bench/tls.sh
# shellcheck source=bench/tls_common.sh
source "$HERE/tls_common.sh"
require_tools wrk nginx openssl taskset
write_backend_conf "ferryman-tls-bench-backend-0123456"
cat >"$OUT/nginx.conf" <<CONF
worker_processes 1;
pid $OUT/nginx.pid;
error_log $OUT/logs/nginx.error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 10000000;
$(temp_paths p)
    # NGINX_POOL (1024), not 32: with 32, nginx closes and reopens upstream connections
    # under 50 clients (bench/nginx_conf.sh); Ferryman's pool does not.
    upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive $NGINX_POOL; }
    server {
        listen 127.0.0.1:$NGINX_PORT ssl;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
cat >"$OUT/ferryman.yaml" <<CONF
workers: 1
access_log: {path: null}
keepalive_requests: 1000000  # the schema's maximum (nginx beside it: 10000000)
upstreams:
  backend: {servers: ["127.0.0.1:$BACKEND_PORT"], keepalive_requests: 1000000}
servers:
  - listen:
      - address: "127.0.0.1:$FERRYMAN_PORT"
        tls: {certificates: [{cert: $CERT, key: $KEY}]}
    routes:
      - {path: /, upstream: backend, forwarded_headers: false}
CONF

start_group backend taskset -c 1 nginx -p "$OUT" -c "$OUT/backend.conf" -g 'daemon off;'
start_group nginx taskset -c 0 nginx -p "$OUT" -c "$OUT/nginx.conf" -g 'daemon off;'
start_group ferryman taskset -c 0 bash -c "cd '$ROOT/src' && exec '$PYTHON' -m ferryman run -c '$OUT/ferryman.yaml'"
for p in "$BACKEND_PORT" "$NGINX_PORT" "$FERRYMAN_PORT"; do wait_port "$p"; done

handshakes() {  # full handshakes per second (no resumption), one client process
    taskset -c 1 timeout $((DURATION + 20)) openssl s_time -connect "127.0.0.1:$1" -new \
        -time "$DURATION" 2>/dev/null | awk '/connections in .* real seconds/ {
            for (i = 1; i <= NF; i++) if ($i == "connections") { n = $(i - 1) }
            for (i = 1; i <= NF; i++) if ($i == "real") { t = $(i - 1) }
            if (t > 0) printf "%.0f\n", n / t }' | head -1
}
keepalive_rps() {
    taskset -c 1 timeout $((DURATION + 20)) wrk -t1 -c"$CONNS" -d"${DURATION}s" \
        "https://127.0.0.1:$1/" 2>/dev/null | awk '/^Requests\/sec/ {printf "%.0f\n", $2}'
}

printf 'round\ttarget\thandshakes_per_s\thttps_keepalive_rps\n' | tee "$OUT/results.tsv"
for round in $(seq "$ROUNDS"); do
    for target in nginx ferryman; do  # interleaved, so drift hits both alike
        port=$NGINX_PORT; [ "$target" = ferryman ] && port=$FERRYMAN_PORT
        echo "bench/tls.sh: round $round/$ROUNDS: $target (warm-up, handshakes, keep-alive)" >&2
        keepalive_rps "$port" >/dev/null  # warm-up (and the upstream pool)
        hs=$(handshakes "$port"); rps=$(keepalive_rps "$port")
        printf '%s\t%s\t%s\t%s\n' "$round" "$target" "${hs:-0}" "${rps:-0}" | tee -a "$OUT/results.tsv"
    done
done
awk -F'\t' 'NR > 1 { hs[$2] += $3; rps[$2] += $4 }
    END {
        if (hs["nginx"] > 0) printf "ferryman/nginx TLS handshakes/s ratio: %.3f\n", hs["ferryman"] / hs["nginx"]
        if (rps["nginx"] > 0) printf "ferryman/nginx HTTPS keep-alive req/s ratio: %.3f\n", rps["ferryman"] / rps["nginx"]
    }' "$OUT/results.tsv" | tee "$OUT/ratios.txt"
