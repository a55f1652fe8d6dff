/* step_split.c — a step in two halves, for a gradient sharded across devices or processes:
 *   begin   every check of bloopcl_step, then pass 1 on this shard and bloopcl_sum_partials,
 *           which sums its partials into the combiner's totals buffer exactly as
 *           bloopcl_finalize would (same rows, same work-group size, same order);
 *   (the caller adds the totals of every shard entrywise)
 *   end     the global totals into the totals buffer, bloopcl_finalize_totals (the decision
 *           bloopcl_finalize makes, from those totals), pass 2, flush, commit.
 * With one shard the global totals are the local ones (a float widened to double and rounded
 * back is itself), so begin + end is bloopcl_step bit for bit. Between the halves nothing of
 * the state has changed (the fused pass 1 writes none; CLBlast's writes the spare buffers,
 * which only a commit makes current), so a cancel only has to clear the flags pass 1 set. */
#include "internal.h"

#include <math.h>

_Static_assert(BLOOPCL_NUM_TOTALS == BLOOPCL_TOTALS, "bloopcl.h and cl/layout.h disagree");

bloopcl_status bloopcl__check_no_split_step(bloopcl_combiner *comb, const char *call)
{
    if (!comb->split_pending)
        return BLOOPCL_OK;
    return bloopcl__fail(comb->ctx, BLOOPCL_ERR_STATE, "%s: a split step is pending on this "
                         "combiner; end it (bloopcl_step_end) or cancel it "
                         "(bloopcl_step_cancel) first", call);
}

static bloopcl_status check_split_pending(bloopcl_combiner *comb, const char *call)
{
    if (comb->split_pending)
        return BLOOPCL_OK;
    return bloopcl__fail(comb->ctx, BLOOPCL_ERR_STATE, "%s: no split step is pending "
                         "(bloopcl_step_begin first)", call);
}

static bloopcl_status ensure_totals_buffer(bloopcl_combiner *comb)
{
    if (comb->totals != NULL)
        return BLOOPCL_OK;
    cl_int err;
    comb->totals = clCreateBuffer(comb->ctx->cl_ctx, CL_MEM_READ_WRITE,
                                  BLOOPCL_TOTALS * sizeof(cl_float), NULL, &err);
    if (err != CL_SUCCESS) {
        comb->totals = NULL;
        return bloopcl__fail_cl(comb->ctx, err, "clCreateBuffer", "allocating the split step's "
                                "totals");
    }
    return BLOOPCL_OK;
}

static bloopcl_status enqueue_sum_partials(bloopcl_combiner *comb)
{
    bloopcl_context *ctx = comb->ctx;
    cl_kernel k = ctx->kernels.sum_partials;
    size_t local = ctx->kernels.finalize_group_size;  /* bloopcl_finalize's: the same sums */
    cl_ulong slots = bloopcl__partial_slots(comb);
    cl_int mask = bloopcl__dots_mask(comb);
    const bloopcl_arg args[] = {
        {BLOOPCL_ARG(comb->partials)}, {BLOOPCL_ARG(slots)}, {BLOOPCL_ARG(mask)},
        {BLOOPCL_ARG(comb->flags)}, {BLOOPCL_NUM_DOTS * local * sizeof(float), NULL},
        {BLOOPCL_ARG(comb->totals)}};
    bloopcl_status status = bloopcl__set_arg_list(ctx, k, "bloopcl_sum_partials", 0, args,
                                                  sizeof args / sizeof args[0]);
    if (status != BLOOPCL_OK)
        return status;
    return bloopcl__enqueue_kernel(ctx, k, "bloopcl_sum_partials", local, local, NULL);
}

