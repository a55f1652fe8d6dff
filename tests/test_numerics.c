/* test_numerics.c — finite inputs at the edges of fp32 (issue 15, item 10).
 *
 * A step on finite g and a must never return OK, accepted, with a NaN in d. The dots of a
 * step are sums of products: with |x| ~ 1.8e19 the products reach FLT_MAX, with |x| below
 * ~1e-19 they fall into the subnormals and with eps = 0 r would be 0/0. The contract checked
 * here, case by case over a grid of magnitudes (1e-45 .. FLT_MAX, g and a alike or one huge
 * and one tiny) x eps (0, default) x every method x both backends, against the CPU reference
 * (double accumulation, the truth):
 *   - either the step is accepted and matches the reference: r within the bound of the dot
 *     products, every dot within its bound (or the same infinity where the true value is
 *     beyond FLT_MAX), every d_i within its bound (or the same infinity where the true d_i is
 *     beyond FLT_MAX: IEEE overflow, as the reference rounds it), the state bit for bit;
 *   - or it is skipped as out of range: status BLOOPCL_ERR_OUT_OF_RANGE, accepted = 0, d = 0,
 *     the state unchanged, BLOOPCL_SKIP_OUT_OF_RANGE in the output buffer and diagnostics.
 * Never accepted with a NaN in d, and never an infinity in d that the reference does not have.
 * The tolerances are those of tests/support.c, with the absolute floors scaled to fp32's own
 * granularity (2^-149 per product) rather than fixed, so the tiny end of the grid is checked
 * as strictly as the middle. The test prints how many hard cases (a dot whose products or
 * sums leave fp32's normal range) were rescued and how many reported. */
#include "support.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))
#define N 4099                      /* several work-items and groups, and vector tails */
#define U ((double)FLT_EPSILON / 2) /* unit roundoff */
#define TRUE_MIN 0x1p-149           /* the smallest subnormal float */
#define OVERFLOW_THRESHOLD 0x1.ffffffp127 /* FLT_MAX + half an ulp: rounds to infinity */

typedef struct variant {
    bloopcl_method method;
    int ratio_only;
    const char *name;
} variant;

static const variant variants[] = {
    {BLOOPCL_METHOD_BLOOP, 0, "bloop"},
    {BLOOPCL_METHOD_BLOOP, 1, "bloop-ratio-only"},
    {BLOOPCL_METHOD_DYNAMIC_BARRIER, 0, "dynamic-barrier"},
    {BLOOPCL_METHOD_PCGRAD, 0, "pcgrad"},
    {BLOOPCL_METHOD_MIXED, 0, "mixed"},
};

/* max |g_i| and max |a_i|; `uniform` sets every element of both to +magnitude. */
typedef struct magnitudes {
    float g, a;
    int uniform;
} magnitudes;

static const magnitudes grid[] = {
    {1.0f, 1.0f, 0},         {1e-10f, 1e-10f, 0},     {1e-19f, 1e-19f, 0},
    {1e-20f, 1e-20f, 0},     {1e-30f, 1e-30f, 0},     {FLT_MIN, FLT_MIN, 0},
    {1e-40f, 1e-40f, 0},     {0x1p-140f, 0x1p-140f, 0}, {1e10f, 1e10f, 0},
    {1e19f, 1e19f, 0},       {1.8e19f, 1.8e19f, 0},   {2e19f, 2e19f, 0},
    {1e30f, 1e30f, 0},       {FLT_MAX, FLT_MAX, 0},   {FLT_MAX, FLT_MAX, 1},
    {1e30f, 1e-30f, 0},      {1e-30f, 1e30f, 0},      {FLT_MAX, 1e-38f, 0},
    {1e-38f, FLT_MAX, 0},    {1e19f, 1e-19f, 0},      {1e-3f, 1e-40f, 0},
    {1.0f, 0.0f, 0},         {0.0f, 1.0f, 0},         {0.0f, 0.0f, 0},
};

static const double epss[] = {0.0, 1e-7};

typedef struct tally {
    int cases, normal, rescued, reported, failed;
} tally;

/* x_i in [-1, 1] (max |x_i| = 1): an N(0,1) stream divided by its largest magnitude. */
static void fill_unit(float *x, size_t n, uint64_t seed)
{
    support_fill_normal(x, n, seed, 1.0f);
    float top = 0.0f;
    for (size_t i = 0; i < n; ++i)
        top = fmaxf(top, fabsf(x[i]));
    for (size_t i = 0; i < n; ++i)
        x[i] /= top;
}

