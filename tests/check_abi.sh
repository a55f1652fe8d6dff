#!/usr/bin/env bash
# The ABI promise, checked (README, "ABI"):
#  1. the shared library exports exactly the functions bloopcl.h declares with BLOOPCL_API,
#     the stable ones at version BLOOPCL_1 (or a later BLOOPCL_1.N node) and those of the experimental section at
#     BLOOPCL_EXPERIMENTAL_*, and nothing else;
#  2. the experimental surface is invisible without BLOOPCL_EXPERIMENTAL;
#  3. bloopcl.h leaves CL_TARGET_OPENCL_VERSION to the translation unit that includes it.
# Usage: check_abi.sh LIBRARY HEADER_DIR CC [CC ARGS...]
set -euo pipefail
library=$1 header_dir=$2
cc=("${@:3}")
header=$header_dir/bloopcl.h
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# 1. Declared names, split by section, against the dynamic symbol table.
awk '/^#ifdef BLOOPCL_EXPERIMENTAL/ {x = 1} /^#endif \/\* BLOOPCL_EXPERIMENTAL/ {x = 0}
     /^BLOOPCL_API/ { if (match($0, /bloopcl_[a-z0-9_]+\(/))
                        print (x ? "BLOOPCL_EXPERIMENTAL" : "BLOOPCL_1"), substr($0, RSTART, RLENGTH - 1) }' \
    "$header" | sort > "$scratch/declared"
readelf --dyn-syms -W "$library" |
    awk '$4 == "FUNC" && $5 == "GLOBAL" && $7 != "UND" && $8 ~ /^bloopcl_/ {
             split($8, part, "@"); sub(/^BLOOPCL_EXPERIMENTAL_.*/, "BLOOPCL_EXPERIMENTAL", part[3]);
             sub(/^BLOOPCL_1\.[0-9]+$/, "BLOOPCL_1", part[3]); print part[3], part[1] }' |
    sort > "$scratch/exported"
if ! diff -u "$scratch/declared" "$scratch/exported" > "$scratch/diff"; then
    fail "exported symbols (+) differ from bloopcl.h's declarations (-):"
    cat "$scratch/diff"
fi
stray=$(readelf --dyn-syms -W "$library" |
        awk '$5 == "GLOBAL" && $7 != "UND" && $8 !~ /^bloopcl_/ && $4 != "OBJECT" && $8 != "" { print $8 }' |
        grep -v '^BLOOPCL_' || true)
[ -z "$stray" ] || fail "symbols exported besides bloopcl_*: $stray"
echo "symbols: $(wc -l < "$scratch/exported") exported," \
     "$(grep -c '^BLOOPCL_1 ' "$scratch/exported" || true) at BLOOPCL_1," \
     "$(grep -c '^BLOOPCL_EXPERIMENTAL ' "$scratch/exported" || true) experimental"

# 2. and 3. Translation units compiled as a user's would be (no project arguments).
compiles() {  # compiles NAME FLAGS... < source: 0 if it compiles without a warning
    local name=$1; shift
    cat > "$scratch/$name.c"
    "${cc[@]}" -std=c11 -Wall -Wextra -Werror "$@" -I"$header_dir" -c "$scratch/$name.c" \
        -o "$scratch/$name.o" 2> "$scratch/$name.log"
}
stable_probe='#include "bloopcl.h"
int probe(void) { return bloopcl_reference_step(NULL, NULL, NULL, NULL, NULL, NULL); }'
if echo "$stable_probe" | compiles stable -DCL_TARGET_OPENCL_VERSION=120; then
    fail "bloopcl_reference_step is declared without BLOOPCL_EXPERIMENTAL"
fi
echo "$stable_probe" | compiles experimental -DCL_TARGET_OPENCL_VERSION=120 -DBLOOPCL_EXPERIMENTAL ||
    { fail "the experimental surface does not compile with BLOOPCL_EXPERIMENTAL"; cat "$scratch/experimental.log"; }
compiles target300 -DCL_TARGET_OPENCL_VERSION=300 <<'EOF' ||
#include "bloopcl.h"
_Static_assert(CL_TARGET_OPENCL_VERSION == 300, "bloopcl.h changed the includer's choice");
void *probe(void);
void *probe(void) { return (void *)&clCreateCommandQueueWithProperties; }
EOF
    { fail "a translation unit targeting OpenCL 3.0 lost its API"; cat "$scratch/target300.log"; }
compiles unset -Wno-cpp <<'EOF' ||
#include "bloopcl.h"
_Static_assert(CL_TARGET_OPENCL_VERSION != 120, "bloopcl.h imposed OpenCL 1.2");
EOF
    { fail "bloopcl.h set CL_TARGET_OPENCL_VERSION for an includer that did not"; cat "$scratch/unset.log"; }
echo "header: stable surface hides the experimental one; CL_TARGET_OPENCL_VERSION is the includer's"

[ "$failures" -eq 0 ] && echo "check_abi: ok" || { echo "check_abi: $failures failure(s)"; exit 1; }
