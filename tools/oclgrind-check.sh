#!/usr/bin/env bash
# oclgrind-check.sh — bloopcl on a second OpenCL implementation: a subset of bloopcl-compare run
# on Oclgrind (Debian package oclgrind), a simulator that checks every work-item's memory
# accesses: out-of-bounds reads and writes, data races (--data-races), barrier divergence, and
# invalid API calls (--check-api).
#
# usage: tools/oclgrind-check.sh [BUILD_DIR [K/N]]      (default: build, 0/1)
#
# K/N runs only every N-th check, starting at the K-th (0-based): N processes with K = 0 .. N-1
# together run every check once, each on its own core (Oclgrind simulates on one thread).
#
# Every run goes through the `oclgrind` wrapper, which LD_PRELOADs Oclgrind's runtime so that
# the program sees the Oclgrind platform alone; --device oclgrind: makes sure of it. Oclgrind
# 21.10 reports every device type at once (CPU | GPU | ACCELERATOR), which bloopcl reads as a
# CPU, so BLOOPCL_KERNEL_SHAPE=gpu forces the GPU shape (work-groups that reduce in local
# memory behind barriers: where races and divergence can be) for all runs but the first. Oclgrind
# never fails a program for what it finds: it only prints. So its reports go to a log file per
# run (--log), and any line in it fails the check, as does any compare case that fails.
# (--uninitialized is not used: Oclgrind 21.10's plugin crashes on the fused kernels.)
#
# The case list, at n = 1, 257 and 4097 (one element, a partial work-group, several groups),
# chosen so that every kernel variant runs at least once in as few runs as possible (each run
# pays Oclgrind's compile of every kernel; inputs beyond normal and non-finite change values,
# not accesses; every run names its element types, f32 unless it checks the others): the fused
# backend with every method and option on normal input and on a NaN
# in g under both policies (SKIP and PROPAGATE: the " nan_g/" filter) in each kernel shape;
# every method and option over 17 segments in each layout, at 32, 16 and 8 ranges per launch
# (BLOOPCL_KERNEL_SLOTS: 1, 2 and 3 launches), and the non-finite paths over 17 segments;
# 300 segments (several launches) in both shapes; the CLBlast backend with every method and
# option at n = 257 in one run, and over 17 segments twice (CLBlast's Xdot simulates
# thousands of work-items per dot whatever n is, so each CLBlast case costs seconds).
# Then small cases of the Criterion tests of the optimizer and of several auxiliary gradients,
# in both shapes (check_tests).
# Exit status: 0 clean, 1 a diagnostic or a failed case, 2 a missing program.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
part=${2:-0/1}
[[ $part =~ ^([0-9]+)/([1-9][0-9]*)$ ]] && [ "${BASH_REMATCH[1]}" -lt "${BASH_REMATCH[2]}" ] ||
  { echo "oclgrind-check: '$part' is not K/N with 0 <= K < N" >&2; exit 2; }
part_index=${BASH_REMATCH[1]} part_count=${BASH_REMATCH[2]}
compare=$build/tools/bloopcl-compare
oclgrind=${OCLGRIND:-oclgrind}
command -v "$oclgrind" >/dev/null || { echo "oclgrind-check: $oclgrind not found (apt-get install oclgrind)" >&2; exit 2; }
[ -x "$compare" ] || { echo "oclgrind-check: $compare not built" >&2; exit 2; }

logs=$(mktemp -d /tmp/bloopcl-oclgrind.XXXXXX)
trap 'rm -rf "$logs"' EXIT
runs=0 cases=0 failed=0 diagnostics=0 bad_runs=0 checks_seen=0
start=$(date +%s)

