/* step.c — one step, enqueued on the context's in-order queue:
 *   pass 1   (backend) EMA, non-finite check, partial dot products per piece
 *   finalize one work-group: partials -> r (and r_q), acceptance, device flags
 *   pass 2   per piece: d, and the state commit (or undo) into the spare buffers
 * then the host flips the double buffer. Scalars stay on the device throughout. */
#include "internal.h"

#include <stdarg.h>

size_t bloopcl__round_up(size_t value, size_t multiple)
{
    return (value + multiple - 1) / multiple * multiple;
}

bloopcl_status bloopcl__set_args(bloopcl_context *ctx, cl_kernel kernel, const char *name,
                                 size_t count, ...)
{
    va_list args;
    va_start(args, count);
    cl_int err = CL_SUCCESS;
    cl_uint failed = 0;
    for (cl_uint i = 0; i < count; ++i) {
        size_t size = va_arg(args, size_t);
        const void *value = va_arg(args, const void *);
        if (err == CL_SUCCESS && (err = clSetKernelArg(kernel, i, size, value)) != CL_SUCCESS)
            failed = i;
    }
    va_end(args);
    if (err != CL_SUCCESS) {
        char what[160];
        bloopcl__format(what, sizeof what, "setting argument %u of %s", (unsigned)failed, name);
        return bloopcl__fail_cl(ctx, err, "clSetKernelArg", what);
    }
    return BLOOPCL_OK;
}

bloopcl_status bloopcl__enqueue_1d(bloopcl_context *ctx, cl_kernel kernel, const char *name,
                                   size_t global, size_t local)
{
    cl_int err = clEnqueueNDRangeKernel(ctx->queue, kernel, 1, NULL, &global, &local, 0, NULL,
                                        NULL);
    if (err != CL_SUCCESS) {
        char what[160];
        bloopcl__format(what, sizeof what, "launching %s (global %zu, local %zu)", name, global,
                        local);
        return bloopcl__fail_cl(ctx, err, "clEnqueueNDRangeKernel", what);
    }
    return BLOOPCL_OK;
}

int bloopcl__dots_mask(const bloopcl_combiner *comb)
{
    int mask = 1 << BLOOPCL_DOT_MAIN_MAIN;  /* the gradient norm, always */
    if (bloopcl__method_has_ema(comb->config.method))
        mask |= (1 << BLOOPCL_DOT_EMA_AUX) | (1 << BLOOPCL_DOT_EMA_EMA) | (1 << BLOOPCL_DOT_AUX_AUX);
    if (bloopcl__method_has_aux_ema(comb->config.method))
        mask |= (1 << BLOOPCL_DOT_AUXEMA_MAIN) | (1 << BLOOPCL_DOT_AUXEMA_AUXEMA);
    return mask;
}

size_t bloopcl__partial_slots(const bloopcl_combiner *comb, size_t num_pieces)
{
    if (comb->config.dots == BLOOPCL_DOTS_FUSED)
        return num_pieces * comb->ctx->kernels.fused_groups;
    return num_pieces;
}

bloopcl_status bloopcl__ensure_partials(bloopcl_combiner *comb, size_t slots)
{
    if (slots == 0)
        slots = 1;  /* the finalize kernel always takes a buffer */
    if (comb->partials != NULL && slots <= comb->partial_slots)
        return BLOOPCL_OK;
    cl_int err;
    cl_mem grown = clCreateBuffer(comb->ctx->cl_ctx, CL_MEM_READ_WRITE,
                                  slots * BLOOPCL_NUM_DOTS * sizeof(float), NULL, &err);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(comb->ctx, err, "clCreateBuffer", "allocating dot partials");
    if (comb->partials != NULL)
        clReleaseMemObject(comb->partials);
    comb->partials = grown;
    comb->partial_slots = slots;
    return BLOOPCL_OK;
}

