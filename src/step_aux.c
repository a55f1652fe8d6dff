/* step_aux.c — a step with several auxiliary gradients (bloopcl_step_aux; the math and the
 * reformulation are at the head of cl/aux.cl):
 *   accumulate  per gradient i, a launch per 8-32 ranges of its own plan (g, a_i, A):
 *               A <- A + lambda_i a_i and the partials of <m,a_i>, <g,a_i>, <a_i,a_i>
 *   the step    on (g, A, d) with lambda = 1 and s = 1/(1 + sum lambda_i): pass 1, finalize,
 *               then bloopcl_aux_finalize (every r_i, R, the per-gradient outputs, R where
 *               pass 2 reads r), then pass 2
 * k = 1 is the plain step with lambda = lambda_1. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define AUX_ROWS 3      /* aux.cl: BLOOPCL_AUX_ROWS */
#define AUX_OUTPUTS 4   /* aux.cl: BLOOPCL_AUX_OUTPUTS */
_Static_assert(BLOOPCL_MAX_AUX == BLOOPCL_MAX_AUX_INTERNAL && BLOOPCL_MAX_AUX == 8,
               "aux.cl takes the weights as float8");

void bloopcl__release_aux(bloopcl_combiner *comb)
{
    bloopcl_aux_state *aux = &comb->aux;
    for (int i = 0; i < BLOOPCL_MAX_AUX_INTERNAL; ++i)
        bloopcl__plan_release(&aux->plans[i]);
    cl_mem *mems[] = {&aux->sum, &aux->partials, &aux->outputs};
    for (size_t i = 0; i < sizeof mems / sizeof mems[0]; ++i)
        if (*mems[i] != NULL)
            clReleaseMemObject(*mems[i]);
    free(aux->sum_segments);
    bloopcl__unreserve_bytes(comb, aux->reserved_bytes);
    memset(aux, 0, sizeof *aux);
}

static bloopcl_status check_request(bloopcl_combiner *comb, const bloopcl_tensor *g,
                                    const bloopcl_tensor *aux, const double *lambdas,
                                    size_t count, const bloopcl_step_options *options)
{
    bloopcl_context *ctx = comb->ctx;
    if (aux == NULL || lambdas == NULL || g == NULL)
        return bloopcl__fail(ctx, BLOOPCL_ERR_NULL_ARGUMENT, "bloopcl_step_aux: g, aux and "
                             "lambdas are required");
    if (count == 0 || count > BLOOPCL_MAX_AUX)
        return bloopcl__fail(ctx, BLOOPCL_ERR_INVALID_ARGUMENT, "bloopcl_step_aux: count = %zu "
                             "auxiliary gradients (1 to %d)", count, BLOOPCL_MAX_AUX);
    for (size_t i = 0; i < count; ++i)
        if (!(isfinite(lambdas[i]) && lambdas[i] >= 0.0))
            return bloopcl__fail(ctx, BLOOPCL_ERR_INVALID_ARGUMENT, "bloopcl_step_aux: "
                                 "lambdas[%zu] = %g must be finite and >= 0", i, lambdas[i]);
    if (count == 1)
        return BLOOPCL_OK;
    if (comb->config.method == BLOOPCL_METHOD_PCGRAD)
        return bloopcl__fail(ctx, BLOOPCL_ERR_UNSUPPORTED, "bloopcl_step_aux: PCGRAD is the "
                             "two-task method (g against one a): count = %zu needs 1", count);
    bloopcl_step_options given;
    char message[512];
    if (bloopcl__read_step_options(options, &given, message, sizeof message) != BLOOPCL_OK)
        return BLOOPCL_OK;  /* bloopcl_step's own checks report it */
    if (given.inv_scale_buffer != NULL || given.inv_scale_a != 1.0)
        return bloopcl__fail(ctx, BLOOPCL_ERR_UNSUPPORTED, "bloopcl_step_aux: with %zu "
                             "auxiliary gradients the inverse loss scale of a must be 1 and "
                             "on the host", count);
    if ((cl_ulong)comb->n * sizeof(float) > ctx->info.max_alloc_bytes)
        return bloopcl__fail(ctx, BLOOPCL_ERR_UNSUPPORTED, "bloopcl_step_aux: the sum of the "
                             "auxiliary gradients needs one buffer of n = %zu floats, beyond "
                             "the device's largest allocation (%llu bytes)", comb->n,
                             (unsigned long long)ctx->info.max_alloc_bytes);
    return BLOOPCL_OK;
}

/* A, one buffer of n floats, and its segment list shaped as g's (counts only: g's own checks
 * come with the plans; a list whose counts do not add up to n is refused there). */
