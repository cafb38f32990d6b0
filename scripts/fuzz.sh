#!/bin/sh
# Builds the cargo-fuzz targets in fuzz/ and runs each for SECONDS (default 60), then
# prints a table: target, executions, crashes. Not part of CI (scripts/test.sh); the
# last results are in docs/reliability.md.
#
#     scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Works on the stable toolchain: cargo-fuzz's AddressSanitizer build passes the
# nightly-only -Zsanitizer=address, which RUSTC_BOOTSTRAP=1 allows on stable.
# FUZZ_SANITIZER=none builds without AddressSanitizer and without any -Z flag (still
# finds panics, overflows, hangs and huge allocations).
# Seeds come from fuzz/corpus/<target>/ and are never written to: new inputs go to a
# scratch corpus that is removed afterwards. Crash inputs are kept in
# fuzz/artifacts/<target>/ (git-ignored); replay one with
#     RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-...
set -eu
cd "$(dirname "$0")/.."

seconds=${1:-60}
[ $# -gt 0 ] && shift
targets=$*
sanitizer=${FUZZ_SANITIZER:-address}

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz from crates.io" >&2
    cargo install --locked cargo-fuzz
fi
[ -n "$targets" ] || targets=$(cd fuzz && cargo fuzz list)

work=$(mktemp -d "${TMPDIR:-/tmp}/registryfs-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
mkdir -p "$work/tmp"

echo "building fuzz targets (sanitizer: $sanitizer)" >&2
(cd fuzz && cargo fuzz build -s "$sanitizer" >"$work/build.log" 2>&1) || {
    cat "$work/build.log" >&2
    exit 1
}

failed=0
results=""
for t in $targets; do
    echo "fuzzing $t for ${seconds}s" >&2
    mkdir -p "$work/corpus/$t" "fuzz/artifacts/$t"
    before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    status=0
    # The fixtures the targets write on disk go below TMPDIR, removed with $work.
    (cd fuzz && TMPDIR="$work/tmp" cargo fuzz run -s "$sanitizer" "$t" \
        "$work/corpus/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1) >"$work/$t.log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -n 1)
    after=$(find "fuzz/artifacts/$t" -type f | wc -l)
    crashes=$((after - before))
    if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes="error"
    fi
    if [ "$status" -ne 0 ]; then
        failed=1
        tail -n 40 "$work/$t.log" >&2
    fi
    results="$results$t ${execs:-?} $crashes
"
done

printf '\n%-16s %12s %8s\n' target executions crashes
printf '%s' "$results" | while read -r t execs crashes; do
    printf '%-16s %12s %8s\n' "$t" "$execs" "$crashes"
done
printf '\n%s s per target, sanitizer %s, %s\n' "$seconds" "$sanitizer" "$(rustc --version)"
exit "$failed"
