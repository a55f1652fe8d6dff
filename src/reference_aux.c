/* reference_aux.c — the CPU reference of a step with several auxiliary gradients, written from
 * the definition, not from the device's reformulation (aux.cl):
 *
 *   m <- m + w (g - m)
 *   r_i = <m, a_i> / (<m, m> + eps)        (DYNAMIC_BARRIER: min(r_i, 1/lambda_i))
 *   d  = s (g + sum_i lambda_i (a_i - r_i m))             s = 1/(1 + sum_i lambda_i) (rescale)
 *   ratio-only: d = s ((1 - sum_i lambda_i r_i) g + sum_i lambda_i a_i);  MIXED: r_i = 0
 *
 * The EMA is updated in float as the kernels do (bit for bit); dots, r_i and d in double. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double dot(const float *x, const float *y, size_t n)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; ++i)
        sum += (double)x[i] * (double)y[i];
    return sum;
}

static bool finite_inputs(const float *g, const float *const *aux, size_t count, size_t n)
{
    for (size_t i = 0; i < n; ++i) {
        if (!isfinite(g[i]))
            return false;
        for (size_t k = 0; k < count; ++k)
            if (!isfinite(aux[k][i]))
                return false;
    }
    return true;
}

/* r_i for every gradient (0 for MIXED), clipped for the dynamic barrier; fills `out`. */
static void ratios(const bloopcl_config *config, const bloopcl_reference_state *state,
                   const float *const *aux, const double *lambdas, size_t count, double eps,
                   double *r, bloopcl_aux_diagnostics *out)
{
    size_t n = state->n;
    bool has_ema = bloopcl__method_has_ema(config->method);
    double norm = has_ema ? dot(state->ema, state->ema, n) : 0.0;
    for (size_t k = 0; k < count; ++k) {
        double lambda = (float)lambdas[k];
        double c = has_ema ? dot(state->ema, aux[k], n) : 0.0;
        double raw = 0.0;
        if (has_ema)
            raw = (c == 0.0 && norm + eps == 0.0) ? 0.0 : c / (norm + eps);
        double cap = lambda > 0.0 ? (double)(1.0f / (float)lambda) : 0.0;  /* as on device */
        r[k] = config->method == BLOOPCL_METHOD_DYNAMIC_BARRIER && lambda > 0.0 && raw > cap
                   ? cap : raw;
        double aa = dot(aux[k], aux[k], n);
        double norms = sqrt(norm) * sqrt(aa);
        out[k] = (bloopcl_aux_diagnostics){.struct_size = sizeof out[k], .lambda = lambda,
                                           .ratio = r[k], .ratio_raw = raw, .dot_ema_aux = c,
                                           .aux_norm_sq = aa,
                                           .cosine = norms > 0.0 ? c / norms : 0.0};
    }
}

bloopcl_status bloopcl_reference_step_aux(const bloopcl_config *config,
                                          bloopcl_reference_state *state, const float *g,
                                          const float *const *aux, const double *lambdas,
                                          size_t count, float *d,
                                          bloopcl_aux_diagnostics *diagnostics)
{
    if (config == NULL || state == NULL || g == NULL || aux == NULL || lambdas == NULL ||
        d == NULL || diagnostics == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    if (count == 0 || count > BLOOPCL_MAX_AUX ||
        (config->method == BLOOPCL_METHOD_PCGRAD && count > 1))
        return BLOOPCL_ERR_UNSUPPORTED;
    size_t n = state->n;
    bool has_ema = bloopcl__method_has_ema(config->method);
    if (config->nonfinite == BLOOPCL_NONFINITE_SKIP && !finite_inputs(g, aux, count, n)) {
        memset(d, 0, n * sizeof *d);
        return BLOOPCL_ERR_NONFINITE_INPUT;
    }
    float w = state->initialized ? (float)config->ema_weight : 1.0f;
    for (size_t i = 0; has_ema && i < n; ++i)
        state->ema[i] = (w == 1.0f) ? g[i] : state->ema[i] + w * (g[i] - state->ema[i]);
    state->initialized = 1;
    double r[BLOOPCL_MAX_AUX], lambda_sum = 0.0;
    ratios(config, state, aux, lambdas, count, (float)config->eps, r, diagnostics);
    for (size_t k = 0; k < count; ++k)
        lambda_sum += lambdas[k];
    double s = config->rescale ? (double)(float)(1.0 / (1.0 + lambda_sum)) : 1.0;
    for (size_t i = 0; i < n; ++i) {
        double m = has_ema ? state->ema[i] : 0.0, sum = 0.0, weighted_r = 0.0;
        for (size_t k = 0; k < count; ++k) {
            double lambda = (float)lambdas[k];
            weighted_r += lambda * r[k];
            sum += config->ratio_only ? lambda * aux[k][i] : lambda * (aux[k][i] - r[k] * m);
        }
        d[i] = (float)(config->ratio_only ? s * ((1.0 - weighted_r) * g[i] + sum)
                                          : s * (g[i] + sum));
    }
    return BLOOPCL_OK;
}
