#!/usr/bin/env bash
# The usual operator sequence against `ferryman nginx`, as a shell session would run it:
# start with -p and -c, test with -t, edit the file, -s reload under load (no request may
# fail), -s reopen after moving the access log (logrotate), -s quit.
#
# Environment: NGINX_CMD (the command, e.g. "python -m ferryman nginx"), PREFIX (an empty
# directory), PORT (a free loopback port), REQUESTS (the bound of the load loop).
# Loopback only; every wait is bounded; the master started here is stopped by its PID.
set -euo pipefail

: "${NGINX_CMD:?}" "${PREFIX:?}" "${PORT:?}"
REQUESTS="${REQUESTS:-300}"
URL="http://127.0.0.1:${PORT}/"
PID_FILE="$PREFIX/logs/nginx.pid"

ng() { $NGINX_CMD -p "$PREFIX/" -c conf/nginx.conf "$@"; }
step() { echo "== $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
# wait_for TRIES COMMAND...: retry every 0.1 s, at most TRIES times.
wait_for() {
    local tries=$1; shift
    for _ in $(seq 1 "$tries"); do
        if "$@"; then return 0; fi
        sleep 0.1
    done
    return 1
}
body_is() { [ "$(curl -s --max-time 5 "$URL")" = "$1" ]; }
gone() { ! kill -0 "$1" 2>/dev/null; }

master=""
loader=""
cleanup() {
    [ -n "$loader" ] && kill "$loader" 2>/dev/null || true
    [ -n "$master" ] && kill -TERM "$master" 2>/dev/null || true
}
trap cleanup EXIT

write_conf() {
    # Relative paths: the pid file and logs go under the prefix (nginx's -p rule), the
    # file itself lives in conf/.
    cat > "$PREFIX/conf/nginx.conf" <<EOF
pid logs/nginx.pid;
error_log logs/error.log notice;
worker_processes 2;
events { worker_connections 256; }
http {
    access_log logs/access.log;
    server {
        listen 127.0.0.1:${PORT};
        location / { return 200 "$1\n"; }
    }
}
EOF
}

mkdir -p "$PREFIX/conf" "$PREFIX/logs"
write_conf one

step "test the file"
ng -t 2>&1 | tee "$PREFIX/t.out"
grep -q "syntax is ok" "$PREFIX/t.out" || fail "-t did not say syntax is ok"

step "start (daemon on: the command returns once the master listens)"
ng
[ -s "$PID_FILE" ] || fail "no pid file after start"
master=$(cat "$PID_FILE")
body_is one || fail "not serving the first configuration"

step "edit the file and test it"
write_conf two
ng -t -q || fail "-t refused the edited file"

step "reload under load"
: > "$PREFIX/codes"
(
    for _ in $(seq 1 "$REQUESTS"); do
        [ -e "$PREFIX/stop-load" ] && break
        curl -s -o /dev/null --max-time 5 -w '%{http_code}\n' "$URL" >> "$PREFIX/codes" || true
    done
) &
loader=$!
wait_for 50 test -s "$PREFIX/codes" || fail "the load never started"
ng -s reload
wait_for 100 body_is two || fail "the reload never took effect"
sleep 0.5  # some load after the switch too
touch "$PREFIX/stop-load"
wait "$loader"
loader=""
total=$(wc -l < "$PREFIX/codes")
bad=$(grep -vcx 200 "$PREFIX/codes" || true)
echo "requests under load: $total, not 200: $bad"
[ "$total" -gt 0 ] || fail "no request was made under load"
[ "$bad" -eq 0 ] || fail "$bad request(s) failed during the reload"
[ "$(cat "$PID_FILE")" = "$master" ] || fail "the master changed on reload"

step "logrotate: move the access log, reopen"
wait_for 50 grep -q "GET / " "$PREFIX/logs/access.log" || fail "nothing in the access log"
mv "$PREFIX/logs/access.log" "$PREFIX/logs/access.log.1"
ng -s reopen
wait_for 50 test -e "$PREFIX/logs/access.log" || fail "the access log was not reopened"
for n in 1 2 3 4; do curl -s -o /dev/null "${URL}after-reopen-$n"; done
wait_for 50 grep -q "/after-reopen-4" "$PREFIX/logs/access.log" || fail "no line in the new log"
sleep 0.3
# Requests made after the reopen go to the new file only (lines a worker had not yet
# written before the signal may still reach the moved one: they are older).
[ "$(grep -c "/after-reopen-" "$PREFIX/logs/access.log")" -eq 4 ] || fail "lines missing"
if grep -q "/after-reopen-" "$PREFIX/logs/access.log.1"; then
    fail "the moved log got lines of requests made after the reopen"
fi

step "quit"
ng -s quit
wait_for 150 gone "$master" || fail "the master did not exit on quit"
wait_for 20 test ! -e "$PID_FILE" || fail "the pid file outlived the master"
master=""
echo "OK"
