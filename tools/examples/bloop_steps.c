/*
 * bloop_steps.c — the README's example as a program: what a trainer does with bloopcl, written
 * against the installed library and its stable API only (no BLOOPCL_EXPERIMENTAL).
 *
 * It creates a context on the default device (BLOOPCL_DEVICE), a Bloop combiner for n
 * parameters, and runs a few steps on device buffers g, a, d the way a training loop would,
 * then prints the ratio r = <m,a>/(<m,m>+eps) of the last step and checks one closed form:
 * with a = 2 g every step and w = 1 (m <- g), r = 2 |g|^2 / (|g|^2 + eps) ~ 2, and
 * d = g + lambda (a - r m) ~ g. CI builds it three ways against `meson install --destdir`:
 * pkg-config, meson's dependency('bloopcl') and CMake's find_package(bloopcl).
 */
#define CL_TARGET_OPENCL_VERSION 120
#include <bloopcl.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum { N = 100000, STEPS = 5 };

static cl_mem device_buffer(bloopcl_context *ctx, float *host)
{
    cl_int err;
    cl_mem buffer = clCreateBuffer(bloopcl_context_cl_context(ctx),
                                   CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, N * sizeof(float),
                                   host, &err);
    return err == CL_SUCCESS ? buffer : NULL;
}

static int fail(bloopcl_context *ctx, bloopcl_status status, const char *what)
{
    fprintf(stderr, "bloop_steps: %s: %s: %s\n", what, bloopcl_status_string(status),
            bloopcl_context_last_error(ctx));
    return 1;
}

int main(void)
{
    float *g = malloc(N * sizeof *g), *a = malloc(N * sizeof *a), *d = malloc(N * sizeof *d);
    if (g == NULL || a == NULL || d == NULL)
        return 1;
    for (size_t i = 0; i < N; i++) {
        g[i] = (float)sin(0.001 * (double)i);
        a[i] = 2.0f * g[i];
    }

    bloopcl_context *ctx = NULL;                      /* the device: BLOOPCL_DEVICE */
    bloopcl_status status = bloopcl_context_create(NULL, &ctx);
    if (status != BLOOPCL_OK)
        return fail(ctx, status, "bloopcl_context_create");
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);  /* w 0.1, lambda 0.1, eps 1e-7 */
    config.ema_weight = 1.0;                          /* m <- g: the closed form below */
    bloopcl_combiner *bloop = NULL;
    status = bloopcl_combiner_create(ctx, &config, N, &bloop);
    if (status != BLOOPCL_OK)
        return fail(ctx, status, "bloopcl_combiner_create");

    cl_mem g_buf = device_buffer(ctx, g), a_buf = device_buffer(ctx, a);
    cl_mem d_buf = device_buffer(ctx, d);
    if (g_buf == NULL || a_buf == NULL || d_buf == NULL)
        return fail(ctx, BLOOPCL_ERR_OPENCL, "clCreateBuffer");
    for (int step = 0; step < STEPS && status == BLOOPCL_OK; step++)
        status = bloopcl_step_buffers(bloop, g_buf, a_buf, d_buf);  /* asynchronous */
    if (status != BLOOPCL_OK)
        return fail(ctx, status, "bloopcl_step_buffers");

    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;  /* waits for the last step */
    status = bloopcl_get_diagnostics(bloop, &diag);
    if (status != BLOOPCL_OK)
        return fail(ctx, status, "bloopcl_get_diagnostics");
    cl_int err = clEnqueueReadBuffer(bloopcl_context_queue(ctx), d_buf, CL_TRUE, 0,
                                     N * sizeof(float), d, 0, NULL, NULL);
    double worst = 0.0;
    for (size_t i = 0; err == CL_SUCCESS && i < N; i++)
        worst = fmax(worst, fabs((double)d[i] - (double)g[i]));
    printf("bloopcl %s: %llu steps, r = %.6f (closed form 2), max |d - g| = %.2e\n",
           bloopcl_version_string(), (unsigned long long)diag.steps, diag.ratio, worst);
    int ok = err == CL_SUCCESS && diag.steps == STEPS && fabs(diag.ratio - 2.0) < 1e-4 &&
             worst < 1e-5;

    clReleaseMemObject(g_buf);
    clReleaseMemObject(a_buf);
    clReleaseMemObject(d_buf);
    bloopcl_combiner_destroy(bloop);
    bloopcl_context_destroy(ctx);
    free(g), free(a), free(d);
    return ok ? 0 : 1;
}