/* g of magnitude mg; a = ma (g/mg + y)/2, partly aligned with g so that r is far from 0. */
static void make_inputs(const magnitudes *m, float *g, float *a, float *scratch, uint64_t seed)
{
    if (m->uniform) {
        for (size_t i = 0; i < N; ++i)
            g[i] = m->g, a[i] = m->a;
        return;
    }
    fill_unit(scratch, N, seed);
    for (size_t i = 0; i < N; ++i)
        g[i] = m->g * scratch[i];
    float *y = support_alloc(N);
    fill_unit(y, N, seed + 7);
    for (size_t i = 0; i < N; ++i)
        a[i] = m->a * (0.5f * scratch[i] + 0.5f * y[i]);
    free(y);
}

static double abs_dot(const float *x, const float *y)
{
    double sum = 0.0;
    for (size_t i = 0; x != NULL && y != NULL && i < N; ++i)
        sum += fabs((double)x[i] * (double)y[i]);
    return sum;
}

/* A dot with abs-sum S: RTOL S (support.h) and the rounding of the result to fp32 where it is
 * subnormal. No floor for the products' underflow: a dot whose true value fp32 represents
 * must come out as accurate at 1e-30 as at 1. */
static double dot_tolerance(double abs_sum)
{
    return SUPPORT_DOT_RTOL * abs_sum + TRUE_MIN;
}

/* |device - reference| within tol, or the same infinity where the true value lies beyond
 * FLT_MAX; one side infinite and the other finite only where that one is within tol of the
 * overflow threshold (a rounding either way). */
static bool agrees(double device, double reference, double tol)
{
    if (isnan(device) || isnan(reference))
        return false;
    bool device_over = isinf(device), reference_over = fabs(reference) >= OVERFLOW_THRESHOLD;
    if (!device_over && !reference_over)
        return fabs(device - reference) <= tol;
    if (device_over && reference_over)
        return (device > 0) == (reference > 0);
    double finite = device_over ? reference : device, infinite = device_over ? device : reference;
    return (infinite > 0) == (finite > 0) && fabs(finite) + tol >= OVERFLOW_THRESHOLD;
}

/* r = x / (y + eps) from dots with the bounds above: as support.c's ratio_tolerance. */
static double ratio_tolerance(double r, double abs_xy, double yy, double eps)
{
    double denominator = yy + eps;
    if (denominator <= 0.0)
        return TRUE_MIN;  /* m = 0 exactly: r = 0 */
    return (dot_tolerance(abs_xy) + fabs(r) * dot_tolerance(yy)) / denominator +
           8 * FLT_EPSILON * fabs(r) + TRUE_MIN;
}

typedef struct step_result {
    bloopcl_status status;
    bloopcl_diagnostics diag;
    float *d, *m, *q;  /* the state after the step (NULL: the method keeps none) */
} step_result;

/* Compares an accepted device step with the reference; returns the number of mismatches
 * (reported through cr_expect, at most a few per case). */
