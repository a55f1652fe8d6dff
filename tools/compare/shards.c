/* shards.c — see shards.h. */
#include "shards.h"

#include <stdio.h>
#include <string.h>

void shards_layout(size_t n, size_t count, size_t *start, size_t *size)
{
    size_t parts = count * (count + 1) / 2, at = 0;
    for (size_t k = 0; k < count; ++k) {
        size[k] = k + 1 == count ? n - at : n / parts * (k + 1);
        start[k] = at;
        at += size[k];
    }
}

void sharded_destroy(sharded *s)
{
    for (size_t k = 0; k < s->count; ++k) {
        bloopcl_combiner_destroy(s->comb[k]);
        cl_mem *buffers[] = {&s->g[k], &s->a[k], &s->d[k]};
        for (int b = 0; b < 3; ++b)
            if (*buffers[b] != NULL)
                clReleaseMemObject(*buffers[b]);
    }
    memset(s, 0, sizeof *s);
}

static cl_mem make_buffer(bloopcl_context *ctx, size_t n, cl_int *err)
{
    return clCreateBuffer(bloopcl_context_cl_context(ctx), CL_MEM_READ_WRITE, n * sizeof(float),
                          NULL, err);
}

bloopcl_status sharded_create(bloopcl_context *ctx, const bloopcl_config *config, size_t n,
                              size_t count, sharded *s, char *why, size_t why_size)
{
    memset(s, 0, sizeof *s);
    s->ctx = ctx;
    s->count = count;
    s->n = n;
    shards_layout(n, count, s->start, s->size);
    for (size_t k = 0; k < count; ++k) {
        if (s->size[k] == 0)
            continue;
        bloopcl_config slice = *config;  /* the shard's slice of the initial state */
        slice.random_offset = config->random_offset + s->start[k];
        if (config->initial_ema != NULL)
            slice.initial_ema = config->initial_ema + s->start[k];
        if (config->initial_aux_ema != NULL)
            slice.initial_aux_ema = config->initial_aux_ema + s->start[k];
        bloopcl_status status = bloopcl_combiner_create(ctx, &slice, s->size[k], &s->comb[k]);
        cl_int err = CL_SUCCESS;
        if (status == BLOOPCL_OK) {
            s->g[k] = make_buffer(ctx, s->size[k], &err);
            if (err == CL_SUCCESS)
                s->a[k] = make_buffer(ctx, s->size[k], &err);
            if (err == CL_SUCCESS)
                s->d[k] = make_buffer(ctx, s->size[k], &err);
            if (err != CL_SUCCESS)
                status = BLOOPCL_ERR_OUT_OF_MEMORY;
        }
        if (status != BLOOPCL_OK) {
            snprintf(why, why_size, "shard %zu of %zu (%zu elements): %s", k, count, s->size[k],
                     err != CL_SUCCESS ? "clCreateBuffer failed"
                                       : bloopcl_context_last_error(ctx));
            sharded_destroy(s);
            return status;
        }
    }
    return BLOOPCL_OK;
}

static bloopcl_status shard_failed(const sharded *s, size_t k, const char *call,
                                   bloopcl_status status, char *why, size_t why_size)
{
    snprintf(why, why_size, "shard %zu: %s: %s", k, call, bloopcl_context_last_error(s->ctx));
    return status;
}

static bool upload(const sharded *s, size_t k, const float *g, const float *a)
{
    cl_command_queue queue = bloopcl_context_queue(s->ctx);
    size_t bytes = s->size[k] * sizeof(float);
    return clEnqueueWriteBuffer(queue, s->g[k], CL_TRUE, 0, bytes, g + s->start[k], 0, NULL,
                                NULL) == CL_SUCCESS &&
           clEnqueueWriteBuffer(queue, s->a[k], CL_TRUE, 0, bytes, a + s->start[k], 0, NULL,
                                NULL) == CL_SUCCESS;
}

