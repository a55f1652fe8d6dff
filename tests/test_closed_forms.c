/* test_closed_forms.c — device results against values derived by hand from the update rules
 * (bloopcl.h, DESIGN.md section 1), not against the CPU reference: parallel, antiparallel and
 * orthogonal auxiliary gradients, zero gradients, w = 1, the EMA recursion, the dynamic-barrier
 * clip, PCGrad's conflict test, the rescale factor, the ratio-only variant, Mixed and every
 * initialisation mode. Every test runs on both dot backends.
 *
 * Notation: lf = (float)lambda, wf = (float)w (the kernels see float hyperparameters),
 * S = <g,g>, u = FLT_EPSILON / 2 (unit roundoff). "fl(x)" is x rounded to float: where the
 * closed form only involves operations that are exact or rounded once in the same order as the
 * kernels (which are compiled without contraction, like this file), results are compared bit
 * for bit; elsewhere the tolerance is a few ULP of the magnitudes that enter the expression. */
#include "support.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ULP ((double)FLT_EPSILON)
#define AUX_STREAM_XOR 0x5851F42D4C957F2Dull /* documented stream of q under INIT_RANDOM */
#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

static bloopcl_dot_backend backend_params[] = {BLOOPCL_DOTS_CLBLAST, BLOOPCL_DOTS_FUSED};

/* One test per backend: the parameter is the dot backend. */
#define BACKEND_TEST(name)                                                                 \
    ParameterizedTestParameters(closed_forms, name)                                        \
    {                                                                                      \
        return cr_make_param_array(bloopcl_dot_backend, backend_params,                    \
                                   COUNT(backend_params));                                 \
    }                                                                                      \
    ParameterizedTest(bloopcl_dot_backend *dots, closed_forms, name, .timeout = 120)

static const char *backend_name(bloopcl_dot_backend dots)
{
    return dots == BLOOPCL_DOTS_FUSED ? "fused" : "clblast";
}

/* ---------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------- */
static bloopcl_config make_config(bloopcl_method method, bloopcl_dot_backend dots, double w,
                                  double lambda, double eps)
{
    bloopcl_config config;
    bloopcl_config_default(&config, method);
    config.dots = dots;
    config.ema_weight = w;
    config.lambda = lambda;
    config.eps = eps;
    return config;
}

/* One blocking step from host arrays; the diagnostics are read when `diag` is not NULL. */
static void step(bloopcl_context *ctx, bloopcl_combiner *comb, const float *g, const float *a,
                 float *d, bloopcl_diagnostics *diag)
{
    bloopcl_status status = bloopcl_step_host(comb, g, a, d);
    cr_assert_eq(status, BLOOPCL_OK, "step: %s (%s)", bloopcl_status_string(status),
                 bloopcl_context_last_error(ctx));
    if (diag != NULL) {
        cr_assert_eq(bloopcl_get_diagnostics(comb, diag), BLOOPCL_OK);
        cr_assert(diag->accepted, "the step was accepted");
    }
}

static float *read_state(bloopcl_combiner *comb, bloopcl_state_kind kind, size_t n)
{
    float *state = support_alloc(n);
    bloopcl_status status = bloopcl_read_state(comb, kind, state, n);
    cr_assert_eq(status, BLOOPCL_OK, "read_state(%d): %s", (int)kind,
                 bloopcl_status_string(status));
    return state;
}

/* Collects per-element mismatches and reports the first one and how many there were. */
typedef struct tally {
    char what[200];
    size_t bad, first;
    double got, want, tol;
} tally;

static void tally_start(tally *t, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void tally_start(tally *t, const char *format, ...)
{
    memset(t, 0, sizeof *t);
    va_list args;
    va_start(args, format);
    vsnprintf(t->what, sizeof t->what, format, args);
    va_end(args);
}

static void tally_fail(tally *t, size_t i, double got, double want, double tol)
{
    if (t->bad++ == 0) {
        t->first = i;
        t->got = got;
        t->want = want;
        t->tol = tol;
    }
}

/* |got - want| <= tol (a NaN on either side is a mismatch). */
static void tally_near(tally *t, size_t i, double got, double want, double tol)
{
    if (!(fabs(got - want) <= tol))
        tally_fail(t, i, got, want, tol);
}

/* Bit-for-bit equality of two floats. */
static void tally_bits(tally *t, size_t i, float got, float want)
{
    if (memcmp(&got, &want, sizeof got) != 0)
        tally_fail(t, i, got, want, 0.0);
}

static void tally_end(const tally *t, size_t n)
{
    cr_expect_eq(t->bad, 0, "%s: %zu of %zu elements off; first [%zu] got %.9g want %.9g "
                 "(tol %.3g)", t->what, t->bad, n, t->first, t->got, t->want, t->tol);
}

static double dot_d(const float *x, const float *y, size_t n)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; ++i)
        sum += (double)x[i] * (double)y[i];
    return sum;
}

static double abs_dot_d(const float *x, const float *y, size_t n)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; ++i)
        sum += fabs((double)x[i] * (double)y[i]);
    return sum;
}

/* Tolerance of r = <x,y> / (<x,x> + eps) computed from fp32 dots (see support.h): each dot is
 * off by at most SUPPORT_DOT_RTOL * sum |terms|. */
static double ratio_tol(const float *x, const float *y, size_t n, double eps, double r)
{
    double xx = dot_d(x, x, n);
    double den = xx + eps;
    return (SUPPORT_DOT_RTOL * abs_dot_d(x, y, n) + fabs(r) * SUPPORT_DOT_RTOL * xx) / den +
           8 * ULP * fabs(r) + 1e-30;
}

/* Random a partly aligned with g: a = noise + alpha g. */
static void aligned_aux(float *a, const float *g, size_t n, uint64_t seed, float alpha)
{
    support_fill_normal(a, n, seed, 1.0f);
    for (size_t i = 0; i < n; ++i)
        a[i] += alpha * g[i];
}

static const size_t sizes[] = {1, 7, 1000, 65537};

/* ---------------------------------------------------------------------------------------------
 * a parallel / antiparallel to m (w = 1, so m = g)
 * ------------------------------------------------------------------------------------------- */

/* a = c g with c a power of two and eps = 0: every product m_i a_i = c g_i^2 is the product
 * g_i^2 scaled by c, so every partial sum (any order, Kahan or not) is scaled exactly and
 * <m,a> = c <m,m> bit for bit. Then r = c exactly, a - r m = c g - c g = 0 and d = s g:
 * the component along m is removed entirely. Also cosine = sign(c). */
BACKEND_TEST(parallel_power_of_two_gives_exact_g)
{
    static const float cs[] = {2.0f, 0.5f, -2.0f, -0.25f};
    static const double lambdas[] = {0.1, 2.0};
    bloopcl_context *ctx = support_context();
    for (size_t k = 0; k < COUNT(sizes); ++k) {
        size_t n = sizes[k];
        float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
        support_fill_normal(g, n, 100 + n, 1.0f);
        for (size_t ci = 0; ci < COUNT(cs); ++ci) {
            for (size_t i = 0; i < n; ++i)
                a[i] = cs[ci] * g[i];
            for (size_t li = 0; li < COUNT(lambdas); ++li) {
                for (int rescale = 0; rescale <= 1; ++rescale) {
                    bloopcl_config config = make_config(BLOOPCL_METHOD_BLOOP, *dots, 1.0,
                                                        lambdas[li], 0.0);
                    config.rescale = rescale;
                    bloopcl_combiner *comb = support_combiner(ctx, &config, n);
                    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
                    step(ctx, comb, g, a, d, &diag);
                    /* 1/(1+lambda) divided in double, rounded once (bloopcl.h) */
                    float s = rescale ? (float)(1.0 / (1.0 + lambdas[li])) : 1.0f;
                    cr_expect_eq(diag.ratio, (double)cs[ci], "%s n=%zu c=%g: r = %.9g, want c",
                                 backend_name(*dots), n, cs[ci], diag.ratio);
                    cr_expect_eq(diag.ratio_raw, (double)cs[ci]);
                    cr_expect_eq(diag.dot_ema_aux, cs[ci] * diag.ema_norm_sq,
                                 "<m,a> = c <m,m> exactly");
                    cr_expect(fabs(diag.cosine - (cs[ci] > 0 ? 1.0 : -1.0)) <= 1e-12,
                              "cosine %.17g", diag.cosine);
                    tally t;
                    tally_start(&t, "%s n=%zu c=%g lambda=%g rescale=%d: d = s g",
                                backend_name(*dots), n, cs[ci], lambdas[li], rescale);
                    for (size_t i = 0; i < n; ++i)
                        tally_bits(&t, i, d[i], s * g[i]);
                    tally_end(&t, n);
                    bloopcl_combiner_destroy(comb);
                }
            }
        }
        free(g), free(a), free(d);
    }
    bloopcl_context_destroy(ctx);
}

/* a = c g for a general c and eps > 0: r = <g,a>/(S + eps) = c S/(S + eps) ~ c, and
 * d = g + lambda (c g - r g) = g (1 + lambda (c - r)), i.e. d ~ g. With eps = 1e-2 and n = 1
 * (S small) r is visibly below c, which checks that eps enters the denominator. */