# One bloopcl-compare run on Oclgrind: the kernel shape (cpu, gpu, or gpu:SLOTS to force the
# ranges per launch), a label, then the compare options.
check() {
  checks_seen=$((checks_seen + 1))
  [ $(((checks_seen - 1) % part_count)) -eq "$part_index" ] || return 0
  local shape=${1%%:*} slots=${1#*:} label="$2, ${1%%:*} shape"; shift 2
  [ "$slots" != "$shape" ] && label="$label, $slots slots" || slots=
  local log=$logs/run$runs.log out=$logs/run$runs.out err=$logs/run$runs.err status=0
  runs=$((runs + 1))
  local began=$SECONDS
  env BLOOPCL_KERNEL_SHAPE="$shape" ${slots:+BLOOPCL_KERNEL_SLOTS=$slots} \
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
    printf '%-4s  %-66s %s, %s diagnostics, %d s\n' "$([ "$status" -eq 0 ] && \
      [ "$reports" -eq 0 ] && echo ok || echo FAIL)" "$label" "$verdict" "$reports" \
      $((SECONDS - began))
    [ "$status" -eq 0 ] || grep -v ' PASS\*\?$' "$out" | sed -n '1,20p'
  fi
  report_log "$log" "$reports"
}

# Oclgrind's log of a run: any line is a diagnostic (and fails the check).
report_log() {
  local log=$1 reports=$2
  if [ -s "$log" ]; then
    diagnostics=$((diagnostics + (reports > 0 ? reports : 1)))
    echo "  Oclgrind reported (first lines of $reports):"; sed -n '1,40p' "$log" | sed 's/^/  | /'
  fi
}

# One Criterion test program on Oclgrind (the library's paths that bloopcl-compare does not
# take: the optimizer in the step, several auxiliary gradients): the kernel shape, a label,
# the program under $build/tests and its --filter. Its synthesis line is the verdict.
check_tests() {
  checks_seen=$((checks_seen + 1))
  [ $(((checks_seen - 1) % part_count)) -eq "$part_index" ] || return 0
  local shape=$1 label="$2, $1 shape" program=$build/tests/$3 filter=$4
  local log=$logs/run$runs.log out=$logs/run$runs.out status=0 began=$SECONDS reports=0
  runs=$((runs + 1))
  [ -x "$program" ] || { echo "oclgrind-check: $program not built" >&2; exit 2; }
  env BLOOPCL_KERNEL_SHAPE="$shape" BLOOPCL_DEVICE=oclgrind: \
    "$oclgrind" --data-races --check-api --log "$log" "$program" -j1 --filter "$filter" \
    >"$out" 2>&1 || status=$?
  [ -s "$log" ] && reports=$(grep -c '^[^[:space:]]' "$log" || true)
  local verdict
  verdict=$(grep 'Synthesis:' "$out" || true)
  if [[ $verdict =~ Tested:\ ([0-9]+)\ \|\ Passing:\ ([0-9]+)\ \|\ Failing:\ ([0-9]+)\ \|\ Crashing:\ ([0-9]+) ]] &&
     [ "${BASH_REMATCH[1]}" -gt 0 ]; then
    cases=$((cases + BASH_REMATCH[1]))
    failed=$((failed + BASH_REMATCH[3] + BASH_REMATCH[4]))
    [ "$status" -eq 0 ] || bad_runs=$((bad_runs + 1))
    printf '%-4s  %-66s %s passed, %s failed, %s diagnostics, %d s\n' "$([ "$status" -eq 0 ] &&
      [ "$reports" -eq 0 ] && echo ok || echo FAIL)" "$label" "${BASH_REMATCH[2]}" \
      $((BASH_REMATCH[3] + BASH_REMATCH[4])) "$reports" $((SECONDS - began))
    [ "$status" -eq 0 ] || grep -F '[FAIL]' "$out" | sed -n '1,20p'
  else
    echo "FAIL  $label: no synthesis line (exit $status)"; sed -n '1,20p' "$out"
    bad_runs=$((bad_runs + 1))
  fi
  report_log "$log" "$reports"
}

sizes=1,257,4097
for shape in cpu gpu; do
  check $shape "fused, every method and option, normal" --dtypes f32 --sizes $sizes --filter fused \
    --filter " normal"
  check $shape "fused, every method and option, nan_g/skip and nan_g/prop" --dtypes f32 \
    --sizes $sizes --filter fused --filter " nan_g/"
