#!/usr/bin/env bash
# An MLflow tracking server on a PostgreSQL database, both on loopback: what a cluster needs instead of the
# SQLite file (many jobs write at once), started on this machine for the tests and for `make server`.
#
#   scripts/mlflow-server.sh start [DIR]   # PostgreSQL (created on first start) + mlflow server
#   scripts/mlflow-server.sh env [DIR]     # the line to eval: export MLFLOW_TRACKING_URI=http://127.0.0.1:PORT
#   scripts/mlflow-server.sh status [DIR]
#   scripts/mlflow-server.sh stop [DIR]    # stop both; the database and the artifacts stay in DIR
#
# DIR defaults to .mlflow-server/ in the repository (gitignored): pgdata/ (the database cluster), artifacts/
# (every run's files, served through the server: clients never need the folder), log/, run/ (pid files),
# ports (the two ports, chosen on first start and kept) and pgpass (the database password, mode 0600, read
# by libpq through PGPASSFILE: it never appears in a URI, a command line or a log).
# Ports: MLFLOW_PORT (default 5001; `make ui` takes 5000) and PG_PORT (default: a free one) on first start; later starts reuse
# them. The mlflow command: MLFLOW (default .venv/bin/mlflow), whose Python needs psycopg2 (`make install`);
# MLFLOW_WORKERS server processes (default 2: each takes ~15 s of a core to start).
# As root the database runs as the `postgres` user (PostgreSQL refuses to run as root), so DIR must be
# reachable by it. Exit status 3: this machine cannot run it (no PostgreSQL and no way to install it).
set -euo pipefail

ACTION=${1:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${2:-$ROOT/.mlflow-server}
MLFLOW=${MLFLOW:-$ROOT/.venv/bin/mlflow}
START_TIMEOUT_S=${INITSTUDY_SERVER_START_TIMEOUT_S:-120}
DB=mlflow
DB_USER=mlflow

NAME=mlflow-server
# shellcheck source=scripts/service-lib.sh
source "$ROOT/scripts/service-lib.sh"

pg_bindir() {
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    [ -n "$found" ] && { echo "$found"; return; }
    command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ] && { pg_config --bindir; return; }
    return 1
}

install_postgres() { apt_install postgresql; }

# The database server runs as the invoking user, or as `postgres` when that is root.
as_db_user() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg() { as_db_user "$BIN/pg_ctl" -D "$DIR/pgdata" "$@"; }

init_database() {
    local pwfile
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/password"
    chmod 0600 "$DIR/password"
    echo "*:*:*:$DB_USER:$(cat "$DIR/password")" >"$DIR/pgpass"
    chmod 0600 "$DIR/pgpass"
    mkdir -p "$DIR/pgdata"
    pwfile=$DIR/run/initdb-password
    cp "$DIR/password" "$pwfile"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$DIR/pgdata" "$pwfile"; fi
    chmod 0700 "$DIR/pgdata"
    as_db_user test -w "$DIR/pgdata" || die "the postgres user cannot reach $DIR/pgdata (a parent folder is private)"
    # Password (SCRAM) authentication, on loopback TCP only: no Unix socket, no trust.
    as_db_user "$BIN/initdb" -D "$DIR/pgdata" -U "$DB_USER" --pwfile="$pwfile" --auth=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 >"$DIR/log/initdb.log" 2>&1 || die "initdb failed: $DIR/log/initdb.log"
    rm -f "$pwfile" "$DIR/password"
    cat >>"$DIR/pgdata/postgresql.conf" <<CONF
# scripts/mlflow-server.sh: loopback TCP only.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
CONF
}

wait_for_health() {
    local deadline=$((SECONDS + START_TIMEOUT_S))
    until "$PYTHON" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$MLFLOW_PORT/health', timeout=2)" 2>/dev/null; do
        kill -0 "$(cat "$DIR/run/mlflow.pid")" 2>/dev/null || die "mlflow server exited; see $DIR/log/mlflow.log"
        [ $SECONDS -lt $deadline ] || die "mlflow server gave no /health in $START_TIMEOUT_S s; see $DIR/log/mlflow.log"
        sleep 0.5
    done
}