BACKEND_TEST(parallel_general_removes_component_along_m)
{
    static const double cs[] = {3.0, 0.3, -1.7};
    static const double epss[] = {1e-7, 1e-2};
    const double lambda = 0.5;
    const double lf = (float)lambda;
    bloopcl_context *ctx = support_context();
    for (size_t k = 0; k < COUNT(sizes); ++k) {
        size_t n = sizes[k];
        float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
        support_fill_normal(g, n, 200 + n, 0.5f);
        double S = dot_d(g, g, n);
        for (size_t ci = 0; ci < COUNT(cs); ++ci) {
            double c = cs[ci];
            for (size_t i = 0; i < n; ++i)
                a[i] = (float)(c * g[i]);
            for (size_t ei = 0; ei < COUNT(epss); ++ei) {
                double eps = (float)epss[ei];
                bloopcl_config config = make_config(BLOOPCL_METHOD_BLOOP, *dots, 1.0, lambda,
                                                    epss[ei]);
                bloopcl_combiner *comb = support_combiner(ctx, &config, n);
                bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
                step(ctx, comb, g, a, d, &diag);
                double r_cf = c * S / (S + eps);
                cr_expect(fabs(diag.ratio - r_cf) <= 3 * SUPPORT_DOT_RTOL * fabs(r_cf),
                          "%s n=%zu c=%g eps=%g: r device %.9g closed form %.9g",
                          backend_name(*dots), n, c, eps, diag.ratio, r_cf);
                double r = diag.ratio;
                tally t;
                tally_start(&t, "%s n=%zu c=%g eps=%g: d = g (1 + lambda (c - r))",
                            backend_name(*dots), n, c, eps);
                for (size_t i = 0; i < n; ++i) {
                    double gi = g[i];
                    double want = gi * (1.0 + lf * (c - r));
                    double tol = 4 * ULP * fabs(gi) * (1.0 + lf * (fabs(c) + fabs(r))) + 1e-30;
                    tally_near(&t, i, d[i], want, tol);
                }
                tally_end(&t, n);
                bloopcl_combiner_destroy(comb);
            }
        }
        free(g), free(a), free(d);
    }
    bloopcl_context_destroy(ctx);
}

/* ---------------------------------------------------------------------------------------------
 * a orthogonal to m: r = 0 exactly, d = g + lambda a
 * ------------------------------------------------------------------------------------------- */

/* Exactly orthogonal vectors of small dyadic values: pairs (g, g) against (b, -b), so
 * <g,a> = sum (g b - g b) = 0. In every dot the device takes (m = g for w = 1, m = g/2 exactly
 * for w = 1/2 from zeros; likewise q) the terms are multiples of some 2^-k (k <= 6) whose
 * absolute sum stays below 2^(24-k), so every partial sum, in any order, is exact in float
 * and the device's <m,a> (and <q,g>) is exactly 0 as well. Then r = 0/(<m,m> + eps) = 0,
 * a - 0 m = a and d = fl(g + fl(lf a)) bit for bit, for Bloop, the dynamic barrier (0 is
 * below the cap), PCGrad (no conflict: both ratios are 0) and ratio-only ((1 - lf 0) g = g). */
static void orthogonal_pair(float *g, float *a, size_t n)
{
    for (size_t k = 0; 2 * k + 1 < n; ++k) {
        float gv = 0.5f * (float)((k * 7) % 11 + 1) * ((k % 3 == 0) ? -1.0f : 1.0f);
        float bv = 0.25f * ((float)((k * 5) % 13) - 6.0f);
        g[2 * k] = g[2 * k + 1] = gv;
        a[2 * k] = bv;
        a[2 * k + 1] = -bv;
    }
    if (n % 2 == 1) {
        g[n - 1] = 3.0f;
        a[n - 1] = 0.0f;
    }
}

BACKEND_TEST(orthogonal_gives_g_plus_lambda_a_exactly)
{
    static const size_t ns[] = {2, 7, 1000, 65537};
    static const double ws[] = {1.0, 0.5};
    typedef struct variant {
        bloopcl_method method;
        int ratio_only;
    } variant;
    static const variant variants[] = {{BLOOPCL_METHOD_BLOOP, 0},
                                       {BLOOPCL_METHOD_DYNAMIC_BARRIER, 0},
                                       {BLOOPCL_METHOD_PCGRAD, 0},
                                       {BLOOPCL_METHOD_BLOOP, 1}};
    const double lambda = 0.1;
    const float lf = (float)lambda;
    bloopcl_context *ctx = support_context();
    for (size_t k = 0; k < COUNT(ns); ++k) {
        size_t n = ns[k];
        float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
        orthogonal_pair(g, a, n);
        cr_assert_eq(dot_d(g, a, n), 0.0, "the construction is orthogonal");
        for (size_t vi = 0; vi < COUNT(variants); ++vi) {
            for (size_t wi = 0; wi < COUNT(ws); ++wi) {
                bloopcl_config config = make_config(variants[vi].method, *dots, ws[wi], lambda,
                                                    1e-7);
                config.ratio_only = variants[vi].ratio_only;
                bloopcl_combiner *comb = support_combiner(ctx, &config, n);
                bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
                step(ctx, comb, g, a, d, &diag);
                const char *name = bloopcl_method_name(variants[vi].method);
                cr_expect_eq(diag.dot_ema_aux, 0.0, "%s %s n=%zu w=%g: <m,a> = %.9g",
                             backend_name(*dots), name, n, ws[wi], diag.dot_ema_aux);
                cr_expect_eq(diag.ratio, 0.0, "%s %s n=%zu: r = %.9g", backend_name(*dots),
                             name, n, diag.ratio);
                cr_expect_eq(diag.ratio_raw, 0.0);
                cr_expect_eq(diag.cosine, 0.0);
                if (variants[vi].method == BLOOPCL_METHOD_PCGRAD)
                    cr_expect_eq(diag.aux_ratio, 0.0, "PCGrad r_q = %.9g", diag.aux_ratio);
                tally t;
                tally_start(&t, "%s %s ratio_only=%d n=%zu w=%g: d = g + lambda a",
                            backend_name(*dots), name, variants[vi].ratio_only, n, ws[wi]);
                for (size_t i = 0; i < n; ++i) {
                    float la = lf * a[i];
                    tally_bits(&t, i, d[i], g[i] + la);
                }
                tally_end(&t, n);
                bloopcl_combiner_destroy(comb);
            }
        }
        free(g), free(a), free(d);
    }
    bloopcl_context_destroy(ctx);
}

/* ---------------------------------------------------------------------------------------------
 * Zero gradients
 * ------------------------------------------------------------------------------------------- */

/* a = 0: <m,a> = 0, so r = 0 (and PCGrad's q = 0 gives r_q = 0/(0 + eps) = 0), every
 * correction term vanishes and d = fl(s g) bit for bit, over several steps of an EMA with
 * w = 0.1 (m != 0). <a,a> = 0 makes the cosine 0 by definition. */
BACKEND_TEST(zero_aux_gives_scaled_g)
{
    typedef struct variant {
        bloopcl_method method;
        int ratio_only;
    } variant;
    static const variant variants[] = {
        {BLOOPCL_METHOD_BLOOP, 0}, {BLOOPCL_METHOD_DYNAMIC_BARRIER, 0},
        {BLOOPCL_METHOD_PCGRAD, 0}, {BLOOPCL_METHOD_BLOOP, 1}, {BLOOPCL_METHOD_MIXED, 0}};
    const double lambda = 0.5;
    bloopcl_context *ctx = support_context();
    for (size_t k = 0; k < COUNT(sizes); ++k) {
        size_t n = sizes[k];
        float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
        for (size_t vi = 0; vi < COUNT(variants); ++vi) {
            for (int rescale = 0; rescale <= 1; ++rescale) {
                bloopcl_config config = make_config(variants[vi].method, *dots, 0.1, lambda,
                                                    1e-7);
                config.ratio_only = variants[vi].ratio_only;
                config.rescale = rescale;
                bloopcl_combiner *comb = support_combiner(ctx, &config, n);
                float s = rescale ? (float)(1.0 / (1.0 + lambda)) : 1.0f;
                for (int t = 0; t < 3; ++t) {
                    support_fill_normal(g, n, 300 + 10 * n + (size_t)t, 1.0f);
                    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
                    step(ctx, comb, g, a, d, &diag);
                    const char *name = bloopcl_method_name(variants[vi].method);
                    cr_expect_eq(diag.ratio, 0.0, "%s %s n=%zu step %d: r = %.9g",
                                 backend_name(*dots), name, n, t, diag.ratio);
                    cr_expect_eq(diag.aux_ratio, 0.0);
                    cr_expect_eq(diag.aux_norm_sq, 0.0);
                    cr_expect_eq(diag.cosine, 0.0);
                    tally tl;
                    tally_start(&tl, "%s %s ratio_only=%d rescale=%d n=%zu step %d: d = s g",
                                backend_name(*dots), name, variants[vi].ratio_only, rescale, n,
                                t);
                    for (size_t i = 0; i < n; ++i)
                        tally_bits(&tl, i, d[i], s * g[i]);
                    tally_end(&tl, n);
                }
                bloopcl_combiner_destroy(comb);
            }
        }
        free(g), free(a), free(d);
    }
    bloopcl_context_destroy(ctx);
}

