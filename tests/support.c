/* support.c — helpers shared by the Criterion tests (see support.h). */
#include "support.h"

#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Prefix of the step and state checks' messages (support_set_label); "" unless a test sets it. */
static const char *case_label = "";

void support_set_label(const char *label)
{
    case_label = label != NULL ? label : "";
}

void support_context_skip_without_device(void)
{
    size_t count = 0;
    cr_assert_eq(bloopcl_list_devices(NULL, 0, &count), BLOOPCL_OK);
    if (count == 0)
        cr_skip_test("no OpenCL device on this machine");
}

bloopcl_context *support_context(void)
{
    support_context_skip_without_device();
    bloopcl_context *ctx = NULL;
    bloopcl_status status = bloopcl_context_create(NULL, &ctx);
    cr_assert_eq(status, BLOOPCL_OK, "context: %s", bloopcl_context_last_error(ctx));
    return ctx;
}

float *support_alloc(size_t n)
{
    float *x = calloc(n ? n : 1, sizeof *x);
    cr_assert_not_null(x);
    return x;
}

void support_fill_normal(float *x, size_t n, uint64_t seed, float scale)
{
    bloopcl_reference_normal(seed, 0, n, x);
    for (size_t i = 0; i < n; ++i)
        x[i] *= scale;
}

cl_mem support_buffer(bloopcl_context *ctx, const float *host, size_t n)
{
    cl_int err;
    cl_mem buffer = clCreateBuffer(bloopcl_context_cl_context(ctx), CL_MEM_READ_WRITE,
                                   n * sizeof(float), NULL, &err);
    cr_assert_eq(err, CL_SUCCESS);
    if (host != NULL) {
        err = clEnqueueWriteBuffer(bloopcl_context_queue(ctx), buffer, CL_TRUE, 0,
                                   n * sizeof(float), host, 0, NULL, NULL);
    } else {
        const float zero = 0.0f;
        err = clEnqueueFillBuffer(bloopcl_context_queue(ctx), buffer, &zero, sizeof zero, 0,
                                  n * sizeof(float), 0, NULL, NULL);
        clFinish(bloopcl_context_queue(ctx));
    }
    cr_assert_eq(err, CL_SUCCESS);
    return buffer;
}

void support_read(bloopcl_context *ctx, cl_mem buffer, float *host, size_t n)
{
    cl_int err = clEnqueueReadBuffer(bloopcl_context_queue(ctx), buffer, CL_TRUE, 0,
                                     n * sizeof(float), host, 0, NULL, NULL);
    cr_assert_eq(err, CL_SUCCESS);
}

void support_check_step(bloopcl_combiner *comb, const bloopcl_config *config,
                        bloopcl_reference_state *ref, const float *g, const float *a,
                        const float *d_device, float *d_reference, int step)
{
    bloopcl_diagnostics device = BLOOPCL_DIAGNOSTICS_INIT, reference = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_diagnostics(comb, &device), BLOOPCL_OK);
    cr_assert_eq(bloopcl_reference_step(config, ref, g, a, d_reference, &reference), BLOOPCL_OK);
    support_expect_step_matches(config, ref->n, g, a, d_device, d_reference, &device, &reference,
                                ref->ema, ref->aux_ema, step);
}

bloopcl_combiner *support_combiner(bloopcl_context *ctx, const bloopcl_config *config, size_t n)
{
    bloopcl_combiner *comb = NULL;
    bloopcl_status status = bloopcl_combiner_create(ctx, config, n, &comb);
    cr_assert_eq(status, BLOOPCL_OK, "combiner_create(n = %zu): %s", n,
                 bloopcl_context_last_error(ctx));
    bloopcl_config in_force = {.struct_size = sizeof(bloopcl_config)};
    cr_assert_eq(bloopcl_combiner_config(comb, &in_force), BLOOPCL_OK);
    if (config->dots != BLOOPCL_DOTS_AUTO)
        cr_assert_eq(in_force.dots, config->dots, "the backend asked for is the one in force");
    return comb;
}

static double abs_dot(const float *x, const float *y, size_t n)
{
    double sum = 0.0;
    for (size_t i = 0; x != NULL && y != NULL && i < n; ++i)
        sum += fabs((double)x[i] * (double)y[i]);
    return sum;
}