static bloopcl_status prepare_sum(bloopcl_combiner *comb, const bloopcl_tensor *g)
{
    bloopcl_aux_state *aux = &comb->aux;
    bloopcl_context *ctx = comb->ctx;
    if (aux->sum == NULL) {
        cl_ulong bytes = (cl_ulong)comb->n * sizeof(float);
        bloopcl_status status = bloopcl__reserve_bytes(comb, bytes, "bloopcl_step_aux: the sum "
                                                       "of the auxiliary gradients");
        if (status != BLOOPCL_OK)
            return status;
        aux->reserved_bytes = bytes;
        cl_int err;
        aux->sum = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
        if (err != CL_SUCCESS) {  /* nothing kept: the next call tries again */
            aux->sum = NULL;
            bloopcl__unreserve_bytes(comb, bytes);
            aux->reserved_bytes = 0;
            return bloopcl__fail_cl(ctx, err, "clCreateBuffer", "allocating the sum of the "
                                    "auxiliary gradients");
        }
    }
    if (g->segments == NULL || g->num_segments == 0)
        return bloopcl__fail(ctx, g->segments == NULL ? BLOOPCL_ERR_NULL_ARGUMENT
                                                      : BLOOPCL_ERR_SIZE_MISMATCH,
                             "bloopcl_step_aux: g has no segments");
    if (aux->num_sum_segments != g->num_segments) {
        bloopcl_segment *grown = realloc(aux->sum_segments, g->num_segments * sizeof *grown);
        if (grown == NULL)
            return bloopcl__fail(ctx, BLOOPCL_ERR_OUT_OF_MEMORY, "laying out the sum");
        aux->sum_segments = grown;
        aux->num_sum_segments = g->num_segments;
    }
    size_t offset = 0;
    for (size_t s = 0; s < g->num_segments; ++s) {
        size_t count = g->segments[s].count;
        aux->sum_segments[s] = (bloopcl_segment){.buffer = aux->sum,
                                                 .offset_bytes = offset * sizeof(float),
                                                 .count = count};
        offset += offset + count <= comb->n ? count : 0;  /* no wrap; the checks refuse it */
    }
    return BLOOPCL_OK;
}

/* Plans every gradient's accumulate launches; the partials and outputs buffers fit them. */
static bloopcl_status plan_gradients(bloopcl_combiner *comb, const bloopcl_tensor *g,
                                     const bloopcl_tensor *aux_list, size_t count,
                                     const bloopcl_tensor *sum)
{
    bloopcl_aux_state *aux = &comb->aux;
    size_t slots = 1;
    for (size_t i = 0; i < count; ++i) {
        const bloopcl_tensor *const tensors[3] = {g, &aux_list[i], sum};
        bloopcl_status status = bloopcl__plan_tensors(comb, &aux->plans[i], tensors, true);
        if (status != BLOOPCL_OK) {
            char cause[1024];
            bloopcl__format(cause, sizeof cause, "%s", comb->ctx->last_error);
            return bloopcl__fail(comb->ctx, status, "bloopcl_step_aux: auxiliary gradient %zu: "
                                 "%s", i, cause);
        }
        if (aux->plans[i].total_groups > slots)
            slots = aux->plans[i].total_groups;
    }
    if (aux->partials == NULL || slots > aux->partial_slots) {
        cl_int err;
        cl_mem grown = clCreateBuffer(comb->ctx->cl_ctx, CL_MEM_READ_WRITE,
                                      BLOOPCL_MAX_AUX * AUX_ROWS * slots * sizeof(float), NULL,
                                      &err);
        if (err != CL_SUCCESS)
            return bloopcl__fail_cl(comb->ctx, err, "clCreateBuffer", "allocating the "
                                    "auxiliary gradients' partials");
        if (aux->partials != NULL)
            clReleaseMemObject(aux->partials);
        aux->partials = grown;
        aux->partial_slots = slots;
    }
    if (aux->outputs == NULL) {
        cl_int err;
        aux->outputs = clCreateBuffer(comb->ctx->cl_ctx, CL_MEM_READ_WRITE,
                                      BLOOPCL_MAX_AUX * AUX_OUTPUTS * sizeof(float), NULL, &err);
        if (err != CL_SUCCESS) {
            aux->outputs = NULL;
            return bloopcl__fail_cl(comb->ctx, err, "clCreateBuffer", "allocating the "
                                    "auxiliary gradients' outputs");
        }
    }
    return BLOOPCL_OK;
}

