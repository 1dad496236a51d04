#!/usr/bin/env bash
# Run the protocol simulator over the real tree: optimised, with the core's debug
# assertions on (the `sim` profile). Ends with the ops, faults and seeds/failures lines.
# usage: scripts/sim.sh --seeds N [--start S] [--nodes K] [--steps STEPS] [--jobs J]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build -q --profile sim -p cluster-sim --bin sim
exec target/sim/sim "$@"
