/* step_host.c — the blocking convenience for host arrays: copy g and a to device staging
 * buffers (kept between calls), run bloopcl_step, read d back. Host arrays larger than the
 * device's largest allocation are split into several segments, which the step handles like any
 * segment list.
 *
 * Failure discipline (the caller may free g, a and d as soon as the call returns, whatever it
 * returns):
 *   - The uploads are non-blocking, so the queue may still read g and a after
 *     clEnqueueWriteBuffer has returned. Every return after the first upload was enqueued
 *     first waits for the last upload; the queue is in order, so all earlier ones are done too.
 *   - The staging buffers are made all or nothing: a failed allocation leaves none behind and
 *     records nothing, so the next call simply tries again.
 *   - A failure before or inside bloopcl_step leaves the state as bloopcl_step leaves it. A
 *     failure reading the results back comes after the step was applied; the message says so. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static size_t segment_capacity(const bloopcl_combiner *comb)
{
    return comb->ctx->state_chunk_elements;
}

/* ceil(n / capacity), written so that it cannot wrap for n near SIZE_MAX. */
static size_t staging_segment_count(const bloopcl_combiner *comb)
{
    size_t capacity = segment_capacity(comb);
    return comb->n / capacity + (comb->n % capacity != 0);
}

/* Elements of staging segment s: full segments of `capacity`, the last one holds the rest. */
static size_t staging_count(const bloopcl_combiner *comb, size_t s)
{
    size_t capacity = segment_capacity(comb), first = s * capacity;
    return comb->n - first < capacity ? comb->n - first : capacity;
}

static void release_staging_set(cl_mem *set[3], size_t segments)
{
    for (int k = 0; k < 3; ++k) {
        for (size_t s = 0; set[k] != NULL && s < segments; ++s)
            if (set[k][s] != NULL)
                clReleaseMemObject(set[k][s]);
        free(set[k]);
        set[k] = NULL;
    }
}

/* Creates the three per-segment buffer tables (g, a, d) into `set`, or nothing at all. */
static bloopcl_status create_staging_set(bloopcl_combiner *comb, size_t segments, cl_mem *set[3])
{
    for (int k = 0; k < 3; ++k)
        if ((set[k] = calloc(segments, sizeof(cl_mem))) == NULL) {
            release_staging_set(set, segments);
            return bloopcl__fail(comb->ctx, BLOOPCL_ERR_OUT_OF_MEMORY,
                                 "bloopcl_step_host: allocating the staging table of %zu "
                                 "segments", segments);
        }
    for (size_t s = 0; s < segments; ++s)
        for (int k = 0; k < 3; ++k) {
            cl_int err;
            set[k][s] = clCreateBuffer(comb->ctx->cl_ctx, CL_MEM_READ_WRITE,
                                       staging_count(comb, s) * sizeof(float), NULL, &err);
            if (err != CL_SUCCESS) {
                set[k][s] = NULL;
                release_staging_set(set, segments);
                return bloopcl__fail_cl(comb->ctx, err, "clCreateBuffer",
                                        "allocating bloopcl_step_host staging buffers");
            }
        }
    return BLOOPCL_OK;
}

/* The staging buffers hold g, a and d on the device: 3 n floats must fit its global memory
 * (a driver may abort rather than fail an allocation it cannot back: PoCL does). Checked
 * before anything is allocated or read; n * 4 cannot wrap (bloopcl_combiner_create). */
static bloopcl_status check_staging_fits(bloopcl_combiner *comb)
{
    cl_ulong device = comb->ctx->info.global_mem_bytes;
    if (comb->n <= device / (3 * sizeof(float)))
        return BLOOPCL_OK;
    return bloopcl__fail(comb->ctx, BLOOPCL_ERR_OUT_OF_MEMORY, "bloopcl_step_host: staging g, a "
                         "and d needs 3 x %zu floats but device \"%s\" has %llu bytes of global "
                         "memory; step over device buffers with bloopcl_step instead", comb->n,
                         comb->ctx->info.device_name, (unsigned long long)device);
}

