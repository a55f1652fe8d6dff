/* step.c — one step, enqueued on the context's in-order queue:
 *   pass 1   (backend) EMA, non-finite check, partial dot products, a launch per 8-32 ranges
 *   finalize one work-group: partials -> r (and r_q), acceptance, device flags, outputs
 *   pass 2   a launch per 8-32 ranges: d, and the state (in place on the fused backend, into the
 *            spare buffers on the CLBlast backend, which the host then flips)
 * then a flush, so that the step's event can be waited on from anywhere. Scalars stay on the
 * device throughout. */
#include "internal.h"

#include <math.h>

bloopcl_status bloopcl__set_arg_list(bloopcl_context *ctx, cl_kernel kernel, const char *name,
                                     cl_uint first, const bloopcl_arg *args, size_t count)
{
    for (size_t i = 0; i < count; ++i) {
        cl_int err = clSetKernelArg(kernel, first + (cl_uint)i, args[i].size, args[i].value);
        if (err != CL_SUCCESS) {
            char what[160];
            bloopcl__format(what, sizeof what, "setting argument %u of %s",
                            first + (unsigned)i, name);
            return bloopcl__fail_cl(ctx, err, "clSetKernelArg", what);
        }
    }
    return BLOOPCL_OK;
}

unsigned bloopcl__state_kinds(const bloopcl_combiner *comb)
{
    unsigned kinds = 0;
    if (bloopcl__method_has_ema(comb->config.method))
        kinds |= 1u << BLOOPCL_STATE_EMA;
    if (bloopcl__method_has_aux_ema(comb->config.method))
        kinds |= 1u << BLOOPCL_STATE_AUX_EMA;
    if (bloopcl__has_moment(comb, BLOOPCL_STATE_MOMENT1))
        kinds |= 1u << BLOOPCL_STATE_MOMENT1;
    if (bloopcl__has_moment(comb, BLOOPCL_STATE_MOMENT2))
        kinds |= 1u << BLOOPCL_STATE_MOMENT2;
    return kinds;
}

static bloopcl_status set_slot_buffers(bloopcl_context *ctx, cl_kernel kernel, const char *name,
                                       const bloopcl_plan *plan, const bloopcl_launch *launch,
                                       int tensors)
{
    for (int which = 0; which < tensors; ++which)
        for (cl_uint j = 0; j < (cl_uint)plan->slots; ++j) {
            size_t used = j < launch->num_pieces ? j : 0;
            const bloopcl_piece *p = &plan->pieces[launch->first_piece + used];
            const cl_mem *buffer = which == 0 ? &p->g : which == 1 ? &p->a : &p->d;
            cl_uint arg = (cl_uint)(which * plan->slots) + j;
            cl_int err = clSetKernelArg(kernel, arg, sizeof(cl_mem), buffer);
            if (err != CL_SUCCESS) {
                char what[160];
                bloopcl__format(what, sizeof what, "setting argument %u of %s", arg, name);
                return bloopcl__fail_cl(ctx, err, "clSetKernelArg", what);
            }
        }
    return BLOOPCL_OK;
}

bloopcl_status bloopcl__set_launch_args(bloopcl_combiner *comb, bloopcl_launch_kernel kind,
                                        size_t index, const char *name, int tensors,
                                        const bloopcl_arg *rest, const bool *changes,
                                        size_t count)
{
    return bloopcl__set_plan_launch_args(comb, &comb->plan, kind, index, name, tensors, rest,
                                         changes, count);
}

