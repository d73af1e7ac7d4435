#!/usr/bin/env bash
# Starts and stops a private PostgreSQL server for development and tests.
#   scripts/pg.sh start DATADIR PORT   initdb on first use, start on 127.0.0.1:PORT (plus
#                                      $AIJOBS_PG_LISTEN), create db aijobs
#   scripts/pg.sh standby DATADIR HOST PORT   a streaming standby of the server at HOST:PORT
#                                      (pg_basebackup -R); start it with `start`
#   scripts/pg.sh promote DATADIR      promote a standby to primary
#   scripts/pg.sh stop DATADIR
#   scripts/pg.sh crash DATADIR        immediate stop (no checkpoint: like a power cut; the next
#                                      start runs crash recovery)
# Prints the conninfo on start. As root, the server runs as the unprivileged 'postgres' user.
set -euo pipefail
PGBIN=${AIJOBS_PG_BIN:-/usr/lib/postgresql/15/bin}
cmd=${1:?usage: pg.sh start|standby|promote|stop|crash DATADIR [PORT]}
datadir=$(realpath -m "${2:?DATADIR required}")

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
  start)
    port=${3:?PORT required}
    if [ ! -s "$datadir/PG_VERSION" ]; then
      mkdir -p "$datadir"
      [ "$(id -u)" = 0 ] && chown postgres:postgres "$datadir"
      chmod 700 "$datadir"
      as_pg "$PGBIN/initdb" -D "$datadir" -U postgres -A trust -E UTF8 --no-locale >"$datadir.initdb.log" 2>&1 ||
        { cat "$datadir.initdb.log" >&2; exit 1; }
      cat >>"$datadir/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$datadir'
max_connections = 300
shared_buffers = 256MB
synchronous_commit = on
fsync = on
wal_buffers = 16MB
checkpoint_timeout = 15min
max_wal_size = 2GB
logging_collector = off
# Per-statement counters for the benchmarks' profiles (bench/RESULTS.md); ~1 % overhead.
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = top
CONF
    fi
    # AIJOBS_PG_LISTEN (e.g. "127.0.0.1,10.213.0.10"): listen on these addresses too and
    # trust clients on the same subnets (the fault suite runs the server in a network
    # namespace of its own).
    # The socket directory is always this data directory's (a standby's copied
    # postgresql.conf names its primary's).
    listen_opt=" -c unix_socket_directories=$datadir"
    if [ -n "${AIJOBS_PG_LISTEN:-}" ]; then
      listen_opt="$listen_opt -c listen_addresses=${AIJOBS_PG_LISTEN}"
      grep -q '^host all all samenet trust' "$datadir/pg_hba.conf" ||
        printf 'host all all samenet trust\nhost replication all samenet trust\n' >>"$datadir/pg_hba.conf"
    fi
    as_pg "$PGBIN/pg_ctl" -D "$datadir" -o "-p $port$listen_opt" -l "$datadir/server.log" -w -t 60 start >/dev/null ||
      { tail -n 30 "$datadir/server.log" >&2; exit 1; }
    if ! "$PGBIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname='aijobs'" | grep -q 1; then
      "$PGBIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qc "CREATE DATABASE aijobs" >/dev/null
    fi
    echo "host=127.0.0.1 port=$port dbname=aijobs user=postgres"
    ;;
  standby)
    host=${3:?HOST required}
    port=${4:?PORT required}
    mkdir -p "$datadir"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$datadir"
    chmod 700 "$datadir"
    as_pg "$PGBIN/pg_basebackup" -h "$host" -p "$port" -U postgres -D "$datadir" -R -X stream \
      -c fast >"$datadir.basebackup.log" 2>&1 || { cat "$datadir.basebackup.log" >&2; exit 1; }
    # The copy carries the primary's socket lock file (its socket directory is its data
    # directory); it would stop this server from starting.
    rm -f "$datadir"/.s.PGSQL.*
    ;;
  promote)
    as_pg "$PGBIN/pg_ctl" -D "$datadir" -w -t 60 promote >/dev/null
    ;;
  stop)
    if [ -s "$datadir/postmaster.pid" ]; then
      as_pg "$PGBIN/pg_ctl" -D "$datadir" -m fast -w -t 60 stop >/dev/null 2>&1 || true
    fi
    ;;
  crash)
    if [ -s "$datadir/postmaster.pid" ]; then
      as_pg "$PGBIN/pg_ctl" -D "$datadir" -m immediate -w -t 60 stop >/dev/null 2>&1 || true
    fi
    ;;
  *) echo "usage: pg.sh start|standby|promote|stop|crash DATADIR [PORT]" >&2; exit 2 ;;
esac