/* Invariant: staging_segments > 0 exactly when every staging buffer exists. */
static bloopcl_status ensure_staging(bloopcl_combiner *comb, size_t segments)
{
    if (comb->staging_segments == segments)
        return BLOOPCL_OK;
    cl_mem *set[3] = {NULL, NULL, NULL};
    if ((cl_ulong)comb->n > CL_ULONG_MAX / (3 * sizeof(float)))
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_OUT_OF_MEMORY, "bloopcl_step_host: n = %zu: "
                             "the staging buffers' size overflows", comb->n);
    cl_ulong bytes = 3 * (cl_ulong)comb->n * sizeof(float);  /* counted with the context's */
    bloopcl_status status = bloopcl__reserve_bytes(comb, bytes, "bloopcl_step_host: the staging "
                                                   "buffers of g, a and d");
    if (status != BLOOPCL_OK)
        return status;
    status = create_staging_set(comb, segments, set);
    if (status != BLOOPCL_OK) {
        bloopcl__unreserve_bytes(comb, bytes);
        return status;
    }
    if (comb->staging_segments > 0)
        bloopcl__unreserve_bytes(comb, bytes);  /* the set replaced held as much */
    release_staging_set(comb->staging, comb->staging_segments);
    for (int k = 0; k < 3; ++k)
        comb->staging[k] = set[k];
    comb->staging_segments = segments;
    return BLOOPCL_OK;
}

/* Builds the three segment lists over the staging buffers and enqueues the uploads of g and a.
 * `*last` holds the event of the last upload enqueued (NULL while none was). */
static bloopcl_status upload(bloopcl_combiner *comb, const float *g, const float *a,
                             bloopcl_segment *lists[3], cl_event *last)
{
    size_t capacity = segment_capacity(comb);
    const float *sources[2] = {g, a};
    for (size_t s = 0; s < comb->staging_segments; ++s) {
        size_t count = staging_count(comb, s);
        for (int k = 0; k < 3; ++k)
            lists[k][s] = (bloopcl_segment){.buffer = comb->staging[k][s], .count = count};
        for (int k = 0; k < 2; ++k) {
            cl_event event = NULL;
            cl_int err = clEnqueueWriteBuffer(comb->ctx->queue, comb->staging[k][s], CL_FALSE, 0,
                                              count * sizeof(float), sources[k] + s * capacity,
                                              0, NULL, &event);
            if (err != CL_SUCCESS)
                return bloopcl__fail_cl(comb->ctx, err, "clEnqueueWriteBuffer", "uploading g, a");
            if (*last != NULL)
                clReleaseEvent(*last);
            *last = event;
        }
    }
    return BLOOPCL_OK;
}

/* Returns once the queue no longer reads the caller's g and a. clWaitForEvents also returns
 * (with an error) when the upload was terminated, which equally ends its reads; if the wait
 * itself cannot be done, draining the whole queue is the remaining way to be sure. */
static void wait_for_uploads(bloopcl_context *ctx, cl_event last)
{
    if (last == NULL)
        return;
    if (clWaitForEvents(1, &last) != CL_SUCCESS)
        clFinish(ctx->queue);
    clReleaseEvent(last);
}

static bloopcl_status download(bloopcl_combiner *comb, float *d)
{
    size_t capacity = segment_capacity(comb);
    for (size_t s = 0; s < comb->staging_segments; ++s) {
        cl_int err = clEnqueueReadBuffer(comb->ctx->queue, comb->staging[2][s], CL_TRUE, 0,
                                         staging_count(comb, s) * sizeof(float),
                                         d + s * capacity, 0, NULL, NULL);
        if (err != CL_SUCCESS)
            return bloopcl__fail_cl(comb->ctx, err, "clEnqueueReadBuffer", "reading d");
    }
    return BLOOPCL_OK;
}

/* The step was enqueued (the state advanced, the step is counted) but its results could not be
 * read: say so in front of the failing call's message, so a caller does not retry blindly. */
static bloopcl_status fail_after_step(bloopcl_context *ctx, bloopcl_status status)
{
    char cause[BLOOPCL_ERROR_CAPACITY];
    memcpy(cause, ctx->last_error, sizeof cause);
    cause[sizeof cause - 1] = '\0';
    return bloopcl__fail(ctx, status, "bloopcl_step_host: the step was applied (the state "
                         "advanced) but its results could not be read back: %s", cause);
}