/* g = 0 with w = 1: m = 0 (and PCGrad's <q,g> = 0), r = 0/(0 + eps) = 0 for eps > 0, so
 * d = fl(lf a) bit for bit and the state stays exactly 0. */
BACKEND_TEST(zero_main_with_eps_gives_lambda_a)
{
    typedef struct variant {
        bloopcl_method method;
        int ratio_only;
    } variant;
    static const variant variants[] = {{BLOOPCL_METHOD_BLOOP, 0},
                                       {BLOOPCL_METHOD_DYNAMIC_BARRIER, 0},
                                       {BLOOPCL_METHOD_PCGRAD, 0},
                                       {BLOOPCL_METHOD_BLOOP, 1}};
    static const double lambdas[] = {0.1, 2.0};
    static const double epss[] = {1e-7, 1e-3};
    bloopcl_context *ctx = support_context();
    for (size_t k = 0; k < COUNT(sizes); ++k) {
        size_t n = sizes[k];
        float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
        support_fill_normal(a, n, 400 + n, 1.0f);
        for (size_t vi = 0; vi < COUNT(variants); ++vi)
            for (size_t li = 0; li < COUNT(lambdas); ++li)
                for (size_t ei = 0; ei < COUNT(epss); ++ei) {
                    bloopcl_config config = make_config(variants[vi].method, *dots, 1.0,
                                                        lambdas[li], epss[ei]);
                    config.ratio_only = variants[vi].ratio_only;
                    bloopcl_combiner *comb = support_combiner(ctx, &config, n);
                    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
                    step(ctx, comb, g, a, d, &diag);
                    const char *name = bloopcl_method_name(variants[vi].method);
                    cr_expect_eq(diag.ratio, 0.0, "%s %s n=%zu: r = %.9g", backend_name(*dots),
                                 name, n, diag.ratio);
                    cr_expect_eq(diag.ema_norm_sq, 0.0);
                    cr_expect_eq(diag.cosine, 0.0);
                    float lf = (float)lambdas[li];
                    tally t;
                    tally_start(&t, "%s %s ratio_only=%d n=%zu lambda=%g eps=%g: d = lambda a",
                                backend_name(*dots), name, variants[vi].ratio_only, n,
                                lambdas[li], epss[ei]);
                    for (size_t i = 0; i < n; ++i)
                        tally_bits(&t, i, d[i], lf * a[i]);
                    tally_end(&t, n);
                    float *m = read_state(comb, BLOOPCL_STATE_EMA, n);
                    tally_start(&t, "%s %s n=%zu: m = g = 0", backend_name(*dots), name, n);
                    for (size_t i = 0; i < n; ++i)
                        tally_bits(&t, i, m[i], 0.0f);
                    tally_end(&t, n);
                    free(m);
                    bloopcl_combiner_destroy(comb);
                }
        free(g), free(a), free(d);
    }
    bloopcl_context_destroy(ctx);
}

/* g = 0 and eps = 0: r = <0,a>/(<0,0> + 0) = 0/0, which IEEE 754 defines as NaN. The library
 * does "IEEE arithmetic as written" (as apple/ml-bloop does in JAX), so with the PROPAGATE
 * policy every d_i = g_i + lambda (a_i - NaN * 0) is NaN. (The inputs themselves are finite,
 * so the SKIP policy, which looks at g and a only, would not skip either.) The CPU reference
 * must agree (its r is 0.0/0.0 in double). The EMA stays exactly 0. */
BACKEND_TEST(zero_main_without_eps_is_nan_everywhere)
{
    static const bloopcl_method methods[] = {BLOOPCL_METHOD_BLOOP,
                                             BLOOPCL_METHOD_DYNAMIC_BARRIER,
                                             BLOOPCL_METHOD_PCGRAD};
    bloopcl_context *ctx = support_context();
    for (size_t k = 0; k < COUNT(sizes); ++k) {
        size_t n = sizes[k];
        float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
        float *d_ref = support_alloc(n);
        support_fill_normal(a, n, 500 + n, 1.0f);
        for (size_t mi = 0; mi < COUNT(methods); ++mi) {
            bloopcl_config config = make_config(methods[mi], *dots, 1.0, 0.5, 0.0);
            config.nonfinite = BLOOPCL_NONFINITE_PROPAGATE;
            bloopcl_combiner *comb = support_combiner(ctx, &config, n);
            bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
            step(ctx, comb, g, a, d, &diag);
            const char *name = bloopcl_method_name(methods[mi]);
            cr_expect(isnan(diag.ratio), "%s %s n=%zu: r = %.9g, want NaN (0/0)",
                      backend_name(*dots), name, n, diag.ratio);
            size_t not_nan = 0;
            for (size_t i = 0; i < n; ++i)
                not_nan += !isnan(d[i]);
            cr_expect_eq(not_nan, 0, "%s %s n=%zu: %zu elements of d are not NaN",
                         backend_name(*dots), name, n, not_nan);

            bloopcl_reference_state ref;
            cr_assert_eq(bloopcl_reference_init(&config, n, &ref), BLOOPCL_OK);
            bloopcl_diagnostics ref_diag = BLOOPCL_DIAGNOSTICS_INIT;
            cr_assert_eq(bloopcl_reference_step(&config, &ref, g, a, d_ref, &ref_diag),
                         BLOOPCL_OK);
            cr_expect(isnan(ref_diag.ratio), "reference r = %.9g", ref_diag.ratio);
            size_t ref_not_nan = 0;
            for (size_t i = 0; i < n; ++i)
                ref_not_nan += !isnan(d_ref[i]);
            cr_expect_eq(ref_not_nan, 0, "reference: %zu elements of d are not NaN",
                         ref_not_nan);
            bloopcl_reference_free(&ref);

            float *m = read_state(comb, BLOOPCL_STATE_EMA, n);
            tally t;
            tally_start(&t, "%s %s n=%zu: m = 0 after the NaN step", backend_name(*dots), name,
                        n);
            for (size_t i = 0; i < n; ++i)
                tally_bits(&t, i, m[i], 0.0f);
            tally_end(&t, n);
            free(m);
            bloopcl_combiner_destroy(comb);
        }
        free(g), free(a), free(d), free(d_ref);
    }
    bloopcl_context_destroy(ctx);
}

/* ---------------------------------------------------------------------------------------------
 * w = 1: projection on the current gradient; the EMA recursion
 * ------------------------------------------------------------------------------------------- */

/* w = 1 means "no EMA": m <- g exactly, whatever m held (here a random initial state), so each
 * step is the projection d = g + lambda (a - (<g,a>/(S + eps)) g), computed here in double. */
BACKEND_TEST(w_one_projects_on_current_gradient)
{
    static const size_t ns[] = {7, 1000, 65537};
    const double lambda = 0.5, lf = (float)lambda, eps = (float)1e-7;
    bloopcl_context *ctx = support_context();
    for (size_t k = 0; k < COUNT(ns); ++k) {
        size_t n = ns[k];
        float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
        bloopcl_config config = make_config(BLOOPCL_METHOD_BLOOP, *dots, 1.0, lambda, 1e-7);
        config.init = BLOOPCL_INIT_RANDOM;
        config.seed = 99;
        bloopcl_combiner *comb = support_combiner(ctx, &config, n);
        for (int t = 0; t < 5; ++t) {
            support_fill_normal(g, n, 600 + 10 * n + (size_t)t, 0.5f + (float)t);
            aligned_aux(a, g, n, 700 + 10 * n + (size_t)t, (t % 2) ? -0.6f : 0.9f);
            bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
            step(ctx, comb, g, a, d, &diag);
            double r = dot_d(g, a, n) / (dot_d(g, g, n) + eps);
            double dr = ratio_tol(g, a, n, eps, r);
            cr_expect(fabs(diag.ratio - r) <= dr, "%s n=%zu step %d: r device %.9g closed form "
                      "%.9g (tol %.3g)", backend_name(*dots), n, t, diag.ratio, r, dr);
            tally tl;
            tally_start(&tl, "%s n=%zu step %d: d = g + lambda (a - r g)", backend_name(*dots),
                        n, t);
            for (size_t i = 0; i < n; ++i) {
                double gi = g[i], ai = a[i];
                double want = gi + lf * (ai - r * gi);
                double tol = 8 * ULP * (fabs(gi) + lf * fabs(ai) + lf * fabs(r * gi)) +
                             lf * dr * fabs(gi) + 1e-30;
                tally_near(&tl, i, d[i], want, tol);
            }
            tally_end(&tl, n);
            float *m = read_state(comb, BLOOPCL_STATE_EMA, n);
            tally_start(&tl, "%s n=%zu step %d: m = g", backend_name(*dots), n, t);
            for (size_t i = 0; i < n; ++i)
                tally_bits(&tl, i, m[i], g[i]);
            tally_end(&tl, n);
            free(m);
        }
        bloopcl_combiner_destroy(comb);
        free(g), free(a), free(d);
    }
    bloopcl_context_destroy(ctx);
}

/* From m_0 = 0 and a constant g, m_k = m_{k-1} + w (g - m_{k-1}) solves to
 * m_k = (1 - (1 - w)^k) g. In float each step adds at most ~3u |g| of rounding and the old
 * error decays by (1 - w), so |m_k - closed form| <= k 1e-6 |g| is a safe bound. The first
 * step is m_1 = 0 + fl(wf (g - 0)) = fl(wf g) exactly. PCGrad's q follows the same rule
 * with a. */
