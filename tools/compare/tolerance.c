/* tolerance.c — the error bounds of bloopcl-compare; each formula is derived in
 * tools/COMPARE.md ("Tolerances"), whose section numbers the comments cite. */
#include "tolerance.h"

#include <float.h>
#include <math.h>

double gamma_k(double k, double unit)
{
    double ku = k * unit;
    return ku < 1.0 ? ku / (1.0 - ku) : INFINITY;
}

/* 2(c): valid while k u <= 2. */
double kahan_bound(double k)
{
    return k * U_F32 <= 2.0 ? 6.0 * U_F32 + 8.0 * k * U_F32 * U_F32 : INFINITY;
}

double compose(double a, double b)
{
    return a + b + a * b;
}

/* The library's finalize kernel: Kahan over the partials, then a tree. */
static double finalize_bound(const fp_model *fp)
{
    return compose(kahan_bound(MAX_PARTIALS), gamma_k(fp->tree_depth, U_F32));
}

/* 2, fused backend: the product, a plain block sum of FUSED_BLOCK terms per lane, Kahan over
 * one work-item's blocks, the work-group tree, then the finalize kernel. */
double fused_dot_bound(size_t n, const fp_model *fp)
{
    double per_item = compose(compose(U_F32, gamma_k(FUSED_BLOCK - 1, U_F32)),
                              kahan_bound((double)n));
    double per_group = compose(per_item, gamma_k(fp->tree_depth, U_F32));
    return compose(per_group, finalize_bound(fp));
}

/* 2, CLBlast backend: chains of k <= ceil(n / (2 WGS1 WGS2)) with the smallest groups, the
 * group tree (<= 10) and the epilogue (1 + 10), then the finalize kernel. */
double clblast_dot_bound(size_t n, const fp_model *fp)
{
    double chain = ceil((double)n / (2.0 * CLBLAST_MIN_WGS * CLBLAST_MIN_WGS));
    double xdot = gamma_k(chain + CLBLAST_MAX_DEPTH + 1.0 + CLBLAST_MAX_DEPTH, U_F32);
    return compose(xdot, finalize_bound(fp));
}

double device_dot_bound(bloopcl_dot_backend backend, size_t n, const fp_model *fp)
{
    return backend == BLOOPCL_DOTS_FUSED ? fused_dot_bound(n, fp) : clblast_dot_bound(n, fp);
}

/* 2, reference: double, exact products, sequential sum. */
double reference_dot_bound(size_t n)
{
    return gamma_k((double)n, U_F64);
}

void sum_magnitudes(const float *x, const float *y, size_t n, dot_terms *dot)
{
    double s = 0.0, o = 0.0;
    for (size_t i = 0; i < n; ++i) {
        s += fabs((double)x[i] * (double)y[i]);
        o += fabs((double)x[i]) + fabs((double)y[i]);
    }
    double up = 1.0 + 2.0 * gamma_k((double)n, U_F64);
    dot->abs_sum = s * up;
    dot->operand_sum = o * up;
}

/* 2, underflow: alpha. */
static double dot_underflow(size_t n, const dot_terms *dot, const fp_model *fp)
{
    if (fp->denormals)
        return 2.0 * (double)n * ETA_GRADUAL;
    return 2.0 * ETA_FTZ * (dot->operand_sum + 6.0 * (double)n);
}

void dot_bounds(dot_terms *dot, double beta, size_t n, const fp_model *fp)
{
    dot->error = beta * dot->abs_sum + dot_underflow(n, dot, fp);
    dot->reference_error = reference_dot_bound(n) * dot->abs_sum;
}

bool dot_may_overflow(const dot_terms *dot, double beta)
{
    return isfinite(dot->abs_sum) && dot->abs_sum * (1.0 + beta) >= FLT_MAX;
}

/* 3: the error of the computed denominator fl(M^ + eps), for a dot error e_m. */
static double denominator_error(double d_high, double e_m, double unit)
{
    return e_m + unit * (d_high + e_m);
}

