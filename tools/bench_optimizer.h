/* bench_optimizer.h — bloopcl-bench --optimizer (bench_optimizer.c): the step with a separate
 * optimizer kernel against the step with the optimizer fused into it. */
#ifndef BLOOPCL_BENCH_OPTIMIZER_H
#define BLOOPCL_BENCH_OPTIMIZER_H

#include "bloopcl.h"
#include "tool_cli.h"
#include "tool_time.h"

#include <stddef.h>

/* Prints one line per size and segment count P (the model-like mix of bench_mix.h, each
 * segment in a cl_mem of its own); TOOL_EXIT_OK, or TOOL_EXIT_FAILED with the reason on
 * stderr. */
int bench_optimizer(bloopcl_context *ctx, bloopcl_optimizer_kind kind, const size_t *sizes,
                    size_t num_sizes, const size_t *segments, size_t num_segments, int reps);

#endif
