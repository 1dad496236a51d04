#!/usr/bin/env bash
# Benchmarks of the replicated filesystem on a real 3-node cluster; prints figures,
# asserts nothing.
#  1. create+write 4 KiB+close per second: one writer (node 1), then three (one per node)
#  2. latency of that operation, p50 / p99 (one writer)
#  3. CPG messages per write (from the daemons' counters)
#  4. sync time of a node that rejoins after 10,000 files were written without it
#  5. time from `authkey token delete` on node 1 until node 3 rejects the token
# usage: scripts/bench-cluster.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" != "--no-build" ]; then
  bash scripts/setup.sh >/dev/null
  export PATH="$HOME/.cargo/bin:$PATH"
  cargo build --release -q -p pmxfs -p auth-key
fi
BIN=${PMXFS_BIN:-$PWD/target/release/pmxfs}
AK=${AUTHKEY_BIN:-$PWD/target/release/authkey}
DIR=/tmp/pmxfs-bench-cluster
exec 9>/run/pmxfs-cluster.lock
flock 9
trap 'bash scripts/cluster.sh down "$DIR" >/dev/null 2>&1 || true' EXIT
# Fresh databases: `cluster.sh up` keeps a directory's data, and files left by an
# earlier run would turn the creates measured below into overwrites.
bash scripts/cluster.sh down "$DIR" >/dev/null 2>&1 || true
rm -rf "$DIR"
PMXFS_BIN=$BIN bash scripts/cluster.sh up 3 "$DIR" >/dev/null 2>"$DIR.log" || { cat "$DIR.log"; exit 1; }
st() { "$BIN" status --json --mount "$DIR/n$1/mnt"; }
sent() { st "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cluster_messages"]["sent"])'; }

python3 - "$DIR" <<'PY'
import os, sys, time, threading
d = sys.argv[1]
data = b"x" * 4096
def writer(k, n, lat=None, tag=""):
    base = f"{d}/n{k}/mnt/bench{tag}{k}"
    os.makedirs(base, exist_ok=True)
    for i in range(n):
        t0 = time.perf_counter()
        with open(f"{base}/f{i}", "wb") as f:
            f.write(data)
        if lat is not None:
            lat.append(time.perf_counter() - t0)
N = 2000
lat = []
t0 = time.perf_counter(); writer(1, N, lat, "a"); dt = time.perf_counter() - t0
lat.sort()
print(f"1 writer : {N/dt:8,.0f} creates+writes/s   latency p50 {lat[len(lat)//2]*1e3:.2f} ms  p99 {lat[int(len(lat)*0.99)]*1e3:.2f} ms")
ts = [threading.Thread(target=writer, args=(k, N, None, "b")) for k in (1, 2, 3)]
t0 = time.perf_counter()
for t in ts: t.start()
for t in ts: t.join()
dt = time.perf_counter() - t0
print(f"3 writers: {3*N/dt:8,.0f} creates+writes/s (total)")
PY

# Names unique to this run: a file left by an earlier run on the same database would
# be an overwrite (no create message).
tag="msgs-$$-$(date +%s)"
s0=$(sent 1); python3 -c "
for i in range(500):
    open('$DIR/n1/mnt/$tag-%d' % i, 'wb').write(b'x' * 4096)"
s1=$(sent 1); python3 -c "
for i in range(500):
    open('$DIR/n1/mnt/$tag-%d' % i, 'wb').write(b'y' * 4096)"
s2=$(sent 1)
python3 -c "print(f'cpg messages multicast by the writer: new file (create+write+close) {($s1-$s0)/500:.2f}, overwrite (open O_TRUNC+write+close) {($s2-$s1)/500:.2f}')"

bash scripts/cluster.sh pmxfs-kill 3 "$DIR"
python3 -c "
import os
os.makedirs('$DIR/n1/mnt/rejoin', exist_ok=True)
for i in range(10000):
    open('$DIR/n1/mnt/rejoin/f%d' % i, 'wb').write(b'%d' % i)"
want=$(st 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
t0=$(date +%s.%N)
bash scripts/cluster.sh pmxfs-start 3 "$DIR"
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
