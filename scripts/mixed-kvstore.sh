#!/usr/bin/env bash
# Manual interoperability check, not part of CI: pmxfs and the real pmxcfs 9.1.6 share
# the status kvstore (CPG group `pve_kvstore_v1`, pve-ipc.md §2 and §3) in one corosync
# cluster. Node n1 runs pmxfs and node n2 pmxcfs (PMXCFS_NODE=1 swaps them, so that
# pmxcfs is the lowest node id and opens every sync round). pmxfs runs with `--protocol
# pmxcfs`, so they share the tree too (scripts/mixed-cluster.sh checks that); this script
# checks the kvstore. Through the
# `pve2` IPC service of each node (tests/support/ipc_call.rs) it checks:
#   a. SET_STATUS kv/mixed on one node is returned by GET_STATUS (key, node) on the other
#   b. LOG_CLUSTER_MSG on each node; GET_CLUSTER_LOG shows both entries on both nodes,
#      and the two logs are identical (uid, time, node, pri, tag, pid, user, msg); a
#      message with quotes, a tab, control bytes and non-ASCII, and one of 5000 bytes,
#      are escaped and truncated alike by both
#   c. GET_CLUSTER_INFO (.members): both nodes online, each with its `ip`, on both;
#      GET_FS_VERSION's kvstore lists the same keys per node on both
#   d. RRD: SET_STATUS rrd/pve-node-9.0/<node> on each node makes the RRD file appear on
#      both (pmxcfs: /var/lib/rrdcached/db in its namespace; pmxfs: DIR/nK/rrd), with
#      the same `rrdtool info` (but cur_row, which librrd's create picks at random);
#      GET_RRD_DUMP has the line on both
#   e. cut n2's link, log a message and set a key on each side, heal, wait for the
#      resync: both logs hold the same entries in the same order, each once, and each
#      side has the key the other set while cut; GET_STATUS answers the same for every
#      (key, node) on both nodes, and GET_FS_VERSION's kvstore versions match by role
#   g. a message with a backslash, which pmxcfs puts into the log's JSON unescaped
#      (invalid JSON, and PVE's decode_json dies on it): pmxfs escapes it in its own
#      entries, which pmxcfs then serves as they are, and repairs it in pmxcfs's, so
#      that pmxfs serves valid JSON for both origins and pmxcfs raw only for its own
#   f. neither daemon logged a kvstore error (pmxcfs: wrong size, cant parse, leaving
#      CPG group, received short, ...; pmxfs: kvstore warnings/errors, dropping)
# Prints PASS/FAIL per check and exits non-zero on any FAIL.
#
# pmxcfs runs in its node's netns with private mount and UTS namespaces held by a `sleep`
# (host name nK; overlays on /etc and /var/lib, tmpfs on /run; /dev/shm stays shared so
# that pmxcfs reaches corosync's libqb rings), as scripts/bench-ipc.sh does. It is killed
# with SIGKILL (9.1.6 can hang on SIGTERM). Holds /run/pmxfs-cluster.lock, as the tests do.
#
# usage (root): [PMXCFS_BIN=...] [MIXED_KEEP=DIR] scripts/mixed-kvstore.sh
#   PMXCFS_BIN  pmxcfs 9.1.6 (default /tmp/pmxcfs-build/src/pmxcfs/pmxcfs; to build it
#               see the header of scripts/bench-ipc.sh)
#   PMXFS_BIN, IPC_CALL_BIN  default target/release/{pmxfs,ipc-call} (build them with
#               cargo build --release -p pmxfs -p pmxfs-e2e --bins)
#   PMXCFS_NODE 2 (default: pmxfs is n1, the lowest node id) or 1 (pmxcfs is n1)
#   MIXED_KEEP  copy both daemons' logs (and corosync's) there before cleaning up
set -euo pipefail
PATH=$PATH:/usr/sbin:/sbin
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=$REPO/scripts/cluster.sh
# shellcheck source=scripts/pmxcfs-ns.sh
. "$REPO/scripts/pmxcfs-ns.sh"
PMXCFS_BIN=${PMXCFS_BIN:-/tmp/pmxcfs-build/src/pmxcfs/pmxcfs}
PMXFS_BIN=${PMXFS_BIN:-$REPO/target/release/pmxfs}
IPC_CALL=${IPC_CALL_BIN:-$REPO/target/release/ipc-call}
C=${PMXCFS_NODE:-2} # pmxcfs's node
F=$((3 - C))        # pmxfs's node

