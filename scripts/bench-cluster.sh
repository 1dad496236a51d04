#!/usr/bin/env bash
# Benchmarks of the replicated filesystem on a real 3-node cluster (corosync 3, knet and
# crypto as scripts/cluster.sh sets it up); prints figures, asserts nothing (but exits
# non-zero if a benchmark call failed: a round that measured errors is not a result).
#
# Workloads, each file 4 KiB, created, written and closed by Python (as PVE's Perl does
# with its files), FILES files per writer:
#   create 1w      one writer on n1: files/s, latency p50/p99
#   create 3w      three writers, one per node: files/s in all
#   create 8w      eight writers on three nodes (3+3+2): files/s in all
#   rename 3w      three writers renaming their files: renames/s in all
#   unlink 3w      three writers removing them: unlinks/s in all
#   CPU per file   of the daemons and of the corosyncs (all three nodes), in the 3w and
#                  8w creates
# With PMXCFS_BIN (pmxcfs 9.1.6 built outside the repository, see the header of
# scripts/bench-ipc.sh) every workload runs ROUNDS rounds (default 3) alternating
# pmxfs, pmxcfs, pmxcfs, pmxfs, ... on the same corosync cluster, each round on fresh
# databases, and prints every round and the ratio of the medians (pmxfs/pmxcfs; for
# latency and CPU, lower is better). Without it, pmxfs's figures alone.
# Then, pmxfs only: CPG messages per file, the resync time of a node that rejoins after
# 10,000 files were written without it, and the time from `authkey token delete` on n1
# until n3 rejects the token.
#
# pmxcfs runs as scripts/mixed-kvstore.sh runs it: in its node's network namespace, with
# private mount and UTS namespaces held by a `sleep` (overlays on /etc and /var/lib,
# tmpfs on /run, host name nK); its writers enter that mount namespace. The namespaces
# are made before any FUSE mount exists (a new mount namespace copies live mounts).
# Holds /run/pmxfs-cluster.lock, as the tests do. Needs root.
# usage: [ROUNDS=3] [FILES=1000] [PMXCFS_BIN=...] scripts/bench-cluster.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/pmxcfs-ns.sh
. scripts/pmxcfs-ns.sh
if [ "${1:-}" != "--no-build" ]; then
  bash scripts/setup.sh >/dev/null
  export PATH="$HOME/.cargo/bin:$PATH"
  cargo build --release -q -p pmxfs -p auth-key
fi
PATH=$PATH:/usr/sbin:/sbin
ROUNDS=${ROUNDS:-3}
FILES=${FILES:-1000}
BIN=${PMXFS_BIN:-$PWD/target/release/pmxfs}
AK=${AUTHKEY_BIN:-$PWD/target/release/authkey}
CFS=${PMXCFS_BIN:-}
[ -z "$CFS" ] || CFS=$(realpath "$CFS")
CLUSTER=$PWD/scripts/cluster.sh
DIR=/tmp/pmxfs-bench-cluster
WORK=$DIR.work
declare -A HOLDER=() CFS_PID=()