double quotient_error(double r_max, double d_low, double d_high, double e_n, double e_m,
                      double unit, double eta)
{
    double e_d = denominator_error(d_high, e_m, unit);
    double low = d_low - e_d;
    if (!(low > 0.0))
        return INFINITY;
    double e1 = (e_n + r_max * e_d) / low;
    return e1 + unit * (r_max + e1) + eta;
}

ratio_bound ratio_error(const dot_terms *num, const dot_terms *den, double eps, double beta,
                        const fp_model *fp)
{
    ratio_bound rb = {0};
    double n_max = fabs(num->reference) + num->reference_error;
    double d_low = den->reference - den->reference_error + eps;
    double d_high = den->reference + den->reference_error + eps;
    double eta = fp->denormals ? ETA_GRADUAL : ETA_FTZ;
    rb.magnitude = d_low > 0.0 ? n_max / d_low : INFINITY;
    double device = quotient_error(rb.magnitude, d_low, d_high, num->error, den->error, U_F32,
                                   eta);
    double reference = quotient_error(rb.magnitude, d_low, d_high, num->reference_error,
                                      den->reference_error, U_F64, 0.0);
    rb.bound = device + reference;
    /* fp32 cannot tell the denominator from zero, though the reference's is positive. */
    rb.underflow = den->reference + eps > 0.0 &&
                   !(d_low - denominator_error(d_high, den->error, U_F32) > 0.0);
    rb.overflow = dot_may_overflow(num, beta) || dot_may_overflow(den, beta) ||
                  (isfinite(rb.magnitude) && isfinite(rb.bound) &&
                   rb.magnitude + rb.bound >= FLT_MAX);
    return rb;
}

/* |x - y| that is 0 for two equal infinities. */
static double difference(double x, double y)
{
    return x == y ? 0.0 : fabs(x - y);
}

static double min_zero(double x)
{
    return x > 0.0 ? 0.0 : x;   /* propagates NaN, like the kernels */
}

void direction_model_init(direction_model *dm, const bloopcl_config *config, double r_dev,
                          double r_ref, double q_dev, double q_ref, const ratio_bound *r,
                          const ratio_bound *r_aux, const fp_model *fp)
{
    bool pcgrad = config->method == BLOOPCL_METHOD_PCGRAD;
    float lambda = (float)config->lambda;
    *dm = (direction_model){.method = config->method, .ratio_only = config->ratio_only != 0,
                            .lambda = lambda,
                            /* s = 1/(1 + lambda) divided in double, rounded once to
                             * float, as the device and the reference take it */
                            .s = config->rescale ? (double)(float)(1.0 / (1.0 + config->lambda))
                                                 : 1.0};
    dm->r_dev = pcgrad ? min_zero(r_dev) : r_dev;
    dm->r_ref = pcgrad ? min_zero(r_ref) : r_ref;
    dm->q_dev = pcgrad ? min_zero(q_dev) : 0.0;
    dm->q_ref = pcgrad ? min_zero(q_ref) : 0.0;
    dm->dr = difference(dm->r_dev, dm->r_ref) * (1.0 + 4.0 * U_F64);
    dm->dq = difference(dm->q_dev, dm->q_ref) * (1.0 + 4.0 * U_F64);
    dm->r_max = r->magnitude + r->bound;
    dm->q_max = pcgrad ? r_aux->magnitude + r_aux->bound : 0.0;
    dm->gamma_dev = gamma_k(LEAF_ROUNDINGS, U_F32);
    dm->gamma_ref = gamma_k(LEAF_ROUNDINGS, U_F64);
    dm->eta = fp->denormals ? ETA_GRADUAL : ETA_FTZ;
}

