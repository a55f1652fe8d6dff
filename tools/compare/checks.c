/* checks.c — see checks.h. The sections cited are those of COMPARE.md, "Tolerances". */
#include "checks.h"

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * Comparing numbers
 * ------------------------------------------------------------------------------------------- */
typedef enum value_class { VALUE_FINITE, VALUE_NAN, VALUE_PLUS_INF, VALUE_MINUS_INF } value_class;

static value_class classify(double x)
{
    if (isnan(x))
        return VALUE_NAN;
    if (isinf(x))
        return x > 0 ? VALUE_PLUS_INF : VALUE_MINUS_INF;
    return VALUE_FINITE;
}

static uint32_t float_bits(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits;
}

/* Distance in representable floats (+0 and -0 coincide). */
static double ulp_distance(float x, float y)
{
    uint32_t bx = float_bits(x), by = float_bits(y);
    int64_t kx = (bx >> 31) ? -(int64_t)(bx & 0x7FFFFFFFu) : (int64_t)bx;
    int64_t ky = (by >> 31) ? -(int64_t)(by & 0x7FFFFFFFu) : (int64_t)by;
    return (double)(kx > ky ? kx - ky : ky - kx);
}

/* Bit-identical, or both NaN. */
static bool same_float(float x, float y)
{
    return float_bits(x) == float_bits(y) || (isnan(x) && isnan(y));
}


/* A scalar (dot or r): finite pair within tolerance, or the same NaN/Inf class. Returns true
 * if they agree; `may_diverge` turns a disagreement into an expected divergence. */
static bool compare_scalar(case_result *res, unsigned what, int step, const char *name,
                           double device, double reference, double tolerance, bool may_diverge,
                           const char *why)
{
    bool finite = isfinite(device) && isfinite(reference);
    double err = finite ? fabs(device - reference) : 0.0;
    bool agree = finite ? err <= tolerance : classify(device) == classify(reference);
    if (finite && isfinite(tolerance))
        note_ratio(&res->worst_r, err, tolerance);
    if (agree)
        return true;
    if (may_diverge) {
        diverge(res, step, "%s: device %.9g, reference %.9g (%s)", name, device, reference, why);
        return false;
    }
    if (!finite) {
        res->parity_ok = false;
        fail(res, what | FAIL_PARITY, step, "%s: NaN/Inf parity: device %.9g, reference %.9g",
             name, device, reference);
        return false;
    }
    fail(res, what, step, "%s: device %.9g, reference %.9g, |err| %.3g > tol %.3g", name, device,
         reference, err, tolerance);
    return false;
}

static bool has_ema(const step_view *sv)
{
    return sv->config->method != BLOOPCL_METHOD_MIXED;
}

static bool has_aux_ema(const step_view *sv)
{
    return sv->config->method == BLOOPCL_METHOD_PCGRAD;
}

static void check_status(const step_view *sv, case_result *res)
{
    if (sv->status_dev != sv->status_ref)
        fail(res, FAIL_STATUS, sv->step, "step returned %d (%s), reference %d (%s)",
             (int)sv->status_dev, bloopcl_status_string(sv->status_dev), (int)sv->status_ref,
             bloopcl_status_string(sv->status_ref));
    if (sv->dev->accepted != sv->ref->accepted)
        fail(res, FAIL_STATUS, sv->step, "accepted = %d, reference %d", sv->dev->accepted,
             sv->ref->accepted);
}

/* Flush-to-zero devices may differ where an operand, g - m or the result is subnormal. */
static bool ftz_excused(const step_view *sv, const float *before, const float *input, size_t i,
                        float dev, float ref)
{
    if (sv->fp->denormals || !isfinite(dev) || !isfinite(ref))
        return false;
    double tiny = 0x1p-126;
    double m = before[i], x = input[i];
    bool subnormal = fabs(m) < tiny || fabs(x) < tiny || fabs(x - m) < tiny ||
                     fabs((double)ref) < tiny;
    double ulp = nextafterf(fabsf(ref), INFINITY) - fabsf(ref);
    return subnormal && fabs((double)dev - ref) <= 0x1p-124 + 2.0 * ulp;
}