BACKEND_TEST(ema_recursion_from_zeros)
{
    typedef struct run {
        size_t n;
        int steps;
    } run;
    static const run runs[] = {{1, 40}, {1000, 40}, {65537, 8}};
    static const double ws[] = {0.1, 0.5, 0.01};
    static const bloopcl_method methods[] = {BLOOPCL_METHOD_BLOOP, BLOOPCL_METHOD_PCGRAD};
    bloopcl_context *ctx = support_context();
    for (size_t k = 0; k < COUNT(runs); ++k) {
        size_t n = runs[k].n;
        float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
        support_fill_normal(g, n, 800 + n, 1.0f);
        aligned_aux(a, g, n, 900 + n, 0.5f);
        for (size_t mi = 0; mi < COUNT(methods); ++mi)
            for (size_t wi = 0; wi < COUNT(ws); ++wi) {
                bloopcl_config config = make_config(methods[mi], *dots, ws[wi], 0.3, 1e-7);
                bool pcgrad = methods[mi] == BLOOPCL_METHOD_PCGRAD;
                bloopcl_combiner *comb = support_combiner(ctx, &config, n);
                double wf = (float)ws[wi];
                for (int t = 1; t <= runs[k].steps; ++t) {
                    step(ctx, comb, g, a, d, NULL);
                    double factor = 1.0 - pow(1.0 - wf, t);
                    for (int kind = 0; kind <= (pcgrad ? 1 : 0); ++kind) {
                        const float *x = kind == 0 ? g : a;
                        float *m = read_state(comb, (bloopcl_state_kind)kind, n);
                        tally tl;
                        tally_start(&tl, "%s %s n=%zu w=%g step %d: %s_k = (1 - (1-w)^k) %s",
                                    backend_name(*dots), bloopcl_method_name(methods[mi]), n,
                                    ws[wi], t, kind ? "q" : "m", kind ? "a" : "g");
                        for (size_t i = 0; i < n; ++i) {
                            if (t == 1)
                                tally_bits(&tl, i, m[i], (float)wf * x[i]);
                            else
                                tally_near(&tl, i, m[i], factor * x[i],
                                           1e-6 * t * fabs((double)x[i]) + 1e-37);
                        }
                        tally_end(&tl, n);
                        free(m);
                    }
                }
                bloopcl_combiner_destroy(comb);
            }
        free(g), free(a), free(d);
    }
    bloopcl_context_destroy(ctx);
}

/* ---------------------------------------------------------------------------------------------
 * Dynamic barrier: r <- min(r, 1/lambda)
 * ------------------------------------------------------------------------------------------- */

/* a = 16 g, w = 1, eps = 0: r_raw = 16 exactly (power-of-two scaling, as above), far above
 * the cap 1/lambda, so r = fl(1/lf) exactly (the value the device computes), ratio_raw keeps
 * 16, and d = g + lambda (a - (1/lambda) m) = g + lambda a - g (~ lambda a).
 * Ratio-only with the clip: d = (1 - lambda/lambda) g + lambda a ~ lambda a.
 * A negative r is never clipped: a = -16 g keeps r = -16. A general a = 20 g + noise with
 * eps > 0 is clipped the same way. */
BACKEND_TEST(barrier_clips_at_inverse_lambda)
{
    static const double lambdas[] = {0.3, 0.5, 0.1};
    bloopcl_context *ctx = support_context();
    for (size_t k = 0; k < COUNT(sizes); ++k) {
        size_t n = sizes[k];
        float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
        support_fill_normal(g, n, 1000 + n, 1.0f);
        for (size_t li = 0; li < COUNT(lambdas); ++li) {
            double lf = (float)lambdas[li];
            float cap_f = 1.0f / (float)lambdas[li];
            double cap = cap_f;
            for (int ratio_only = 0; ratio_only <= 1; ++ratio_only) {
                for (size_t i = 0; i < n; ++i)
                    a[i] = 16.0f * g[i];
                bloopcl_config config = make_config(BLOOPCL_METHOD_DYNAMIC_BARRIER, *dots, 1.0,
                                                    lambdas[li], 0.0);
                config.ratio_only = ratio_only;
                bloopcl_combiner *comb = support_combiner(ctx, &config, n);
                bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
                step(ctx, comb, g, a, d, &diag);
                cr_expect_eq(diag.ratio, cap, "%s n=%zu lambda=%g: r = %.9g, want 1/lambda = "
                             "%.9g", backend_name(*dots), n, lambdas[li], diag.ratio, cap);
                cr_expect_eq(diag.ratio_raw, 16.0, "ratio_raw = %.9g, want 16 (unclipped)",
                             diag.ratio_raw);
                tally t;
                tally_start(&t, "%s n=%zu lambda=%g ratio_only=%d: clipped d",
                            backend_name(*dots), n, lambdas[li], ratio_only);
                for (size_t i = 0; i < n; ++i) {
                    double gi = g[i], ai = a[i], want, tol;
                    if (ratio_only) {
                        want = (1.0 - lf * cap) * gi + lf * ai;
                        tol = 4 * ULP * (fabs(gi) * (1.0 + lf * cap) + lf * fabs(ai)) + 1e-30;
                    } else {
                        want = gi + lf * (ai - cap * gi);
                        tol = 4 * ULP * (fabs(gi) + lf * (fabs(ai) + cap * fabs(gi))) + 1e-30;
                    }
                    tally_near(&t, i, d[i], want, tol);
                }
                tally_end(&t, n);
                bloopcl_combiner_destroy(comb);

                /* negative r: no clip, and a - r m = -16 g + 16 g = 0, d = g */
                for (size_t i = 0; i < n; ++i)
                    a[i] = -16.0f * g[i];
                comb = support_combiner(ctx, &config, n);
                step(ctx, comb, g, a, d, &diag);
                cr_expect_eq(diag.ratio, -16.0, "negative r is not clipped: r = %.9g",
                             diag.ratio);
                cr_expect_eq(diag.ratio_raw, -16.0);
                if (!ratio_only) {
                    tally_start(&t, "%s n=%zu lambda=%g: a = -16 g gives d = g",
                                backend_name(*dots), n, lambdas[li]);
                    for (size_t i = 0; i < n; ++i)
                        tally_bits(&t, i, d[i], g[i]);
                    tally_end(&t, n);
                }
                bloopcl_combiner_destroy(comb);
            }

            /* general a = 20 g + 0.1 noise, eps = 1e-7: r_raw ~ 20 > 1/lambda for every lambda */
            aligned_aux(a, g, n, 1100 + n, 0.0f);
            for (size_t i = 0; i < n; ++i)
                a[i] = 0.1f * a[i] + 20.0f * g[i];
            bloopcl_config config = make_config(BLOOPCL_METHOD_DYNAMIC_BARRIER, *dots, 1.0,
                                                lambdas[li], 1e-7);
            bloopcl_combiner *comb = support_combiner(ctx, &config, n);
            bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
            step(ctx, comb, g, a, d, &diag);
            double eps = (float)1e-7;
            double r_raw = dot_d(g, a, n) / (dot_d(g, g, n) + eps);
            cr_assert(r_raw > cap, "precondition: r_raw %.9g above the cap %.9g", r_raw, cap);
            cr_expect_eq(diag.ratio, cap, "%s n=%zu: r = %.9g, want %.9g", backend_name(*dots),
                         n, diag.ratio, cap);
            cr_expect(fabs(diag.ratio_raw - r_raw) <= ratio_tol(g, a, n, eps, r_raw),
                      "ratio_raw %.9g closed form %.9g", diag.ratio_raw, r_raw);
            tally t;
            tally_start(&t, "%s n=%zu lambda=%g: general a, clipped d", backend_name(*dots), n,
                        lambdas[li]);
            for (size_t i = 0; i < n; ++i) {
                double gi = g[i], ai = a[i];
                tally_near(&t, i, d[i], gi + lf * (ai - cap * gi),
                           4 * ULP * (fabs(gi) + lf * (fabs(ai) + cap * fabs(gi))) + 1e-30);
            }
            tally_end(&t, n);
            bloopcl_combiner_destroy(comb);
        }
        free(g), free(a), free(d);
    }
    bloopcl_context_destroy(ctx);
}

/* Below the cap the barrier is Bloop: a = 2 g with lambda = 0.3 gives r = r_raw = 2 < 3.33
 * and d = g + lambda (2 g - 2 g) = g exactly; over random steps with |r| << 1/lambda the
 * barrier's d and r equal Bloop's bit for bit. */
