#!/usr/bin/env bash
# Ferrite against what users would pick instead, side by side on this
# machine: Mosquitto (QoS 1, no persistence) and a bare WebSocket relay,
# driven by the same load generator with the same knobs, rounds in
# alternating order; prints each round and a table of medians and ratios
# (docs/PERFORMANCE.md, "Against the alternatives").
#
#   scripts/bench-vs.sh                 # one message per call, as fast as it goes
#   scripts/bench-vs.sh --rate 10000 --seconds 20
#                                       # latency at a fixed rate
# Extra arguments go to the load generator (see `loadgen --help`); later
# ones win. Loopback only; every run stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
  echo "installing mosquitto from the Debian packages" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get install -y --no-install-recommends mosquitto >/dev/null \
    || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends mosquitto >/dev/null; }
fi
# Debian installs it as a service too; the benchmark starts its own.
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

cargo build --release --locked -p ferrite-server -p ferrite-e2e --bin ferrite --bin loadgen
exec target/release/loadgen \
  --server-bin target/release/ferrite \
  --mosquitto-bin "$MOSQUITTO" \
  --systems ferrite,mosquitto,relay --rounds 3 \
  --gateways 4 --inflight 64 --batch 1 --subscribers 1 --events 200000 --idle 2000 \
  "$@"
