#!/usr/bin/env bash
# Benchmarks of the single-node filesystem; prints figures, asserts nothing.
#  1. stat()/s on an unlocked path, --coherence on vs off (1 s timeouts), alternating runs
#  2. create+write 4 KiB+close, read, stat, rename, unlink over 2,000 files (Python loop,
#     like the pmxcfs baseline in the issue), on io_uring and on /dev/fuse, and with
#     PMXCFS_BIN on pmxcfs 9.1.6 (built as scripts/bench-ipc.sh's header says), in
#     ROUNDS (default 5) alternating rounds; every round is printed
#  3. 500 KiB written with dd bs=512: wall time and bytes the daemon wrote to storage
# usage: [ROUNDS=5] [PMXCFS_BIN=...] scripts/bench-fs.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/pmxcfs-ns.sh
. scripts/pmxcfs-ns.sh
if [ "${1:-}" != "--no-build" ]; then
  bash scripts/setup.sh >/dev/null
  export PATH="$HOME/.cargo/bin:$PATH"
  cargo build --release -q -p pmxfs
fi
BIN=${PMXFS_BIN:-$PWD/target/release/pmxfs}
WORK=$(mktemp -d /tmp/pmxfs-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for m in "$WORK"/*/mnt; do mountpoint -q "$m" 2>/dev/null && umount -l "$m"; done
  rm -rf "$WORK"
}
trap cleanup EXIT

HOLDER='' CFS_PID=''
CFS=${PMXCFS_BIN:-}
if [ -n "$CFS" ]; then
  CFS=$(realpath "$CFS")
  # Made before any pmxfs mount exists: a new mount namespace copies the live mounts.
  # pmxcfs's database on the same disk as pmxfs's.
  mkdir -p "$WORK/ns.lib"
  pmxcfs_ns "$WORK/ns" bench "" "" "$WORK/ns.lib" || exit 1
  HOLDER=$PMXCFS_HOLDER
  PIDS+=("$HOLDER")
fi

STARTED=
start() { # name, extra args...; sets STARTED to the daemon's pid
  local d=$WORK/$1; shift
  mkdir -p "$d"
  PMXFS_RUN_DIR=$d/run PMXFS_LOG=warn "$BIN" --local --foreground --pidfile "$d/pid" --restart-flag "$d/run/restart-flag" --nodename bench --mount "$d/mnt" --ipc-name "pmxfs-bench-${d##*/}" --rrd-dir "$d/rrd" --rrdcached "" \
    --db "$d/config.db" "$@" >/dev/null 2>"$d/log" &
  STARTED=$!
  PIDS+=("$STARTED")
  for _ in $(seq 100); do [ -e "$d/mnt/.version" ] && return; sleep 0.05; done
  echo "pmxfs did not mount: $(cat "$d/log")" >&2; exit 1
}

start on --coherence on --entry-timeout 1 --attr-timeout 1; on_pid=$STARTED
start off --coherence off --entry-timeout 1 --attr-timeout 1
python3 - "$WORK" <<'PY'
import os, sys, time
work = sys.argv[1]
def stat_rate(mnt, secs=2.0):
    p = os.path.join(mnt, "storage.cfg")
    if not os.path.exists(p):
        with open(p, "w") as f: f.write("dir: local\n")
    os.stat(p)
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in range(1000): os.stat(p)
        n += 1000
        dt = time.perf_counter() - t0
        if dt >= secs: return n / dt
res = {"on": [], "off": []}
for _ in range(3):
    for mode in ("on", "off"):
        res[mode].append(stat_rate(os.path.join(work, mode, "mnt")))
on, off = max(res["on"]), max(res["off"])
print(f"stat/s unlocked path: coherence on {on:,.0f}  off {off:,.0f}  ratio {on/off:.3f}  (best of 3 alternating 2 s runs)")
PY