static int compare_accepted(const char *label, const bloopcl_config *config, const float *g,
                            const float *a, const step_result *dev, const float *d_ref,
                            const bloopcl_diagnostics *ref, const bloopcl_reference_state *rs)
{
    int bad = 0;
    const float *m = rs->ema, *q = rs->aux_ema;
    double eps = (float)config->eps, lambda = (float)config->lambda;
    double s = config->rescale ? 1.0 / (1.0 + lambda) : 1.0;
    double abs_ma = abs_dot(m, a), abs_qg = abs_dot(q, g);
    struct {
        const char *name;
        double device, reference, abs_sum;
        bool used;
    } dots[] = {
        {"<m,a>", dev->diag.dot_ema_aux, ref->dot_ema_aux, abs_ma, m != NULL},
        {"<m,m>", dev->diag.ema_norm_sq, ref->ema_norm_sq, ref->ema_norm_sq, m != NULL},
        {"<a,a>", dev->diag.aux_norm_sq, ref->aux_norm_sq, ref->aux_norm_sq, m != NULL},
        {"<q,g>", dev->diag.dot_aux_ema_main, ref->dot_aux_ema_main, abs_qg, q != NULL},
        {"<q,q>", dev->diag.aux_ema_norm_sq, ref->aux_ema_norm_sq, ref->aux_ema_norm_sq,
         q != NULL},
        {"<g,g>", dev->diag.grad_norm_sq, ref->grad_norm_sq, ref->grad_norm_sq, true},
    };
    for (size_t k = 0; k < COUNT(dots); ++k) {
        if (!dots[k].used)
            continue;
        double tol = dot_tolerance(dots[k].abs_sum);
        bool ok = agrees(dots[k].device, dots[k].reference, tol);
        cr_expect(ok, "%s: %s device %.9g reference %.9g (tol %.3g)", label, dots[k].name,
                  dots[k].device, dots[k].reference, tol);
        bad += !ok;
    }
    double dr = m ? ratio_tolerance(ref->ratio_raw, abs_ma, ref->ema_norm_sq, eps) : 0.0;
    double dr_q = q ? ratio_tolerance(ref->aux_ratio, abs_qg, ref->aux_ema_norm_sq, eps) : 0.0;
    if (m != NULL) {
        bool ok = agrees(dev->diag.ratio, ref->ratio, dr);
        cr_expect(ok, "%s: r device %.9g reference %.9g (tol %.3g)", label, dev->diag.ratio,
                  ref->ratio, dr);
        bad += !ok;
    }
    if (q != NULL) {
        bool ok = agrees(dev->diag.aux_ratio, ref->aux_ratio, dr_q);
        cr_expect(ok, "%s: r_q device %.9g reference %.9g (tol %.3g)", label,
                  dev->diag.aux_ratio, ref->aux_ratio, dr_q);
        bad += !ok;
    }
    int reported = 0;
    size_t mismatched = 0;
    for (size_t i = 0; i < N; ++i) {
        double mi = m ? fabs(m[i]) : 0.0, qi = q ? fabs(q[i]) : 0.0;
        double gi = fabs(g[i]), ai = fabs(a[i]), r = fabs(ref->ratio), rq = fabs(ref->aux_ratio);
        double terms = gi + lambda * ai + lambda * r * mi + rq * qi + lambda * r * gi;
        double tol = s * (8 * FLT_EPSILON * terms + (m ? lambda * dr * (mi + gi) : 0.0) +
                          (q ? dr_q * qi : 0.0)) + 8 * TRUE_MIN;
        bool ok = !isnan(dev->d[i]) && agrees(dev->d[i], d_ref[i], tol);
        if (!ok && reported++ < 3)
            cr_expect_fail("%s: d[%zu] device %.9g reference %.9g (tol %.3g)", label, i,
                           dev->d[i], d_ref[i], tol);
        mismatched += !ok;
    }
    bad += mismatched != 0;
    if (m != NULL && memcmp(dev->m, m, N * sizeof *m) != 0) {
        cr_expect_fail("%s: the EMA differs from the reference's", label);
        ++bad;
    }
    if (q != NULL && memcmp(dev->q, q, N * sizeof *q) != 0) {
        cr_expect_fail("%s: the aux EMA differs from the reference's", label);
        ++bad;
    }
    return bad;
}

/* One device step from a fresh combiner (init ZEROS) on host arrays. */
static step_result device_step(bloopcl_context *ctx, const bloopcl_config *config,
                               const float *g, const float *a)
{
    step_result res = {.d = support_alloc(N)};
    bloopcl_combiner *comb = support_combiner(ctx, config, N);
    res.status = bloopcl_step_host(comb, g, a, res.d);
    cr_assert_eq(bloopcl_get_diagnostics(comb, &res.diag), BLOOPCL_OK);
    if (config->method != BLOOPCL_METHOD_MIXED) {
        res.m = support_alloc(N);
        cr_assert_eq(bloopcl_read_state(comb, BLOOPCL_STATE_EMA, res.m, N), BLOOPCL_OK);
    }
    if (config->method == BLOOPCL_METHOD_PCGRAD) {
        res.q = support_alloc(N);
        cr_assert_eq(bloopcl_read_state(comb, BLOOPCL_STATE_AUX_EMA, res.q, N), BLOOPCL_OK);
    }
    bloopcl_combiner_destroy(comb);
    return res;
}

