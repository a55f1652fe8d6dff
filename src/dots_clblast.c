/* dots_clblast.c — pass 1 of the CLBlast backend (the design's default path): an EMA kernel
 * materialises m' (and q') in the spare state buffers, then CLBlastSdot takes each dot product
 * of each piece into its own partial slot, on the device. CLBlast takes no wait list, which is
 * why the queue is in order. */
#include "internal.h"

#include <clblast_c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* BLOOPCL_CLBLAST_XDOT="WGS1,WGS2" hands Xdot parameters to CLBlast (CLBlastOverrideParameters)
 * for this device. CLBlast's tuner (clblast_tuner_xdot, PoCL 3.1, 2-core EPYC, n = 16M) finds
 * 1024,64: bloopcl-bench's CLBlast Bloop step at 16M drops from 154 to 110 ms, but at 64k it
 * rises from 1.0 to 2.2 ms, so no value is imposed by default: CLBlast's database decides. */
bloopcl_status bloopcl__choose_xdot_parameters(bloopcl_context *ctx)
{
    const char *text = getenv("BLOOPCL_CLBLAST_XDOT");
    ctx->xdot_wgs[0] = ctx->xdot_wgs[1] = 0;
    if (text == NULL || text[0] == '\0' || strcmp(text, "default") == 0)
        return BLOOPCL_OK;
    unsigned long wgs1 = 0, wgs2 = 0;
    char end = '\0';
    if (sscanf(text, "%lu,%lu%c", &wgs1, &wgs2, &end) != 2 || wgs1 == 0 || wgs2 == 0 ||
        (wgs1 & (wgs1 - 1)) != 0 || (wgs2 & (wgs2 - 1)) != 0)
        return bloopcl__fail(ctx, BLOOPCL_ERR_INVALID_ARGUMENT,
                             "BLOOPCL_CLBLAST_XDOT=\"%s\" is not \"WGS1,WGS2\" (two powers of two, "
                             "e.g. 1024,64) or \"default\"", text);
    ctx->xdot_wgs[0] = wgs1;
    ctx->xdot_wgs[1] = wgs2;
    return BLOOPCL_OK;
}

/* Before the first Sdot: hand the chosen Xdot parameters to CLBlast (for this device). */
static bloopcl_status apply_xdot_parameters(bloopcl_context *ctx)
{
    if (ctx->used_clblast || ctx->xdot_wgs[0] == 0)
        return BLOOPCL_OK;
    const char *names[2] = {"WGS1", "WGS2"};
    CLBlastStatusCode code = CLBlastOverrideParameters(ctx->device, "Xdot", CLBlastPrecisionSingle,
                                                       2, names, ctx->xdot_wgs);
    if (code != CLBlastSuccess)
        return bloopcl__fail(ctx, BLOOPCL_ERR_CLBLAST, "CLBlastOverrideParameters(Xdot, WGS1 = "
                             "%zu, WGS2 = %zu) failed with status %d", ctx->xdot_wgs[0],
                             ctx->xdot_wgs[1], (int)code);
    return BLOOPCL_OK;
}

static bloopcl_status enqueue_ema_piece(bloopcl_combiner *comb, const bloopcl_piece *p)
{
    bloopcl_context *ctx = comb->ctx;
    cl_kernel k = ctx->kernels.ema_update;
    bloopcl_state_chunk *chunk = comb->num_chunks ? &comb->chunks[p->state_chunk] : NULL;
    cl_mem none = NULL;
    cl_mem m_cur = chunk ? chunk->ema[comb->current] : none;
    cl_mem m_next = chunk ? chunk->ema[1 - comb->current] : none;
    cl_mem q_cur = chunk ? chunk->aux_ema[comb->current] : none;
    cl_mem q_next = chunk ? chunk->aux_ema[1 - comb->current] : none;
    cl_ulong g_off = p->g_offset, a_off = p->a_offset, s_off = p->state_offset, count = p->count;
    cl_int has_ema = bloopcl__method_has_ema(comb->config.method);
    cl_int has_aux = bloopcl__method_has_aux_ema(comb->config.method);
    cl_int check = comb->config.nonfinite == BLOOPCL_NONFINITE_SKIP;
    bloopcl_status status = bloopcl__set_args(ctx, k, "bloopcl_ema_update", 15,
        BLOOPCL_ARG(p->g), BLOOPCL_ARG(g_off), BLOOPCL_ARG(p->a), BLOOPCL_ARG(a_off),
        BLOOPCL_ARG(m_cur), BLOOPCL_ARG(m_next), BLOOPCL_ARG(q_cur), BLOOPCL_ARG(q_next),
        BLOOPCL_ARG(s_off), BLOOPCL_ARG(count), BLOOPCL_ARG(comb->w), BLOOPCL_ARG(has_ema),
        BLOOPCL_ARG(has_aux), BLOOPCL_ARG(check), BLOOPCL_ARG(comb->flags));
    if (status != BLOOPCL_OK)
        return status;
    size_t local = ctx->kernels.elementwise_group_size;
    return bloopcl__enqueue_1d(ctx, k, "bloopcl_ema_update", ctx->kernels.elementwise_groups * local, local);
}