static bloopcl_status read_totals(bloopcl_combiner *comb, double *totals)
{
    cl_float local[BLOOPCL_TOTALS];
    cl_int err = clEnqueueReadBuffer(comb->ctx->queue, comb->totals, CL_TRUE, 0, sizeof local,
                                     local, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(comb->ctx, err, "clEnqueueReadBuffer", "reading the split "
                                "step's totals");
    for (int i = 0; i < BLOOPCL_TOTALS; ++i)
        totals[i] = local[i];
    return BLOOPCL_OK;
}

/* The step is abandoned: pass 1's flags cleared (nothing else changed), nothing pending.
 * If the flags cannot be cleared, the next step could be skipped for this one's non-finite
 * input: an error the caller must see (the state itself is unchanged). */
static bloopcl_status abandon(bloopcl_combiner *comb)
{
    comb->split_pending = false;
    cl_int err = bloopcl__undo_flags(comb, false);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(comb->ctx, err, "resetting the device flags", "cancelling the "
                                "split step (the state is unchanged, but the next step may see "
                                "this one's non-finite flag: reset the state to be sure)");
    return BLOOPCL_OK;
}

static bloopcl_status begin(bloopcl_combiner *comb, const bloopcl_tensor *g,
                            const bloopcl_tensor *a, const bloopcl_tensor *d,
                            const bloopcl_step_options *options, cl_uint num_wait,
                            const cl_event *wait_list, double *totals)
{
    bloopcl_status status = bloopcl__check_no_split_step(comb, "bloopcl_step_begin");
    if (status == BLOOPCL_OK)
        status = ensure_totals_buffer(comb);
    if (status == BLOOPCL_OK)
        status = bloopcl__prepare_step(comb, g, a, d, options, num_wait, wait_list);
    if (status != BLOOPCL_OK)
        return status;  /* nothing of this step was enqueued */
    bloopcl_step_progress progress = {0};
    status = bloopcl__enqueue_first_pass(comb, &progress);
    if (status == BLOOPCL_OK)
        status = enqueue_sum_partials(comb);
    if (status == BLOOPCL_OK && totals != NULL)
        status = read_totals(comb, totals);
    if (status != BLOOPCL_OK)
        return bloopcl__fail_step(comb, &progress, status);  /* nothing to undo but flags */
    comb->split_pending = true;
    comb->split_kernels = progress.kernels + 1;  /* and bloopcl_sum_partials */
    return BLOOPCL_OK;
}

/* Finalize from the totals buffer, pass 2, then the step is committed. */
static bloopcl_status end(bloopcl_combiner *comb, cl_event *done)
{
    bloopcl_context *ctx = comb->ctx;
    cl_kernel k = ctx->kernels.finalize_totals;
    const char *name = "bloopcl_finalize_totals";
    cl_int mask = bloopcl__dots_mask(comb);
    const bloopcl_arg args[] = {{BLOOPCL_ARG(comb->totals)}, {BLOOPCL_ARG(mask)},
                                {BLOOPCL_ARG(comb->scalars)}, {BLOOPCL_ARG(comb->flags)}};
    cl_uint count = sizeof args / sizeof args[0];
    bloopcl_step_progress progress = {.kernels = comb->split_kernels};
    cl_event event = NULL;
    comb->split_pending = false;
    bloopcl_status status = bloopcl__set_arg_list(ctx, k, name, 0, args, count);
    if (status == BLOOPCL_OK)
        status = bloopcl__set_decision_args(comb, k, name, count);
    if (status == BLOOPCL_OK)
        status = bloopcl__enqueue_kernel(ctx, k, name, 1, 1, NULL);
    if (status == BLOOPCL_OK)
        status = bloopcl__enqueue_second_pass(comb, &progress, done != NULL ? &event : NULL);
    return bloopcl__settle_step(comb, &progress, status, event, done);
}

static bloopcl_status write_totals(bloopcl_combiner *comb, const double *totals)
{
    cl_float global[BLOOPCL_TOTALS];
    for (int i = 0; i < BLOOPCL_TOTALS; ++i)
        global[i] = (cl_float)totals[i];
    cl_int err = clEnqueueWriteBuffer(comb->ctx->queue, comb->totals, CL_TRUE, 0, sizeof global,
                                      global, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(comb->ctx, err, "clEnqueueWriteBuffer", "writing the global "
                                "totals");
    return BLOOPCL_OK;
}

/* A buffer of this cl_context holding BLOOPCL_TOTALS floats from `offset`. */
static bloopcl_status check_totals_buffer(bloopcl_combiner *comb, const char *call,
                                          cl_mem buffer, size_t offset)
{
    if (buffer == NULL)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_NULL_ARGUMENT, "%s: buffer is NULL", call);
    cl_context owner = NULL;
    size_t size = 0;
    cl_int err = clGetMemObjectInfo(buffer, CL_MEM_CONTEXT, sizeof owner, &owner, NULL);
    if (err == CL_SUCCESS)
        err = clGetMemObjectInfo(buffer, CL_MEM_SIZE, sizeof size, &size, NULL);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(comb->ctx, err, "clGetMemObjectInfo", "checking the totals "
                                "buffer");
    if (owner != comb->ctx->cl_ctx)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_WRONG_CONTEXT, "%s: the buffer belongs to "
                             "another cl_context", call);
    size_t need = BLOOPCL_TOTALS * sizeof(cl_float);
    if (offset > size || size - offset < need)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_BUFFER_TOO_SMALL, "%s: the buffer holds %zu "
                             "bytes; offset %zu + %zu bytes of totals do not fit", call, size,
                             offset, need);
    return BLOOPCL_OK;
}

