#!/usr/bin/env bash
# One proxy for the shared harness that needs more than a command line: writes its
# configuration under $WORK (the harness's run directory), then execs it in the
# foreground (so it stays in the harness's process group).
#
#   bench/targets.sh KIND PORT BACKENDS WORKERS
#
# KIND:
#   ferryman       Ferryman lean, from the command line: no access log, no admin;
#                  --no-forwarded-headers (the harness's nginx adds no X-Forwarded-*, so
#                  both send the backend the same request), --keepalive-requests and
#                  --worker-connections as the harness's nginx (at 1,000 clients the
#                  default 1,024 refused some connections). The one definition of the
#                  lean row for bench/all.sh, profile.sh, syscalls.sh, instructions.sh.
#   ferryman-full  Ferryman as deployed: access log to a file (combined format, its
#                  buffered sink), the admin listener on (metrics counted per request and
#                  published once a second; GET /metrics there), forwarded headers off as
#                  in every other Ferryman row (the harness's nginx adds none).
#   nginx-pool     the harness's nginx (nginx-w1: HTTP/1.1 upstream, access log off) with
#                  `keepalive $NGINX_KEEPALIVE` (1024) instead of the harness's 32. nginx's
#                  `keepalive N` is the idle connections one worker keeps for the whole
#                  upstream, and a connection back from a response is closed when N are
#                  already idle: with 32 at 50 clients, nginx-w1 opens a new upstream
#                  connection for about 15% of its requests (TcpActiveOpens), and at 1,000
#                  for about 38%. Ferryman's pool (32 idle per peer, and the surplus kept
#                  for keepalive_surplus_timeout) opens none at either. 1,024 never runs out
#                  at these loads: like for like. Beside ferryman (lean).
#   nginx-log      nginx-pool with its access log on, to a file, combined format,
#                  `buffer=64k flush=1s` (Ferryman's sink is buffered too: like for like).
#                  Beside ferryman-full.
#   ferryman-limits, nginx-limits
#                  ferryman-full and nginx-log with what a route facing the internet has
#                  besides: limit_req (per client address, burst, nodelay), limit_conn
#                  and an allow/deny list, set so that none ever refuses (the load comes
#                  from one address): what the checks cost, not what a refusal costs.
#   ferryman-queue ferryman-full with each backend capped at QUEUE_MAX_CONNS (default 8)
#                  connections and the requests over that waiting in the upstream's queue
#                  (max_conns + queue, nginx Plus's `queue`, HAProxy's server maxconn):
#                  a tuning for many clients in front of fast backends (docs/benchmarks.md,
#                  "the queue at 1,000 clients"). nginx open source has no queue.
#   proxypy        abhinavsingh/proxy.py (PROXYPY_VERSION, in its own venv $PROXYPY_VENV,
#                  made by bench/all.sh before the harness starts) as a reverse proxy to
#                  the same backends (bench/proxypy/bench_reverse.py), in its --threaded
#                  mode (PROXYPY_FLAGS): the default threadless mode of 2.4.10 dies under
#                  50 connections (selector.modify on a closed fd in threadless.py) and
#                  then answers nothing.
# Environment: PYTHON (Ferryman's interpreter), FERRYMAN_EXTRA (more `ferryman run`
# flags, e.g. --no-uvloop), ADMIN_PORT_BASE (default 9950: admin port = base + PORT %
# 100), PROXYPY_VENV, NGINX_KEEPALIVE (default 1024; 32 gives the harness's churn).
set -euo pipefail
# shellcheck source=bench/nginx_conf.sh
source "$(dirname "${BASH_SOURCE[0]}")/nginx_conf.sh"

kind=$1 port=$2 backends=$3 workers=$4
work=${WORK:?run through the shared harness (it sets WORK)}
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$work/$kind-$port"
rm -rf "$dir"; mkdir -p "$dir/tmp"

case "$kind" in
ferryman)
    cd "$root/src"
    # shellcheck disable=SC2086  # FERRYMAN_EXTRA is a list of flags
    exec "${PYTHON:-$root/.venv/bin/python}" -m ferryman proxy --listen "127.0.0.1:$port" \
        --backends "$backends" --workers "$workers" --access-log off --no-forwarded-headers \
        --keepalive-requests 10000000 --worker-connections 65536 ${FERRYMAN_EXTRA:-}
    ;;
