/* bench_mix.h — the segment mix bloopcl-bench hands a step over: P segments of n elements in
 * the shape of a real model's parameter list (bench_mix.c says how they are sized). */
#ifndef BLOOPCL_BENCH_MIX_H
#define BLOOPCL_BENCH_MIX_H

#include <stddef.h>

/* Counts of the P = `segments` segments, summing exactly to n, into count[0..P-1]; -1 if n is
 * too small to give every segment at least one element. */
int bench_segment_sizes(size_t n, size_t segments, size_t *count);

#endif