start() {
    if [ -f "$DIR/run/mlflow.pid" ] && kill -0 "$(cat "$DIR/run/mlflow.pid")" 2>/dev/null; then
        die "already running from $DIR (scripts/mlflow-server.sh stop $DIR first)"
    fi
    local begin=$SECONDS port
    # The port is checked before anything is installed or created: a taken one stops here with one line, exit 1.
    if [ -f "$DIR/ports" ]; then
        port=$(sed -n 's/.*MLFLOW_PORT=\([0-9]*\).*/\1/p' "$DIR/ports")
        "$ROOT/scripts/port-free.sh" "$port" "$NAME" "it is kept in $DIR/ports: stop what holds it, or edit that file" || exit 1
    else
        "$ROOT/scripts/port-free.sh" "${MLFLOW_PORT:-5001}" "$NAME" "choose another with make server SERVER_PORT=<port>" || exit 1
    fi
    BIN=$(pg_bindir) || { install_postgres; BIN=$(pg_bindir) || cannot "no PostgreSQL server binaries found"; }
    [ -x "$MLFLOW" ] || die "$MLFLOW not found (make install, or set MLFLOW=/path/to/mlflow)"
    PYTHON=$(dirname "$MLFLOW")/python
    "$PYTHON" -c "import psycopg2" 2>/dev/null || die "psycopg2 is not importable by $PYTHON (make install)"
    mkdir -p "$DIR"/{artifacts,log,run}
    chmod 0711 "$DIR"
    if [ ! -f "$DIR/ports" ]; then
        echo "MLFLOW_PORT=${MLFLOW_PORT:-5001} PG_PORT=${PG_PORT:-$(free_port)}" >"$DIR/ports"
    fi
    eval "$(cat "$DIR/ports")"
    [ -f "$DIR/pgdata/PG_VERSION" ] || init_database
    touch "$DIR/log/postgres.log"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$DIR/log/postgres.log"; fi
    pg -l "$DIR/log/postgres.log" -o "-p $PG_PORT" -w -t "$START_TIMEOUT_S" start >/dev/null \
        || die "PostgreSQL did not start; see $DIR/log/postgres.log"
    export PGPASSFILE=$DIR/pgpass
    # The database, unless an earlier start made it.
    "$BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U "$DB_USER" "$DB" 2>"$DIR/log/createdb.log" \
        || grep -q "already exists" "$DIR/log/createdb.log" || die "createdb failed: $DIR/log/createdb.log"
    # postgresql+psycopg2: SQLAlchemy's plain postgresql:// means psycopg 3, which the lock does not hold.
    # Its own session (process group), so that stop ends the server's workers with it.
    MLFLOW_DISABLE_TELEMETRY=true setsid "$MLFLOW" server \
        --backend-store-uri "postgresql+psycopg2://$DB_USER@127.0.0.1:$PG_PORT/$DB" \
        --artifacts-destination "$DIR/artifacts" \
        --host 127.0.0.1 --port "$MLFLOW_PORT" --workers "${MLFLOW_WORKERS:-2}" \
        >"$DIR/log/mlflow.log" 2>&1 </dev/null &
    echo $! >"$DIR/run/mlflow.pid"
    wait_for_health
    echo "MLflow server up in $((SECONDS - begin)) s (PostgreSQL on 127.0.0.1:$PG_PORT, data in $DIR):" >&2
    echo "export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT"
}

stop() {
    [ -f "$DIR/ports" ] || die "no server in $DIR"
    local pid
    if [ -f "$DIR/run/mlflow.pid" ]; then
        pid=$(cat "$DIR/run/mlflow.pid")
        if kill -TERM -- "-$pid" 2>/dev/null; then
            for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            kill -KILL -- "-$pid" 2>/dev/null || true
        fi
        rm -f "$DIR/run/mlflow.pid"
    fi
    BIN=$(pg_bindir) || die "no PostgreSQL server binaries found"
    if [ -f "$DIR/pgdata/postmaster.pid" ]; then pg -m fast -w stop >/dev/null; fi
    echo "MLflow server and PostgreSQL in $DIR stopped (data kept)" >&2
}

status() {
    [ -f "$DIR/ports" ] || die "no server in $DIR"
    eval "$(cat "$DIR/ports")"
    BIN=$(pg_bindir) || die "no PostgreSQL server binaries found"
    pg status || true
    if [ -f "$DIR/run/mlflow.pid" ] && kill -0 "$(cat "$DIR/run/mlflow.pid")" 2>/dev/null; then
        echo "mlflow server running (pid $(cat "$DIR/run/mlflow.pid")) on http://127.0.0.1:$MLFLOW_PORT"
    else
        echo "mlflow server not running"
    fi
}

case "$ACTION" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) [ -f "$DIR/ports" ] && eval "$(cat "$DIR/ports")" && echo "export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT" ;;
    *) echo "usage: $0 start|stop|status|env [DIR]" >&2; exit 2 ;;
esac
