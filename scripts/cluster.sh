#!/usr/bin/env bash
# A real N-node corosync (knet) cluster on one machine, one network namespace per node,
# optionally with pmxfs mounted for every node at DIR/nK/mnt.
#
#   scripts/cluster.sh up [--no-pmxfs] N [DIR]   bring up N nodes (DIR default /tmp/pmxfs-cluster)
#   scripts/cluster.sh down [DIR]                remove every process, mount, netns and link
#   scripts/cluster.sh cut K | heal K            take node K's link down / up (partition)
#   scripts/cluster.sh exec K CMD...             run CMD in node K's network namespace
#   scripts/cluster.sh status [DIR]              show nodes, quorum, daemons, mounts
#   scripts/cluster.sh pmxfs-kill K [DIR]        kill -9 node K's pmxfs and abort its mount
#   scripts/cluster.sh pmxfs-start K [DIR]       start node K's pmxfs again (same binary/args,
#                                                or PMXFS_START_ARGS instead of the args)
#   scripts/cluster.sh pmxfs-stop K [DIR]        stop node K's pmxfs (SIGTERM, clean)
#   scripts/cluster.sh corosync-stop K [DIR]     stop node K's corosync (the node goes away)
#
# Env: PMXFS_CLUSTER_DIR (default DIR), PMXFS_BIN (pmxfs binary; otherwise looked up in
# PATH and target/{release,debug}), PMXFS_ARGS (extra pmxfs arguments), TOKEN (totem
# token ms, default 1000), QUORUM_TIMEOUT (s, default 60).
#
# Node K: netns pmxK, host veth vethK on bridge br-pmx (10.77.0.254/24), eth0 10.77.0.K
# inside. corosync runs in a private mount namespace (`unshare -m`) with the node's own
# /run (it keeps a pid lock there), /var/lib/corosync and /var/log/corosync (its log is
# DIR/nK/log/corosync.log), so that every node's corosync.conf is the same file, which
# pmxfs keeps in line with the cluster's. Every corosync is started before any pmxfs mounts, because a
# mount namespace created while a FUSE mount is live gets a copy of it. pmxfs runs with
# only the network namespace entered, so its mount stays visible at DIR/nK/mnt here.
set -euo pipefail

BR=br-pmx
NET=10.77.0
GROUP_PREFIX=pmx
DEFAULT_DIR=${PMXFS_CLUSTER_DIR:-/tmp/pmxfs-cluster}
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$SCRIPT_DIR")

log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }

