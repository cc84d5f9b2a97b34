#!/usr/bin/env bash
# One static-file server for the shared harness: writes its configuration, then execs it.
#
#   bench/static/target.sh nginx|nginx-sendfile|ferryman PORT BACKENDS WORKERS
#
# Each serves the harness's bulk body ($WORK/www/big.bin, BIG_KB) as /big from a root of
# its own (a symbolic link to it, followed by both), and nothing else: the harness's
# backends are not used. nginx as shipped reads the file into its buffers and writes
# them (`sendfile off`, the default); `nginx-sendfile` has `sendfile on`, as most
# distributions' nginx.conf sets it. Ferryman writes a view of the file's mapping
# (src/ferryman/file_views.py). Access logs off for all three.
set -euo pipefail
# shellcheck source=bench/nginx_conf.sh
source "$(dirname "${BASH_SOURCE[0]}")/../nginx_conf.sh"

kind=$1 port=$2 workers=$4
work=${WORK:?run through bench/static.sh (the shared harness sets WORK)}
dir="$work/static-$kind-$port"
rm -rf "$dir"; mkdir -p "$dir/www" "$dir/tmp"
ln -s "$work/www/big.bin" "$dir/www/big"

case "$kind" in
nginx | nginx-sendfile)
    sendfile=off; [ "$kind" = nginx-sendfile ] && sendfile=on
    cat > "$dir/nginx.conf" <<CONF
$(nginx_top "$dir" "$workers")
http {
    access_log off;
    sendfile $sendfile;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
$(nginx_temp_paths "$dir")
    server {
        listen 127.0.0.1:$port backlog=4096;
        root $dir/www;
    }
}
CONF
    exec nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" -g 'daemon off;'
    ;;
ferryman)
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    python=${PYTHON:-$root/.venv/bin/python}
    cat > "$dir/ferryman.yaml" <<CONF
workers: $workers
worker_connections: 65536
access_log: "off"
keepalive_requests: 1000000
servers:
  - listen: "127.0.0.1:$port"
    routes:
      - path: /
        static: {root: "$dir/www"}
CONF
    cd "$root/src"
    exec "$python" -m ferryman run -c "$dir/ferryman.yaml"
    ;;
*) echo "bench/static/target.sh: nginx, nginx-sendfile or ferryman, not $kind" >&2; exit 2 ;;
esac
