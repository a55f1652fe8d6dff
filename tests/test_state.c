/* test_state.c — the combiner's persistent state and step plumbing: checkpoint and resume,
 * reset, hyperparameter schedules, diagnostics, bitwise repeatability, gradients split into
 * segments (separate buffers, or offsets inside one buffer), d aliasing g or a, and g and a
 * left untouched. Every test runs on both dot backends. */
#include "support.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

typedef struct method_case {
    bloopcl_method method;
    bloopcl_dot_backend dots;
} method_case;

#define BOTH(method) {method, BLOOPCL_DOTS_CLBLAST}, {method, BLOOPCL_DOTS_FUSED}

static method_case ema_methods[] = {BOTH(BLOOPCL_METHOD_BLOOP), BOTH(BLOOPCL_METHOD_PCGRAD)};
static method_case projecting_methods[] = {BOTH(BLOOPCL_METHOD_BLOOP),
                                           BOTH(BLOOPCL_METHOD_DYNAMIC_BARRIER),
                                           BOTH(BLOOPCL_METHOD_PCGRAD)};
static method_case all_methods[] = {BOTH(BLOOPCL_METHOD_BLOOP),
                                    BOTH(BLOOPCL_METHOD_DYNAMIC_BARRIER),
                                    BOTH(BLOOPCL_METHOD_PCGRAD), BOTH(BLOOPCL_METHOD_MIXED)};

/* One test per (method, backend) of `cases`. */
#define CASE_TEST(cases, name)                                                                 \
    ParameterizedTestParameters(state, name)                                                   \
    {                                                                                          \
        return cr_make_param_array(method_case, cases, COUNT(cases));                          \
    }                                                                                          \
    ParameterizedTest(method_case *c, state, name, .timeout = 120)

static const char *backend_name(bloopcl_dot_backend dots)
{
    return dots == BLOOPCL_DOTS_FUSED ? "fused" : "clblast";
}

/* ---------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------- */
static bloopcl_config make_config(const method_case *c)
{
    bloopcl_config config;
    bloopcl_config_default(&config, c->method);
    config.dots = c->dots;
    return config;
}

static bool has_aux(const bloopcl_config *config)
{
    return config->method == BLOOPCL_METHOD_PCGRAD;
}

static bool has_ema(const bloopcl_config *config)
{
    return config->method != BLOOPCL_METHOD_MIXED;
}

static void host_step(bloopcl_context *ctx, bloopcl_combiner *comb, const float *g,
                      const float *a, float *d, bloopcl_diagnostics *diag)
{
    bloopcl_status status = bloopcl_step_host(comb, g, a, d);
    cr_assert_eq(status, BLOOPCL_OK, "step: %s (%s)", bloopcl_status_string(status),
                 bloopcl_context_last_error(ctx));
    if (diag != NULL)
        cr_assert_eq(bloopcl_get_diagnostics(comb, diag), BLOOPCL_OK);
}

static void upload(bloopcl_context *ctx, cl_mem buffer, const float *host, size_t n)
{
    cl_int err = clEnqueueWriteBuffer(bloopcl_context_queue(ctx), buffer, CL_TRUE, 0,
                                      n * sizeof(float), host, 0, NULL, NULL);
    cr_assert_eq(err, CL_SUCCESS);
}

static float *read_state(bloopcl_combiner *comb, bloopcl_state_kind kind, size_t n)
{
    float *state = support_alloc(n);
    bloopcl_status status = bloopcl_read_state(comb, kind, state, n);
    cr_assert_eq(status, BLOOPCL_OK, "read_state(%d): %s", (int)kind,
                 bloopcl_status_string(status));
    return state;
}

/* Asserts two float arrays are identical bit for bit, reporting the first difference. */
static void expect_same_bits(const float *got, const float *want, size_t n, const char *format,
                             ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static void expect_same_bits(const float *got, const float *want, size_t n, const char *format,
                             ...)
{
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; ++i)
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0 && bad++ == 0)
            first = i;
    if (bad == 0) {
        cr_expect_eq(bad, 0);
        return;
    }
    char what[256];
    va_list args;
    va_start(args, format);
    vsnprintf(what, sizeof what, format, args);
    va_end(args);
    cr_expect_eq(bad, 0, "%s: %zu of %zu elements differ, first [%zu] %.9g vs %.9g", what, bad,
                 n, first, got[first], want[first]);
}

/* The state kinds of a combiner, bit for bit equal to another combiner's. */
static void expect_same_state(bloopcl_combiner *x, bloopcl_combiner *y,
                              const bloopcl_config *config, size_t n, const char *what)
{
    for (int kind = 0; kind <= 1; ++kind) {
        if ((kind == 0 && !has_ema(config)) || (kind == 1 && !has_aux(config)))
            continue;
        float *sx = read_state(x, (bloopcl_state_kind)kind, n);
        float *sy = read_state(y, (bloopcl_state_kind)kind, n);
        expect_same_bits(sx, sy, n, "%s: state kind %d", what, kind);
        free(sx), free(sy);
    }
}

/* Inputs of step t: g drifts around a fixed direction (so the EMA matters) and a is partly
 * aligned with it, with sign `alpha` (no cancellation in <m,a> when alpha is far from 0). */
static void make_inputs(float *g, float *a, size_t n, uint64_t seed, int t, float alpha)
{
    float *noise = support_alloc(n);
    support_fill_normal(g, n, seed, 1.0f);
    support_fill_normal(noise, n, seed * 1000003u + 2u * (uint64_t)t + 1u, 0.5f);
    for (size_t i = 0; i < n; ++i)
        g[i] += noise[i];
    support_fill_normal(a, n, seed * 1000003u + 2u * (uint64_t)t + 2u, 1.0f);
    for (size_t i = 0; i < n; ++i)
        a[i] += alpha * g[i];
    free(noise);
}

