#!/usr/bin/env bash
# bench/ports_free.sh PORT|FIRST-LAST...: exits 1, naming each one, if anything already
# listens on one of these loopback TCP ports. A leftover backend on the harness's ports
# makes the run's own backend fail to bind while the load still finds a server there,
# so every row would measure someone else's server (a stale nginx once answered /big
# with a 404 to every target, and the run looked fine).
set -euo pipefail
listening=" $(ss -Hltn | awk '{n = split($4, a, ":"); printf "%s ", a[n]}') "
busy=()
for spec in "$@"; do
    first=${spec%-*}; last=${spec#*-}
    for ((p = first; p <= last; p++)); do
        [[ "$listening" == *" $p "* ]] && busy+=("$p")
    done
done
if [ "${#busy[@]}" -gt 0 ]; then
    echo "bench: these ports are already in use: ${busy[*]}" >&2
    ss -Hltnp 2>/dev/null | awk -v ports=" ${busy[*]} " \
        '{n = split($4, a, ":"); if (index(ports, " " a[n] " ")) print "  " $0}' >&2
    echo "  stop whatever listens there (or set BACKEND_PORT/PROXY_PORT_BASE) and run again" >&2
    exit 1
fi