BACKEND_TEST(barrier_below_cap_does_not_clip)
{
    const double lambda = 0.3;
    bloopcl_context *ctx = support_context();
    for (size_t k = 0; k < COUNT(sizes); ++k) {
        size_t n = sizes[k];
        float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
        float *d_bloop = support_alloc(n);
        support_fill_normal(g, n, 1200 + n, 1.0f);
        for (size_t i = 0; i < n; ++i)
            a[i] = 2.0f * g[i];
        bloopcl_config config = make_config(BLOOPCL_METHOD_DYNAMIC_BARRIER, *dots, 1.0, lambda,
                                            0.0);
        bloopcl_combiner *comb = support_combiner(ctx, &config, n);
        bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT, diag_bloop = BLOOPCL_DIAGNOSTICS_INIT;
        step(ctx, comb, g, a, d, &diag);
        cr_expect_eq(diag.ratio, 2.0, "%s n=%zu: r = %.9g", backend_name(*dots), n, diag.ratio);
        cr_expect_eq(diag.ratio_raw, diag.ratio);
        tally t;
        tally_start(&t, "%s n=%zu: a = 2 g gives d = g", backend_name(*dots), n);
        for (size_t i = 0; i < n; ++i)
            tally_bits(&t, i, d[i], g[i]);
        tally_end(&t, n);
        bloopcl_combiner_destroy(comb);

        config = make_config(BLOOPCL_METHOD_DYNAMIC_BARRIER, *dots, 0.2, lambda, 1e-7);
        bloopcl_config bloop = config;
        bloop.method = BLOOPCL_METHOD_BLOOP;
        comb = support_combiner(ctx, &config, n);
        bloopcl_combiner *ref = support_combiner(ctx, &bloop, n);
        for (int s = 0; s < 4; ++s) {
            support_fill_normal(g, n, 1300 + 10 * n + (size_t)s, 1.0f);
            aligned_aux(a, g, n, 1400 + 10 * n + (size_t)s, (s % 2) ? 0.05f : -0.5f);
            step(ctx, comb, g, a, d, &diag);
            step(ctx, ref, g, a, d_bloop, &diag_bloop);
            cr_assert(diag.ratio_raw < 1.0 / lambda, "precondition: r %.9g below the cap",
                      diag.ratio_raw);
            cr_expect_eq(diag.ratio, diag.ratio_raw, "no clip below the cap");
            cr_expect_eq(diag.ratio, diag_bloop.ratio, "barrier r = Bloop r");
            tally_start(&t, "%s n=%zu step %d: barrier d = Bloop d", backend_name(*dots), n, s);
            for (size_t i = 0; i < n; ++i)
                tally_bits(&t, i, d[i], d_bloop[i]);
            tally_end(&t, n);
        }
        bloopcl_combiner_destroy(comb);
        bloopcl_combiner_destroy(ref);
        free(g), free(a), free(d), free(d_bloop);
    }
    bloopcl_context_destroy(ctx);
}

/* lambda = 0 switches the clip off (1/0 is not a cap): r = r_raw however large, and
 * d = s (g + 0 (a - r m)) = g exactly, with s = 1/(1 + 0) = 1 under rescale as well. */
BACKEND_TEST(barrier_lambda_zero_does_not_clip)
{
    bloopcl_context *ctx = support_context();
    for (size_t k = 0; k < COUNT(sizes); ++k) {
        size_t n = sizes[k];
        float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
        support_fill_normal(g, n, 1500 + n, 1.0f);
        aligned_aux(a, g, n, 1600 + n, 0.0f);
        for (size_t i = 0; i < n; ++i)
            a[i] = 0.1f * a[i] + 16.0f * g[i];
        for (int rescale = 0; rescale <= 1; ++rescale) {
            bloopcl_config config = make_config(BLOOPCL_METHOD_DYNAMIC_BARRIER, *dots, 1.0, 0.0,
                                                1e-7);
            config.rescale = rescale;
            bloopcl_combiner *comb = support_combiner(ctx, &config, n);
            bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
            step(ctx, comb, g, a, d, &diag);
            cr_expect(diag.ratio > 15.0, "%s n=%zu: r = %.9g (not clipped)",
                      backend_name(*dots), n, diag.ratio);
            cr_expect_eq(diag.ratio, diag.ratio_raw);
            tally t;
            tally_start(&t, "%s n=%zu rescale=%d: lambda = 0 gives d = g", backend_name(*dots),
                        n, rescale);
            for (size_t i = 0; i < n; ++i)
                tally_bits(&t, i, d[i], g[i]);
            tally_end(&t, n);
            bloopcl_combiner_destroy(comb);
        }
        free(g), free(a), free(d);
    }
    bloopcl_context_destroy(ctx);
}

/* ---------------------------------------------------------------------------------------------
 * PCGrad: project only on conflict (w = 1: m = g, q = a)
 * ------------------------------------------------------------------------------------------- */

/* <g,a> > 0: both ratios are positive, min(r, 0) = 0, nothing is projected and
 * d = fl(g + fl(lf a)) bit for bit; the two EMAs are g and a exactly. */
BACKEND_TEST(pcgrad_without_conflict_adds)
{
    static const size_t ns[] = {7, 1000, 65537};
    static const double lambdas[] = {0.3, 2.0};
    bloopcl_context *ctx = support_context();
    for (size_t k = 0; k < COUNT(ns); ++k) {
        size_t n = ns[k];
        float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
        support_fill_normal(g, n, 1700 + n, 1.0f);
        aligned_aux(a, g, n, 1800 + n, 0.8f);
        cr_assert(dot_d(g, a, n) > 0.0, "precondition: no conflict");
        for (size_t li = 0; li < COUNT(lambdas); ++li) {
            bloopcl_config config = make_config(BLOOPCL_METHOD_PCGRAD, *dots, 1.0, lambdas[li],
                                                1e-7);
            bloopcl_combiner *comb = support_combiner(ctx, &config, n);
            bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
            step(ctx, comb, g, a, d, &diag);
            cr_expect(diag.ratio > 0.0 && diag.aux_ratio > 0.0, "%s n=%zu: r %.9g r_q %.9g",
                      backend_name(*dots), n, diag.ratio, diag.aux_ratio);
            float lf = (float)lambdas[li];
            tally t;
            tally_start(&t, "%s n=%zu lambda=%g: no conflict, d = g + lambda a",
                        backend_name(*dots), n, lambdas[li]);
            for (size_t i = 0; i < n; ++i) {
                float la = lf * a[i];
                tally_bits(&t, i, d[i], g[i] + la);
            }
            tally_end(&t, n);
            support_expect_state(comb, BLOOPCL_STATE_EMA, g, n);
            support_expect_state(comb, BLOOPCL_STATE_AUX_EMA, a, n);
            bloopcl_combiner_destroy(comb);
        }
        free(g), free(a), free(d);
    }
    bloopcl_context_destroy(ctx);
}

/* <g,a> < 0: a' = a - (<g,a>/(|g|^2 + eps)) g, g' = g - (<a,g>/(|a|^2 + eps)) a and
 * d = g' + lambda a', computed here in double. */
BACKEND_TEST(pcgrad_with_conflict_projects_both)
{
    static const size_t ns[] = {7, 1000, 65537};
    static const double lambdas[] = {0.3, 2.0};
    const double eps = (float)1e-7;
    bloopcl_context *ctx = support_context();
    for (size_t k = 0; k < COUNT(ns); ++k) {
        size_t n = ns[k];
        float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
        support_fill_normal(g, n, 1900 + n, 1.0f);
        aligned_aux(a, g, n, 2000 + n, -0.8f);
        double ga = dot_d(g, a, n);
        cr_assert(ga < 0.0, "precondition: conflict");
        double r = ga / (dot_d(g, g, n) + eps), rq = ga / (dot_d(a, a, n) + eps);
        double dr = ratio_tol(g, a, n, eps, r), drq = ratio_tol(a, g, n, eps, rq);
        for (size_t li = 0; li < COUNT(lambdas); ++li) {
            bloopcl_config config = make_config(BLOOPCL_METHOD_PCGRAD, *dots, 1.0, lambdas[li],
                                                1e-7);
            bloopcl_combiner *comb = support_combiner(ctx, &config, n);
            bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
            step(ctx, comb, g, a, d, &diag);
            cr_expect(fabs(diag.ratio - r) <= dr, "%s n=%zu: r %.9g closed form %.9g",
                      backend_name(*dots), n, diag.ratio, r);
            cr_expect(fabs(diag.aux_ratio - rq) <= drq, "%s n=%zu: r_q %.9g closed form %.9g",
                      backend_name(*dots), n, diag.aux_ratio, rq);
            double lf = (float)lambdas[li];
            tally t;
            tally_start(&t, "%s n=%zu lambda=%g: conflict, d = g' + lambda a'",
                        backend_name(*dots), n, lambdas[li]);
            for (size_t i = 0; i < n; ++i) {
                double gi = g[i], ai = a[i];
                double a_proj = ai - r * gi, g_proj = gi - rq * ai;
                double want = g_proj + lf * a_proj;
                double tol = 8 * ULP * (fabs(gi) + fabs(rq * ai) + lf * (fabs(ai) + fabs(r * gi))) +
                             lf * dr * fabs(gi) + drq * fabs(ai) + 1e-30;
                tally_near(&t, i, d[i], want, tol);
            }
            tally_end(&t, n);
            bloopcl_combiner_destroy(comb);
        }
        free(g), free(a), free(d);
    }
    bloopcl_context_destroy(ctx);
}

/* ---------------------------------------------------------------------------------------------
 * Rescale, ratio-only, Mixed
 * ------------------------------------------------------------------------------------------- */

/* s = 1/(1 + lambda) for every method (apple/ml-bloop's precedence slip would give 1 + lambda
 * for Bloop and the barrier): two combiners that differ only in `rescale` see the same inputs,
 * so d_on = d_off / (1 + lambda) to within the rounding of s and of the product (3u < 2 ULP).
 * The EMA does not depend on s: both states stay bit-identical. */
