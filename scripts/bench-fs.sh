#!/usr/bin/env bash
# Benchmarks of the single-node filesystem; prints figures, asserts nothing.
#  1. stat()/s on an unlocked path, --coherence on vs off (1 s timeouts), alternating runs
#  2. create+write 4 KiB+close, read, stat, rename, unlink over 2,000 files (Python loop,
#     like the pmxcfs baseline in the issue)
#  3. 500 KiB written with dd bs=512: wall time and bytes the daemon wrote to storage
# usage: scripts/bench-fs.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" != "--no-build" ]; then
  bash scripts/setup.sh >/dev/null
  export PATH="$HOME/.cargo/bin:$PATH"
  cargo build --release -q -p pmxfs
fi
BIN=$PWD/target/release/pmxfs
WORK=$(mktemp -d /tmp/pmxfs-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for m in "$WORK"/*/mnt; do mountpoint -q "$m" 2>/dev/null && umount -l "$m"; done
  rm -rf "$WORK"
}
trap cleanup EXIT

STARTED=
start() { # name, extra args...; sets STARTED to the daemon's pid
  local d=$WORK/$1; shift
  mkdir -p "$d"
  PMXFS_RUN_DIR=$d/run PMXFS_LOG=warn "$BIN" --local --nodename bench --mount "$d/mnt" \
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

# Per-file phases. A FUSE round trip on this 2-vCPU VM costs ~5 us when the client
# and the daemon thread share a CPU and 30-70 us when the scheduler puts them on
# different ones (waking an idle vCPU), and which one happens varies from run to run.
# So: the median of 3 rounds as the headline (unpinned, like the pmxcfs baseline), the
# FUSE requests each operation costs (kernel tracepoints: deterministic), and one round
# with client and daemon pinned to one CPU (what the daemon itself costs).
cat >"$WORK/phases.py" <<'PY'
import os, sys, time, re, collections
mnt, rounds, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
N, data = 2000, b"x" * 4096
T = "/sys/kernel/tracing"
def tw(p, v):
    with open(f"{T}/{p}", "w") as f: f.write(v)
def run_round(tag, trace=False):
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
if mode == "rates":
    res = [run_round(r) for r in range(rounds)]
    print(f"{'2,000 files, ops/s':<28} {'median':>10} {'best':>10}   ({rounds} rounds)")
    for name in res[0]:
        v = sorted(r[name] for r in res)
        print(f"{name:<28} {v[len(v) // 2]:>10,.0f} {v[-1]:>10,.0f}")
elif mode == "pinned":
    for name, v in run_round("pinned").items():
        print(f"{name:<28} {v:>10,.0f} ops/s   (client and daemon on CPU 0)")
elif mode == "requests":
    if not os.path.isdir(f"{T}/events/fuse"):
        print("(no fuse tracepoints in this kernel: request counts skipped)"); sys.exit(0)
    for name, v in run_round("trace", trace=True).items():
        print(f"{name:<28} FUSE requests per op: {v}")
PY
python3 "$WORK/phases.py" "$WORK/on/mnt" 3 rates
python3 "$WORK/phases.py" "$WORK/on/mnt" 1 requests
if command -v taskset >/dev/null && [ "$(nproc)" -gt 1 ]; then
  taskset -a -p -c 0 "$on_pid" >/dev/null
  taskset -c 0 python3 "$WORK/phases.py" "$WORK/on/mnt" 1 pinned
  taskset -a -p -c "0-$(($(nproc) - 1))" "$on_pid" >/dev/null
fi

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
echo "(pmxcfs 9.1.6, same machine kind: create 4,031/s read 4,752/s stat 30,906/s rename 7,046/s unlink 6,993/s; dd 1,223 ms, 1,219x)"