static void check_state_array(const step_view *sv, case_result *res, const char *name,
                              const float *dev, const float *ref, const float *before,
                              const float *input)
{
    size_t mismatches = 0, first = 0;
    for (size_t i = 0; i < sv->n; ++i) {
        if (same_float(dev[i], ref[i]))
            continue;
        if (ftz_excused(sv, before, input, i, dev[i], ref[i])) {
            res->ftz_state = true;
            continue;
        }
        if (mismatches++ == 0)
            first = i;
    }
    if (mismatches > 0)
        fail(res, FAIL_STATE, sv->step,
             "state %s differs in %zu of %zu elements; first %s[%zu]: device %.9g (0x%08" PRIx32
             "), reference %.9g (0x%08" PRIx32 ")",
             name, mismatches, sv->n, name, first, dev[first], float_bits(dev[first]), ref[first],
             float_bits(ref[first]));
}

static void check_state(const step_view *sv, case_result *res)
{
    if (!has_ema(sv))
        return;
    bool expect_ok = sv->ref_initialized;
    if ((sv->state_status == BLOOPCL_OK) != expect_ok) {
        fail(res, FAIL_STATE, sv->step, "bloopcl_read_state returned %s, reference %s",
             bloopcl_status_string(sv->state_status),
             expect_ok ? "has a state" : "has no state yet");
        return;
    }
    if (!expect_ok)
        return;
    check_state_array(sv, res, "m", sv->m_dev, sv->m_ref, sv->m_before, sv->g);
    if (has_aux_ema(sv))
        check_state_array(sv, res, "q", sv->q_dev, sv->q_ref, sv->q_before, sv->a);
}

/* SKIP policy: the rejected step must write d = 0 (the state is checked against the
 * reference, which left it unchanged). */
static void check_skipped(const step_view *sv, case_result *res)
{
    for (size_t i = 0; i < sv->n; ++i)
        if (sv->d_dev[i] != 0.0f || signbit(sv->d_dev[i])) {
            fail(res, FAIL_SKIP, sv->step, "skipped step wrote d[%zu] = %.9g, expected 0", i,
                 sv->d_dev[i]);
            return;
        }
    if (sv->dev->accepted != 0)
        fail(res, FAIL_SKIP, sv->step, "skipped step reported accepted = 1");
}

/* ---------------------------------------------------------------------------------------------
 * Dots and ratios (sections 2, 3, 6)
 * ------------------------------------------------------------------------------------------- */
enum { DOT_MA, DOT_MM, DOT_AA, DOT_GG, DOT_QG, DOT_QQ, NUM_DOTS };

typedef struct step_scalars {
    dot_terms dots[NUM_DOTS];
    size_t num_dots;
    double beta;                /* the device's relative dot bound at this n */
    ratio_bound r, r_aux;
    bool r_diverged;            /* an expected divergence was reported for r or a dot */
} step_scalars;

static void gather_dots(const step_view *sv, step_scalars *sc)
{
    const bloopcl_diagnostics *dv = sv->dev, *rf = sv->ref;
    dot_terms *d = sc->dots;
    d[DOT_MA] = (dot_terms){"<m,a>", dv->dot_ema_aux, rf->dot_ema_aux, 0, 0, 0, 0};
    d[DOT_MM] = (dot_terms){"<m,m>", dv->ema_norm_sq, rf->ema_norm_sq, 0, 0, 0, 0};
    d[DOT_AA] = (dot_terms){"<a,a>", dv->aux_norm_sq, rf->aux_norm_sq, 0, 0, 0, 0};
    d[DOT_GG] = (dot_terms){"<g,g>", dv->grad_norm_sq, rf->grad_norm_sq, 0, 0, 0, 0};
    d[DOT_QG] = (dot_terms){"<q,g>", dv->dot_aux_ema_main, rf->dot_aux_ema_main, 0, 0, 0, 0};
    d[DOT_QQ] = (dot_terms){"<q,q>", dv->aux_ema_norm_sq, rf->aux_ema_norm_sq, 0, 0, 0, 0};
    sum_magnitudes(sv->m_ref, sv->a, sv->n, &d[DOT_MA]);
    sum_magnitudes(sv->m_ref, sv->m_ref, sv->n, &d[DOT_MM]);
    sum_magnitudes(sv->a, sv->a, sv->n, &d[DOT_AA]);
    sum_magnitudes(sv->g, sv->g, sv->n, &d[DOT_GG]);   /* ||g_true||^2, for clipping */
    sc->num_dots = 4;
    if (has_aux_ema(sv)) {
        sum_magnitudes(sv->q_ref, sv->g, sv->n, &d[DOT_QG]);
        sum_magnitudes(sv->q_ref, sv->q_ref, sv->n, &d[DOT_QQ]);
        sc->num_dots = NUM_DOTS;
    }
    for (size_t k = 0; k < sc->num_dots; ++k)
        dot_bounds(&d[k], sc->beta, sv->n, sv->fp);
}

