#!/usr/bin/env bash
# Backup and restore speed for N events (default 1 000 000), on loopback:
# fills a fresh SQLite installation through the API (publishEvents, 1 000 a
# call), then times `ferrite backup` while the server runs, `ferrite
# restore` into SQLite and into PostgreSQL, and `ferrite backup` of the
# PostgreSQL one. Needs the release binary and PostgreSQL's binaries
# (scripts/postgres-cluster.sh). A benchmark, not a test: it prints times.
#
#   cargo build --release -p ferrite-server
#   scripts/bench-backup.sh [EVENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-1000000}
FERRITE=$PWD/target/release/ferrite
WORK=$(mktemp -d)
PG_DIR=
cleanup() {
  [[ -n ${SERVER_PID:-} ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  [[ -n $PG_DIR ]] && scripts/postgres-cluster.sh stop "$PG_DIR" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

export FERRITE_ADMIN_PASSWORD=bench-password FERRITE_JWT_SECRET=bench-secret-bench-secret-bench-secret FERRITE_LOG=warn
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$FERRITE" serve --listen 127.0.0.1:$PORT --data-dir "$WORK/source" & SERVER_PID=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done

echo "filling: $EVENTS events …"
python3 - "$PORT" "$EVENTS" <<'PY'
import json, sys, time, urllib.request
port, total = int(sys.argv[1]), int(sys.argv[2])
def gql(query, variables=None, token=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", json.dumps({"query": query, "variables": variables or {}}).encode(),
                                 {"content-type": "application/json", **({"authorization": f"Bearer {token}"} if token else {})})
    body = json.load(urllib.request.urlopen(req))
    assert "errors" not in body, body
    return body["data"]
token = gql('mutation { login(username: "admin", password: "bench-password") { accessToken } }')["login"]["accessToken"]
devices = [gql('mutation($e: String!) { registerDevice(input: {externalId: $e}) { id } }', {"e": f"sensor-{i}"}, token)["registerDevice"]["id"] for i in range(10)]
started = time.time()
for call in range(total // 1000):
    inputs = [{"deviceId": devices[n % 10], "service": "temperature", "payload": {"celsius": 20 + (n % 100) / 10, "n": call * 1000 + n}} for n in range(1000)]
    gql('mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { id } }', {"i": inputs}, token)
print(f"  filled in {time.time() - started:.0f} s")
PY
du -sm "$WORK/source" | awk '{printf "  data directory: %d MB\n", $1}'

timed() { local label=$1; shift; local t0=$(date +%s.%N); "$@" > "$WORK/out.txt" 2>&1 || { cat "$WORK/out.txt"; exit 1; }; local t1=$(date +%s.%N); printf '%-52s %6.1f s\n' "$label" "$(echo "$t1 - $t0" | bc)"; }

timed "backup, SQLite, server running" "$FERRITE" backup "$WORK/sqlite.db" --data-dir "$WORK/source"
ls -l "$WORK/sqlite.db" | awk '{printf "  backup file: %.0f MB\n", $5 / 1e6}'
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
timed "restore into a new SQLite data directory" "$FERRITE" restore "$WORK/sqlite.db" --data-dir "$WORK/restored"

eval "$(scripts/postgres-cluster.sh start | grep -E '^(DIR|URL)=')"
PG_DIR=$DIR
PG_URL=${URL%/*}/ferrite_bench
psql "$URL" -qc 'CREATE DATABASE ferrite_bench' >/dev/null
timed "restore into PostgreSQL" "$FERRITE" restore "$WORK/sqlite.db" --data-dir "$WORK/pg-node" --database-url "$PG_URL"
timed "backup, PostgreSQL" "$FERRITE" backup "$WORK/pg.db" --data-dir "$WORK/pg-node" --database-url "$PG_URL"
