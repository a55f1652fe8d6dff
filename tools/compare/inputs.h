/* inputs.h — bloopcl-compare's inputs: g and a of every step for one input kind and size, and
 * the initial EMA buffers of BLOOPCL_INIT_BUFFER, from the library's own normal stream. */
#ifndef BLOOPCL_COMPARE_INPUTS_H
#define BLOOPCL_COMPARE_INPUTS_H

#include "catalogue.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct input_set {
    size_t n;
    int steps;
    float *g[MAX_STEPS], *a[MAX_STEPS];
    float *initial_ema, *initial_aux_ema;   /* for BLOOPCL_INIT_BUFFER */
} input_set;

/* Makes every step's g and a for `kind` (the shapes --help lists). False: out of memory. */
bool make_inputs(input_kind kind, size_t n, int steps, uint64_t seed, input_set *set);
void free_inputs(input_set *set);

/* malloc of n floats (at least one). */
float *alloc_floats(size_t n);

#endif
