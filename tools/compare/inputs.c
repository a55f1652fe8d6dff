/* inputs.c — see inputs.h. */
#include "inputs.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t stream_seed(uint64_t seed, input_kind kind, int step, int which)
{
    return seed * 0x9E3779B97F4A7C15ull + (uint64_t)kind * 1000003u + (uint64_t)step * 8u +
           (uint64_t)which;
}

static void fill_normal(float *x, size_t n, uint64_t seed)
{
    bloopcl_reference_normal(seed, 0, n, x);
}

static void scale_into(float *x, size_t n, double scale)
{
    for (size_t i = 0; i < n; ++i)
        x[i] = (float)((double)x[i] * scale);
}

/* |x| in [FLT_MAX/4, FLT_MAX/2] with the sign of the normal draw: every square overflows
 * fp32, but g - m stays finite (|m| <= FLT_MAX/2 as a convex combination). */
static void make_huge(float *x, size_t n)
{
    for (size_t i = 0; i < n; ++i) {
        double frac = fabs(x[i]) * 1e4 - floor(fabs(x[i]) * 1e4);
        x[i] = (float)copysign((0.25 + 0.25 * frac) * FLT_MAX, x[i]);
    }
}

/* Magnitudes 10^e, e an integer in [-20, 15] (1e20 squared would overflow fp32: that is the
 * huge input's job; here every fp32 partial sum must stay finite up to n = 2^25). */
static void make_mixed(float *x, const float *exponents, size_t n)
{
    for (size_t i = 0; i < n; ++i) {
        int e = (int)fmod(floor(fabs(exponents[i]) * 1e4), 36.0) - 20;
        x[i] = (float)((double)x[i] * pow(10.0, e));
    }
}

/* a <- a - (<a,v>/<v,v>) v, in double, rounded once: nearly orthogonal to v. */
static void orthogonalise(float *a, const float *v, size_t n)
{
    double av = 0.0, vv = 0.0;
    for (size_t i = 0; i < n; ++i) {
        av += (double)a[i] * v[i];
        vv += (double)v[i] * v[i];
    }
    double c = vv > 0.0 ? av / vv : 0.0;
    for (size_t i = 0; i < n; ++i)
        a[i] = (float)((double)a[i] - c * v[i]);
}

/* g = v + 1e-3 noise, a = sign 3 v + 1e-6 noise: m and a nearly (anti)parallel. */
static void make_parallel(float *g, float *a, const float *v, size_t n, double sign)
{
    for (size_t i = 0; i < n; ++i) {
        g[i] = (float)(v[i] + 1e-3 * g[i]);
        a[i] = (float)(sign * 3.0 * v[i] + 1e-6 * a[i]);
    }
}

static size_t bad_index(size_t n)
{
    return (size_t)((double)n * 0.5384615);   /* ~7/13: not at a chunk or group boundary */
}

static int bad_step(int steps)
{
    return steps > 1 ? 1 : 0;
}

static void plant_nonfinite(input_kind kind, float *g, float *a, size_t n)
{
    size_t i = bad_index(n);
    if (kind == KIND_NAN_G)
        g[i] = NAN;
    else if (kind == KIND_INF_A)
        a[i] = INFINITY;
    else if (kind == KIND_NINF_G)
        g[i] = -INFINITY;
}

/* Scales both inputs, or shapes them from the normal draws (section "Inputs" of --help). */
static void shape_step(input_kind kind, float *g, float *a, size_t n)
{
    if (kind == KIND_ZEROS) {
        memset(g, 0, n * sizeof *g);
        memset(a, 0, n * sizeof *a);
    } else if (kind == KIND_DENORMAL) {
        scale_into(g, n, 0x1p-140);   /* subnormal: below 2^-126 */
        scale_into(a, n, 0x1p-140);
    } else if (kind == KIND_LARGE) {   /* sum of squares ~ FLT_MAX / 64: must stay finite */
        double scale = sqrt((double)FLT_MAX / (64.0 * ((double)n + 64.0)));
        scale_into(g, n, scale);
        scale_into(a, n, scale);
    } else if (kind == KIND_HUGE) {
        make_huge(g, n);
        make_huge(a, n);
    }
}

/* One step's g and a for `kind`; `v` is the fixed direction of the structured inputs. */
static void make_step(input_kind kind, int step, const input_set *set, const float *v,
                      float *scratch, uint64_t seed)
{
    size_t n = set->n;
    float *g = set->g[step], *a = set->a[step];
    fill_normal(g, n, stream_seed(seed, kind, step, 0));
    fill_normal(a, n, stream_seed(seed, kind, step, 1));
    if (kind == KIND_MIXED) {
        fill_normal(scratch, n, stream_seed(seed, kind, step, 2));
        make_mixed(g, scratch, n);
        fill_normal(scratch, n, stream_seed(seed, kind, step, 3));
        make_mixed(a, scratch, n);
    } else if (kind == KIND_PARALLEL || kind == KIND_ANTIPARALLEL) {
        make_parallel(g, a, v, n, kind == KIND_PARALLEL ? 1.0 : -1.0);
    } else if (kind == KIND_ORTHOGONAL) {
        memcpy(g, v, n * sizeof *g);
        orthogonalise(a, v, n);
    } else if (kind == KIND_NAN_G || kind == KIND_INF_A || kind == KIND_NINF_G) {
        if (step == bad_step(set->steps))
            plant_nonfinite(kind, g, a, n);
    } else {
        shape_step(kind, g, a, n);
    }
}

void free_inputs(input_set *set)
{
    for (int t = 0; t < MAX_STEPS; ++t) {
        free(set->g[t]);
        free(set->a[t]);
    }
    free(set->initial_ema);
    free(set->initial_aux_ema);
    memset(set, 0, sizeof *set);
}

float *alloc_floats(size_t n)
{
    return malloc((n ? n : 1) * sizeof(float));
}

bool make_inputs(input_kind kind, size_t n, int steps, uint64_t seed, input_set *set)
{
    memset(set, 0, sizeof *set);
    set->n = n;
    set->steps = steps;
    float *v = alloc_floats(n), *scratch = alloc_floats(n);
    set->initial_ema = alloc_floats(n);
    set->initial_aux_ema = alloc_floats(n);
    bool ok = v && scratch && set->initial_ema && set->initial_aux_ema;
    for (int t = 0; t < steps && ok; ++t)
        ok = (set->g[t] = alloc_floats(n)) != NULL && (set->a[t] = alloc_floats(n)) != NULL;
    if (ok) {
        fill_normal(v, n, stream_seed(seed, kind, MAX_STEPS, 0));
        fill_normal(set->initial_ema, n, stream_seed(seed, kind, MAX_STEPS, 1));
        fill_normal(set->initial_aux_ema, n, stream_seed(seed, kind, MAX_STEPS, 2));
        for (int t = 0; t < steps; ++t)
            make_step(kind, t, set, v, scratch, seed);
    }
    free(v);
    free(scratch);
    if (!ok)
        free_inputs(set);
    return ok;
}