static bloopcl_status enqueue_finalize(bloopcl_combiner *comb, size_t slots)
{
    bloopcl_context *ctx = comb->ctx;
    cl_kernel k = ctx->kernels.finalize;
    size_t local = ctx->kernels.finalize_group_size;
    cl_ulong slots_arg = slots;
    cl_int mask = bloopcl__dots_mask(comb);
    cl_int method = (cl_int)comb->config.method;
    cl_int skip = comb->config.nonfinite == BLOOPCL_NONFINITE_SKIP;
    cl_float scale = comb->config.rescale ? 1.0f / (1.0f + comb->lambda) : 1.0f;
    /* 1/lambda is divided here, correctly rounded, rather than by a device that may be
     * allowed 2.5 ulp: the dynamic barrier's cap is then the same float everywhere. */
    cl_float cap = comb->lambda > 0.0f ? 1.0f / comb->lambda : 0.0f;
    bloopcl_status status = bloopcl__set_args(ctx, k, "bloopcl_finalize", 13,
        BLOOPCL_ARG(comb->partials), BLOOPCL_ARG(slots_arg), BLOOPCL_ARG(mask),
        BLOOPCL_ARG(comb->scalars), BLOOPCL_ARG(comb->flags), BLOOPCL_ARG(method),
        BLOOPCL_ARG(skip), BLOOPCL_ARG(comb->w), BLOOPCL_ARG(comb->lambda),
        BLOOPCL_ARG(comb->eps), BLOOPCL_ARG(scale), BLOOPCL_ARG(cap),
        (size_t)(BLOOPCL_NUM_DOTS * local * sizeof(float)), (const void *)NULL);
    if (status != BLOOPCL_OK)
        return status;
    return bloopcl__enqueue_1d(ctx, k, "bloopcl_finalize", local, local);
}

static bloopcl_status enqueue_project_piece(bloopcl_combiner *comb, const bloopcl_piece *p)
{
    bloopcl_context *ctx = comb->ctx;
    cl_kernel k = ctx->kernels.project;
    bloopcl_state_chunk *chunk = comb->num_chunks ? &comb->chunks[p->state_chunk] : NULL;
    cl_mem none = NULL;
    cl_mem m_cur = chunk ? chunk->ema[comb->current] : none;
    cl_mem m_next = chunk ? chunk->ema[1 - comb->current] : none;
    cl_mem q_cur = chunk ? chunk->aux_ema[comb->current] : none;
    cl_mem q_next = chunk ? chunk->aux_ema[1 - comb->current] : none;
    cl_ulong g_off = p->g_offset, a_off = p->a_offset, d_off = p->d_offset;
    cl_ulong s_off = p->state_offset, count = p->count;
    cl_int method = (cl_int)comb->config.method, ratio_only = comb->config.ratio_only != 0;
    cl_int has_ema = bloopcl__method_has_ema(comb->config.method);
    cl_int has_aux = bloopcl__method_has_aux_ema(comb->config.method);
    cl_int recompute = comb->config.dots == BLOOPCL_DOTS_FUSED;
    bloopcl_status status = bloopcl__set_args(ctx, k, "bloopcl_project", 20,
        BLOOPCL_ARG(p->g), BLOOPCL_ARG(g_off), BLOOPCL_ARG(p->a), BLOOPCL_ARG(a_off),
        BLOOPCL_ARG(p->d), BLOOPCL_ARG(d_off), BLOOPCL_ARG(m_cur), BLOOPCL_ARG(m_next),
        BLOOPCL_ARG(q_cur), BLOOPCL_ARG(q_next), BLOOPCL_ARG(s_off), BLOOPCL_ARG(count),
        BLOOPCL_ARG(method), BLOOPCL_ARG(ratio_only), BLOOPCL_ARG(has_ema), BLOOPCL_ARG(has_aux),
        BLOOPCL_ARG(recompute), BLOOPCL_ARG(comb->lambda), BLOOPCL_ARG(comb->scalars),
        BLOOPCL_ARG(comb->flags));
    if (status != BLOOPCL_OK)
        return status;
    size_t local = ctx->kernels.elementwise_group_size;
    return bloopcl__enqueue_1d(ctx, k, "bloopcl_project", ctx->kernels.elementwise_groups * local, local);
}

/* A step that failed half-way must not leak into the next one: clear the non-finite flag and,
 * if finalize already ran, put INITIALIZED and ACCEPTED back. The state buffers need nothing:
 * only the spare half was written and the host does not flip. */