/* |error of a fp32 dot| <= SUPPORT_DOT_RTOL * sum |x_i y_i| (plus a denormal floor). */
static void expect_dot(double device, double reference, double abs_sum, const char *name, int step)
{
    double tol = SUPPORT_DOT_RTOL * abs_sum + 1e-30;
    cr_expect(fabs(device - reference) <= tol, "%sstep %d: %s device %.9g reference %.9g "
              "(tol %.3g)", case_label, step, name, device, reference, tol);
}

/* Bound on |r_device - r_reference| from the dot bounds: r = x / (y + eps). */
static double ratio_tolerance(double r, double abs_xy, double yy, double eps)
{
    double denominator = yy + eps;
    if (denominator <= 0.0)
        return INFINITY;
    return (SUPPORT_DOT_RTOL * abs_xy + fabs(r) * SUPPORT_DOT_RTOL * yy) / denominator +
           8 * FLT_EPSILON * fabs(r) + 1e-30;
}

void support_expect_step_matches(const bloopcl_config *config, size_t n, const float *g,
                                 const float *a, const float *d_device, const float *d_reference,
                                 const bloopcl_diagnostics *device,
                                 const bloopcl_diagnostics *reference, const float *m_reference,
                                 const float *q_reference, int step)
{
    cr_assert_eq(device->accepted, reference->accepted, "%sstep %d: accepted", case_label, step);
    double eps = (float)config->eps, lambda = (float)config->lambda;
    double s = config->rescale ? 1.0 / (1.0 + lambda) : 1.0;
    double abs_ma = abs_dot(m_reference, a, n), abs_qg = abs_dot(q_reference, g, n);
    expect_dot(device->dot_ema_aux, reference->dot_ema_aux, abs_ma, "<m,a>", step);
    expect_dot(device->ema_norm_sq, reference->ema_norm_sq, reference->ema_norm_sq, "<m,m>", step);
    expect_dot(device->aux_norm_sq, reference->aux_norm_sq, reference->aux_norm_sq, "<a,a>", step);
    expect_dot(device->dot_aux_ema_main, reference->dot_aux_ema_main, abs_qg, "<q,g>", step);
    double dr = ratio_tolerance(reference->ratio_raw, abs_ma, reference->ema_norm_sq, eps);
    double dr_q = ratio_tolerance(reference->aux_ratio, abs_qg, reference->aux_ema_norm_sq, eps);
    cr_expect(fabs(device->ratio - reference->ratio) <= dr, "%sstep %d: r device %.9g reference "
              "%.9g (tol %.3g)", case_label, step, device->ratio, reference->ratio, dr);
    int reported = 0;
    for (size_t i = 0; i < n && reported < 5; ++i) {
        double m = m_reference ? fabs(m_reference[i]) : 0.0;
        double q = q_reference ? fabs(q_reference[i]) : 0.0;
        double gi = fabs(g[i]), ai = fabs(a[i]);
        double scale_terms = gi + lambda * ai + lambda * fabs(reference->ratio) * m +
                             fabs(reference->aux_ratio) * q + lambda * fabs(reference->ratio) * gi;
        /* only methods with that state contribute its ratio's error (inf * 0 would be NaN) */
        double ratio_terms = (m_reference ? lambda * dr * (m + gi) : 0.0) +
                             (q_reference ? dr_q * q : 0.0);
        double tol = s * (8 * FLT_EPSILON * scale_terms + ratio_terms) + 1e-37;
        if (!(fabs((double)d_device[i] - (double)d_reference[i]) <= tol)) {
            cr_expect_fail("%sstep %d: d[%zu] device %.9g reference %.9g (tol %.3g)", case_label,
                           step, i, d_device[i], d_reference[i], tol);
            ++reported;
        }
    }
}

void support_expect_state(bloopcl_combiner *comb, bloopcl_state_kind kind, const float *expected,
                          size_t n)
{
    float *state = support_alloc(n);
    bloopcl_status status = bloopcl_read_state(comb, kind, state, n);
    cr_assert_eq(status, BLOOPCL_OK, "%sread_state: %s", case_label, bloopcl_status_string(status));
    size_t mismatches = 0, first = 0;
    for (size_t i = 0; i < n; ++i)
        if (memcmp(&state[i], &expected[i], sizeof(float)) != 0 && mismatches++ == 0)
            first = i;
    cr_expect_eq(mismatches, 0, "%sstate %d: %zu elements differ, first [%zu] device %.9g "
                 "reference %.9g", case_label, (int)kind, mismatches, first, state[first],
                 expected[first]);
    free(state);
}

/* Inputs of step t: g drifts around a fixed direction (so the EMA matters) and a is partly
 * aligned with it (so r is far from 0 and its errors show). */
