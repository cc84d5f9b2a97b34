# Shared set-up of the TLS benchmarks (bench/tls.sh, bench/h2.sh): process groups
# stopped on exit, port waits, certificates from Ferryman's development CA, and the
# tiny nginx backend both proxies stand in front of. Sourced after the caller has set
# OUT, ROOT, PYTHON, BACKEND_PORT and BENCH (its name, for messages). Brings in
# bench/nginx_conf.sh too, for NGINX_POOL (the proxies' nginx upstream pool).

# shellcheck source=bench/nginx_conf.sh
source "$(dirname "${BASH_SOURCE[0]}")/nginx_conf.sh"

mkdir -p "$OUT/tmp" "$OUT/logs"
ulimit -n 65536 2>/dev/null || true

PGIDS=()
cleanup() {
    for g in "${PGIDS[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
    sleep 0.5
    for g in "${PGIDS[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
start_group() {  # start_group LOGNAME CMD...: its own process group, stopped on exit
    local log="$OUT/logs/$1.log"; shift
    setsid "$@" >"$log" 2>&1 </dev/null &
    PGIDS+=("$!")
}
wait_port() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "$BENCH: nothing listens on $1 (see $OUT/logs)" >&2; exit 1
}
require_tools() {
    for t in "$@"; do
        command -v "$t" >/dev/null || { echo "$BENCH: missing tool: $t" >&2; exit 1; }
    done
}

# Certificates from Ferryman's own development CA (ECDSA P-256, as trustme issues).
(cd "$ROOT/src" && "$PYTHON" -m ferryman cert dev localhost 127.0.0.1 --dir "$OUT/certs") >/dev/null
CERT="$OUT/certs/localhost.pem"; KEY="$OUT/certs/localhost-key.pem"

temp_paths() {
    for t in client_body proxy fastcgi uwsgi scgi; do echo "    ${t}_temp_path $OUT/tmp/$1_$t;"; done
}
write_backend_conf() {  # write_backend_conf BODY: a one-location nginx answering BODY
    # on NBACKENDS ports from BACKEND_PORT up (default 1; backend_list names them)
    local listens="" i
    for ((i = 0; i < ${NBACKENDS:-1}; i++)); do
        listens+="listen 127.0.0.1:$((BACKEND_PORT + i)); "
    done
    cat >"$OUT/backend.conf" <<CONF
worker_processes 1;
pid $OUT/backend.pid;
error_log $OUT/logs/backend.error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 10000000;
$(temp_paths b)
    server { $listens location / { return 200 "$1\n"; } }
}
CONF
}

backend_list() {  # the NBACKENDS backend addresses, comma-separated
    local out="" i
    for ((i = 0; i < ${NBACKENDS:-1}; i++)); do
        out+="${out:+,}127.0.0.1:$((BACKEND_PORT + i))"
    done
    echo "$out"
}
