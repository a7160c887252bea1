#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests, on a private port and data
# directory under /tmp. Installs PostgreSQL from Debian's packages when it is
# missing (needs root and access to the package archive).
#
#   scripts/postgres-cluster.sh start   # prints the URL to use
#   scripts/postgres-cluster.sh stop DIR
#
# PostgreSQL refuses to run as root: as root, the cluster runs as the
# `postgres` user the Debian package creates.
set -euo pipefail

find_bin_dir() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

install_postgres() {
  echo "postgres-cluster: PostgreSQL is not installed; installing it from Debian's packages" >&2
  if [[ $(id -u) -ne 0 ]]; then
    echo "postgres-cluster: ERROR: installing PostgreSQL needs root (apt-get install postgresql)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }; then
    echo "postgres-cluster: ERROR: could not install PostgreSQL from the package archive" >&2
    exit 1
  fi
}

as_cluster_user() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
  local bin_dir
  bin_dir=$(find_bin_dir) || { install_postgres; bin_dir=$(find_bin_dir); } || {
    echo "postgres-cluster: ERROR: PostgreSQL binaries not found after installing" >&2
    exit 1
  }
  local dir port
  dir=$(mktemp -d /tmp/ferrite-pg.XXXXXX)
  chmod 755 "$dir"
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres:postgres "$dir"
  fi
  port=$(free_port)
  as_cluster_user "$bin_dir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    exit 1
  }
  # Tuned for throwaway test data: durability off, many connections.
  as_cluster_user "$bin_dir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null || {
    cat "$dir/server.log" >&2
    exit 1
  }
  echo "$dir" >"$dir/.ferrite-cluster"
  echo "DIR=$dir"
  echo "URL=postgres://postgres@127.0.0.1:$port/postgres"
}

stop() {
  local dir=$1
  [[ -f "$dir/.ferrite-cluster" ]] || { echo "postgres-cluster: $dir is not a test cluster" >&2; exit 1; }
  local bin_dir
  bin_dir=$(find_bin_dir)
  as_cluster_user "$bin_dir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:?usage: $0 stop DIR}" ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