done
# Segment lists: every method and option over 17 segments of mixed sizes in each layout (work-
# groups per range follow its size, so small segments cost the simulator little), each layout
# at another slot count, the non-finite paths, and 300 segments in both kernel shapes. Separate
# and packed run n = 4097 too (segments longer than a work-group: the grid-stride loop turns);
# gapped and the non-finite run, the costliest under the simulator, take n <= 257.
check gpu:32 "fused, 17 segments separate, every method and option" --dtypes f32 --sizes $sizes \
  --segments 17 --layout separate --filter fused --filter " normal"
check gpu:16 "fused, 17 segments packed, every method and option" --dtypes f32 --sizes $sizes \
  --segments 17 --layout packed --filter fused --filter " normal"
check gpu:8 "fused, 17 segments gapped, every method and option" --dtypes f32 --sizes 1,257 \
  --segments 17 --layout gapped --filter fused --filter " normal"
check gpu "fused, 17 segments separate, every method, nan_g/skip and nan_g/prop" --dtypes f32 \
  --sizes 257 --segments 17 --filter fused --filter " nan_g/"
check gpu "fused, 300 segments separate, bloop and mixed" --dtypes f32 --sizes 4097 --steps 2 \
  --segments 300 --filter "defaults fused" --filter " normal"
check cpu "fused, 300 segments separate, bloop and mixed" --dtypes f32 --sizes 4097 --steps 2 \
  --segments 300 --filter "defaults fused" --filter " normal"
check gpu "clblast, every method and option, normal" --dtypes f32 --sizes 257 --steps 2 \
  --filter clblast --filter " normal"
check gpu "clblast, 17 segments separate, bloop defaults" --dtypes f32 --sizes 257 --steps 2 \
  --segments 17 --filter "bloop defaults clblast" --filter " normal"
check gpu "clblast, 17 segments packed, pcgrad l=0.5" --dtypes f32 --sizes 4097 --steps 2 \
  --segments 17 --layout packed --filter "pcgrad l=0.5 clblast" --filter " normal"
# Element types (the runs above are f32): 2-byte g, a and d and mixed ones, with loss scales
# from the host and from a device buffer, in both shapes; and a typed segment list gapped over
# 8 ranges per launch (each range reads and writes its own element size).
check gpu "fused, 3 shards through split steps, every method and option" --shards 3 \
  --sizes 1,257 --steps 2 --filter fused --filter " normal"
check gpu "clblast, 2 shards through split steps, bloop and mixed defaults" --shards 2 \
  --sizes 257 --steps 2 --filter "defaults clblast" --filter " normal"
for shape in cpu gpu; do
  check $shape "fused, every method and option, f16/bf16/mixed types and loss scales" \
    --sizes 1,257 --dtypes bf16,f16:f32:bf16,f16/scaled-dev --filter fused --filter " normal"
done
check gpu:8 "fused, 17 segments gapped, bf16:f16:f32 and f16/scaled, every method" \
  --sizes 257 --segments 17 --layout gapped --dtypes bf16:f16:f32,f16/scaled --filter fused \
  --filter " normal"
# The optimizer in pass 2 (SGD, AdamW, 2-byte parameters, refusals) and several auxiliary
# gradients (accumulate, their finalize, with the optimizer), small cases, both shapes.
for shape in cpu gpu; do
  check_tests $shape "optimizer in the step: closed forms, bf16 parameters, refusals" \
    test_optimizer "optimizer/@(*closed_form|bf16*|misuse*)"
  check_tests $shape "several auxiliary gradients: clip, skip, optimizer, refusals" test_aux \
    "aux/@(barrier*|nonfinite*|fused_optimizer*|misuse*)"
done

elapsed=$(($(date +%s) - start))
echo "oclgrind-check${2:+ (part $part)}: $cases cases in $runs runs on Oclgrind, $failed failed, $bad_runs runs" \
     "not clean, $diagnostics Oclgrind diagnostics, ${elapsed} s"
[ "$failed" -eq 0 ] && [ "$bad_runs" -eq 0 ] && [ "$diagnostics" -eq 0 ]
