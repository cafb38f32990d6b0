#!/bin/sh
# Mount the bundled sample store (samples/store, written by a real registry 2.8.2)
# and look at it with ls and cat, then unmount. Needs root (or fuse3's fusermount3)
# and /dev/fuse.
set -eu
cd "$(dirname "$0")/.."

if ! command -v fusermount3 >/dev/null 2>&1; then
    sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
    $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -q fuse3
fi
cargo build --release --quiet
bin=target/release/registryfs
key=target/demo-signing-key.json
[ -f "$key" ] || "$bin" keygen "$key" >/dev/null

mnt=$(mktemp -d /tmp/registryfs-demo.XXXXXX)
"$bin" mount samples/store "$mnt" --signing-key "$key" &
pid=$!
cleanup() {
    exec >/dev/null 2>&1
    set +x
    trap - EXIT INT TERM HUP
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if mountpoint -q "$mnt"; then fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt"; fi
    rmdir "$mnt"
}
# A closed output pipe (`demo.sh | head`) must not kill the shell before cleanup:
# with SIGPIPE ignored, writes just fail and `set -e` ends the script through cleanup.
trap '' PIPE
trap cleanup EXIT INT TERM HUP
i=0
until mountpoint -q "$mnt"; do
    i=$((i + 1))
    if [ "$i" -gt 100 ] || ! kill -0 "$pid" 2>/dev/null; then echo "demo: mount did not come up" >&2; exit 1; fi
    sleep 0.1
done

set -x
ls -R "$mnt"
cat "$mnt/demo/hello/tags/list"
ls -l "$mnt/demo/multi/manifests/latest"
cat "$mnt/demo/hello/manifests/latest/schema1"; echo
cat "$mnt/demo/hello/manifests/latest/schema2"; echo
{ set +x; } 2>/dev/null
