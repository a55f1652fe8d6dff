#!/usr/bin/env bash
# sanitize-check.sh — the test suite under AddressSanitizer + UndefinedBehaviorSanitizer, and a
# leak check that can fail.
#
# usage: tools/sanitize-check.sh [BUILD_DIR [WARM_BUILD_DIR [TEST...]]]
#        (defaults: build-asan, build, the tests named below; TEST: a `meson test` name)
#
# Builds BUILD_DIR with -Db_sanitize=address,undefined (UBSan with -fno-sanitize-recover=all, so
# undefined behaviour ends the process and fails its test) and runs every test of `meson test`
# in it, every test program included (faults; gpu_policy, whose LD_PRELOADed shim comes before
# libasan in the library list: verify_asan_link_order=0 lets that be, the shim needs no
# interposition of its own), but not the duplicate runs of methods and segments under other
# kernel shapes and widths (*_gpu_shape, *_vector4): those are the same host code, which the
# normal suite runs in every variant; here they would double the step's time.
#
# The leak verdict is read outside Criterion. Criterion runs each test in a worker process and
# takes the test's result from the worker: a worker that leaks ends in LeakSanitizer's exit code
# 23 after its test passed, and Criterion 2.4 counts a pass and exits 0 (with abort_on_error=1
# it warns of a crash in teardown, still counting a pass). Here every ASan/LSan
# report of every process (test runners, Criterion workers, the tools the tests start) goes to
# its own file (log_path=DIR/asan.PID), and the check fails if any file exists: a file is only
# written when there is something to report (print_suppressions=0: suppressed leaks are silent).
# UBSan does not follow log_path in a combined build, so its reports ("runtime error:") are
# looked for in meson's test log, on top of the failed test they cause.
#
# Suppressions (tools/lsan.supp) name the third-party functions that leak, never a whole
# library: a leak reached from a test body (every stack runs through Criterion) or a cl_mem
# never released (every stack runs through PoCL) must be reported. Naming frames needs whole
# stacks, and PoCL and LLVM have no frame pointers, so the slow unwinder is on
# (fast_unwind_on_malloc=0). It makes LLVM's code generation very slow, so PoCL's kernel cache is
# seeded from WARM_BUILD_DIR's (the normal test run's: same kernels, same PoCL) when it has one.
#
# Exit status: 0 clean, 1 a failed test or a sanitizer report, 2 the build failed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${1:-build-asan}
warm=${2:-build}
reports=$root/$build/sanitizer-reports
testlog=$build/meson-logs/testlog.txt

configure_and_build() {
  if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" -Db_sanitize=address,undefined -Db_lundef=false --werror \
      -Dwarning_level=3 -Dc_args=-fno-sanitize-recover=all >"$build.setup.log" 2>&1 ||
      { cat "$build.setup.log"; echo "sanitize-check: meson setup failed"; exit 2; }
    rm -f "$build.setup.log"
  fi
  ninja -C "$build" >/dev/null || { echo "sanitize-check: build failed"; exit 2; }
  if [ -d "$warm/pocl-cache" ] && [ ! -d "$build/pocl-cache" ]; then
    cp -R "$warm/pocl-cache" "$build/pocl-cache"
  fi
}

# Every process writes its ASan/LSan report to $reports/asan.PID; whole stacks for the
# suppressions' names (100 frames: LLVM's deepest allocations still reach PoCL's frame).
set_sanitizer_options() {
  rm -rf "$reports"
  mkdir -p "$reports"
  # use_sigaltstack=0: ASan 12's thread teardown fails to unmap the alternate signal stack in
  # processes forked from threaded ones (CHECK failed: "unable to unmap"), as device_select's
  # race tests are; bloopcl installs no signal handlers, so nothing needs that stack.
  local common="log_path=$reports/asan:fast_unwind_on_malloc=0:malloc_context_size=100:use_sigaltstack=0"
  export ASAN_OPTIONS="$common:detect_leaks=1:halt_on_error=1:abort_on_error=1:verify_asan_link_order=0"
  # use_tls=0: LeakSanitizer's tracer crashed (SIGSEGV, "Tracer caught signal 11") reading a
  # dynamic-TLS range it had recorded wrongly (log_threads=1: "DTLS 8 at 0x2cfb-0x800003dfd"),
  # from a library PoCL loads, at the exit of test_state and test_segments. Without TLS as a
  # root a pointer held only in thread-local storage would show as a leak: a false failure,
  # never a missed leak.
  export LSAN_OPTIONS="$common:suppressions=$root/tools/lsan.supp:print_suppressions=0:use_tls=0"
  export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
}

# The tests named on the command line, else every test but the duplicate variants.
run_tests() {
  local tests=("$@")
  if [ ${#tests[@]} -eq 0 ]; then
    mapfile -t tests < <(meson test -C "$build" --no-rebuild --list 2>/dev/null |
                         grep -v -E '_(gpu_shape|vector4)$')
  fi
  test_count=${#tests[@]}
  tests_status=0
  meson test -C "$build" --no-rebuild --num-processes 1 --print-errorlogs "${tests[@]}" \
    >"$build/sanitize-check.log" 2>&1 || tests_status=$?
  grep -E '^ *[0-9]+/[0-9]+ ' "$build/sanitize-check.log" | awk '!seen[$0]++' || true
  summary=$(grep -E '^(Ok|Fail|Timeout):' "$build/sanitize-check.log" |
    awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2}')
}

# Counts the report files by kind and UBSan's lines in meson's log; shows the first reports.
read_reports() {
  leaks=0 memory_errors=0 other=0
  local report shown=0
  for report in "$reports"/asan.*; do
    [ -e "$report" ] || continue
    if grep -q 'ERROR: LeakSanitizer' "$report"; then leaks=$((leaks + 1))
    elif grep -q 'ERROR: AddressSanitizer' "$report"; then memory_errors=$((memory_errors + 1))
    else other=$((other + 1))
    fi
    if [ "$shown" -lt 3 ]; then
      shown=$((shown + 1))
      echo "--- $report (first 60 lines)"; sed -n '1,60p' "$report"
    fi
  done
  undefined=$(grep -c 'runtime error:' "$testlog" || true)
  [ "$undefined" -eq 0 ] || { echo "--- UBSan in $testlog:"; grep -m 10 -A 8 'runtime error:' "$testlog"; }
}

main() {
  local start
  start=$(date +%s)
  configure_and_build
  set_sanitizer_options
  run_tests "${@:3}"
  read_reports
  echo "sanitize-check: $test_count tests (${summary:-no summary}), $leaks leak reports," \
       "$memory_errors ASan error reports, $other other sanitizer reports, $undefined UBSan" \
       "reports, $(($(date +%s) - start)) s"
  [ "$tests_status" -eq 0 ] && [ "$leaks" -eq 0 ] && [ "$memory_errors" -eq 0 ] &&
    [ "$other" -eq 0 ] && [ "$undefined" -eq 0 ]
}

main "$@"; exit  # (exit: a script edited while it runs ends here all the same)
