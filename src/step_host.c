/* step_host.c — the blocking convenience for host arrays: copy g and a to device staging
 * buffers (kept between calls), run bloopcl_step, read d back. Host arrays larger than the
 * device's largest allocation are split into several segments, which the step handles like any
 * segment list. */
#include "internal.h"

#include <stdlib.h>

static size_t segment_capacity(const bloopcl_combiner *comb)
{
    return comb->ctx->state_chunk_elements;
}

static bloopcl_status allocate_staging(bloopcl_combiner *comb, size_t segments)
{
    if (comb->staging_segments == segments)
        return BLOOPCL_OK;
    for (int k = 0; k < 3; ++k) {
        comb->staging[k] = calloc(segments, sizeof(cl_mem));
        if (comb->staging[k] == NULL)
            return bloopcl__fail(comb->ctx, BLOOPCL_ERR_OUT_OF_MEMORY, "allocating staging");
    }
    comb->staging_segments = segments;
    size_t capacity = segment_capacity(comb);
    for (size_t s = 0; s < segments; ++s) {
        size_t count = comb->n - s * capacity < capacity ? comb->n - s * capacity : capacity;
        for (int k = 0; k < 3; ++k) {
            cl_int err;
            comb->staging[k][s] = clCreateBuffer(comb->ctx->cl_ctx, CL_MEM_READ_WRITE,
                                                 count * sizeof(float), NULL, &err);
            if (err != CL_SUCCESS)
                return bloopcl__fail_cl(comb->ctx, err, "clCreateBuffer",
                                        "allocating bloopcl_step_host staging buffers");
        }
    }
    return BLOOPCL_OK;
}

/* Builds the three segment lists over the staging buffers and uploads g and a. */
static bloopcl_status upload(bloopcl_combiner *comb, const float *g, const float *a,
                             bloopcl_segment *lists[3])
{
    size_t capacity = segment_capacity(comb);
    const float *sources[2] = {g, a};
    for (size_t s = 0; s < comb->staging_segments; ++s) {
        size_t first = s * capacity;
        size_t count = comb->n - first < capacity ? comb->n - first : capacity;
        for (int k = 0; k < 3; ++k)
            lists[k][s] = (bloopcl_segment){.buffer = comb->staging[k][s], .count = count};
        for (int k = 0; k < 2; ++k) {
            cl_int err = clEnqueueWriteBuffer(comb->ctx->queue, comb->staging[k][s], CL_FALSE, 0,
                                              count * sizeof(float), sources[k] + first, 0, NULL,
                                              NULL);
            if (err != CL_SUCCESS)
                return bloopcl__fail_cl(comb->ctx, err, "clEnqueueWriteBuffer", "uploading g, a");
        }
    }
    return BLOOPCL_OK;
}

static bloopcl_status download(bloopcl_combiner *comb, float *d)
{
    size_t capacity = segment_capacity(comb);
    for (size_t s = 0; s < comb->staging_segments; ++s) {
        size_t first = s * capacity;
        size_t count = comb->n - first < capacity ? comb->n - first : capacity;
        cl_int err = clEnqueueReadBuffer(comb->ctx->queue, comb->staging[2][s], CL_TRUE, 0,
                                         count * sizeof(float), d + first, 0, NULL, NULL);
        if (err != CL_SUCCESS)
            return bloopcl__fail_cl(comb->ctx, err, "clEnqueueReadBuffer", "reading d");
    }
    return BLOOPCL_OK;
}

static bloopcl_status step_staged(bloopcl_combiner *comb, const float *g, const float *a, float *d,
                                  bloopcl_segment *lists[3])
{
    bloopcl_status status = upload(comb, g, a, lists);
    if (status != BLOOPCL_OK)
        return status;
    bloopcl_tensor tensors[3];
    for (int k = 0; k < 3; ++k)
        tensors[k] = (bloopcl_tensor){lists[k], comb->staging_segments};
    status = bloopcl_step(comb, &tensors[0], &tensors[1], &tensors[2], 0, NULL, NULL);
    if (status == BLOOPCL_OK)
        status = download(comb, d);
    bloopcl_diagnostics diag;
    if (status == BLOOPCL_OK)
        status = bloopcl_get_diagnostics(comb, &diag);
    if (status == BLOOPCL_OK && !diag.accepted)
        status = bloopcl__fail(comb->ctx, BLOOPCL_ERR_NONFINITE_INPUT,
                               "bloopcl_step_host: g or a holds NaN or Inf; the step was "
                               "skipped (d = 0, state unchanged)");
    return status;
}

bloopcl_status bloopcl_step_host(bloopcl_combiner *comb, const float *g, const float *a, float *d)
{
    if (comb == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    bloopcl__clear_error(comb->ctx);
    if (g == NULL || a == NULL || d == NULL)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_NULL_ARGUMENT,
                             "bloopcl_step_host: g, a and d must not be NULL");
    size_t capacity = segment_capacity(comb);
    size_t segments = (comb->n + capacity - 1) / capacity;
    bloopcl_status status = allocate_staging(comb, segments);
    bloopcl_segment *lists[3] = {NULL, NULL, NULL};
    for (int k = 0; k < 3 && status == BLOOPCL_OK; ++k)
        if ((lists[k] = calloc(segments, sizeof(bloopcl_segment))) == NULL)
            status = bloopcl__fail(comb->ctx, BLOOPCL_ERR_OUT_OF_MEMORY, "bloopcl_step_host");
    if (status == BLOOPCL_OK)
        status = step_staged(comb, g, a, d, lists);
    for (int k = 0; k < 3; ++k)
        free(lists[k]);
    return status;
}