bloopcl_status bloopcl__set_plan_launch_args(bloopcl_combiner *comb, bloopcl_plan *plan,
                                             bloopcl_launch_kernel kind, size_t index,
                                             const char *name, int tensors,
                                             const bloopcl_arg *rest, const bool *changes,
                                             size_t count)
{
    bloopcl_context *ctx = comb->ctx;
    bloopcl_launch_kernels *set = &plan->kernels[index];
    cl_kernel k = set->kernel[kind];
    cl_uint first = (cl_uint)(tensors * plan->slots);
    if (!set->bound[kind]) {
        bloopcl_status status = set_slot_buffers(ctx, k, name, plan, &plan->launches[index],
                                                 tensors);
        if (status == BLOOPCL_OK)
            status = bloopcl__set_arg_list(ctx, k, name, first, rest, count);
        set->bound[kind] = status == BLOOPCL_OK;
        return status;
    }
    for (size_t i = 0; i < count; ++i)
        if (changes[i]) {
            bloopcl_status status = bloopcl__set_arg_list(ctx, k, name, first + (cl_uint)i,
                                                          &rest[i], 1);
            if (status != BLOOPCL_OK)
                return status;
        }
    return BLOOPCL_OK;
}

bloopcl_launch_state bloopcl__launch_state(const bloopcl_combiner *comb,
                                           const bloopcl_launch *launch)
{
    size_t chunk = launch->state_chunk;
    return (bloopcl_launch_state){
        .m_cur = bloopcl__state_buffer(comb, chunk, BLOOPCL_STATE_EMA, false),
        .m_next = bloopcl__state_buffer(comb, chunk, BLOOPCL_STATE_EMA, true),
        .q_cur = bloopcl__state_buffer(comb, chunk, BLOOPCL_STATE_AUX_EMA, false),
        .q_next = bloopcl__state_buffer(comb, chunk, BLOOPCL_STATE_AUX_EMA, true)};
}

bloopcl_status bloopcl__enqueue_kernel(bloopcl_context *ctx, cl_kernel kernel, const char *name,
                                      size_t global, size_t local, cl_event *event)
{
    cl_int err = clEnqueueNDRangeKernel(ctx->queue, kernel, 1, NULL, &global, &local, 0, NULL,
                                        event);
    if (err != CL_SUCCESS) {
        char what[160];
        bloopcl__format(what, sizeof what, "launching %s (global %zu, local %zu)", name, global,
                        local);
        return bloopcl__fail_cl(ctx, err, "clEnqueueNDRangeKernel", what);
    }
    return BLOOPCL_OK;
}

bloopcl_status bloopcl__enqueue_launch(bloopcl_context *ctx, cl_kernel kernel, const char *name,
                                       const bloopcl_launch *launch, size_t local,
                                       cl_event *event)
{
    return bloopcl__enqueue_kernel(ctx, kernel, name, launch->groups * local, local, event);
}

cl_mem bloopcl__state_buffer(const bloopcl_combiner *comb, size_t chunk, bloopcl_state_kind kind,
                             bool spare)
{
    if (comb->num_chunks == 0 ||
        (kind == BLOOPCL_STATE_AUX_EMA && !bloopcl__method_has_aux_ema(comb->config.method)))
        return comb->partials;  /* never read: the kernels are told the state is absent */
    int which = bloopcl__state_half(comb, spare);
    const bloopcl_state_chunk *c = &comb->chunks[chunk];
    return kind == BLOOPCL_STATE_EMA ? c->ema[which] : c->aux_ema[which];
}

bloopcl_kernel_scales bloopcl__kernel_scales(const bloopcl_combiner *comb)
{
    const bloopcl_step_options *options = &comb->options;
    return (bloopcl_kernel_scales){(cl_float)options->inv_scale_g,
                                   (cl_float)options->inv_scale_a,
                                   options->inv_scale_buffer != NULL};
}

/* The caller's device-side inverse scales are copied into the flags (as float bits), after
 * the step's wait list, so that every kernel of the step reads the same two values. */
