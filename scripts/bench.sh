#!/bin/sh
# The benchmarks of docs/performance.md in one run, against the real peers (direct
# reads, nginx on plain files, Debian's docker-registry 2.8.2): builds the release
# binaries, prepares the stores (a 1 GiB blob under target/bench, 100k generated
# repositories on /dev/shm, both reused by later runs), and prints one line per figure.
#
#   scripts/bench.sh [--only blob,nginx,gen,scale,changes,verify] [--repos N] [--seconds S] ...
#
# Needs root (drop_caches, mount(2)); about 5 minutes on 2 vCPUs once the stores exist.
# Options are those of scripts/bench/run.py (--help).
set -eu
cd "$(dirname "$0")/.."

scripts/install-deps.sh >/dev/null
cargo build --release --bins --examples --quiet
exec python3 scripts/bench/run.py \
    --registryfs target/release/registryfs \
    --example target/release/examples/schema1_generation "$@"
