/* tolerance.h — bloopcl-compare's error model: how far a device's dot products, ratio r and
 * direction d may lie from the CPU reference's. Every formula is derived in tools/COMPARE.md,
 * section "Tolerances" (cited below as COMPARE.md 2(c) and so on); this unit only evaluates
 * them. Pure functions of numbers: tests/test_tolerance.c checks them against brute-force fp32
 * sums. */
#ifndef BLOOPCL_COMPARE_TOLERANCE_H
#define BLOOPCL_COMPARE_TOLERANCE_H

#include "bloopcl.h"

#include <stdbool.h>
#include <stddef.h>

#define U_F32 0x1p-24            /* unit roundoff of fp32 (round to nearest) */
#define U_F64 0x1p-53            /* unit roundoff of double */
#define ETA_GRADUAL 0x1p-150     /* largest underflow error of one fp32 rounding, denormals on */
#define ETA_FTZ 0x1p-126         /* smallest normal fp32: what flush-to-zero may lose */
#define MAX_PARTIALS 65536.0     /* partial sums the finalize kernel may add (groups x pieces) */
#define CLBLAST_MIN_WGS 32.0     /* smallest WGS1/WGS2 in CLBlast's xdot tuning space */
#define CLBLAST_MAX_DEPTH 10.0   /* log2 of the largest (1024) */
#define LEAF_ROUNDINGS 5.0       /* the deepest leaf of d meets 5 fp32 roundings */
#define FUSED_BLOCK 8            /* BLOOPCL_BLOCK in cl/common.cl: plain sums of 8 per lane */
#define TOLERANCE_MAX_N ((size_t)1 << 25)  /* K(k) needs k u <= 2 */

/* What the bounds need to know about the device's arithmetic. */
typedef struct fp_model {
    bool denormals;      /* CL_FP_DENORM in CL_DEVICE_SINGLE_FP_CONFIG */
    double tree_depth;   /* ceil(log2(CL_DEVICE_MAX_WORK_GROUP_SIZE)): any reduction tree */
} fp_model;

/* gamma_k = k u / (1 - k u) (COMPARE.md, notation); INFINITY once k u >= 1. */
double gamma_k(double k, double unit);
/* Kahan's compensated sum of k terms: |error| <= K(k) sum |x_j|, K(k) = 6u + 8 k u^2 (2(c)). */
double kahan_bound(double k);
/* Two stages in sequence: (1 + a)(1 + b) - 1 (2(d)). */
double compose(double a, double b);

/* The relative dot bounds beta (2: fused, CLBlast, reference). */
double fused_dot_bound(size_t n, const fp_model *fp);
double clblast_dot_bound(size_t n, const fp_model *fp);
double device_dot_bound(bloopcl_dot_backend backend, size_t n, const fp_model *fp);
double reference_dot_bound(size_t n);

/* One dot product of one step: the two results and the magnitudes that bound their error. */
typedef struct dot_terms {
    const char *name;
    double device, reference;
    double abs_sum;       /* S = sum |x_i y_i|, rounded up */
    double operand_sum;   /* sum |x_i| + |y_i| (the flush-to-zero term) */
    double error;         /* the device's bound: beta S + alpha */
    double reference_error;
} dot_terms;

/* S and the operand sum of <x, y>, in double, rounded up by 1 + 2 gamma_n(u_d). */
void sum_magnitudes(const float *x, const float *y, size_t n, dot_terms *dot);
/* Fills dot->error = beta S + alpha (underflow) and dot->reference_error. */
void dot_bounds(dot_terms *dot, double beta, size_t n, const fp_model *fp);
/* fp32 may overflow in this dot although the reference is finite (6). */
bool dot_may_overflow(const dot_terms *dot, double beta);

/* The bound of the ratio r = N / (M + eps) from the bounds of its dots (3). */
typedef struct ratio_bound {
    double bound;       /* |device r - reference r| <= bound; INFINITY when unresolvable */
    double magnitude;   /* an upper bound on |exact r| */
    bool overflow;      /* fp32 may overflow on the way to r */
    bool underflow;     /* fp32 may not tell the denominator from zero */
} ratio_bound;

/* |fl(N^ / fl(M^ + eps)) - N / (M + eps)| for |N| <= r_max D, D in [d_low, d_high], dot
 * errors e_n, e_m and rounding unit `unit` (plus eta for underflow); INFINITY when the
 * computed denominator may be zero. */
double quotient_error(double r_max, double d_low, double d_high, double e_n, double e_m,
                      double unit, double eta);
ratio_bound ratio_error(const dot_terms *num, const dot_terms *den, double eps, double beta,
                        const fp_model *fp);

/* The direction d's per-element bound (4). The ratios are those d uses (PCGrad: after
 * min(., 0)); dr and dq the observed |device - reference| of them. */
typedef struct direction_model {
    bloopcl_method method;
    bool ratio_only;
    double s, lambda;
    double r_dev, r_ref, q_dev, q_ref;
    double dr, dq;
    double r_max, q_max;                 /* |r| bounds for the overflow excuse */
    double gamma_dev, gamma_ref, eta;
} direction_model;

/* The model for a step of `config` whose device and reference diagnostics report these
 * ratios (raw values: min(., 0) is applied here for PCGrad); r and r_aux are their bounds. */
void direction_model_init(direction_model *dm, const bloopcl_config *config, double r_dev,
                          double r_ref, double q_dev, double q_ref, const ratio_bound *r,
                          const ratio_bound *r_aux, const fp_model *fp);
/* The tolerance of d at one element (g, a, m, q the inputs and reference state there). */
double direction_tolerance(const direction_model *dm, double g, double a, double m, double q,
                           float d_ref);
/* The same for d stored in `dtype` (4(b)): both sides round their fp32 d into it once;
 * d_ref is the reference's d in that type, widened. */
double typed_direction_tolerance(const direction_model *dm, bloopcl_dtype dtype, double g,
                                 double a, double m, double q, float d_ref);
/* A partial result of d may leave the fp32 range there (6). */
bool direction_may_overflow(const direction_model *dm, double g, double a, double m, double q);

#endif