static float alternating_alpha(int t)
{
    return (t % 3 == 0) ? -0.7f : 0.4f;
}

/* ---------------------------------------------------------------------------------------------
 * Checkpoint and resume
 * ------------------------------------------------------------------------------------------- */

/* 20 steps on A, checkpoint A's state, write it into a fresh B with the same configuration,
 * then 10 more identical steps on both: d, r and the state must agree bit for bit (a step is
 * a function of the state and the inputs only). PCGrad runs with init FIRST_GRADIENT, so B
 * is uninitialised until write_state marks it initialised; if it did not, B's next step
 * would take m = g and diverge. */
static method_case checkpoint_cases[] = {BOTH(BLOOPCL_METHOD_BLOOP), BOTH(BLOOPCL_METHOD_PCGRAD)};

CASE_TEST(checkpoint_cases, checkpoint_resume_is_bit_exact)
{
    const size_t n = 65537;
    bloopcl_config config = make_config(c);
    if (c->method == BLOOPCL_METHOD_PCGRAD)
        config.init = BLOOPCL_INIT_FIRST_GRADIENT;
    config.ema_weight = 0.1;
    config.lambda = 0.5;
    bloopcl_context *ctx = support_context();
    bloopcl_combiner *comb_a = support_combiner(ctx, &config, n);
    float *g = support_alloc(n), *a = support_alloc(n);
    float *d_a = support_alloc(n), *d_b = support_alloc(n);
    for (int t = 0; t < 20; ++t) {
        make_inputs(g, a, n, 17, t, alternating_alpha(t));
        host_step(ctx, comb_a, g, a, d_a, NULL);
    }
    float *m = read_state(comb_a, BLOOPCL_STATE_EMA, n);
    float *q = has_aux(&config) ? read_state(comb_a, BLOOPCL_STATE_AUX_EMA, n) : NULL;

    bloopcl_combiner *comb_b = support_combiner(ctx, &config, n);
    cr_assert_eq(bloopcl_write_state(comb_b, BLOOPCL_STATE_EMA, m, n), BLOOPCL_OK, "%s",
                 bloopcl_context_last_error(ctx));
    if (q != NULL)
        cr_assert_eq(bloopcl_write_state(comb_b, BLOOPCL_STATE_AUX_EMA, q, n), BLOOPCL_OK,
                     "%s", bloopcl_context_last_error(ctx));
    support_expect_state(comb_b, BLOOPCL_STATE_EMA, m, n);
    if (q != NULL)
        support_expect_state(comb_b, BLOOPCL_STATE_AUX_EMA, q, n);

    for (int t = 20; t < 30; ++t) {
        make_inputs(g, a, n, 17, t, alternating_alpha(t));
        bloopcl_diagnostics diag_a = BLOOPCL_DIAGNOSTICS_INIT, diag_b = BLOOPCL_DIAGNOSTICS_INIT;
        host_step(ctx, comb_a, g, a, d_a, &diag_a);
        host_step(ctx, comb_b, g, a, d_b, &diag_b);
        cr_expect_eq(diag_a.ratio, diag_b.ratio, "%s %s step %d: r %.9g vs %.9g",
                     backend_name(c->dots), bloopcl_method_name(c->method), t, diag_a.ratio,
                     diag_b.ratio);
        cr_expect_eq(diag_a.aux_ratio, diag_b.aux_ratio);
        expect_same_bits(d_b, d_a, n, "%s %s step %d: resumed d", backend_name(c->dots),
                         bloopcl_method_name(c->method), t);
    }
    expect_same_state(comb_b, comb_a, &config, n, "after resuming");
    free(g), free(a), free(d_a), free(d_b), free(m), free(q);
    bloopcl_combiner_destroy(comb_a);
    bloopcl_combiner_destroy(comb_b);
    bloopcl_context_destroy(ctx);
}

/* ---------------------------------------------------------------------------------------------
 * reset_state: back to the state the configuration made at creation
 * ------------------------------------------------------------------------------------------- */

/* ZEROS: after steps and a reset the state is +0.0 everywhere, and the next step behaves
 * exactly like the first step of a fresh combiner (m = fl(w g); same d bit for bit). */
CASE_TEST(ema_methods, reset_zeros_restores_zeros)
{
    const size_t n = 1000;
    bloopcl_config config = make_config(c);
    bloopcl_context *ctx = support_context();
    bloopcl_combiner *comb = support_combiner(ctx, &config, n);
    float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
    float *d_fresh = support_alloc(n), *zeros = support_alloc(n), *expected = support_alloc(n);
    for (int t = 0; t < 3; ++t) {
        make_inputs(g, a, n, 23, t, 0.5f);
        host_step(ctx, comb, g, a, d, NULL);
    }
    cr_assert_eq(bloopcl_reset_state(comb), BLOOPCL_OK, "%s", bloopcl_context_last_error(ctx));
    support_expect_state(comb, BLOOPCL_STATE_EMA, zeros, n);
    if (has_aux(&config))
        support_expect_state(comb, BLOOPCL_STATE_AUX_EMA, zeros, n);

    make_inputs(g, a, n, 23, 7, 0.5f);
    host_step(ctx, comb, g, a, d, NULL);
    bloopcl_combiner *fresh = support_combiner(ctx, &config, n);
    host_step(ctx, fresh, g, a, d_fresh, NULL);
    expect_same_bits(d, d_fresh, n, "%s %s: first step after reset = first step of a fresh "
                     "combiner", backend_name(c->dots), bloopcl_method_name(c->method));
    float wf = (float)config.ema_weight;
    for (size_t i = 0; i < n; ++i)
        expected[i] = wf * g[i];
    support_expect_state(comb, BLOOPCL_STATE_EMA, expected, n);
    free(g), free(a), free(d), free(d_fresh), free(zeros), free(expected);
    bloopcl_combiner_destroy(comb);
    bloopcl_combiner_destroy(fresh);
    bloopcl_context_destroy(ctx);
}