/* CLBlast's codes below -1000 are its own; above, they are OpenCL's (-4, -5, -6: memory). */
static bool out_of_memory(CLBlastStatusCode code)
{
    return code == CLBlastOpenCLOutOfHostMemory || code == CLBlastOpenCLOutOfResources ||
           (int)code == CL_MEM_OBJECT_ALLOCATION_FAILURE;
}

/* partials[dot * slots + slot] <- <x, y> over one piece. */
static bloopcl_status sdot(bloopcl_combiner *comb, int dot, size_t slots, size_t slot,
                           size_t count, cl_mem x, size_t x_off, cl_mem y, size_t y_off)
{
    cl_command_queue queue = comb->ctx->queue;
    bloopcl_status tuned = apply_xdot_parameters(comb->ctx);
    if (tuned != BLOOPCL_OK)
        return tuned;
    comb->ctx->used_clblast = true;
    CLBlastStatusCode code = CLBlastSdot(count, comb->partials, (size_t)dot * slots + slot, x,
                                         x_off, 1, y, y_off, 1, &queue, NULL);
    if (code != CLBlastSuccess)
        return bloopcl__fail(comb->ctx, out_of_memory(code) ? BLOOPCL_ERR_OUT_OF_MEMORY
                                                            : BLOOPCL_ERR_CLBLAST,
                             "CLBlastSdot failed with status %d (n = %zu, dot %d) on device "
                             "\"%s\"", (int)code, count, dot, comb->ctx->info.device_name);
    return BLOOPCL_OK;
}

/* The dots of one piece: <m',a>, <m',m'>, <a,a>; PCGrad adds <q',g>, <q',q'>. */
static bloopcl_status piece_dots(bloopcl_combiner *comb, const bloopcl_piece *p, size_t slots,
                                 size_t slot)
{
    bloopcl_state_chunk *chunk = &comb->chunks[p->state_chunk];
    cl_mem m = chunk->ema[1 - comb->current];
    cl_mem q = chunk->aux_ema[1 - comb->current];
    size_t n = p->count, s = p->state_offset;
    bloopcl_status status = sdot(comb, BLOOPCL_DOT_EMA_AUX, slots, slot, n, m, s, p->a, p->a_offset);
    if (status == BLOOPCL_OK)
        status = sdot(comb, BLOOPCL_DOT_EMA_EMA, slots, slot, n, m, s, m, s);
    if (status == BLOOPCL_OK)
        status = sdot(comb, BLOOPCL_DOT_AUX_AUX, slots, slot, n, p->a, p->a_offset, p->a,
                      p->a_offset);
    if (status == BLOOPCL_OK && bloopcl__method_has_aux_ema(comb->config.method))
        status = sdot(comb, BLOOPCL_DOT_AUXEMA_MAIN, slots, slot, n, q, s, p->g, p->g_offset);
    if (status == BLOOPCL_OK && bloopcl__method_has_aux_ema(comb->config.method))
        status = sdot(comb, BLOOPCL_DOT_AUXEMA_AUXEMA, slots, slot, n, q, s, q, s);
    return status;
}

/* <g,g> of one piece, for every method (the gradient norm the trainer may clip by). */
static bloopcl_status piece_grad_norm(bloopcl_combiner *comb, const bloopcl_piece *p, size_t slots,
                                      size_t slot)
{
    return sdot(comb, BLOOPCL_DOT_MAIN_MAIN, slots, slot, p->count, p->g, p->g_offset, p->g,
                p->g_offset);
}

bloopcl_status bloopcl__enqueue_clblast_pass(bloopcl_combiner *comb, size_t num_pieces,
                                             size_t slots)
{
    bool has_ema = bloopcl__method_has_ema(comb->config.method);
    bool check = comb->config.nonfinite == BLOOPCL_NONFINITE_SKIP;
    bloopcl_status status = BLOOPCL_OK;
    for (size_t p = 0; p < num_pieces && status == BLOOPCL_OK && (has_ema || check); ++p)
        status = enqueue_ema_piece(comb, &comb->pieces[p]);
    for (size_t p = 0; p < num_pieces && status == BLOOPCL_OK && has_ema; ++p)
        status = piece_dots(comb, &comb->pieces[p], slots, p);
    for (size_t p = 0; p < num_pieces && status == BLOOPCL_OK; ++p)
        status = piece_grad_norm(comb, &comb->pieces[p], slots, p);
    return status;
}
