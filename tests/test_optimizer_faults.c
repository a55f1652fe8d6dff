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
#include <math.h>
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

/* CL_DEVICE_MAX_MEM_ALLOC_SIZE of 1 MiB: AdamW's two moments over several state chunks (n =
 * 600000 floats: 5 chunks of at most half the largest allocation) stay within it, and the
 * fused steps equal bloopcl_step then the reference optimizer on d, chunk boundaries
 * included (moment2_offset per chunk). */
Test(optimizer_faults, moments_fit_the_largest_allocation, .timeout = 300)
{
    const cl_ulong mib = 1024 * 1024;
    const size_t n = 600000;
    fault_fake_device_memory(0, mib);
    bloopcl_context *ctx = support_context();
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    config.dots = BLOOPCL_DOTS_FUSED;
    fault_reset();
    bloopcl_combiner *fused = support_combiner(ctx, &config, n);
    bloopcl_combiner *plain = support_combiner(ctx, &config, n);
    bloopcl_optimizer o;
    bloopcl_optimizer_default(&o, BLOOPCL_OPTIMIZER_ADAMW);
    cr_assert_eq(bloopcl_combiner_set_optimizer(fused, &o), BLOOPCL_OK, "%s",
                 bloopcl_context_last_error(ctx));
    float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
    float *p_ref = support_alloc(n), *p = support_alloc(n);
    support_fill_normal(p_ref, n, 3, 1.0f);
    /* every device buffer within the (fake) largest allocation: one slice per 256K floats */
    const size_t slice = 200000;
    cl_mem bufs[4][3];
    bloopcl_segment segs[4][3];
    for (int k = 0; k < 4; ++k)
        for (int s = 0; s < 3; ++s) {
            bufs[k][s] = support_buffer(ctx, k == 3 ? p_ref + (size_t)s * slice : NULL, slice);
            segs[k][s] = (bloopcl_segment){.buffer = bufs[k][s], .count = slice};
        }
    bloopcl_tensor tg = {segs[0], 3}, ta = {segs[1], 3}, td = {segs[2], 3}, tp = {segs[3], 3};
    bloopcl_reference_optimizer_state ref;
    cr_assert_eq(bloopcl_reference_optimizer_init(&o, n, &ref), BLOOPCL_OK);
    bloopcl_step_options options = BLOOPCL_STEP_OPTIONS_INIT;
    options.update_parameters = 1;
    for (int t = 1; t <= 3; ++t) {
        support_fill_normal(g, n, 10u + (unsigned)t, 1.0f);
        support_fill_normal(a, n, 20u + (unsigned)t, 1.0f);
        for (int s = 0; s < 3; ++s) {
            cl_command_queue q = bloopcl_context_queue(ctx);
            cr_assert_eq(clEnqueueWriteBuffer(q, bufs[0][s], CL_TRUE, 0, slice * 4,
                                              g + (size_t)s * slice, 0, NULL, NULL), CL_SUCCESS);
            cr_assert_eq(clEnqueueWriteBuffer(q, bufs[1][s], CL_TRUE, 0, slice * 4,
                                              a + (size_t)s * slice, 0, NULL, NULL), CL_SUCCESS);
        }
        cr_assert_eq(bloopcl_step_with_options(fused, &tg, &ta, &tp, &options, 0, NULL, NULL),
                     BLOOPCL_OK, "%s", bloopcl_context_last_error(ctx));
        cr_assert_eq(bloopcl_step(plain, &tg, &ta, &td, 0, NULL, NULL), BLOOPCL_OK);
        for (int s = 0; s < 3; ++s)
            support_read(ctx, bufs[2][s], d + (size_t)s * slice, slice);
        cr_assert_eq(bloopcl_reference_optimizer_step(&o, &ref, o.lr, d, 1, p_ref,
                                                      BLOOPCL_DTYPE_F32), BLOOPCL_OK);
    }
    for (int s = 0; s < 3; ++s)
        support_read(ctx, bufs[3][s], p + (size_t)s * slice, slice);
    for (size_t i = 0; i < n; ++i)
        cr_assert(fabs((double)p[i] - (double)p_ref[i]) <= 4e-6 * (1.0 + fabs((double)p_ref[i])),
                  "p[%zu]: device %.9g, reference %.9g", i, (double)p[i], (double)p_ref[i]);
    cr_expect_leq(fault_largest_buffer(), mib, "largest buffer %zu bytes",
                  fault_largest_buffer());
    bloopcl_reference_optimizer_free(&ref);
    for (int k = 0; k < 4; ++k)
        for (int s = 0; s < 3; ++s)
            clReleaseMemObject(bufs[k][s]);
    bloopcl_combiner_destroy(fused), bloopcl_combiner_destroy(plain);
    bloopcl_context_destroy(ctx);
    fault_fake_device_memory(0, 0);
    free(g), free(a), free(d), free(p_ref), free(p);
}