BACKEND_TEST(rescale_divides_by_one_plus_lambda)
{
    typedef struct variant {
        bloopcl_method method;
        int ratio_only;
    } variant;
    static const variant variants[] = {
        {BLOOPCL_METHOD_BLOOP, 0}, {BLOOPCL_METHOD_DYNAMIC_BARRIER, 0},
        {BLOOPCL_METHOD_PCGRAD, 0}, {BLOOPCL_METHOD_MIXED, 0}, {BLOOPCL_METHOD_BLOOP, 1},
        {BLOOPCL_METHOD_DYNAMIC_BARRIER, 1}};
    static const double lambdas[] = {0.7, 3.0};
    static const size_t ns[] = {1, 1000, 65537};
    bloopcl_context *ctx = support_context();
    for (size_t k = 0; k < COUNT(ns); ++k) {
        size_t n = ns[k];
        float *g = support_alloc(n), *a = support_alloc(n);
        float *d_on = support_alloc(n), *d_off = support_alloc(n);
        for (size_t vi = 0; vi < COUNT(variants); ++vi)
            for (size_t li = 0; li < COUNT(lambdas); ++li) {
                bloopcl_config config = make_config(variants[vi].method, *dots, 0.3,
                                                    lambdas[li], 1e-7);
                config.ratio_only = variants[vi].ratio_only;
                bloopcl_combiner *off = support_combiner(ctx, &config, n);
                config.rescale = 1;
                bloopcl_combiner *on = support_combiner(ctx, &config, n);
                double one_plus = 1.0 + (double)(float)lambdas[li];
                for (int t = 0; t < 3; ++t) {
                    support_fill_normal(g, n, 2100 + 10 * n + (size_t)t, 1.0f);
                    aligned_aux(a, g, n, 2200 + 10 * n + (size_t)t, t == 1 ? -0.5f : 0.7f);
                    bloopcl_diagnostics diag_on = BLOOPCL_DIAGNOSTICS_INIT, diag_off = BLOOPCL_DIAGNOSTICS_INIT;
                    step(ctx, off, g, a, d_off, &diag_off);
                    step(ctx, on, g, a, d_on, &diag_on);
                    cr_expect_eq(diag_on.ratio, diag_off.ratio, "r does not depend on s");
                    tally tl;
                    tally_start(&tl, "%s %s ratio_only=%d n=%zu lambda=%g step %d: "
                                "d_on = d_off / (1 + lambda)", backend_name(*dots),
                                bloopcl_method_name(variants[vi].method),
                                variants[vi].ratio_only, n, lambdas[li], t);
                    for (size_t i = 0; i < n; ++i) {
                        double want = d_off[i] / one_plus;
                        tally_near(&tl, i, d_on[i], want, 2 * ULP * fabs(want) + 1e-37);
                    }
                    tally_end(&tl, n);
                }
                if (variants[vi].method != BLOOPCL_METHOD_MIXED) {
                    float *m_off = read_state(off, BLOOPCL_STATE_EMA, n);
                    support_expect_state(on, BLOOPCL_STATE_EMA, m_off, n);
                    free(m_off);
                }
                bloopcl_combiner_destroy(off);
                bloopcl_combiner_destroy(on);
            }
        free(g), free(a), free(d_on), free(d_off);
    }
    bloopcl_context_destroy(ctx);
}

/* With w < 1 the EMA is updated first and then used: with m (and q) the state read back after
 * the step,
 *   Bloop     r = <m,a>/(<m,m> + eps),            d = g + lambda (a - r m)
 *   barrier   r = min(that, 1/lambda)              (lambda = 2: clips in some steps)
 *   PCGrad    r = min(<m,a>/(<m,m> + eps), 0), r_q = min(<q,g>/(<q,q> + eps), 0),
 *             d = (g - r_q q) + lambda (a - r m)
 * computed here in double. m != g here, so this also tells m from g in the projection. */
BACKEND_TEST(projection_uses_updated_ema)
{
    static const size_t ns[] = {7, 1000, 65537};
    static const bloopcl_method methods[] = {BLOOPCL_METHOD_BLOOP,
                                             BLOOPCL_METHOD_DYNAMIC_BARRIER,
                                             BLOOPCL_METHOD_PCGRAD};
    const double eps = (float)1e-7;
    bloopcl_context *ctx = support_context();
    for (size_t k = 0; k < COUNT(ns); ++k) {
        size_t n = ns[k];
        float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
        float *base = support_alloc(n);
        support_fill_normal(base, n, 3700 + n, 1.0f);
        for (size_t mi = 0; mi < COUNT(methods); ++mi) {
            bloopcl_method method = methods[mi];
            bool pcgrad = method == BLOOPCL_METHOD_PCGRAD;
            double lambda = method == BLOOPCL_METHOD_DYNAMIC_BARRIER ? 2.0 : 0.4;
            double lf = (float)lambda, cap = (double)(1.0f / (float)lambda);
            bloopcl_config config = make_config(method, *dots, 0.2, lambda, 1e-7);
            bloopcl_combiner *comb = support_combiner(ctx, &config, n);
            int clipped = 0;
            for (int t = 0; t < 5; ++t) {
                /* g drifts around `base`; a alternates between agreeing and conflicting */
                support_fill_normal(g, n, 3800 + 10 * n + (size_t)t, 0.7f);
                for (size_t i = 0; i < n; ++i)
                    g[i] += base[i];
                aligned_aux(a, g, n, 3900 + 10 * n + (size_t)t, (t % 2) ? -0.9f : 0.6f);
                bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
                step(ctx, comb, g, a, d, &diag);
                float *m = read_state(comb, BLOOPCL_STATE_EMA, n);
                float *q = pcgrad ? read_state(comb, BLOOPCL_STATE_AUX_EMA, n) : NULL;
                double r_raw = dot_d(m, a, n) / (dot_d(m, m, n) + eps);
                double dr = ratio_tol(m, a, n, eps, r_raw);
                double r = r_raw, rq = 0.0, drq = 0.0;
                if (method == BLOOPCL_METHOD_DYNAMIC_BARRIER) {
                    cr_assert(fabs(r_raw - cap) > dr, "precondition: r_raw %.9g not at the cap",
                              r_raw);
                    r = r_raw > cap ? cap : r_raw;
                    clipped += r_raw > cap;
                    cr_expect_eq(diag.ratio, r_raw > cap ? cap : diag.ratio_raw,
                                 "barrier r = min(r_raw, 1/lambda)");
                }
                cr_expect(fabs(diag.ratio_raw - r_raw) <= dr, "%s %s n=%zu step %d: r_raw "
                          "%.9g closed form %.9g", backend_name(*dots),
                          bloopcl_method_name(method), n, t, diag.ratio_raw, r_raw);
                if (pcgrad) {
                    double rq_raw = dot_d(q, g, n) / (dot_d(q, q, n) + eps);
                    drq = ratio_tol(q, g, n, eps, rq_raw);
                    cr_expect(fabs(diag.aux_ratio - rq_raw) <= drq, "%s n=%zu step %d: r_q "
                              "%.9g closed form %.9g", backend_name(*dots), n, t,
                              diag.aux_ratio, rq_raw);
                    r = r_raw < 0.0 ? r_raw : 0.0;
                    rq = rq_raw < 0.0 ? rq_raw : 0.0;
                }
                tally tl;
                tally_start(&tl, "%s %s n=%zu step %d: d from the updated EMA",
                            backend_name(*dots), bloopcl_method_name(method), n, t);
                for (size_t i = 0; i < n; ++i) {
                    double gi = g[i], ai = a[i], mv = m[i], qi = q ? q[i] : 0.0;
                    double want = (gi - rq * qi) + lf * (ai - r * mv);
                    double tol = 8 * ULP * (fabs(gi) + fabs(rq * qi) +
                                            lf * (fabs(ai) + fabs(r * mv))) +
                                 lf * dr * fabs(mv) + drq * fabs(qi) + 1e-30;
                    tally_near(&tl, i, d[i], want, tol);
                }
                tally_end(&tl, n);
                free(m), free(q);
            }
            if (method == BLOOPCL_METHOD_DYNAMIC_BARRIER)
                cr_expect(clipped > 0 && clipped < 5, "%s n=%zu: the barrier clipped in %d of 5 "
                          "steps (want some, not all)", backend_name(*dots), n, clipped);
            bloopcl_combiner_destroy(comb);
        }
        free(g), free(a), free(d), free(base);
    }
    bloopcl_context_destroy(ctx);
}

/* Ratio-only: r from the EMA as in Bloop, r = <m,a>/(<m,m> + eps) (closed form from the state
 * read back), and d = (1 - lambda r) g + lambda a; for w = 1 m is g itself. */
