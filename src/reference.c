/* reference.c — the CPU reference: the update rules written as plain loops, with dot products
 * accumulated in double. Tests and bloopcl-compare check the device against this file, so it
 * favours being obviously right over being fast.
 *
 * Element-wise EMA updates are done in float exactly as the kernels do them (no contraction;
 * see -ffp-contract=off in meson.build), so device and reference states can agree bit for bit.
 * The scalars (dots, r) and d are computed in double from the float inputs. Products of floats
 * are exact in double and n FLT_MAX^2 stays finite, so the reference's dots and r are right for
 * every finite input (all-FLT_MAX inputs: r = 1/w, d = FLT_MAX): it is the truth the device's
 * rescue (or report) of fp32's range is judged by (bloopcl.h, bloopcl_skip_reason). */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The stream used for q (PCGrad's EMA of a) under BLOOPCL_INIT_RANDOM. */
#define AUX_STREAM_XOR 0x5851F42D4C957F2Dull

static float ema_update(float m, float g, float w)
{
    return (w == 1.0f) ? g : m + w * (g - m);
}

static double min_zero(double x)
{
    return (x > 0.0) ? 0.0 : x;   /* NaN propagates, as in jnp.minimum */
}

static bool all_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; ++i)
        if (!isfinite(x[i]))
            return false;
    return true;
}

static double dot(const float *x, const float *y, size_t n)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; ++i)
        sum += (double)x[i] * (double)y[i];
    return sum;
}

static void fill_initial(const bloopcl_config *config, size_t n, float *state,
                         const float *buffer, uint64_t seed)
{
    if (config->init == BLOOPCL_INIT_RANDOM)
        bloopcl_reference_normal(seed, (size_t)config->random_offset, n, state);
    else if (config->init == BLOOPCL_INIT_BUFFER)
        memcpy(state, buffer, n * sizeof *state);
    else
        memset(state, 0, n * sizeof *state);
}

