#!/usr/bin/env bash
# Write wear of a small file rewritten the way pve-ha-lrm rewrites
# nodes/<node>/lrm_status (open O_TRUNC, write 1 KiB, close), local mode, at 0.02 s,
# 0.5 s and 10 s spacing: the bytes the daemon sent to the storage layer per rewrite
# (its write_bytes, which Linux counts when a page is dirtied), from the first rewrite
# until the daemon has exited, so that what it folds and checkpoints later, the clean
# stop included, is counted too. Each case runs on a fresh daemon and database on this
# machine's disk. With PMXCFS_BIN (pmxcfs 9.1.6, built as the header of
# scripts/bench-ipc.sh says) pmxcfs runs the same cases in alternating rounds, in
# private namespaces with its /var/lib/pve-cluster on the same disk (stopped with
# SIGKILL: it commits every write at once, and 9.1.6 can hang on SIGTERM). Prints every
# round and the ratio pmxfs/pmxcfs; asserts nothing. Needs root.
#   usage: [ROUNDS=2] [N10=30] [PMXCFS_BIN=...] scripts/bench-wear.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/pmxcfs-ns.sh
. scripts/pmxcfs-ns.sh
if [ "${1:-}" != "--no-build" ]; then
  bash scripts/setup.sh >/dev/null
  export PATH="$HOME/.cargo/bin:$PATH"
  cargo build --release -q -p pmxfs
