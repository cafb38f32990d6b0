#!/bin/sh
# Build tests/libtrust-verify into target/libtrust-verify.
#
# Offline on purpose: GOPATH mode (GO111MODULE=off) with GOPATH pointing at
# Debian's /usr/share/gocode, where golang-github-docker-libtrust-dev puts the
# libtrust source. No module proxy, no go.mod, nothing downloaded.
set -eu

repo=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
gopath=/usr/share/gocode
libtrust="$gopath/src/github.com/docker/libtrust"
out="$repo/target/libtrust-verify"

if ! command -v go >/dev/null 2>&1; then
    echo "build-libtrust-verify: go not found; run scripts/install-deps.sh (golang-go)" >&2
    exit 1
fi
if [ ! -f "$libtrust/jsonsign.go" ]; then
    echo "build-libtrust-verify: $libtrust missing; run scripts/install-deps.sh (golang-github-docker-libtrust-dev)" >&2
    exit 1
fi

mkdir -p "$repo/target"
cd "$repo/tests/libtrust-verify"
# Keep Go's build cache inside target/ so a build never writes to $HOME and
# `cargo clean` removes it too.
GO111MODULE=off GOENV=off GOPATH="$gopath" GOFLAGS= GOCACHE="$repo/target/go-build-cache" \
    go build -o "$out" .
echo "$out"
