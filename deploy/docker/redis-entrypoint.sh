#!/bin/sh
# redis-server with the config given and the password in REDIS_PASSWORD_FILE (default
# /run/secrets/redis_password) when that file exists, as Debian's `redis` user when started as root.
# The password goes in as a config line on stdin ("-"), so it never shows in `ps`; redis-server replaces
# this shell (exec), so it is PID 1 and gets the container's SIGTERM.
set -eu
password_file="${REDIS_PASSWORD_FILE:-/run/secrets/redis_password}"
set -- redis-server "$@"
if [ "$(id -u)" = 0 ]; then
    chown redis:redis /data 2>/dev/null || true
    set -- setpriv --reuid=redis --regid=redis --init-groups "$@"
fi
if [ -f "$password_file" ]; then
    password="$(cat "$password_file")"
    exec "$@" - <<CONFIG
requirepass "$password"
CONFIG
fi
exec "$@"
