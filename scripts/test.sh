#!/usr/bin/env bash
# Runs every check and test of Ferrite: formatting, clippy, the unit and
# end-to-end tests on SQLite and on a real PostgreSQL, and the dashboard's
# type check, unit tests (Vitest) and browser tests (Debian's Chromium,
# installed first if missing), and the client examples in examples/
# (TypeScript and Python, against the real server).
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

# The dashboard: server/build.rs has run `npm ci` in web/ by now.
echo "==> web: type check and unit tests"
(cd web && node_modules/.bin/tsc --noEmit -p . && node_modules/.bin/vitest run)

if ! command -v chromium >/dev/null 2>&1; then
  echo "==> installing chromium from Debian's packages (for the browser tests)"
  if [[ $(id -u) -ne 0 ]] || ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
    echo "ERROR: no chromium for the browser tests; install Debian's chromium package (needs root)." >&2
    exit 1
  fi
fi
echo "==> web: browser tests (screenshots in target/dashboard-screenshots)"
# They run target/debug/ferrite and ferrite-connector, which `cargo test`
# has just built for the CLI tests (a separate `cargo build` would compile
# again with other features unified).
node web/e2e/run.mjs

# The client examples, against the same debug server: TypeScript (graphql-ws,
# Apollo Client, urql) with packages from examples/typescript's lock file,
# Python (gql) with packages pinned by hash in a virtualenv under target/.
echo "==> client examples: TypeScript and Python"
(cd examples/typescript && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
if [[ ! -x target/python/bin/python ]] || ! cmp -s examples/python/requirements.txt target/python/requirements.txt; then
  rm -rf target/python
  python3 -m venv target/python
  target/python/bin/pip install --quiet --disable-pip-version-check --require-hashes -r examples/python/requirements.txt
  cp examples/python/requirements.txt target/python/requirements.txt
fi
(cd examples/typescript && npm test --silent)
