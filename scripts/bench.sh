#!/bin/sh
# The benchmarks of docs/performance.md in one run, against the real peers (direct
# reads, nginx on plain files, Debian's docker-registry 2.8.2): builds the release
# binaries, prepares the stores (a 1 GiB blob and 10k repositories under target/bench,
# 100k repositories on /dev/shm, all reused by later runs), and prints one line per figure.
#
#   scripts/bench.sh [--only blob,nginx,gen,scale,disk,changes,verify] [--repos N] [--seconds S] ...
#   scripts/bench.sh --s3 [--only blob,nginx,twin] ...
#
# Needs root (drop_caches, mount(2)); about 5 minutes on 2 vCPUs once the stores exist.
# Options are those of scripts/bench/run.py (--help). With --s3 first, the S3 figures
# instead (scripts/bench/s3.py --help: a mount of a real Garage bucket vs direct ranged
# GETs and vs registry 2.8.2 on the bucket; about 2 minutes once Garage is built).
set -eu
cd "$(dirname "$0")/.."

scripts/install-deps.sh >/dev/null
if [ "${1:-}" = "--s3" ]; then
    shift
    cargo build --release --bins --quiet
    garage=$(scripts/install-garage.sh | tail -n 1)
    exec python3 scripts/bench/s3.py --registryfs target/release/registryfs --garage "$garage" "$@"
fi
cargo build --release --bins --examples --quiet
exec python3 scripts/bench/run.py \
    --registryfs target/release/registryfs \
    --example target/release/examples/schema1_generation "$@"