static void check_dots(const step_view *sv, step_scalars *sc, case_result *res)
{
    char why[TEXT_SIZE];
    for (size_t k = 0; k < sc->num_dots; ++k) {
        const dot_terms *d = &sc->dots[k];
        snprintf(why, sizeof why, "expected divergence: fp32 overflow, reference sum|x y| = "
                 "%.3g > FLT_MAX", d->abs_sum);
        double tol = d->error + d->reference_error;
        if (!compare_scalar(res, FAIL_DOTS, sv->step, d->name, d->device, d->reference, tol,
                            dot_may_overflow(d, sc->beta), why))
            sc->r_diverged |= dot_may_overflow(d, sc->beta);
    }
}

static const char *ratio_excuse(const ratio_bound *rb, const dot_terms *den, char *why,
                                size_t size)
{
    if (rb->underflow)
        snprintf(why, size, "expected divergence: fp32 underflow, reference %s + eps = %.3g "
                 "is within the fp32 error bound of zero", den->name, den->reference);
    else if (rb->overflow)
        snprintf(why, size, "expected divergence: fp32 overflow, reference %s = %.3g, "
                 "|r| <= %.3g", den->name, den->reference, rb->magnitude);
    else
        why[0] = '\0';
    return why;
}

static void note_r_rel(case_result *res, double device, double reference)
{
    if (isfinite(device) && isfinite(reference) && reference != 0.0) {
        double rel = fabs(device - reference) / fabs(reference);
        if (rel > res->r_rel)
            res->r_rel = rel;
    }
}

static void check_one_ratio(const step_view *sv, step_scalars *sc, case_result *res,
                            const char *name, double device, double reference,
                            const ratio_bound *rb, const dot_terms *den)
{
    char why[TEXT_SIZE];
    bool excused = rb->overflow || rb->underflow;
    ratio_excuse(rb, den, why, sizeof why);
    note_r_rel(res, device, reference);
    if (!compare_scalar(res, FAIL_R, sv->step, name, device, reference, rb->bound, excused, why))
        sc->r_diverged |= excused;
}

static void check_ratios(const step_view *sv, step_scalars *sc, case_result *res)
{
    double eps = (double)(float)sv->config->eps;
    sc->r = ratio_error(&sc->dots[DOT_MA], &sc->dots[DOT_MM], eps, sc->beta, sv->fp);
    check_one_ratio(sv, sc, res, "r_raw", sv->dev->ratio_raw, sv->ref->ratio_raw, &sc->r,
                    &sc->dots[DOT_MM]);
    check_one_ratio(sv, sc, res, "r", sv->dev->ratio, sv->ref->ratio, &sc->r, &sc->dots[DOT_MM]);
    if (!has_aux_ema(sv))
        return;
    sc->r_aux = ratio_error(&sc->dots[DOT_QG], &sc->dots[DOT_QQ], eps, sc->beta, sv->fp);
    check_one_ratio(sv, sc, res, "r_q", sv->dev->aux_ratio, sv->ref->aux_ratio, &sc->r_aux,
                    &sc->dots[DOT_QQ]);
}

/* ---------------------------------------------------------------------------------------------
 * The direction (section 4)
 * ------------------------------------------------------------------------------------------- */
static void note_direction_error(case_result *res, float dev, float ref, double tol)
{
    double err = fabs((double)dev - ref);
    if (err > res->max_abs)
        res->max_abs = err;
    if (ref != 0.0f && err / fabs((double)ref) > res->max_rel)
        res->max_rel = err / fabs((double)ref);
    double ulp = ulp_distance(dev, ref);
    if (ulp > res->max_ulp)
        res->max_ulp = ulp;
    note_ratio(&res->worst_d, err, tol);
}

