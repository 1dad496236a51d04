#!/usr/bin/env bash
# Build the Debian package target/debian/pmxfs_<version>_amd64.deb: /usr/bin/pmxfs, its
# manual page, pmxfs.service (also known as pve-cluster.service, for hosts without
# Proxmox's pve-cluster) and the drop-in that runs pmxfs in pve-cluster.service's place
# on a Proxmox VE node (/usr/share/pmxfs/pve-cluster-pmxfs.conf). Dependencies come
# from dpkg-shlibdeps, as Debian's own packages get theirs.
#   scripts/package.sh              release build, then package
#   PMXFS_BIN=path scripts/package.sh   package that binary instead (the tests: the
#                                   dev build they already have)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if [ -z "${PMXFS_BIN:-}" ]; then
  bash scripts/setup.sh >/dev/null
  cargo build --release -q -p pmxfs
  PMXFS_BIN=$PWD/target/release/pmxfs
fi
[ -x "$PMXFS_BIN" ] || { echo "package.sh: no binary at $PMXFS_BIN" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
arch=$(dpkg --print-architecture)
out=target/debian
root=$(mktemp -d "${TMPDIR:-/tmp}/pmxfs-deb.XXXXXX")
trap 'rm -rf "$root"' EXIT

chmod 0755 "$root"
install -D -m 0755 "$PMXFS_BIN" "$root/usr/bin/pmxfs"
# Debug sections out (Debian policy); the symbol table stays, for backtraces.
strip --strip-debug "$root/usr/bin/pmxfs"
install -D -m 0644 debian/pmxfs.service "$root/lib/systemd/system/pmxfs.service"
install -D -m 0644 debian/pve-cluster-pmxfs.conf "$root/usr/share/pmxfs/pve-cluster-pmxfs.conf"
mkdir -p "$root/usr/share/man/man8" "$root/usr/share/doc/pmxfs"
"$PMXFS_BIN" man | gzip -9n >"$root/usr/share/man/man8/pmxfs.8.gz"
gzip -9nc README.md >"$root/usr/share/doc/pmxfs/README.md.gz"
cat >"$root/usr/share/doc/pmxfs/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: pmxfs
License: AGPL-3.0-or-later
 On Debian systems the full text of the GNU Affero General Public License is in
 /usr/share/common-licenses/AGPL-3 where available.
COPY

# dpkg-shlibdeps wants a source package around the binary it looks at.
shlib=$(mktemp -d "${TMPDIR:-/tmp}/pmxfs-shlib.XXXXXX")
mkdir -p "$shlib/debian"
printf 'Source: pmxfs\n\nPackage: pmxfs\nArchitecture: any\n' >"$shlib/debian/control"
depends=$(cd "$shlib" && dpkg-shlibdeps -O "$root/usr/bin/pmxfs" 2>/dev/null \
  | sed -n 's/^shlibs:Depends=//p')
rm -rf "$shlib"
[ -n "$depends" ] || { echo "package.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

mkdir -p "$root/DEBIAN"
cat >"$root/DEBIAN/control" <<CONTROL
Package: pmxfs
Version: $version
Architecture: $arch
Maintainer: pmxfs developers <pmxfs@localhost>
Depends: $depends, fuse3
Recommends: corosync, rrdcached
Section: admin
Priority: optional
Installed-Size: $(du -sk "$root" | cut -f1)
Description: Proxmox VE cluster configuration filesystem (/etc/pve)
 pmxfs serves /etc/pve as Proxmox's pmxcfs does: the same database, tree, modes,
 limits and locks, the pve2 IPC service PVE's daemons use, the status kvstore, the
 cluster log and RRD files, replicated over corosync, with cache-coherent stat.
 It can stand in for pmxcfs on a Proxmox VE node (see pmxfs(8)).
CONTROL
cat >"$root/DEBIAN/postinst" <<'POST'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
POST
cp "$root/DEBIAN/postinst" "$root/DEBIAN/postrm"
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/postrm"

mkdir -p "$out"
deb=$out/pmxfs_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
