/* optimizer.c — see optimizer.h. */
#include "optimizer.h"

#include <math.h>
#include <stdlib.h>

#define ADAM_BETA1 0.9
#define ADAM_BETA2 0.999
#define ADAM_EPS 1e-8f

/* The bias corrections (1 - b1^t, 1 - b2^t) are computed in double on the host and rounded to
 * float once; the kernel indexes them with the device-side step count. */
static int alloc_bias_table(trainer *tr, long steps)
{
    size_t entries = (size_t)steps + 1;
    float *bias = malloc(2 * entries * sizeof *bias);
    cl_int zero = 0;
    for (size_t t = 0; bias != NULL && t < entries; ++t) {
        bias[2 * t] = (float)(1.0 - pow(ADAM_BETA1, (double)t));
        bias[2 * t + 1] = (float)(1.0 - pow(ADAM_BETA2, (double)t));
    }
    int ok = bias && (tr->adam_bias = make_buffer(tr, 2 * entries * sizeof *bias, bias)) &&
             (tr->adam_t = make_buffer(tr, sizeof zero, &zero));
    free(bias);
    return ok ? 0 : -1;
}

int optimizer_alloc(trainer *tr, long steps)
{
    for (int t = 0; t < NUM_TENSORS; ++t) {
        size_t own = tr->own_count[t] * sizeof(float);
        if (own && (!(tr->adam_m[t] = make_buffer(tr, own, NULL)) ||
                    !(tr->adam_v[t] = make_buffer(tr, own, NULL))))
            return -1;
    }
    return alloc_bias_table(tr, steps);
}

static int zero_fill(trainer *tr, cl_mem m, size_t bytes)
{
    float zero = 0.0f;
    return cl_check(clEnqueueFillBuffer(tr->queue, m, &zero, sizeof zero, 0, bytes, 0, NULL,
                                        NULL), "clEnqueueFillBuffer");
}

int optimizer_reset(trainer *tr)
{
    cl_int zero_steps = 0;
    if (write_buffer(tr, tr->adam_t, &zero_steps, sizeof zero_steps) != 0)
        return -1;
    for (int t = 0; t < NUM_TENSORS; ++t) {
        size_t own = tr->own_count[t] * sizeof(float);
        if (own && (zero_fill(tr, tr->adam_m[t], own) != 0 ||
                    zero_fill(tr, tr->adam_v[t], own) != 0))
            return -1;
    }
    return 0;
}

bloopcl_status optimizer_attach(const options *opt, bloopcl_combiner *comb)
{
    if (opt->own_adam)
        return BLOOPCL_OK;
    bloopcl_optimizer adam;
    bloopcl_optimizer_default(&adam, BLOOPCL_OPTIMIZER_ADAMW);
    adam.lr = opt->lr;
    adam.weight_decay = 0.0;  /* Adam, as the trainer's kernel */
    adam.beta1 = ADAM_BETA1;
    adam.beta2 = ADAM_BETA2;
    adam.eps = ADAM_EPS;
    return bloopcl_combiner_set_optimizer(comb, &adam);
}

/* The counter first (adam_tick), so that step t reads bias[t] with t counting this step. */
int optimizer_step(trainer *tr, const options *opt, cl_mem outputs)
{
    if (!opt->own_adam)
        return 0;  /* applied inside bloopcl's step */
    float rate = (float)opt->lr, b1 = (float)ADAM_BETA1, b2 = (float)ADAM_BETA2, eps = ADAM_EPS;
    karg tick[] = {KARG(tr->adam_t), KARG(outputs)};
    if (launch(tr, K_ADAM_TICK, 1, 0, tick, 2) != 0)
        return -1;
    for (int k = 0; k < NUM_TENSORS; ++k) {
        cl_int base = (cl_int)tr->own_offset[k];
        karg args[] = {KARG(tr->param[k]), KARG(tr->grad[k]), KARG(tr->adam_m[k]),
                       KARG(tr->adam_v[k]), KARG(rate), KARG(b1), KARG(b2), KARG(eps),
                       KARG(outputs), KARG(tr->adam_t), KARG(tr->adam_bias), KARG(base)};
        if (tr->own_count[k] > 0 && launch(tr, K_ADAM, tr->own_count[k], 0, args, 12) != 0)
            return -1;
    }
    return 0;
}

int optimizer_steps_applied(trainer *tr, const options *opt, bloopcl_combiner *comb,
                            cl_int *steps)
{
    if (opt->own_adam)
        return read_buffer(tr, tr->adam_t, steps, sizeof *steps, "read Adam step count");
    uint64_t t = 0;
    bloopcl_status st = bloopcl_optimizer_steps(comb, &t);
    *steps = (cl_int)t;
    return st == BLOOPCL_OK ? 0 : -1;
}

int optimizer_fused_moments(const options *opt, bloopcl_combiner *comb, float *m[2])
{
    m[0] = m[1] = NULL;
    if (opt->own_adam)
        return 0;
    size_t n = bloopcl_combiner_size(comb);
    const bloopcl_state_kind kinds[2] = {BLOOPCL_STATE_MOMENT1, BLOOPCL_STATE_MOMENT2};
    for (int k = 0; k < 2; ++k)
        if ((m[k] = malloc(n * sizeof(float))) == NULL ||
            bloopcl_read_state(comb, kinds[k], m[k], n) != BLOOPCL_OK)
            return -1;
    return 0;
}
