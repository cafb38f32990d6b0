#!/bin/sh
# Regenerate samples/store/ with the real docker-registry (see
# tests/oracle/make_sample_store.py). Needs scripts/install-deps.sh first.
set -eu
repo=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
exec python3 "$repo/tests/oracle/make_sample_store.py" --out "$repo/samples/store" "$@"
