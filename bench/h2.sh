#!/usr/bin/env bash
# HTTP/2 beside nginx (`listen ... ssl http2`), in one run: h2load requests per second over TLS with
# many concurrent streams per connection (default 4 connections x 100 streams), both
# proxies in front of the same tiny nginx backend over pooled HTTP/1.1, each proxy with
# 1 worker pinned to CPU 0 and the load on CPU 1 (as bench/run.sh and bench/tls.sh
# pin). Interleaved rounds; the ratio is printed as ferryman/nginx.
#
#   bench/h2.sh            (make bench-h2)
#
# Knobs (env): DURATION=10 ROUNDS=1 CONNS=4 STREAMS=100 PYTHON (default .venv) OUT
# (results dir) FERRYMAN_PURE=1 (the pure-Python sources). Loopback only; every run is
# time-bounded.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-1}
CONNS=${CONNS:-4}
STREAMS=${STREAMS:-100}
OUT=${OUT:-/tmp/ferryman-bench-h2.$(date +%Y%m%d-%H%M%S)}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
BACKEND_PORT=${BACKEND_PORT:-9211}
FERRYMAN_PORT=${FERRYMAN_PORT:-8471}
NGINX_PORT=${NGINX_PORT:-8472}

BENCH=bench/h2.sh
# shellcheck source=bench/tls_common.sh
source "$HERE/tls_common.sh"
require_tools h2load nginx taskset
write_backend_conf "ferryman-h2-bench-backend-01234567"
cat >"$OUT/nginx.conf" <<CONF
worker_processes 1;
pid $OUT/nginx.pid;
error_log $OUT/logs/nginx.error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 10000000;
$(temp_paths p)
    # NGINX_POOL (1024): 400 streams in flight need as many upstream connections, and
    # nginx closes those over its `keepalive` (bench/nginx_conf.sh).
    upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive $NGINX_POOL; }
    server {
        # "listen ... http2": understood by every nginx with HTTP/2 ("http2 on" needs
        # 1.25.1+; Debian 12 has 1.22).
        listen 127.0.0.1:$NGINX_PORT ssl http2;
        keepalive_requests 10000000;
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
  backend: {servers: ["127.0.0.1:$BACKEND_PORT"], keepalive: 128, keepalive_requests: 1000000}
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

# h2load for DURATION seconds; prints "req_per_s errored" (errored: failed + errored).
h2_rps() {
    taskset -c 1 timeout $((DURATION + 30)) h2load -D "$DURATION" -c "$CONNS" -m "$STREAMS" \
        "https://127.0.0.1:$1/" 2>/dev/null | awk '
        /^finished in/ { for (i = 1; i <= NF; i++) if ($i == "req/s,") { r = $(i - 1) } }
        /^requests:/ { for (i = 1; i <= NF; i++) {
            if ($i == "failed,") { f = $(i - 1) }
            if ($i == "errored,") { e = $(i - 1) } } }
        END { printf "%.0f %d\n", r, f + e }'
}

printf 'round\ttarget\th2_rps\terrors\n' | tee "$OUT/results.tsv"
for round in $(seq "$ROUNDS"); do
    for target in nginx ferryman; do  # interleaved, so drift hits both alike
        port=$NGINX_PORT; [ "$target" = ferryman ] && port=$FERRYMAN_PORT
        echo "bench/h2.sh: round $round/$ROUNDS: $target (2 s warm-up + ${DURATION} s)" >&2
        DURATION=2 h2_rps "$port" >/dev/null  # warm-up (and the upstream pool)
        read -r rps errs < <(h2_rps "$port")
        printf '%s\t%s\t%s\t%s\n' "$round" "$target" "${rps:-0}" "${errs:-0}" | tee -a "$OUT/results.tsv"
    done
done
awk -F'\t' 'NR > 1 { rps[$2] += $3 }
    END {
        if (rps["nginx"] > 0) printf "ferryman/nginx HTTP/2 req/s ratio: %.3f\n", rps["ferryman"] / rps["nginx"]
    }' "$OUT/results.tsv" | tee "$OUT/ratios.txt"
