/* step.c — see step.h. */
#include "step.h"
#include "aux_loss.h"
#include "model.h"
#include "optimizer.h"

#include <math.h>
#include <stdio.h>

/* One segment per tensor over the given buffers: its own slice (empty when it has none). */
static void make_tensor(const trainer *tr, cl_mem *bufs, bloopcl_segment *segs,
                        bloopcl_tensor *t)
{
    for (int k = 0; k < NUM_TENSORS; ++k)
        segs[k] = (bloopcl_segment){.buffer = bufs[k],
                                    .offset_bytes = tr->own_offset[k] * sizeof(float),
                                    .count = tr->own_count[k], .dtype = BLOOPCL_DTYPE_F32};
    *t = (bloopcl_tensor){segs, NUM_TENSORS};
}

/* g[0] <- NaN, as an overflowing loss would leave it (--inject-nonfinite). */
static int inject_nonfinite(trainer *tr)
{
    const float nan_value = NAN;
    return cl_check(clEnqueueFillBuffer(tr->queue, tr->grad[0], &nan_value, sizeof nan_value, 0,
                                        sizeof nan_value, 0, NULL, NULL), "clEnqueueFillBuffer");
}

/* This rank's rows of the batch into act[0] and batch_y. */
static int gather_batch(trainer *tr, size_t first, size_t rows)
{
    cl_int width = IMAGE_SIZE, off = (cl_int)first;
    karg ga[] = {KARG(tr->train_x), KARG(tr->train_y), KARG(tr->perm), KARG(off), KARG(width),
                 KARG(tr->act[0]), KARG(tr->batch_y)};
    return launch(tr, K_GATHER, IMAGE_SIZE, rows, ga, 7);
}

/* g and a for this rank's rows, g summed over the ranks. */
static int gradients(trainer *tr, const options *opt, size_t first, long t)
{
    size_t lo, rows;
    train_dp_rows(tr->dp, opt->batch, &lo, &rows);
    if (gather_batch(tr, first + lo, rows) != 0 || model_forward(tr, tr->act[0], 0, rows) != 0 ||
        model_cross_entropy(tr, tr->batch_y, 0, rows, 1.0f / (float)opt->batch) != 0 ||
        model_backward(tr, rows) != 0 || aux_gradient(tr, opt->power_iters) != 0 ||
        (t == opt->inject_step && inject_nonfinite(tr) != 0))
        return -1;
    return train_dp_sum_gradients(tr->dp, tr->queue, tr->grad);
}

/* The bloopcl step over the own slices: fused, the parameters take d's place and bloopcl's
 * AdamW updates them in pass 2; else d = combine(g, a) in place over g, for the trainer's
 * Adam. bloopcl's output buffer in *outputs. */
static int combine(trainer *tr, bloopcl_combiner *comb, const options *opt, cl_mem *outputs)
{
    bloopcl_segment gs[NUM_TENSORS], as[NUM_TENSORS], ps[NUM_TENSORS];
    bloopcl_tensor g, a, params;
    make_tensor(tr, tr->grad, gs, &g);
    make_tensor(tr, tr->aux, as, &a);
    make_tensor(tr, tr->param, ps, &params);
    bloopcl_step_options step_options = BLOOPCL_STEP_OPTIONS_INIT;
    step_options.update_parameters = !opt->own_adam;
    bloopcl_status st = train_dp_step(tr->dp, comb, &g, &a, opt->own_adam ? &g : &params,
                                      &step_options);
    if (st == BLOOPCL_OK)
        st = bloopcl_combiner_outputs(comb, outputs);
    if (st != BLOOPCL_OK && tr->dp == NULL)  /* train_dp_step reports its own failures */
        fprintf(stderr, "%s: bloopcl_step: %s: %s\n", PROGRAM, bloopcl_status_string(st),
                bloopcl_context_last_error(tr->ctx));
    return st == BLOOPCL_OK ? 0 : -1;
}

int train_step(trainer *tr, bloopcl_combiner *comb, const options *opt, size_t first, long t)
{
    cl_mem outputs = NULL;
    if (gradients(tr, opt, first, t) != 0 || combine(tr, comb, opt, &outputs) != 0 ||
        optimizer_step(tr, opt, outputs) != 0)
        return -1;
    return train_dp_gather_parameters(tr->dp, tr->queue, tr->param);
}