/* --- the public calls: one at a time per context ------------------------------------------ */

/* Enters the combiner's context for `call`: BLOOPCL_ERR_BUSY (nothing touched) or OK. */
static bloopcl_status enter(bloopcl_combiner *comb)
{
    if (comb == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    if (!bloopcl__enter(comb->ctx))
        return BLOOPCL_ERR_BUSY;
    bloopcl__clear_error(comb->ctx);
    return BLOOPCL_OK;
}

static bloopcl_status leave(bloopcl_combiner *comb, bloopcl_status status)
{
    bloopcl__leave(comb->ctx);
    return status;
}

bloopcl_status bloopcl_step_begin(bloopcl_combiner *comb, const bloopcl_tensor *g,
                                  const bloopcl_tensor *a, const bloopcl_tensor *d,
                                  const bloopcl_step_options *options, cl_uint num_wait_events,
                                  const cl_event *wait_list, double *totals)
{
    bloopcl_status status = enter(comb);
    if (status != BLOOPCL_OK)
        return status;
    return leave(comb, begin(comb, g, a, d, options, num_wait_events, wait_list, totals));
}

bloopcl_status bloopcl_step_read_totals(bloopcl_combiner *comb, double *totals)
{
    bloopcl_status status = enter(comb);
    if (status != BLOOPCL_OK)
        return status;
    status = check_split_pending(comb, "bloopcl_step_read_totals");
    if (status == BLOOPCL_OK && totals == NULL)
        status = bloopcl__fail(comb->ctx, BLOOPCL_ERR_NULL_ARGUMENT,
                               "bloopcl_step_read_totals: totals is NULL");
    if (status == BLOOPCL_OK)
        status = read_totals(comb, totals);
    return leave(comb, status);  /* a failed read leaves the step pending: cancel or end it */
}

bloopcl_status bloopcl_step_copy_totals(bloopcl_combiner *comb, cl_mem buffer, size_t offset)
{
    const char *call = "bloopcl_step_copy_totals";
    bloopcl_status status = enter(comb);
    if (status != BLOOPCL_OK)
        return status;
    status = check_split_pending(comb, call);
    if (status == BLOOPCL_OK)
        status = check_totals_buffer(comb, call, buffer, offset);
    if (status == BLOOPCL_OK) {
        cl_int err = clEnqueueCopyBuffer(comb->ctx->queue, comb->totals, buffer, 0, offset,
                                         BLOOPCL_TOTALS * sizeof(cl_float), 0, NULL, NULL);
        if (err != CL_SUCCESS)
            status = bloopcl__fail_cl(comb->ctx, err, "clEnqueueCopyBuffer", "copying the "
                                      "split step's totals out");
    }
    return leave(comb, status);
}

bloopcl_status bloopcl_step_end(bloopcl_combiner *comb, const double *totals, cl_event *done)
{
    if (done != NULL)
        *done = NULL;
    bloopcl_status status = enter(comb);
    if (status != BLOOPCL_OK)
        return status;
    status = check_split_pending(comb, "bloopcl_step_end");
    if (status == BLOOPCL_OK && totals == NULL) {
        abandon(comb);  /* "afterwards nothing is pending" */
        status = bloopcl__fail(comb->ctx, BLOOPCL_ERR_NULL_ARGUMENT, "bloopcl_step_end: totals "
                               "is NULL; the step was cancelled");
    }
    if (status == BLOOPCL_OK) {
        status = write_totals(comb, totals);
        if (status != BLOOPCL_OK)
            abandon(comb);
    }
    if (status == BLOOPCL_OK)
        status = end(comb, done);
    return leave(comb, status);
}

bloopcl_status bloopcl_step_end_buffer(bloopcl_combiner *comb, cl_mem buffer, size_t offset,
                                       cl_event *done)
{
    const char *call = "bloopcl_step_end_buffer";
    if (done != NULL)
        *done = NULL;
    bloopcl_status status = enter(comb);
    if (status != BLOOPCL_OK)
        return status;
    status = check_split_pending(comb, call);
    if (status == BLOOPCL_OK) {
        status = check_totals_buffer(comb, call, buffer, offset);
        if (status == BLOOPCL_OK) {
            cl_int err = clEnqueueCopyBuffer(comb->ctx->queue, buffer, comb->totals, offset, 0,
                                             BLOOPCL_TOTALS * sizeof(cl_float), 0, NULL, NULL);
            if (err != CL_SUCCESS)
                status = bloopcl__fail_cl(comb->ctx, err, "clEnqueueCopyBuffer", "reading "
                                          "the global totals");
        }
        if (status != BLOOPCL_OK) {
            char cause[1024];
            bloopcl__format(cause, sizeof cause, "%s", comb->ctx->last_error);
            abandon(comb);
            status = bloopcl__fail(comb->ctx, status, "%s; the step was cancelled", cause);
        }
    }
    if (status == BLOOPCL_OK)
        status = end(comb, done);
    return leave(comb, status);
}

bloopcl_status bloopcl_step_cancel(bloopcl_combiner *comb)
{
    bloopcl_status status = enter(comb);
    if (status != BLOOPCL_OK)
        return status;
    status = check_split_pending(comb, "bloopcl_step_cancel");
    if (status == BLOOPCL_OK)
        status = abandon(comb);
    return leave(comb, status);
}

/* Neumaier's compensated sum of column `column` of the rows, in row order. Once a value or
 * the running sum is not finite the plain IEEE sum is the answer (the compensation would
 * turn Inf into NaN). */
static double sum_column(const double *rows, size_t shards, size_t column)
{
    if (shards == 0)
        return 0.0;
    double sum = rows[column], carry = 0.0;  /* one row: itself, -0 included */
    bool finite = isfinite(sum);
    for (size_t r = 1; r < shards; ++r) {
        double x = rows[r * BLOOPCL_TOTALS + column];
        double t = sum + x;
        finite = finite && isfinite(x) && isfinite(t);
        if (finite)
            carry += fabs(sum) >= fabs(x) ? (sum - t) + x : (x - t) + sum;
        sum = t;
    }
    return finite && carry != 0.0 ? sum + carry : sum;  /* (-0 + 0 would be +0) */
}

bloopcl_status bloopcl_sum_totals(const double *rows, size_t shards, double *out)
{
    if ((rows == NULL && shards > 0) || out == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    for (size_t column = 0; column < BLOOPCL_TOTALS; ++column)
        out[column] = sum_column(rows, shards, column);
    return BLOOPCL_OK;
}
