/* normal.c — the N(0,1) stream behind BLOOPCL_INIT_RANDOM. Counter-based (element i depends on
 * (seed, i) only), so the state can be generated chunk by chunk and the CPU reference and the
 * device combiner draw exactly the same numbers. */
#include "bloopcl.h"

#include <math.h>

/* SplitMix64 finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mixer. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Uniform in (0, 1]: the top 53 bits, shifted off zero so that log() is finite. */
static double unit_interval(uint64_t bits)
{
    return ((double)(bits >> 11) + 1.0) * 0x1.0p-53;
}

/* Box-Muller, cosine branch: z = sqrt(-2 ln u1) cos(2 pi u2). Keys 2i and 2i+1 never collide
 * after the xor with the seed's key, so every element has its own two uniforms. */
static float normal_at(uint64_t key, uint64_t i)
{
    double u1 = unit_interval(mix64(key ^ (2 * i)));
    double u2 = unit_interval(mix64(key ^ (2 * i + 1)));
    const double two_pi = 6.283185307179586476925286766559;
    return (float)(sqrt(-2.0 * log(u1)) * cos(two_pi * u2));
}

void bloopcl_reference_normal(uint64_t seed, size_t first, size_t count, float *out)
{
    if (out == NULL)
        return;
    uint64_t key = mix64(seed);
    for (size_t k = 0; k < count; ++k)
        out[k] = normal_at(key, (uint64_t)(first + k));
}
