#!/usr/bin/env bash
# Set up, build and run a local (single-node) pmxfs in the foreground.
#   scripts/run-local.sh            mount at /etc/pve, database /var/lib/pve-cluster/config.db
#   scripts/run-local.sh --tmp      mount and database in a fresh temporary directory
# Extra arguments are passed to pmxfs (e.g. --coherence off). Ctrl-C unmounts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -p pmxfs
args=()
if [ "${1:-}" = "--tmp" ]; then
  shift
  d=$(mktemp -d /tmp/pmxfs-local.XXXXXX)
  args=(--mount "$d/mnt" --db "$d/config.db" --rrd-dir "$d/rrd" --pidfile "$d/pmxfs.pid"
        --restart-flag "$d/cfs-restart-flag")
  echo "pmxfs: mount $d/mnt, database $d/config.db"
fi
exec target/release/pmxfs --local --foreground "${args[@]}" "$@"