static bloopcl_status enqueue_accumulate(bloopcl_combiner *comb, cl_uint aux_index,
                                         cl_uint launch_index)
{
    bloopcl_context *ctx = comb->ctx;
    bloopcl_aux_state *aux = &comb->aux;
    bloopcl_plan *plan = &aux->plans[aux_index];
    const bloopcl_launch *launch = &plan->launches[launch_index];
    const char *name = "bloopcl_aux_accumulate";
    cl_kernel k = plan->kernels[launch_index].kernel[BLOOPCL_LAUNCH_ACCUMULATE];
    bloopcl_launch_state state = bloopcl__launch_state(comb, launch);
    cl_uint num_slots = (cl_uint)launch->num_pieces;
    cl_float lambda = (cl_float)aux->lambdas[aux_index];
    cl_int first = aux_index == 0, has_ema = bloopcl__method_has_ema(comb->config.method);
    cl_ulong stride = aux->partial_slots, base = launch->first_partial;
    size_t local = ctx->kernels.fused_group_size;
    cl_float scale_g = (cl_float)comb->options.inv_scale_g, scale_a = 1.0f;
    const bloopcl_arg rest[] = {
        {BLOOPCL_ARG(state.m_cur)}, {BLOOPCL_ARG(plan->table)}, {BLOOPCL_ARG(launch_index)},
        {BLOOPCL_ARG(num_slots)}, {BLOOPCL_ARG(lambda)}, {BLOOPCL_ARG(first)},
        {BLOOPCL_ARG(has_ema)}, {BLOOPCL_ARG(aux_index)}, {BLOOPCL_ARG(aux->partials)},
        {BLOOPCL_ARG(stride)}, {BLOOPCL_ARG(base)}, {AUX_ROWS * local * sizeof(float), NULL},
        {BLOOPCL_ARG(scale_g)}, {BLOOPCL_ARG(scale_a)}};
    /* the state (flipped when double-buffered), the weight, the partials buffer (it grows)
     * and g's scale change between steps */
    const bool changes[] = {true, false, false, false, true, false, false, false, true, true,
                            false, false, true, false};
    _Static_assert(sizeof changes / sizeof changes[0] == sizeof rest / sizeof rest[0],
                   "one entry per argument");
    bloopcl_status status = bloopcl__set_plan_launch_args(comb, plan, BLOOPCL_LAUNCH_ACCUMULATE,
                                                          launch_index, name, 3, rest, changes,
                                                          sizeof rest / sizeof rest[0]);
    if (status != BLOOPCL_OK)
        return status;
    return bloopcl__enqueue_launch(ctx, k, name, launch, local, NULL);
}

static bloopcl_status enqueue_accumulate_all(bloopcl_combiner *comb, size_t count,
                                             unsigned *kernels)
{
    bloopcl_status status = BLOOPCL_OK;
    for (size_t i = 0; i < count && status == BLOOPCL_OK; ++i)
        for (size_t l = 0; l < comb->aux.plans[i].num_launches && status == BLOOPCL_OK; ++l) {
            status = enqueue_accumulate(comb, (cl_uint)i, (cl_uint)l);
            *kernels += status == BLOOPCL_OK;
        }
    return status;
}

/* Every r_i and R after the step's finalize (one work-group, finalize's size). */
static bloopcl_status enqueue_aux_finalize(bloopcl_combiner *comb, size_t count)
{
    bloopcl_context *ctx = comb->ctx;
    bloopcl_aux_state *aux = &comb->aux;
    cl_kernel k = ctx->kernels.aux_finalize;
    size_t local = ctx->kernels.finalize_group_size;
    cl_ulong slots = aux->partial_slots;
    cl_uint k_count = (cl_uint)count;
    cl_float8 lambdas = {{0}}, caps = {{0}};
    cl_uint8 groups = {{0}};
    for (size_t i = 0; i < count; ++i) {
        groups.s[i] = (cl_uint)aux->plans[i].total_groups;
        lambdas.s[i] = (cl_float)aux->lambdas[i];
        /* 1/lambda_i divided here, correctly rounded (as the one-gradient cap) */
        caps.s[i] = lambdas.s[i] > 0.0f ? 1.0f / lambdas.s[i] : 0.0f;
    }
    cl_int method = (cl_int)comb->config.method;
    cl_int skip = comb->config.nonfinite == BLOOPCL_NONFINITE_SKIP;
    const bloopcl_arg args[] = {
        {BLOOPCL_ARG(aux->partials)}, {BLOOPCL_ARG(slots)}, {BLOOPCL_ARG(groups)},
        {BLOOPCL_ARG(k_count)},
        {BLOOPCL_ARG(lambdas)}, {BLOOPCL_ARG(caps)}, {BLOOPCL_ARG(method)},
        {BLOOPCL_ARG(comb->eps)}, {BLOOPCL_ARG(skip)}, {BLOOPCL_ARG(comb->scalars)},
        {BLOOPCL_ARG(comb->flags)}, {BLOOPCL_ARG(aux->outputs)},
        {local * sizeof(float), NULL}};
    const char *name = "bloopcl_aux_finalize";
    bloopcl_status status = bloopcl__set_arg_list(ctx, k, name, 0, args,
                                                  sizeof args / sizeof args[0]);
    if (status != BLOOPCL_OK)
        return status;
    return bloopcl__enqueue_kernel(ctx, k, name, local, local, NULL);
}

