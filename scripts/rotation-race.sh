#!/usr/bin/env bash
# Reproduce the 2022 auth-key double rotation on purpose, and show which combinations of
# filesystem and rotation sequence never hit it.
#
#   scripts/rotation-race.sh [--nodes N] [--procs P] [--trials T]
#                            [--fs coherent|legacy] [--sequence naive|fixed] [--keep]
#
# Brings up an N-node pmxfs cluster (scripts/cluster.sh). `legacy` runs pmxfs with
# --coherence off --entry-timeout 5 --attr-timeout 5 (the reproduction setting of PVE's
# fix commit a74d508). Each trial:
#   1. sets authkey.pub's mtime to yesterday (on node 1) and waits until every node's
#      stat() shows it, so every rotator sees the key as due;
#   2. starts P rotators per node; each warms its caches with two `check` calls, then all
#      P*N start `authkey rotate --sequence S` at the same instant;
#   3. counts the rotations, checks authkey.pub.old is the key from before the trial,
#      has every node issue a ticket and verifies every ticket on every node.
# Last line: trials=T rotations=R double_rotations=D invalid_tickets=I
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=3 PROCS=2 TRIALS=20 FS=coherent SEQ=fixed KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES=$2; shift 2 ;;
    --procs) PROCS=$2; shift 2 ;;
    --trials) TRIALS=$2; shift 2 ;;
    --fs) FS=$2; shift 2 ;;
    --sequence) SEQ=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
case "$FS" in coherent) ARGS="" ;; legacy) ARGS="--coherence off --entry-timeout 5 --attr-timeout 5" ;;
  *) echo "--fs coherent|legacy" >&2; exit 2 ;; esac
case "$SEQ" in naive|fixed) ;; *) echo "--sequence naive|fixed" >&2; exit 2 ;; esac

PMXFS_BIN=${PMXFS_BIN:-}
AUTHKEY_BIN=${AUTHKEY_BIN:-}
if [ -z "$PMXFS_BIN" ] || [ -z "$AUTHKEY_BIN" ]; then
  bash scripts/setup.sh >/dev/null
  export PATH="$HOME/.cargo/bin:$PATH"
  cargo build --release -q -p pmxfs -p auth-key
  PMXFS_BIN=$PWD/target/release/pmxfs AUTHKEY_BIN=$PWD/target/release/authkey
fi
DIR=${RACE_DIR:-/tmp/pmxfs-race}
# One cluster at a time on a machine (fixed bridge and namespace names).
exec 9>/run/pmxfs-cluster.lock
flock 9
cleanup() { [ "$KEEP" = 1 ] || bash scripts/cluster.sh down "$DIR" >/dev/null 2>&1 || true; }
trap cleanup EXIT
PMXFS_BIN=$PMXFS_BIN PMXFS_ARGS=$ARGS bash scripts/cluster.sh up "$NODES" "$DIR" >/dev/null 2>"$DIR.up.log" ||
  { cat "$DIR.up.log" >&2; exit 1; }
mnt() { echo "$DIR/n$1/mnt"; }
ak() { local k=$1; shift; "$AUTHKEY_BIN" --base "$(mnt "$k")" "$@"; }

# Every node's stat() of authkey.pub shows mtime $1 (waits out legacy caches).
wait_mtime() {
  local want=$1 k t
  for ((t = 0; t < 200; t++)); do
    local ok=1
    for ((k = 1; k <= NODES; k++)); do
      [ "$(stat -c %Y "$(mnt "$k")/authkey.pub" 2>/dev/null)" = "$want" ] || { ok=0; break; }
    done
    [ $ok = 1 ] && return 0
    sleep 0.05
  done
  echo "nodes do not agree on authkey.pub's mtime $want" >&2; return 1
}

ak 1 rotate --sequence fixed --force --lifetime 0 >/dev/null
wait_mtime "$(stat -c %Y "$(mnt 1)/authkey.pub")"

rotations=0 doubles=0 invalid=0 wrong_old=0
work=$(mktemp -d)
for ((t = 1; t <= TRIALS; t++)); do
  before=$(cat "$(mnt 1)/authkey.pub")
  yesterday=$(($(date +%s) - 90000))
  touch -m -d "@$yesterday" "$(mnt 1)/authkey.pub"
  wait_mtime "$yesterday"
  start=$(($(date +%s%3N) + 400 + 40 * PROCS * NODES))
  pids=()
  for ((k = 1; k <= NODES; k++)); do
    for ((p = 1; p <= PROCS; p++)); do
      ak "$k" rotate --sequence "$SEQ" --warm 2 --start-at "$start" --lock-timeout 30 \
        >"$work/r$k.$p" 2>&1 &
      pids+=($!)
    done
  done
  for pid in "${pids[@]}"; do wait "$pid" || true; done
  r=$(cat "$work"/r* | grep -c '^rotated$' || true)
  rotations=$((rotations + r))
  [ "$r" -gt 1 ] && doubles=$((doubles + 1))
  if [ "$r" -ge 1 ] && [ "$(cat "$(mnt 1)/authkey.pub.old")" != "$before" ]; then
    wrong_old=$((wrong_old + 1))
  fi
  # every node sees the same key before tickets are checked
  wait_mtime "$(stat -c %Y "$(mnt 1)/authkey.pub")" || true
  for ((k = 1; k <= NODES; k++)); do
    ticket=$(ak "$k" ticket issue root@pam 2>/dev/null) || { invalid=$((invalid + NODES)); continue; }
    for ((j = 1; j <= NODES; j++)); do
      ak "$j" ticket verify "$ticket" >/dev/null 2>&1 || invalid=$((invalid + 1))
    done
  done
  rm -f "$work"/r*
  if [ $((t % 10)) -eq 0 ]; then
    echo "trial $t: rotations=$rotations double_rotations=$doubles invalid_tickets=$invalid" >&2
  fi
done
rm -rf "$work"
echo "fs=$FS sequence=$SEQ nodes=$NODES procs=$PROCS old_key_mismatches=$wrong_old" >&2
echo "trials=$TRIALS rotations=$rotations double_rotations=$doubles invalid_tickets=$invalid"