static void make_inputs(float *g, float *a, float *noise, size_t n, uint64_t seed, int t)
{
    support_fill_normal(g, n, seed, 1.0f);
    support_fill_normal(noise, n, seed * 1000003u + 2u * (uint64_t)t + 1u, 0.5f);
    for (size_t i = 0; i < n; ++i)
        g[i] += noise[i];
    support_fill_normal(a, n, seed * 1000003u + 2u * (uint64_t)t + 2u, 1.0f);
    float alpha = (t % 3 == 0) ? -0.7f : 0.4f;
    for (size_t i = 0; i < n; ++i)
        a[i] += alpha * g[i];
}

void support_make_inputs(float *g, float *a, float *noise, size_t n, uint64_t seed, int t)
{
    make_inputs(g, a, noise, n, seed, t);
}

void support_expect_dot(double device, double reference, double abs_sum, const char *name,
                        int step)
{
    expect_dot(device, reference, abs_sum, name, step);
}

void support_run_against_reference(const bloopcl_config *config, size_t n, int steps,
                                   uint64_t seed, bool use_host_call)
{
    bloopcl_context *ctx = support_context();
    bloopcl_combiner *comb = NULL;
    cr_assert_eq(bloopcl_combiner_create(ctx, config, n, &comb), BLOOPCL_OK, "%s",
                 bloopcl_context_last_error(ctx));
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(config, n, &ref), BLOOPCL_OK);
    float *g = support_alloc(n), *a = support_alloc(n), *noise = support_alloc(n);
    float *d_dev = support_alloc(n), *d_ref = support_alloc(n);
    cl_mem gb = support_buffer(ctx, NULL, n), ab = support_buffer(ctx, NULL, n);
    cl_mem db = support_buffer(ctx, NULL, n);
    for (int t = 0; t < steps; ++t) {
        make_inputs(g, a, noise, n, seed, t);
        bloopcl_status status;
        if (use_host_call) {
            status = bloopcl_step_host(comb, g, a, d_dev);
        } else {
            cr_assert_eq(clEnqueueWriteBuffer(bloopcl_context_queue(ctx), gb, CL_TRUE, 0,
                                              n * sizeof(float), g, 0, NULL, NULL), CL_SUCCESS);
            cr_assert_eq(clEnqueueWriteBuffer(bloopcl_context_queue(ctx), ab, CL_TRUE, 0,
                                              n * sizeof(float), a, 0, NULL, NULL), CL_SUCCESS);
            status = bloopcl_step_buffers(comb, gb, ab, db);
            support_read(ctx, db, d_dev, n);
        }
        cr_assert_eq(status, BLOOPCL_OK, "step %d: %s", t, bloopcl_context_last_error(ctx));
        support_check_step(comb, config, &ref, g, a, d_dev, d_ref, t);
    }
    if (ref.ema != NULL)
        support_expect_state(comb, BLOOPCL_STATE_EMA, ref.ema, n);
    if (ref.aux_ema != NULL)
        support_expect_state(comb, BLOOPCL_STATE_AUX_EMA, ref.aux_ema, n);
    clReleaseMemObject(gb);
    clReleaseMemObject(ab);
    clReleaseMemObject(db);
    free(g), free(a), free(noise), free(d_dev), free(d_ref);
    bloopcl_reference_free(&ref);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

const char *support_source_root(void)
{
    static const char *const candidates[] = {".", "..", "../.."};
    const char *root = getenv("BLOOPCL_TEST_SOURCE_ROOT");
    if (root != NULL && root[0] != '\0')
        return root;
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; ++i) {
        char probe[4096];
        snprintf(probe, sizeof probe, "%s/cl/common.cl", candidates[i]);
        if (access(probe, R_OK) == 0)
            return candidates[i];
    }
    cr_assert_fail("kernel sources not found: set BLOOPCL_TEST_SOURCE_ROOT");
    return NULL;
}

char *support_read_file(const char *path, size_t *length)
{
    FILE *file = fopen(path, "rb");
    cr_assert_not_null(file, "cannot open %s", path);
    cr_assert_eq(fseek(file, 0, SEEK_END), 0);
    long size = ftell(file);
    cr_assert_geq(size, 0);
    cr_assert_eq(fseek(file, 0, SEEK_SET), 0);
    char *text = malloc((size_t)size + 1);
    cr_assert_not_null(text);
    size_t got = fread(text, 1, (size_t)size, file);
    text[got] = '\0';
    fclose(file);
    if (length != NULL)
        *length = got;
    return text;
}
