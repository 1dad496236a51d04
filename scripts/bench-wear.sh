#!/usr/bin/env bash
# Write wear of a small file rewritten the way pve-ha-lrm rewrites
# nodes/<node>/lrm_status (open O_TRUNC, write 1 KiB, close), local mode: the daemon's
# write_bytes (/proc/PID/io, bytes it sent to the storage layer) per rewrite, counted
# until every change is folded into config.db (FOLD_AFTER plus a margin after the last
# rewrite, the same wait for both settings). Compares, in alternating rounds of one
# run, `--db-fold-after 0` (each change folded into SQLite at once, pmxfs before lazy
# folding) with the default. Prints every round; asserts nothing.
#   usage: [ROUNDS=2] scripts/bench-wear.sh [--no-build]
# pmxcfs 9.1.6 on this VM, same method (issue 14): 8,270 B back to back, 8,278 B at
# 20 ms, 8,806 B at 0.5 s per rewrite.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" != "--no-build" ]; then
  bash scripts/setup.sh >/dev/null
  export PATH="$HOME/.cargo/bin:$PATH"
  cargo build --release -q -p pmxfs
fi
ROUNDS=${ROUNDS:-2}
BIN=${PMXFS_BIN:-$PWD/target/release/pmxfs}
WORK=$(mktemp -d /tmp/pmxfs-wear.XXXXXX)
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  for m in "$WORK"/*/mnt; do mountpoint -q "$m" 2>/dev/null && umount -l "$m"; done
  rm -rf "$WORK"
}
trap cleanup EXIT

start() { # start DIR FOLD
  local d=$1
  mkdir -p "$d"
  PMXFS_RUN_DIR=$d/run PMXFS_LOG=warn "$BIN" --local --foreground --nodename wear \
    --mount "$d/mnt" --db "$d/config.db" --ipc-name "pmxfs-wear-${d##*/}" \
    --rrd-dir "$d/rrd" --rrdcached "" --pidfile "$d/pid" --restart-flag "$d/flag" \
    --db-fold-after "$2" >/dev/null 2>"$d/log" &
  PID=$!
  for _ in $(seq 200); do [ -e "$d/mnt/.version" ] && return 0; sleep 0.05; done
  echo "pmxfs did not start: $(cat "$d/log")" >&2; exit 1
}

stop() {
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
}

written() { awk '/^write_bytes/ {print $2}' "/proc/$PID/io"; }

# rewrite DIR COUNT INTERVAL: bytes written per rewrite, folds included
rewrite() {
  local d=$1 n=$2 every=$3 before after
  mkdir -p "$d/mnt/nodes/wear"
  before=$(written)
  python3 - "$d/mnt/nodes/wear/lrm_status" "$n" "$every" <<'PY'
import os, sys, time
path, n, every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
body = (b'{"mode":"active","results":{},"state":"wait_for_agent_lock","timestamp":%d}' % 0).ljust(1024, b' ')
for i in range(n):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    os.write(fd, body)
    os.close(fd)
    if every:
        time.sleep(every)
PY
  sleep 6.5 # FOLD_AFTER (5 s) and a margin: the last fold is counted too
  after=$(written)
  echo $(((after - before) / n))
}

printf 'write_bytes per 1 KiB rewrite (daemon), %s rounds, alternating\n' "$ROUNDS"
printf '%-6s %-22s %12s %12s %12s\n' round setting "1000 b2b" "250 @20ms" "20 @0.5s"
for ((r = 1; r <= ROUNDS; r++)); do
  for fold in 0 5; do
    d=$WORK/r$r-f$fold
    start "$d" "$fold"
    a=$(rewrite "$d" 1000 0)
    b=$(rewrite "$d" 250 0.02)
    c=$(rewrite "$d" 20 0.5)
    stop
    printf '%-6s %-22s %12s %12s %12s\n' "$r" "--db-fold-after $fold" "$a B" "$b B" "$c B"
  done
done
