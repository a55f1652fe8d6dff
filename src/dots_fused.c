/* dots_fused.c — pass 1 of the fused backend: one kernel per piece reads g, a and m (q) once,
 * forms m' on the fly without writing it, and leaves one partial per dot per work-group.
 * Pass 2 recomputes m' bit-identically and writes it, so a step moves 32 bytes per element
 * (read g, a, m twice; write m, d) instead of materialising m' in between. */
#include "internal.h"

static bloopcl_status enqueue_fused_piece(bloopcl_combiner *comb, const bloopcl_piece *p,
                                          size_t slots, size_t slot_base)
{
    bloopcl_context *ctx = comb->ctx;
    cl_kernel k = ctx->kernels.fused_dots;
    bloopcl_state_chunk *chunk = comb->num_chunks ? &comb->chunks[p->state_chunk] : NULL;
    cl_mem none = NULL;
    cl_mem m_cur = chunk ? chunk->ema[comb->current] : none;
    cl_mem q_cur = chunk ? chunk->aux_ema[comb->current] : none;
    cl_ulong g_off = p->g_offset, a_off = p->a_offset, s_off = p->state_offset, count = p->count;
    cl_ulong slots_arg = slots, base = slot_base;
    cl_int has_ema = bloopcl__method_has_ema(comb->config.method);
    cl_int has_aux = bloopcl__method_has_aux_ema(comb->config.method);
    cl_int check = comb->config.nonfinite == BLOOPCL_NONFINITE_SKIP;
    size_t local = ctx->kernels.fused_group_size;
    bloopcl_status status = bloopcl__set_args(ctx, k, "bloopcl_fused_dots", 17,
        BLOOPCL_ARG(p->g), BLOOPCL_ARG(g_off), BLOOPCL_ARG(p->a), BLOOPCL_ARG(a_off),
        BLOOPCL_ARG(m_cur), BLOOPCL_ARG(q_cur), BLOOPCL_ARG(s_off), BLOOPCL_ARG(count),
        BLOOPCL_ARG(comb->w), BLOOPCL_ARG(has_ema), BLOOPCL_ARG(has_aux), BLOOPCL_ARG(check),
        BLOOPCL_ARG(comb->flags), BLOOPCL_ARG(comb->partials), BLOOPCL_ARG(slots_arg),
        BLOOPCL_ARG(base), (size_t)(BLOOPCL_NUM_DOTS * local * sizeof(float)),
        (const void *)NULL);
    if (status != BLOOPCL_OK)
        return status;
    return bloopcl__enqueue_1d(ctx, k, "bloopcl_fused_dots", ctx->kernels.fused_groups * local,
                               local);
}

bloopcl_status bloopcl__enqueue_fused_pass(bloopcl_combiner *comb, size_t num_pieces,
                                           size_t slots)
{
    bool needed = true;  /* <g,g> is always reported */
    bloopcl_status status = BLOOPCL_OK;
    size_t groups = comb->ctx->kernels.fused_groups;
    for (size_t p = 0; p < num_pieces && status == BLOOPCL_OK && needed; ++p)
        status = enqueue_fused_piece(comb, &comb->pieces[p], slots, p * groups);
    return status;
}