static void undo_flags(bloopcl_combiner *comb, bool finalized)
{
    const cl_int zero = 0;
    cl_command_queue queue = comb->ctx->queue;
    clEnqueueWriteBuffer(queue, comb->flags, CL_TRUE, BLOOPCL_FLAG_NONFINITE * sizeof(cl_int),
                         sizeof zero, &zero, 0, NULL, NULL);
    if (finalized)
        clEnqueueCopyBuffer(queue, comb->flags, comb->flags,
                            BLOOPCL_FLAG_BACKUP_INITIALIZED * sizeof(cl_int),
                            BLOOPCL_FLAG_INITIALIZED * sizeof(cl_int), 2 * sizeof(cl_int), 0,
                            NULL, NULL);
    clFinish(queue);
}

static bloopcl_status check_events(bloopcl_combiner *comb, cl_uint num_wait,
                                   const cl_event *wait_list)
{
    if ((num_wait == 0) != (wait_list == NULL))
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_INVALID_ARGUMENT,
                             "bloopcl_step: num_wait_events = %u but wait_list is %s",
                             (unsigned)num_wait, wait_list ? "not NULL" : "NULL");
    return BLOOPCL_OK;
}

static bloopcl_status enqueue_wait(bloopcl_context *ctx, cl_uint num_wait, const cl_event *list)
{
    if (num_wait == 0)
        return BLOOPCL_OK;
    cl_int err = clEnqueueBarrierWithWaitList(ctx->queue, num_wait, list, NULL);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(ctx, err, "clEnqueueBarrierWithWaitList", "waiting for events");
    return BLOOPCL_OK;
}

static bloopcl_status enqueue_passes(bloopcl_combiner *comb, size_t num_pieces, size_t slots,
                                     bool *finalized)
{
    bloopcl_status status = comb->config.dots == BLOOPCL_DOTS_FUSED
                                ? bloopcl__enqueue_fused_pass(comb, num_pieces, slots)
                                : bloopcl__enqueue_clblast_pass(comb, num_pieces, slots);
    if (status != BLOOPCL_OK)
        return status;
    status = enqueue_finalize(comb, slots);
    if (status != BLOOPCL_OK)
        return status;
    *finalized = true;
    for (size_t p = 0; p < num_pieces && status == BLOOPCL_OK; ++p)
        status = enqueue_project_piece(comb, &comb->pieces[p]);
    return status;
}

bloopcl_status bloopcl_step(bloopcl_combiner *comb, const bloopcl_tensor *g,
                            const bloopcl_tensor *a, const bloopcl_tensor *d,
                            cl_uint num_wait_events, const cl_event *wait_list, cl_event *done)
{
    if (comb == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    bloopcl_context *ctx = comb->ctx;
    bloopcl__clear_error(ctx);
    size_t num_pieces = 0;
    bloopcl_status status = check_events(comb, num_wait_events, wait_list);
    if (status == BLOOPCL_OK)
        status = bloopcl__plan_pieces(comb, g, a, d, &num_pieces);
    size_t slots = bloopcl__partial_slots(comb, num_pieces);
    if (status == BLOOPCL_OK)
        status = bloopcl__ensure_partials(comb, slots);
    if (status == BLOOPCL_OK)
        status = enqueue_wait(ctx, num_wait_events, wait_list);
    if (status != BLOOPCL_OK)
        return status;  /* nothing of this step was enqueued */

    bool finalized = false;
    status = enqueue_passes(comb, num_pieces, slots, &finalized);
    if (status != BLOOPCL_OK) {
        undo_flags(comb, finalized);
        return status;
    }
    comb->current = 1 - comb->current;
    comb->steps++;
    if (done != NULL) {
        cl_int err = clEnqueueMarkerWithWaitList(ctx->queue, 0, NULL, done);
        if (err != CL_SUCCESS)
            return bloopcl__fail_cl(ctx, err, "clEnqueueMarkerWithWaitList",
                                    "creating the completion event (the step itself is enqueued)");
    }
    return BLOOPCL_OK;
}

bloopcl_status bloopcl_step_buffers(bloopcl_combiner *comb, cl_mem g, cl_mem a, cl_mem d)
{
    if (comb == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    bloopcl_segment segments[3] = {
        {.buffer = g, .count = comb->n}, {.buffer = a, .count = comb->n},
        {.buffer = d, .count = comb->n}};
    bloopcl_tensor tg = {&segments[0], 1}, ta = {&segments[1], 1}, td = {&segments[2], 1};
    return bloopcl_step(comb, &tg, &ta, &td, 0, NULL, NULL);
}
