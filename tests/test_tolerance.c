/* test_tolerance.c — bloopcl-compare's error bounds (tools/compare/tolerance.c, derived in
 * tools/COMPARE.md) against brute force: each summation structure the bounds describe is
 * carried out in fp32 on crafted inputs (rounding ties that lose the most at every addition,
 * sorted and reversed orders, cancellation) and its error measured against an exact sum
 * (double-double). Every bound must hold, and where the input is crafted to lose the most, the
 * measured error must reach a stated fraction of the bound: a bound that is valid but absurdly
 * loose would let a wrong device pass. */
#include "tolerance.h"

#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define U 0x1p-24f
#define PARTIAL_LIMIT 4096

static const fp_model POCL = {.denormals = true, .tree_depth = 12.0};

/* ---------------------------------------------------------------------------------------------
 * Exact references and fp32 summations
 * ------------------------------------------------------------------------------------------- */
/* sum x_i y_i in double-double (TwoSum on exact double products): exact to ~2^-100 S. */
static double exact_dot(const float *x, const float *y, size_t n)
{
    double hi = 0.0, lo = 0.0;
    for (size_t i = 0; i < n; ++i) {
        double p = (double)x[i] * (double)y[i];   /* exact: 24 + 24 bits */
        double s = hi + p, v = s - hi;
        lo += (hi - (s - v)) + (p - v);
        hi = s;
    }
    return hi + lo;
}

static double abs_dot(const float *x, const float *y, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; ++i)
        s += fabs((double)x[i] * (double)y[i]);
    return s;
}

/* Kahan's compensated sum in fp32, as cl/common.cl writes it. */
typedef struct kahan {
    float s, c;
} kahan;

static void kahan_add(kahan *k, float x)
{
    float y = x - k->c;
    float t = k->s + y;
    k->c = (t - k->s) - y;
    k->s = t;
}

/* A pairwise tree over values[0..count) in fp32 (count a power of two). */
static float tree_sum(float *values, size_t count)
{
    for (size_t width = count; width > 1; width /= 2)
        for (size_t i = 0; i < width / 2; ++i)
            values[i] = values[i] + values[i + width / 2];
    return values[0];
}

/* The fused backend's structure (COMPARE.md 2, fused): `items` work-items with contiguous
 * chunks; in each, 16 lanes take every 16th product, plain sums of FUSED_BLOCK consecutive
 * lane terms, Kahan over the blocks, a tree over the lanes; then Kahan over the items'
 * partials and a (trivial) tree. */
static float fused_structure(const float *x, const float *y, size_t n, size_t items)
{
    enum { LANES = 16 };
    float partial[PARTIAL_LIMIT];
    size_t chunk = (n + items - 1) / items;
    for (size_t w = 0; w < items; ++w) {
        size_t begin = w * chunk < n ? w * chunk : n, end = begin + chunk < n ? begin + chunk : n;
        float lanes[LANES];
        for (size_t lane = 0; lane < LANES; ++lane) {
            kahan k = {0.0f, 0.0f};
            size_t count = 0;
            float block = 0.0f;
            for (size_t i = begin + lane; i < end; i += LANES) {
                block = block + x[i] * y[i];
                if (++count % FUSED_BLOCK == 0) {
                    kahan_add(&k, block);
                    block = 0.0f;
                }
            }
            kahan_add(&k, block);
            lanes[lane] = k.s;
        }
        partial[w] = tree_sum(lanes, LANES);
    }
    kahan k = {0.0f, 0.0f};
    for (size_t w = 0; w < items; ++w)
        kahan_add(&k, partial[w]);
    return k.s;
}

/* CLBlast's Xdot with the smallest groups (WGS1 = WGS2 = 32, COMPARE.md 2, CLBlast): 2048
 * strided chains acc += x y, a tree of 32 per group, the epilogue's pairs and tree of 32, then
 * the finalize kernel over the one partial. */
static float clblast_structure(const float *x, const float *y, size_t n)
{
    enum { WGS = 32, ITEMS = 2 * WGS * WGS };
    static float acc[ITEMS];
    for (size_t k = 0; k < ITEMS; ++k) {
        acc[k] = 0.0f;
        for (size_t i = k; i < n; i += ITEMS)
            acc[k] = acc[k] + x[i] * y[i];
    }
    float groups[2 * WGS];
    for (size_t g = 0; g < 2 * WGS; ++g)
        groups[g] = tree_sum(acc + g * WGS, WGS);
    float pairs[WGS];
    for (size_t i = 0; i < WGS; ++i)
        pairs[i] = groups[i] + groups[i + WGS];
    kahan k = {0.0f, 0.0f};
    kahan_add(&k, tree_sum(pairs, WGS));
    return k.s;
}