fi
PATH=$PATH:/usr/sbin:/sbin
ROUNDS=${ROUNDS:-2}
N10=${N10:-30}
BIN=${PMXFS_BIN:-$PWD/target/release/pmxfs}
CFS=${PMXCFS_BIN:-}
[ -z "$CFS" ] || CFS=$(realpath "$CFS")
WORK=$(mktemp -d /var/tmp/pmxfs-wear.XXXXXX)
HOLDER=
# /run is a tmpfs on a Proxmox node, not necessarily on this machine.
export RUNFS=$WORK/run
mkdir "$RUNFS"
mount -t tmpfs -o size=64m,mode=0755 pmxfs-wear-run "$RUNFS"
cleanup() {
  set +e
  umount -l "$RUNFS"
  [ -n "$HOLDER" ] && kill -9 "$HOLDER" 2>/dev/null && wait "$HOLDER" 2>/dev/null
  for m in "$WORK"/*/mnt; do mountpoint -q "$m" 2>/dev/null && umount -l "$m"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# measure.py IMPL DIR COUNT SPACING: start the daemon, rewrite, stop it, print bytes per
# rewrite (write_bytes at exit, from wait4's rusage, minus write_bytes before the first
# rewrite).
cat >"$WORK/measure.py" <<'PY'
import os, signal, subprocess, sys, time
impl, d, n, every = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
if impl == "pmxfs":
    binary = os.environ["BIN"]
    os.makedirs(f"{d}/mnt", exist_ok=True)
    # The run directory, pid file and restart flag on a tmpfs, as they are in service
    # (/run/pmxfs, /run/pve-cluster.pid, /run/pve-cluster/cfs-restart-flag): the
    # version file is mapped memory, and on a disk its page writes, and the directory
    # and inode blocks behind the other two, would count as wear.
    run = f"{os.environ['RUNFS']}/pmxfs-wear.{os.getpid()}"
    env = dict(os.environ, PMXFS_RUN_DIR=run, PMXFS_LOG="warn")
    p = subprocess.Popen([binary, "--local", "--foreground", "--nodename", "wear",
                          "--mount", f"{d}/mnt", "--db", f"{d}/config.db",
                          "--ipc-name", f"pmxfs-wear-{os.getpid()}", "--rrd-dir", f"{d}/rrd",
                          "--rrdcached", "", "--pidfile", f"{run}.pid",
                          "--restart-flag", f"{run}.flag"],
                         env=env, stdout=subprocess.DEVNULL, stderr=open(f"{d}/log", "w"))
    root, stop = f"{d}/mnt", signal.SIGTERM
else:
    p = subprocess.Popen([os.environ["CFS"], "-l", "-f"], stdout=subprocess.DEVNULL,
                         stderr=open(f"{d}/log", "w"))
    root, stop = "/etc/pve", signal.SIGKILL
for _ in range(400):
    if os.path.exists(f"{root}/.version"):
        break
    if p.poll() is not None:
        sys.exit(f"{impl} exited: " + open(f"{d}/log").read())
    time.sleep(0.05)
else:
    sys.exit(f"{impl} did not mount")
node = "wear" if impl == "pmxfs" else "bench"
os.makedirs(f"{root}/nodes/{node}", exist_ok=True)
path = f"{root}/nodes/{node}/lrm_status"
# What pve-ha-lrm writes: its mode, state and timestamp, and one result per service it
# ran, keyed by a random 22-character UID (so the text compresses as real JSON does,
# not as padding would), about 1 KiB; the timestamp changes with every rewrite.
import random
rng = random.Random(1)
uid = lambda: "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") for _ in range(22))
results = ",".join(f'"{uid()}":{{"exit_code":0,"sid":"vm:{100 + i}","state":"started"}}' for i in range(13))
def body_at(i):
    return ('{"mode":"active","results":{%s},"state":"active","timestamp":%d}' % (results, 1764700000 + 10 * i)).encode()
assert 1000 <= len(body_at(0)) <= 1100, len(body_at(0))
def written():
    for line in open(f"/proc/{p.pid}/io"):
        if line.startswith("write_bytes"):
            return int(line.split()[1])
time.sleep(1)  # let start-up writes settle before the baseline
w0 = written()
for i in range(n):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    os.write(fd, body_at(i))
    os.close(fd)
    if every and i + 1 < n:
        time.sleep(every)
p.send_signal(stop)
_, status, ru = os.wait4(p.pid, 0)
if impl == "pmxfs":
    import shutil
    shutil.rmtree(run, ignore_errors=True)
    for f in (f"{run}.pid", f"{run}.flag"):
        if os.path.exists(f):
            os.unlink(f)
print((ru.ru_oublock * 512 - w0) // n)
PY

if [ -n "$CFS" ]; then
  # pmxcfs's database on the real disk, as pmxfs's (a tmpfs counts no writes).
  mkdir -p "$WORK/cfs-lib"
  pmxcfs_ns "$WORK/ns" bench "" "" "$WORK/cfs-lib" || exit 1
  HOLDER=$PMXCFS_HOLDER
fi

measure() { # measure IMPL ROUND CASE COUNT SPACING
  local d=$WORK/$1-r$2-$3
  mkdir -p "$d"
  if [ "$1" = pmxfs ]; then
    BIN=$BIN python3 "$WORK/measure.py" pmxfs "$d" "$4" "$5"
  else
    nsenter -t "$HOLDER" -m -n -u -- rm -f /var/lib/pve-cluster/config.db /var/lib/pve-cluster/config.db-wal
    CFS=$CFS nsenter -t "$HOLDER" -m -n -u -- python3 "$WORK/measure.py" pmxcfs "$d" "$4" "$5"
    nsenter -t "$HOLDER" -m -- umount -l /etc/pve 2>/dev/null || true
  fi
}

CASES=("250 0.02" "40 0.5" "$N10 10")
RES=$WORK/results
: >"$RES"
printf 'write_bytes per 1 KiB rewrite (daemon, until it exited), %s rounds, alternating\n' "$ROUNDS"
printf '%-6s %-7s %14s %14s %14s\n' round daemon "250 @0.02s" "40 @0.5s" "$N10 @10s"
for ((r = 1; r <= ROUNDS; r++)); do
  order=pmxfs
  if [ -n "$CFS" ]; then
    if ((r % 2)); then order="pmxfs pmxcfs"; else order="pmxcfs pmxfs"; fi
  fi
  for impl in $order; do
    line=()
    for c in 0 1 2; do
      read -r n every <<<"${CASES[$c]}"
      b=$(measure "$impl" "$r" "c$c" "$n" "$every")
      line+=("$b")
      echo "$impl $c $b" >>"$RES"
    done
    printf '%-6s %-7s %12s B %12s B %12s B\n' "$r" "$impl" "${line[@]}"
  done
done
if [ -n "$CFS" ]; then
  python3 - "$RES" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for c, name in enumerate(["0.02 s", "0.5 s", "10 s"]):
    f = [int(r[2]) for r in rows if r[0] == "pmxfs" and r[1] == str(c)]
    p = [int(r[2]) for r in rows if r[0] == "pmxcfs" and r[1] == str(c)]
    a, b = statistics.median(f), statistics.median(p)
    print(f"at {name:6}: pmxfs {a:8.0f} B {f}  pmxcfs {b:8.0f} B {p}  ratio {a / b:.2f}x")
PY
fi