/* k >= 2: the step on (g, A, d) around the accumulate launches and the per-gradient finalize.
 * lambda is 1 inside it (restored by the caller). */
static bloopcl_status step_several(bloopcl_combiner *comb, const bloopcl_tensor *g,
                                   const bloopcl_tensor *aux_list, size_t count,
                                   const bloopcl_tensor *d, const bloopcl_step_options *options,
                                   cl_uint num_wait, const cl_event *wait_list, cl_event *done)
{
    /* refused before the sum is allocated (the rest of bloopcl_step's checks follow) */
    bloopcl_status status = bloopcl__check_no_split_step(comb, "bloopcl_step_aux");
    if (status == BLOOPCL_OK)
        status = prepare_sum(comb, g);
    if (status != BLOOPCL_OK)
        return status;
    bloopcl_tensor sum = {comb->aux.sum_segments, comb->aux.num_sum_segments};
    status = bloopcl__prepare_step(comb, g, &sum, d, options, num_wait, wait_list);
    if (status == BLOOPCL_OK)
        status = plan_gradients(comb, g, aux_list, count, &sum);
    if (status != BLOOPCL_OK)
        return status;  /* nothing of this step was enqueued (but its wait barrier) */
    bloopcl_step_progress progress = {0};
    cl_event event = NULL;
    status = enqueue_accumulate_all(comb, count, &progress.kernels);
    if (status == BLOOPCL_OK)
        status = bloopcl__enqueue_first_pass(comb, &progress);
    if (status == BLOOPCL_OK)
        status = bloopcl__enqueue_finalize(comb);
    if (status == BLOOPCL_OK) {
        progress.finalized = true;  /* the flags changed: a failure from here undoes them */
        status = enqueue_aux_finalize(comb, count);
        progress.kernels += status == BLOOPCL_OK;
    }
    if (status == BLOOPCL_OK)
        status = bloopcl__enqueue_second_pass(comb, &progress, done != NULL ? &event : NULL);
    return bloopcl__settle_step(comb, &progress, status, event, done);
}

/* The step with the weights in force: k = 1 the plain step at lambda_1; k >= 2 the sum. */
static bloopcl_status step_aux(bloopcl_combiner *comb, const bloopcl_tensor *g,
                               const bloopcl_tensor *aux_list, const double *lambdas,
                               size_t count, const bloopcl_tensor *d,
                               const bloopcl_step_options *options, cl_uint num_wait,
                               const cl_event *wait_list, cl_event *done)
{
    bloopcl_status status = check_request(comb, g, aux_list, lambdas, count, options);
    if (status != BLOOPCL_OK)
        return status;
    double lambda = comb->config.lambda;
    float kernel_lambda = comb->lambda;
    bloopcl_aux_state *aux = &comb->aux;
    double lambda_sum = 0.0;
    for (size_t i = 0; i < count; ++i)
        lambda_sum += lambdas[i];
    if (count == 1) {
        comb->config.lambda = lambdas[0];
        comb->lambda = (float)lambdas[0];
        status = bloopcl__step(comb, g, &aux_list[0], d, options, num_wait, wait_list, done);
    } else {
        memcpy(aux->lambdas, lambdas, count * sizeof *lambdas);
        aux->active = true;
        aux->lambda_sum = lambda_sum;
        comb->lambda = 1.0f;
        status = step_several(comb, g, aux_list, count, d, options, num_wait, wait_list, done);
        aux->active = false;
    }
    comb->config.lambda = lambda;
    comb->lambda = kernel_lambda;
    if (status == BLOOPCL_OK) {
        aux->count = count;
        memcpy(aux->lambdas, lambdas, count * sizeof *lambdas);
    }
    return status;
}