/* Hard: some dot's products or sums leave fp32's normal range (S beyond FLT_MAX / 4, or
 * nonzero and below 2^-100, where products fall into the subnormals). */
static bool hard_case(const float *g, const float *a, const bloopcl_reference_state *rs)
{
    const float *pairs[][2] = {{rs->ema, a}, {rs->ema, rs->ema}, {a, a}, {rs->aux_ema, g},
                               {rs->aux_ema, rs->aux_ema}, {g, g}};
    for (size_t k = 0; k < COUNT(pairs); ++k) {
        double s = abs_dot(pairs[k][0], pairs[k][1]);
        if (s >= FLT_MAX / 4.0 || (s > 0.0 && s < 0x1p-100))
            return true;
    }
    return false;
}

static void check_case(bloopcl_context *ctx, const bloopcl_config *config, const float *g,
                       const float *a, const char *label, tally *t)
{
    bloopcl_reference_state rs;
    cr_assert_eq(bloopcl_reference_init(config, N, &rs), BLOOPCL_OK);
    float *d_ref = support_alloc(N);
    bloopcl_diagnostics ref;
    cr_assert_eq(bloopcl_reference_step(config, &rs, g, a, d_ref, &ref), BLOOPCL_OK,
                 "%s: the reference takes every finite step", label);
    step_result dev = device_step(ctx, config, g, a);
    ++t->cases;
    bool hard = hard_case(g, a, &rs);
    size_t nan_in_d = 0;
    for (size_t i = 0; i < N; ++i)
        nan_in_d += isnan(dev.d[i]);
    if (dev.status == BLOOPCL_OK && dev.diag.accepted) {
        cr_expect_eq(nan_in_d, 0, "%s: status OK, accepted, and %zu NaN in d (reference r "
                     "%.9g, d[0] %.9g)", label, nan_in_d, ref.ratio, d_ref[0]);
        int bad = compare_accepted(label, config, g, a, &dev, d_ref, &ref, &rs);
        if (bad != 0 || nan_in_d != 0)
            ++t->failed;
        else if (hard)
            ++t->rescued;
        else
            ++t->normal;
    } else {
        cr_expect_fail("%s: step skipped (status %s, accepted %d) on finite inputs", label,
                       bloopcl_status_string(dev.status), dev.diag.accepted);
        ++t->failed;
    }
    free(dev.d), free(dev.m), free(dev.q), free(d_ref);
    bloopcl_reference_free(&rs);
}

static void run_grid(bloopcl_dot_backend dots)
{
    bloopcl_context *ctx = support_context();
    float *g = support_alloc(N), *a = support_alloc(N), *scratch = support_alloc(N);
    tally t = {0};
    for (size_t k = 0; k < COUNT(grid); ++k) {
        make_inputs(&grid[k], g, a, scratch, 1000 + k);
        for (size_t e = 0; e < COUNT(epss); ++e)
            for (size_t v = 0; v < COUNT(variants); ++v) {
                bloopcl_config config;
                bloopcl_config_default(&config, variants[v].method);
                config.ratio_only = variants[v].ratio_only;
                config.eps = epss[e];
                config.dots = dots;
                char label[160];
                snprintf(label, sizeof label, "%s %s |g| %.3g |a| %.3g%s eps %g",
                         dots == BLOOPCL_DOTS_FUSED ? "fused" : "clblast", variants[v].name,
                         (double)grid[k].g, (double)grid[k].a,
                         grid[k].uniform ? " (all equal)" : "", epss[e]);
                check_case(ctx, &config, g, a, label, &t);
            }
    }
    cr_log_info("%s: %d cases: %d normal, %d hard rescued, %d reported (skipped), %d failed",
                dots == BLOOPCL_DOTS_FUSED ? "fused" : "clblast", t.cases, t.normal, t.rescued,
                t.reported, t.failed);
    cr_expect_eq(t.failed, 0, "%d of %d cases failed (%d normal, %d rescued, %d reported)",
                 t.failed, t.cases, t.normal, t.rescued, t.reported);
    free(g), free(a), free(scratch);
    bloopcl_context_destroy(ctx);
}

Test(numerics, fused_grid, .timeout = 600)
{
    run_grid(BLOOPCL_DOTS_FUSED);
}

Test(numerics, clblast_grid, .timeout = 600)
{
    run_grid(BLOOPCL_DOTS_CLBLAST);
}