# Install Debian packages only when something they provide is missing.
ensure_packages() {
    local pkgs=() f
    command -v corosync >/dev/null 2>&1 || [ -x /usr/sbin/corosync ] || pkgs+=(corosync)
    command -v corosync-quorumtool >/dev/null 2>&1 || [ -x /usr/sbin/corosync-quorumtool ] || pkgs+=(corosync)
    command -v ip >/dev/null 2>&1 || pkgs+=(iproute2)
    command -v unshare >/dev/null 2>&1 && command -v nsenter >/dev/null 2>&1 || pkgs+=(util-linux)
    for f in cpg:libcpg-dev quorum:libquorum-dev votequorum:libvotequorum-dev cmap:libcmap-dev; do
        [ -e "/usr/include/corosync/${f%%:*}.h" ] || pkgs+=("${f#*:}")
    done
    [ ${#pkgs[@]} -eq 0 ] && return 0
    log "installing: ${pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
}

PATH=$PATH:/usr/sbin:/sbin

node_count() { # from the state DIR recorded by `up`
    local d=$1
    [ -f "$d/cluster.env" ] && sed -n 's/^N=//p' "$d/cluster.env" || echo 0
}

write_conf() { # write_conf DIR K N
    local d=$1 k=$2 n=$3 i nodes=""
    for ((i = 1; i <= n; i++)); do
        nodes+="  node {
    ring0_addr: $NET.$i
    nodeid: $i
    name: n$i
  }
"
    done
    # The same file on every node, as on a real cluster (pmxfs writes the cluster's
    # corosync.conf back to it): per-node state and logs are bind-mounted by
    # start_corosync to the default paths inside corosync's own mount namespace.
    cat >"$d/n$k/corosync.conf" <<CONF
totem {
  version: 2
  config_version: 1
  cluster_name: pmxfs-test
  transport: knet
  crypto_cipher: aes256
  crypto_hash: sha256
  keyfile: $d/authkey
  token: ${TOKEN:-1000}
}
nodelist {
$nodes}
quorum {
  provider: corosync_votequorum
}
logging {
  to_stderr: no
  to_syslog: no
  to_logfile: yes
  logfile: /var/log/corosync/corosync.log
  timestamp: hires
}
CONF
}

start_corosync() { # start_corosync DIR K
    local d=$1 k=$2
    # ip netns exec, unshare (no --fork) and sh -c 'exec' all exec in place, so $! is
    # corosync's own pid.
    mkdir -p /var/lib/corosync /var/log/corosync
    ip netns exec "$GROUP_PREFIX$k" unshare -m sh -c \
        "mount --bind '$d/n$k/run' /run && mount --bind '$d/n$k/state' /var/lib/corosync \
         && mount --bind '$d/n$k/log' /var/log/corosync \
         && exec corosync -f -c '$d/n$k/corosync.conf'" \
        >"$d/n$k/corosync.out" 2>&1 </dev/null &
    echo $! >"$d/n$k/corosync.pid"
}

quorate_with() { # quorate_with K N  -> success when node K sees a quorate ring of N votes
    local out
    out=$(nsenter --net="/run/netns/$GROUP_PREFIX$1" -- corosync-quorumtool -s 2>/dev/null) || true
    printf '%s\n' "$out" | awk -v n="$2" '/^Quorate:/{q=$2} /^Total votes:/{v=$3} END{exit !(q=="Yes" && v==n)}'
}

find_pmxfs() {
    if [ -n "${PMXFS_BIN:-}" ]; then
        [ -x "$PMXFS_BIN" ] || die "PMXFS_BIN=$PMXFS_BIN is not executable"
        echo "$PMXFS_BIN"; return 0
    fi
    local c
    for c in "$(command -v pmxfs 2>/dev/null || true)" "$REPO/target/release/pmxfs" "$REPO/target/debug/pmxfs"; do
        [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
    done
    return 1
}

# Is there a FUSE mount at exactly $1? Reads mountinfo, never touches the mount itself.
fuse_mounted_at() {
    awk -v m="$1" '{ sep=0; for (i=7;i<=NF;i++) if ($i=="-") { sep=i; break }
                     if ($5==m && $(sep+1) ~ /^fuse/) found=1 } END{exit !found}' /proc/self/mountinfo
}

start_pmxfs() { # start_pmxfs DIR K BIN
    local d=$1 k=$2 bin=$3
    mkdir -p "$d/n$k/mnt"
    rm -f "$d/n$k/ready"
    # shellcheck disable=SC2086 # PMXFS_ARGS is a word list on purpose
    nsenter --net="/run/netns/$GROUP_PREFIX$k" -- "$bin" --mount "$d/n$k/mnt" \
        --db "$d/n$k/config.db" --nodename "n$k" --rrd-dir "$d/n$k/rrd" --rrdcached "" \
        --foreground --corosync-conf "$d/n$k/corosync.conf" --pidfile "$d/n$k/pmxfs.run.pid" \
        --restart-flag "$d/n$k/cfs-restart-flag" \
        ${PMXFS_ARGS:-} \
        >"$d/n$k/pmxfs.log" 2>&1 </dev/null &
    echo $! >"$d/n$k/pmxfs.pid"
}

wait_pmxfs() { # wait_pmxfs DIR K: until DIR/nK/mnt shows .members
    local d=$1 k=$2 t pid
    pid=$(cat "$d/n$k/pmxfs.pid")
    for ((t = 0; t < 150; t++)); do
        kill -0 "$pid" 2>/dev/null || { log "pmxfs on n$k exited; see $d/n$k/pmxfs.log"; return 1; }
        if fuse_mounted_at "$d/n$k/mnt"; then
            # The probe may hang if the daemon is wedged, so it runs detached and we only
            # look at the file it leaves; `down` aborts the connection and frees it.
            [ -e "$d/n$k/ready" ] && return 0
            ( test -e "$d/n$k/mnt/.members" && : >"$d/n$k/ready" ) >/dev/null 2>&1 &
        fi
        sleep 0.2
    done
    log "pmxfs on n$k did not show .members within 30 s"
    return 1
}

wait_quorate() { # wait_quorate DIR K: until DIR/nK/mnt/.members says quorate (writable)
    local d=$1 k=$2 t limit=$((${QUORUM_TIMEOUT:-60} * 5))
    # corosync's quorum comes first; pmxfs takes writes only after it has joined its
    # group and synced, which a mount that shows .members does not yet promise. Same
    # detached probe as wait_pmxfs, so a wedged daemon cannot hang `up`.
    local probe=""
    rm -f "$d/n$k/quorate"
    for ((t = 0; t < limit; t++)); do
        [ -e "$d/n$k/quorate" ] && { rm -f "$d/n$k/quorate"; return 0; }
        # One probe at a time: a wedged daemon holds one, not one per tick.
        if [ -z "$probe" ] || ! kill -0 "$probe" 2>/dev/null; then
            ( grep -q '"quorate": 1' "$d/n$k/mnt/.members" && : >"$d/n$k/quorate" ) >/dev/null 2>&1 &
            probe=$!
        fi
        sleep 0.2
    done
    log "pmxfs on n$k did not become quorate within ${QUORUM_TIMEOUT:-60} s; see $d/n$k/pmxfs.log"
    return 1
}

cmd_up() {
    local no_pmxfs=0
    if [ "${1:-}" = --no-pmxfs ]; then no_pmxfs=1; shift; fi
    local n=${1:?usage: up [--no-pmxfs] N [DIR]} d=${2:-$DEFAULT_DIR} k t bin=""
    [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 200 ] || die "N must be 1..200"
    need_root
    ensure_packages
    if [ "$no_pmxfs" = 0 ]; then
        bin=$(find_pmxfs) || { log "no pmxfs binary found (set PMXFS_BIN); corosync only"; bin=""; }
    fi
    mkdir -p "$d"
    d=$(cd "$d" && pwd)
    # A clean slate even after a failed or interrupted run.
    cmd_down "$d" >/dev/null 2>&1 || true
    printf 'N=%s\nBR=%s\nNET=%s\n' "$n" "$BR" "$NET" >"$d/cluster.env"
    [ -s "$d/authkey" ] || corosync-keygen -k "$d/authkey" >/dev/null 2>&1 \
        || { head -c 256 /dev/urandom >"$d/authkey"; }
    chmod 400 "$d/authkey"

    ip link add "$BR" type bridge
    ip addr add "$NET.254/24" dev "$BR"
    ip link set "$BR" up
    for ((k = 1; k <= n; k++)); do
        rm -rf "$d/n$k/run" "$d/n$k/state" "$d/n$k/log" "$d/n$k/ready"
        mkdir -p "$d/n$k/run" "$d/n$k/state" "$d/n$k/log" "$d/n$k/mnt"
        ip netns add "$GROUP_PREFIX$k"
        ip link add "veth$k" type veth peer name eth0 netns "$GROUP_PREFIX$k"
        ip link set "veth$k" master "$BR" up
        ip -n "$GROUP_PREFIX$k" addr add "$NET.$k/24" dev eth0
        ip -n "$GROUP_PREFIX$k" link set eth0 up
        ip -n "$GROUP_PREFIX$k" link set lo up
        write_conf "$d" "$k" "$n"
        start_corosync "$d" "$k"
    done
    local limit=$((${QUORUM_TIMEOUT:-60} * 5)) ok
    for ((t = 0; ; t++)); do
        ok=0
        for ((k = 1; k <= n; k++)); do quorate_with "$k" "$n" && ok=$((ok + 1)); done
        [ "$ok" -eq "$n" ] && break
        if [ "$t" -ge "$limit" ]; then
            for ((k = 1; k <= n; k++)); do log "n$k: $(tail -n 3 "$d/n$k/log/corosync.log" 2>/dev/null | tr '\n' ' ')"; done
            die "timeout waiting for quorum ($ok/$n quorate); run: $0 down $d"
        fi
        sleep 0.2
    done
    log "corosync: $n nodes quorate after $(awk -v t="$t" 'BEGIN{printf "%.1f", t*0.2}') s"
    if [ -n "$bin" ]; then
        printf 'BIN=%q\nPMXFS_ARGS=%q\n' "$bin" "${PMXFS_ARGS:-}" >"$d/pmxfs.env"
        for ((k = 1; k <= n; k++)); do start_pmxfs "$d" "$k" "$bin"; done
        for ((k = 1; k <= n; k++)); do wait_pmxfs "$d" "$k" || die "pmxfs did not come up; run: $0 down $d"; done
        for ((k = 1; k <= n; k++)); do wait_quorate "$d" "$k" || die "pmxfs is not writable; run: $0 down $d"; done
        log "pmxfs mounted and quorate at $d/n{1..$n}/mnt"
    fi
    echo "$d"
}

# pids whose command line mentions $1 and whose executable name is $2.
pids_matching() {
    local p cmd
    for p in /proc/[0-9]*; do
        [ -r "$p/cmdline" ] || continue
        cmd=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
        case "$cmd" in *"$1"*) ;; *) continue ;; esac
        [ "$(basename "$(readlink "$p/exe" 2>/dev/null || echo x)")" = "$2" ] && echo "${p#/proc/}"
    done
    return 0
}