ferryman-full | ferryman-limits | ferryman-queue)
    python=${PYTHON:-$root/.venv/bin/python}
    admin_port=$(( ${ADMIN_PORT_BASE:-9950} + port % 100 ))
    {
        echo "workers: $workers"
        echo "worker_connections: 65536"
        echo "access_log: {path: $dir/access.log, format: combined}"
        echo "admin: {listen: \"127.0.0.1:$admin_port\"}"
        echo "keepalive_requests: 1000000  # client side: the schema's maximum"
        if [ "$kind" = ferryman-limits ]; then
            echo "limit_zones:"
            echo "  - {name: rq, kind: req, key: \$binary_remote_addr, rate: 1000000r/s, size: 10m}"
            echo "  - {name: cn, kind: conn, key: \$binary_remote_addr, size: 10m}"
        fi
        echo "upstreams:"
        echo "  backends:"
        echo "    keepalive: 32"
        echo "    keepalive_requests: 1000000  # the schema's maximum"
        echo "    servers:"
        for b in ${backends//,/ }; do
            if [ "$kind" = ferryman-queue ]; then
                echo "      - {address: \"$b\", max_conns: ${QUEUE_MAX_CONNS:-8}}"
            else
                echo "      - \"$b\""
            fi
        done
        if [ "$kind" = ferryman-queue ]; then
            # Room for every client's request (the default queue_timeout, 60 s, never binds).
            echo "    queue: 65536"
        fi
        echo "servers:"
        echo "  - listen: \"127.0.0.1:$port\""
        echo "    routes:"
        if [ "$kind" = ferryman-limits ]; then
            echo "      - path: /"
            echo "        upstream: backends"
            echo "        forwarded_headers: false"
            echo "        limit_req: [{zone: rq, burst: 1000, nodelay: true}]"
            echo "        limit_conn: [{zone: cn, limit: 10000}]"
            echo "        access: [{allow: 127.0.0.0/8}, {deny: all}]"
        else
            echo "      - {path: /, upstream: backends, forwarded_headers: false}"
        fi
    } > "$dir/ferryman.yaml"
    cd "$root/src"
    # shellcheck disable=SC2086  # FERRYMAN_EXTRA is a list of flags
    exec "$python" -m ferryman run -c "$dir/ferryman.yaml" ${FERRYMAN_EXTRA:-}
    ;;
nginx-log | nginx-limits | nginx-pool)
    servers=""
    for b in ${backends//,/ }; do servers+="        server $b;"$'\n'; done
    zones="" checks=""
    if [ "$kind" = nginx-limits ]; then
        zones="limit_req_zone \$binary_remote_addr zone=rq:10m rate=1000000r/s;
    limit_conn_zone \$binary_remote_addr zone=cn:10m;"
        checks="limit_req zone=rq burst=1000 nodelay;
            limit_conn cn 10000;
            allow 127.0.0.0/8;
            deny all;"
    fi
    access_log="access_log $dir/access.log combined buffer=64k flush=1s;"
    [ "$kind" = nginx-pool ] && access_log="access_log off;"
    cat > "$dir/nginx.conf" <<CONF
$(nginx_top "$dir" "$workers")
http {
    $access_log
    $zones
    keepalive_requests 10000000;
    keepalive_timeout 300s;
$(nginx_temp_paths "$dir")
    upstream backends {
$servers
        keepalive $NGINX_POOL;
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$port backlog=4096;
        location / {
            $checks
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_max_temp_file_size 0;
        }
    }
}
CONF
    exec nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" -g 'daemon off;'
    ;;
proxypy)
    venv=${PROXYPY_VENV:?bench/all.sh makes proxy.py its venv and sets PROXYPY_VENV}
    export PYTHONPATH="$root/bench/proxypy" PROXYPY_BACKENDS="$backends"
    exec "$venv/bin/proxy" --hostname 127.0.0.1 --port "$port" --backlog 4096 \
        --num-workers "$workers" --num-acceptors 1 --enable-reverse-proxy \
        --plugins bench_reverse.BenchReverseProxy --log-level e ${PROXYPY_FLAGS---threaded}
    ;;
*) echo "bench/targets.sh: ferryman-full, ferryman-limits, ferryman-queue, nginx-log, nginx-limits, nginx-pool or proxypy, not $kind" >&2; exit 2 ;;
esac
