#!/bin/bash
# train_seeds.sh — bloopcl-train's seeds are the whole of its randomness.
#
# usage: train_seeds.sh TRAINER
#
# Small runs (1024 images, 1 epoch of 4 steps, Bloop and Mixed at lambda 0.1):
#   - the same command twice (--seed 5 --seeds 2) gives bit-identical CSV rows: every column
#     but wall_seconds, compared as text (the %.9g losses hold a float's every bit);
#   - seed 6 of that run equals a run of --seed 6 alone (a seed's runs do not depend on the
#     seeds run before them), so seed s of --seeds S is the single run with --seed s;
#   - seeds 5 and 6 differ in every loss of every method (other weights, other batches).
# Anything missing fails the test; it never skips.
set -u

fail() {
    echo "train_seeds: FAIL: $*"
    exit 1
}

[ $# -eq 1 ] || fail "usage: train_seeds.sh TRAINER"
trainer=$1
[ -x "$trainer" ] || fail "no trainer at '$trainer'"
work=$(mktemp -d "${TMPDIR:-/tmp}/train_seeds.XXXXXX") || fail "mktemp"
trap 'rm -rf "$work"' EXIT
args=(--train-size 1024 --test-size 500 --epochs 1 --lambdas 0.1 --methods bloop,mixed
      --min-accuracy 0)

run() {
    local name=$1
    shift
    "$trainer" "${args[@]}" "$@" --csv "$work/$name.csv" > "$work/$name.out" 2>&1 ||
        { cat "$work/$name.out"; fail "$name: the trainer failed: $*"; }
}

# The rows without wall_seconds (column 9 of 10), seed SEED only if given.
rows() {
    awk -F, -v seed="${2:-}" 'NR > 1 && (seed == "" || $10 == seed) {
        $9 = ""; print }' OFS=, "$work/$1.csv"
}

run first --seed 5 --seeds 2
run again --seed 5 --seeds 2
run alone --seed 6
[ "$(rows first | wc -l)" -eq 4 ] || fail "first.csv: not 4 rows (2 methods x 2 seeds)"
[ "$(rows first)" = "$(rows again)" ] ||
    { diff <(rows first) <(rows again); fail "the same seeds gave different rows"; }
echo "the same command twice: $(rows first | wc -l) rows bit-identical"
[ "$(rows first 6)" = "$(rows alone)" ] ||
    { diff <(rows first 6) <(rows alone); fail "seed 6 of --seeds 2 differs from --seed 6"; }
echo "seed 6 of --seed 5 --seeds 2 = --seed 6 alone"
paste -d, <(rows first 5) <(rows first 6) | awk -F, '
{
    if ($1 != $11) { print "rows out of order"; bad++ }
    for (c = 5; c <= 8; ++c)
        if (c != 7 && $c == $(c + 10)) {
            printf "%s: column %d the same under seeds 5 and 6: %s\n", $1, c, $c; bad++
        }
    printf "%-6s seed 5: train %s aux %s   seed 6: train %s aux %s\n", $1, $5, $8, $15, $18
}
END { exit bad ? 1 : 0 }' || fail "seeds 5 and 6 gave the same losses"
echo "train_seeds: passed"
