#!/usr/bin/env bash
# fuzz.sh — runs every libFuzzer target of tests/fuzz for a bounded time, under ASan and UBSan.
#
# usage: tools/fuzz.sh [SECONDS_PER_TARGET]      (default 60; CI runs 60, run longer by hand)
#
# Builds the targets first if needed, in build-fuzz/ (or $BLOOPCL_FUZZ_BUILD): clang as the C
# compiler (Debian packages clang and libclang-rt-dev, the latter for libFuzzer's runtime),
# -Dfuzz=true, -Db_sanitize=address,undefined. Each target fuzz_<name> starts from its
# committed seeds, tests/fuzz/seeds/<name>/, copied into a scratch corpus so that the inputs
# libFuzzer adds never reach the repository. Any crash, sanitizer report, leak, failed
# invariant (the targets abort), or input slower than 10 s fails the run; the input that did
# it is kept under build-fuzz/fuzz-artifacts/<name>/ to replay (build-fuzz/tests/fuzz/fuzz_<name>
# FILE). One line per target: its executions and seconds.
# Exit status: 0 every target clean, 1 a target failed, 2 no clang or no target.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
build=${BLOOPCL_FUZZ_BUILD:-build-fuzz}
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "fuzz: seconds must be a positive integer: $seconds" >&2; exit 2; }

scratch=$(mktemp -d "${TMPDIR:-/tmp}/bloopcl-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

if [[ -f $build/build.ninja ]]; then
    # Again each time: the target list depends on which fuzz_<name>.c files exist.
    meson setup --reconfigure "$build" >"$scratch/setup.log" 2>&1 ||
        { cat "$scratch/setup.log" >&2; exit 2; }
else
    command -v clang >/dev/null || { echo "fuzz: clang not found (apt-get install clang libclang-rt-dev)" >&2; exit 2; }
    # b_lundef=false: with clang, a sanitized shared library leaves the sanitizer runtime's
    # symbols to the executable that loads it. Tests and tools are not needed here.
    CC=clang meson setup "$build" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
        -Dtests=disabled -Dtools=false --werror -Dwarning_level=3 >"$scratch/setup.log" 2>&1 ||
        { cat "$scratch/setup.log" >&2; exit 2; }
fi
ninja -C "$build" >"$scratch/build.log" 2>&1 ||
    { tail -n 40 "$scratch/build.log" >&2; echo "fuzz: the build failed (ninja -C $build)" >&2; exit 2; }

# The targets this configuration defines (not whatever fuzz_* files an older one left).
mapfile -t targets < <(meson introspect "$build" --targets | python3 -c '
import json, sys
for t in json.load(sys.stdin):
    if t["type"] == "executable" and t["name"].startswith("fuzz_"):
        print(t["filename"][0])')
(( ${#targets[@]} > 0 )) || { echo "fuzz: no target built in $build/tests/fuzz" >&2; exit 2; }

failed=0
for target in "${targets[@]}"; do
    name=${target##*/fuzz_}
    seeds=tests/fuzz/seeds/$name
    corpus=$scratch/$name
    artifacts=$build/fuzz-artifacts/$name
    mkdir -p "$corpus" "$artifacts"
    [[ -d $seeds ]] && cp -R "$seeds"/. "$corpus"/
    log=$scratch/$name.log
    status=0
    # UBSan reports become failures; leaks are checked (libFuzzer's -detect_leaks, on by default).
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        "$target" -max_total_time="$seconds" -timeout=10 -use_value_profile=1 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    elapsed=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
    inputs=$(find "$corpus" -type f | wc -l)
    if (( status != 0 )); then
        failed=1
        echo "fuzz_$name: FAILED (exit $status) after ${runs:-?} executions; input kept in $artifacts/"
        grep -E 'ERROR:|SUMMARY:|fuzz_[a-z_]+: .*:[0-9]+:' "$log" | head -n 5 | sed 's/^/  /'
    else
        echo "fuzz_$name: ok, ${runs:-?} executions in ${elapsed:-?} s, corpus $inputs inputs"
    fi
done
exit $failed
