/* rng.h — the host's random numbers (splitmix64): initial weights, power-iteration starts,
 * batch order, the gradient check's coordinates. Fixed algorithms, so a seed gives the same
 * run on every machine. */
#ifndef BLOOPCL_TRAIN_RNG_H
#define BLOOPCL_TRAIN_RNG_H

#include <stddef.h>
#include <stdint.h>

/* The next 64 random bits of the stream `state`. */
uint64_t rng_next(uint64_t *state);

/* Uniform in [-1, 1) (53 random bits, rounded to float). */
float rng_uniform_pm1(uint64_t *state);

/* A uniformly random permutation of 0..n-1 (Fisher-Yates) from `seed`. */
void rng_permutation(uint64_t seed, int *perm, size_t n);

#endif