# TERM, wait up to $1 s, then KILL; prints the pids that needed KILL.
stop_pids() {
    local grace=$1 p t alive
    shift
    [ $# -eq 0 ] && return 0
    kill -TERM "$@" 2>/dev/null || true
    for ((t = 0; t < grace * 4; t++)); do
        alive=0
        for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && return 0
        sleep 0.25
    done
    for p in "$@"; do kill -0 "$p" 2>/dev/null && { kill -KILL "$p" 2>/dev/null || true; echo "$p"; }; done
    return 0
}

cmd_down() {
    local d=${1:-$DEFAULT_DIR} n k p f line mnt minor pids dead killed
    need_root
    [ -d "$d" ] && d=$(cd "$d" && pwd)
    n=$(node_count "$d")

    # 1. FUSE mounts under DIR: abort the connection first (an unmount or stat of a mount
    #    whose daemon hangs would hang too), then detach lazily.
    if ! grep -q ' /sys/fs/fuse/connections ' /proc/self/mountinfo; then
        mount -t fusectl none /sys/fs/fuse/connections 2>/dev/null || true
    fi
    while read -r line; do
        [ -n "$line" ] || continue
        minor=${line%% *}
        mnt=${line#* }
        [ -w "/sys/fs/fuse/connections/$minor/abort" ] && echo 1 >"/sys/fs/fuse/connections/$minor/abort" 2>/dev/null || true
        umount -l "$mnt" 2>/dev/null || true
        log "unmounted $mnt"
    done < <(awk -v d="$d/" '{ sep=0; for (i=7;i<=NF;i++) if ($i=="-") { sep=i; break }
                               m=$5; gsub(/\\040/, " ", m)
                               if (index(m, d)==1 && $(sep+1) ~ /^fuse/) { split($3, mm, ":"); print mm[2], m } }' \
                 /proc/self/mountinfo | sort -r -k2)

    # 2. pmxfs daemons: from pid files, plus anything still serving a mount under DIR.
    pids=""
    for f in "$d"/n*/pmxfs.pid; do
        [ -f "$f" ] && p=$(cat "$f") && kill -0 "$p" 2>/dev/null && pids+=" $p"
    done
    pids+=" $(pids_matching "--mount $d/n" pmxfs | tr '\n' ' ')"
    # shellcheck disable=SC2086
    stop_pids 5 $(printf '%s\n' $pids | sort -u) >/dev/null
    rm -f "$d"/n*/pmxfs.pid "$d"/n*/ready 2>/dev/null || true

    # 3. corosync: all at once (graceful leave takes ~2.5 s in parallel, ~9 s serially).
    # Pid files are read whatever the state file says (it may be gone); dead pids are
    # kept for the shared-memory cleanup below.
    pids="" dead=""
    for f in "$d"/n*/corosync.pid; do
        [ -f "$f" ] || continue
        p=$(cat "$f")
        if kill -0 "$p" 2>/dev/null; then pids+=" $p"; else dead+=" $p"; fi
    done
    pids+=" $(pids_matching "-c $d/n" corosync | tr '\n' ' ')"
    # shellcheck disable=SC2086
    pids=$(printf '%s\n' $pids | sort -u | tr '\n' ' ')
    # shellcheck disable=SC2086
    killed=$(stop_pids 10 $pids)
    # A corosync that did not exit cleanly leaves its libqb shared memory behind.
    for p in $pids $dead; do rm -rf /dev/shm/qb-"$p"-* /dev/shm/qb-corosync-"$p"-* 2>/dev/null || true; done
    [ -n "$killed" ] && log "needed SIGKILL: $killed"
    rm -f "$d"/n*/corosync.pid 2>/dev/null || true

    # 4. links and namespaces: the recorded ones plus any pmxK / vethK left by a run
    #    whose state file was lost.
    for ((k = 1; k <= n; k++)); do
        ip link del "veth$k" 2>/dev/null || true
        ip netns del "$GROUP_PREFIX$k" 2>/dev/null || true
    done
    for p in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$GROUP_PREFIX[0-9]+$" || true); do
        ip netns del "$p" 2>/dev/null || true
    done
    if ip link show "$BR" >/dev/null 2>&1; then
        for p in $(ip -o link show master "$BR" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
            ip link del "$p" 2>/dev/null || true
        done
        ip link del "$BR" 2>/dev/null || true
    fi
    rm -f "$d/cluster.env" 2>/dev/null || true
    log "down: $d"
}

cmd_cut() { need_root; ip link set "veth${1:?usage: cut K}" down; }
cmd_heal() { need_root; ip link set "veth${1:?usage: heal K}" up; }

cmd_exec() {
    local k=${1:?usage: exec K CMD...}
    shift
    [ $# -gt 0 ] || die "usage: exec K CMD..."
    need_root
    # Network namespace only: corosync's IPC sockets live there, and the caller keeps
    # seeing the pmxfs mounts.
    exec nsenter --net="/run/netns/$GROUP_PREFIX$k" -- "$@"
}

abort_mount() { # abort_mount MOUNTPOINT: abort the FUSE connection (never stat it), detach
    local m=$1 minor
    grep -q ' /sys/fs/fuse/connections ' /proc/self/mountinfo ||
        mount -t fusectl none /sys/fs/fuse/connections 2>/dev/null || true
    minor=$(awk -v m="$m" '$5==m && / - fuse/ { split($3, mm, ":"); print mm[2] }' /proc/self/mountinfo)
    for x in $minor; do
        echo 1 >"/sys/fs/fuse/connections/$x/abort" 2>/dev/null || true
        umount -l "$m" 2>/dev/null || true
    done
}

cmd_pmxfs_kill() {
    local k=${1:?usage: pmxfs-kill K [DIR]} d=${2:-$DEFAULT_DIR} pid
    need_root
    pid=$(cat "$d/n$k/pmxfs.pid" 2>/dev/null) || die "no pmxfs pid for n$k"
    kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    abort_mount "$d/n$k/mnt"
    rm -f "$d/n$k/pmxfs.pid" "$d/n$k/ready"
}

cmd_pmxfs_stop() {
    local k=${1:?usage: pmxfs-stop K [DIR]} d=${2:-$DEFAULT_DIR} pid
    need_root
    pid=$(cat "$d/n$k/pmxfs.pid" 2>/dev/null) || die "no pmxfs pid for n$k"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && die "pmxfs on n$k did not stop on SIGTERM within 10 s"
    rm -f "$d/n$k/pmxfs.pid" "$d/n$k/ready"
}

cmd_corosync_stop() {
    local k=${1:?usage: corosync-stop K [DIR]} d=${2:-$DEFAULT_DIR} pid
    need_root
    pid=$(cat "$d/n$k/corosync.pid" 2>/dev/null) || die "no corosync pid for n$k"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

cmd_pmxfs_start() {
    local k=${1:?usage: pmxfs-start K [DIR]} d=${2:-$DEFAULT_DIR} BIN PMXFS_ARGS
    need_root
    if [ -f "$d/pmxfs.env" ]; then
        # shellcheck disable=SC1091
        . "$d/pmxfs.env"
    else # brought up with --no-pmxfs
        BIN=$(find_pmxfs) || die "no pmxfs binary found (set PMXFS_BIN)"
        PMXFS_ARGS=${PMXFS_ARGS:-}
        printf 'BIN=%q\nPMXFS_ARGS=%q\n' "$BIN" "$PMXFS_ARGS" >"$d/pmxfs.env"
    fi
    mv -f "$d/n$k/pmxfs.log" "$d/n$k/pmxfs.log.prev" 2>/dev/null || true
    # PMXFS_START_ARGS, if set, replaces the arguments for this start only.
    PMXFS_ARGS=${PMXFS_START_ARGS-$PMXFS_ARGS} start_pmxfs "$d" "$k" "$BIN"
    wait_pmxfs "$d" "$k"
}

cmd_status() {
    local d=${1:-$DEFAULT_DIR} n k p q link pm mnt
    [ -d "$d" ] && d=$(cd "$d" && pwd)
    n=$(node_count "$d")
    [ "$n" -gt 0 ] || { echo "no cluster recorded in $d"; return 1; }
    printf '%-4s %-6s %-10s %-9s %-10s %s\n' node link corosync quorate pmxfs mount
    for ((k = 1; k <= n; k++)); do
        link=$(ip -o link show "veth$k" 2>/dev/null | grep -q 'state UP' && echo up || echo down)
        p=$(cat "$d/n$k/corosync.pid" 2>/dev/null || echo -)
        kill -0 "$p" 2>/dev/null || p="dead"
        q=$(nsenter --net="/run/netns/$GROUP_PREFIX$k" -- corosync-quorumtool -s 2>/dev/null \
            | awk '/^Quorate:/{q=$2} /^Total votes:/{v=$3} END{print q"/"v}') || q="?"
        pm=$(cat "$d/n$k/pmxfs.pid" 2>/dev/null || echo -)
        [ "$pm" = - ] || kill -0 "$pm" 2>/dev/null || pm="dead"
        mnt=$(fuse_mounted_at "$d/n$k/mnt" && echo "$d/n$k/mnt" || echo -)
        printf 'n%-3s %-6s %-10s %-9s %-10s %s\n' "$k" "$link" "$p" "$q" "$pm" "$mnt"
    done
}

case "${1:-}" in
up) shift; cmd_up "$@" ;;
down) shift; cmd_down "$@" ;;
cut) shift; cmd_cut "$@" ;;
heal) shift; cmd_heal "$@" ;;
exec) shift; cmd_exec "$@" ;;
pmxfs-stop) shift; cmd_pmxfs_stop "$@" ;;
corosync-stop) shift; cmd_corosync_stop "$@" ;;
status) shift; cmd_status "$@" ;;
pmxfs-kill) shift; cmd_pmxfs_kill "$@" ;;
pmxfs-start) shift; cmd_pmxfs_start "$@" ;;
 *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