bloopcl_status bloopcl_reference_init(const bloopcl_config *config, size_t n,
                                      bloopcl_reference_state *state)
{
    if (config == NULL || state == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    memset(state, 0, sizeof *state);
    bloopcl_config given;
    bloopcl_status status = bloopcl__read_config(config, &given, NULL, 0);
    if (status == BLOOPCL_OK)
        status = bloopcl_config_validate(&given, NULL, 0);
    if (status != BLOOPCL_OK)
        return status;
    config = &given;
    if (n == 0 || n > SIZE_MAX / sizeof(float))  /* n * 4 bytes must not wrap, any method */
        return BLOOPCL_ERR_SIZE_MISMATCH;
    state->n = n;
    state->initialized = config->init != BLOOPCL_INIT_FIRST_GRADIENT;
    if (!bloopcl__method_has_ema(config->method))
        return BLOOPCL_OK;
    state->ema = malloc(n * sizeof *state->ema);
    if (bloopcl__method_has_aux_ema(config->method))
        state->aux_ema = malloc(n * sizeof *state->aux_ema);
    if (state->ema == NULL || (bloopcl__method_has_aux_ema(config->method) && !state->aux_ema)) {
        bloopcl_reference_free(state);
        return BLOOPCL_ERR_OUT_OF_MEMORY;
    }
    fill_initial(config, n, state->ema, config->initial_ema, config->seed);
    if (state->aux_ema != NULL)
        fill_initial(config, n, state->aux_ema, config->initial_aux_ema,
                     config->seed ^ AUX_STREAM_XOR);
    return BLOOPCL_OK;
}

void bloopcl_reference_free(bloopcl_reference_state *state)
{
    if (state == NULL)
        return;
    free(state->ema);
    free(state->aux_ema);
    memset(state, 0, sizeof *state);
}

/* The direction for one element, given the step's scalars (see the table in bloopcl.h). */
static float direction(const bloopcl_config *config, double s, double lambda, double r,
                       double aux_r, float g, float a, float m, float q)
{
    double d;
    if (config->method == BLOOPCL_METHOD_MIXED)
        d = s * (g + lambda * a);
    else if (config->method == BLOOPCL_METHOD_PCGRAD)
        d = s * ((g - min_zero(aux_r) * q) + lambda * (a - min_zero(r) * m));
    else if (config->ratio_only)
        d = s * ((1.0 - lambda * r) * g + lambda * a);
    else
        d = s * (g + lambda * (a - r * m));
    return (float)d;
}

static void skip_step(size_t n, float *d, bloopcl_diagnostics *diagnostics)
{
    memset(d, 0, n * sizeof *d);
    if (diagnostics != NULL) {
        diagnostics->accepted = 0;
        diagnostics->reason = BLOOPCL_SKIP_NONFINITE_INPUT;
    }
}

/* x / (y + eps). With eps = 0 and y = 0 (m = 0 exactly: products of floats do not underflow in
 * double) policy SKIP takes 0/0 as 0, nothing to project out; PROPAGATE keeps IEEE's NaN. */
static double ratio(double x, double y, double eps, bool zero_over_zero_is_zero)
{
    if (zero_over_zero_is_zero && x == 0.0 && y + eps == 0.0)
        return 0.0;
    return x / (y + eps);
}

bloopcl_status bloopcl_reference_step(const bloopcl_config *config,
                                      bloopcl_reference_state *state, const float *g,
                                      const float *a, float *d, bloopcl_diagnostics *diagnostics)
{
    if (config == NULL || state == NULL || g == NULL || a == NULL || d == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    bloopcl_config given;
    bloopcl_diagnostics diag = {.struct_size = sizeof diag};
    bloopcl_status status = bloopcl__read_config(config, &given, NULL, 0);
    if (status == BLOOPCL_OK)
        status = bloopcl_config_validate(&given, NULL, 0);
    if (status == BLOOPCL_OK && diagnostics != NULL)  /* checks its struct_size, clears it */
        status = bloopcl__write_diagnostics(diagnostics, &diag, NULL, 0);
    if (status != BLOOPCL_OK)
        return status;
    config = &given;
    const size_t n = state->n;
    const bool has_ema = bloopcl__method_has_ema(config->method);
    const bool has_aux_ema = bloopcl__method_has_aux_ema(config->method);
    if (n == 0 || (has_ema && state->ema == NULL) || (has_aux_ema && state->aux_ema == NULL))
        return BLOOPCL_ERR_STATE;

    /* The kernels see float hyperparameters: so does the reference. */
    const float w = (float)config->ema_weight;
    const double lambda = (float)config->lambda;
    const double eps = (float)config->eps;
    /* s = 1/(1+lambda) divided in double, rounded once to float, as the step does */
    const double s = config->rescale ? (double)(float)(1.0 / (1.0 + config->lambda)) : 1.0;

    const bool skip_zeros = config->nonfinite == BLOOPCL_NONFINITE_SKIP;
    if (config->nonfinite == BLOOPCL_NONFINITE_SKIP && !(all_finite(g, n) && all_finite(a, n))) {
        skip_step(n, d, diagnostics);
        return BLOOPCL_ERR_NONFINITE_INPUT;
    }

    /* 1. EMA update first (w = 1 before a first-gradient initialisation). */
    const float w_step = state->initialized ? w : 1.0f;
    for (size_t i = 0; has_ema && i < n; ++i)
        state->ema[i] = ema_update(state->ema[i], g[i], w_step);
    for (size_t i = 0; has_aux_ema && i < n; ++i)
        state->aux_ema[i] = ema_update(state->aux_ema[i], a[i], w_step);
    state->initialized = 1;

    /* 2. Global scalars from the updated EMA(s). */
    if (has_ema) {
        diag.dot_ema_aux = dot(state->ema, a, n);
        diag.ema_norm_sq = dot(state->ema, state->ema, n);
        diag.aux_norm_sq = dot(a, a, n);
        diag.ratio_raw = ratio(diag.dot_ema_aux, diag.ema_norm_sq, eps, skip_zeros);
    }
    diag.ratio = diag.ratio_raw;
    const double cap = lambda > 0.0 ? (double)(1.0f / (float)lambda) : 0.0; /* as on device */
    if (config->method == BLOOPCL_METHOD_DYNAMIC_BARRIER && lambda > 0.0 && diag.ratio_raw > cap)
        diag.ratio = cap;
    if (has_aux_ema) {
        diag.dot_aux_ema_main = dot(state->aux_ema, g, n);
        diag.aux_ema_norm_sq = dot(state->aux_ema, state->aux_ema, n);
        diag.aux_ratio = ratio(diag.dot_aux_ema_main, diag.aux_ema_norm_sq, eps, skip_zeros);
    }
    double norms = sqrt(diag.ema_norm_sq) * sqrt(diag.aux_norm_sq);
    diag.cosine = norms > 0.0 ? diag.dot_ema_aux / norms : 0.0;
    diag.grad_norm_sq = dot(g, g, n);
    diag.accepted = 1;

    /* 3. The direction. */
    for (size_t i = 0; i < n; ++i)
        d[i] = direction(config, s, lambda, diag.ratio, diag.aux_ratio, g[i], a[i],
                         has_ema ? state->ema[i] : 0.0f, has_aux_ema ? state->aux_ema[i] : 0.0f);
    if (diagnostics != NULL)
        bloopcl__write_diagnostics(diagnostics, &diag, NULL, 0);  /* size checked above */
    return BLOOPCL_OK;
}

/* g or a as the kernels see it: widened from its type, then times its inverse scale in fp32. */
static float *widen_scaled(const void *x, bloopcl_dtype dtype, float inv_scale, size_t n)
{
    float *out = malloc(n * sizeof *out);
    for (size_t i = 0; out != NULL && i < n; ++i)
        out[i] = bloopcl__load_element(x, dtype, i) * inv_scale;
    return out;
}

static bool positive_finite_float(double x)
{
    return x > 0.0 && (float)x > 0.0f && isfinite((float)x);
}

bloopcl_status bloopcl_reference_step_typed(const bloopcl_config *config,
                                            bloopcl_reference_state *state, const void *g,
                                            bloopcl_dtype g_dtype, const void *a,
                                            bloopcl_dtype a_dtype, void *d, bloopcl_dtype d_dtype,
                                            double inv_scale_g, double inv_scale_a,
                                            bloopcl_diagnostics *diagnostics)
{
    if (config == NULL || state == NULL || g == NULL || a == NULL || d == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    if (bloopcl_dtype_size(g_dtype) == 0 || bloopcl_dtype_size(a_dtype) == 0 ||
        bloopcl_dtype_size(d_dtype) == 0 || !positive_finite_float(inv_scale_g) ||
        !positive_finite_float(inv_scale_a))
        return BLOOPCL_ERR_INVALID_ARGUMENT;
    size_t n = state->n;
    float *g_true = widen_scaled(g, g_dtype, (float)inv_scale_g, n);
    float *a_true = widen_scaled(a, a_dtype, (float)inv_scale_a, n);
    float *d_wide = malloc((n ? n : 1) * sizeof *d_wide);
    bloopcl_status status = BLOOPCL_ERR_OUT_OF_MEMORY;
    if (g_true != NULL && a_true != NULL && d_wide != NULL)
        status = bloopcl_reference_step(config, state, g_true, a_true, d_wide, diagnostics);
    if (status == BLOOPCL_OK || status == BLOOPCL_ERR_NONFINITE_INPUT)  /* d written */
        for (size_t i = 0; i < n; ++i)
            bloopcl__store_element(d, d_dtype, i, d_wide[i]);
    free(g_true);
    free(a_true);
    free(d_wide);
    return status;
}