BACKEND_TEST(ratio_only_scales_g)
{
    static const size_t ns[] = {7, 1000, 65537};
    static const double lambdas[] = {0.5, 3.0};
    static const double ws[] = {1.0, 0.3};
    const double eps = (float)1e-7;
    bloopcl_context *ctx = support_context();
    for (size_t k = 0; k < COUNT(ns); ++k) {
        size_t n = ns[k];
        float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
        for (size_t li = 0; li < COUNT(lambdas); ++li)
            for (size_t wi = 0; wi < COUNT(ws); ++wi) {
                bloopcl_config config = make_config(BLOOPCL_METHOD_BLOOP, *dots, ws[wi],
                                                    lambdas[li], 1e-7);
                config.ratio_only = 1;
                bloopcl_combiner *comb = support_combiner(ctx, &config, n);
                double lf = (float)lambdas[li];
                for (int t = 0; t < 3; ++t) {
                    support_fill_normal(g, n, 2300 + 10 * n + (size_t)t, 1.0f);
                    aligned_aux(a, g, n, 2400 + 10 * n + (size_t)t, t == 2 ? -0.4f : 0.6f);
                    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
                    step(ctx, comb, g, a, d, &diag);
                    float *m = read_state(comb, BLOOPCL_STATE_EMA, n);
                    double r = dot_d(m, a, n) / (dot_d(m, m, n) + eps);
                    double dr = ratio_tol(m, a, n, eps, r);
                    cr_expect(fabs(diag.ratio - r) <= dr, "%s n=%zu w=%g step %d: r %.9g "
                              "closed form %.9g", backend_name(*dots), n, ws[wi], t, diag.ratio,
                              r);
                    tally tl;
                    tally_start(&tl, "%s n=%zu lambda=%g w=%g step %d: d = (1 - lambda r) g + "
                                "lambda a", backend_name(*dots), n, lambdas[li], ws[wi], t);
                    for (size_t i = 0; i < n; ++i) {
                        double gi = g[i], ai = a[i];
                        double want = (1.0 - lf * r) * gi + lf * ai;
                        double tol = 6 * ULP * (fabs(gi) * (1.0 + lf * fabs(r)) + lf * fabs(ai)) +
                                     lf * dr * fabs(gi) + 1e-30;
                        tally_near(&tl, i, d[i], want, tol);
                    }
                    tally_end(&tl, n);
                    free(m);
                }
                bloopcl_combiner_destroy(comb);
            }
        free(g), free(a), free(d);
    }
    bloopcl_context_destroy(ctx);
}

/* Mixed: d = s (g + lambda a) at every step, whatever came before (no state: read_state
 * answers BLOOPCL_ERR_STATE for both kinds). Rounding of lf a, of the sum, of s (two) and of the
 * product: <= 5u = 2.5 ULP of s (|g| + lambda |a|). */
BACKEND_TEST(mixed_is_stateless_sum)
{
    static const double lambdas[] = {0.25, 2.0};
    bloopcl_context *ctx = support_context();
    for (size_t k = 0; k < COUNT(sizes); ++k) {
        size_t n = sizes[k];
        float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
        for (size_t li = 0; li < COUNT(lambdas); ++li)
            for (int rescale = 0; rescale <= 1; ++rescale) {
                bloopcl_config config = make_config(BLOOPCL_METHOD_MIXED, *dots, 0.1,
                                                    lambdas[li], 1e-7);
                config.rescale = rescale;
                bloopcl_combiner *comb = support_combiner(ctx, &config, n);
                double lf = (float)lambdas[li];
                double s = rescale ? 1.0 / (1.0 + lf) : 1.0;
                for (int t = 0; t < 3; ++t) {
                    support_fill_normal(g, n, 2500 + 10 * n + (size_t)t, 1.0f + (float)t);
                    aligned_aux(a, g, n, 2600 + 10 * n + (size_t)t, -0.3f);
                    step(ctx, comb, g, a, d, NULL);
                    tally tl;
                    tally_start(&tl, "%s n=%zu lambda=%g rescale=%d step %d: d = s (g + "
                                "lambda a)", backend_name(*dots), n, lambdas[li], rescale, t);
                    for (size_t i = 0; i < n; ++i) {
                        double gi = g[i], ai = a[i];
                        tally_near(&tl, i, d[i], s * (gi + lf * ai),
                                   3 * ULP * s * (fabs(gi) + lf * fabs(ai)) + 1e-37);
                    }
                    tally_end(&tl, n);
                }
                float *state = support_alloc(n);
                cr_expect_eq(bloopcl_read_state(comb, BLOOPCL_STATE_EMA, state, n),
                             BLOOPCL_ERR_STATE, "Mixed keeps no EMA");
                cr_expect_eq(bloopcl_read_state(comb, BLOOPCL_STATE_AUX_EMA, state, n),
                             BLOOPCL_ERR_STATE, "Mixed keeps no auxiliary EMA");
                free(state);
                bloopcl_combiner_destroy(comb);
            }
        free(g), free(a), free(d);
    }
    bloopcl_context_destroy(ctx);
}

/* ---------------------------------------------------------------------------------------------
 * Initialisation modes
 * ------------------------------------------------------------------------------------------- */

/* ZEROS: m_0 = 0 (all +0.0 bits), so the first step gives m_1 = fl(wf g) (q_1 = fl(wf a)). */
BACKEND_TEST(init_zeros)
{
    static const bloopcl_method methods[] = {BLOOPCL_METHOD_BLOOP, BLOOPCL_METHOD_PCGRAD};
    static const double ws[] = {0.1, 0.37};
    bloopcl_context *ctx = support_context();
    for (size_t k = 0; k < COUNT(sizes); ++k) {
        size_t n = sizes[k];
        float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
        float *zeros = support_alloc(n), *expected = support_alloc(n);
        support_fill_normal(g, n, 2700 + n, 1.0f);
        support_fill_normal(a, n, 2800 + n, 1.0f);
        for (size_t mi = 0; mi < COUNT(methods); ++mi)
            for (size_t wi = 0; wi < COUNT(ws); ++wi) {
                bool pcgrad = methods[mi] == BLOOPCL_METHOD_PCGRAD;
                bloopcl_config config = make_config(methods[mi], *dots, ws[wi], 0.1, 1e-7);
                bloopcl_combiner *comb = support_combiner(ctx, &config, n);
                support_expect_state(comb, BLOOPCL_STATE_EMA, zeros, n);
                if (pcgrad)
                    support_expect_state(comb, BLOOPCL_STATE_AUX_EMA, zeros, n);
                step(ctx, comb, g, a, d, NULL);
                float wf = (float)ws[wi];
                for (size_t i = 0; i < n; ++i)
                    expected[i] = wf * g[i];
                support_expect_state(comb, BLOOPCL_STATE_EMA, expected, n);
                if (pcgrad) {
                    for (size_t i = 0; i < n; ++i)
                        expected[i] = wf * a[i];
                    support_expect_state(comb, BLOOPCL_STATE_AUX_EMA, expected, n);
                }
                bloopcl_combiner_destroy(comb);
            }
        free(g), free(a), free(d), free(zeros), free(expected);
    }
    bloopcl_context_destroy(ctx);
}

/* FIRST_GRADIENT: no state before the first step (read_state: BLOOPCL_ERR_STATE); the first
 * step sets m = g (q = a) exactly even with w = 0.01, so r is the w = 1 projection ratio;
 * the second step is an ordinary EMA step m_2 = fl(m_1 + fl(wf fl(g_2 - m_1))). */
BACKEND_TEST(init_first_gradient)
{
    static const bloopcl_method methods[] = {BLOOPCL_METHOD_BLOOP, BLOOPCL_METHOD_PCGRAD};
    const double eps = (float)1e-7;
    bloopcl_context *ctx = support_context();
    for (size_t k = 0; k < COUNT(sizes); ++k) {
        size_t n = sizes[k];
        float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
        float *g2 = support_alloc(n), *a2 = support_alloc(n), *expected = support_alloc(n);
        support_fill_normal(g, n, 2900 + n, 1.0f);
        aligned_aux(a, g, n, 3000 + n, 0.5f);
        support_fill_normal(g2, n, 3100 + n, 1.0f);
        aligned_aux(a2, g2, n, 3200 + n, 0.5f);
        for (size_t mi = 0; mi < COUNT(methods); ++mi) {
            bool pcgrad = methods[mi] == BLOOPCL_METHOD_PCGRAD;
            bloopcl_config config = make_config(methods[mi], *dots, 0.01, 0.1, 1e-7);
            config.init = BLOOPCL_INIT_FIRST_GRADIENT;
            bloopcl_combiner *comb = support_combiner(ctx, &config, n);
            cr_expect_eq(bloopcl_read_state(comb, BLOOPCL_STATE_EMA, expected, n),
                         BLOOPCL_ERR_STATE, "no EMA before the first gradient");
            if (pcgrad)
                cr_expect_eq(bloopcl_read_state(comb, BLOOPCL_STATE_AUX_EMA, expected, n),
                             BLOOPCL_ERR_STATE, "no auxiliary EMA before the first gradient");
            bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
            step(ctx, comb, g, a, d, &diag);
            support_expect_state(comb, BLOOPCL_STATE_EMA, g, n);
            if (pcgrad)
                support_expect_state(comb, BLOOPCL_STATE_AUX_EMA, a, n);
            double r = dot_d(g, a, n) / (dot_d(g, g, n) + eps);
            cr_expect(fabs(diag.ratio - r) <= ratio_tol(g, a, n, eps, r),
                      "%s %s n=%zu: first-step r %.9g, want <g,a>/(S + eps) = %.9g",
                      backend_name(*dots), bloopcl_method_name(methods[mi]), n, diag.ratio, r);

            step(ctx, comb, g2, a2, d, NULL);
            float wf = (float)0.01;
            for (size_t i = 0; i < n; ++i) {
                float diff = g2[i] - g[i];
                float inc = wf * diff;
                expected[i] = g[i] + inc;
            }
            support_expect_state(comb, BLOOPCL_STATE_EMA, expected, n);
            if (pcgrad) {
                for (size_t i = 0; i < n; ++i) {
                    float diff = a2[i] - a[i];
                    float inc = wf * diff;
                    expected[i] = a[i] + inc;
                }
                support_expect_state(comb, BLOOPCL_STATE_AUX_EMA, expected, n);
            }
            bloopcl_combiner_destroy(comb);
        }
        free(g), free(a), free(d), free(g2), free(a2), free(expected);
    }
    bloopcl_context_destroy(ctx);
}

