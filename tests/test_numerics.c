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
 *     the state unchanged, BLOOPCL_SKIP_OUT_OF_RANGE in the diagnostics; on the fused backend
 *     only where the reference's r (as d uses it) is beyond FLT_MAX, on CLBlast (which cannot
 *     rescale its dots) only in a hard case.
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
    step_result res = {.d = support_alloc(N), .diag = BLOOPCL_DIAGNOSTICS_INIT};
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
 * nonzero and below 2^-100, where products fall into the subnormals), or a dot that r depends
 * on is nonzero and below 2^-100 (x 1.001: fp32's rounding), or <m,m> + eps is 0. */
static bool hard_case(const bloopcl_config *config, const float *g, const float *a,
                      const bloopcl_reference_state *rs, const bloopcl_diagnostics *ref)
{
    double eps = (float)config->eps;
    const double used[][2] = {{ref->dot_ema_aux, ref->ema_norm_sq},
                              {ref->dot_aux_ema_main, ref->aux_ema_norm_sq}};
    const bool present[] = {rs->ema != NULL, rs->aux_ema != NULL};
    for (size_t k = 0; k < COUNT(used); ++k)
        for (size_t j = 0; present[k] && j < 2; ++j)
            if ((used[k][j] != 0.0 && fabs(used[k][j]) < 0x1p-100 * 1.001) ||
                used[k][1] + eps == 0.0)
                return true;
    const float *pairs[][2] = {{rs->ema, a}, {rs->ema, rs->ema}, {a, a}, {rs->aux_ema, g},
                               {rs->aux_ema, rs->aux_ema}, {g, g}};
    for (size_t k = 0; k < COUNT(pairs); ++k) {
        double s = abs_dot(pairs[k][0], pairs[k][1]);
        if (s >= FLT_MAX / 4.0 || (s > 0.0 && s < 0x1p-100))
            return true;
    }
    return false;
}

/* The used coefficient of d (PCGrad: min(r, 0), min(r_q, 0)) beyond FLT_MAX in the reference. */
static bool coefficient_beyond_fp32(const bloopcl_config *config, const bloopcl_diagnostics *ref)
{
    double r = ref->ratio, r_q = ref->aux_ratio;
    if (config->method == BLOOPCL_METHOD_PCGRAD) {
        r = r < 0.0 ? r : 0.0;
        r_q = r_q < 0.0 ? r_q : 0.0;
    }
    if (config->method == BLOOPCL_METHOD_MIXED)
        return false;
    return fabs(r) >= FLT_MAX * (1.0 - 1e-4) || fabs(r_q) >= FLT_MAX * (1.0 - 1e-4);
}

/* A skipped step on finite inputs must be a report: BLOOPCL_ERR_OUT_OF_RANGE, the reason in
 * the diagnostics, d = 0 and the state as it was (zeros: a fresh combiner, init ZEROS). The
 * fused backend may report only a coefficient the reference finds beyond FLT_MAX; CLBlast only
 * a hard case (never a step on normal data). */
static bool check_reported(const char *label, const bloopcl_config *config,
                           const step_result *dev, const bloopcl_diagnostics *ref, bool hard)
{
    bool fused = config->dots == BLOOPCL_DOTS_FUSED;
    bool allowed = fused ? coefficient_beyond_fp32(config, ref) : hard;
    size_t nonzero_d = 0, nonzero_state = 0;
    for (size_t i = 0; i < N; ++i) {
        nonzero_d += dev->d[i] != 0.0f;
        nonzero_state += (dev->m && dev->m[i] != 0.0f) + (dev->q && dev->q[i] != 0.0f);
    }
    bool ok = allowed && dev->status == BLOOPCL_ERR_OUT_OF_RANGE && !dev->diag.accepted &&
              dev->diag.reason == BLOOPCL_SKIP_OUT_OF_RANGE && nonzero_d == 0 &&
              nonzero_state == 0;
    cr_expect(ok, "%s: skipped (status %s, accepted %d, reason %d, %zu nonzero d, %zu nonzero "
              "state) where the reference has r %.9g r_q %.9g (%s)", label,
              bloopcl_status_string(dev->status), dev->diag.accepted, dev->diag.reason,
              nonzero_d, nonzero_state, ref->ratio, ref->aux_ratio,
              allowed ? "a report is allowed" : "a report is not allowed: rescue expected");
    return ok;
}

static void check_case(bloopcl_context *ctx, const bloopcl_config *config, const float *g,
                       const float *a, const char *label, tally *t)
{
    bloopcl_reference_state rs;
    cr_assert_eq(bloopcl_reference_init(config, N, &rs), BLOOPCL_OK);
    float *d_ref = support_alloc(N);
    bloopcl_diagnostics ref = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_reference_step(config, &rs, g, a, d_ref, &ref), BLOOPCL_OK,
                 "%s: the reference takes every finite step", label);
    step_result dev = device_step(ctx, config, g, a);
    ++t->cases;
    bool hard = hard_case(config, g, a, &rs, &ref);
    size_t nan_in_d = 0;
    for (size_t i = 0; i < N; ++i)
        nan_in_d += isnan(dev.d[i]);
    if (dev.status == BLOOPCL_OK && dev.diag.accepted) {
        cr_expect_eq(dev.diag.reason, BLOOPCL_SKIP_NONE, "%s: accepted with reason %d", label,
                     dev.diag.reason);
        cr_expect_eq(nan_in_d, 0, "%s: status OK, accepted, and %zu NaN in d (reference r "
                     "%.9g, d[0] %.9g)", label, nan_in_d, ref.ratio, d_ref[0]);
        int bad = compare_accepted(label, config, g, a, &dev, d_ref, &ref, &rs);
        if (bad != 0 || nan_in_d != 0)
            ++t->failed;
        else if (hard)
            ++t->rescued;
        else
            ++t->normal;
    } else if (check_reported(label, config, &dev, &ref, hard)) {
        ++t->reported;
    } else {
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

/* ---------------------------------------------------------------------------------------------
 * Exact scaling: with eps = 0 a step is invariant under g, a -> 2^k g, 2^k a (r the same, d,
 * m times 2^k, every rounding the same) as long as nothing leaves the normal range. The rescue
 * keeps that true beyond it: at 2^-70 (products 2^-140, subnormal) and 2^70 (products 2^140,
 * beyond FLT_MAX) the fused backend must give r bit for bit as at scale 1, and d and the state
 * exactly 2^k times those of scale 1, which are the plain path's (the path of every normal
 * step, unchanged). At 2^-20 and 2^20 both backends stay on the plain path: the same holds.
 * ------------------------------------------------------------------------------------------- */
typedef struct scaled_run {
    float r, r_q;
    float *d, *m, *q;
} scaled_run;

static scaled_run run_scaled(bloopcl_context *ctx, const bloopcl_config *config, const float *g0,
                             const float *a0, int k)
{
    float *g = support_alloc(N), *a = support_alloc(N);
    for (size_t i = 0; i < N; ++i)
        g[i] = ldexpf(g0[i], k), a[i] = ldexpf(a0[i], k);
    step_result res = device_step(ctx, config, g, a);
    cr_assert_eq(res.status, BLOOPCL_OK, "scale 2^%d: %s", k, bloopcl_context_last_error(ctx));
    cr_assert(res.diag.accepted && res.diag.reason == BLOOPCL_SKIP_NONE, "scale 2^%d", k);
    free(g), free(a);
    return (scaled_run){(float)res.diag.ratio, (float)res.diag.aux_ratio, res.d, res.m, res.q};
}

static size_t differ_scaled(const float *x, const float *base, int k)
{
    size_t differ = 0;
    for (size_t i = 0; x != NULL && i < N; ++i) {
        float want = ldexpf(base[i], k);
        differ += memcmp(&x[i], &want, sizeof want) != 0;
    }
    return differ;
}

static void expect_scaling(bloopcl_dot_backend dots, const int *shifts, size_t count)
{
    bloopcl_context *ctx = support_context();
    float *g = support_alloc(N), *a = support_alloc(N), *noise = support_alloc(N);
    support_make_inputs(g, a, noise, N, 77, 0);
    for (size_t v = 0; v < COUNT(variants); ++v) {
        bloopcl_config config;
        bloopcl_config_default(&config, variants[v].method);
        config.ratio_only = variants[v].ratio_only;
        config.eps = 0.0;
        config.dots = dots;
        scaled_run base = run_scaled(ctx, &config, g, a, 0);
        for (size_t j = 0; j < count; ++j) {
            int k = shifts[j];
            scaled_run run = run_scaled(ctx, &config, g, a, k);
            cr_expect(memcmp(&run.r, &base.r, sizeof run.r) == 0 &&
                      memcmp(&run.r_q, &base.r_q, sizeof run.r_q) == 0,
                      "%s scale 2^%d: r %.9g r_q %.9g, at scale 1 %.9g %.9g", variants[v].name,
                      k, run.r, run.r_q, base.r, base.r_q);
            size_t dd = differ_scaled(run.d, base.d, k), dm = differ_scaled(run.m, base.m, k);
            size_t dq = differ_scaled(run.q, base.q, k);
            cr_expect(dd == 0 && dm == 0 && dq == 0, "%s scale 2^%d: %zu d, %zu m, %zu q not "
                      "2^k times scale 1's", variants[v].name, k, dd, dm, dq);
            free(run.d), free(run.m), free(run.q);
        }
        free(base.d), free(base.m), free(base.q);
    }
    free(g), free(a), free(noise);
    bloopcl_context_destroy(ctx);
}

Test(numerics, fused_rescue_is_exact_scaling, .timeout = 300)
{
    static const int shifts[] = {-70, -20, 20, 70};
    expect_scaling(BLOOPCL_DOTS_FUSED, shifts, COUNT(shifts));
}

Test(numerics, clblast_normal_range_is_exact_scaling, .timeout = 300)
{
    static const int shifts[] = {-20, 20};
    expect_scaling(BLOOPCL_DOTS_CLBLAST, shifts, COUNT(shifts));
}

/* ---------------------------------------------------------------------------------------------
 * Policies: m = 0 exactly with eps = 0. SKIP takes r = 0 on the fused backend (d = g + lambda
 * a, bit for bit what MIXED gives) and the reference agrees; CLBlast cannot tell m = 0 from
 * underflow and reports. PROPAGATE keeps IEEE's NaN (test_closed_forms) and says so in the
 * reason, accepted. A NaN input under SKIP gives reason 1, with its own status.
 * ------------------------------------------------------------------------------------------- */
Test(numerics, zero_ema_without_eps, .timeout = 120)
{
    bloopcl_context *ctx = support_context();
    float *g = support_alloc(N), *a = support_alloc(N), *d_ref = support_alloc(N);
    support_fill_normal(a, N, 5, 1.0f);
    memset(g, 0, N * sizeof *g);
    static const bloopcl_dot_backend backends[] = {BLOOPCL_DOTS_FUSED, BLOOPCL_DOTS_CLBLAST};
    for (size_t b = 0; b < COUNT(backends); ++b)
        for (size_t v = 0; v < COUNT(variants); ++v) {
            if (variants[v].method == BLOOPCL_METHOD_MIXED)
                continue;
            bloopcl_config config;
            bloopcl_config_default(&config, variants[v].method);
            config.ratio_only = variants[v].ratio_only;
            config.eps = 0.0;
            config.dots = backends[b];
            const char *name = variants[v].name;
            step_result skip = device_step(ctx, &config, g, a);
            if (backends[b] == BLOOPCL_DOTS_FUSED) {
                cr_expect(skip.status == BLOOPCL_OK && skip.diag.accepted &&
                          skip.diag.ratio == 0.0 && skip.diag.reason == BLOOPCL_SKIP_NONE,
                          "fused %s: status %d accepted %d r %g reason %d", name, skip.status,
                          skip.diag.accepted, skip.diag.ratio, skip.diag.reason);
                bloopcl_reference_state rs;
                bloopcl_diagnostics ref = BLOOPCL_DIAGNOSTICS_INIT;
                cr_assert_eq(bloopcl_reference_init(&config, N, &rs), BLOOPCL_OK);
                cr_assert_eq(bloopcl_reference_step(&config, &rs, g, a, d_ref, &ref), BLOOPCL_OK);
                cr_expect(ref.ratio == 0.0, "reference %s: r %g", name, ref.ratio);
                bloopcl_reference_free(&rs);
                cr_expect(memcmp(skip.d, d_ref, N * sizeof *d_ref) == 0,
                          "fused %s: d = lambda a bit for bit, as the reference", name);
            } else {
                cr_expect(skip.status == BLOOPCL_ERR_OUT_OF_RANGE && !skip.diag.accepted &&
                          skip.diag.reason == BLOOPCL_SKIP_OUT_OF_RANGE,
                          "clblast %s: status %d accepted %d reason %d", name, skip.status,
                          skip.diag.accepted, skip.diag.reason);
            }
            free(skip.d), free(skip.m), free(skip.q);

            config.nonfinite = BLOOPCL_NONFINITE_PROPAGATE;
            step_result prop = device_step(ctx, &config, g, a);
            cr_expect(prop.status == BLOOPCL_OK && prop.diag.accepted &&
                      isnan(prop.diag.ratio) && prop.diag.reason == BLOOPCL_SKIP_OUT_OF_RANGE,
                      "%s propagate: status %d accepted %d r %g reason %d", name, prop.status,
                      prop.diag.accepted, prop.diag.ratio, prop.diag.reason);
            free(prop.d), free(prop.m), free(prop.q);

            config.nonfinite = BLOOPCL_NONFINITE_SKIP;
            a[7] = NAN;
            step_result bad = device_step(ctx, &config, g, a);
            a[7] = 1.0f;
            cr_expect(bad.status == BLOOPCL_ERR_NONFINITE_INPUT && !bad.diag.accepted &&
                      bad.diag.reason == BLOOPCL_SKIP_NONFINITE_INPUT,
                      "%s NaN input: status %d accepted %d reason %d", name, bad.status,
                      bad.diag.accepted, bad.diag.reason);
            free(bad.d), free(bad.m), free(bad.q);
        }
    free(g), free(a), free(d_ref);
    bloopcl_context_destroy(ctx);
}

/* The output buffer carries the reason for the trainer's own kernels. */
Test(numerics, reason_in_output_buffer, .timeout = 120)
{
    bloopcl_context *ctx = support_context();
    float *g = support_alloc(N), *a = support_alloc(N), *d = support_alloc(N);
    for (size_t i = 0; i < N; ++i)
        g[i] = 1e-30f, a[i] = 1e30f;  /* r ~ 1e60 with eps = 0: beyond fp32 on both backends */
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    config.eps = 0.0;
    static const bloopcl_dot_backend backends[] = {BLOOPCL_DOTS_FUSED, BLOOPCL_DOTS_CLBLAST};
    for (size_t b = 0; b < COUNT(backends); ++b) {
        config.dots = backends[b];
        bloopcl_combiner *comb = support_combiner(ctx, &config, N);
        cr_expect_eq(bloopcl_step_host(comb, g, a, d), BLOOPCL_ERR_OUT_OF_RANGE);
        cl_mem outputs = NULL;
        cr_assert_eq(bloopcl_combiner_outputs(comb, &outputs), BLOOPCL_OK);
        float out[BLOOPCL_NUM_OUTPUTS];
        support_read(ctx, outputs, out, BLOOPCL_NUM_OUTPUTS);
        cr_expect(out[BLOOPCL_OUTPUT_ACCEPTED] == 0.0f &&
                  out[BLOOPCL_OUTPUT_REASON] == (float)BLOOPCL_SKIP_OUT_OF_RANGE,
                  "backend %d: accepted %g reason %g", (int)backends[b],
                  out[BLOOPCL_OUTPUT_ACCEPTED], out[BLOOPCL_OUTPUT_REASON]);
        bloopcl_combiner_destroy(comb);
    }
    free(g), free(a), free(d);
    bloopcl_context_destroy(ctx);
}