/* ---------------------------------------------------------------------------------------------
 * Crafted inputs (y = 1 unless said: the products are the x)
 * ------------------------------------------------------------------------------------------- */
typedef enum order { ORDER_AS_MADE, ORDER_ASCENDING, ORDER_DESCENDING } order;

static int by_magnitude(const void *a, const void *b)
{
    float x = fabsf(*(const float *)a), y = fabsf(*(const float *)b);
    return (x > y) - (x < y);
}

static void arrange(float *x, size_t n, order how)
{
    if (how == ORDER_AS_MADE)
        return;
    qsort(x, n, sizeof *x, by_magnitude);
    if (how == ORDER_DESCENDING)
        for (size_t i = 0; i < n / 2; ++i) {
            float t = x[i];
            x[i] = x[n - 1 - i];
            x[n - 1 - i] = t;
        }
}

/* 1 where `is_head(i)`, else u = 2^-24: adding u to a partial sum in [1, 2) is an exact tie
 * that rounds to even, i.e. down: every such addition loses all of u. */
static void ties(float *x, size_t n, size_t period, size_t stride)
{
    for (size_t i = 0; i < n; ++i)
        x[i] = (i / stride) % period == 0 ? 1.0f : U;
}

static float *floats(size_t n, float value)
{
    float *x = malloc(n * sizeof *x);
    cr_assert_not_null(x);
    for (size_t i = 0; i < n; ++i)
        x[i] = value;
    return x;
}

