#!/bin/sh
# Install Garage, the real S3-compatible server the S3 store tests run against
# (tests/s3), and print the path of its binary on stdout.
#
# The build takes about 10 minutes on 2 cores, so the binary is cached OUTSIDE
# the clone: later CI runs on the same machine find it and skip the build.
#
#   REGISTRYFS_GARAGE_CACHE   install root (default /var/cache/registryfs/garage-2.5.0,
#                             or ~/.cache/registryfs/garage-2.5.0 when /var/cache is
#                             not writable); the binary is $REGISTRYFS_GARAGE_CACHE/bin/garage
#
# Only the features the tests need: bundled sqlite/lmdb (built with cc, so no Debian
# -dev package is needed beyond a C toolchain), no Kubernetes/Consul discovery, no
# telemetry. The build runs under `nice` because the machine is shared.
set -eu

GARAGE_VERSION=2.5.0

default_cache() {
    system=/var/cache/registryfs/garage-$GARAGE_VERSION
    if mkdir -p "$(dirname "$system")" 2>/dev/null && [ -w "$(dirname "$system")" ]; then
        echo "$system"
    else
        echo "${XDG_CACHE_HOME:-$HOME/.cache}/registryfs/garage-$GARAGE_VERSION"
    fi
}

root=${REGISTRYFS_GARAGE_CACHE:-$(default_cache)}
binary=$root/bin/garage

if [ -x "$binary" ]; then
    echo "$binary"
    exit 0
fi

# A C toolchain builds the bundled sqlite, lmdb and zstd; nothing else comes from Debian.
if ! command -v cc >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends build-essential >&2
    else
        echo "install-garage: a C compiler (cc) and make are needed: apt-get install build-essential" >&2
        exit 1
    fi
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "install-garage: cargo is not on PATH" >&2
    exit 1
fi

mkdir -p "$(dirname "$root")"
# Build into a private staging root and rename it into place, so an interrupted
# build or two concurrent runs never leave a half-written binary at $binary.
staging=$(mktemp -d "$root.partial.XXXXXX")
chmod 755 "$staging"
cleanup() { rm -rf "$staging"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "install-garage: building garage $GARAGE_VERSION into $root (about 10 minutes on 2 cores)" >&2
started=$(date +%s)
nice -n 10 cargo install garage --version "$GARAGE_VERSION" --locked \
    --no-default-features --features bundled-libs,lmdb,sqlite \
    --root "$staging" >&2
"$staging/bin/garage" --version >&2

if ! mv -T "$staging" "$root" 2>/dev/null; then
    # Another run finished first; keep its binary if it works.
    if [ ! -x "$binary" ]; then
        echo "install-garage: cannot move $staging to $root" >&2
        exit 1
    fi
fi
echo "install-garage: built in $(($(date +%s) - started)) s" >&2
echo "$binary"
