#!/bin/sh
# Build the Debian package: target/deb/registryfs_VERSION_ARCH.deb (its path is the
# last line printed). dpkg-deb only, no debian/ source tree: the files are laid out
# here from the build, the packaging/ folder and what the binary generates.
#
#   scripts/build-deb.sh [--binary FILE] [--out DIR]
#
#   --binary FILE  package this registryfs binary (default: cargo build --release)
#   --out DIR      where the .deb goes (default: target/deb)
#
# Contents: /usr/bin/registryfs, /sbin/mount.fuse.registryfs, the systemd template unit
# registryfs@.service, man pages and bash/zsh/fish completions (generated from the
# clap definitions by `registryfs generate-docs`), nginx and Apache examples (from
# `registryfs httpd-config`) and an instance config under /usr/share/doc/registryfs,
# the copyright file (with the licenses of the Rust crates linked in). Depends: fuse3.
# Needs dpkg-dev (dpkg-shlibdeps) and binutils (strip), as Debian's build-essential has.
set -eu
repo=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
cd "$repo"

binary=""
out="$repo/target/deb"
while [ $# -gt 0 ]; do
    case $1 in
        --binary) binary=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "usage: $0 [--binary FILE] [--out DIR]" >&2; exit 2 ;;
    esac
done
if [ -z "$binary" ]; then
    cargo build --release --bin registryfs --quiet
    binary="$repo/target/release/registryfs"
fi
[ -x "$binary" ] || { echo "build-deb: $binary: not an executable" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
# Reproducible: dates from the last commit, not the clock.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH
commit=$("$binary" --version | sed -n 's/.*(commit \(.*\))$/\1/p')

# DEP-5; the Rust crates statically linked in (cargo tree: normal dependencies, no
# build-time proc-macros) are listed with their licenses.
copyright() {
    first_year=$(git log --reverse --format=%cd --date=format:%Y 2>/dev/null | head -n 1)
    year=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
    years=$year
    if [ -n "$first_year" ] && [ "$first_year" != "$year" ]; then
        years="$first_year-$year"
    fi
    cat <<HEAD
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: registryfs

Files: *
Copyright: $years the registryfs contributors
License: Apache-2.0
 On Debian systems, the complete text of the Apache License, Version 2.0 can be
 found in "/usr/share/common-licenses/Apache-2.0".
Comment: /usr/bin/registryfs statically links these Rust crates (name, version,
 license as each declares it):
HEAD
    cargo tree -e normal --prefix none --format '{p} {l}' --quiet |
        grep -v -e '(proc-macro)' -e '^registryfs ' | sed 's/ (\*)$//' | LC_ALL=C sort -u |
        sed 's/^/ /'
}

mkdir -p "$out"
work=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
root="$work/root"
doc="$root/usr/share/doc/registryfs"

install -D -m 0755 "$binary" "$root/usr/bin/registryfs"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/registryfs"
install -D -m 0755 scripts/mount.fuse.registryfs "$root/sbin/mount.fuse.registryfs"
install -D -m 0644 "packaging/registryfs@.service" "$root/lib/systemd/system/registryfs@.service"

"$binary" generate-docs "$work/generated"
install -d "$root/usr/share/man/man1" "$root/usr/share/man/man8"
for page in "$work"/generated/man/*.1; do
    gzip -9n -c "$page" >"$root/usr/share/man/man1/$(basename "$page").gz"
done
gzip -9n -c packaging/mount.fuse.registryfs.8 >"$root/usr/share/man/man8/mount.fuse.registryfs.8.gz"
install -D -m 0644 "$work/generated/completions/registryfs.bash" "$root/usr/share/bash-completion/completions/registryfs"
install -D -m 0644 "$work/generated/completions/_registryfs" "$root/usr/share/zsh/vendor-completions/_registryfs"
install -D -m 0644 "$work/generated/completions/registryfs.fish" "$root/usr/share/fish/vendor_completions.d/registryfs.fish"

install -d "$doc/examples"
install -m 0644 packaging/registryfs.conf "$doc/examples/registryfs.conf"
# Configs for the example instance's mount point.
"$binary" httpd-config nginx --root /srv/registryfs >"$doc/examples/nginx.conf"
"$binary" httpd-config apache --root /srv/registryfs >"$doc/examples/apache.conf"
chmod 0644 "$doc/examples/nginx.conf" "$doc/examples/apache.conf"
gzip -9n -c README.md >"$doc/README.md.gz"
date=$(date -R -u -d "@$SOURCE_DATE_EPOCH")
maintainer="registryfs maintainers <registryfs@example.org>"
printf 'registryfs (%s) unstable; urgency=medium\n\n  * Built from commit %s.\n\n -- %s  %s\n' \
    "$version" "$commit" "$maintainer" "$date" | gzip -9n >"$doc/changelog.gz"
copyright >"$doc/copyright"

# Library dependencies as dpkg-shlibdeps finds them (it wants a debian/control).
mkdir -p "$work/shlibs/debian"
printf 'Source: registryfs\n\nPackage: registryfs\nArchitecture: any\n' >"$work/shlibs/debian/control"
shlibs=$(cd "$work/shlibs" && dpkg-shlibdeps -O "$root/usr/bin/registryfs" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')

install -d "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: registryfs
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: fuse3, ${shlibs}
Section: admin
Priority: optional
Description: container registry store as plain files, over FUSE
 registryfs mounts a container registry's storage (registry:2 filesystem or
 S3 layout, or an OCI image layout) read-only as plain files that any web
 server can serve as the Registry v2 pull API, including the schema1
 manifests registry 2.x generates for old clients, byte for byte.
 .
 Includes the mount(8) helper, a systemd template unit (registryfs@.service),
 nginx and Apache example configs, and "registryfs verify" to check a store.
CONTROL
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort |
    xargs md5sum >DEBIAN/md5sums)
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

deb="$out/registryfs_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