exec 9>/run/pmxfs-cluster.lock
flock 9
cleanup() {
  set +e
  {
    for k in "${!CFS_PID[@]}"; do kill -9 "${CFS_PID[$k]}"; done
    for k in "${!HOLDER[@]}"; do kill -9 "${HOLDER[$k]}"; done
    wait
  } 2>/dev/null
  for k in "${!CFS_PID[@]}"; do rm -f /dev/shm/qb-*-"${CFS_PID[$k]}"-* 2>/dev/null; done
  bash "$CLUSTER" down "$DIR" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
bash "$CLUSTER" down "$DIR" >/dev/null 2>&1 || true
rm -rf "$DIR" "$WORK"
mkdir -p "$WORK"
bash "$CLUSTER" up --no-pmxfs 3 "$DIR" >/dev/null 2>"$WORK/cluster.log" || { cat "$WORK/cluster.log"; exit 1; }

poll() { # poll SECS CMD...: every 0.1 s until CMD succeeds
  local end=$(($(date +%s%N) + $1 * 1000000000))
  shift
  until "$@"; do
    [ "$(date +%s%N)" -ge "$end" ] && return 1
    sleep 0.1
  done
}

if [ -n "$CFS" ]; then
  for k in 1 2 3; do
    pmxcfs_ns "$WORK/ns$k" "n$k" "pmx$k" "$DIR/n$k/corosync.conf" || exit 1
    HOLDER[$k]=$PMXCFS_HOLDER
  done
fi

cat >"$WORK/worker.py" <<'PY'
# worker.py MODE BASE FIRST COUNT THREADS GO OUT: COUNT files f<i> per thread in BASE
# (thread t of this process uses names t-<FIRST+i>); waits for the file GO, then times.
import json, os, sys, threading, time
mode, base, first, count, threads, go, out = sys.argv[1:]
first, count, threads = int(first), int(count), int(threads)
data = b"x" * 4096
lat, errs = [], []
def run(t):
    mine = []
    try:
        for i in range(first, first + count):
            p = f"{base}/{t}-{i}"
            t0 = time.perf_counter()
            if mode == "create":
                with open(p, "wb") as f:
                    f.write(data)
            elif mode == "rename":
                os.rename(p, p + ".r")
            else:
                os.unlink(p + ".r")
            mine.append(time.perf_counter() - t0)
    except OSError as e:
        errs.append(f"{mode} {p}: {e}")
    lat.extend(mine)
os.makedirs(base, exist_ok=True)
open(out + ".ready", "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
t0 = time.perf_counter()
ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
secs = time.perf_counter() - t0
lat.sort()
json.dump({"n": len(lat), "secs": secs, "errors": errs,
           "p50": lat[len(lat) // 2] if lat else 0, "p99": lat[int(len(lat) * 0.99)] if lat else 0},
          open(out, "w"))
PY

cpu_ticks() { # sum of utime+stime of the given pids
  local s=0 p f
  for p in "$@"; do
    read -r -a f <"/proc/$p/stat"
    s=$((s + f[13] + f[14]))
  done
  echo "$s"
}
corosync_pids() { cat "$DIR"/n{1,2,3}/corosync.pid; }

# --- one implementation's daemons
IMPL=''
start_impl() { # start_impl pmxfs|pmxcfs: fresh databases on all three nodes, all synced
  IMPL=$1
  local k
  for k in 1 2 3; do
    if [ "$IMPL" = pmxfs ]; then
      rm -f "$DIR/n$k/config.db"*
      PMXFS_BIN=$BIN bash "$CLUSTER" pmxfs-start "$k" "$DIR" >/dev/null
    else
      nsenter -t "${HOLDER[$k]}" -m -- rm -f /var/lib/pve-cluster/config.db /var/lib/pve-cluster/config.db-wal
      nsenter -t "${HOLDER[$k]}" -m -n -u -- "$CFS" -f >"$WORK/pmxcfs-n$k.log" 2>&1 </dev/null &
      CFS_PID[$k]=$!
    fi
  done
  for k in 1 2 3; do
    if ! poll 60 writable "$k"; then
      echo "bench-cluster: $IMPL on n$k did not become writable" >&2
      [ "$IMPL" = pmxfs ] || tail -n 20 "$WORK/pmxcfs-n$k.log" >&2
      exit 1
    fi
  done
}
stop_impl() {
  local k
  for k in 1 2 3; do
    if [ "$IMPL" = pmxfs ]; then
      bash "$CLUSTER" pmxfs-stop "$k" "$DIR" >/dev/null
    else
      kill -9 "${CFS_PID[$k]}" 2>/dev/null || true
      wait "${CFS_PID[$k]}" 2>/dev/null || true
      # Its dead mount would fail the next round's start.
      nsenter -t "${HOLDER[$k]}" -m -- umount -l /etc/pve 2>/dev/null || true
      rm -f /dev/shm/qb-*-"${CFS_PID[$k]}"-* 2>/dev/null || true
      unset "CFS_PID[$k]"
    fi
  done
}
daemon_pids() {
  local k
  for k in 1 2 3; do
    if [ "$IMPL" = pmxfs ]; then cat "$DIR/n$k/pmxfs.pid"; else echo "${CFS_PID[$k]}"; fi
  done
}
# in_node K CMD...: run CMD where node K's filesystem is mounted at root(K)
in_node() {
  local k=$1
  shift
  if [ "$IMPL" = pmxfs ]; then "$@"; else nsenter -t "${HOLDER[$k]}" -m -- "$@"; fi
}
root() { if [ "$IMPL" = pmxfs ]; then echo "$DIR/n$1/mnt"; else echo /etc/pve; fi; }
writable() { # a file made on node K shows on the other two
  local k=$1 j f="probe-$1-$RANDOM"
  # Not before the daemon mounted: a probe written into the bare directory would make
  # pmxcfs refuse to mount over it ("mountpoint is not empty").
  in_node "$k" mountpoint -q "$(root "$k")" || return 1
  in_node "$k" sh -c "echo x >$(root "$k")/$f" 2>/dev/null || return 1
  for j in 1 2 3; do poll 10 in_node "$j" test -e "$(root "$j")/$f" || return 1; done
  in_node "$k" rm -f "$(root "$k")/$f"
}

# run_workload MODE SPEC: SPEC is "k:threads ..." per node; prints "rate p50 p99"
SEQ=0
run_workload() {
  local mode=$1 spec=$2 s k t pids=() outs=() n first
  SEQ=$((SEQ + 1))
  rm -f "$WORK/go"
  for s in $spec; do
    k=${s%%:*} t=${s##*:}
    first=1
    out="$WORK/out-$SEQ-$k"
    rm -f "$out" "$out.ready"
    in_node "$k" python3 "$WORK/worker.py" "$mode" "$(root "$k")/b-$BATCH-n$k" "$first" "$FILES" "$t" \
      "$WORK/go" "$out" &
    pids+=($!) outs+=("$out")
  done
  for out in "${outs[@]}"; do poll 30 test -e "$out.ready"; done
  C0=$(cpu_ticks $(corosync_pids)) D0=$(cpu_ticks $(daemon_pids))
  : >"$WORK/go"
  wait "${pids[@]}"
  C1=$(cpu_ticks $(corosync_pids)) D1=$(cpu_ticks $(daemon_pids))
  python3 - "$C1" "$C0" "$D1" "$D0" "$(getconf CLK_TCK)" "${outs[@]}" <<'PY'
import json, sys
c1, c0, d1, d0, hz = map(int, sys.argv[1:6])
rs = [json.load(open(p)) for p in sys.argv[6:]]
errs = [e for r in rs for e in r["errors"]]
if errs:
    print("ERRORS", "; ".join(errs[:3]))
    sys.exit(1)
n = sum(r["n"] for r in rs)
secs = max(r["secs"] for r in rs)
print(f"{n / secs:.0f} {rs[0]['p50'] * 1e3:.2f} {rs[0]['p99'] * 1e3:.2f} "
      f"{(d1 - d0) / hz * 1e3 / n:.3f} {(c1 - c0) / hz * 1e3 / n:.3f}")
PY
}

# One round of every workload for the running implementation; appends to RESULTS.
RESULTS=$WORK/results
round() {
  local r=$1 line
  BATCH="$IMPL$r"
  line=$(run_workload create "1:1") || exit 1
  echo "$IMPL $r create1w $line" >>"$RESULTS"
  BATCH="$IMPL$r-3"
  line=$(run_workload create "1:1 2:1 3:1") || exit 1
  echo "$IMPL $r create3w $line" >>"$RESULTS"
  line=$(run_workload rename "1:1 2:1 3:1") || exit 1
  echo "$IMPL $r rename3w $line" >>"$RESULTS"
  line=$(run_workload unlink "1:1 2:1 3:1") || exit 1
  echo "$IMPL $r unlink3w $line" >>"$RESULTS"
  BATCH="$IMPL$r-8"
  line=$(run_workload create "1:3 2:3 3:2") || exit 1
  echo "$IMPL $r create8w $line" >>"$RESULTS"
  grep "^$IMPL $r " "$RESULTS" | sed 's/^/  /'
}

: >"$RESULTS"
echo "== $ROUNDS rounds, $FILES files per writer; columns: impl round workload ops/s p50_ms p99_ms daemon_cpu_ms/op corosync_cpu_ms/op"
for r in $(seq "$ROUNDS"); do
  if [ -z "$CFS" ]; then
    order=pmxfs
  elif [ $((r % 2)) = 1 ]; then
    order="pmxfs pmxcfs"
  else
    order="pmxcfs pmxfs"
  fi
  for impl in $order; do
    start_impl "$impl"
    round "$r"
    stop_impl
  done
done

python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def med(impl, wl, col):
    v = [float(r[col]) for r in rows if r[0] == impl and r[2] == wl]
    return (statistics.median(v), v) if v else (None, [])
names = {"create1w": "create+write+close, 1 writer", "create3w": "the same, 3 writers (1 per node)",
         "create8w": "the same, 8 writers on 3 nodes", "rename3w": "rename, 3 writers",
         "unlink3w": "unlink, 3 writers"}
print("== medians (every round in brackets)")
for wl, title in names.items():
    for col, what in [(3, "ops/s"), (4, "p50 ms"), (5, "p99 ms"), (6, "daemon CPU ms/op"), (7, "corosync CPU ms/op")]:
        if col in (4, 5) and wl != "create1w":
            continue
        if col in (6, 7) and wl not in ("create3w", "create8w"):
            continue
        a, av = med("pmxfs", wl, col)
        b, bv = med("pmxcfs", wl, col)
        s = f"{title:34} {what:19} pmxfs {a:9.2f} {av}"
        if b is not None:
            s += f"  pmxcfs {b:9.2f} {bv}  ratio {a / b:.2f}x"
        print(s)
PY

# --- pmxfs only
start_impl pmxfs
st() { "$BIN" status --json --mount "$DIR/n$1/mnt"; }
sent() { st "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cluster_messages"]["sent"])'; }
count_msgs() { # count_msgs LABEL PYTHON: CPG messages all nodes multicast per op
  local a b
  a=$(( $(sent 1) + $(sent 2) + $(sent 3) ))
  python3 -c "$2"
  b=$(( $(sent 1) + $(sent 2) + $(sent 3) ))
  python3 -c "print(f'cpg messages per op, all nodes: $1 {($b - $a) / 500:.2f}')"
}
tag="msgs-$$"
count_msgs "new file (create+write+close)" "
for i in range(500):
    open('$DIR/n1/mnt/$tag-%d' % i, 'wb').write(b'x' * 4096)"
count_msgs "overwrite (open O_TRUNC+write+close)" "
for i in range(500):
    open('$DIR/n1/mnt/$tag-%d' % i, 'wb').write(b'y' * 4096)"
count_msgs "rename" "
import os
for i in range(500):
    os.rename('$DIR/n1/mnt/$tag-%d' % i, '$DIR/n1/mnt/$tag-%d.r' % i)"
count_msgs "unlink" "
import os
for i in range(500):
    os.unlink('$DIR/n1/mnt/$tag-%d.r' % i)"

bash "$CLUSTER" pmxfs-kill 3 "$DIR"
python3 -c "
import os
os.makedirs('$DIR/n1/mnt/rejoin', exist_ok=True)
for i in range(10000):
    open('$DIR/n1/mnt/rejoin/f%d' % i, 'wb').write(b'%d' % i)"
want=$(st 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
t0=$(date +%s.%N)
PMXFS_BIN=$BIN bash "$CLUSTER" pmxfs-start 3 "$DIR" >/dev/null
for _ in $(seq 600); do
  v=$(st 3 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("version", 0))' 2>/dev/null || echo 0)
  [ "$v" -ge "$want" ] && break
  sleep 0.05
done
t1=$(date +%s.%N)
python3 -c "print(f'rejoin after 10,000 files written without the node: synced in {$t1-$t0:.2f} s (daemon start to version {$want})')"

secret=$("$AK" --base "$DIR/n1/mnt" token set bench@pam!t1)
for _ in $(seq 100); do "$AK" --base "$DIR/n3/mnt" token verify bench@pam!t1 "$secret" >/dev/null 2>&1 && break; sleep 0.05; done
python3 - "$AK" "$DIR" "$secret" <<'PY'
import subprocess, sys, time
ak, d, secret = sys.argv[1:]
t0 = time.perf_counter()
subprocess.run([ak, "--base", f"{d}/n1/mnt", "token", "delete", "bench@pam!t1"], check=True)
deleted = time.perf_counter()
polls = 0
while True:
    polls += 1
    r = subprocess.run([ak, "--base", f"{d}/n3/mnt", "token", "verify", "bench@pam!t1", secret],
                       capture_output=True)
    if r.returncode != 0:
        break
now = time.perf_counter()
print(f"token delete on n1 -> rejected on n3: {1e3*(now-deleted):.1f} ms after delete returned "
      f"({polls} verify process(es); delete itself took {1e3*(deleted-t0):.1f} ms)")
PY
stop_impl
