#!/usr/bin/env bash
# `./dev up` supervises its processes: a worker killed with -9 is restarted (and logged), a
# job still finishes, and SIGTERM to `dev up` stops every process and PostgreSQL.
# Uses the built binaries in AIJOBS_BIN_DIR (no install, no build) and free ports.
set -euo pipefail
SRC=${AIJOBS_SOURCE_DIR:?AIJOBS_SOURCE_DIR required}
BIN=${AIJOBS_BIN_DIR:?AIJOBS_BIN_DIR required}
DEV=${AIJOBS_DEV_SCRIPT:-$SRC/dev}
tmp=$(mktemp -d)
[ "$(id -u)" = 0 ] && chmod 755 "$tmp"  # pg.sh runs PostgreSQL as 'postgres' under root
dev_pid=""

fail() {
  echo "FAIL: $*" >&2
  echo "--- dev up output" >&2; cat "$tmp/dev.out" >&2 || true
  exit 1
}
cleanup() {
  if [ -n "$dev_pid" ] && kill -0 "$dev_pid" 2>/dev/null; then
    kill -TERM "$dev_pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$dev_pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$dev_pid" 2>/dev/null || true
  fi
  "$SRC/scripts/pg.sh" stop "$tmp/pg" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
  local limit=$1; shift
  for _ in $(seq 1 "$((limit * 4))"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  return 1
}
pids_of() { pgrep -f -- "$1" || true; }

pg_port=$(free_port) sched_port=$(free_port) gw_port=$(free_port)
worker1="aijobs-worker --scheduler 127.0.0.1:$sched_port --worker_id worker-1"
# setsid: dev up leads its own process group, so the cleanup can end all of it if need be.
AIJOBS_DEV_NO_BUILD=1 AIJOBS_BIN_DIR="$BIN" AIJOBS_DEV_DATA="$tmp" AIJOBS_PG_PORT=$pg_port \
  AIJOBS_SCHEDULER_PORT=$sched_port AIJOBS_GATEWAY_PORT=$gw_port \
  setsid "$DEV" up >"$tmp/dev.out" 2>&1 </dev/null &
dev_pid=$!

submit() {
  AIJOBS_TOKEN=$(cat "$tmp/dev-token") timeout 20 "$BIN/aijobsctl" \
    --server "127.0.0.1:$sched_port" submit --type chat --prompt "$1" --wait
}
# dev up says it is up only once the scheduler and the gateway accept connections.
wait_for 90 grep -q "aijobs is up" "$tmp/dev.out" || fail "dev up did not say it is up in 90s"
(echo >"/dev/tcp/127.0.0.1/$sched_port") 2>/dev/null || fail "up, but the scheduler is not listening"
wait_for 40 curl -fsS "http://127.0.0.1:$gw_port/healthz" || fail "gateway not up in 40s"
wait_for 20 test -n "$(pids_of "$worker1")" || fail "worker-1 not running"
submit "before the kill" >/dev/null || fail "a job did not finish before the kill"
# Authentication is on: the printed dev token submits a non-public type, no token cannot.
embed() { timeout 20 "$BIN/aijobsctl" --server "127.0.0.1:$sched_port" submit --type embed \
  --input '{"texts": ["a"]}' "$@"; }
AIJOBS_TOKEN=$(cat "$tmp/dev-token") embed --wait >/dev/null || fail "the dev token cannot submit embed"
if embed 2>"$tmp/anon.err" >/dev/null; then fail "an anonymous embed submit was accepted"; fi
grep -q UNAUTHENTICATED "$tmp/anon.err" || fail "anonymous embed: $(cat "$tmp/anon.err")"

old=$(pids_of "$worker1")
kill -KILL $old
wait_for 15 grep -q "dev: worker-1 exited (status 137); restarting in 1s" "$tmp/dev.out" ||
  fail "no restart line for worker-1"
kill -0 "$dev_pid" 2>/dev/null || fail "dev up exited when one worker was killed"
restarted() { local new; new=$(pids_of "$worker1"); [ -n "$new" ] && [ "$new" != "$old" ]; }
wait_for 15 restarted || fail "worker-1 was not restarted"
submit "after the kill" >/dev/null || fail "a job did not finish after worker-1 was restarted"

kill -TERM "$dev_pid"
for _ in $(seq 1 40); do kill -0 "$dev_pid" 2>/dev/null || break; sleep 0.5; done
kill -0 "$dev_pid" 2>/dev/null && fail "dev up still running 20s after SIGTERM"
status=0
wait "$dev_pid" || status=$?
dev_pid=""
[ "$status" = 0 ] || fail "dev up exited with status $status on SIGTERM"
left=$(pgrep -f -- "127.0.0.1:$sched_port" || true)
[ -z "$left" ] || fail "processes left after dev up stopped: $(ps -o pid,args -p "$left" | tail -n +2)"
grep -q "dev: stopped" "$tmp/dev.out" || fail "no 'dev: stopped' line"
wait_for 5 bash -c "! (echo > /dev/tcp/127.0.0.1/$pg_port) 2>/dev/null" ||
  fail "PostgreSQL still listening after dev up stopped"
echo "PASS"
