#!/bin/sh
# The whole test suite, as CI runs it (.ci/run): system packages, format and lint
# checks, unit and integration tests (including real FUSE mounts), then the oracle
# comparison against Debian's docker-registry 2.8.2, then nginx and Apache serving a
# mount compared with that registry (tests/httpd), then nginx over a mount under 256
# connections while tags move, with the daemon killed and restarted (tests/load); then
# `registryfs ls/cat/mount s3://...` against registry 2.8.2 on a real S3 server (Garage,
# built once into /var/cache/registryfs by scripts/install-garage.sh: about 10 minutes
# the first time on 2 cores), and a mount of it while the server fails (tests/s3/faults.py);
# then the Debian package: built, lintian, installed, its systemd unit's command lines
# run, removed (tests/package).
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
garage=$(scripts/install-garage.sh)
python3 tests/s3/store_oracle.py --registryfs target/debug/registryfs --garage "$garage"
python3 tests/s3/faults.py --registryfs target/debug/registryfs --garage "$garage"
python3 tests/package/run.py --registryfs target/debug/registryfs
