#!/usr/bin/env bash
# Install what pmxfs needs on Debian 12, idempotently: FUSE, SQLite's CLI (tests),
# corosync with its development headers and libclang (bindgen), network tools for the
# multi-node tests, librrd and rrdtool (RRD files), dpkg-dev, binutils and systemd (the
# package and its test), and a Rust toolchain if none is present.
set -euo pipefail

PKGS=(fuse3 sqlite3 corosync libcpg-dev libquorum-dev libcmap-dev libvotequorum-dev
      libcfg-dev libqb-dev libclang-dev clang pkg-config iproute2 util-linux psmisc procps openssl
      ca-certificates curl librrd-dev rrdcached rrdtool dpkg-dev binutils systemd)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: installing Rust with Debian's rustup"
    apt-get install -y -qq rustup >/dev/null 2>&1 || true
    rustup default stable >/dev/null
  fi
fi
# The FUSE control filesystem lets tests abort a wedged connection.
if ! grep -q ' /sys/fs/fuse/connections ' /proc/self/mountinfo; then
  mount -t fusectl none /sys/fs/fuse/connections 2>/dev/null || true
fi
# FUSE over io_uring (Linux 6.14+) is off by default; pmxfs uses it in local mode when
# it is on, and falls back to /dev/fuse when it is not.
uring=/sys/module/fuse/parameters/enable_uring
if [ -e "$uring" ] && [ "$(cat "$uring")" != Y ]; then
  echo Y >"$uring" 2>/dev/null || echo "setup: cannot enable FUSE over io_uring" >&2
fi
# corosync's Debian package starts a daemon on install; the tests run their own.
systemctl disable --now corosync >/dev/null 2>&1 || true
# rrdcached's likewise; the RRD tests start a private one on a socket of their own.
systemctl disable --now rrdcached >/dev/null 2>&1 || true
echo "setup: ok"
