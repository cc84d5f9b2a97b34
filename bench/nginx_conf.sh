# The start every bench target's nginx.conf shares (sourced by bench/targets.sh,
# bench/cache/target.sh and bench/static/target.sh): nginx_top DIR WORKERS prints the
# main context (its pid and error log in DIR, the file limit, 65,536 connections a
# worker), nginx_temp_paths DIR the http context's temporary paths, all under DIR.
# Also sourced by bench/tls_common.sh (the TLS, HTTP/2 and system-call scripts) for
# NGINX_POOL.

# The idle upstream connections every nginx beside Ferryman keeps (`keepalive N`): with
# the shared harness's 32, nginx reconnects for ~15% of its requests at 50 clients and
# ~38% at 1,000; 1,024 never runs out at these loads, as Ferryman's pool does not
# (docs/benchmarks.md, "nginx's upstream pool"). NGINX_KEEPALIVE overrides it.
NGINX_POOL=${NGINX_KEEPALIVE:-1024}

nginx_top() {
    cat <<CONF
worker_processes $2;
worker_rlimit_nofile ${NOFILE:-65536};
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 65536; }
CONF
}

nginx_temp_paths() {
    local t
    for t in client_body proxy fastcgi uwsgi scgi; do echo "    ${t}_temp_path $1/tmp/$t;"; done
}
