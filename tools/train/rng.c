/* rng.c — see rng.h. */
#include "rng.h"

/* splitmix64 (Steele, Lea, Flood 2014): a Weyl sequence through a 64-bit mixer. */
uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

float rng_uniform_pm1(uint64_t *state)
{
    return (float)((double)(rng_next(state) >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

void rng_permutation(uint64_t seed, int *perm, size_t n)
{
    for (size_t i = 0; i < n; ++i)
        perm[i] = (int)i;
    for (size_t i = n; i > 1; --i) {
        size_t j = (size_t)(rng_next(&seed) % i);
        int t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}
