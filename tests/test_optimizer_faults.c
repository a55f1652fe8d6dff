/* test_optimizer_faults.c — a driver failing in the middle of a step that applies the
 * optimizer (linked into test_faults with fault_shim.c).
 *
 * Every kernel launch and argument of an AdamW step in pass 2 is failed in turn, on both dot
 * backends. The parameters and moments are updated in place on both (even where the EMA is
 * double-buffered), so: a failure before pass 2 must leave the parameters, both moments, t
 * and the EMA exactly as they were; a failure once pass 2 began must return
 * BLOOPCL_ERR_STATE_INVALID, after which steps and moment reads are refused until the state
 * is written back (EMA, both moments), and the next step then works and counts t again. */
#include "fault_shim.h"
#include "support.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

/* 40 segments with gaps between them (they cannot merge): pass 2 takes two launches or more
 * at 32 ranges per launch, so a launch can fail after another was enqueued. */
#define SEGMENTS 40
#define SEGMENT 60
#define STRIDE 64
#define N (SEGMENTS * SEGMENT)

typedef struct optimizer_rig {
    bloopcl_context *ctx;
    bloopcl_combiner *comb;
    cl_mem g, a, p;
    bloopcl_segment segments[3][SEGMENTS];
    bloopcl_tensor tg, ta, tp;
} optimizer_rig;

/* The parameters as one packed host vector, from or into the gapped buffer. */
static void read_params(optimizer_rig *r, float *host)
{
    for (int s = 0; s < SEGMENTS; ++s)
        cr_assert_eq(clEnqueueReadBuffer(bloopcl_context_queue(r->ctx), r->p, CL_TRUE,
                                         (size_t)s * STRIDE * sizeof(float),
                                         SEGMENT * sizeof(float), host + s * SEGMENT, 0, NULL,
                                         NULL), CL_SUCCESS);
}

static void write_params(optimizer_rig *r, const float *host)
{
    for (int s = 0; s < SEGMENTS; ++s)
        cr_assert_eq(clEnqueueWriteBuffer(bloopcl_context_queue(r->ctx), r->p, CL_TRUE,
                                          (size_t)s * STRIDE * sizeof(float),
                                          SEGMENT * sizeof(float), host + s * SEGMENT, 0, NULL,
                                          NULL), CL_SUCCESS);
}

static void open_rig(optimizer_rig *r, bloopcl_dot_backend dots)
{
    r->ctx = support_context();
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    config.dots = dots;
    r->comb = support_combiner(r->ctx, &config, N);
    bloopcl_optimizer o;
    bloopcl_optimizer_default(&o, BLOOPCL_OPTIMIZER_ADAMW);
    cr_assert_eq(bloopcl_combiner_set_optimizer(r->comb, &o), BLOOPCL_OK);
    float *host = support_alloc(SEGMENTS * STRIDE);
    cl_mem *buffers[3] = {&r->g, &r->a, &r->p};
    for (int k = 0; k < 3; ++k) {
        support_fill_normal(host, SEGMENTS * STRIDE, 1u + (unsigned)k, 1.0f);
        *buffers[k] = support_buffer(r->ctx, host, SEGMENTS * STRIDE);
        for (int s = 0; s < SEGMENTS; ++s)
            r->segments[k][s] = (bloopcl_segment){.buffer = *buffers[k],
                                                  .offset_bytes = (size_t)s * STRIDE * 4,
                                                  .count = SEGMENT};
    }
    free(host);
    r->tg = (bloopcl_tensor){r->segments[0], SEGMENTS};
    r->ta = (bloopcl_tensor){r->segments[1], SEGMENTS};
    r->tp = (bloopcl_tensor){r->segments[2], SEGMENTS};
}

static void close_rig(optimizer_rig *r)
{
    clReleaseMemObject(r->g), clReleaseMemObject(r->a), clReleaseMemObject(r->p);
    bloopcl_combiner_destroy(r->comb);
    bloopcl_context_destroy(r->ctx);
}

static bloopcl_status optimizing_step(optimizer_rig *r)
{
    bloopcl_step_options options = BLOOPCL_STEP_OPTIONS_INIT;
    options.update_parameters = 1;
    return bloopcl_step_with_options(r->comb, &r->tg, &r->ta, &r->tp, &options, 0, NULL, NULL);
}

typedef struct saved {
    float *params, *ema, *m1, *m2;
    uint64_t t;
} saved;

static saved save(optimizer_rig *r)
{
    saved s = {support_alloc(N), support_alloc(N), support_alloc(N), support_alloc(N), 0};
    read_params(r, s.params);
    cr_assert_eq(bloopcl_read_state(r->comb, BLOOPCL_STATE_EMA, s.ema, N), BLOOPCL_OK);
    cr_assert_eq(bloopcl_read_state(r->comb, BLOOPCL_STATE_MOMENT1, s.m1, N), BLOOPCL_OK);
    cr_assert_eq(bloopcl_read_state(r->comb, BLOOPCL_STATE_MOMENT2, s.m2, N), BLOOPCL_OK);
    cr_assert_eq(bloopcl_optimizer_steps(r->comb, &s.t), BLOOPCL_OK);
    return s;
}

