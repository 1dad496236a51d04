#!/usr/bin/env bash
# Benchmark of the `pve2` IPC server, pmxfs against pmxcfs 9.1.6 in the same run; prints
# figures, asserts nothing (but exits non-zero if any request failed: a round that
# measured errors is not a result).
#  1. GET_FS_VERSION requests/s from 1 and from 8 client processes
#  2. GET_CONFIG of a 4 KiB file, requests/s from 1 and from 8 client processes
#  3. SET_STATUS (kv/bench, 100-byte value) from 1 client: requests/s and latency
# Each workload runs ROUNDS rounds (default 3) of SECS seconds (default 3), alternating
# pmxfs, pmxcfs, pmxfs, ...; every round is printed, with the ratio pmxfs/pmxcfs.
# Clients are `ipc-bench` processes (tests/support/ipc_bench.rs) that start together.
#
# pmxcfs is measured when PMXCFS_BIN names its binary, built outside the repository
# (see "Building the reference daemon by hand" in shared/reference/pve-ipc.md):
#   apt-get install gcc make pkg-config libglib2.0-dev libfuse-dev libsqlite3-dev \
#     libcorosync-common-dev libcpg-dev libcmap-dev libquorum-dev libqb-dev librrd-dev
#   mkdir -p /tmp/pmxcfs-build && git -C PVE_CLUSTER_REPO archive HEAD src/pmxcfs |
#     tar -x -C /tmp/pmxcfs-build         # PVE_CLUSTER_REPO at "bump version to 9.1.6"
#   cd /tmp/pmxcfs-build/src/pmxcfs
#   echo '#define g_string_free_and_steal(s) g_string_free((s), FALSE)' >compat.h
#   CFLAGS='-include compat.h' make pmxcfs
#   PMXCFS_BIN=/tmp/pmxcfs-build/src/pmxcfs/pmxcfs scripts/bench-ipc.sh
# pmxcfs hard-codes /etc/pve, /var/lib/pve-cluster, /run/pve-cluster and the abstract
# socket @pve2, so it runs in private mount, network and UTS namespaces (overlays over
# /etc and /var/lib, tmpfs over /run and /dev/shm, host name `bench`, which /etc/hosts
# there maps to 10.99.0.1, an address on that namespace's own lo: pmxcfs refuses a node
# name that resolves only to 127.x); its clients enter the same mount and network
# namespaces (libqb's rings are in /dev/shm, the socket is per network namespace). It is
# killed with SIGKILL: 9.1.6 can hang in SIGTERM (pve-ipc.md). Without PMXCFS_BIN only
# pmxfs's figures are printed. Needs root.
# usage: [ROUNDS=3] [SECS=3] [PMXCFS_BIN=...] scripts/bench-ipc.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/pmxcfs-ns.sh
. scripts/pmxcfs-ns.sh
if [ "${1:-}" != "--no-build" ]; then
  bash scripts/setup.sh >/dev/null
  export PATH="$HOME/.cargo/bin:$PATH"
  cargo build --release -q -p pmxfs -p pmxfs-e2e --bins