typedef struct direction_tally {
    size_t bad, bad_parity, excused, first_bad, first_excused;
    double first_tol;
} direction_tally;

/* The largest finite value of a 2-byte type (0 for f32). */
static float type_max(bloopcl_dtype dtype)
{
    return dtype == BLOOPCL_DTYPE_F16 ? 65504.0f : dtype == BLOOPCL_DTYPE_BF16 ? 0x1.FEp127f
                                                                            : 0.0f;
}

/* d at the top of its 2-byte type: two fp32 values within tolerance of each other may round
 * one to the largest finite value and the other to the Inf of the same sign (COMPARE.md 4(b)). */
static bool at_type_edge(bloopcl_dtype dtype, float x, float y)
{
    float top = type_max(dtype);
    if (top == 0.0f || signbit(x) != signbit(y))
        return false;
    return (isinf(x) && fabsf(y) == top) || (isinf(y) && fabsf(x) == top);
}

static void check_direction_element(const step_view *sv, const direction_model *dm, size_t i,
                                    case_result *res, direction_tally *t)
{
    float dev = sv->d_dev[i], ref = sv->d_ref[i];
    double m = has_ema(sv) ? sv->m_ref[i] : 0.0, q = has_aux_ema(sv) ? sv->q_ref[i] : 0.0;
    double tol = typed_direction_tolerance(dm, sv->d_dtype, sv->g[i], sv->a[i], m, q, ref);
    bool finite = isfinite(dev) && isfinite(ref);
    if (finite)
        note_direction_error(res, dev, ref, tol);
    bool agree = finite ? fabs((double)dev - ref) <= tol
                        : classify(dev) == classify(ref) || at_type_edge(sv->d_dtype, dev, ref);
    if (agree)
        return;
    if (direction_may_overflow(dm, sv->g[i], sv->a[i], m, q)) {
        if (t->excused++ == 0)
            t->first_excused = i;
        return;
    }
    if (t->bad++ == 0) {
        t->first_bad = i;
        t->first_tol = tol;
    }
    t->bad_parity += !finite;
}

static void report_direction(const step_view *sv, const direction_tally *t, case_result *res)
{
    if (t->excused > 0)
        diverge(res, sv->step, "d differs in %zu elements (first d[%zu]: device %.9g, reference "
                "%.9g) where a term of d reaches FLT_MAX: expected divergence: fp32 overflow",
                t->excused, t->first_excused, sv->d_dev[t->first_excused],
                sv->d_ref[t->first_excused]);
    if (t->bad == 0)
        return;
    size_t i = t->first_bad;
    if (t->bad_parity > 0)
        res->parity_ok = false;
    fail(res, FAIL_D | (t->bad_parity ? FAIL_PARITY : 0u), sv->step,
         "d differs in %zu of %zu elements (%zu NaN/Inf parity); first d[%zu]: device %.9g, "
         "reference %.9g, tol %.3g", t->bad, sv->n, t->bad_parity, i, sv->d_dev[i], sv->d_ref[i],
         t->first_tol);
}

static void check_direction(const step_view *sv, const step_scalars *sc, case_result *res)
{
    direction_model dm;
    direction_model_init(&dm, sv->config, sv->dev->ratio, sv->ref->ratio, sv->dev->aux_ratio,
                         sv->ref->aux_ratio, &sc->r, &sc->r_aux, sv->fp);
    direction_tally tally = {0};
    for (size_t i = 0; i < sv->n; ++i)
        check_direction_element(sv, &dm, i, res, &tally);
    report_direction(sv, &tally, res);
}

/* All checks of one step. */
void check_step(const step_view *sv, bloopcl_dot_backend backend, case_result *res)
{
    check_status(sv, res);
    check_state(sv, res);
    if (sv->status_ref == BLOOPCL_ERR_NONFINITE_INPUT) {
        check_skipped(sv, res);
        return;
    }
    step_scalars sc = {.beta = device_dot_bound(backend, sv->n, sv->fp)};
    if (has_ema(sv)) {
        gather_dots(sv, &sc);
        check_dots(sv, &sc, res);
        check_ratios(sv, &sc, res);
    }
    if (sc.r_diverged) {
        diverge(res, sv->step, "d not compared: it follows r, which diverged as expected");
        return;
    }
    check_direction(sv, &sc, res);
}