/* Runs the step on uploaded inputs and reads d and the acceptance flag back. */
static bloopcl_status step_and_download(bloopcl_combiner *comb, float *d,
                                        bloopcl_segment *lists[3])
{
    bloopcl_tensor tensors[3];
    for (int k = 0; k < 3; ++k)
        tensors[k] = (bloopcl_tensor){lists[k], comb->staging_segments};
    bloopcl_status status = bloopcl__step(comb, &tensors[0], &tensors[1], &tensors[2], NULL, 0, NULL,
                                          NULL);
    if (status != BLOOPCL_OK)
        return status;  /* not applied, or BLOOPCL_ERR_STATE_INVALID: bloopcl_step's contract */
    bloopcl_diagnostics diag = {.struct_size = sizeof diag};
    status = download(comb, d);
    if (status == BLOOPCL_OK)
        status = bloopcl__get_diagnostics(comb, &diag);
    if (status != BLOOPCL_OK)
        return fail_after_step(comb->ctx, status);
    if (!diag.accepted && diag.reason == BLOOPCL_SKIP_OUT_OF_RANGE)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_OUT_OF_RANGE,
                             "bloopcl_step_host: g and a are finite but r = %g, r_q = %g (from "
                             "<m,a> = %g, <m,m> = %g, <q,g> = %g, <q,q> = %g) is beyond fp32's "
                             "range on this backend; the step was skipped (d = 0, state "
                             "unchanged)", diag.ratio_raw, diag.aux_ratio, diag.dot_ema_aux,
                             diag.ema_norm_sq, diag.dot_aux_ema_main, diag.aux_ema_norm_sq);
    if (!diag.accepted)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_NONFINITE_INPUT,
                             "bloopcl_step_host: g or a holds NaN or Inf; the step was "
                             "skipped (d = 0, state unchanged)");
    return BLOOPCL_OK;
}

static bloopcl_status step_staged(bloopcl_combiner *comb, const float *g, const float *a, float *d,
                                  bloopcl_segment *lists[3])
{
    cl_event last_upload = NULL;
    bloopcl_status status = upload(comb, g, a, lists, &last_upload);
    if (status == BLOOPCL_OK)
        status = step_and_download(comb, d, lists);
    wait_for_uploads(comb->ctx, last_upload);  /* on every path: g and a are free to go */
    return status;
}

static bloopcl_status step_host(bloopcl_combiner *comb, const float *g, const float *a, float *d)
{
    bloopcl__clear_error(comb->ctx);
    if (g == NULL || a == NULL || d == NULL)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_NULL_ARGUMENT,
                             "bloopcl_step_host: g, a and d must not be NULL");
    size_t segments = staging_segment_count(comb);
    bloopcl_status status = check_staging_fits(comb);
    if (status == BLOOPCL_OK)
        status = ensure_staging(comb, segments);
    bloopcl_segment *lists[3] = {NULL, NULL, NULL};
    for (int k = 0; k < 3 && status == BLOOPCL_OK; ++k)
        if ((lists[k] = calloc(segments, sizeof(bloopcl_segment))) == NULL)
            status = bloopcl__fail(comb->ctx, BLOOPCL_ERR_OUT_OF_MEMORY,
                                   "bloopcl_step_host: allocating %zu segment descriptors",
                                   segments);
    if (status == BLOOPCL_OK)
        status = step_staged(comb, g, a, d, lists);
    for (int k = 0; k < 3; ++k)
        free(lists[k]);
    return status;
}

bloopcl_status bloopcl_step_host(bloopcl_combiner *comb, const float *g, const float *a, float *d)
{
    if (comb == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    if (!bloopcl__enter(comb->ctx))
        return BLOOPCL_ERR_BUSY;
    bloopcl_status status = bloopcl__check_no_split_step(comb, "bloopcl_step_host");
    if (status == BLOOPCL_OK)  /* before anything is staged */
        status = step_host(comb, g, a, d);
    bloopcl__leave(comb->ctx);
    return status;
}