die() { echo "mixed-kvstore: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "must run as root"
[ "$C" = 1 ] || [ "$C" = 2 ] || die "PMXCFS_NODE must be 1 or 2"
for b in "$PMXCFS_BIN" "$PMXFS_BIN" "$IPC_CALL"; do
  [ -f "$b" ] && [ -x "$b" ] || die "$b is not an executable file"
done
for t in jq xxd rrdtool nsenter unshare flock timeout; do
  command -v "$t" >/dev/null || die "$t is missing"
done
PMXCFS_BIN=$(realpath "$PMXCFS_BIN")
declare -A WHO=([$F]="n$F (pmxfs)" [$C]="n$C (pmxcfs)")

exec 9>/run/pmxfs-cluster.lock
if ! flock -n 9; then
  echo "mixed-kvstore: waiting for /run/pmxfs-cluster.lock (a test suite holds it)" >&2
  flock 9
fi

DIR=$(mktemp -d /tmp/pmxfs-mixed.XXXXXX)
NS=$DIR/pmxcfs-ns # scratch of pmxcfs's namespaces (a tmpfs inside them)
CFS_LOG=$DIR/n$C/pmxcfs.log
FS_LOG=$DIR/n$F/pmxfs.log
FS_MNT=$DIR/n$F/mnt
FS_RRD=$DIR/n$F/rrd
FS_PID='' CFS_PID='' HOLDER=''
FAILS=0 CHECKS=0

cleanup() {
  local rc=$? c
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
  # pmxfs's mount, if its daemon did not take it away: abort, then detach.
  for c in $(awk -v m="$FS_MNT" '$5==m { split($3, mm, ":"); print mm[2] }' /proc/self/mountinfo); do
    echo 1 >"/sys/fs/fuse/connections/$c/abort" 2>/dev/null
    umount -l "$FS_MNT" 2>/dev/null
  done
  # libqb files of pmxcfs's connections, left by the SIGKILL (pmxcfs's mount goes with
  # its namespace).
  [ -n "$CFS_PID" ] && rm -f /dev/shm/qb-*-"$CFS_PID"-* /dev/shm/qb-"$CFS_PID"-* 2>/dev/null
  if [ -n "${MIXED_KEEP:-}" ]; then
    mkdir -p "$MIXED_KEEP"
    cp "$FS_LOG" "$MIXED_KEEP/pmxfs-n$F.log" 2>/dev/null
    cp "$CFS_LOG" "$MIXED_KEEP/pmxcfs-n$C.log" 2>/dev/null
    for c in 1 2; do cp "$DIR/n$c/log/corosync.log" "$MIXED_KEEP/corosync-n$c.log" 2>/dev/null; done
  fi
  bash "$CLUSTER" down "$DIR" >/dev/null 2>&1
  rm -rf "$DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- request payloads (pve-ipc.md §1.4), as hex
hex() { printf '%s' "$1" | xxd -p | tr -d '\n'; }
zeros() { printf "%0$(($1 * 2))d" 0; }
field() { # field STRING N: STRING NUL-padded to N bytes
  local h
  h=$(hex "$1")
  printf '%s%s' "$h" "$(zeros $(($2 - ${#h} / 2)))"
}
p_set() { printf '%s%s00' "$(field "$1" 256)" "$(hex "$2")"; }    # key, value (+NUL)
p_del() { field "$1" 256; }                                       # key only: delete
p_get() { printf '%s%s' "$(field "$1" 256)" "$(field "$2" 256)"; } # key, node
p_log() { # p_log IDENT TAG MSG (priority 6); lengths count the NUL, in bytes
  local i t m
  i=$(hex "$1") t=$(hex "$2") m=$(hex "$3")
  printf '06%02x%02x%s00%s00%s00' $((${#i} / 2 + 1)) $((${#t} / 2 + 1)) "$i" "$t" "$m"
}
p_clog() { printf '%02x%02x0000%s00' $(($1 & 255)) $(($1 >> 8 & 255)) "$(zeros 12)"; } # max, user ""
OP_VERSION=1 OP_INFO=2 OP_SET=4 OP_GET=5 OP_LOG=7 OP_CLOG=8 OP_RRD=10

# ipc K OP HEX: one request to node K's `pve2`; prints "error hexbody".
ipc() {
  if [ "$1" = "$C" ]; then
    timeout 10 nsenter -t "$HOLDER" -m -n -- "$IPC_CALL" pve2 "$2" "$3"
  else
    timeout 10 nsenter --net="/run/netns/pmx$1" -- "$IPC_CALL" pve2 "$2" "$3"
  fi
}
# body K OP HEX: the reply body as bytes (NULs dropped); fails on an error reply.
body() {
  local out err b
  out=$(ipc "$@") || return 1
  read -r err b <<<"$out"
  [ "$err" = 0 ] || return 1
  printf '%s' "$b" | xxd -r -p | tr -d '\0'
}
members() { body "$1" $OP_INFO ""; }
clog() { body "$1" $OP_CLOG "$(p_clog 500)"; }
# in_cfs CMD...: run CMD in pmxcfs's mount namespace.
in_cfs() { nsenter -t "$HOLDER" -m -- "$@"; }

# online K WHO STATE: node K's .members says node WHO's online is STATE (1/0).
online() {
  members "$1" 2>/dev/null | jq -e --arg n "$2" --argjson s "$3" '.nodelist[$n].online == $s' >/dev/null
}
both_online() {
  local k w
  for k in 1 2; do for w in n1 n2; do online $k $w 1 || return 1; done; done
}
# cfs_synced: pmxcfs's newest kvstore ("status") membership has both nodes, and it is
# in sync since.
cfs_synced() {
  awk '/^\[status\] notice: members:/ { m = gsub(/[0-9]+\/[0-9]+/, "&"); s = 0 }
       /^\[status\] notice: all data is up to date/ { s = 1 }
       END { exit !(m == 2 && s) }' "$CFS_LOG"
}
cfs_confchgs() { grep -c '^\[status\] notice: members:' "$CFS_LOG" || true; }

# ------------------------------------------------------------------------- setup
echo "== setup: pmxfs on ${WHO[$F]%% *}, pmxcfs on ${WHO[$C]%% *}"
bash "$CLUSTER" up --no-pmxfs 2 "$DIR" >/dev/null 2>"$DIR/cluster.log" ||
  die "cluster.sh up failed: $(cat "$DIR/cluster.log")"
info "corosync: 2 nodes quorate in $DIR"

# pmxcfs's namespaces first: a mount namespace made while pmxfs's FUSE mount is live
# would get a copy of it.
pmxcfs_ns "$NS" "n$C" "pmx$C" "$DIR/n$C/corosync.conf" || die "no namespace for pmxcfs"
HOLDER=$PMXCFS_HOLDER

# pmxfs, as cluster.sh's start_pmxfs.
mkdir -p "$FS_MNT" "$FS_RRD" "$DIR/n$F/run"
cp "$DIR/n$F/corosync.conf" "$DIR/n$F/pve-corosync.conf"
PMXFS_RUN_DIR=$DIR/n$F/run nsenter --net="/run/netns/pmx$F" -- "$PMXFS_BIN" --foreground \
  --protocol pmxcfs --nodename "n$F" --mount "$FS_MNT" --db "$DIR/n$F/config.db" \
  --corosync-conf "$DIR/n$F/pve-corosync.conf" --rrd-dir "$FS_RRD" --rrdcached "" \
  --pidfile "$DIR/n$F/pmxfs.pid" --restart-flag "$DIR/n$F/restart-flag" \
  >"$FS_LOG" 2>&1 </dev/null &
FS_PID=$!
fs_up() { kill -0 "$FS_PID" 2>/dev/null && timeout 2 test -e "$FS_MNT/.members" && members "$F" >/dev/null 2>&1; }
poll 30 fs_up || die "pmxfs did not come up: $(tail -20 "$FS_LOG")"
info "pmxfs  ${WHO[$F]%% *}: pid $FS_PID, $("$PMXFS_BIN" --version 2>/dev/null || true), $PMXFS_BIN"

# pmxcfs, in cluster mode: it imports /etc/corosync/corosync.conf into its new database.
nsenter -t "$HOLDER" -m -n -u -- "$PMXCFS_BIN" -f >"$CFS_LOG" 2>&1 </dev/null &
CFS_PID=$!
cfs_up() { kill -0 "$CFS_PID" 2>/dev/null && in_cfs mountpoint -q /etc/pve && members "$C" >/dev/null 2>&1; }
poll 30 cfs_up || die "pmxcfs did not come up: $(tail -20 "$CFS_LOG")"
info "pmxcfs ${WHO[$C]%% *}: pid $CFS_PID, $PMXCFS_BIN"

if poll 60 cfs_synced && poll 30 both_online; then
  pass "setup: pmxcfs's status group synced with 2 members; both .members show n1 and n2 online"
else
  fail "setup: the kvstore group did not sync within the deadline"
  info "pmxcfs's status log: $(grep '^\[status\]' "$CFS_LOG" | tail -5 | tr '\n' '|')"
  info "pmxfs's .members: $(members "$F" | jq -c .nodelist)"
  info "pmxcfs's .members: $(members "$C" | jq -c .nodelist)"
  exit 1
fi
info "pmxcfs /etc/pve/.members: $(in_cfs cat /etc/pve/.members | jq -c .nodelist)"
info "pmxfs  mnt/.members:      $(jq -c .nodelist "$FS_MNT/.members")"

# ------------------------------------------------------------------------- a. kv
echo "== a. SET_STATUS / GET_STATUS across the two daemons"
TOK=$$-$(date +%s)
declare -A KV=([$F]="pmxfs-n$F-$TOK" [$C]="pmxcfs-n$C-$TOK")
# get_is K KEY NODE VALUE: node K's GET_STATUS(KEY, NODE) is VALUE with its NUL.
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
  elif poll 10 get_is "$g" "$key" "n$s" "$val"; then
    pass "$5: SET_STATUS $key='$val' on ${WHO[$s]} -> GET_STATUS($key, n$s) on ${WHO[$g]} returns it (with NUL)"
  else
    fail "$5: GET_STATUS($key, n$s) on ${WHO[$g]}: $(ipc "$g" $OP_GET "$(p_get "$key" "n$s")"), want 0 $(hex "$val")00"
  fi
}
check_kv "$F" "$C" kv/mixed "${KV[$F]}" "a1 pmxfs->pmxcfs"
check_kv "$C" "$F" kv/mixed "${KV[$C]}" "a2 pmxcfs->pmxfs"
if get_is "$F" kv/mixed "n$F" "${KV[$F]}" && get_is "$C" kv/mixed "n$C" "${KV[$C]}" &&
  get_is "$F" kv/mixed "" "${KV[$F]}" && get_is "$C" kv/mixed "" "${KV[$C]}"; then
  pass "a3: each node's own kv/mixed (asked by its name and by an empty name) is its own value"
else
  fail "a3: own values: pmxfs $(ipc "$F" $OP_GET "$(p_get kv/mixed "n$F")"), pmxcfs $(ipc "$C" $OP_GET "$(p_get kv/mixed "n$C")")"
fi
# delete_check SETNODE GETNODE LABEL: a name-only SET_STATUS deletes on the other node.
delete_check() {
  local s=$1 g=$2 key=kv/gone-$1
  ipc "$s" $OP_SET "$(p_set "$key" v)" >/dev/null
  gone() { [ "$(ipc "$g" $OP_GET "$(p_get "$key" "n$s")" | cut -d' ' -f1)" != 0 ]; }
  if ! poll 10 get_is "$g" "$key" "n$s" v; then
    fail "$3: $key never reached ${WHO[$g]}"
  else
    ipc "$s" $OP_SET "$(p_del "$key")" >/dev/null
    if poll 10 gone; then
      pass "$3: delete of $key on ${WHO[$s]} (name only) removes it on ${WHO[$g]} (answer: $(ipc "$g" $OP_GET "$(p_get "$key" "n$s")"))"
    else
      fail "$3: $key still on ${WHO[$g]} after the delete: $(ipc "$g" $OP_GET "$(p_get "$key" "n$s")")"
    fi
  fi
}
delete_check "$F" "$C" "a4 pmxfs->pmxcfs"
delete_check "$C" "$F" "a5 pmxcfs->pmxfs"

# ------------------------------------------------------------------------- b. log
echo "== b. cluster log"
declare -A MSG=([$F]="mixed b: hello from n$F (pmxfs) $TOK" [$C]="mixed b: hello from n$C (pmxcfs) $TOK")
for k in "$F" "$C"; do
  out=$(ipc "$k" $OP_LOG "$(p_log root@pam mixed "${MSG[$k]}")")
  [ "${out%% *}" = 0 ] || fail "b: LOG_CLUSTER_MSG on ${WHO[$k]} answered $out"
done
# has K MSG...: node K's log holds every MSG.
has() {
  local n=$1 j m
  shift
  j=$(clog "$n") || return 1
  for m in "$@"; do
    jq -e --arg m "$m" 'any(.data[]; .msg == $m)' <<<"$j" >/dev/null || return 1
  done
}
if poll 10 has "$F" "${MSG[$F]}" "${MSG[$C]}" && poll 10 has "$C" "${MSG[$F]}" "${MSG[$C]}"; then
  pass "b1: both entries are in GET_CLUSTER_LOG of both nodes"
else
  fail "b1: entries missing: pmxfs $(clog "$F" | jq -c '[.data[].msg]'), pmxcfs $(clog "$C" | jq -c '[.data[].msg]')"
fi
# compare_logs LABEL: the two logs, entry by entry, all fields.
compare_logs() {
  local a b
  a=$(clog "$F" | jq -c '.data[]') || a="(no valid JSON: $(clog "$F" | head -c 300))"
  b=$(clog "$C" | jq -c '.data[]') || b="(no valid JSON: $(clog "$C" | head -c 300))"
  if [ "$a" = "$b" ]; then
    pass "$1: GET_CLUSTER_LOG identical on both nodes ($(wc -l <<<"$a") entries, all fields)"
  else
    fail "$1: GET_CLUSTER_LOG differs (< pmxfs, > pmxcfs):"
    diff <(printf '%s\n' "$a") <(printf '%s\n' "$b") | sed 's/^/     /' || true
  fi
  # And the reply bodies byte for byte (layout, spacing, trailing NUL), as the client gets them.
  a=$(ipc "$F" $OP_CLOG "$(p_clog 500)") b=$(ipc "$C" $OP_CLOG "$(p_clog 500)")
  if [ "$a" = "$b" ]; then
    pass "$1r: GET_CLUSTER_LOG reply bodies byte-identical ($(( (${#a} - 2) / 2 )) bytes, ends in ${a: -4})"
  else
    fail "$1r: GET_CLUSTER_LOG bodies differ in bytes (JSON compared above):"
    diff <(printf '%s' "${a#* }" | xxd -r -p | tr '\0' '@') <(printf '%s' "${b#* }" | xxd -r -p | tr '\0' '@') | sed 's/^/     /' | head -20 || true
  fi
  info "log (newest first: uid time node user tag pid pri msg):"
  clog "$F" | jq -r '.data[] | "\(.uid) \(.time) \(.node) \(.user) \(.tag) \(.pid) \(.pri) \(.msg[0:90])"' | sed 's/^/       /' || true
}
compare_logs b2
# The same odd message logged on each node: each origin escapes and cuts it alike.
# (No backslash: pmxcfs does not escape it, which breaks the whole log's JSON; see g.)
ODD=$(printf 'mixed b3 %s: tab\there "quoted" \x01\x7f \xc3\xbcml\xc3\xa4ut \xe2\x82\xac \xf0\x9f\x98\x80 end' "$TOK")
LONG="mixed b4 $TOK $(printf 'x%.0s' $(seq 5000))"
for k in "$F" "$C"; do
  ipc "$k" $OP_LOG "$(p_log root@pam mixed "$ODD")" >/dev/null
  ipc "$k" $OP_LOG "$(p_log root@pam mixed "$LONG")" >/dev/null
done
# prefixed K PREFIX: node K's entries whose msg starts with PREFIX, as "node msg".
prefixed() { clog "$1" | jq -c --arg p "$2" '[.data[] | select(.msg | startswith($p)) | {node, msg}] | sort'; }
two_each() { [ "$(prefixed "$1" "mixed b3 $TOK" | jq length)" = 2 ] && [ "$(prefixed "$1" "mixed b4 $TOK" | jq length)" = 2 ]; }
if poll 10 two_each "$F" && poll 10 two_each "$C"; then
  o=$(prefixed "$F" "mixed b3 $TOK")
  if [ "$(jq '[.[].msg] | unique | length' <<<"$o")" = 1 ] && [ "$o" = "$(prefixed "$C" "mixed b3 $TOK")" ]; then
    pass "b3: a message with tab, quotes, control bytes and UTF-8 is escaped alike by both: $(jq -c '.[0].msg' <<<"$o")"
  else
    fail "b3: escaping differs: pmxfs's log $o; pmxcfs's log $(prefixed "$C" "mixed b3 $TOK")"
  fi
  l=$(prefixed "$F" "mixed b4 $TOK" | jq -c 'map({node, len: (.msg | length)})')
  if [ "$(jq '[.[].len] | unique | length' <<<"$l")" = 1 ] &&
    [ "$(prefixed "$F" "mixed b4 $TOK")" = "$(prefixed "$C" "mixed b4 $TOK")" ]; then
    pass "b4: a 5000-byte message is cut alike by both: $l"
  else
    fail "b4: truncation differs: pmxfs's log $l; pmxcfs's log $(prefixed "$C" "mixed b4 $TOK" | jq -c 'map({node, len: (.msg | length)})')"
  fi
else
  fail "b3/b4: the odd or long entries did not arrive"
fi

# ------------------------------------------------------------------------- c. members
echo "== c. .members (GET_CLUSTER_INFO) and .version's kvstore"
for k in "$F" "$C"; do
  j=$(members "$k")
  info "${WHO[$k]}: $(jq -c . <<<"$j")"
  if jq -e '.nodelist.n1.online == 1 and .nodelist.n2.online == 1 and
            .nodelist.n1.ip == "10.77.0.1" and .nodelist.n2.ip == "10.77.0.2" and
            .nodelist.n1.id == 1 and .nodelist.n2.id == 2' <<<"$j" >/dev/null; then
    pass "c$k: ${WHO[$k]}'s .members: n1 and n2 online, ip 10.77.0.1 / 10.77.0.2"
  else
    fail "c$k: ${WHO[$k]}'s .members nodelist: $(jq -c .nodelist <<<"$j")"
  fi
done
a=$(members "$F" | jq -S -c '{cluster, nodelist}')
b=$(members "$C" | jq -S -c '{cluster, nodelist}')
if [ "$a" = "$b" ]; then
  pass "c3: cluster and nodelist objects identical on both"
else
  fail "c3: .members differ: pmxfs $a | pmxcfs $b"
fi
# The bodies byte for byte, once the node's own name and its local clinfo version (a
# per-daemon counter) are blanked out.
norm() { ipc "$1" $OP_INFO "" | cut -d' ' -f2 | xxd -r -p | tr '\0' '@' |
  sed -E '0,/"nodename": *"[^"]*"/s//"nodename": "X"/; 0,/"version": *[0-9]+/s//"version": V/'; }
a=$(norm "$F") b=$(norm "$C")
if [ "$a" = "$b" ]; then
  pass "c3r: GET_CLUSTER_INFO bodies byte-identical but nodename and version ($(printf '%s' "$a" | wc -c) bytes)"
else
  fail "c3r: GET_CLUSTER_INFO bodies differ (< pmxfs, > pmxcfs; NUL shown as @):"
  diff <(printf '%s\n' "$a") <(printf '%s\n' "$b") | sed 's/^/     /' || true
fi
# kvstore keys per node in GET_FS_VERSION (versions are per receiver, so only the keys).
kvkeys() { body "$1" $OP_VERSION "" | jq -S -c '.kvstore | map_values(keys)'; }
a=$(kvkeys "$F") b=$(kvkeys "$C")
info "pmxfs  .version kvstore: $(body "$F" $OP_VERSION "" | jq -S -c .kvstore)"
info "pmxcfs .version kvstore: $(body "$C" $OP_VERSION "" | jq -S -c .kvstore)"
if [ "$a" = "$b" ]; then
  pass "c4: GET_FS_VERSION's kvstore has the same keys per node on both: $a"
else
  fail "c4: GET_FS_VERSION's kvstore keys differ: pmxfs $a | pmxcfs $b"
fi

# ------------------------------------------------------------------------- d. RRD
echo "== d. RRD"
RRD_DB=/var/lib/rrdcached/db
# rrd_check SETNODE LABEL: the node RRD of SETNODE, set there, written on both.
rrd_check() {
  local s=$1 id=n$1 now data out f1 f2 i1 i2
  now=$(date +%s)
  data="3600:0:$now:0.5:4:0.25:0.01:8589934592:2147483648:1073741824:0:10737418240:53687091200:12345:67890:0.1:0.2:0.3:0.4:0.5:0.6:1024"
  out=$(ipc "$s" $OP_SET "$(p_set "rrd/pve-node-9.0/$id" "$data")")
  [ "${out%% *}" = 0 ] || { fail "$2: SET_STATUS rrd/pve-node-9.0/$id on ${WHO[$s]}: $out"; return; }
  f1=$FS_RRD/pve-node-9.0/$id
  f2=$RRD_DB/pve-node-9.0/$id
  rrd_last() { # both files exist and have taken the update
    [ "$(rrdtool last "$f1" 2>/dev/null)" = "$now" ] && [ "$(in_cfs rrdtool last "$f2" 2>/dev/null)" = "$now" ]
  }
  if poll 15 rrd_last; then
    pass "$2: pve-node-9.0/$id (set on ${WHO[$s]}) written by pmxfs ($f1) and by pmxcfs ($f2), last update $now"
  else
    fail "$2: files: pmxfs $(ls -l "$f1" 2>&1), pmxcfs $(in_cfs ls -l "$f2" 2>&1)"
    return
  fi
  # cur_row is random at creation (librrd's rrd_create), so it differs between any two files.
  i1=$(rrdtool info "$f1" | grep -v -e '^filename' -e '\.cur_row = ')
  i2=$(in_cfs rrdtool info "$f2" | grep -v -e '^filename' -e '\.cur_row = ')
  if [ "$i1" = "$i2" ]; then
    pass "$2: rrdtool info identical but filename and cur_row ($(grep -c '^ds\[.*\]\.type' <<<"$i1") DS, $(grep -c '^rra\[.*\]\.cf' <<<"$i1") RRA, $(wc -l <<<"$i1") lines)"
  else
    fail "$2: rrdtool info differs (< pmxfs, > pmxcfs):"
    diff <(printf '%s\n' "$i1") <(printf '%s\n' "$i2") | sed 's/^/     /' | head -40 || true
  fi
  dump_has() { body "$1" $OP_RRD "" | grep -qxF "pve-node-9.0/$id:$data"; }
  if poll 5 dump_has "$F" && poll 5 dump_has "$C"; then
    pass "$2: GET_RRD_DUMP on both has pve-node-9.0/$id:$data"
  else
    fail "$2: GET_RRD_DUMP: pmxfs '$(body "$F" $OP_RRD "" | grep "pve-node-9.0/$id")', pmxcfs '$(body "$C" $OP_RRD "" | grep "pve-node-9.0/$id")'"
  fi
}
rrd_check "$F" "d1 pmxfs->pmxcfs"
rrd_check "$C" "d2 pmxcfs->pmxfs"

# ------------------------------------------------------------------------- e. cut/heal
echo "== e. cut n2's link, log and set a key on each side, heal"
ip link set veth2 down
if poll 30 online 1 n2 0 && poll 30 online 2 n1 0; then
  pass "e1: partition seen: n1 shows n2 offline, n2 shows n1 offline"
else
  fail "e1: partition not seen: n1 $(members 1 | jq -c .nodelist), n2 $(members 2 | jq -c .nodelist)"
fi
before=$(cfs_confchgs)
declare -A CUT=([$F]="mixed e: n$F (pmxfs) while cut $TOK" [$C]="mixed e: n$C (pmxcfs) while cut $TOK")
for k in "$F" "$C"; do
  ipc "$k" $OP_LOG "$(p_log root@pam mixed "${CUT[$k]}")" >/dev/null
  ipc "$k" $OP_SET "$(p_set kv/cut "n$k-cut-$TOK")" >/dev/null
done
ip link set veth2 up
new_sync() { [ "$(cfs_confchgs)" -gt "$before" ] && cfs_synced; }
if poll 90 both_online && poll 30 new_sync; then
  pass "e2: healed: both online on both nodes, pmxcfs's status group synced again"
else
  fail "e2: not healed: n1 $(members 1 | jq -c .nodelist), n2 $(members 2 | jq -c .nodelist)"
fi
ALL=("${MSG[$F]}" "${MSG[$C]}" "${CUT[$F]}" "${CUT[$C]}")
if poll 30 has "$F" "${ALL[@]}" && poll 30 has "$C" "${ALL[@]}"; then
  pass "e3: the four plain test entries are on both nodes after the resync"
else
  fail "e3: entries missing after the resync: pmxfs $(clog "$F" | jq -c '[.data[].msg[0:40]]'), pmxcfs $(clog "$C" | jq -c '[.data[].msg[0:40]]')"
fi
once() { # once K: every test entry exactly once on node K
  local j m c
  j=$(clog "$1") || return 1
  for m in "${ALL[@]}"; do
    c=$(jq --arg m "$m" '[.data[] | select(.msg == $m)] | length' <<<"$j")
    [ "$c" = 1 ] || { info "${WHO[$1]} has '$m' $c times"; return 1; }
  done
  for m in "mixed b3 $TOK" "mixed b4 $TOK"; do
    c=$(jq --arg m "$m" '[.data[] | select(.msg | startswith($m))] | length' <<<"$j")
    [ "$c" = 2 ] || { info "${WHO[$1]} has '$m...' $c times (2 wanted)"; return 1; }
  done
}
if once "$F" && once "$C"; then
  pass "e4: each test entry exactly once on each node"
else
  fail "e4: duplicates or losses"
fi
compare_logs e5
if poll 10 get_is "$C" kv/cut "n$F" "n$F-cut-$TOK" && poll 10 get_is "$F" kv/cut "n$C" "n$C-cut-$TOK"; then
  pass "e6: the keys set while cut reached the other side at the resync (own keys sent again)"
else
  fail "e6: kv/cut: pmxcfs has for n$F $(ipc "$C" $OP_GET "$(p_get kv/cut "n$F")"); pmxfs has for n$C $(ipc "$F" $OP_GET "$(p_get kv/cut "n$C")")"
fi
# Every (key, node) asked on both nodes: the same answer (error and bytes).
matrix() {
  local k n
  for k in kv/mixed kv/cut kv/gone-1 kv/gone-2 kv/none nodeip rrd/pve-node-9.0/n1 rrd/pve-node-9.0/n2 tasklist; do
    for n in n1 n2; do printf '%s %s -> %s\n' "$k" "$n" "$(ipc "$1" $OP_GET "$(p_get "$k" "$n")")"; done
  done
}
a=$(matrix "$F") b=$(matrix "$C")
if [ "$a" = "$b" ]; then
  pass "e7: GET_STATUS answers the same on both nodes for $(wc -l <<<"$a") (key, node) pairs:"
  sed 's/^/       /' <<<"$a"
else
  fail "e7: GET_STATUS differs (< pmxfs, > pmxcfs):"
  diff <(printf '%s\n' "$a") <(printf '%s\n' "$b") | sed 's/^/     /' || true
fi

# GET_FS_VERSION's kvstore versions, by role: a key's version counts the UPDATEs its holder
# took (0 for the first, +1 for each later one, resyncs included), so both daemons, which
# saw the same history from either side, must give the same numbers.
roles() { # roles K: {own: versions of node K's keys, peer: versions of the other's}
  body "$1" $OP_VERSION "" | jq -S -c --arg me "n$1" --arg peer "n$((3 - $1))" \
    '.kvstore | {own: .[$me], peer: .[$peer]}'
}
a=$(roles "$F") b=$(roles "$C")
if [ "$a" = "$b" ]; then
  pass "e8: GET_FS_VERSION's kvstore versions by role identical: $a"
else
  fail "e8: GET_FS_VERSION's kvstore versions by role differ: pmxfs $a | pmxcfs $b"
fi

# ------------------------------------------------------------------------- g. backslash
echo "== g. a backslash in a message (last: it makes both logs invalid JSON, as in pmxcfs)"
BS="mixed g $TOK: back\\slash end"
for k in "$F" "$C"; do ipc "$k" $OP_LOG "$(p_log root@pam mixed "$BS")" >/dev/null; done
# raw K: node K's log lines holding the backslash entries, without uid and pid.
raw() { clog "$1" | grep -F "mixed g $TOK" | sed -E 's/"uid": *[0-9]+, *//; s/"pid": *[0-9]+, *//' | sort; }
raw_two() { [ "$(raw "$1" | wc -l)" = 2 ]; }
if poll 10 raw_two "$F" && poll 10 raw_two "$C"; then
  a=$(raw "$F") b=$(raw "$C")
  info "pmxfs:  $(printf '%s' "$a" | tr '\n' '|')"
  info "pmxcfs: $(printf '%s' "$b" | tr '\n' '|')"
  esc='back\\slash' raw_bs='back\slash'
  fs_own=$(grep -F "\"node\": \"n$F\"" <<<"$a") cfs_fs=$(grep -F "\"node\": \"n$F\"" <<<"$b")
  if [ "$(grep -cF "$esc" <<<"$a")" = 2 ] && [ "$fs_own" = "$cfs_fs" ] &&
    grep -F "\"node\": \"n$C\"" <<<"$b" | grep -qF "$raw_bs end"; then
    pass "g1: pmxfs serves the backslash escaped for both origins; pmxcfs serves pmxfs's entry with pmxfs's bytes and its own raw"
  else
    fail "g1: the backslash entries are not as documented (escaped by pmxfs, raw in pmxcfs's own)"
  fi
else
  fail "g1: backslash entries: pmxfs $(raw "$F" | wc -l), pmxcfs $(raw "$C" | wc -l) lines (2 wanted)"
fi

# ------------------------------------------------------------------------- f. logs
echo "== f. daemon logs"
CFS_BAD='wrong size|cant parse|leaving CPG group|received short|unterminated string|unknown message type|unexpected update|unable to merge|ignore sync request|detected newer protocol|serious internal error|RRD (create |update )?error|RRDC update error|dfsm_deliver|cpg_send_message failed'
if grep -Eq "$CFS_BAD" "$CFS_LOG"; then
  fail "f1: pmxcfs logged kvstore errors:"
  grep -E "$CFS_BAD" "$CFS_LOG" | sed 's/^/     /'
else
  pass "f1: pmxcfs logged no kvstore error (/$CFS_BAD/)"
fi
FS_BAD='(WARN|ERROR).*(kvstore|rrd|RRD|status)|dropping'
if grep -Eq "$FS_BAD" "$FS_LOG"; then
  fail "f2: pmxfs logged kvstore warnings or errors:"
  grep -E "$FS_BAD" "$FS_LOG" | sed 's/^/     /'
else
  pass "f2: pmxfs logged no kvstore warning or error (/$FS_BAD/)"
fi
info "pmxcfs's [status] and [main] lines:"
grep -E '^\[(status|main)\]' "$CFS_LOG" | sed 's/^/       /'
info "pmxfs's WARN/ERROR and kvstore lines:"
grep -E 'WARN|ERROR|kvstore' "$FS_LOG" | sed 's/^/       /' || true

echo
if [ "$FAILS" = 0 ]; then
  echo "mixed-kvstore: all $CHECKS checks PASS"
else
  echo "mixed-kvstore: $FAILS of $CHECKS checks FAIL"
  exit 1
fi