/* 4: L, the sum of the magnitudes of d's leaf terms, for ratios of magnitude r and rq. */
static double leaf_sum(const direction_model *dm, double g, double a, double m, double q,
                       double r, double rq)
{
    g = fabs(g), a = fabs(a), m = fabs(m), q = fabs(q), r = fabs(r), rq = fabs(rq);
    if (dm->method == BLOOPCL_METHOD_MIXED)
        return dm->s * (g + dm->lambda * a);
    if (dm->method == BLOOPCL_METHOD_PCGRAD)
        return dm->s * (g + rq * q + dm->lambda * (a + r * m));
    if (dm->ratio_only)
        return dm->s * (g * (1.0 + dm->lambda * r) + dm->lambda * a);
    return dm->s * (g + dm->lambda * (a + r * m));
}

/* 4: |d(r_dev) - d(r_ref)|: d is linear in r. */
static double sensitivity(const direction_model *dm, double g, double m, double q)
{
    if (dm->method == BLOOPCL_METHOD_MIXED)
        return 0.0;
    if (dm->method == BLOOPCL_METHOD_PCGRAD)
        return dm->s * (fabs(q) * dm->dq + dm->lambda * fabs(m) * dm->dr);
    return dm->s * dm->lambda * fabs(dm->ratio_only ? g : m) * dm->dr;
}

double direction_tolerance(const direction_model *dm, double g, double a, double m, double q,
                           float d_ref)
{
    double r = fmax(fabs(dm->r_dev), fabs(dm->r_ref)), rq = fmax(fabs(dm->q_dev), fabs(dm->q_ref));
    double leaves = leaf_sum(dm, g, a, m, q, r, rq);
    double underflow = 8.0 * dm->eta * (1.0 + dm->lambda) * (1.0 + r + rq) + ETA_GRADUAL;
    double tol = sensitivity(dm, g, m, q) + (dm->gamma_dev + dm->gamma_ref) * leaves +
                 U_F32 / (1.0 - U_F32) * fabs((double)d_ref) + underflow;
    return isfinite(tol) ? tol : 0.0;   /* no finite bound: require an exact match */
}

/* 6: every intermediate of d is bounded by the leaf magnitudes before the final scaling by
 * s (s <= 1), i.e. by L / s. */
bool direction_may_overflow(const direction_model *dm, double g, double a, double m, double q)
{
    double unscaled = leaf_sum(dm, g, a, m, q, dm->r_max, dm->q_max) / dm->s;
    return isfinite(unscaled) && unscaled * (1.0 + dm->gamma_dev) >= FLT_MAX;
}

/* 4(b): the unit roundoff and the largest absolute rounding error below the normal range
 * (half the subnormal spacing) of rounding to nearest into a type; 0 for f32, which the bound
 * above already covers. */
static double narrowing_unit(bloopcl_dtype dtype)
{
    return dtype == BLOOPCL_DTYPE_F16 ? 0x1p-11 : dtype == BLOOPCL_DTYPE_BF16 ? 0x1p-8 : 0.0;
}

static double narrowing_eta(bloopcl_dtype dtype)
{
    return dtype == BLOOPCL_DTYPE_F16 ? 0x1p-25 : dtype == BLOOPCL_DTYPE_BF16 ? 0x1p-134 : 0.0;
}

double typed_direction_tolerance(const direction_model *dm, bloopcl_dtype dtype, double g,
                                 double a, double m, double q, float d_ref)
{
    double u = narrowing_unit(dtype), eta = narrowing_eta(dtype);
    if (u == 0.0)
        return direction_tolerance(dm, g, a, m, q, d_ref);
    /* y: the reference's fp32 d before its narrowing, |y| <= (|rd(y)| + eta) / (1 - u). */
    double y = (fabs((double)d_ref) + eta) / (1.0 - u);
    double t = direction_tolerance(dm, g, a, m, q, nextafterf((float)y, INFINITY));
    /* |rd(x) - rd(y)| <= |x - y| + u (|x| + |y|) + 2 eta, |x| <= |y| + t */
    double tol = t + u * (2.0 * y + t) + 2.0 * eta;
    return isfinite(tol) ? tol : 0.0;
}
