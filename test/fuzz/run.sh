#!/usr/bin/env bash
# Run libFuzzer harnesses from the kept corpus (see the Makefile's fuzzing
# section and README.md, "Fuzzing").
#
#   test/fuzz/run.sh smoke SECONDS HARNESS...   fuzz a temporary copy of
#       test/fuzz/corpus/<harness>/; nothing is written into the tree
#       except, on a failure, the failing input under test/fuzz/findings/
#   test/fuzz/run.sh long SECONDS HARNESS...    the same, then merge the
#       inputs that add coverage into test/fuzz/corpus/<harness>/
#
# One harness at a time, one process each (libFuzzer's default; -jobs would
# fork and write fuzz-N.log into the current directory).  Exits non-zero if any harness
# crashed, leaked, timed out (10 s for one input) or ran out of memory.
set -euo pipefail

mode=${1:?smoke or long}
seconds=${2:?seconds per harness}
shift 2
[ "$mode" = smoke ] || [ "$mode" = long ] || { echo "run.sh: smoke or long, not $mode" >&2; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/colcrypt-fuzz.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
status=0

for harness in "$@"; do
    name=$(basename "$harness")
    kept="$here/corpus/$name"
    work="$tmp/$name"
    mkdir -p "$work/corpus" "$work/artifacts" "$kept"
    cp -p "$kept"/. "$work/corpus/" -R 2>/dev/null || true
    dict=()
    [ -f "$here/$name.dict" ] && dict=(-dict="$here/$name.dict")

    printf '%-14s %s s, %s kept inputs ... ' "$name" "$seconds" "$(find "$kept" -type f | wc -l)"
    rc=0
    "$harness" "$work/corpus" "${dict[@]}" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
        -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/" >"$work/log" 2>&1 || rc=$?

    # libFuzzer's last status line and final statistics.
    last=$(grep -E '^#[0-9]+' "$work/log" | tail -n 1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/log")
    if [ "$rc" -ne 0 ] || ls "$work/artifacts"/* >/dev/null 2>&1; then
        echo "FAILED (exit $rc)"
        status=1
        grep -vE '^#[0-9]+|^INFO:|^\s*"' "$work/log" | head -n 60
        mkdir -p "$here/findings"
        for a in "$work/artifacts"/*; do
            [ -f "$a" ] || continue
            cp "$a" "$here/findings/$name-$(basename "$a")"
            echo "kept $here/findings/$name-$(basename "$a")"
        done
        continue
    fi
    cov=$(echo "$last" | grep -oE 'cov: [0-9]+' || true)
    ft=$(echo "$last" | grep -oE 'ft: [0-9]+' || true)
    corp=$(echo "$last" | grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' || true)
    echo "ok: ${execs:-?} execs, ${speed:-?}/s, $cov $ft $corp"

    if [ "$mode" = long ]; then
        before=$(find "$kept" -type f | wc -l)
        "$harness" -merge=1 -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
            -artifact_prefix="$work/artifacts/" "$kept" "$work/corpus" >"$work/merge.log" 2>&1 || {
            echo "$name: merge failed"; tail -n 20 "$work/merge.log"; status=1; continue; }
        echo "               merged into test/fuzz/corpus/$name: $before -> $(find "$kept" -type f | wc -l) inputs, $(du -sk "$kept" | cut -f1) kB"
    fi
done
exit $status
