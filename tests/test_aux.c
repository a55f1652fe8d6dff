/* test_aux.c — several auxiliary gradients (bloopcl_step_aux).
 *
 * k = 1 must be bloopcl_step at lambda_1 bit for bit (d, state) for every method and both
 * backends. k = 2 and k = 8 must match the CPU reference, written from the definition
 * (sum_i lambda_i (a_i - r_i m)), for BLOOP, DYNAMIC_BARRIER (each r_i clipped at 1/lambda_i),
 * MIXED and ratio-only, both backends, three segments, 2-byte gradients, first-gradient init
 * and rescale: d within the dot tolerance, the EMA bit for bit, every gradient's r_i. Then a
 * closed form of the per-gradient clip, a non-finite gradient skipping the step, the fused
 * optimizer on the sum, and every refusal with the state unchanged. */
#include "support.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NUM_SEGMENTS 3
static const size_t segment_counts[NUM_SEGMENTS] = {700, 3, 1400};
#define N_TOTAL 2103
#define STEPS 6

typedef struct tensor_set {
    cl_mem buffers[NUM_SEGMENTS];
    bloopcl_segment segments[NUM_SEGMENTS];
    bloopcl_tensor tensor;
} tensor_set;

static void make_tensor(bloopcl_context *ctx, tensor_set *t, bloopcl_dtype dtype)
{
    for (int s = 0; s < NUM_SEGMENTS; ++s) {
        cl_int err;
        t->buffers[s] = clCreateBuffer(bloopcl_context_cl_context(ctx), CL_MEM_READ_WRITE,
                                       segment_counts[s] * 4, NULL, &err);
        cr_assert_eq(err, CL_SUCCESS);
        t->segments[s] = (bloopcl_segment){.buffer = t->buffers[s], .count = segment_counts[s],
                                           .dtype = dtype};
    }
    t->tensor = (bloopcl_tensor){t->segments, NUM_SEGMENTS};
}

/* Writes n floats into the tensor in its type (narrowed as the host rule says). */
static void write_tensor(bloopcl_context *ctx, tensor_set *t, const float *host)
{
    size_t first = 0;
    unsigned char bytes[1400 * 4];
    for (int s = 0; s < NUM_SEGMENTS; ++s) {
        bloopcl_dtype dtype = t->segments[s].dtype;
        cr_assert_eq(bloopcl_convert(host + first, BLOOPCL_DTYPE_F32, bytes, dtype,
                                     segment_counts[s]), BLOOPCL_OK);
        cr_assert_eq(clEnqueueWriteBuffer(bloopcl_context_queue(ctx), t->buffers[s], CL_TRUE, 0,
                                          segment_counts[s] * bloopcl_dtype_size(dtype), bytes,
                                          0, NULL, NULL), CL_SUCCESS);
        first += segment_counts[s];
    }
}

/* Reads the tensor back widened to float; also returns what the device saw of `host`. */
static void read_tensor(bloopcl_context *ctx, const tensor_set *t, float *host)
{
    size_t first = 0;
    unsigned char bytes[1400 * 4];
    for (int s = 0; s < NUM_SEGMENTS; ++s) {
        bloopcl_dtype dtype = t->segments[s].dtype;
        cr_assert_eq(clEnqueueReadBuffer(bloopcl_context_queue(ctx), t->buffers[s], CL_TRUE, 0,
                                         segment_counts[s] * bloopcl_dtype_size(dtype), bytes,
                                         0, NULL, NULL), CL_SUCCESS);
        cr_assert_eq(bloopcl_convert(bytes, dtype, host + first, BLOOPCL_DTYPE_F32,
                                     segment_counts[s]), BLOOPCL_OK);
        first += segment_counts[s];
    }
}

static void release_tensor(tensor_set *t)
{
    for (int s = 0; s < NUM_SEGMENTS; ++s)
        clReleaseMemObject(t->buffers[s]);
}

/* Gradient i of step t: a mix of g's direction and its own noise, so each r_i differs. */
static void make_aux(float *a, const float *g, size_t n, int i, int t)
{
    float *noise = support_alloc(n);
    support_fill_normal(noise, n, 1000u + 37u * (unsigned)i + (unsigned)t, 1.0f);
    float along = 0.8f - 0.35f * (float)i;  /* some with g, some against it */
    for (size_t e = 0; e < n; ++e)
        a[e] = along * g[e] + noise[e];
    free(noise);
}