# Per-file phases over 2,000 files (Python loop, as the issue's baseline): on the io_uring
# transport (the "on" daemon: local mode uses it when the kernel offers it), on
# /dev/fuse (the "dev" daemon), and with PMXCFS_BIN on pmxcfs 9.1.6 in local mode (in
# private namespaces, as scripts/bench-ipc.sh runs it), ROUNDS rounds (default 5) in
# alternating order in one run; every round is printed, then the medians, and for
# pmxcfs the ratio in each round (pmxfs io_uring / pmxcfs), its worst round included.
# On /dev/fuse each round trip wakes a daemon thread on whichever vCPU is idle (30-70 us
# on this kind of VM, 5 us on the caller's own CPU, and which one a run gets varies);
# io_uring queues are per CPU, so the request stays on the caller's CPU.
# Then the FUSE requests each operation costs (kernel tracepoints: deterministic).
start dev --transport dev-fuse --coherence on --entry-timeout 1 --attr-timeout 1
PMXFS_RUN_DIR=$WORK/on/run "$BIN" status --mount "$WORK/on/mnt" | grep transport
PMXFS_RUN_DIR=$WORK/dev/run "$BIN" status --mount "$WORK/dev/mnt" | grep transport
if ! [ -d /sys/kernel/tracing/events ]; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi
cat >"$WORK/phases.py" <<'PY'
import json, os, sys, time, re, collections
N, data = 2000, b"x" * 4096
T = "/sys/kernel/tracing"
def tw(p, v):
    with open(f"{T}/{p}", "w") as f: f.write(v)
def run_round(mnt, tag, trace=False):
    d = os.path.join(mnt, f"bench-{tag}"); os.mkdir(d)
    def create(i):
        with open(f"{d}/f{i}", "wb") as f: f.write(data)
    def read(i):
        with open(f"{d}/f{i}", "rb") as f: f.read()
    phases = [("create+write 4KiB+close", create), ("read", read),
              ("stat", lambda i: os.stat(f"{d}/f{i}")),
              ("rename", lambda i: os.rename(f"{d}/f{i}", f"{d}/g{i}")),
              ("unlink", lambda i: os.unlink(f"{d}/g{i}"))]
    out = {}
    for name, fn in phases:
        if trace:
            tw("trace", ""); tw("events/fuse/fuse_request_send/enable", "1"); tw("tracing_on", "1")
        t0 = time.perf_counter()
        for i in range(N): fn(i)
        dt = time.perf_counter() - t0
        if trace:
            tw("tracing_on", "0"); tw("events/fuse/fuse_request_send/enable", "0")
            ops = collections.Counter(re.findall(r"opcode \d+ \(FUSE_(\w+)\)", open(f"{T}/trace").read()))
            out[name] = " ".join(f"{op} {c / N:.2f}" for op, c in ops.most_common())
        else:
            out[name] = N / dt
    os.rmdir(d)
    return out
mode = sys.argv[1]
if mode == "round":
    print(json.dumps(run_round(sys.argv[2], sys.argv[3])))
