#!/usr/bin/env bash
# oclgrind-check.sh — bloopcl on a second OpenCL implementation: a subset of bloopcl-compare run
# on Oclgrind (Debian package oclgrind), a simulator that reports itself as a GPU (so the kernels
# run in their GPU shape) and checks every work-item's memory accesses: out-of-bounds reads and
# writes, data races (--data-races), barrier divergence, and invalid API calls (--check-api).
#
# usage: tools/oclgrind-check.sh [BUILD_DIR]      (default: build)
#
# Every run goes through the `oclgrind` wrapper, which LD_PRELOADs Oclgrind's runtime so that
# the program sees the Oclgrind platform alone; --device oclgrind: makes sure of it. Oclgrind
# never fails a program for what it finds: it only prints. So its reports go to a log file per
# run (--log), and any line in it fails the check, as does any compare case that fails.
# (--uninitialized is not used: Oclgrind 21.10's plugin crashes on the fused kernels.)
#
# The case list: every method and option with both dot backends where the simulator is fast
# (the fused kernels), sizes 1, 257 and 4097 (a partial work-group, several groups), multi-
# segment steps over 17 segments in every layout, and the CLBlast backend for one
# configuration per method (CLBlast's Xdot simulates thousands of work-items per dot whatever
# n is, so each CLBlast case costs seconds). Exit status: 0 clean, 1 a diagnostic or a failed
# case, 2 a missing program.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
compare=$build/tools/bloopcl-compare
oclgrind=${OCLGRIND:-oclgrind}
command -v "$oclgrind" >/dev/null || { echo "oclgrind-check: $oclgrind not found (apt-get install oclgrind)" >&2; exit 2; }
[ -x "$compare" ] || { echo "oclgrind-check: $compare not built" >&2; exit 2; }

logs=$(mktemp -d /tmp/bloopcl-oclgrind.XXXXXX)
trap 'rm -rf "$logs"' EXIT
runs=0 cases=0 failed=0 diagnostics=0 bad_runs=0
start=$(date +%s)

# One bloopcl-compare run on Oclgrind: "label" then the compare options.
check() {
  local label=$1; shift
  local log=$logs/run$runs.log out=$logs/run$runs.out err=$logs/run$runs.err status=0
  runs=$((runs + 1))
  "$oclgrind" --data-races --check-api --log "$log" \
    "$compare" --device oclgrind: "$@" >"$out" 2>"$err" || status=$?
  local verdict
  verdict=$(tail -n 1 "$out")
  local reports=0
  [ -s "$log" ] && reports=$(grep -c '^[^[:space:]]' "$log" || true)
  if [[ ! $verdict =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    echo "FAIL  $label: no verdict (exit $status)"; sed -n '1,20p' "$err"
    bad_runs=$((bad_runs + 1))
  else
    cases=$((cases + BASH_REMATCH[1] + BASH_REMATCH[2]))
    failed=$((failed + BASH_REMATCH[2]))
    [ "$status" -eq 0 ] || bad_runs=$((bad_runs + 1))
    printf '%-4s  %-58s %s, %s diagnostics\n' "$([ "$status" -eq 0 ] && [ "$reports" -eq 0 ] \
      && echo ok || echo FAIL)" "$label" "$verdict" "$reports"
    [ "$status" -eq 0 ] || grep -v ' PASS\*\?$' "$out" | sed -n '1,20p'
  fi
  if [ -s "$log" ]; then
    diagnostics=$((diagnostics + (reports > 0 ? reports : 1)))
    echo "  Oclgrind reported (first lines of $reports):"; sed -n '1,40p' "$log" | sed 's/^/  | /'
  fi
}

sizes=1,257,4097
check "fused, every method, option and input" --sizes $sizes --filter fused
for layout in separate packed gapped; do
  check "fused, 17 segments $layout, normal" --sizes $sizes --segments 17 --layout $layout \
    --filter fused --filter " normal"
done
check "fused, 17 segments separate, nan_g/skip" --sizes $sizes --segments 17 --filter fused \
  --filter nan_g/skip
for config in "bloop defaults" "bloop ratio-only" "dynamic_barrier l=1" "pcgrad l=0.5" \
              "mixed defaults"; do
  check "clblast, $config, normal" --sizes $sizes --steps 2 --filter "$config clblast" \
    --filter " normal"
done
check "clblast, bloop defaults, 17 segments separate" --sizes 257 --steps 2 --segments 17 \
  --filter "bloop defaults clblast" --filter " normal"
check "clblast, pcgrad l=0.5, 17 segments packed" --sizes 4097 --steps 2 --segments 17 \
  --layout packed --filter "pcgrad l=0.5 clblast" --filter " normal"

elapsed=$(($(date +%s) - start))
echo "oclgrind-check: $cases cases in $runs runs on Oclgrind, $failed failed, $bad_runs runs" \
     "not clean, $diagnostics Oclgrind diagnostics, ${elapsed} s"
[ "$failed" -eq 0 ] && [ "$bad_runs" -eq 0 ] && [ "$diagnostics" -eq 0 ]
