/* bench_mix.c — the model-like segment mix of bloopcl-bench (bench_mix.h). */
#include "bench_mix.h"

#include <stdint.h>

/* A fixed integer hash (splitmix64's finaliser on a Weyl step), so the mix is the same on
 * every run and machine. */
static uint64_t mix_hash(uint64_t i)
{
    uint64_t z = i * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef enum segment_kind { LARGE, MEDIUM, VECTOR } segment_kind;

/* Segment i of P in the shape of a transformer's or a ResNet's parameter list: a large
 * matrix (embedding, classifier) at every hundredth position, a vector (bias, norm scale)
 * at every odd one, a medium matrix (attention, MLP, convolution) everywhere else. */
static segment_kind segment_kind_of(size_t i)
{
    return i % 100 == 0 ? LARGE : i % 2 == 1 ? VECTOR : MEDIUM;
}

/* Counts of the P segments, summing exactly to n:
 *   large matrices  min(n/8, n/(2L)) each, for the L = ceil(P/100) of them (at most n/2 in all);
 *   vectors         1 + hash(i) mod span, span = clamp(n/(16P), 1, 1024) (at most
 *                   max(n/32, P/2) in all);
 *   medium matrices share the rest R, in weights w_i = 1 + hash(i) mod 4 summing to W:
 *                   1 + floor(w_i (R - M) / W) each (M of them), at most R in all;
 * what rounding leaves over goes to segment 0 (a large matrix; with no medium matrix, as for
 * P <= 2, it takes the whole rest: P = 1 is one segment of n). Returns -1 if n is too small
 * to give every segment at least one element. */
int bench_segment_sizes(size_t n, size_t segments, size_t *count)
{
    size_t large = 0, mediums = 0, used = 0, weights = 0;
    for (size_t i = 0; i < segments; ++i)
        large += segment_kind_of(i) == LARGE, mediums += segment_kind_of(i) == MEDIUM;
    size_t large_size = n / 8 < n / (2 * large) ? n / 8 : n / (2 * large);
    size_t span = n / (16 * segments);
    span = span < 1 ? 1 : span > 1024 ? 1024 : span;
    for (size_t i = 0; i < segments; ++i) {
        segment_kind kind = segment_kind_of(i);
        count[i] = kind == LARGE ? (large_size ? large_size : 1)
                 : kind == VECTOR ? 1 + (size_t)(mix_hash(i) % span) : 0;
        used += count[i];
        weights += kind == MEDIUM ? 1 + (size_t)(mix_hash(i) % 4) : 0;
    }
    if (used + mediums > n)
        return -1;
    size_t rest = n - used - mediums;  /* beyond the one element each medium matrix gets */
    for (size_t i = 0; i < segments; ++i)
        if (segment_kind_of(i) == MEDIUM) {
            count[i] = 1 + rest * (1 + (size_t)(mix_hash(i) % 4)) / weights;  /* exact: w <= 4 */
            used += count[i];
        }
    count[0] += n - used;
    return 0;
}

