#!/usr/bin/env bash
# One cache-enabled proxy for the shared harness: writes its configuration, then execs it.
#
#   bench/cache/target.sh nginx|ferryman PORT BACKENDS WORKERS
#
# Both cache every 200 for 10 minutes (the harness's backends send no Cache-Control:
# nginx proxy_cache_valid 200 10m; Ferryman `valid: {"200": 10m}`), keyed on the
# request URI, in a fresh directory under $WORK (the harness's run directory), with the
# lock on so the first misses collapse. Ferryman keeps hot entries in its per-worker
# memory tier in front of the disk tier; nginx serves its disk files through the page
# cache. Neither adds a cache-status header (nginx adds none by default).
# MEMORY_ONLY=1 gives Ferryman a memory-only zone (not like for like with nginx: for
# seeing what the disk tier's per-hit checks cost).
set -euo pipefail
# shellcheck source=bench/nginx_conf.sh
source "$(dirname "${BASH_SOURCE[0]}")/../nginx_conf.sh"

kind=$1 port=$2 backends=$3 workers=$4
work=${WORK:?run through bench/cache.sh (the shared harness sets WORK)}
dir="$work/cache-$kind-$port"
rm -rf "$dir"; mkdir -p "$dir/data" "$dir/tmp"

case "$kind" in
nginx)
    servers=""
    for b in ${backends//,/ }; do servers+="        server $b;"$'\n'; done
    cat > "$dir/nginx.conf" <<CONF
$(nginx_top "$dir" "$workers")
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
$(nginx_temp_paths "$dir")
    proxy_cache_path $dir/data levels=1:2 keys_zone=bench:10m max_size=1g inactive=10m use_temp_path=off;
    upstream backends {
$servers
        keepalive 32;
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$port backlog=4096;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_key \$scheme\$proxy_host\$request_uri;
            proxy_cache_valid 200 10m;
            proxy_cache_lock on;
        }
    }
}
CONF
    exec nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" -g 'daemon off;'
    ;;
ferryman)
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    python=${PYTHON:-$root/.venv/bin/python}
    {
        echo "workers: $workers"
        echo "worker_connections: 65536"
        echo "access_log: \"off\""
        echo "keepalive_requests: 1000000  # client side: the schema's maximum"
        echo "cache_zones:"
        if [ "${MEMORY_ONLY:-0}" = 1 ]; then  # no disk tier: what the store's disk checks cost
            echo "  - {name: bench, memory_size: 64m, inactive: 10m}"
        else
            echo "  - {name: bench, path: $dir/data, max_size: 1g, memory_size: 64m, inactive: 10m}"
        fi
        echo "upstreams:"
        echo "  backends:"
        echo "    keepalive: 32"
        echo "    keepalive_requests: 1000000"
        echo "    servers:"
        for b in ${backends//,/ }; do echo "      - \"$b\""; done
        echo "servers:"
        echo "  - listen: \"127.0.0.1:$port\""
        echo "    routes:"
        echo "      - path: /"
        echo "        upstream: backends"
        echo "        forwarded_headers: false"
        echo "        cache: {zone: bench, valid: {\"200\": 10m}, lock: true, status_header: false}"
    } > "$dir/ferryman.yaml"
    cd "$root/src"
    exec "$python" -m ferryman run -c "$dir/ferryman.yaml"
    ;;
*) echo "bench/cache/target.sh: nginx or ferryman, not $kind" >&2; exit 2 ;;
esac
