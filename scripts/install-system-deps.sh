#!/usr/bin/env bash
# Install the Debian packages that Ferryman's tests and benchmarks use: curl, nginx
# (nginx-light where the release still has it), wrk, haproxy, iproute2 (ss), procps (pgrep),
# h2load (nghttp2-client: the HTTP/2 tests and bench/h2.sh),
# testssl.sh (the TLS scan test) with what it calls: hexdump (bsdmainutils) and dig
# (dnsutils), redis-server (the cluster tests and bench/cluster.sh start their own),
# chromium (the dashboard test drives it headless over the DevTools protocol; the forward
# proxy's browser test renders pages through the proxy), tinyproxy and squid (bench/forward.sh
# runs them beside the forward proxy), node (nodejs: tests/unit/test_pac.py runs the PAC file).
# strace (bench/syscalls.sh counts system calls per request with it where perf is absent),
# valgrind (bench/instructions.sh counts instructions per request with its callgrind).
#
# Idempotent: a tool already on the machine is skipped, and `apt-get update` runs at most
# once, only when something is missing. Runs as root (CI) or through sudo.
# The packages' own services are stopped again if installing them started one: the tests
# and benchmarks run their own nginx/haproxy on loopback ports, never the system's.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export PATH="$PATH:/usr/sbin:/sbin"   # nginx and haproxy live in sbin

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null; then
    SUDO=(sudo -n)
else
    echo "install-system-deps: need root or sudo to install packages" >&2
    exit 1
fi

# tools; the Debian package is the tool's name except where mapped below
TOOLS=(curl nginx wrk haproxy ss pgrep testssl hexdump dig h2load redis-server chromium tinyproxy squid node strace valgrind)
missing=()
for tool in "${TOOLS[@]}"; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-system-deps: all present (${TOOLS[*]})"
    exit 0
fi

echo "install-system-deps: installing ${missing[*]}"
APT_LOG=$(mktemp)
trap 'rm -f "$APT_LOG"' EXIT
apt_quiet() {  # run apt-get quietly; show its output only if it fails
    "${SUDO[@]}" apt-get "$@" >"$APT_LOG" 2>&1 || { cat "$APT_LOG" >&2; return 1; }
}
apt_quiet update -qq

packages=()
for tool in "${missing[@]}"; do
    if [ "$tool" = nginx ]; then
        # nginx-light is the smallest build with proxy + upstream keepalive; newer Debian
        # releases folded the flavours into plain `nginx`.
        if apt-cache show nginx-light >/dev/null 2>&1; then
            packages+=(nginx-light)
        else
            packages+=(nginx)
        fi
    elif [ "$tool" = ss ]; then
        packages+=(iproute2)
    elif [ "$tool" = pgrep ]; then
        packages+=(procps)
    elif [ "$tool" = testssl ]; then
        packages+=(testssl.sh)
    elif [ "$tool" = hexdump ]; then
        packages+=(bsdmainutils)
    elif [ "$tool" = dig ]; then
        packages+=(dnsutils)
    elif [ "$tool" = h2load ]; then
        packages+=(nghttp2-client)
    elif [ "$tool" = node ]; then
        packages+=(nodejs)
    else
        packages+=("$tool")
    fi
done

apt_quiet install -y -qq --no-install-recommends "${packages[@]}"

# stop_started_daemon NAME PIDFILE [STOPCMD...]: if installing NAME started its system
# service, stop that one process, found through its own pid file (STOPCMD first, then
# SIGTERM to that pid), and wait for it to go so that its port is free again.
stop_started_daemon() {
    local name=$1 pidfile=$2 pid; shift 2
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    case "$pid" in ''|*[!0-9]*) return 0 ;; esac
    [ -d "/proc/$pid" ] || return 0   # (kill -0 would say EPERM to a non-root caller)
    echo "install-system-deps: stopping the $name service its package started (pid $pid)"
    if [ $# -gt 0 ]; then
        "${SUDO[@]}" "$@" >/dev/null 2>&1 || true
    else
        "${SUDO[@]}" kill -TERM "$pid" 2>/dev/null || true
    fi
    for _ in $(seq 50); do [ -d "/proc/$pid" ] || return 0; sleep 0.1; done
    "${SUDO[@]}" kill -TERM "$pid" 2>/dev/null || true
}
for tool in "${missing[@]}"; do
    case "$tool" in
        nginx) stop_started_daemon nginx /run/nginx.pid nginx -s stop ;;
        haproxy) stop_started_daemon haproxy /run/haproxy.pid ;;
        redis-server) stop_started_daemon redis-server /run/redis/redis-server.pid ;;
        tinyproxy) stop_started_daemon tinyproxy /run/tinyproxy/tinyproxy.pid ;;
        squid) stop_started_daemon squid /run/squid.pid ;;
    esac
done

for tool in "${TOOLS[@]}"; do
    command -v "$tool" >/dev/null || { echo "install-system-deps: $tool still missing" >&2; exit 1; }
done
echo "install-system-deps: done"
