#!/usr/bin/env bash
# Manual interoperability check, not part of CI: pmxfs and the real pmxcfs 9.1.6 share
# the status kvstore (CPG group `pve_kvstore_v1`, pve-ipc.md §2 and §3) in one corosync
# cluster. Node n1 runs pmxfs, node n2 runs pmxcfs; their trees stay separate (pmxfs
# replicates on its own group `pmxfs_dcdb_v2`), only the kvstore is shared. Through the
# `pve2` IPC service of each node (tests/support/ipc_call.rs) it checks:
#   a. SET_STATUS kv/mixed on one node is returned by GET_STATUS (key, node) on the other
#   b. LOG_CLUSTER_MSG on each node; GET_CLUSTER_LOG shows both entries on both nodes,
#      and the two logs are identical (uid, time, node, pri, tag, pid, user, msg)
#   c. GET_CLUSTER_INFO (.members): both nodes online, each with its `ip`, on both
#   d. RRD: SET_STATUS rrd/pve-node-9.0/<node> on each node makes the RRD file appear on
#      both (pmxcfs: /var/lib/rrdcached/db in its namespace; pmxfs: DIR/n1/rrd), with
#      the same `rrdtool info`; GET_RRD_DUMP has the line on both
#   e. cut n2's link, log a message and set a key on each side, heal, wait for the
#      resync: both logs hold the same entries in the same order, each once, and each
#      side has the key the other set while cut
#   f. neither daemon logged a kvstore error (pmxcfs: wrong size, cant parse, leaving
#      CPG group, received short, ...; pmxfs: kvstore warnings/errors, dropping)
# Prints PASS/FAIL per check and exits non-zero on any FAIL.
#
# pmxcfs runs in netns pmx2 with private mount and UTS namespaces held by a `sleep`
# (host name n2; overlays on /etc and /var/lib, tmpfs on /run; /dev/shm stays shared so
# that pmxcfs reaches corosync's libqb rings), as scripts/bench-ipc.sh does. It is killed
# with SIGKILL (9.1.6 can hang on SIGTERM). Holds /run/pmxfs-cluster.lock, as the tests do.
#
# usage (root): [PMXCFS_BIN=...] [MIXED_KEEP=DIR] scripts/mixed-kvstore.sh
#   PMXCFS_BIN  pmxcfs 9.1.6 (default /tmp/pmxcfs-build/src/pmxcfs/pmxcfs; to build it
#               see the header of scripts/bench-ipc.sh)
#   PMXFS_BIN, IPC_CALL_BIN  default target/release/{pmxfs,ipc-call} (build them with
#               cargo build --release -p pmxfs -p pmxfs-e2e --bins)
#   MIXED_KEEP  copy both daemons' logs (and corosync's) there before cleaning up
set -euo pipefail
PATH=$PATH:/usr/sbin:/sbin
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=$REPO/scripts/cluster.sh
PMXCFS_BIN=${PMXCFS_BIN:-/tmp/pmxcfs-build/src/pmxcfs/pmxcfs}
PMXFS_BIN=${PMXFS_BIN:-$REPO/target/release/pmxfs}
IPC_CALL=${IPC_CALL_BIN:-$REPO/target/release/ipc-call}

