#!/usr/bin/env bash
# Runs every check and test of Ferrite: formatting, clippy, and the unit and
# end-to-end tests on SQLite and on a real PostgreSQL.
#
# PostgreSQL: a throwaway cluster is started on a private port (installed
# from Debian's packages first if missing) and removed afterwards. Set
# FERRITE_TEST_POSTGRES_URL to use a server of your own instead.
set -euo pipefail
cd "$(dirname "$0")/.."

started=""
cleanup() {
  if [[ -n "$started" ]]; then
    scripts/postgres-cluster.sh stop "$started"
  fi
}
trap cleanup EXIT

if [[ -z "${FERRITE_TEST_POSTGRES_URL:-}" ]]; then
  echo "==> starting a throwaway PostgreSQL cluster"
  cluster=$(scripts/postgres-cluster.sh start) || {
    echo "ERROR: no PostgreSQL for the tests (see above); the PostgreSQL half cannot run." >&2
    exit 1
  }
  started=$(sed -n 's/^DIR=//p' <<<"$cluster")
  export FERRITE_TEST_POSTGRES_URL=$(sed -n 's/^URL=//p' <<<"$cluster")
fi
echo "==> PostgreSQL for tests: $FERRITE_TEST_POSTGRES_URL"

echo "==> cargo fmt --check"
cargo fmt --all --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> cargo test"
cargo test --workspace --locked "$@"