static void normal_floats(float *x, size_t n, unsigned seed)
{
    srand(seed);
    for (size_t i = 0; i < n; ++i) {
        double u1 = (rand() + 1.0) / (RAND_MAX + 2.0), u2 = (rand() + 1.0) / (RAND_MAX + 2.0);
        x[i] = (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
    }
}

/* Alternating signs with a small remainder: the exact sum is tiny against S. */
static void cancelling(float *x, size_t n)
{
    normal_floats(x, n, 7);
    for (size_t i = 0; i + 1 < n; i += 2)
        x[i + 1] = -x[i] * (1.0f + 3.0f * U);
}

/* ---------------------------------------------------------------------------------------------
 * Tests
 * ------------------------------------------------------------------------------------------- */
Test(tolerance, gamma_is_reached_by_a_recursive_sum_of_ties)
{
    size_t k = 4096;
    float *x = floats(k + 1, U);
    x[0] = 1.0f;
    float s = 0.0f;
    for (size_t i = 0; i <= k; ++i)
        s = s + x[i];
    double S = 1.0 + (double)k * U, error = fabs((double)s - S);
    cr_assert_float_eq(s, 1.0f, 0.0, "every tie must round down to 1");
    cr_assert_leq(error, gamma_k((double)k, U_F32) * S);
    cr_assert_geq(error, 0.99 * gamma_k((double)k, U_F32) * S / (1.0 + k * U_F32),
                  "gamma_k is the error of k lost ties: error %g, gamma_k S %g", error,
                  gamma_k((double)k, U_F32) * S);
    cr_assert(isinf(gamma_k(1 << 24, U_F32)), "k u >= 1 has no bound");
    free(x);
}

Test(tolerance, kahan_bound_holds_in_every_order_and_is_within_8x_of_a_tie)
{
    size_t n = 100003;
    float *x = malloc(n * sizeof *x), *one = floats(n, 1.0f);
    cr_assert_not_null(x);
    for (int input = 0; input < 3; ++input)
        for (order how = ORDER_AS_MADE; how <= ORDER_DESCENDING; ++how) {
            if (input == 0)
                ties(x, n, 97, 1);
            else if (input == 1)
                normal_floats(x, n, 3);
            else
                cancelling(x, n);
            arrange(x, n, how);
            kahan k = {0.0f, 0.0f};
            for (size_t i = 0; i < n; ++i)
                kahan_add(&k, x[i]);
            double error = fabs((double)k.s - exact_dot(x, one, n));
            double bound = kahan_bound((double)n) * abs_dot(x, one, n);
            cr_assert_leq(error, bound, "input %d order %d: error %g > K(n) S = %g", input,
                          (int)how, error, bound);
        }
    /* {1, u}: the compensation cannot save the final rounding: error u S / (1 + u). */
    float pair[2] = {1.0f, U};
    kahan k = {0.0f, 0.0f};
    kahan_add(&k, pair[0]);
    kahan_add(&k, pair[1]);
    double S = 1.0 + U_F32, error = fabs((double)k.s - S);
    cr_assert_geq(error, kahan_bound(2.0) * S / 8.0, "K(2) = %g is more than 8x the error %g",
                  kahan_bound(2.0), error / S);
    cr_assert(isinf(kahan_bound(3.0 / U_F32)), "K(k) needs k u <= 2");
    free(x);
    free(one);
}

Test(tolerance, fused_bound_holds_and_a_block_of_ties_reaches_a_sixth_of_it)
{
    size_t n = 16 * FUSED_BLOCK * 1024;
    float *x = malloc(n * sizeof *x), *one = floats(n, 1.0f);
    cr_assert_not_null(x);
    double beta = fused_dot_bound(n, &POCL);
    cr_assert(beta > 40 * U_F32 && beta < 48 * U_F32, "beta_fused at n = %zu: %g u", n,
              beta / U_F32);
    double worst = 0.0;
    for (int input = 0; input < 3; ++input)
        for (order how = ORDER_AS_MADE; how <= ORDER_DESCENDING; ++how)
            for (size_t items = 1; items <= 64; items *= 8) {
                if (input == 0)
                    ties(x, n, FUSED_BLOCK, 16);   /* each lane's block: 1 then 7 ties */
                else if (input == 1)
                    normal_floats(x, n, 5);
                else
                    cancelling(x, n);
                arrange(x, n, how);
                double S = abs_dot(x, one, n);
                double error = fabs((double)fused_structure(x, one, n, items) -
                                    exact_dot(x, one, n));
                cr_assert_leq(error, beta * S, "input %d order %d items %zu: %g > %g", input,
                              (int)how, items, error, beta * S);
                if (input == 0 && how == ORDER_AS_MADE)
                    worst = fmax(worst, error / (beta * S));
            }
    cr_assert_geq(worst, 1.0 / 7.0, "the 7 ties of a block lose 7u: %g of beta", worst);
    free(x);
    free(one);
}

Test(tolerance, clblast_bound_holds_and_chains_of_ties_reach_half_of_it)
{
    size_t chain = 64, n = 2048 * chain;
    float *x = malloc(n * sizeof *x), *one = floats(n, 1.0f);
    cr_assert_not_null(x);
    double beta = clblast_dot_bound(n, &POCL);
    double worst = 0.0;
    for (int input = 0; input < 3; ++input)
        for (order how = ORDER_AS_MADE; how <= ORDER_DESCENDING; ++how) {
            if (input == 0)
                ties(x, n, chain, 2048);   /* each chain: 1 first, then chain - 1 ties */
            else if (input == 1)
                normal_floats(x, n, 11);
            else
                cancelling(x, n);
            arrange(x, n, how);
            double S = abs_dot(x, one, n);
            double error = fabs((double)clblast_structure(x, one, n) - exact_dot(x, one, n));
            cr_assert_leq(error, beta * S, "input %d order %d: %g > %g", input, (int)how, error,
                          beta * S);
            if (input == 0 && how == ORDER_AS_MADE)
                worst = error / (beta * S);
        }
    cr_assert_geq(worst, 0.5, "chains of %zu ties lose %zu u each: only %g of beta", chain,
                  chain - 1, worst);
    cr_assert(clblast_dot_bound(16777217, &POCL) < 5e-4, "COMPARE.md: ~4.9e-4 at 2^24+1");
    free(x);
    free(one);
}

Test(tolerance, products_and_squares_stay_within_their_dot_bounds)
{
    size_t n = 65537;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    cr_assert(x && y);
    normal_floats(x, n, 13);
    normal_floats(y, n, 17);
    dot_terms dot = {0};
    sum_magnitudes(x, y, n, &dot);
    dot_bounds(&dot, fused_dot_bound(n, &POCL), n, &POCL);
    double error = fabs((double)fused_structure(x, y, n, 64) - exact_dot(x, y, n));
    cr_assert_leq(error, dot.error, "<x,y>: %g > %g", error, dot.error);
    cr_assert_geq(dot.abs_sum, abs_dot(x, y, n), "S is rounded up");
    cr_assert(!dot_may_overflow(&dot, 1e-3));
    dot.abs_sum = FLT_MAX;
    cr_assert(dot_may_overflow(&dot, 1e-3), "S at FLT_MAX may overflow fp32");
    free(x);
    free(y);
}

/* fl(N^ / fl(M^ + eps)) at the corners of the dot errors against N / (M + eps). */
Test(tolerance, ratio_bound_holds_at_the_corners_of_the_dot_errors)
{
    const double cases[][3] = {{0.75, 2.0, 1e-7}, {-3.0, 0.5, 1e-7}, {1e-3, 1e-6, 0.0},
                               {123.0, 7.0, 1e-7}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
        double N = cases[c][0], M = cases[c][1], eps = (double)(float)cases[c][2];
        double e_n = 50 * U_F32 * fabs(N), e_m = 50 * U_F32 * M, D = M + eps;
        double bound = quotient_error(fabs(N) / D, D, D, e_n, e_m, U_F32, 0.0);
        double worst = 0.0;
        for (int sn = -1; sn <= 1; sn += 2)
            for (int sm = -1; sm <= 1; sm += 2) {
                float n_hat = (float)(N + sn * e_n), m_hat = (float)(M + sm * e_m);
                float r = n_hat / (m_hat + (float)eps);
                worst = fmax(worst, fabs((double)r - N / D));
            }
        cr_assert_leq(worst, bound, "case %zu: %g > %g", c, worst, bound);
        cr_assert_geq(worst, bound / 4.0, "case %zu: bound %g is > 4x the worst corner %g", c,
                      bound, worst);
    }
    cr_assert(isinf(quotient_error(1.0, 1e-9, 1e-9, 0.0, 2e-9, U_F32, 0.0)),
              "a denominator within its error of 0 has no bound");
}

Test(tolerance, ratio_error_reports_underflow_and_overflow)
{
    dot_terms num = {.reference = 1e-40, .abs_sum = 1e-40},
              den = {.reference = 1e-44, .abs_sum = 1e-44};
    dot_bounds(&num, fused_dot_bound(1000, &POCL), 1000, &POCL);
    dot_bounds(&den, fused_dot_bound(1000, &POCL), 1000, &POCL);
    ratio_bound rb = ratio_error(&num, &den, 0.0, fused_dot_bound(1000, &POCL), &POCL);
    cr_assert(rb.underflow, "<m,m> ~ 1e-44 with eps = 0 is within fp32's error of 0");
    dot_terms big = {.reference = 1e38, .abs_sum = FLT_MAX};
    dot_terms unit = {.reference = 1.0, .abs_sum = 1.0};
    dot_bounds(&big, 1e-6, 10, &POCL);
    dot_bounds(&unit, 1e-6, 10, &POCL);
    rb = ratio_error(&big, &unit, 1e-7, 1e-6, &POCL);
    cr_assert(rb.overflow && !rb.underflow, "S = FLT_MAX may overflow fp32");
}

/* d = s (g + lambda (a - r m)) in fp32 with the device's r, against the reference's d (double,
 * rounded to fp32) with its r: within the tolerance; and a projection that used another r than
 * the one reported (r (1 + 1e-4)) is caught. */
Test(tolerance, direction_tolerance_holds_and_catches_an_unreported_r)
{
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    config.lambda = 0.5;
    config.rescale = 1;
    ratio_bound r = {.bound = 1e-6, .magnitude = 0.8};
    double r_ref = 0.7, r_dev = (double)(float)(r_ref * (1.0 + 3e-7));
    direction_model dm;
    direction_model_init(&dm, &config, r_dev, r_ref, 0.0, 0.0, &r, &r, &POCL);
    size_t n = 4096, caught = 0;
    float *v = malloc(3 * n * sizeof *v);
    cr_assert_not_null(v);
    normal_floats(v, 3 * n, 19);
    float lambda = 0.5f, s = 1.0f / (1.0f + lambda);
    for (size_t i = 0; i < n; ++i) {
        float g = v[i], a = v[n + i], m = v[2 * n + i];
        float d_ref = (float)((double)s * (g + 0.5 * (a - r_ref * m)));
        float d_dev = s * (g + lambda * (a - (float)r_dev * m));
        float d_wrong = s * (g + lambda * (a - (float)(r_dev * 1.0001) * m));
        double tol = direction_tolerance(&dm, g, a, m, 0.0, d_ref);
        cr_assert_leq(fabs((double)d_dev - d_ref), tol, "d[%zu]: %g > %g", i,
                      fabs((double)d_dev - d_ref), tol);
        caught += fabs((double)d_wrong - d_ref) > tol;
    }
    cr_assert_geq(caught, n * 9 / 10, "a projection with r (1 + 1e-4) passes at %zu of %zu",
                  n - caught, n);
    free(v);
}