fi
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-3}
BIN=${PMXFS_BIN:-$PWD/target/release/pmxfs}
BENCH=${IPC_BENCH_BIN:-$PWD/target/release/ipc-bench}
CFS=${PMXCFS_BIN:-}
WORK=$(mktemp -d /tmp/pmxfs-bench-ipc.XXXXXX)
IPC=pmxfs-bench-ipc-${WORK##*.}
FILE=bench4k.cfg
FS_PID='' CFS_PID='' HOLDER=''
CLIENTS=()

cleanup() {
  set +e
  {
    for p in "${CLIENTS[@]}"; do kill -9 "$p"; done
    [ -n "$CFS_PID" ] && kill -9 "$CFS_PID"
    [ -n "$HOLDER" ] && kill -9 "$HOLDER"
    if [ -n "$FS_PID" ]; then
      kill "$FS_PID"
      for _ in $(seq 100); do kill -0 "$FS_PID" || break; sleep 0.05; done
      kill -9 "$FS_PID"
    fi
    wait
  } 2>/dev/null
  mountpoint -q "$WORK/pmxfs/mnt" 2>/dev/null && umount -l "$WORK/pmxfs/mnt"
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "bench-ipc: $*" >&2; exit 1; }

# The 4 KiB file both daemons serve (3072 random bytes, base64: 4096 characters).
dd if=/dev/urandom bs=3072 count=1 status=none | base64 -w0 >"$WORK/$FILE"
[ "$(stat -c %s "$WORK/$FILE")" = 4096 ] || die "test file is not 4096 bytes"

# Runs `ipc-bench` against side $1 (pmxfs or pmxcfs) with the remaining arguments.
client() {
  local side=$1; shift
  if [ "$side" = pmxfs ]; then
    "$BENCH" "$IPC" "$@"
  else
    nsenter -t "$HOLDER" -m -n -- "$BENCH" pve2 "$@"
  fi
}

# Polls (up to 20 s) until side $1 answers GET_CONFIG of the 4 KiB file with its 4096 bytes;
# $2 is the daemon's pid.
wait_ipc() {
  for _ in $(seq 400); do
    kill -0 "$2" 2>/dev/null || return 1
    client "$1" config:"$FILE" 0.01 >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  return 1
}

# --- pmxfs, in this machine's namespaces
d=$WORK/pmxfs
mkdir -p "$d/mnt"
PMXFS_RUN_DIR=$d/run PMXFS_LOG=warn "$BIN" --local --foreground --nodename bench \
  --mount "$d/mnt" --db "$d/config.db" --ipc-name "$IPC" --rrd-dir "$d/rrd" --rrdcached "" \
  --pidfile "$d/pid" --restart-flag "$d/run/restart-flag" --corosync-conf "$d/corosync.conf" \
  >/dev/null 2>"$d/log" &
FS_PID=$!
for _ in $(seq 400); do
  [ -e "$d/mnt/.version" ] && break
  kill -0 "$FS_PID" 2>/dev/null || break
  sleep 0.05
done
[ -e "$d/mnt/.version" ] || die "pmxfs did not mount: $(cat "$d/log")"
cp "$WORK/$FILE" "$d/mnt/$FILE"
wait_ipc pmxfs "$FS_PID" || die "pmxfs's IPC server did not answer: $(cat "$d/log")"
SIDES=(pmxfs)

# --- pmxcfs, in private namespaces held open by a `sleep` (the holder)
if [ -z "$CFS" ]; then
  echo "pmxcfs: skipped (PMXCFS_BIN is not set; see this script's header to build it)"
elif ! [ -f "$CFS" ] || ! [ -x "$CFS" ]; then
  echo "pmxcfs: skipped (PMXCFS_BIN=$CFS is not an executable file)"
else
  CFS=$(realpath "$CFS")
  c=$WORK/pmxcfs
  pmxcfs_ns "$c/ns" bench "" || die "no namespace for pmxcfs"
  HOLDER=$PMXCFS_HOLDER
  nsenter -t "$HOLDER" -m -n -u -- "$CFS" -l -f >"$c/log" 2>&1 &
  CFS_PID=$!
  for _ in $(seq 400); do
    nsenter -t "$HOLDER" -m -- mountpoint -q /etc/pve && break
    kill -0 "$CFS_PID" 2>/dev/null || break
    sleep 0.05
  done
  nsenter -t "$HOLDER" -m -- mountpoint -q /etc/pve || die "pmxcfs did not mount: $(cat "$c/log")"
  nsenter -t "$HOLDER" -m -- cp "$WORK/$FILE" "/etc/pve/$FILE"
  wait_ipc pmxcfs "$CFS_PID" || die "pmxcfs's IPC server did not answer: $(cat "$c/log")"
  SIDES+=(pmxcfs)
fi

# --- rounds
FAILED=0
declare -A OPS LAT CPU
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system, all threads
# One round: side $1, op $2, $3 clients in parallel for SECS seconds, all starting at
# the same moment; sets OPS[key] (requests/s summed over the clients), LAT[key] (p50
# p99 max of client 1, us) and CPU[key] (the daemon's CPU time per request, us).
round() {
  local side=$1 op=$2 n=$3 key=$4 start i t0 t1 pid out=$WORK/round
  pid=$FS_PID
  [ "$side" = pmxfs ] || pid=$CFS_PID
  rm -f "$out".*
  start=$(($(date +%s%3N) + 500))
  CLIENTS=()
  for i in $(seq "$n"); do
    client "$side" "$op" "$SECS" "$start" >"$out.$i" 2>"$out.$i.err" &
    CLIENTS+=("$!")
  done
  sleep "$(awk -v s="$start" -v now="$(date +%s%3N)" 'BEGIN {d = (s - now) / 1000; print (d > 0 ? d : 0)}')"
  t0=$(ticks "$pid")
  local bad=0
  for i in $(seq "$n"); do
    wait "${CLIENTS[i - 1]}" || bad=1
  done
  t1=$(ticks "$pid")
  CLIENTS=()
  if ((bad)); then
    FAILED=1
    OPS[$key]=FAILED
    LAT[$key]="- - -"
    CPU[$key]=-
    echo "  $side round failed: $(cat "$out".*.err | sort | uniq -c | sed -E "s/^ *([0-9]+) /\1x /" | head -3)" >&2
    return
  fi
  OPS[$key]=$(for i in $(seq "$n"); do cat "$out.$i"; done |
    sed -n 's/.*ops_per_s=\([0-9]*\).*/\1/p' | awk '{s += $1} END {printf "%d", s}')
  LAT[$key]=$(sed 's/.*p50_us=\([0-9.]*\) p99_us=\([0-9.]*\) max_us=\([0-9.]*\).*/\1 \2 \3/' "$out.1")
  CPU[$key]=$(for i in $(seq "$n"); do cat "$out.$i"; done | sed -n 's/^ops=\([0-9]*\) .*/\1/p' |
    awk -v t=$((t1 - t0)) -v hz="$HZ" '{s += $1} END {printf "%.1f", s ? t * 1e6 / hz / s : 0}')
}

WORKLOADS=("version 1" "version 8" "config:$FILE 1" "config:$FILE 8" "set-status 1")
NAMES=("GET_FS_VERSION, 1 client" "GET_FS_VERSION, 8 clients" "GET_CONFIG 4 KiB, 1 client"
  "GET_CONFIG 4 KiB, 8 clients" "SET_STATUS, 1 client")
echo "pve2 IPC, $ROUNDS rounds of ${SECS}s per workload, alternating ${SIDES[*]}; $(nproc) CPUs"
echo "pmxfs: $BIN"
if [ -n "$CFS_PID" ]; then echo "pmxcfs: $CFS"; fi
echo "columns: requests/s summed over the clients; latency of client 1 (p50/p99/max, us);"
echo "cpu us = the daemon's user+system CPU time per request (clock ticks of 1/$HZ s)"
SUMMARY=()
for w in "${!WORKLOADS[@]}"; do
  read -r op n <<<"${WORKLOADS[w]}"
  echo
  echo "== ${NAMES[w]}"
  printf '%-5s | %-9s %24s %8s' round pmxfs "p50/p99/max us" "cpu us"
  if [ -n "$CFS_PID" ]; then
    printf ' | %-9s %24s %8s | %s' pmxcfs "p50/p99/max us" "cpu us" pmxfs/pmxcfs
  fi
  echo
  ratios=
  for r in $(seq "$ROUNDS"); do
    for side in "${SIDES[@]}"; do round "$side" "$op" "$n" "$w.$side.$r"; done
    read -r a b m <<<"${LAT[$w.pmxfs.$r]}"
    printf '%-5s | %9s %24s %8s' "$r" "${OPS[$w.pmxfs.$r]}" "$a / $b / $m" "${CPU[$w.pmxfs.$r]}"
    if [ -n "$CFS_PID" ]; then
      read -r a b m <<<"${LAT[$w.pmxcfs.$r]}"
      x=$(awk -v p="${OPS[$w.pmxfs.$r]}" -v c="${OPS[$w.pmxcfs.$r]}" \
        'BEGIN {if (p + 0 > 0 && c + 0 > 0) printf "%.2fx", p / c; else print "-"}')
      printf ' | %9s %24s %8s | %s' "${OPS[$w.pmxcfs.$r]}" "$a / $b / $m" "${CPU[$w.pmxcfs.$r]}" "$x"
      ratios+=" $x"
    fi
    echo
  done
  if [ -n "$CFS_PID" ]; then
    SUMMARY+=("$(printf '%-30s%s' "${NAMES[w]}:" "$ratios")")
  fi
done
if [ -n "$CFS_PID" ]; then
  echo
  echo "== pmxfs/pmxcfs requests/s, per round (goal: >= 2x with 8 clients)"
  printf '%s\n' "${SUMMARY[@]}"
fi
if ((FAILED)); then
  echo "bench-ipc: some rounds failed (see above): not a result" >&2
  exit 1
fi
