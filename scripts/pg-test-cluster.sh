#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests, in a folder of its own (no system service):
#   pg-test-cluster.sh start DIR   initdb DIR/data, start it on 127.0.0.1 (a free port) and a unix
#                                  socket in DIR; print the admin URL (database postgres, superuser
#                                  layerskip, trust authentication: it is reachable from this host only)
#   pg-test-cluster.sh stop DIR    stop it (the folder stays; remove it yourself)
#   pg-test-cluster.sh restart DIR stop and start it on the same port (the tests' "server restart")
# initdb and postgres refuse to run as root: as root the cluster runs as the postgres user.
set -euo pipefail
cmd=${1:?usage: pg-test-cluster.sh start|stop|restart DIR}
dir=${2:?usage: pg-test-cluster.sh start|stop|restart DIR}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/initdb" ] || { echo "pg-test-cluster: no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)" >&2; exit 1; }
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
ctl() { as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 "$@" >/dev/null; }
case "$cmd" in
start)
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
    if [ ! -d "$dir/data" ]; then
        as_owner "$bin/initdb" -D "$dir/data" -U layerskip --auth=trust -E UTF8 --no-locale >/dev/null
    fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    echo "$port" > "$dir/port"
    # listen_addresses may be widened by a test (network namespaces) through PGTEST_LISTEN.
    ctl start -o "-p $port -k $dir -c listen_addresses=${PGTEST_LISTEN:-127.0.0.1} -c fsync=off -c max_connections=200"
    echo "postgresql://layerskip@127.0.0.1:$port/postgres"
    ;;
stop)
    [ -d "$dir/data" ] && ctl stop -m fast || true
    ;;
restart)
    port=$(cat "$dir/port")
    ctl stop -m fast
    ctl start -o "-p $port -k $dir -c listen_addresses=${PGTEST_LISTEN:-127.0.0.1} -c fsync=off -c max_connections=200"
    ;;
*) echo "usage: pg-test-cluster.sh start|stop|restart DIR" >&2; exit 2 ;;
esac