static void free_saved(saved *s)
{
    free(s->params), free(s->ema), free(s->m1), free(s->m2);
}

static void expect_same(const saved *x, const saved *y, unsigned long k)
{
    cr_expect_eq(memcmp(x->params, y->params, N * sizeof(float)), 0, "#%lu: parameters", k);
    cr_expect_eq(memcmp(x->ema, y->ema, N * sizeof(float)), 0, "#%lu: EMA", k);
    cr_expect_eq(memcmp(x->m1, y->m1, N * sizeof(float)), 0, "#%lu: moment 1", k);
    cr_expect_eq(memcmp(x->m2, y->m2, N * sizeof(float)), 0, "#%lu: moment 2", k);
    cr_expect_eq(x->t, y->t, "#%lu: t", k);
}

/* After STATE_INVALID: refused until every kind is written back (and the parameters). */
static void restore(optimizer_rig *r, const saved *before, unsigned long k)
{
    float *scratch = support_alloc(N);
    cr_expect_eq(optimizing_step(r), BLOOPCL_ERR_STATE_INVALID, "#%lu: step refused", k);
    cr_expect_eq(bloopcl_read_state(r->comb, BLOOPCL_STATE_MOMENT2, scratch, N),
                 BLOOPCL_ERR_STATE_INVALID, "#%lu: moment read refused", k);
    cr_assert_eq(bloopcl_write_state(r->comb, BLOOPCL_STATE_EMA, before->ema, N), BLOOPCL_OK);
    cr_assert_eq(bloopcl_write_state(r->comb, BLOOPCL_STATE_MOMENT1, before->m1, N), BLOOPCL_OK);
    cr_expect_eq(optimizing_step(r), BLOOPCL_ERR_STATE_INVALID, "#%lu: moment 2 still invalid",
                 k);
    cr_assert_eq(bloopcl_write_state(r->comb, BLOOPCL_STATE_MOMENT2, before->m2, N), BLOOPCL_OK);
    cr_assert_eq(bloopcl_set_optimizer_steps(r->comb, before->t), BLOOPCL_OK);
    write_params(r, before->params);
    saved now = save(r);
    expect_same(&now, before, k);
    free_saved(&now);
    free(scratch);
}

static void run_optimizer_faults(bloopcl_dot_backend dots, const char *call)
{
    optimizer_rig r;
    open_rig(&r, dots);
    cr_assert_eq(optimizing_step(&r), BLOOPCL_OK, "%s", bloopcl_context_last_error(r.ctx));
    fault_reset();
    cr_assert_eq(optimizing_step(&r), BLOOPCL_OK);
    unsigned long calls = fault_calls(call);
    cr_assert_geq(calls, 1);
    unsigned long invalid = 0;
    /* every call up to 64; beyond (CLBlast's many), a spread and the last 8 (pass 2's) */
    unsigned long stride = calls > 64 ? calls / 56 : 1;
    for (unsigned long k = 1; k <= calls; k = k + stride < calls - 8 ? k + stride
                                             : k < calls - 8 ? calls - 8 : k + 1) {
        saved before = save(&r);
        fault_reset();
        fault_arm(call, k, CL_OUT_OF_RESOURCES);
        bloopcl_status status = optimizing_step(&r);
        bool fired = fault_fired(call);
        fault_reset();
        cr_assert(fired && status != BLOOPCL_OK, "%s #%lu: fired %d, status %d", call, k,
                  fired, status);
        if (status == BLOOPCL_ERR_STATE_INVALID) {
            invalid++;
            restore(&r, &before, k);
        } else {
            saved after = save(&r);
            expect_same(&after, &before, k);
            free_saved(&after);
        }
        cr_assert_eq(optimizing_step(&r), BLOOPCL_OK, "#%lu: the next step works: %s", k,
                     bloopcl_context_last_error(r.ctx));
        uint64_t t = 0;
        cr_assert_eq(bloopcl_optimizer_steps(r.comb, &t), BLOOPCL_OK);
        cr_expect_eq(t, before.t + 1, "#%lu: the next step counts once", k);
        free_saved(&before);
    }
    if (strcmp(call, "clEnqueueNDRangeKernel") == 0)  /* the pass-2 launch itself */
        cr_expect_geq(invalid, 1, "a failure in pass 2 reports the state invalid");
    close_rig(&r);
}

Test(optimizer_faults, fused_kernel_launch, .timeout = 600)
{
    run_optimizer_faults(BLOOPCL_DOTS_FUSED, "clEnqueueNDRangeKernel");
}

Test(optimizer_faults, clblast_kernel_launch, .timeout = 600)
{
    run_optimizer_faults(BLOOPCL_DOTS_CLBLAST, "clEnqueueNDRangeKernel");
}

Test(optimizer_faults, fused_kernel_argument, .timeout = 600)
{
    run_optimizer_faults(BLOOPCL_DOTS_FUSED, "clSetKernelArg");
}

Test(optimizer_faults, fused_flush, .timeout = 600)
{
    run_optimizer_faults(BLOOPCL_DOTS_FUSED, "clFlush");
}
