/* shards.h — bloopcl-compare --shards K: a case's gradient split into K uneven slices (the
 * first ones empty when n is small), a combiner per non-empty slice, and one split step over all of
 * them (bloopcl_step_begin on each, bloopcl_sum_totals of their totals in shard order,
 * bloopcl_step_end on each), as K ranks of a sharded trainer would take it. Each shard starts
 * from its slice of the initial state (config.random_offset, initial_ema + start). The checks then
 * see the assembled d and state and the scalars of the first shard; every shard must hold
 * the same scalars bit for bit. */
#ifndef BLOOPCL_COMPARE_SHARDS_H
#define BLOOPCL_COMPARE_SHARDS_H

#include "bloopcl.h"

#include <stdbool.h>
#include <stddef.h>

#define SHARDS_MAX 16

typedef struct sharded {
    bloopcl_context *ctx;
    size_t count, n;
    size_t start[SHARDS_MAX], size[SHARDS_MAX];
    bloopcl_combiner *comb[SHARDS_MAX];      /* NULL for an empty slice */
    cl_mem g[SHARDS_MAX], a[SHARDS_MAX], d[SHARDS_MAX];
} sharded;

/* The slices of n elements for `count` shards: shard k gets about (k + 1) parts in
 * count (count + 1) / 2, rounded down, the last one the rest. */
void shards_layout(size_t n, size_t count, size_t *start, size_t *size);

/* Creates the combiners and buffers; on failure returns the status with `why` filled and
 * nothing left allocated. */
bloopcl_status sharded_create(bloopcl_context *ctx, const bloopcl_config *config, size_t n,
                              size_t count, sharded *s, char *why, size_t why_size);
void sharded_destroy(sharded *s);

/* One sharded step over host g, a (n floats); d (n floats) read back. A refusal or driver
 * failure returns its status with `why` naming the shard and the call. */
bloopcl_status sharded_step(sharded *s, const float *g, const float *a, float *d, char *why,
                            size_t why_size);

/* The assembled state of `kind` (n floats), as bloopcl_read_state. */
bloopcl_status sharded_read_state(sharded *s, bloopcl_state_kind kind, float *out);

/* The first shard's diagnostics; *agree: every shard's r, r_q, dots and verdict are the same
 * bits. */
bloopcl_status sharded_diagnostics(sharded *s, bloopcl_diagnostics *out, bool *agree);

#endif