/* ------------------------------------------------------------------------------------------
 * k = 1 is bloopcl_step at lambda_1
 * ---------------------------------------------------------------------------------------- */

typedef struct one_case {
    bloopcl_method method;
    bloopcl_dot_backend dots;
} one_case;

ParameterizedTestParameters(aux, one_gradient_is_the_plain_step)
{
    static one_case cases[] = {
        {BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_FUSED}, {BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_CLBLAST},
        {BLOOPCL_METHOD_DYNAMIC_BARRIER, BLOOPCL_DOTS_FUSED},
        {BLOOPCL_METHOD_PCGRAD, BLOOPCL_DOTS_FUSED}, {BLOOPCL_METHOD_PCGRAD, BLOOPCL_DOTS_CLBLAST},
        {BLOOPCL_METHOD_MIXED, BLOOPCL_DOTS_FUSED}};
    return cr_make_param_array(one_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(one_case *c, aux, one_gradient_is_the_plain_step)
{
    bloopcl_context *ctx = support_context();
    bloopcl_config plain_config, aux_config;
    bloopcl_config_default(&plain_config, c->method);
    plain_config.dots = c->dots;
    plain_config.lambda = 0.6;
    plain_config.rescale = 1;
    aux_config = plain_config;
    aux_config.lambda = 0.1;  /* not used by bloopcl_step_aux */
    bloopcl_combiner *plain = support_combiner(ctx, &plain_config, N_TOTAL);
    bloopcl_combiner *several = support_combiner(ctx, &aux_config, N_TOTAL);
    tensor_set g, a, d1, d2;
    make_tensor(ctx, &g, BLOOPCL_DTYPE_F32);
    make_tensor(ctx, &a, BLOOPCL_DTYPE_F32);
    make_tensor(ctx, &d1, BLOOPCL_DTYPE_F32);
    make_tensor(ctx, &d2, BLOOPCL_DTYPE_F32);
    float *gh = support_alloc(N_TOTAL), *ah = support_alloc(N_TOTAL);
    float *x = support_alloc(N_TOTAL), *y = support_alloc(N_TOTAL);
    const double lambda = 0.6;
    for (int t = 1; t <= STEPS; ++t) {
        support_fill_normal(gh, N_TOTAL, (uint64_t)t, 1.0f);
        make_aux(ah, gh, N_TOTAL, 0, t);
        write_tensor(ctx, &g, gh);
        write_tensor(ctx, &a, ah);
        cr_assert_eq(bloopcl_step(plain, &g.tensor, &a.tensor, &d1.tensor, 0, NULL, NULL),
                     BLOOPCL_OK);
        cr_assert_eq(bloopcl_step_aux(several, &g.tensor, &a.tensor, &lambda, 1, &d2.tensor,
                                      NULL, 0, NULL, NULL), BLOOPCL_OK, "%s",
                     bloopcl_context_last_error(ctx));
        read_tensor(ctx, &d1, x);
        read_tensor(ctx, &d2, y);
        cr_assert_eq(memcmp(x, y, N_TOTAL * sizeof(float)), 0, "step %d: d differs", t);
    }
    if (c->method != BLOOPCL_METHOD_MIXED) {
        cr_assert_eq(bloopcl_read_state(plain, BLOOPCL_STATE_EMA, x, N_TOTAL), BLOOPCL_OK);
        cr_assert_eq(bloopcl_read_state(several, BLOOPCL_STATE_EMA, y, N_TOTAL), BLOOPCL_OK);
        cr_assert_eq(memcmp(x, y, N_TOTAL * sizeof(float)), 0);
    }
    bloopcl_aux_diagnostics diag = BLOOPCL_AUX_DIAGNOSTICS_INIT;
    bloopcl_diagnostics main = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_aux_diagnostics(several, &diag, 1), BLOOPCL_OK);
    cr_assert_eq(bloopcl_get_diagnostics(plain, &main), BLOOPCL_OK);
    cr_assert_eq(diag.ratio, main.ratio);
    cr_assert_eq(diag.lambda, (double)(float)lambda);
    bloopcl_config after;
    after.struct_size = sizeof after;
    cr_assert_eq(bloopcl_combiner_config(several, &after), BLOOPCL_OK);
    cr_assert_eq(after.lambda, 0.1, "the combiner's lambda is left as it was");
    release_tensor(&g), release_tensor(&a), release_tensor(&d1), release_tensor(&d2);
    bloopcl_combiner_destroy(plain), bloopcl_combiner_destroy(several);
    bloopcl_context_destroy(ctx);
    free(gh), free(ah), free(x), free(y);
}

/* ------------------------------------------------------------------------------------------
 * k = 2 and 8 against the reference
 * ---------------------------------------------------------------------------------------- */

typedef struct several_case {
    bloopcl_method method;
    bloopcl_dot_backend dots;
    size_t count;
    int ratio_only, rescale;
    bloopcl_init init;
    bloopcl_dtype aux_dtype;
} several_case;

static double lambda_of(size_t i)
{
    return 0.05 + 0.2 * (double)i;  /* 0.05 .. 1.45: some r_i clipped by the barrier */
}

/* |d - d_ref| within the dot tolerance of the magnitudes that make d. */
static void expect_direction(const float *d, const float *ref, const float *g,
                             float *const *a, const float *m, size_t count,
                             const bloopcl_aux_diagnostics *diag, int step)
{
    for (size_t e = 0; e < N_TOTAL; ++e) {
        double scale = fabs(g[e]);
        for (size_t i = 0; i < count; ++i)
            scale += diag[i].lambda * (fabs(a[i][e]) + fabs(diag[i].ratio * (m ? m[e] : 0.0f)));
        double tol = 20 * SUPPORT_DOT_RTOL * scale + 1e-30;
        cr_assert(fabs((double)d[e] - (double)ref[e]) <= tol, "step %d, d[%zu]: device %.9g, "
                  "reference %.9g (tolerance %.3g)", step, e, (double)d[e], (double)ref[e], tol);
    }
}

static void expect_ratios(const bloopcl_aux_diagnostics *dev, const bloopcl_aux_diagnostics *ref,
                          size_t count, int step)
{
    for (size_t i = 0; i < count; ++i) {
        double tol = 1e-4 * (1.0 + fabs(ref[i].ratio_raw));
        cr_assert(fabs(dev[i].ratio - ref[i].ratio) <= tol, "step %d, r_%zu: device %.9g, "
                  "reference %.9g", step, i, dev[i].ratio, ref[i].ratio);
        cr_assert(fabs(dev[i].ratio_raw - ref[i].ratio_raw) <= tol);
        cr_assert(fabs(dev[i].aux_norm_sq - ref[i].aux_norm_sq) <=
                  SUPPORT_DOT_RTOL * ref[i].aux_norm_sq + 1e-30);
        cr_assert_eq(dev[i].lambda, ref[i].lambda);
    }
}

static void run_several(const several_case *c)
{
    bloopcl_context *ctx = support_context();
    bloopcl_config config;
    bloopcl_config_default(&config, c->method);
    config.dots = c->dots;
    config.ema_weight = 0.3;
    config.ratio_only = c->ratio_only;
    config.rescale = c->rescale;
    config.init = c->init;
    bloopcl_combiner *comb = support_combiner(ctx, &config, N_TOTAL);
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(&config, N_TOTAL, &ref), BLOOPCL_OK);
    tensor_set g, d, a[BLOOPCL_MAX_AUX];
    bloopcl_tensor aux[BLOOPCL_MAX_AUX];
    float *ah[BLOOPCL_MAX_AUX];
    double lambdas[BLOOPCL_MAX_AUX];
    make_tensor(ctx, &g, BLOOPCL_DTYPE_F32);
    make_tensor(ctx, &d, BLOOPCL_DTYPE_F32);
    for (size_t i = 0; i < c->count; ++i) {
        make_tensor(ctx, &a[i], c->aux_dtype);
        aux[i] = a[i].tensor;
        ah[i] = support_alloc(N_TOTAL);
        lambdas[i] = lambda_of(i);
    }
    float *gh = support_alloc(N_TOTAL), *dh = support_alloc(N_TOTAL);
    float *dref = support_alloc(N_TOTAL), *m = support_alloc(N_TOTAL);
    for (int t = 1; t <= STEPS; ++t) {
        support_fill_normal(gh, N_TOTAL, 50u + (unsigned)t, 1.0f);
        write_tensor(ctx, &g, gh);
        for (size_t i = 0; i < c->count; ++i) {
            make_aux(ah[i], gh, N_TOTAL, (int)i, t);
            write_tensor(ctx, &a[i], ah[i]);
            read_tensor(ctx, &a[i], ah[i]);  /* as the device holds it (2-byte types) */
        }
        cr_assert_eq(bloopcl_step_aux(comb, &g.tensor, aux, lambdas, c->count, &d.tensor, NULL,
                                      0, NULL, NULL), BLOOPCL_OK, "step %d: %s", t,
                     bloopcl_context_last_error(ctx));
        bloopcl_aux_diagnostics dev[BLOOPCL_MAX_AUX], want[BLOOPCL_MAX_AUX];
        for (size_t i = 0; i < c->count; ++i)
            dev[i] = (bloopcl_aux_diagnostics)BLOOPCL_AUX_DIAGNOSTICS_INIT;
        cr_assert_eq(bloopcl_get_aux_diagnostics(comb, dev, c->count), BLOOPCL_OK);
        cr_assert_eq(bloopcl_reference_step_aux(&config, &ref, gh, (const float *const *)ah,
                                                lambdas, c->count, dref, want), BLOOPCL_OK);
        read_tensor(ctx, &d, dh);
        expect_ratios(dev, want, c->count, t);
        expect_direction(dh, dref, gh, ah, ref.ema, c->count, want, t);
        if (c->method != BLOOPCL_METHOD_MIXED) {  /* the EMA: bit for bit */
            cr_assert_eq(bloopcl_read_state(comb, BLOOPCL_STATE_EMA, m, N_TOTAL), BLOOPCL_OK);
            cr_assert_eq(memcmp(m, ref.ema, N_TOTAL * sizeof(float)), 0, "step %d", t);
        }
    }
    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_diagnostics(comb, &diag), BLOOPCL_OK);
    cr_assert_eq(diag.accepted, 1);
    for (size_t i = 0; i < c->count; ++i) {
        release_tensor(&a[i]);
        free(ah[i]);
    }
    release_tensor(&g), release_tensor(&d);
    bloopcl_reference_free(&ref);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
    free(gh), free(dh), free(dref), free(m);
}

