#!/bin/sh
# The whole test suite, as CI runs it (.ci/run): system packages, format and lint
# checks, unit and integration tests (including real FUSE mounts), then the oracle
# comparison against Debian's docker-registry 2.8.2, then nginx and Apache serving a
# mount compared with that registry (tests/httpd), then nginx over a mount under 256
# connections while tags move, with the daemon killed and restarted (tests/load).
set -eu
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo build
scripts/build-libtrust-verify.sh >/dev/null
cargo test
python3 tests/oracle/run.py --registryfs target/debug/registryfs
python3 tests/httpd/run.py --registryfs target/debug/registryfs
python3 tests/metadata/run.py --registryfs target/debug/registryfs
python3 tests/load/link_race.py --registryfs target/debug/registryfs
python3 tests/load/run.py --registryfs target/debug/registryfs --duration 60