/* RANDOM: a reset redraws the same streams (seed, and seed ^ 0x5851F42D4C957F2D for q). */
CASE_TEST(ema_methods, reset_random_restores_same_draw)
{
    const size_t n = 4099;
    bloopcl_config config = make_config(c);
    config.init = BLOOPCL_INIT_RANDOM;
    config.seed = 42;
    bloopcl_context *ctx = support_context();
    bloopcl_combiner *comb = support_combiner(ctx, &config, n);
    float *m0 = read_state(comb, BLOOPCL_STATE_EMA, n);
    float *q0 = has_aux(&config) ? read_state(comb, BLOOPCL_STATE_AUX_EMA, n) : NULL;
    float *stream = support_alloc(n);
    bloopcl_reference_normal(42, 0, n, stream);
    expect_same_bits(m0, stream, n, "initial m is stream 42");
    float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
    for (int t = 0; t < 3; ++t) {
        make_inputs(g, a, n, 29, t, 0.5f);
        host_step(ctx, comb, g, a, d, NULL);
    }
    float *moved = read_state(comb, BLOOPCL_STATE_EMA, n);
    cr_assert(memcmp(moved, m0, n * sizeof *m0) != 0, "precondition: the steps moved the EMA");
    cr_assert_eq(bloopcl_reset_state(comb), BLOOPCL_OK, "%s", bloopcl_context_last_error(ctx));
    support_expect_state(comb, BLOOPCL_STATE_EMA, m0, n);
    if (q0 != NULL)
        support_expect_state(comb, BLOOPCL_STATE_AUX_EMA, q0, n);
    free(m0), free(q0), free(stream), free(g), free(a), free(d), free(moved);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

/* FIRST_GRADIENT: a reset makes the EMA uninitialised again (read_state: BLOOPCL_ERR_STATE)
 * and the next step sets m = g (q = a) exactly, whatever w is. */
CASE_TEST(ema_methods, reset_first_gradient_uninitialises)
{
    const size_t n = 1000;
    bloopcl_config config = make_config(c);
    config.init = BLOOPCL_INIT_FIRST_GRADIENT;
    config.ema_weight = 0.1;
    bloopcl_context *ctx = support_context();
    bloopcl_combiner *comb = support_combiner(ctx, &config, n);
    float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
    for (int t = 0; t < 3; ++t) {
        make_inputs(g, a, n, 31, t, 0.5f);
        host_step(ctx, comb, g, a, d, NULL);
    }
    float *scratch = read_state(comb, BLOOPCL_STATE_EMA, n);  /* initialised by now */
    cr_assert_eq(bloopcl_reset_state(comb), BLOOPCL_OK, "%s", bloopcl_context_last_error(ctx));
    cr_expect_eq(bloopcl_read_state(comb, BLOOPCL_STATE_EMA, scratch, n), BLOOPCL_ERR_STATE,
                 "%s %s: EMA uninitialised after reset", backend_name(c->dots),
                 bloopcl_method_name(c->method));
    if (has_aux(&config))
        cr_expect_eq(bloopcl_read_state(comb, BLOOPCL_STATE_AUX_EMA, scratch, n),
                     BLOOPCL_ERR_STATE, "auxiliary EMA uninitialised after reset");
    make_inputs(g, a, n, 31, 9, 0.5f);
    host_step(ctx, comb, g, a, d, NULL);
    support_expect_state(comb, BLOOPCL_STATE_EMA, g, n);
    if (has_aux(&config))
        support_expect_state(comb, BLOOPCL_STATE_AUX_EMA, a, n);
    free(g), free(a), free(d), free(scratch);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

/* FIRST_GRADIENT initialises on the first *accepted* step: a first step skipped for a NaN in
 * g (policy SKIP) leaves the EMA uninitialised (read_state: BLOOPCL_ERR_STATE), and the next,
 * finite step still sets m = g (q = a) exactly. */
CASE_TEST(ema_methods, first_gradient_waits_for_accepted_step)
{
    const size_t n = 1000;
    bloopcl_config config = make_config(c);
    config.init = BLOOPCL_INIT_FIRST_GRADIENT;
    config.ema_weight = 0.1;
    bloopcl_context *ctx = support_context();
    bloopcl_combiner *comb = support_combiner(ctx, &config, n);
    float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
    make_inputs(g, a, n, 71, 0, 0.5f);
    g[3] = NAN;
    cr_expect_eq(bloopcl_step_host(comb, g, a, d), BLOOPCL_ERR_NONFINITE_INPUT);
    cr_expect_eq(bloopcl_read_state(comb, BLOOPCL_STATE_EMA, d, n), BLOOPCL_ERR_STATE,
                 "%s %s: still uninitialised after a skipped step", backend_name(c->dots),
                 bloopcl_method_name(c->method));
    make_inputs(g, a, n, 71, 1, 0.5f);
    host_step(ctx, comb, g, a, d, NULL);
    support_expect_state(comb, BLOOPCL_STATE_EMA, g, n);
    if (has_aux(&config))
        support_expect_state(comb, BLOOPCL_STATE_AUX_EMA, a, n);
    free(g), free(a), free(d);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

/* BUFFER: the library keeps no copy of the caller's buffer, so a reset is refused with
 * BLOOPCL_ERR_STATE, and (as after any failure) the state is exactly as it was: the next
 * step continues from it, m = fl(m + fl(w fl(g - m))). */
CASE_TEST(ema_methods, reset_buffer_is_refused_and_keeps_state)
{
    const size_t n = 1000;
    bloopcl_config config = make_config(c);
    float *m0 = support_alloc(n), *q0 = support_alloc(n);
    support_fill_normal(m0, n, 37, 1.0f);
    support_fill_normal(q0, n, 38, 1.0f);
    config.init = BLOOPCL_INIT_BUFFER;
    config.initial_ema = m0;
    config.initial_aux_ema = has_aux(&config) ? q0 : NULL;
    config.ema_weight = 0.25;
    bloopcl_context *ctx = support_context();
    bloopcl_combiner *comb = support_combiner(ctx, &config, n);
    float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
    float *expected = support_alloc(n);
    for (int t = 0; t < 2; ++t) {
        make_inputs(g, a, n, 39, t, 0.5f);
        host_step(ctx, comb, g, a, d, NULL);
    }
    float *m = read_state(comb, BLOOPCL_STATE_EMA, n);
    float *q = has_aux(&config) ? read_state(comb, BLOOPCL_STATE_AUX_EMA, n) : NULL;
    cr_expect_eq(bloopcl_reset_state(comb), BLOOPCL_ERR_STATE, "%s %s: reset with init BUFFER",
                 backend_name(c->dots), bloopcl_method_name(c->method));
    support_expect_state(comb, BLOOPCL_STATE_EMA, m, n);
    if (q != NULL)
        support_expect_state(comb, BLOOPCL_STATE_AUX_EMA, q, n);
    make_inputs(g, a, n, 39, 5, 0.5f);
    host_step(ctx, comb, g, a, d, NULL);
    for (size_t i = 0; i < n; ++i) {
        float diff = g[i] - m[i];
        float inc = 0.25f * diff;
        expected[i] = m[i] + inc;
    }
    support_expect_state(comb, BLOOPCL_STATE_EMA, expected, n);
    free(m0), free(q0), free(g), free(a), free(d), free(expected), free(m), free(q);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

/* ---------------------------------------------------------------------------------------------
 * Hyperparameter schedules
 * ------------------------------------------------------------------------------------------- */

/* set_hyperparameters between steps: the device follows the reference run with the same
 * schedule (w, lambda, eps changed at the same steps; rescale on, so s = 1/(1+lambda) moves
 * too; lambda = 0 switches the barrier off; w = 1 drops the EMA). eps stays > 0: with eps = 0
 * support_expect_step_matches's tolerance for the absent PCGrad ratio is inf * 0 = NaN. */
CASE_TEST(projecting_methods, set_hyperparameters_follows_schedule)
{
    typedef struct phase {
        int from_step;
        double w, lambda, eps;
    } phase;
    static const phase schedule[] = {
        {0, 0.1, 0.1, 1e-7}, {4, 0.5, 2.0, 1e-7}, {8, 1.0, 0.3, 1e-3}, {12, 0.05, 0.0, 1e-5}};
    const size_t n = 1000;
    const int steps = 16;
    bloopcl_config config = make_config(c);
    config.rescale = 1;
    bloopcl_context *ctx = support_context();
    bloopcl_combiner *comb = support_combiner(ctx, &config, n);
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(&config, n, &ref), BLOOPCL_OK);
    float *g = support_alloc(n), *a = support_alloc(n);
    float *d_dev = support_alloc(n), *d_ref = support_alloc(n);
    size_t next = 0;
    for (int t = 0; t < steps; ++t) {
        if (next < COUNT(schedule) && schedule[next].from_step == t) {
            const phase *p = &schedule[next++];
            cr_assert_eq(bloopcl_combiner_set_hyperparameters(comb, p->w, p->lambda, p->eps),
                         BLOOPCL_OK, "%s", bloopcl_context_last_error(ctx));
            config.ema_weight = p->w;
            config.lambda = p->lambda;
            config.eps = p->eps;
            bloopcl_config in_force = {.struct_size = sizeof(bloopcl_config)};
            cr_assert_eq(bloopcl_combiner_config(comb, &in_force), BLOOPCL_OK);
            cr_expect(in_force.ema_weight == p->w && in_force.lambda == p->lambda &&
                      in_force.eps == p->eps, "combiner_config reports the new values");
        }
        make_inputs(g, a, n, 41, t, 0.8f);
        bloopcl_diagnostics dev_diag = BLOOPCL_DIAGNOSTICS_INIT, ref_diag = BLOOPCL_DIAGNOSTICS_INIT;
        host_step(ctx, comb, g, a, d_dev, &dev_diag);
        cr_assert_eq(bloopcl_reference_step(&config, &ref, g, a, d_ref, &ref_diag), BLOOPCL_OK);
        support_expect_step_matches(&config, n, g, a, d_dev, d_ref, &dev_diag, &ref_diag,
                                    ref.ema, ref.aux_ema, t);
    }
    support_expect_state(comb, BLOOPCL_STATE_EMA, ref.ema, n);
    if (ref.aux_ema != NULL)
        support_expect_state(comb, BLOOPCL_STATE_AUX_EMA, ref.aux_ema, n);
    free(g), free(a), free(d_dev), free(d_ref);
    bloopcl_reference_free(&ref);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

/* ---------------------------------------------------------------------------------------------
 * Diagnostics
 * ------------------------------------------------------------------------------------------- */

static void expect_relative(double got, double want, const char *name, int t)
{
    double tol = 1e-5 * fabs(want) + 1e-30;
    cr_expect(fabs(got - want) <= tol, "step %d: %s device %.9g reference %.9g", t, name, got,
              want);
}

/* Every scalar of the diagnostics against the reference's (relative 1e-5: the inputs keep a
 * aligned with g, so no dot suffers cancellation); lambda = 2 makes the barrier clip
 * (r != r_raw). `steps` counts the steps enqueued: a step skipped for a non-finite input was
 * enqueued (and is counted, with accepted = 0); a call rejected before enqueuing is not. */
CASE_TEST(projecting_methods, diagnostics_match_reference)
{
    const size_t n = 1000;
    bloopcl_config config = make_config(c);
    config.lambda = 2.0;
    bloopcl_context *ctx = support_context();
    bloopcl_combiner *comb = support_combiner(ctx, &config, n);
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(&config, n, &ref), BLOOPCL_OK);
    float *g = support_alloc(n), *a = support_alloc(n);
    float *d_dev = support_alloc(n), *d_ref = support_alloc(n);
    bloopcl_diagnostics dev = BLOOPCL_DIAGNOSTICS_INIT, want = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_diagnostics(comb, &dev), BLOOPCL_OK);
    cr_expect_eq(dev.steps, 0, "no step yet");
    bool clipped = false;
    for (int t = 0; t < 5; ++t) {
        make_inputs(g, a, n, 43, t, 0.9f);
        host_step(ctx, comb, g, a, d_dev, &dev);
        cr_assert_eq(bloopcl_reference_step(&config, &ref, g, a, d_ref, &want), BLOOPCL_OK);
        cr_expect_eq(dev.steps, (uint64_t)t + 1, "steps = %llu after %d steps",
                     (unsigned long long)dev.steps, t + 1);
        cr_expect_eq(dev.accepted, 1);
        expect_relative(dev.ratio, want.ratio, "ratio", t);
        expect_relative(dev.ratio_raw, want.ratio_raw, "ratio_raw", t);
        expect_relative(dev.dot_ema_aux, want.dot_ema_aux, "dot_ema_aux", t);
        expect_relative(dev.ema_norm_sq, want.ema_norm_sq, "ema_norm_sq", t);
        expect_relative(dev.aux_norm_sq, want.aux_norm_sq, "aux_norm_sq", t);
        expect_relative(dev.cosine, want.cosine, "cosine", t);
        expect_relative(dev.aux_ratio, want.aux_ratio, "aux_ratio", t);
        expect_relative(dev.dot_aux_ema_main, want.dot_aux_ema_main, "dot_aux_ema_main", t);
        expect_relative(dev.aux_ema_norm_sq, want.aux_ema_norm_sq, "aux_ema_norm_sq", t);
        if (c->method == BLOOPCL_METHOD_PCGRAD)
            cr_expect(want.aux_ema_norm_sq > 0.0, "precondition: PCGrad scalars are exercised");
        clipped = clipped || dev.ratio != dev.ratio_raw;
    }
    if (c->method == BLOOPCL_METHOD_DYNAMIC_BARRIER)
        cr_expect(clipped, "the barrier clipped at least once (r != r_raw)");
    else
        cr_expect(!clipped, "only the barrier clips");

    /* a skipped step: enqueued, counted, not accepted */
    g[n / 2] = NAN;
    cr_expect_eq(bloopcl_step_host(comb, g, a, d_dev), BLOOPCL_ERR_NONFINITE_INPUT);
    cr_assert_eq(bloopcl_get_diagnostics(comb, &dev), BLOOPCL_OK);
    cr_expect_eq(dev.accepted, 0, "non-finite step not accepted");
    cr_expect_eq(dev.steps, 6, "steps = %llu after 5 steps and a skipped one",
                 (unsigned long long)dev.steps);

    /* a call rejected before anything is enqueued (d too small): not counted */
    cl_mem small = support_buffer(ctx, NULL, n - 1);
    cl_mem gb = support_buffer(ctx, g, n), ab = support_buffer(ctx, a, n);
    cr_expect_eq(bloopcl_step_buffers(comb, gb, ab, small), BLOOPCL_ERR_BUFFER_TOO_SMALL);
    cr_assert_eq(bloopcl_get_diagnostics(comb, &dev), BLOOPCL_OK);
    cr_expect_eq(dev.steps, 6, "a rejected call is not a step: steps = %llu",
                 (unsigned long long)dev.steps);
    clReleaseMemObject(small);
    clReleaseMemObject(gb);
    clReleaseMemObject(ab);
    free(g), free(a), free(d_dev), free(d_ref);
    bloopcl_reference_free(&ref);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

/* ---------------------------------------------------------------------------------------------
 * Repeatability
 * ------------------------------------------------------------------------------------------- */

/* The reductions have a fixed geometry and order: the same sequence gives bit-identical d
 * and state in two combiners of one context (stepped alternately) and in a third combiner
 * in a second context. n spans many work-groups. */
CASE_TEST(ema_methods, repeatable_bit_for_bit)
{
    const size_t n = 65537;
    const int steps = 6;
    bloopcl_config config = make_config(c);
    config.lambda = 0.7;
    bloopcl_context *ctx = support_context();
    bloopcl_context *ctx2 = support_context();
    bloopcl_combiner *x = support_combiner(ctx, &config, n);
    bloopcl_combiner *y = support_combiner(ctx, &config, n);
    bloopcl_combiner *z = support_combiner(ctx2, &config, n);
    float *g = support_alloc(n), *a = support_alloc(n);
    float *dx = support_alloc(n), *dy = support_alloc(n), *dz = support_alloc(n);
    for (int t = 0; t < steps; ++t) {
        make_inputs(g, a, n, 47, t, alternating_alpha(t));
        bloopcl_diagnostics diag_x = BLOOPCL_DIAGNOSTICS_INIT, diag_y = BLOOPCL_DIAGNOSTICS_INIT, diag_z = BLOOPCL_DIAGNOSTICS_INIT;
        host_step(ctx, x, g, a, dx, &diag_x);
        host_step(ctx, y, g, a, dy, &diag_y);
        host_step(ctx2, z, g, a, dz, &diag_z);
        cr_expect(diag_x.ratio == diag_y.ratio && diag_x.ratio == diag_z.ratio,
                  "step %d: r %.9g %.9g %.9g", t, diag_x.ratio, diag_y.ratio, diag_z.ratio);
        expect_same_bits(dy, dx, n, "%s %s step %d: same context", backend_name(c->dots),
                         bloopcl_method_name(c->method), t);
        expect_same_bits(dz, dx, n, "%s %s step %d: second context", backend_name(c->dots),
                         bloopcl_method_name(c->method), t);
    }
    expect_same_state(y, x, &config, n, "same context");
    expect_same_state(z, x, &config, n, "second context");
    free(g), free(a), free(dx), free(dy), free(dz);
    bloopcl_combiner_destroy(x);
    bloopcl_combiner_destroy(y);
    bloopcl_combiner_destroy(z);
    bloopcl_context_destroy(ctx);
    bloopcl_context_destroy(ctx2);
}

/* ---------------------------------------------------------------------------------------------
 * Segment lists
 * ------------------------------------------------------------------------------------------- */

#define NUM_SEGMENTS 3
static const size_t segment_counts[NUM_SEGMENTS] = {30000, 1, 40000};
#define SEGMENTED_N ((size_t)70001)

/* Runs a few steps through segment lists built by `place` and checks each step against the
 * reference (tolerance of support_expect_step_matches: the dots are global over all
 * segments, their partial-sum order may differ from one buffer's) and the final state bit
 * for bit. */
static void run_segmented_against_reference(bloopcl_context *ctx, bloopcl_combiner *comb,
                                            const bloopcl_config *config,
                                            const bloopcl_tensor *tensors, cl_mem *buffers,
                                            const size_t *offsets, size_t buffer_floats,
                                            const float *garbage)
{
    const size_t n = SEGMENTED_N;
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(config, n, &ref), BLOOPCL_OK);
    float *g = support_alloc(n), *a = support_alloc(n);
    float *d_dev = support_alloc(n), *d_ref = support_alloc(n);
    float *whole = support_alloc(buffer_floats), *image = support_alloc(buffer_floats);
    for (int t = 0; t < 3; ++t) {
        make_inputs(g, a, n, 53, t, alternating_alpha(t));
        /* scatter g and a into their segments (garbage, if any, fills the rest) */
        const float *sources[2] = {g, a};
        for (int k = 0; k < 2; ++k) {
            if (garbage != NULL)
                memcpy(image, garbage, buffer_floats * sizeof(float));
            size_t first = 0;
            for (size_t s = 0; s < NUM_SEGMENTS; ++s) {
                const bloopcl_segment *seg = &tensors[k].segments[s];
                if (garbage != NULL)
                    memcpy(image + seg->offset_bytes / sizeof(float), sources[k] + first,
                           seg->count * sizeof(float));
                else
                    upload(ctx, seg->buffer, sources[k] + first, seg->count);
                first += seg->count;
            }
            if (garbage != NULL)
                upload(ctx, buffers[k], image, buffer_floats);
        }
        bloopcl_status status = bloopcl_step(comb, &tensors[0], &tensors[1], &tensors[2], 0,
                                             NULL, NULL);
        cr_assert_eq(status, BLOOPCL_OK, "step %d: %s", t, bloopcl_context_last_error(ctx));
        /* gather d */
        size_t first = 0;
        for (size_t s = 0; s < NUM_SEGMENTS; ++s) {
            const bloopcl_segment *seg = &tensors[2].segments[s];
            cl_int err = clEnqueueReadBuffer(bloopcl_context_queue(ctx), seg->buffer, CL_TRUE,
                                             seg->offset_bytes, seg->count * sizeof(float),
                                             d_dev + first, 0, NULL, NULL);
            cr_assert_eq(err, CL_SUCCESS);
            first += seg->count;
        }
        support_check_step(comb, config, &ref, g, a, d_dev, d_ref, t);
        if (garbage != NULL) {
            /* d's buffer outside its segments, and g's and a's buffers entirely, unchanged */
            support_read(ctx, buffers[2], whole, buffer_floats);
            size_t touched = 0, first_touched = 0;
            for (size_t i = 0; i < buffer_floats; ++i) {
                bool inside = false;
                for (size_t s = 0; s < NUM_SEGMENTS; ++s) {
                    size_t begin = offsets[2 * NUM_SEGMENTS + s];
                    inside = inside || (i >= begin && i < begin + segment_counts[s]);
                }
                if (!inside && memcmp(&whole[i], &garbage[i], sizeof(float)) != 0 &&
                    touched++ == 0)
                    first_touched = i;
            }
            cr_expect_eq(touched, 0, "step %d: %zu floats of d's buffer outside the segments "
                         "changed, first at %zu", t, touched, first_touched);
        }
    }
    support_expect_state(comb, BLOOPCL_STATE_EMA, ref.ema, n);
    if (ref.aux_ema != NULL)
        support_expect_state(comb, BLOOPCL_STATE_AUX_EMA, ref.aux_ema, n);
    free(g), free(a), free(d_dev), free(d_ref), free(whole), free(image);
    bloopcl_reference_free(&ref);
}

/* n = 70001 split 30000 + 1 + 40000, each segment in its own buffer (9 buffers). */
CASE_TEST(projecting_methods, segments_in_separate_buffers)
{
    bloopcl_config config = make_config(c);
    config.lambda = 0.6;
    bloopcl_context *ctx = support_context();
    bloopcl_combiner *comb = support_combiner(ctx, &config, SEGMENTED_N);
    bloopcl_segment segments[3][NUM_SEGMENTS];
    cl_mem buffers[3 * NUM_SEGMENTS];
    bloopcl_tensor tensors[3];
    for (int k = 0; k < 3; ++k) {
        for (size_t s = 0; s < NUM_SEGMENTS; ++s) {
            buffers[k * NUM_SEGMENTS + s] = support_buffer(ctx, NULL, segment_counts[s]);
            segments[k][s] = (bloopcl_segment){.buffer = buffers[k * NUM_SEGMENTS + s],
                                               .offset_bytes = 0, .count = segment_counts[s],
                                               .dtype = BLOOPCL_DTYPE_F32, .reserved = 0};
        }
        tensors[k] = (bloopcl_tensor){segments[k], NUM_SEGMENTS};
    }
    run_segmented_against_reference(ctx, comb, &config, tensors, NULL, NULL, 0, NULL);
    for (size_t b = 0; b < 3 * NUM_SEGMENTS; ++b)
        clReleaseMemObject(buffers[b]);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

/* The same segments at byte offsets inside one larger buffer per tensor, in a different order
 * and with different gaps for g, a and d; the gaps hold garbage (NaN, 1e30, -0.0): a step that
 * read them would see a NaN and skip (accepted = 0), and a step that wrote them is caught by
 * comparing d's buffer outside the segments with the garbage. g's and a's buffers must come
 * back unchanged entirely. */
CASE_TEST(projecting_methods, segments_at_offsets_in_one_buffer)
{
    /* order of the segments in memory and the gap before each, per tensor (g, a, d) */
    static const size_t order[3][NUM_SEGMENTS] = {{1, 0, 2}, {2, 1, 0}, {0, 2, 1}};
    static const size_t gaps[3][NUM_SEGMENTS + 1] = {{5, 3, 17, 11}, {1, 64, 2, 7},
                                                     {33, 1, 9, 4}};
    bloopcl_config config = make_config(c);
    config.lambda = 0.6;
    bloopcl_context *ctx = support_context();
    bloopcl_combiner *comb = support_combiner(ctx, &config, SEGMENTED_N);
    size_t offsets[3 * NUM_SEGMENTS];
    size_t floats[3];
    for (int k = 0; k < 3; ++k) {
        size_t at = 0;
        for (size_t p = 0; p < NUM_SEGMENTS; ++p) {
            at += gaps[k][p];
            offsets[k * NUM_SEGMENTS + order[k][p]] = at;
            at += segment_counts[order[k][p]];
        }
        floats[k] = at + gaps[k][NUM_SEGMENTS];
    }
    size_t buffer_floats = floats[0];
    for (int k = 1; k < 3; ++k)
        buffer_floats = floats[k] > buffer_floats ? floats[k] : buffer_floats;
    float *garbage = support_alloc(buffer_floats);
    for (size_t i = 0; i < buffer_floats; ++i)
        garbage[i] = (i % 3 == 0) ? NAN : (i % 3 == 1) ? 1e30f : -0.0f;

    bloopcl_segment segments[3][NUM_SEGMENTS];
    cl_mem buffers[3];
    bloopcl_tensor tensors[3];
    for (int k = 0; k < 3; ++k) {
        buffers[k] = support_buffer(ctx, garbage, buffer_floats);
        for (size_t s = 0; s < NUM_SEGMENTS; ++s)
            segments[k][s] = (bloopcl_segment){.buffer = buffers[k],
                                               .offset_bytes = offsets[k * NUM_SEGMENTS + s] *
                                                               sizeof(float),
                                               .count = segment_counts[s],
                                               .dtype = BLOOPCL_DTYPE_F32, .reserved = 0};
        tensors[k] = (bloopcl_tensor){segments[k], NUM_SEGMENTS};
    }
    run_segmented_against_reference(ctx, comb, &config, tensors, buffers, offsets,
                                    buffer_floats, garbage);

    /* g's and a's whole buffers: exactly what was uploaded for the last step */
    float *whole = support_alloc(buffer_floats), *image = support_alloc(buffer_floats);
    float *g = support_alloc(SEGMENTED_N), *a = support_alloc(SEGMENTED_N);
    make_inputs(g, a, SEGMENTED_N, 53, 2, alternating_alpha(2));
    const float *sources[2] = {g, a};
    for (int k = 0; k < 2; ++k) {
        memcpy(image, garbage, buffer_floats * sizeof(float));
        size_t first = 0;
        for (size_t s = 0; s < NUM_SEGMENTS; ++s) {
            memcpy(image + offsets[k * NUM_SEGMENTS + s], sources[k] + first,
                   segment_counts[s] * sizeof(float));
            first += segment_counts[s];
        }
        support_read(ctx, buffers[k], whole, buffer_floats);
        expect_same_bits(whole, image, buffer_floats, "%s buffer after the steps",
                         k == 0 ? "g" : "a");
    }
    free(whole), free(image), free(g), free(a), free(garbage);
    for (int k = 0; k < 3; ++k)
        clReleaseMemObject(buffers[k]);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

/* Segments of 0 elements are allowed and skipped, whatever their buffer (NULL here): the list
 * {0, 500, 0, 499} is the vector of 999 elements, checked against the reference. */
CASE_TEST(ema_methods, empty_segments_are_skipped)
{
    const size_t n = 999;
    static const size_t counts[4] = {0, 500, 0, 499};
    bloopcl_config config = make_config(c);
    config.lambda = 0.6;
    bloopcl_context *ctx = support_context();
    bloopcl_combiner *comb = support_combiner(ctx, &config, n);
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(&config, n, &ref), BLOOPCL_OK);
    bloopcl_segment segments[3][4];
    cl_mem buffers[3][4] = {{NULL}};
    bloopcl_tensor tensors[3];
    for (int k = 0; k < 3; ++k) {
        for (size_t s = 0; s < 4; ++s) {
            if (counts[s] > 0)
                buffers[k][s] = support_buffer(ctx, NULL, counts[s]);
            segments[k][s] = (bloopcl_segment){.buffer = buffers[k][s], .offset_bytes = 0,
                                               .count = counts[s], .dtype = BLOOPCL_DTYPE_F32,
                                               .reserved = 0};
        }
        tensors[k] = (bloopcl_tensor){segments[k], 4};
    }
    float *g = support_alloc(n), *a = support_alloc(n);
    float *d_dev = support_alloc(n), *d_ref = support_alloc(n);
    for (int t = 0; t < 3; ++t) {
        make_inputs(g, a, n, 67, t, alternating_alpha(t));
        upload(ctx, buffers[0][1], g, 500);
        upload(ctx, buffers[0][3], g + 500, 499);
        upload(ctx, buffers[1][1], a, 500);
        upload(ctx, buffers[1][3], a + 500, 499);
        cr_assert_eq(bloopcl_step(comb, &tensors[0], &tensors[1], &tensors[2], 0, NULL, NULL),
                     BLOOPCL_OK, "step %d: %s", t, bloopcl_context_last_error(ctx));
        support_read(ctx, buffers[2][1], d_dev, 500);
        support_read(ctx, buffers[2][3], d_dev + 500, 499);
        support_check_step(comb, &config, &ref, g, a, d_dev, d_ref, t);
    }
    support_expect_state(comb, BLOOPCL_STATE_EMA, ref.ema, n);
    if (ref.aux_ema != NULL)
        support_expect_state(comb, BLOOPCL_STATE_AUX_EMA, ref.aux_ema, n);
    for (int k = 0; k < 3; ++k)
        for (size_t s = 0; s < 4; ++s)
            if (buffers[k][s] != NULL)
                clReleaseMemObject(buffers[k][s]);
    free(g), free(a), free(d_dev), free(d_ref);
    bloopcl_reference_free(&ref);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

/* ---------------------------------------------------------------------------------------------
 * Aliasing and untouched inputs
 * ------------------------------------------------------------------------------------------- */

/* d may alias g or a (each element is read before it is written): the in-place runs give
 * the same d and state as a run with a separate d, bit for bit. */
CASE_TEST(all_methods, d_aliasing_g_or_a_matches_separate)
{
    const size_t n = 4099;
    bloopcl_config config = make_config(c);
    config.lambda = 0.4;
    bloopcl_context *ctx = support_context();
    bloopcl_combiner *separate = support_combiner(ctx, &config, n);
    bloopcl_combiner *on_g = support_combiner(ctx, &config, n);
    bloopcl_combiner *on_a = support_combiner(ctx, &config, n);
    cl_mem gb = support_buffer(ctx, NULL, n), ab = support_buffer(ctx, NULL, n);
    cl_mem db = support_buffer(ctx, NULL, n);
    float *g = support_alloc(n), *a = support_alloc(n);
    float *d = support_alloc(n), *d_g = support_alloc(n), *d_a = support_alloc(n);
    for (int t = 0; t < 4; ++t) {
        make_inputs(g, a, n, 59, t, alternating_alpha(t));
        upload(ctx, gb, g, n);
        upload(ctx, ab, a, n);
        cr_assert_eq(bloopcl_step_buffers(separate, gb, ab, db), BLOOPCL_OK, "%s",
                     bloopcl_context_last_error(ctx));
        support_read(ctx, db, d, n);
        cr_assert_eq(bloopcl_step_buffers(on_g, gb, ab, gb), BLOOPCL_OK, "%s",
                     bloopcl_context_last_error(ctx));
        support_read(ctx, gb, d_g, n);
        upload(ctx, gb, g, n);
        cr_assert_eq(bloopcl_step_buffers(on_a, gb, ab, ab), BLOOPCL_OK, "%s",
                     bloopcl_context_last_error(ctx));
        support_read(ctx, ab, d_a, n);
        expect_same_bits(d_g, d, n, "%s %s step %d: d = g in place", backend_name(c->dots),
                         bloopcl_method_name(c->method), t);
        expect_same_bits(d_a, d, n, "%s %s step %d: d = a in place", backend_name(c->dots),
                         bloopcl_method_name(c->method), t);
    }
    if (has_ema(&config)) {
        expect_same_state(on_g, separate, &config, n, "d = g");
        expect_same_state(on_a, separate, &config, n, "d = a");
    }
    clReleaseMemObject(gb);
    clReleaseMemObject(ab);
    clReleaseMemObject(db);
    free(g), free(a), free(d), free(d_g), free(d_a);
    bloopcl_combiner_destroy(separate);
    bloopcl_combiner_destroy(on_g);
    bloopcl_combiner_destroy(on_a);
    bloopcl_context_destroy(ctx);
}

/* A step reads g and a and never writes them: their buffers come back bit for bit. */
CASE_TEST(all_methods, inputs_never_modified)
{
    const size_t n = 65537;
    bloopcl_config config = make_config(c);
    config.lambda = 0.5;
    bloopcl_context *ctx = support_context();
    bloopcl_combiner *comb = support_combiner(ctx, &config, n);
    float *g = support_alloc(n), *a = support_alloc(n), *back = support_alloc(n);
    cl_mem gb = support_buffer(ctx, NULL, n), ab = support_buffer(ctx, NULL, n);
    cl_mem db = support_buffer(ctx, NULL, n);
    for (int t = 0; t < 3; ++t) {
        make_inputs(g, a, n, 61, t, alternating_alpha(t));
        upload(ctx, gb, g, n);
        upload(ctx, ab, a, n);
        cr_assert_eq(bloopcl_step_buffers(comb, gb, ab, db), BLOOPCL_OK, "%s",
                     bloopcl_context_last_error(ctx));
        support_read(ctx, gb, back, n);
        expect_same_bits(back, g, n, "%s %s step %d: g", backend_name(c->dots),
                         bloopcl_method_name(c->method), t);
        support_read(ctx, ab, back, n);
        expect_same_bits(back, a, n, "%s %s step %d: a", backend_name(c->dots),
                         bloopcl_method_name(c->method), t);
    }
    clReleaseMemObject(gb);
    clReleaseMemObject(ab);
    clReleaseMemObject(db);
    free(g), free(a), free(back);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}