elif mode == "report":
    rows = [json.loads(l) for l in open(sys.argv[2])]
    sides = [s for s in ("io_uring", "/dev/fuse", "pmxcfs") if any(r["side"] == s for r in rows)]
    phases = list(rows[0]["rates"])
    print("every round, ops/s:")
    for r in rows:
        print(f"  round {r['round']} {r['side']:<10}" + "".join(f" {k.split()[0]} {r['rates'][k]:>8,.0f}" for k in phases))
    med = lambda s, k: sorted(r["rates"][k] for r in rows if r["side"] == s)[len([1 for r in rows if r["side"] == s]) // 2]
    print(f"{'2,000 files, median ops/s':<28}" + "".join(f" {s:>10}" for s in sides) + ("   io_uring/pmxcfs per round (worst)" if "pmxcfs" in sides else ""))
    for k in phases:
        line = f"{k:<28}" + "".join(f" {med(s, k):>10,.0f}" for s in sides)
        if "pmxcfs" in sides:
            by = collections.defaultdict(dict)
            for r in rows: by[r["round"]][r["side"]] = r["rates"][k]
            ratios = [v["io_uring"] / v["pmxcfs"] for v in by.values() if "pmxcfs" in v and "io_uring" in v]
            line += "   " + " ".join(f"{x:.2f}" for x in ratios) + f"  ({min(ratios):.2f}x)"
        print(line)
elif mode == "requests":
    if not os.path.isdir(f"{T}/events/fuse"):
        print("(no fuse tracepoints in this kernel: request counts skipped)"); sys.exit(0)
    for name, v in run_round(sys.argv[2], "trace", trace=True).items():
        print(f"{name:<28} FUSE requests per op: {v}")
PY

if [ -n "$CFS" ]; then
  nsenter -t "$HOLDER" -m -n -u -- "$CFS" -l -f >"$WORK/pmxcfs.log" 2>&1 </dev/null &
  CFS_PID=$!
  for _ in $(seq 200); do nsenter -t "$HOLDER" -m -- test -e /etc/pve/.version && break; sleep 0.05; done
  nsenter -t "$HOLDER" -m -- test -e /etc/pve/.version || { echo "pmxcfs did not start: $(cat "$WORK/pmxcfs.log")" >&2; exit 1; }
  echo "pmxcfs: $CFS (local mode, pid $CFS_PID)"
else
  echo "pmxcfs: not measured (set PMXCFS_BIN; see scripts/bench-ipc.sh's header to build it)"
fi
ROUNDS=${ROUNDS:-5}
: >"$WORK/rounds"
side_round() { # side_round SIDE ROUND
  local out
  case $1 in
    io_uring) out=$(python3 "$WORK/phases.py" round "$WORK/on/mnt" "r$2") ;;
    /dev/fuse) out=$(python3 "$WORK/phases.py" round "$WORK/dev/mnt" "r$2") ;;
    pmxcfs) out=$(nsenter -t "$HOLDER" -m -n -u -- python3 "$WORK/phases.py" round /etc/pve "r$2") ;;
  esac
  echo "{\"side\": \"$1\", \"round\": $2, \"rates\": $out}" >>"$WORK/rounds"
}
for ((r = 1; r <= ROUNDS; r++)); do
  sides=(io_uring /dev/fuse)
  [ -n "$CFS" ] && sides+=(pmxcfs)
  ((r % 2)) || sides=($(printf '%s\n' "${sides[@]}" | tac))
  for s in "${sides[@]}"; do side_round "$s" "$r"; done
done
python3 "$WORK/phases.py" report "$WORK/rounds"
if [ -n "$CFS_PID" ]; then kill -9 "$CFS_PID"; wait "$CFS_PID" 2>/dev/null || true; fi
python3 "$WORK/phases.py" requests "$WORK/on/mnt"

io() { awk '/^write_bytes/ {print $2}' /proc/$1/io; }
# The WAL is folded into the database by a background checkpoint every 250 ms: let the
# earlier phases' checkpoint finish first, and count this file's own checkpoint too.
sleep 0.6
b0=$(io "$on_pid"); t0=$(date +%s.%N)
dd if=/dev/urandom of="$WORK/on/mnt/dd.bin" bs=512 count=1000 status=none
t1=$(date +%s.%N); sync; sleep 0.6; b1=$(io "$on_pid")
python3 - "$t0" "$t1" "$b0" "$b1" <<'PY'
import sys
t0, t1, b0, b1 = map(float, sys.argv[1:])
size = 512000
print(f"dd 500 KiB bs=512: {1000*(t1-t0):.1f} ms, daemon wrote {int(b1-b0):,} bytes to storage (WAL + checkpoint) = {(b1-b0)/size:.2f}x amplification")
PY
echo "(pmxcfs 9.1.6, measured for the issue on this machine kind, not in this run: dd 1,223 ms, 1,219x)"