/* RANDOM: the state before any step is element i of the N(0,1) stream `seed`
 * (bloopcl_reference_normal), bit for bit; PCGrad's q draws from stream
 * seed ^ 0x5851F42D4C957F2D. Same seed -> same state, different seed -> different state.
 * The stream itself must look like N(0,1): for 65537 draws the sample mean is within 0.03 of
 * 0 and the variance within 0.04 of 1 (about 8 and 5 standard errors). */
BACKEND_TEST(init_random)
{
    static const uint64_t seeds[] = {0, 1, 0xDEADBEEFCAFEull};
    bloopcl_context *ctx = support_context();
    for (size_t k = 0; k < COUNT(sizes); ++k) {
        size_t n = sizes[k];
        float *stream = support_alloc(n), *stream_aux = support_alloc(n);
        for (size_t si = 0; si < COUNT(seeds); ++si) {
            bloopcl_config config = make_config(BLOOPCL_METHOD_PCGRAD, *dots, 0.1, 0.1, 1e-7);
            config.init = BLOOPCL_INIT_RANDOM;
            config.seed = seeds[si];
            bloopcl_combiner *comb = support_combiner(ctx, &config, n);
            bloopcl_reference_normal(seeds[si], 0, n, stream);
            bloopcl_reference_normal(seeds[si] ^ AUX_STREAM_XOR, 0, n, stream_aux);
            support_expect_state(comb, BLOOPCL_STATE_EMA, stream, n);
            support_expect_state(comb, BLOOPCL_STATE_AUX_EMA, stream_aux, n);

            config.method = BLOOPCL_METHOD_BLOOP;  /* same seed, other method: same m */
            bloopcl_combiner *same = support_combiner(ctx, &config, n);
            support_expect_state(same, BLOOPCL_STATE_EMA, stream, n);

            config.seed = seeds[si] + 1000;  /* another seed: (almost) every element differs */
            bloopcl_combiner *other = support_combiner(ctx, &config, n);
            float *m_other = read_state(other, BLOOPCL_STATE_EMA, n);
            size_t equal = 0, equal_aux = 0;
            for (size_t i = 0; i < n; ++i) {
                equal += memcmp(&m_other[i], &stream[i], sizeof(float)) == 0;
                equal_aux += memcmp(&stream_aux[i], &stream[i], sizeof(float)) == 0;
            }
            cr_expect(equal * 1000 <= n, "seed %llu vs %llu: %zu of %zu elements equal",
                      (unsigned long long)seeds[si], (unsigned long long)config.seed, equal, n);
            cr_expect(equal_aux * 1000 <= n, "m and q streams: %zu of %zu elements equal",
                      equal_aux, n);
            free(m_other);

            if (n >= 65536) {
                double mean = 0.0, var = 0.0;
                for (size_t i = 0; i < n; ++i)
                    mean += stream[i];
                mean /= (double)n;
                for (size_t i = 0; i < n; ++i)
                    var += (stream[i] - mean) * (stream[i] - mean);
                var /= (double)(n - 1);
                cr_expect(fabs(mean) < 0.03 && fabs(var - 1.0) < 0.04,
                          "seed %llu: mean %.4f variance %.4f", (unsigned long long)seeds[si],
                          mean, var);
            }
            bloopcl_combiner_destroy(comb);
            bloopcl_combiner_destroy(same);
            bloopcl_combiner_destroy(other);
        }
        free(stream), free(stream_aux);
    }
    bloopcl_context_destroy(ctx);
}

/* BUFFER: the state is a copy of initial_ema (and initial_aux_ema for PCGrad) taken at
 * creation, bit for bit (the caller's arrays may change afterwards); the first step is an
 * ordinary EMA step m_1 = fl(m_0 + fl(wf fl(g - m_0))). */
BACKEND_TEST(init_buffer)
{
    static const bloopcl_method methods[] = {BLOOPCL_METHOD_BLOOP, BLOOPCL_METHOD_PCGRAD};
    bloopcl_context *ctx = support_context();
    for (size_t k = 0; k < COUNT(sizes); ++k) {
        size_t n = sizes[k];
        float *m0 = support_alloc(n), *q0 = support_alloc(n), *m0_copy = support_alloc(n);
        float *q0_copy = support_alloc(n), *g = support_alloc(n), *a = support_alloc(n);
        float *d = support_alloc(n), *expected = support_alloc(n);
        support_fill_normal(m0, n, 3300 + n, 2.0f);
        support_fill_normal(q0, n, 3400 + n, 3.0f);
        support_fill_normal(g, n, 3500 + n, 1.0f);
        support_fill_normal(a, n, 3600 + n, 1.0f);
        memcpy(m0_copy, m0, n * sizeof *m0);
        memcpy(q0_copy, q0, n * sizeof *q0);
        for (size_t mi = 0; mi < COUNT(methods); ++mi) {
            bool pcgrad = methods[mi] == BLOOPCL_METHOD_PCGRAD;
            bloopcl_config config = make_config(methods[mi], *dots, 0.25, 0.1, 1e-7);
            config.init = BLOOPCL_INIT_BUFFER;
            config.initial_ema = m0;
            config.initial_aux_ema = pcgrad ? q0 : NULL;
            bloopcl_combiner *comb = support_combiner(ctx, &config, n);
            for (size_t i = 0; i < n; ++i)
                m0[i] = q0[i] = -1.0f;  /* the caller reuses its arrays */
            support_expect_state(comb, BLOOPCL_STATE_EMA, m0_copy, n);
            if (pcgrad)
                support_expect_state(comb, BLOOPCL_STATE_AUX_EMA, q0_copy, n);
            step(ctx, comb, g, a, d, NULL);
            float wf = 0.25f;
            for (size_t i = 0; i < n; ++i) {
                float diff = g[i] - m0_copy[i];
                float inc = wf * diff;
                expected[i] = m0_copy[i] + inc;
            }
            support_expect_state(comb, BLOOPCL_STATE_EMA, expected, n);
            if (pcgrad) {
                for (size_t i = 0; i < n; ++i) {
                    float diff = a[i] - q0_copy[i];
                    float inc = wf * diff;
                    expected[i] = q0_copy[i] + inc;
                }
                support_expect_state(comb, BLOOPCL_STATE_AUX_EMA, expected, n);
            }
            memcpy(m0, m0_copy, n * sizeof *m0);
            memcpy(q0, q0_copy, n * sizeof *q0);
            bloopcl_combiner_destroy(comb);
        }
        free(m0), free(q0), free(m0_copy), free(q0_copy), free(g), free(a), free(d);
        free(expected);
    }
    bloopcl_context_destroy(ctx);
}

/* ---------------------------------------------------------------------------------------------
 * the rescale factor, correctly rounded
 * ------------------------------------------------------------------------------------------- */

/* Mixed with rescale, g = 1 and a = 0: d = s (1 + lambda 0) = s exactly. s = 1/(1+lambda) is
 * divided in double and rounded once: at lambda = 0.1 that is 0x1.d1745ep-1, where the same
 * division in float (1.0f / (1.0f + 0.1f)) gives 0x1.d1745cp-1, one ulp below (ml-bloop's
 * outputs showed the difference). Other lambdas: the double quotient rounded to float. */
BACKEND_TEST(rescale_factor_is_correctly_rounded)
{
    static const double lambdas[] = {0.1, 0.3, 1.0 / 3.0, 7.0};
    const size_t n = 33;
    bloopcl_context *ctx = support_context();
    float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
    for (size_t i = 0; i < n; ++i)
        g[i] = 1.0f, a[i] = 0.0f;
    for (size_t li = 0; li < COUNT(lambdas); ++li) {
        bloopcl_config config = make_config(BLOOPCL_METHOD_MIXED, *dots, 0.1, lambdas[li], 0.0);
        config.rescale = 1;
        bloopcl_combiner *comb = support_combiner(ctx, &config, n);
        step(ctx, comb, g, a, d, NULL);
        float s = li == 0 ? 0x1.d1745ep-1f : (float)(1.0 / (1.0 + lambdas[li]));
        for (size_t i = 0; i < n; ++i)
            cr_expect_eq(d[i], s, "%s lambda=%.17g: d[%zu] = %a, want s = %a",
                         backend_name(*dots), lambdas[li], i, d[i], s);
        bloopcl_combiner_destroy(comb);
    }
    free(g), free(a), free(d);
    bloopcl_context_destroy(ctx);
}