static bloopcl_status copy_device_scales(bloopcl_combiner *comb)
{
    const bloopcl_step_options *options = &comb->options;
    if (options->inv_scale_buffer == NULL)
        return BLOOPCL_OK;
    const size_t from[2] = {options->inv_scale_g_index, options->inv_scale_a_index};
    const size_t to[2] = {BLOOPCL_FLAG_INV_SCALE_G, BLOOPCL_FLAG_INV_SCALE_A};
    for (int k = 0; k < 2; ++k) {
        cl_int err = clEnqueueCopyBuffer(comb->ctx->queue, options->inv_scale_buffer,
                                         comb->flags, from[k] * sizeof(cl_float),
                                         to[k] * sizeof(cl_int), sizeof(cl_float), 0, NULL,
                                         NULL);
        if (err != CL_SUCCESS)
            return bloopcl__fail_cl(comb->ctx, err, "clEnqueueCopyBuffer", "reading the inverse "
                                    "loss scales from options->inv_scale_buffer");
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
    if (comb->config.dots == BLOOPCL_DOTS_FUSED)
        mask |= BLOOPCL_DOTS_MASK_SCALED_ROWS;  /* fused_dots.cl writes the rescaled rows */
    return mask;
}

/* Fused: one partial per work-group; CLBlast: one per piece. */
size_t bloopcl__partial_slots(const bloopcl_combiner *comb)
{
    if (comb->config.dots == BLOOPCL_DOTS_FUSED)
        return comb->plan.total_groups;
    return comb->plan.num_pieces;
}

bloopcl_status bloopcl__ensure_partials(bloopcl_combiner *comb, size_t slots)
{
    if (slots == 0)
        slots = 1;  /* the finalize kernel always takes a buffer */
    if (comb->partials != NULL && slots <= comb->partial_slots)
        return BLOOPCL_OK;
    cl_int err;
    cl_mem grown = clCreateBuffer(comb->ctx->cl_ctx, CL_MEM_READ_WRITE,
                                  slots * BLOOPCL_PARTIAL_ROWS * sizeof(float), NULL, &err);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(comb->ctx, err, "clCreateBuffer", "allocating dot partials");
    if (comb->partials != NULL)
        clReleaseMemObject(comb->partials);
    comb->partials = grown;
    comb->partial_slots = slots;
    return BLOOPCL_OK;
}

/* The arguments from `first` on of bloopcl_finalize and bloopcl_finalize_totals
 * (BLOOPCL_DECISION_PARAMS in finalize.cl). */
bloopcl_status bloopcl__set_decision_args(bloopcl_combiner *comb, cl_kernel kernel,
                                          const char *name, cl_uint first)
{
    cl_int method = (cl_int)comb->config.method;
    cl_int skip = comb->config.nonfinite == BLOOPCL_NONFINITE_SKIP;
    cl_int optimize = bloopcl__step_optimizes(comb);  /* count t when accepted */
    /* 1/(1+lambda) divided in double and rounded once (in float it is one ulp off the
     * correctly rounded value at lambda = 0.1) */
    double lambda = comb->aux.active ? comb->aux.lambda_sum : comb->config.lambda;  /* several
                                                              gradients: 1/(1 + sum lambda_i) */
    cl_float scale = comb->config.rescale ? (cl_float)(1.0 / (1.0 + lambda)) : 1.0f;
    bloopcl_kernel_scales scales = bloopcl__kernel_scales(comb);
    /* 1/lambda is divided here, correctly rounded, rather than by a device that may be
     * allowed 2.5 ulp: the dynamic barrier's cap is then the same float everywhere. */
    cl_float cap = comb->lambda > 0.0f ? 1.0f / comb->lambda : 0.0f;
    const bloopcl_arg args[] = {
        {BLOOPCL_ARG(method)}, {BLOOPCL_ARG(skip)}, {BLOOPCL_ARG(optimize)},
        {BLOOPCL_ARG(comb->w)},
        {BLOOPCL_ARG(comb->lambda)}, {BLOOPCL_ARG(comb->eps)}, {BLOOPCL_ARG(scale)},
        {BLOOPCL_ARG(cap)}, {BLOOPCL_ARG(scales.g)}, {BLOOPCL_ARG(scales.a)},
        {BLOOPCL_ARG(scales.on_device)}};
    return bloopcl__set_arg_list(comb->ctx, kernel, name, first, args,
                                 sizeof args / sizeof args[0]);
}

bloopcl_status bloopcl__enqueue_finalize(bloopcl_combiner *comb)
{
    bloopcl_context *ctx = comb->ctx;
    cl_kernel k = ctx->kernels.finalize;
    size_t local = ctx->kernels.finalize_group_size;
    cl_ulong slots_arg = bloopcl__partial_slots(comb);
    cl_int mask = bloopcl__dots_mask(comb);
    const bloopcl_arg args[] = {
        {BLOOPCL_ARG(comb->partials)}, {BLOOPCL_ARG(slots_arg)}, {BLOOPCL_ARG(mask)},
        {BLOOPCL_ARG(comb->scalars)}, {BLOOPCL_ARG(comb->flags)},
        {BLOOPCL_NUM_DOTS * local * sizeof(float), NULL}};
    cl_uint count = sizeof args / sizeof args[0];
    bloopcl_status status = bloopcl__set_arg_list(ctx, k, "bloopcl_finalize", 0, args, count);
    if (status == BLOOPCL_OK)
        status = bloopcl__set_decision_args(comb, k, "bloopcl_finalize", count);
    if (status != BLOOPCL_OK)
        return status;
    return bloopcl__enqueue_kernel(ctx, k, "bloopcl_finalize", local, local, NULL);
}

static bloopcl_status enqueue_project_launch(bloopcl_combiner *comb, cl_uint index,
                                             cl_event *event)
{
    bloopcl_context *ctx = comb->ctx;
    const bloopcl_plan *plan = &comb->plan;
    const bloopcl_launch *launch = &plan->launches[index];
    cl_kernel k = plan->kernels[index].kernel[BLOOPCL_LAUNCH_PROJECT];
    const char *name = "bloopcl_project";
    bloopcl_launch_state state = bloopcl__launch_state(comb, launch);
    cl_uint num_slots = (cl_uint)launch->num_pieces;
    cl_int method = (cl_int)comb->config.method, ratio_only = comb->config.ratio_only != 0;
    cl_int has_ema = bloopcl__method_has_ema(comb->config.method);
    cl_int has_aux = bloopcl__method_has_aux_ema(comb->config.method);
    cl_int in_place = comb->config.dots == BLOOPCL_DOTS_FUSED;
    bloopcl_kernel_scales scales = bloopcl__kernel_scales(comb);
    bloopcl_optimizer_kernel_args optimizer;
    bloopcl_arg rest[17 + BLOOPCL_OPTIMIZER_ARGS] = {
        {BLOOPCL_ARG(state.m_cur)}, {BLOOPCL_ARG(state.m_next)}, {BLOOPCL_ARG(state.q_cur)},
        {BLOOPCL_ARG(state.q_next)},
        {BLOOPCL_ARG(plan->table)}, {BLOOPCL_ARG(index)}, {BLOOPCL_ARG(num_slots)},
        {BLOOPCL_ARG(method)}, {BLOOPCL_ARG(ratio_only)}, {BLOOPCL_ARG(has_ema)},
        {BLOOPCL_ARG(has_aux)}, {BLOOPCL_ARG(in_place)}, {BLOOPCL_ARG(comb->lambda)},
        {BLOOPCL_ARG(comb->flags)}, {BLOOPCL_ARG(scales.g)}, {BLOOPCL_ARG(scales.a)},
        {BLOOPCL_ARG(scales.on_device)}};
    bloopcl__optimizer_kernel_args(comb, launch->state_chunk, &optimizer, &rest[17]);
    /* the state (flipped when double-buffered), lambda (schedules), the loss scales and the
     * optimizer (attached, detached, schedules) change between steps */
    const bool changes[] = {true, true, true, true, false, false, false, false, false, false,
                            false, false, true, false, true, true, true,
                            true, true, true, true, true, true, true, true, true, true, true,
                            true, true, true};
    _Static_assert(sizeof changes / sizeof changes[0] == sizeof rest / sizeof rest[0],
                   "one entry per argument");
    bloopcl_status status = bloopcl__set_launch_args(comb, BLOOPCL_LAUNCH_PROJECT, index, name,
                                                     3, rest, changes,
                                                     sizeof rest / sizeof rest[0]);
    if (status != BLOOPCL_OK)
        return status;
    return bloopcl__enqueue_launch(ctx, k, name, launch, ctx->kernels.elementwise_group_size,
                                   event);
}

/* A step that failed half-way must not leak into the next one: clear the flags pass 1 sets
 * and, if finalize already ran, put INITIALIZED, ACCEPTED and the optimizer's t back. */
cl_int bloopcl__undo_flags(bloopcl_combiner *comb, bool finalized)
{
    const cl_int zero = 0;
    cl_command_queue queue = comb->ctx->queue;
    const size_t set_by_pass_1[] = {BLOOPCL_FLAG_NONFINITE, BLOOPCL_FLAG_RESCUED};
    cl_int first = CL_SUCCESS, err;
    for (size_t i = 0; i < sizeof set_by_pass_1 / sizeof set_by_pass_1[0]; ++i) {
        err = clEnqueueWriteBuffer(queue, comb->flags, CL_TRUE,
                                   set_by_pass_1[i] * sizeof(cl_int), sizeof zero, &zero, 0,
                                   NULL, NULL);
        first = first != CL_SUCCESS ? first : err;
    }
    if (finalized) {
        err = clEnqueueCopyBuffer(queue, comb->flags, comb->flags,
                                  BLOOPCL_FLAG_BACKUP_INITIALIZED * sizeof(cl_int),
                                  BLOOPCL_FLAG_INITIALIZED * sizeof(cl_int), 2 * sizeof(cl_int),
                                  0, NULL, NULL);
        first = first != CL_SUCCESS ? first : err;
        err = clEnqueueCopyBuffer(queue, comb->flags, comb->flags,
                                  BLOOPCL_FLAG_BACKUP_OPT_STEPS * sizeof(cl_int),
                                  BLOOPCL_FLAG_OPT_STEPS * sizeof(cl_int), sizeof(cl_int), 0,
                                  NULL, NULL);
        first = first != CL_SUCCESS ? first : err;
    }
    err = clFinish(queue);
    return first != CL_SUCCESS ? first : err;
}

/* The wait list must be consistent and hold no event that has already failed: the driver
 * would run the step after it anyway or never, and a later blocking call could hang. */
static bloopcl_status check_events(bloopcl_combiner *comb, cl_uint num_wait,
                                   const cl_event *wait_list)
{
    if ((num_wait == 0) != (wait_list == NULL))
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_INVALID_ARGUMENT,
                             "bloopcl_step: num_wait_events = %u but wait_list is %s",
                             (unsigned)num_wait, wait_list ? "not NULL" : "NULL");
    for (cl_uint i = 0; i < num_wait; ++i) {
        cl_int state = CL_COMPLETE;
        cl_int err = wait_list[i] == NULL ? CL_INVALID_EVENT
                                          : clGetEventInfo(wait_list[i],
                                                           CL_EVENT_COMMAND_EXECUTION_STATUS,
                                                           sizeof state, &state, NULL);
        if (err != CL_SUCCESS)
            return bloopcl__fail(comb->ctx, BLOOPCL_ERR_INVALID_ARGUMENT, "bloopcl_step: "
                                 "wait_list[%u] is not a valid event (%s)", (unsigned)i,
                                 bloopcl__cl_error_name(err));
        if (state < 0)
            return bloopcl__fail(comb->ctx, BLOOPCL_ERR_INVALID_ARGUMENT, "bloopcl_step: the "
                                 "event wait_list[%u] has already failed (status %s); nothing "
                                 "was enqueued", (unsigned)i, bloopcl__cl_error_name(state));
    }
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

/* Pass 1: the caller's device scales (and learning rate) into the flags, then the backend's
 * EMA and dots. */
bloopcl_status bloopcl__enqueue_first_pass(bloopcl_combiner *comb,
                                           bloopcl_step_progress *progress)
{
    bloopcl_status status = copy_device_scales(comb);
    if (status == BLOOPCL_OK)
        status = bloopcl__copy_device_lr(comb);
    if (status != BLOOPCL_OK)
        return status;
    return comb->config.dots == BLOOPCL_DOTS_FUSED
               ? bloopcl__enqueue_fused_pass(comb, &progress->kernels)
               : bloopcl__enqueue_clblast_pass(comb, &progress->kernels);
}

/* Pass 2, after a finalize (its kernel counted here): d and the state. */
bloopcl_status bloopcl__enqueue_second_pass(bloopcl_combiner *comb,
                                            bloopcl_step_progress *progress, cl_event *done)
{
    progress->finalized = true;
    progress->kernels++;
    bloopcl_status status = BLOOPCL_OK;
    size_t launches = comb->plan.num_launches;
    for (size_t l = 0; l < launches && status == BLOOPCL_OK; ++l) {
        /* the last launch's event is the step's: the queue is in order */
        status = enqueue_project_launch(comb, (cl_uint)l, l + 1 == launches ? done : NULL);
        progress->projected += status == BLOOPCL_OK;
    }
    progress->kernels += (unsigned)progress->projected;
    return status;
}

/* After a failure: only an in-place update that had begun (fused, pass 2 partly enqueued)
 * cannot be undone; the state is then marked invalid until it is written or reset. */
bloopcl_status bloopcl__fail_step(bloopcl_combiner *comb, const bloopcl_step_progress *progress,
                                  bloopcl_status status)
{
    bloopcl__undo_flags(comb, progress->finalized);
    bool in_place = (!comb->double_buffered && comb->num_chunks > 0) ||
                    bloopcl__step_optimizes(comb);  /* parameters and moments: in place */
    bool partial = in_place && progress->projected > 0;
    if (!partial)
        return status;
    char cause[1024];
    bloopcl__format(cause, sizeof cause, "%s", comb->ctx->last_error);
    comb->invalid_kinds = bloopcl__state_kinds(comb);
    return bloopcl__fail(comb->ctx, BLOOPCL_ERR_STATE_INVALID, "bloopcl_step: the driver failed "
                         "after %zu of %zu state-updating launches were enqueued, so the state "
                         "%sis partly updated; write it (bloopcl_write_state) or reset it. "
                         "Cause: %s", progress->projected, comb->plan.num_launches,
                         bloopcl__step_optimizes(comb) ? "(and the parameters) " : "", cause);
}

/* The step is enqueued but may never run. Double-buffered, the state is still the old one
 * (nothing is flipped); in place, it may or may not be updated: invalid. */
static bloopcl_status fail_flush(bloopcl_combiner *comb, cl_int err)
{
    bloopcl__undo_flags(comb, true);
    bool in_place = !comb->double_buffered || bloopcl__step_optimizes(comb);
    bool nothing_in_place = bloopcl__state_kinds(comb) == 0 && !bloopcl__step_optimizes(comb);
    if (!in_place || nothing_in_place)
        return bloopcl__fail_cl(comb->ctx, err, "clFlush", "submitting the step (it was not "
                                "applied; d may not be written)");
    comb->invalid_kinds = bloopcl__state_kinds(comb);
    return bloopcl__fail(comb->ctx, BLOOPCL_ERR_STATE_INVALID, "bloopcl_step: the step was "
                         "enqueued but clFlush failed with %s, so whether it runs is unknown; "
                         "write or reset the state", bloopcl__cl_error_name(err));
}

/* A fully enqueued step: submitted (required before another queue may wait on `done`, and
 * harmless otherwise), then the state it wrote becomes the current one. */
static bloopcl_status complete_step(bloopcl_combiner *comb,
                                    const bloopcl_step_progress *progress, cl_event event,
                                    cl_event *done)
{
    cl_int err = clFlush(comb->ctx->queue);
    if (err != CL_SUCCESS) {
        if (event != NULL)
            clReleaseEvent(event);
        return fail_flush(comb, err);
    }
    bloopcl__commit_state(comb);
    comb->steps++;
    comb->aux.count = 0;  /* a plain step; bloopcl_step_aux sets its own count after it */
    comb->kernels_last_step = progress->kernels;
    if (done != NULL)
        *done = event;
    return BLOOPCL_OK;
}

static bloopcl_status check_state_valid(bloopcl_combiner *comb)
{
    if (comb->invalid_kinds == 0)
        return BLOOPCL_OK;
    return bloopcl__fail(comb->ctx, BLOOPCL_ERR_STATE_INVALID, "bloopcl_step: the state is "
                         "invalid since a driver failure in an earlier step; write it "
                         "(bloopcl_write_state) or reset it (bloopcl_reset_state) first");
}

/* A host scale must be a positive finite float: it multiplies every element, so 0 would
 * erase the gradient and a NaN or infinity would make every step non-finite. */
static bloopcl_status check_host_scale(bloopcl_context *ctx, const char *name, double value)
{
    if (value > 0.0 && (double)(float)value > 0.0 && isfinite((float)value))
        return BLOOPCL_OK;
    return bloopcl__fail(ctx, BLOOPCL_ERR_INVALID_ARGUMENT, "bloopcl_step: options->%s = %g "
                         "is not a finite positive float (1 means unscaled)", name, value);
}

/* A caller's buffer of floats named in the step options (`what`): a buffer of this cl_context;
 * its size in bytes into *bytes. */
bloopcl_status bloopcl__check_float_buffer(bloopcl_context *ctx, cl_mem buffer, const char *what,
                                           size_t *bytes)
{
    cl_context owner = NULL;
    cl_mem_object_type type = 0;
    size_t size = 0;
    cl_int err = clGetMemObjectInfo(buffer, CL_MEM_CONTEXT, sizeof owner, &owner, NULL);
    if (err == CL_SUCCESS)
        err = clGetMemObjectInfo(buffer, CL_MEM_TYPE, sizeof type, &type, NULL);
    if (err == CL_SUCCESS)
        err = clGetMemObjectInfo(buffer, CL_MEM_SIZE, sizeof size, &size, NULL);
    if (err != CL_SUCCESS) {
        char call[128];
        bloopcl__format(call, sizeof call, "checking options->%s", what);
        return bloopcl__fail_cl(ctx, err, "clGetMemObjectInfo", call);
    }
    if (owner != ctx->cl_ctx)
        return bloopcl__fail(ctx, BLOOPCL_ERR_WRONG_CONTEXT, "bloopcl_step: options->%s "
                             "belongs to another cl_context", what);
    if (type != CL_MEM_OBJECT_BUFFER)
        return bloopcl__fail(ctx, BLOOPCL_ERR_INVALID_ARGUMENT, "bloopcl_step: options->%s is "
                             "not a buffer", what);
    *bytes = size;
    return BLOOPCL_OK;
}

/* The scale buffer: a buffer of this cl_context that holds both indices. */
static bloopcl_status check_scale_buffer(bloopcl_context *ctx, const bloopcl_step_options *o)
{
    size_t size = 0;
    bloopcl_status status = bloopcl__check_float_buffer(ctx, o->inv_scale_buffer,
                                                        "inv_scale_buffer", &size);
    if (status != BLOOPCL_OK)
        return status;
    size_t floats = size / sizeof(cl_float);
    if (o->inv_scale_g_index >= floats || o->inv_scale_a_index >= floats)
        return bloopcl__fail(ctx, BLOOPCL_ERR_BUFFER_TOO_SMALL, "bloopcl_step: "
                             "options->inv_scale_buffer holds %zu floats (%zu bytes) but the "
                             "indices are %zu (g) and %zu (a)", floats, size,
                             o->inv_scale_g_index, o->inv_scale_a_index);
    return BLOOPCL_OK;
}

static bloopcl_status check_options(bloopcl_combiner *comb, const bloopcl_step_options *given)
{
    char message[512];
    bloopcl_step_options options;
    bloopcl_status status = bloopcl__read_step_options(given, &options, message, sizeof message);
    if (status != BLOOPCL_OK)
        return bloopcl__fail(comb->ctx, status, "bloopcl_step: %s", message);
    status = check_host_scale(comb->ctx, "inv_scale_g", options.inv_scale_g);
    if (status == BLOOPCL_OK)
        status = check_host_scale(comb->ctx, "inv_scale_a", options.inv_scale_a);
    if (status == BLOOPCL_OK && options.inv_scale_buffer != NULL)
        status = check_scale_buffer(comb->ctx, &options);
    if (status == BLOOPCL_OK)
        status = bloopcl__check_optimizer_options(comb, &options);
    if (status == BLOOPCL_OK)
        comb->options = options;
    return status;
}

/* Everything that can be refused is refused here, before anything is enqueued. */
bloopcl_status bloopcl__prepare_step(bloopcl_combiner *comb, const bloopcl_tensor *g,
                                     const bloopcl_tensor *a, const bloopcl_tensor *d,
                                     const bloopcl_step_options *options, cl_uint num_wait,
                                     const cl_event *wait_list)
{
    bloopcl_status status = bloopcl__check_no_split_step(comb, "bloopcl_step");
    if (status == BLOOPCL_OK)
        status = check_state_valid(comb);
    if (status == BLOOPCL_OK)
        status = check_options(comb, options);
    if (status == BLOOPCL_OK)
        status = check_events(comb, num_wait, wait_list);
    if (status == BLOOPCL_OK)
        status = bloopcl__plan_step(comb, g, a, d);
    if (status == BLOOPCL_OK)
        status = bloopcl__ensure_partials(comb, bloopcl__partial_slots(comb));
    if (status == BLOOPCL_OK)
        status = enqueue_wait(comb->ctx, num_wait, wait_list);
    return status;
}

bloopcl_status bloopcl__settle_step(bloopcl_combiner *comb,
                                    const bloopcl_step_progress *progress,
                                    bloopcl_status status, cl_event event, cl_event *done)
{
    if (status == BLOOPCL_OK)
        return complete_step(comb, progress, event, done);
    if (event != NULL)
        clReleaseEvent(event);
    return bloopcl__fail_step(comb, progress, status);
}

bloopcl_status bloopcl__step(bloopcl_combiner *comb, const bloopcl_tensor *g,
                             const bloopcl_tensor *a, const bloopcl_tensor *d,
                             const bloopcl_step_options *options, cl_uint num_wait_events,
                             const cl_event *wait_list, cl_event *done)
{
    if (done != NULL)
        *done = NULL;
    if (comb == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    bloopcl__clear_error(comb->ctx);
    bloopcl_status status = bloopcl__prepare_step(comb, g, a, d, options, num_wait_events,
                                                  wait_list);
    if (status != BLOOPCL_OK)
        return status;  /* nothing of this step was enqueued */

    bloopcl_step_progress progress = {0};
    cl_event event = NULL;
    status = bloopcl__enqueue_first_pass(comb, &progress);
    if (status == BLOOPCL_OK)
        status = bloopcl__enqueue_finalize(comb);
    if (status == BLOOPCL_OK)
        status = bloopcl__enqueue_second_pass(comb, &progress, done != NULL ? &event : NULL);
    return bloopcl__settle_step(comb, &progress, status, event, done);
}

bloopcl_status bloopcl_step_with_options(bloopcl_combiner *comb, const bloopcl_tensor *g,
                                         const bloopcl_tensor *a, const bloopcl_tensor *d,
                                         const bloopcl_step_options *options,
                                         cl_uint num_wait_events, const cl_event *wait_list,
                                         cl_event *done)
{
    if (done != NULL)
        *done = NULL;
    if (comb == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    if (!bloopcl__enter(comb->ctx))
        return BLOOPCL_ERR_BUSY;
    bloopcl_status status = bloopcl__step(comb, g, a, d, options, num_wait_events, wait_list,
                                          done);
    bloopcl__leave(comb->ctx);
    return status;
}

bloopcl_status bloopcl_step(bloopcl_combiner *comb, const bloopcl_tensor *g,
                            const bloopcl_tensor *a, const bloopcl_tensor *d,
                            cl_uint num_wait_events, const cl_event *wait_list, cl_event *done)
{
    return bloopcl_step_with_options(comb, g, a, d, NULL, num_wait_events, wait_list, done);
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