bloopcl_status bloopcl_step_aux(bloopcl_combiner *comb, const bloopcl_tensor *g,
                                const bloopcl_tensor *aux, const double *lambdas, size_t count,
                                const bloopcl_tensor *d, const bloopcl_step_options *options,
                                cl_uint num_wait_events, const cl_event *wait_list,
                                cl_event *done)
{
    if (done != NULL)
        *done = NULL;
    if (comb == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    if (!bloopcl__enter(comb->ctx))
        return BLOOPCL_ERR_BUSY;
    bloopcl__clear_error(comb->ctx);
    bloopcl_status status = step_aux(comb, g, aux, lambdas, count, d, options, num_wait_events,
                                     wait_list, done);
    bloopcl__leave(comb->ctx);
    return status;
}

/* --- diagnostics --------------------------------------------------------------------------- */

static void write_entry(bloopcl_aux_diagnostics *out, const bloopcl_aux_diagnostics *ours)
{
    size_t size = out->struct_size < sizeof *ours ? out->struct_size : sizeof *ours;
    memcpy((unsigned char *)out + sizeof size, (const unsigned char *)ours + sizeof size,
           size - sizeof size);
}

static bloopcl_status aux_diagnostics(bloopcl_combiner *comb, bloopcl_aux_diagnostics *out,
                                      size_t count)
{
    bloopcl_context *ctx = comb->ctx;
    if (out == NULL)
        return bloopcl__fail(ctx, BLOOPCL_ERR_NULL_ARGUMENT, "bloopcl_get_aux_diagnostics: "
                             "out is NULL");
    size_t had = comb->aux.count > 1 ? comb->aux.count : 1;
    if (count == 0 || count > had || comb->steps == 0)
        return bloopcl__fail(ctx, BLOOPCL_ERR_STATE, "bloopcl_get_aux_diagnostics: %zu "
                             "gradients asked, the last step had %zu", count,
                             comb->steps == 0 ? (size_t)0 : had);
    for (size_t i = 0; i < count; ++i)
        if (out[i].struct_size < sizeof(size_t) + sizeof(double))
            return bloopcl__fail(ctx, BLOOPCL_ERR_INVALID_ARGUMENT, "bloopcl_get_aux_"
                                 "diagnostics: out[%zu].struct_size = %zu (use "
                                 "BLOOPCL_AUX_DIAGNOSTICS_INIT)", i, out[i].struct_size);
    bloopcl_diagnostics main = BLOOPCL_DIAGNOSTICS_INIT;
    bloopcl_status status = bloopcl__get_diagnostics(comb, &main);
    if (status != BLOOPCL_OK)
        return status;
    float values[BLOOPCL_MAX_AUX * AUX_OUTPUTS] = {0};
    if (comb->aux.count > 1) {
        cl_int err = clEnqueueReadBuffer(ctx->queue, comb->aux.outputs, CL_TRUE, 0,
                                         sizeof values, values, 0, NULL, NULL);
        if (err != CL_SUCCESS)
            return bloopcl__fail_cl(ctx, err, "clEnqueueReadBuffer", "reading the auxiliary "
                                    "gradients' diagnostics");
    }
    for (size_t i = 0; i < count; ++i) {
        const float *v = values + i * AUX_OUTPUTS;
        bool several = comb->aux.count > 1;
        double lambda = several || comb->aux.count == 1 ? (float)comb->aux.lambdas[i]
                                                        : (float)comb->config.lambda;
        bloopcl_aux_diagnostics ours = {
            .struct_size = sizeof ours, .lambda = lambda,
            .ratio = several ? v[0] : main.ratio, .ratio_raw = several ? v[1] : main.ratio_raw,
            .dot_ema_aux = several ? v[2] : main.dot_ema_aux,
            .aux_norm_sq = several ? v[3] : main.aux_norm_sq};
        double norms = sqrt(main.ema_norm_sq) * sqrt(ours.aux_norm_sq);
        ours.cosine = norms > 0.0 ? ours.dot_ema_aux / norms : 0.0;
        write_entry(&out[i], &ours);
    }
    return BLOOPCL_OK;
}

bloopcl_status bloopcl_get_aux_diagnostics(bloopcl_combiner *comb, bloopcl_aux_diagnostics *out,
                                           size_t count)
{
    if (comb == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    if (!bloopcl__enter(comb->ctx))
        return BLOOPCL_ERR_BUSY;
    bloopcl__clear_error(comb->ctx);
    bloopcl_status status = bloopcl__check_no_split_step(comb, "bloopcl_get_aux_diagnostics");
    if (status == BLOOPCL_OK)
        status = aux_diagnostics(comb, out, count);
    bloopcl__leave(comb->ctx);
    return status;
}