/* The first halves; on a refusal the shards already begun cancel (nobody steps alone). */
static bloopcl_status begin_all(sharded *s, const float *g, const float *a, double *rows,
                                char *why, size_t why_size)
{
    for (size_t k = 0; k < s->count; ++k) {
        memset(rows + k * BLOOPCL_NUM_TOTALS, 0, BLOOPCL_NUM_TOTALS * sizeof(double));
        if (s->comb[k] == NULL)
            continue;
        bloopcl_status status = upload(s, k, g, a) ? BLOOPCL_OK : BLOOPCL_ERR_OPENCL;
        bloopcl_segment seg[3] = {{.buffer = s->g[k], .count = s->size[k]},
                                  {.buffer = s->a[k], .count = s->size[k]},
                                  {.buffer = s->d[k], .count = s->size[k]}};
        bloopcl_tensor tg = {&seg[0], 1}, ta = {&seg[1], 1}, td = {&seg[2], 1};
        if (status == BLOOPCL_OK)
            status = bloopcl_step_begin(s->comb[k], &tg, &ta, &td, NULL, 0, NULL,
                                        rows + k * BLOOPCL_NUM_TOTALS);
        if (status != BLOOPCL_OK) {
            for (size_t j = 0; j < k; ++j)
                if (s->comb[j] != NULL)
                    bloopcl_step_cancel(s->comb[j]);
            return shard_failed(s, k, "bloopcl_step_begin", status, why, why_size);
        }
    }
    return BLOOPCL_OK;
}

bloopcl_status sharded_step(sharded *s, const float *g, const float *a, float *d, char *why,
                            size_t why_size)
{
    double rows[SHARDS_MAX * BLOOPCL_NUM_TOTALS], global[BLOOPCL_NUM_TOTALS];
    bloopcl_status status = begin_all(s, g, a, rows, why, why_size);
    if (status != BLOOPCL_OK)
        return status;
    bloopcl_sum_totals(rows, s->count, global);
    for (size_t k = 0; k < s->count; ++k) {
        if (s->comb[k] == NULL)
            continue;
        status = bloopcl_step_end(s->comb[k], global, NULL);
        if (status != BLOOPCL_OK) {
            shard_failed(s, k, "bloopcl_step_end", status, why, why_size);
            for (size_t j = k + 1; j < s->count; ++j)  /* nothing left pending */
                if (s->comb[j] != NULL)
                    bloopcl_step_cancel(s->comb[j]);
            return status;
        }
        if (clEnqueueReadBuffer(bloopcl_context_queue(s->ctx), s->d[k], CL_TRUE, 0,
                                s->size[k] * sizeof(float), d + s->start[k], 0, NULL,
                                NULL) != CL_SUCCESS)
            return shard_failed(s, k, "reading d", BLOOPCL_ERR_OPENCL, why, why_size);
    }
    return BLOOPCL_OK;
}

bloopcl_status sharded_read_state(sharded *s, bloopcl_state_kind kind, float *out)
{
    for (size_t k = 0; k < s->count; ++k) {
        if (s->comb[k] == NULL)
            continue;
        bloopcl_status status = bloopcl_read_state(s->comb[k], kind, out + s->start[k],
                                                   s->size[k]);
        if (status != BLOOPCL_OK)
            return status;
    }
    return BLOOPCL_OK;
}

/* The fields every shard computes from the same global totals. */
static bool same_scalars(const bloopcl_diagnostics *x, const bloopcl_diagnostics *y)
{
    const double fx[] = {x->ratio, x->ratio_raw, x->aux_ratio, x->dot_ema_aux, x->ema_norm_sq,
                         x->aux_norm_sq, x->dot_aux_ema_main, x->aux_ema_norm_sq,
                         x->grad_norm_sq};
    const double fy[] = {y->ratio, y->ratio_raw, y->aux_ratio, y->dot_ema_aux, y->ema_norm_sq,
                         y->aux_norm_sq, y->dot_aux_ema_main, y->aux_ema_norm_sq,
                         y->grad_norm_sq};
    return memcmp(fx, fy, sizeof fx) == 0 && x->accepted == y->accepted &&
           x->reason == y->reason && x->steps == y->steps;
}

bloopcl_status sharded_diagnostics(sharded *s, bloopcl_diagnostics *out, bool *agree)
{
    bool first = true;
    *agree = true;
    for (size_t k = 0; k < s->count; ++k) {
        if (s->comb[k] == NULL)
            continue;
        bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
        bloopcl_status status = bloopcl_get_diagnostics(s->comb[k], &diag);
        if (status != BLOOPCL_OK)
            return status;
        if (first)
            *out = diag;
        else
            *agree = *agree && same_scalars(out, &diag);
        first = false;
    }
    return BLOOPCL_OK;
}
