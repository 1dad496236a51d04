# Sourced (not run) by the scripts that run the reference pmxcfs 9.1.6 beside pmxfs:
# bench-ipc.sh, bench-fs.sh, bench-wear.sh, bench-cluster.sh, mixed-kvstore.sh and
# mixed-cluster.sh. The last two also use its check helpers (pass, fail, info, poll).
# pmxcfs hard-codes /etc/pve, /var/lib/pve-cluster, /run/pve-cluster and the abstract
# socket @pve2, so it runs in private mount and UTS namespaces held open by a `sleep`
# (the holder): overlays on /etc and /var/lib, a tmpfs on /run, its own host name.
#
# pmxcfs_ns SCRATCH NAME NETNS [CONF [LIB]]
#   SCRATCH  a directory to mount the namespaces' tmpfs on; SCRATCH.log has the setup's
#            output, SCRATCH.ready appears when the holder is up
#   NAME     the host name (pmxcfs's node name)
#   NETNS    a /run/netns name to enter (a node of scripts/cluster.sh, whose hosts
#            n1..n3 are 10.77.0.1..3), or "" for a network namespace of its own, where
#            NAME is 10.99.0.1 on lo and /dev/shm is private too (pmxcfs refuses a
#            node name that resolves only to 127.x)
#   CONF     corosync.conf for /etc/corosync/corosync.conf (cluster mode)
#   LIB      a directory to bind on /var/lib/pve-cluster: the database on a real
#            disk, not on the overlay's tmpfs (which counts no writes)
# Sets PMXCFS_HOLDER to the holder's pid; enter with `nsenter -t "$PMXCFS_HOLDER" -m -u`
# (and -n for a namespace of its own). A mount namespace copies the mounts live when it
# is made: make it before mounting pmxfs where that matters.

pmxcfs_ns_holder() { # runs inside the new namespaces, then becomes the holder
  local t=$1 name=$2 own_net=$3 conf=$4 lib=$5
  mount -t tmpfs tmpfs "$t"
  mkdir -p "$t/etc/up" "$t/etc/work" "$t/lib/up" "$t/lib/work"
  mount -t overlay overlay -o "lowerdir=/etc,upperdir=$t/etc/up,workdir=$t/etc/work" /etc
  mount -t overlay overlay -o "lowerdir=/var/lib,upperdir=$t/lib/up,workdir=$t/lib/work" /var/lib
  mount -t tmpfs tmpfs /run
  rm -rf /etc/pve /var/lib/pve-cluster /var/lib/rrdcached
  mkdir -p /etc/pve /etc/corosync /var/lib/pve-cluster /var/lib/rrdcached/db /run/pve-cluster
  [ -z "$conf" ] || cp "$conf" /etc/corosync/corosync.conf
  [ -z "$lib" ] || mount --bind "$lib" /var/lib/pve-cluster
  if [ "$own_net" = 1 ]; then
    mount -t tmpfs tmpfs /dev/shm
    printf '127.0.0.1 localhost\n10.99.0.1 %s\n' "$name" >/etc/hosts
    ip link set lo up
    ip addr add 10.99.0.1/32 dev lo
  else
    printf '127.0.0.1 localhost\n10.77.0.1 n1\n10.77.0.2 n2\n10.77.0.3 n3\n' >/etc/hosts
  fi
  hostname "$name"
  : >"$t.ready"
  exec sleep infinity
}

pmxcfs_ns() {
  local t=$1 name=$2 netns=$3 conf=${4:-} lib=${5:-} body _
  mkdir -p "$t"
  rm -f "$t.ready"
  if [ -z "$netns" ]; then
    body="set -euo pipefail; $(declare -f pmxcfs_ns_holder); pmxcfs_ns_holder $(printf '%q ' "$t" "$name" 1 "$conf" "$lib")"
    unshare -m -n -u --propagation private -- bash -c "$body" >"$t.log" 2>&1 </dev/null &
  else
    body="set -euo pipefail; $(declare -f pmxcfs_ns_holder); pmxcfs_ns_holder $(printf '%q ' "$t" "$name" 0 "$conf" "$lib")"
    nsenter --net="/run/netns/$netns" -- unshare -m -u --propagation private -- bash -c "$body" \
      >"$t.log" 2>&1 </dev/null &
  fi
  PMXCFS_HOLDER=$!
  for _ in $(seq 200); do
    [ -e "$t.ready" ] && return 0
    kill -0 "$PMXCFS_HOLDER" 2>/dev/null || break
    sleep 0.05
  done
  echo "pmxcfs namespace setup failed: $(cat "$t.log")" >&2
  return 1
}

# The mixed scripts' checks: pass/fail count into CHECKS and FAILS.
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