ParameterizedTestParameters(aux, several_gradients_match_reference)
{
    static several_case cases[] = {
        {BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_FUSED, 2, 0, 0, BLOOPCL_INIT_ZEROS, BLOOPCL_DTYPE_F32},
        {BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_FUSED, 8, 0, 1, BLOOPCL_INIT_FIRST_GRADIENT,
         BLOOPCL_DTYPE_F32},
        {BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_CLBLAST, 2, 0, 1, BLOOPCL_INIT_ZEROS, BLOOPCL_DTYPE_F32},
        {BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_CLBLAST, 8, 0, 0, BLOOPCL_INIT_RANDOM, BLOOPCL_DTYPE_F32},
        {BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_FUSED, 8, 1, 0, BLOOPCL_INIT_ZEROS, BLOOPCL_DTYPE_F32},
        {BLOOPCL_METHOD_DYNAMIC_BARRIER, BLOOPCL_DOTS_FUSED, 2, 0, 0, BLOOPCL_INIT_FIRST_GRADIENT,
         BLOOPCL_DTYPE_F32},
        {BLOOPCL_METHOD_DYNAMIC_BARRIER, BLOOPCL_DOTS_FUSED, 8, 0, 1, BLOOPCL_INIT_FIRST_GRADIENT,
         BLOOPCL_DTYPE_BF16},
        {BLOOPCL_METHOD_DYNAMIC_BARRIER, BLOOPCL_DOTS_CLBLAST, 8, 0, 0, BLOOPCL_INIT_ZEROS,
         BLOOPCL_DTYPE_F32},
        {BLOOPCL_METHOD_MIXED, BLOOPCL_DOTS_FUSED, 2, 0, 1, BLOOPCL_INIT_ZEROS, BLOOPCL_DTYPE_F16},
        {BLOOPCL_METHOD_MIXED, BLOOPCL_DOTS_FUSED, 8, 0, 0, BLOOPCL_INIT_ZEROS, BLOOPCL_DTYPE_F32},
    };
    return cr_make_param_array(several_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(several_case *c, aux, several_gradients_match_reference, .timeout = 300)
{
    run_several(c);
}

/* ------------------------------------------------------------------------------------------
 * The per-gradient clip in closed form, a skipped step, the optimizer, refusals
 * ---------------------------------------------------------------------------------------- */

/* One single-buffer step with two gradients; returns the status, d into dh. */
static bloopcl_status two_gradient_step(bloopcl_context *ctx, bloopcl_combiner *comb,
                                        const float *g, const float *a1, const float *a2,
                                        const double *lambdas, size_t n, float *dh)
{
    cl_mem gb = support_buffer(ctx, g, n), b1 = support_buffer(ctx, a1, n);
    cl_mem b2 = support_buffer(ctx, a2, n), db = support_buffer(ctx, NULL, n);
    bloopcl_segment segs[4] = {{.buffer = gb, .count = n}, {.buffer = b1, .count = n},
                               {.buffer = b2, .count = n}, {.buffer = db, .count = n}};
    bloopcl_tensor tg = {&segs[0], 1}, aux[2] = {{&segs[1], 1}, {&segs[2], 1}},
                   td = {&segs[3], 1};
    bloopcl_status status = bloopcl_step_aux(comb, &tg, aux, lambdas, 2, &td, NULL, 0, NULL,
                                             NULL);
    support_read(ctx, db, dh, n);
    clReleaseMemObject(gb), clReleaseMemObject(b1), clReleaseMemObject(b2);
    clReleaseMemObject(db);
    return status;
}

Test(aux, barrier_clips_each_ratio_closed_form)
{
    /* First-gradient init: m' = g. a_1 = 5 g gives r_1 = 5, clipped at 1/0.5 = 2; a_2 = -g
     * gives r_2 = -1. d = g + 0.5 (5g - 2g) + 0.3 (-g + g) = 2.5 g. */
    enum { N = 513 };
    float g[N], a1[N], a2[N], d[N];
    support_fill_normal(g, N, 3, 1.0f);
    for (int i = 0; i < N; ++i) {
        a1[i] = 5.0f * g[i];
        a2[i] = -g[i];
    }
    bloopcl_context *ctx = support_context();
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_DYNAMIC_BARRIER);
    config.init = BLOOPCL_INIT_FIRST_GRADIENT;
    config.eps = 0.0;
    bloopcl_combiner *comb = support_combiner(ctx, &config, N);
    const double lambdas[2] = {0.5, 0.3};
    cr_assert_eq(two_gradient_step(ctx, comb, g, a1, a2, lambdas, N, d), BLOOPCL_OK, "%s",
                 bloopcl_context_last_error(ctx));
    for (int i = 0; i < N; ++i)
        cr_assert(fabs(d[i] - 2.5 * g[i]) <= 1e-5 * (1.0 + fabs(g[i])), "d[%d] = %.9g, want %.9g",
                  i, (double)d[i], 2.5 * g[i]);
    bloopcl_aux_diagnostics diag[2] = {BLOOPCL_AUX_DIAGNOSTICS_INIT, BLOOPCL_AUX_DIAGNOSTICS_INIT};
    cr_assert_eq(bloopcl_get_aux_diagnostics(comb, diag, 2), BLOOPCL_OK);
    cr_assert(fabs(diag[0].ratio_raw - 5.0) < 1e-5 && diag[0].ratio == 2.0f);
    cr_assert(fabs(diag[1].ratio + 1.0) < 1e-5 && fabs(diag[1].cosine + 1.0) < 1e-5);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

Test(aux, nonfinite_gradient_skips_the_step)
{
    enum { N = 300 };
    float g[N], a1[N], a2[N], d[N], before[N], after[N];
    support_fill_normal(g, N, 4, 1.0f);
    support_fill_normal(a1, N, 5, 1.0f);
    support_fill_normal(a2, N, 6, 1.0f);
    bloopcl_context *ctx = support_context();
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    bloopcl_combiner *comb = support_combiner(ctx, &config, N);
    const double lambdas[2] = {0.5, 0.3};
    cr_assert_eq(two_gradient_step(ctx, comb, g, a1, a2, lambdas, N, d), BLOOPCL_OK);
    cr_assert_eq(bloopcl_read_state(comb, BLOOPCL_STATE_EMA, before, N), BLOOPCL_OK);
    a2[17] = INFINITY;
    cr_assert_eq(two_gradient_step(ctx, comb, g, a1, a2, lambdas, N, d), BLOOPCL_OK);
    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_diagnostics(comb, &diag), BLOOPCL_OK);
    cr_assert_eq(diag.accepted, 0);
    cr_assert_eq(diag.reason, BLOOPCL_SKIP_NONFINITE_INPUT);
    cr_assert_eq(bloopcl_read_state(comb, BLOOPCL_STATE_EMA, after, N), BLOOPCL_OK);
    cr_assert_eq(memcmp(before, after, sizeof before), 0);
    for (int i = 0; i < N; ++i)
        cr_assert_eq(d[i], 0.0f);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

Test(aux, fused_optimizer_on_several_gradients)
{
    /* SGD without momentum, lr 0.1: p <- p - 0.1 d, with d the two-gradient direction of a
     * twin combiner's step. */
    enum { N = 777 };
    float g[N], a1[N], a2[N], d[N], p0[N], p[N];
    support_fill_normal(g, N, 7, 1.0f);
    support_fill_normal(a1, N, 8, 1.0f);
    support_fill_normal(a2, N, 9, 1.0f);
    support_fill_normal(p0, N, 10, 1.0f);
    bloopcl_context *ctx = support_context();
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    config.init = BLOOPCL_INIT_FIRST_GRADIENT;
    bloopcl_combiner *twin = support_combiner(ctx, &config, N);
    bloopcl_combiner *comb = support_combiner(ctx, &config, N);
    bloopcl_optimizer o;
    bloopcl_optimizer_default(&o, BLOOPCL_OPTIMIZER_SGD);
    o.lr = 0.1;
    cr_assert_eq(bloopcl_combiner_set_optimizer(comb, &o), BLOOPCL_OK);
    const double lambdas[2] = {0.4, 0.9};
    cr_assert_eq(two_gradient_step(ctx, twin, g, a1, a2, lambdas, N, d), BLOOPCL_OK);
    cl_mem gb = support_buffer(ctx, g, N), b1 = support_buffer(ctx, a1, N);
    cl_mem b2 = support_buffer(ctx, a2, N), pb = support_buffer(ctx, p0, N);
    bloopcl_segment segs[4] = {{.buffer = gb, .count = N}, {.buffer = b1, .count = N},
                               {.buffer = b2, .count = N}, {.buffer = pb, .count = N}};
    bloopcl_tensor tg = {&segs[0], 1}, aux[2] = {{&segs[1], 1}, {&segs[2], 1}},
                   tp = {&segs[3], 1};
    bloopcl_step_options options = BLOOPCL_STEP_OPTIONS_INIT;
    options.update_parameters = 1;
    cr_assert_eq(bloopcl_step_aux(comb, &tg, aux, lambdas, 2, &tp, &options, 0, NULL, NULL),
                 BLOOPCL_OK, "%s", bloopcl_context_last_error(ctx));
    support_read(ctx, pb, p, N);
    for (int i = 0; i < N; ++i)
        cr_assert_eq(p[i], p0[i] - 0.1f * d[i], "p[%d]", i);
    clReleaseMemObject(gb), clReleaseMemObject(b1), clReleaseMemObject(b2);
    clReleaseMemObject(pb);
    bloopcl_combiner_destroy(twin), bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

static void expect_refused(bloopcl_status status, bloopcl_status expected, bloopcl_context *ctx,
                           const char *needle)
{
    cr_assert_eq(status, expected, "status %d, expected %d: %s", status, expected,
                 bloopcl_context_last_error(ctx));
    cr_assert(strstr(bloopcl_context_last_error(ctx), needle) != NULL,
              "message \"%s\" lacks \"%s\"", bloopcl_context_last_error(ctx), needle);
}

Test(aux, misuse_is_refused_and_changes_nothing)
{
    enum { N = 256 };
    float host[N], before[N], after[N];
    support_fill_normal(host, N, 11, 1.0f);
    bloopcl_context *ctx = support_context();
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    config.init = BLOOPCL_INIT_RANDOM;
    bloopcl_combiner *comb = support_combiner(ctx, &config, N);
    bloopcl_config_default(&config, BLOOPCL_METHOD_PCGRAD);
    bloopcl_combiner *pcgrad = support_combiner(ctx, &config, N);
    cr_assert_eq(bloopcl_read_state(comb, BLOOPCL_STATE_EMA, before, N), BLOOPCL_OK);
    cl_mem gb = support_buffer(ctx, host, N), b1 = support_buffer(ctx, host, N);
    cl_mem b2 = support_buffer(ctx, host, N - 1), db = support_buffer(ctx, NULL, N);
    bloopcl_segment segs[5] = {{.buffer = gb, .count = N}, {.buffer = b1, .count = N},
                               {.buffer = b1, .count = N}, {.buffer = db, .count = N},
                               {.buffer = b2, .count = N - 1}};
    bloopcl_tensor tg = {&segs[0], 1}, aux[2] = {{&segs[1], 1}, {&segs[2], 1}};
    bloopcl_tensor td = {&segs[3], 1}, short_aux[2] = {{&segs[1], 1}, {&segs[4], 1}};
    double lambdas[BLOOPCL_MAX_AUX + 1] = {0.5, 0.3};
    bloopcl_tensor many[BLOOPCL_MAX_AUX + 1];
    for (int i = 0; i <= BLOOPCL_MAX_AUX; ++i)
        many[i] = aux[0];
    expect_refused(bloopcl_step_aux(pcgrad, &tg, aux, lambdas, 2, &td, NULL, 0, NULL, NULL),
                   BLOOPCL_ERR_UNSUPPORTED, ctx, "two-task");
    expect_refused(bloopcl_step_aux(comb, &tg, aux, lambdas, 0, &td, NULL, 0, NULL, NULL),
                   BLOOPCL_ERR_INVALID_ARGUMENT, ctx, "count = 0");
    expect_refused(bloopcl_step_aux(comb, &tg, many, lambdas, BLOOPCL_MAX_AUX + 1, &td, NULL, 0,
                                    NULL, NULL),
                   BLOOPCL_ERR_INVALID_ARGUMENT, ctx, "count = 9");
    lambdas[1] = NAN;
    expect_refused(bloopcl_step_aux(comb, &tg, aux, lambdas, 2, &td, NULL, 0, NULL, NULL),
                   BLOOPCL_ERR_INVALID_ARGUMENT, ctx, "lambdas[1] = nan");
    lambdas[1] = -0.25;
    expect_refused(bloopcl_step_aux(comb, &tg, aux, lambdas, 2, &td, NULL, 0, NULL, NULL),
                   BLOOPCL_ERR_INVALID_ARGUMENT, ctx, "lambdas[1] = -0.25");
    lambdas[1] = 0.3;
    expect_refused(bloopcl_step_aux(comb, &tg, short_aux, lambdas, 2, &td, NULL, 0, NULL, NULL),
                   BLOOPCL_ERR_SIZE_MISMATCH, ctx, "auxiliary gradient 1");
    bloopcl_step_options options = BLOOPCL_STEP_OPTIONS_INIT;
    options.inv_scale_a = 0.5;
    expect_refused(bloopcl_step_aux(comb, &tg, aux, lambdas, 2, &td, &options, 0, NULL, NULL),
                   BLOOPCL_ERR_UNSUPPORTED, ctx, "inverse loss scale of a");
    expect_refused(bloopcl_step_aux(comb, &tg, NULL, lambdas, 2, &td, NULL, 0, NULL, NULL),
                   BLOOPCL_ERR_NULL_ARGUMENT, ctx, "required");
    cr_assert_eq(bloopcl_read_state(comb, BLOOPCL_STATE_EMA, after, N), BLOOPCL_OK);
    cr_assert_eq(memcmp(before, after, sizeof before), 0, "a refused step changed the state");
    /* after a plain step, the diagnostics have one gradient */
    cr_assert_eq(bloopcl_step_aux(comb, &tg, aux, lambdas, 2, &td, NULL, 0, NULL, NULL),
                 BLOOPCL_OK, "%s", bloopcl_context_last_error(ctx));
    cr_assert_eq(bloopcl_step(comb, &tg, &aux[0], &td, 0, NULL, NULL), BLOOPCL_OK);
    bloopcl_aux_diagnostics diag[2] = {BLOOPCL_AUX_DIAGNOSTICS_INIT, BLOOPCL_AUX_DIAGNOSTICS_INIT};
    expect_refused(bloopcl_get_aux_diagnostics(comb, diag, 2), BLOOPCL_ERR_STATE, ctx,
                   "the last step had 1");
    clReleaseMemObject(gb), clReleaseMemObject(b1), clReleaseMemObject(b2);
    clReleaseMemObject(db);
    bloopcl_combiner_destroy(comb), bloopcl_combiner_destroy(pcgrad);
    bloopcl_context_destroy(ctx);
}

Test(aux, gradients_in_different_layouts_match_reference)
{
    /* g packed end to end in one buffer (as the sum A always is); a_1 in three buffers of its
     * own (three ranges), a_2 packed too (one range after merging: g, a_2 and A all lie end to
     * end): the two plans have different work-groups, and each gradient's
     * dots must be summed over its own. At step 1 a_2 is laid out as a_1 is (three ranges:
     * its rows of partials get three slots), from step 2 packed (one slot; the other two
     * still hold step 1's values, which must not be read). */
    bloopcl_context *ctx = support_context();
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    config.ema_weight = 0.5;
    bloopcl_combiner *comb = support_combiner(ctx, &config, N_TOTAL);
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(&config, N_TOTAL, &ref), BLOOPCL_OK);
    tensor_set g, d, a1, a2;
    make_tensor(ctx, &g, BLOOPCL_DTYPE_F32);
    make_tensor(ctx, &d, BLOOPCL_DTYPE_F32);
    make_tensor(ctx, &a1, BLOOPCL_DTYPE_F32);
    make_tensor(ctx, &a2, BLOOPCL_DTYPE_F32);
    float *gh = support_alloc(N_TOTAL), *dh = support_alloc(N_TOTAL), *dref = support_alloc(N_TOTAL);
    float *ah[2] = {support_alloc(N_TOTAL), support_alloc(N_TOTAL)};
    cl_mem packed = support_buffer(ctx, NULL, N_TOTAL);
    bloopcl_segment packed_segments[NUM_SEGMENTS];
    size_t first = 0;
    for (int s = 0; s < NUM_SEGMENTS; ++s) {
        packed_segments[s] = (bloopcl_segment){.buffer = packed, .offset_bytes = first * 4,
                                               .count = segment_counts[s]};
        first += segment_counts[s];
    }
    bloopcl_tensor aux[2] = {a1.tensor, a2.tensor};
    cl_mem g_packed = support_buffer(ctx, NULL, N_TOTAL);
    bloopcl_segment g_segments[NUM_SEGMENTS];
    for (int s = 0; s < NUM_SEGMENTS; ++s)
        g_segments[s] = (bloopcl_segment){.buffer = g_packed,
                                          .offset_bytes = packed_segments[s].offset_bytes,
                                          .count = segment_counts[s]};
    bloopcl_tensor g_tensor = {g_segments, NUM_SEGMENTS};
    const double lambdas[2] = {0.3, 0.7};
    for (int t = 1; t <= 3; ++t) {
        support_fill_normal(gh, N_TOTAL, 70u + (unsigned)t, 1.0f);
        write_tensor(ctx, &g, gh);
        cr_assert_eq(clEnqueueWriteBuffer(bloopcl_context_queue(ctx), g_packed, CL_TRUE, 0,
                                          N_TOTAL * 4, gh, 0, NULL, NULL), CL_SUCCESS);
        make_aux(ah[0], gh, N_TOTAL, 0, t);
        make_aux(ah[1], gh, N_TOTAL, 1, t);
        write_tensor(ctx, &a1, ah[0]);
        write_tensor(ctx, &a2, ah[1]);
        cr_assert_eq(clEnqueueWriteBuffer(bloopcl_context_queue(ctx), packed, CL_TRUE, 0,
                                          N_TOTAL * 4, ah[1], 0, NULL, NULL), CL_SUCCESS);
        if (t == 2)
            aux[1] = (bloopcl_tensor){packed_segments, NUM_SEGMENTS};
        cr_assert_eq(bloopcl_step_aux(comb, &g_tensor, aux, lambdas, 2, &d.tensor, NULL, 0,
                                      NULL, NULL), BLOOPCL_OK, "%s",
                     bloopcl_context_last_error(ctx));
        bloopcl_aux_diagnostics dev[2] = {BLOOPCL_AUX_DIAGNOSTICS_INIT,
                                          BLOOPCL_AUX_DIAGNOSTICS_INIT}, want[2];
        cr_assert_eq(bloopcl_get_aux_diagnostics(comb, dev, 2), BLOOPCL_OK);
        cr_assert_eq(bloopcl_reference_step_aux(&config, &ref, gh, (const float *const *)ah,
                                                lambdas, 2, dref, want), BLOOPCL_OK);
        read_tensor(ctx, &d, dh);
        expect_ratios(dev, want, 2, t);
        expect_direction(dh, dref, gh, ah, ref.ema, 2, want, t);
    }
    clReleaseMemObject(packed), clReleaseMemObject(g_packed);
    release_tensor(&g), release_tensor(&d), release_tensor(&a1), release_tensor(&a2);
    bloopcl_reference_free(&ref);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
    free(gh), free(dh), free(dref), free(ah[0]), free(ah[1]);
}
