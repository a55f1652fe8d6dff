/* dots_fused.c — pass 1 of the fused backend: one kernel launch per 8-32 ranges reads
 * g, a and m (q) once, forms m' on the fly without writing it, and leaves one partial per dot
 * per work-group. Pass 2 recomputes m' bit-identically and writes it in place, so a step moves
 * 32 bytes per element (read g, a, m twice; write m, d) and keeps one copy of the state. */
#include "internal.h"

static bloopcl_status enqueue_fused_launch(bloopcl_combiner *comb, cl_uint index)
{
    bloopcl_context *ctx = comb->ctx;
    const bloopcl_plan *plan = &comb->plan;
    const bloopcl_launch *launch = &plan->launches[index];
    cl_kernel k = plan->kernels[index].kernel[BLOOPCL_LAUNCH_FUSED];
    const char *name = "bloopcl_fused_dots";
    bloopcl_launch_state state = bloopcl__launch_state(comb, launch);
    cl_uint num_slots = (cl_uint)launch->num_pieces;
    cl_ulong stride = bloopcl__partial_slots(comb), base = launch->first_partial;
    cl_int has_ema = bloopcl__method_has_ema(comb->config.method);
    cl_int has_aux = bloopcl__method_has_aux_ema(comb->config.method);
    cl_int check = comb->config.nonfinite == BLOOPCL_NONFINITE_SKIP;
    size_t local = ctx->kernels.fused_group_size;
    bloopcl_kernel_scales scales = bloopcl__kernel_scales(comb);
    const bloopcl_arg rest[] = {
        {BLOOPCL_ARG(state.m_cur)}, {BLOOPCL_ARG(state.q_cur)}, {BLOOPCL_ARG(plan->table)},
        {BLOOPCL_ARG(index)}, {BLOOPCL_ARG(num_slots)}, {BLOOPCL_ARG(comb->w)},
        {BLOOPCL_ARG(has_ema)}, {BLOOPCL_ARG(has_aux)}, {BLOOPCL_ARG(check)},
        {BLOOPCL_ARG(comb->flags)}, {BLOOPCL_ARG(comb->partials)}, {BLOOPCL_ARG(stride)},
        {BLOOPCL_ARG(base)}, {BLOOPCL_NUM_DOTS * local * sizeof(float), NULL},
        {BLOOPCL_ARG(scales.g)}, {BLOOPCL_ARG(scales.a)}, {BLOOPCL_ARG(scales.on_device)}};
    /* w (schedules), the partials buffer (it grows when a plan needs more) and the loss
     * scales may change */
    const bool changes[] = {false, false, false, false, false, true, false, false, false, false,
                            true, false, false, false, true, true, true};
    _Static_assert(sizeof changes / sizeof changes[0] == sizeof rest / sizeof rest[0],
                   "one entry per argument");
    bloopcl_status status = bloopcl__set_launch_args(comb, BLOOPCL_LAUNCH_FUSED, index, name, 2,
                                                     rest, changes,
                                                     sizeof rest / sizeof rest[0]);
    if (status != BLOOPCL_OK)
        return status;
    return bloopcl__enqueue_launch(ctx, k, name, launch, local, NULL);
}

bloopcl_status bloopcl__enqueue_fused_pass(bloopcl_combiner *comb, unsigned *kernels)
{
    /* always needed: <g,g> is reported for every method */
    bloopcl_status status = BLOOPCL_OK;
    for (size_t l = 0; l < comb->plan.num_launches && status == BLOOPCL_OK; ++l) {
        status = enqueue_fused_launch(comb, (cl_uint)l);
        *kernels += status == BLOOPCL_OK;
    }
    return status;
}