die() { echo "mixed-kvstore: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "must run as root"
for b in "$PMXCFS_BIN" "$PMXFS_BIN" "$IPC_CALL"; do
  [ -f "$b" ] && [ -x "$b" ] || die "$b is not an executable file"
done
for t in jq xxd rrdtool nsenter unshare flock; do
  command -v "$t" >/dev/null || die "$t is missing"
done
PMXCFS_BIN=$(realpath "$PMXCFS_BIN")

exec 9>/run/pmxfs-cluster.lock
if ! flock -n 9; then
  echo "mixed-kvstore: waiting for /run/pmxfs-cluster.lock (a test suite holds it)" >&2
  flock 9
fi

DIR=$(mktemp -d /tmp/pmxfs-mixed.XXXXXX)
NS=$DIR/pmxcfs-ns   # scratch of pmxcfs's namespaces (a tmpfs inside them)
CFS_LOG=$DIR/n2/pmxcfs.log
FS_LOG=$DIR/n1/pmxfs.log
FS_PID='' CFS_PID='' HOLDER=''
FAILS=0 CHECKS=0

cleanup() {
  local rc=$?
  set +e
  {
    [ -n "$CFS_PID" ] && kill -9 "$CFS_PID"
    [ -n "$HOLDER" ] && kill -9 "$HOLDER"
    if [ -n "$FS_PID" ]; then
      kill "$FS_PID"
      for _ in $(seq 50); do kill -0 "$FS_PID" || break; sleep 0.1; done
      kill -9 "$FS_PID"
    fi
    wait
  } 2>/dev/null
  if awk -v m="$DIR/n1/mnt" '$5==m {f=1} END {exit !f}' /proc/self/mountinfo; then
    for c in $(awk -v m="$DIR/n1/mnt" '$5==m { split($3, mm, ":"); print mm[2] }' /proc/self/mountinfo); do
      echo 1 >"/sys/fs/fuse/connections/$c/abort" 2>/dev/null
    done
    umount -l "$DIR/n1/mnt" 2>/dev/null
  fi
  # libqb files of pmxcfs's connections, left by the SIGKILL.
  [ -n "$CFS_PID" ] && rm -f /dev/shm/qb-*-"$CFS_PID"-* /dev/shm/qb-"$CFS_PID"-* 2>/dev/null
  if [ -n "${MIXED_KEEP:-}" ]; then
    mkdir -p "$MIXED_KEEP"
    cp "$FS_LOG" "$MIXED_KEEP/pmxfs-n1.log" 2>/dev/null
    cp "$CFS_LOG" "$MIXED_KEEP/pmxcfs-n2.log" 2>/dev/null
    for k in 1 2; do cp "$DIR/n$k/corosync.log" "$MIXED_KEEP/corosync-n$k.log" 2>/dev/null; done
  fi
  bash "$CLUSTER" down "$DIR" >/dev/null 2>&1
  rm -rf "$DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() { CHECKS=$((CHECKS + 1)); echo "PASS $*"; }
fail() { CHECKS=$((CHECKS + 1)); FAILS=$((FAILS + 1)); echo "FAIL $*"; }
info() { echo "     $*"; }

# poll SECS CMD...: run CMD every 0.2 s until it succeeds; fails after SECS seconds.
poll() {
  local end=$(($(date +%s%N) + $1 * 1000000000))
  shift
  while :; do
    "$@" && return 0
    [ "$(date +%s%N)" -ge "$end" ] && return 1
    sleep 0.2
  done
}

# --- payloads (pve-ipc.md §1.4), as hex
hex() { printf '%s' "$1" | xxd -p | tr -d '\n'; }
zeros() { printf "%0$(($1 * 2))d" 0; }
field() { # field STRING N: STRING NUL-padded to N bytes
  local h
  h=$(hex "$1")
  printf '%s%s' "$h" "$(zeros $(($2 - ${#h} / 2)))"
}
p_set() { printf '%s%s00' "$(field "$1" 256)" "$(hex "$2")"; }          # key, value
p_get() { printf '%s%s' "$(field "$1" 256)" "$(field "$2" 256)"; }       # key, node
p_log() { # ident tag msg (priority 6, info)
  printf '06%02x%02x%s00%s00%s00' $((${#1} + 1)) $((${#2} + 1)) "$(hex "$1")" "$(hex "$2")" "$(hex "$3")"
}
p_clog() { printf '%02x%02x%02x%02x%s00' $(($1 & 255)) $(($1 >> 8 & 255)) 0 0 "$(zeros 12)"; } # max, user ""
OP_INFO=2 OP_SET=4 OP_GET=5 OP_LOG=7 OP_CLOG=8 OP_RRD=10

# ipc NODE OP HEX: one request to node NODE's `pve2`; prints "error hexbody".
ipc() {
  if [ "$1" = 1 ]; then
    timeout 10 nsenter --net=/run/netns/pmx1 -- "$IPC_CALL" pve2 "$2" "$3"
  else
    timeout 10 nsenter -t "$HOLDER" -m -n -- "$IPC_CALL" pve2 "$2" "$3"
  fi
}
# body NODE OP HEX: the reply body as bytes (trailing NULs dropped); fails on an error.
body() {
  local out err b
  out=$(ipc "$@") || return 1
  read -r err b <<<"$out"
  [ "$err" = 0 ] || return 1
  printf '%s' "$b" | xxd -r -p | tr -d '\0'
}
members() { body "$1" $OP_INFO ""; }
clog() { body "$1" $OP_CLOG "$(p_clog 200)"; }
# in_n2 CMD...: run CMD in pmxcfs's mount namespace.
in_n2() { nsenter -t "$HOLDER" -m -- "$@"; }

# online NODE WHO STATE: node NODE's .members says WHO's online is STATE (1/0).
online() {
  members "$1" 2>/dev/null | jq -e --arg n "$2" --argjson s "$3" '.nodelist[$n].online == $s' >/dev/null
}
# cfs_synced: pmxcfs's newest kvstore membership has both nodes and it is in sync since.
cfs_synced() {
  awk '/^\[status\] notice: members:/ { m = gsub(/[0-9]+\/[0-9]+/, "&"); s = 0 }
       /^\[status\] notice: all data is up to date/ { s = 1 }
       END { exit !(m == 2 && s) }' "$CFS_LOG"
}
# Counts of lines that say "members" in pmxcfs's status log (to wait for a new one).
cfs_confchgs() { grep -c '^\[status\] notice: members:' "$CFS_LOG" || true; }

# ------------------------------------------------------------------------- cluster
echo "== setup"
bash "$CLUSTER" up --no-pmxfs 2 "$DIR" >/dev/null 2>"$DIR/cluster.log" ||
  die "cluster.sh up failed: $(cat "$DIR/cluster.log")"
info "corosync: 2 nodes quorate in $DIR"

# pmxcfs's namespaces first: a mount namespace made while pmxfs's FUSE mount is live
# would get a copy of it.
ns_setup() { # runs inside the new namespaces, then becomes the holder
  local t=$1 conf=$2
  mount -t tmpfs tmpfs "$t"
  mkdir -p "$t/etc/up" "$t/etc/work" "$t/lib/up" "$t/lib/work"
  mount -t overlay overlay -o "lowerdir=/etc,upperdir=$t/etc/up,workdir=$t/etc/work" /etc
  mount -t overlay overlay -o "lowerdir=/var/lib,upperdir=$t/lib/up,workdir=$t/lib/work" /var/lib
  mount -t tmpfs tmpfs /run
  rm -rf /etc/pve /var/lib/pve-cluster /var/lib/rrdcached
  mkdir -p /etc/pve /etc/corosync /var/lib/pve-cluster /var/lib/rrdcached/db /run/pve-cluster
  cp "$conf" /etc/corosync/corosync.conf
  printf '127.0.0.1 localhost\n10.77.0.1 n1\n10.77.0.2 n2\n' >/etc/hosts
  hostname n2
  : >"$t.ready"
  exec sleep infinity
}
mkdir -p "$NS"
nsenter --net=/run/netns/pmx2 -- unshare -m -u --propagation private -- \
  bash -c "set -euo pipefail; $(declare -f ns_setup); ns_setup $(printf %q "$NS") $(printf %q "$DIR/n2/corosync.conf")" \
  >"$DIR/ns.log" 2>&1 </dev/null &
HOLDER=$!
poll 10 test -e "$NS.ready" || die "pmxcfs namespace setup failed: $(cat "$DIR/ns.log")"

# pmxfs on n1, as cluster.sh's start_pmxfs.
mkdir -p "$DIR/n1/mnt" "$DIR/n1/rrd" "$DIR/n1/run"
cp "$DIR/n1/corosync.conf" "$DIR/n1/pve-corosync.conf"
PMXFS_RUN_DIR=$DIR/n1/run nsenter --net=/run/netns/pmx1 -- "$PMXFS_BIN" --foreground \
  --nodename n1 --mount "$DIR/n1/mnt" --db "$DIR/n1/config.db" \
  --corosync-conf "$DIR/n1/pve-corosync.conf" --rrd-dir "$DIR/n1/rrd" --rrdcached "" \
  --pidfile "$DIR/n1/pmxfs.pid" --restart-flag "$DIR/n1/restart-flag" \
  >"$FS_LOG" 2>&1 </dev/null &
FS_PID=$!
fs_up() { kill -0 "$FS_PID" 2>/dev/null && timeout 2 test -e "$DIR/n1/mnt/.members" && members 1 >/dev/null 2>&1; }
poll 30 fs_up || die "pmxfs did not come up: $(tail -20 "$FS_LOG")"
info "pmxfs n1: pid $FS_PID, $("$PMXFS_BIN" --version 2>/dev/null || echo "$PMXFS_BIN")"

# pmxcfs on n2, cluster mode (it imports /etc/corosync/corosync.conf into a new db).
nsenter -t "$HOLDER" -m -n -u -- "$PMXCFS_BIN" -f >"$CFS_LOG" 2>&1 </dev/null &
CFS_PID=$!
cfs_up() { kill -0 "$CFS_PID" 2>/dev/null && in_n2 mountpoint -q /etc/pve && members 2 >/dev/null 2>&1; }
poll 30 cfs_up || die "pmxcfs did not come up: $(tail -20 "$CFS_LOG")"
info "pmxcfs n2: pid $CFS_PID, $PMXCFS_BIN"

both_online() {
  local k w
  for k in 1 2; do for w in n1 n2; do online $k $w 1 || return 1; done; done
}
if poll 60 cfs_synced && poll 30 both_online; then
  pass "setup: pmxcfs's status group synced with 2 members; both .members show n1 and n2 online"
else
  fail "setup: kvstore group not synced within deadline"
  info "pmxcfs status log: $(grep '^\[status\]' "$CFS_LOG" | tail -5 | tr '\n' '|')"
  info "pmxfs .members: $(members 1 | jq -c .nodelist)"
  info "pmxcfs .members: $(members 2 | jq -c .nodelist)"
  exit 1
fi
info "pmxcfs /etc/pve/.members: $(in_n2 cat /etc/pve/.members | jq -c .nodelist)"
info "pmxfs  mnt/.members:      $(jq -c .nodelist "$DIR/n1/mnt/.members")"

# ------------------------------------------------------------------------- a. kv
echo "== a. SET_STATUS / GET_STATUS across the two daemons"
TOK=$$-$(date +%s)
# get_is NODE KEY FROM VALUE: node NODE's GET_STATUS(KEY, FROM) is VALUE with its NUL.
get_is() {
  local out
  out=$(ipc "$1" $OP_GET "$(p_get "$2" "$3")") || return 1
  [ "$out" = "0 $(hex "$4")00" ]
}
# check_kv SETNODE GETNODE KEY VALUE LABEL
check_kv() {
  local s=$1 g=$2 key=$3 val=$4 out
  out=$(ipc "$s" $OP_SET "$(p_set "$key" "$val")")
  if [ "${out%% *}" != 0 ]; then
    fail "$5: SET_STATUS $key on n$s answered $out"
    return
  fi
  if poll 10 get_is "$g" "$key" "n$s" "$val"; then
    pass "$5: SET_STATUS $key='$val' on n$s -> GET_STATUS($key, n$s) on n$g returns it (with NUL)"
  else
    fail "$5: GET_STATUS($key, n$s) on n$g: $(ipc "$g" $OP_GET "$(p_get "$key" "n$s")"), want 0 $(hex "$val")00"
  fi
}
check_kv 1 2 kv/mixed "pmxfs-n1-$TOK" "a1 pmxfs->pmxcfs"
check_kv 2 1 kv/mixed "pmxcfs-n2-$TOK" "a2 pmxcfs->pmxfs"
# Each node still has its own value for itself (per-node hashes).
if get_is 1 kv/mixed n1 "pmxfs-n1-$TOK" && get_is 2 kv/mixed n2 "pmxcfs-n2-$TOK" &&
  get_is 1 kv/mixed "" "pmxfs-n1-$TOK" && get_is 2 kv/mixed "" "pmxcfs-n2-$TOK"; then
  pass "a3: each node's own kv/mixed (by own name and by empty name) is its own value"
else
  fail "a3: own values: n1 $(ipc 1 $OP_GET "$(p_get kv/mixed n1)"), n2 $(ipc 2 $OP_GET "$(p_get kv/mixed n2)")"
fi
# A delete (name only) reaches the other side.
ipc 1 $OP_SET "$(p_set kv/gone v)" >/dev/null
if poll 10 get_is 2 kv/gone n1 v; then
  ipc 1 $OP_SET "$(field kv/gone 256)" >/dev/null
  gone() { [ "$(ipc 2 $OP_GET "$(p_get kv/gone n1)" | cut -d' ' -f1)" != 0 ]; }
  if poll 10 gone; then
    pass "a4: delete of kv/gone on n1 (name only) removes it on n2 ($(ipc 2 $OP_GET "$(p_get kv/gone n1)"))"
  else
    fail "a4: kv/gone still on n2 after delete on n1: $(ipc 2 $OP_GET "$(p_get kv/gone n1)")"
  fi
else
  fail "a4: kv/gone never reached n2"
fi

# ------------------------------------------------------------------------- b. log
echo "== b. cluster log"
MSG1="mixed b: hello from n1 (pmxfs) $TOK"
MSG2="mixed b: hello from n2 (pmxcfs) $TOK"
for k in 1 2; do
  m=$MSG1
  [ "$k" = 2 ] && m=$MSG2
  out=$(ipc $k $OP_LOG "$(p_log root@pam mixed "$m")")
  [ "${out%% *}" = 0 ] || fail "b: LOG_CLUSTER_MSG on n$k answered $out"
done
# has NODE MSG...: node NODE's log holds every MSG.
has() {
  local n=$1 j
  shift
  j=$(clog "$n") || return 1
  for m in "$@"; do
    jq -e --arg m "$m" 'any(.data[]; .msg == $m)' <<<"$j" >/dev/null || return 1
  done
}
if poll 10 has 1 "$MSG1" "$MSG2" && poll 10 has 2 "$MSG1" "$MSG2"; then
  pass "b1: both entries are in GET_CLUSTER_LOG of both nodes"
else
  fail "b1: entries missing"
fi
# compare_logs LABEL: the two logs, entry by entry.
compare_logs() {
  local a b
  a=$(clog 1 | jq -c '.data[]')
  b=$(clog 2 | jq -c '.data[]')
  if [ "$a" = "$b" ]; then
    pass "$1: GET_CLUSTER_LOG identical on both nodes ($(wc -l <<<"$a") entries, all fields)"
  else
    fail "$1: GET_CLUSTER_LOG differs (< pmxfs n1, > pmxcfs n2):"
    diff <(printf '%s\n' "$a") <(printf '%s\n' "$b") | sed 's/^/     /' || true
  fi
  info "log (n1 view, newest first; uid time node user tag pid msg):"
  clog 1 | jq -r '.data[] | "  \(.uid) \(.time) \(.node) \(.user) \(.tag) \(.pid) \(.msg)"' | sed 's/^/     /'
}
compare_logs b2

# ------------------------------------------------------------------------- c. members
echo "== c. .members (GET_CLUSTER_INFO)"
for k in 1 2; do
  j=$(members $k)
  info "n$k: $(jq -c . <<<"$j")"
  if jq -e '.nodelist.n1.online == 1 and .nodelist.n2.online == 1 and
            .nodelist.n1.ip == "10.77.0.1" and .nodelist.n2.ip == "10.77.0.2" and
            .nodelist.n1.id == 1 and .nodelist.n2.id == 2' <<<"$j" >/dev/null; then
    pass "c$k: n$k's .members: n1 and n2 online, ip 10.77.0.1 / 10.77.0.2"
  else
    fail "c$k: n$k's .members nodelist: $(jq -c .nodelist <<<"$j")"
  fi
done
a=$(members 1 | jq -S -c '{cluster, nodelist}')
b=$(members 2 | jq -S -c '{cluster, nodelist}')
if [ "$a" = "$b" ]; then
  pass "c3: cluster and nodelist objects identical on both"
else
  fail "c3: .members differ: pmxfs $a | pmxcfs $b"
fi

# ------------------------------------------------------------------------- d. RRD
echo "== d. RRD"
RRD_DB=/var/lib/rrdcached/db
# rrd_check SETNODE NODENAME LABEL
rrd_check() {
  local s=$1 id=$2 now data out f1 f2 i1 i2
  now=$(date +%s)
  data="3600:0:$now:0.5:4:0.25:0.01:8589934592:2147483648:1073741824:0:10737418240:53687091200:12345:67890:0.1:0.2:0.3:0.4:0.5:0.6:1024"
  out=$(ipc "$s" $OP_SET "$(p_set "rrd/pve-node-9.0/$id" "$data")")
  [ "${out%% *}" = 0 ] || { fail "$3: SET_STATUS rrd/pve-node-9.0/$id on n$s: $out"; return; }
  f1=$DIR/n1/rrd/pve-node-9.0/$id
  f2=$RRD_DB/pve-node-9.0/$id
  rrd_last() { # both files exist and have taken the update
    [ "$(rrdtool last "$f1" 2>/dev/null)" = "$now" ] && [ "$(in_n2 rrdtool last "$f2" 2>/dev/null)" = "$now" ]
  }
  if poll 15 rrd_last; then
    pass "$3: pve-node-9.0/$id (set on n$s) written on n1 ($f1) and on n2 ($f2), last update $now"
  else
    fail "$3: files: n1 $(ls -l "$f1" 2>&1), n2 $(in_n2 ls -l "$f2" 2>&1)"
    return
  fi
  i1=$(rrdtool info "$f1" | grep -v '^filename')
  i2=$(in_n2 rrdtool info "$f2" | grep -v '^filename')
  if [ "$i1" = "$i2" ]; then
    pass "$3: rrdtool info identical apart from the file name ($(grep -c '^ds\[.*\]\.type' <<<"$i1") DS, $(grep -c '^rra\[.*\]\.cf' <<<"$i1") RRA)"
  else
    fail "$3: rrdtool info differs (< pmxfs n1, > pmxcfs n2):"
    diff <(printf '%s\n' "$i1") <(printf '%s\n' "$i2") | sed 's/^/     /' | head -40 || true
  fi
  dump_has() { body "$1" $OP_RRD "" | grep -qxF "pve-node-9.0/$id:$data"; }
  if poll 5 dump_has 1 && poll 5 dump_has 2; then
    pass "$3: GET_RRD_DUMP on both has pve-node-9.0/$id:$data"
  else
    fail "$3: GET_RRD_DUMP: n1 $(body 1 $OP_RRD "" | grep "pve-node-9.0/$id"), n2 $(body 2 $OP_RRD "" | grep "pve-node-9.0/$id")"
  fi
}
rrd_check 1 n1 "d1 pmxfs->pmxcfs"
rrd_check 2 n2 "d2 pmxcfs->pmxfs"

# ------------------------------------------------------------------------- e. cut/heal
echo "== e. cut n2's link, log on each side, heal"
ip link set veth2 down
if poll 30 online 1 n2 0 && poll 30 online 2 n1 0; then
  pass "e1: partition seen: n1 shows n2 offline, n2 shows n1 offline"
else
  fail "e1: partition not seen: n1 $(members 1 | jq -c .nodelist) n2 $(members 2 | jq -c .nodelist)"
fi
before=$(cfs_confchgs)
MSG3="mixed e: n1 (pmxfs) while cut $TOK"
MSG4="mixed e: n2 (pmxcfs) while cut $TOK"
ipc 1 $OP_LOG "$(p_log root@pam mixed "$MSG3")" >/dev/null
ipc 2 $OP_LOG "$(p_log root@pam mixed "$MSG4")" >/dev/null
ipc 1 $OP_SET "$(p_set kv/cut "n1-cut-$TOK")" >/dev/null
ipc 2 $OP_SET "$(p_set kv/cut "n2-cut-$TOK")" >/dev/null
ip link set veth2 up
new_sync() { [ "$(cfs_confchgs)" -gt "$before" ] && cfs_synced; }
if poll 90 both_online && poll 30 new_sync; then
  pass "e2: healed: both online on both, pmxcfs's status group synced again"
else
  fail "e2: not healed: n1 $(members 1 | jq -c .nodelist) n2 $(members 2 | jq -c .nodelist)"
fi
ALL=("$MSG1" "$MSG2" "$MSG3" "$MSG4")
if poll 30 has 1 "${ALL[@]}" && poll 30 has 2 "${ALL[@]}"; then
  pass "e3: all four test entries on both nodes after the resync"
else
  fail "e3: entries missing after the resync"
fi
once() { # once NODE: every test entry exactly once
  local j
  j=$(clog "$1")
  for m in "${ALL[@]}"; do
    c=$(jq --arg m "$m" '[.data[] | select(.msg == $m)] | length' <<<"$j")
    [ "$c" = 1 ] || { info "n$1 has '$m' $c times"; return 1; }
  done
}
if once 1 && once 2; then
  pass "e4: each test entry exactly once on each node"
else
  fail "e4: duplicates or losses"
fi
compare_logs e5
if poll 10 get_is 2 kv/cut n1 "n1-cut-$TOK" && poll 10 get_is 1 kv/cut n2 "n2-cut-$TOK"; then
  pass "e6: keys set while cut reached the other side at the resync (own keys re-sent)"
else
  fail "e6: kv/cut: on n2 (from n1) $(ipc 2 $OP_GET "$(p_get kv/cut n1)"); on n1 (from n2) $(ipc 1 $OP_GET "$(p_get kv/cut n2)")"
fi
if get_is 2 kv/mixed n1 "pmxfs-n1-$TOK" && get_is 1 kv/mixed n2 "pmxcfs-n2-$TOK"; then
  pass "e7: kv/mixed of before the cut still readable across"
else
  fail "e7: kv/mixed after heal: n2 sees $(ipc 2 $OP_GET "$(p_get kv/mixed n1)"), n1 sees $(ipc 1 $OP_GET "$(p_get kv/mixed n2)")"
fi

# ------------------------------------------------------------------------- f. logs
echo "== f. daemon logs"
CFS_BAD='wrong size|cant parse|leaving CPG group|received short|unterminated string|unknown message type|unexpected update|unable to merge|ignore sync request|detected newer protocol|serious internal error|RRD (create |update )?error|RRDC update error'
if grep -Eq "$CFS_BAD" "$CFS_LOG"; then
  fail "f1: pmxcfs logged kvstore errors:"
  grep -E "$CFS_BAD" "$CFS_LOG" | sed 's/^/     /'
else
  pass "f1: pmxcfs logged no kvstore error ($CFS_BAD)"
fi
FS_BAD='(WARN|ERROR).*(kvstore|rrd|RRD)|dropping'
if grep -Eq "$FS_BAD" "$FS_LOG"; then
  fail "f2: pmxfs logged kvstore warnings/errors:"
  grep -E "$FS_BAD" "$FS_LOG" | sed 's/^/     /'
else
  pass "f2: pmxfs logged no kvstore warning or error"
fi
info "pmxcfs's [status] and [main] lines:"
grep -E '^\[(status|main)\]' "$CFS_LOG" | sed 's/^/       /'
info "pmxfs's kvstore lines:"
grep -iE 'kvstore' "$FS_LOG" | sed 's/^/       /' || true

echo
if [ "$FAILS" = 0 ]; then
  echo "mixed-kvstore: all $CHECKS checks PASS"
else
  echo "mixed-kvstore: $FAILS of $CHECKS checks FAIL"
  exit 1
fi
