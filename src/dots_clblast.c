/* dots_clblast.c — pass 1 of the CLBlast backend (the design's default path): an EMA kernel
 * materialises m' (and q') in the spare state buffers, then CLBlastSdot takes each dot product
 * of each piece into its own partial slot, on the device. CLBlast takes no wait list, which is
 * why the queue is in order. */
#include "internal.h"

#include <clblast_c.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* CLBlast (1.5.3 to 1.7.0) keeps process-wide caches (compiled programs, its parameter
 * database) and fills them at a routine's first call without a lock: first calls in two
 * threads crashed or failed in it (8 threads: 36 runs in 249 before this lock). Every CLBlast
 * call of the library holds this lock; uncontended it costs a few tens of nanoseconds. A
 * pthread mutex, not C11's threads.h, which Apple's C library lacks. */
static pthread_mutex_t clblast_mutex = PTHREAD_MUTEX_INITIALIZER;

void bloopcl__clblast_lock(void)
{
    pthread_mutex_lock(&clblast_mutex);
}

void bloopcl__clblast_unlock(void)
{
    pthread_mutex_unlock(&clblast_mutex);
}

/* BLOOPCL_CLBLAST_XDOT="WGS1,WGS2" hands Xdot parameters to CLBlast (CLBlastOverrideParameters)
 * for this device. CLBlast's tuner (clblast_tuner_xdot, PoCL 3.1, 2-core EPYC, n = 16M) finds
 * 1024,64: bloopcl-bench's CLBlast Bloop step at 16M drops from 154 to 110 ms, but at 64k it
 * rises from 1.0 to 2.2 ms, so no value is imposed by default: CLBlast's database decides. */
bloopcl_status bloopcl__choose_xdot_parameters(bloopcl_context *ctx)
{
    const char *text = ctx->env.clblast_xdot;
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
    bloopcl__clblast_lock();
    CLBlastStatusCode code = CLBlastOverrideParameters(ctx->device, "Xdot", CLBlastPrecisionSingle,
                                                       2, names, ctx->xdot_wgs);
    bloopcl__clblast_unlock();
    if (code != CLBlastSuccess)
        return bloopcl__fail(ctx, BLOOPCL_ERR_CLBLAST, "CLBlastOverrideParameters(Xdot, WGS1 = "
                             "%zu, WGS2 = %zu) failed with status %d", ctx->xdot_wgs[0],
                             ctx->xdot_wgs[1], (int)code);
    return BLOOPCL_OK;
}

static bloopcl_status enqueue_ema_launch(bloopcl_combiner *comb, cl_uint index)
{
    bloopcl_context *ctx = comb->ctx;
    const bloopcl_plan *plan = &comb->plan;
    const bloopcl_launch *launch = &plan->launches[index];
    cl_kernel k = plan->kernels[index].kernel[BLOOPCL_LAUNCH_EMA];
    const char *name = "bloopcl_ema_update";
    bloopcl_launch_state state = bloopcl__launch_state(comb, launch);
    cl_uint num_slots = (cl_uint)launch->num_pieces;
    cl_int has_ema = bloopcl__method_has_ema(comb->config.method);
    cl_int has_aux = bloopcl__method_has_aux_ema(comb->config.method);
    cl_int check = comb->config.nonfinite == BLOOPCL_NONFINITE_SKIP;
    bloopcl_kernel_scales scales = bloopcl__kernel_scales(comb);
    const bloopcl_arg rest[] = {
        {BLOOPCL_ARG(state.m_cur)}, {BLOOPCL_ARG(state.m_next)}, {BLOOPCL_ARG(state.q_cur)},
        {BLOOPCL_ARG(state.q_next)},
        {BLOOPCL_ARG(plan->table)}, {BLOOPCL_ARG(index)}, {BLOOPCL_ARG(num_slots)},
        {BLOOPCL_ARG(comb->w)}, {BLOOPCL_ARG(has_ema)}, {BLOOPCL_ARG(has_aux)},
        {BLOOPCL_ARG(check)}, {BLOOPCL_ARG(comb->flags)}, {BLOOPCL_ARG(scales.g)},
        {BLOOPCL_ARG(scales.a)}, {BLOOPCL_ARG(scales.on_device)}};
    /* the state (flipped by the double buffer), w (schedules) and the loss scales change
     * between steps */
    const bool changes[] = {true, true, true, true, false, false, false, true, false, false,
                            false, false, true, true, true};
    _Static_assert(sizeof changes / sizeof changes[0] == sizeof rest / sizeof rest[0],
                   "one entry per argument");
    bloopcl_status status = bloopcl__set_launch_args(comb, BLOOPCL_LAUNCH_EMA, index, name, 2,
                                                     rest, changes,
                                                     sizeof rest / sizeof rest[0]);
    if (status != BLOOPCL_OK)
        return status;
    return bloopcl__enqueue_launch(ctx, k, name, launch, ctx->kernels.elementwise_group_size,
                                   NULL);
}

/* CLBlast's codes below -1000 are its own; above, they are OpenCL's (-4, -5, -6: memory). */
static bool out_of_memory(CLBlastStatusCode code)
{
    return code == CLBlastOpenCLOutOfHostMemory || code == CLBlastOpenCLOutOfResources ||
           (int)code == CL_MEM_OBJECT_ALLOCATION_FAILURE;
}

bool bloopcl__clblast_rebase(size_t offset, size_t count, size_t limit, size_t align_bytes,
                             size_t *origin_bytes, size_t *rebased_offset)
{
    if (offset + count <= limit)
        return false;
    size_t align = align_bytes >= sizeof(float) ? align_bytes : sizeof(float);
    size_t bytes = offset * sizeof(float);
    *origin_bytes = bytes / align * align;
    *rebased_offset = (bytes - *origin_bytes) / sizeof(float);
    return true;
}

/* A vector operand as CLBlast gets it: the buffer itself, or a sub-buffer rebased so that
 * offset + count fits in an int (then `owned` is set and released after the call). */
typedef struct clblast_operand {
    cl_mem buffer;
    size_t offset;
    bool owned;
} clblast_operand;

static bloopcl_status operand(bloopcl_context *ctx, cl_mem buffer, size_t offset, size_t count,
                              clblast_operand *out)
{
    *out = (clblast_operand){buffer, offset, false};
    size_t limit = ctx->clblast_index_limit ? ctx->clblast_index_limit : (size_t)INT_MAX;
    cl_uint align_bits = 0;  /* sub-buffer origins must be multiples of this */
    size_t origin = 0, rebased = 0;
    if (offset + count <= limit)
        return BLOOPCL_OK;
    clGetDeviceInfo(ctx->device, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits,
                    NULL);
    bloopcl__clblast_rebase(offset, count, limit, align_bits / 8, &origin, &rebased);
    cl_buffer_region region = {origin, (rebased + count) * sizeof(float)};
    cl_int err;
    out->buffer = clCreateSubBuffer(buffer, 0, CL_BUFFER_CREATE_TYPE_REGION, &region, &err);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(ctx, err, "clCreateSubBuffer", "rebasing a piece whose offset "
                                "exceeds CLBlast's int range (the buffer must not be a "
                                "sub-buffer itself)");
    out->offset = rebased;
    out->owned = true;
    return BLOOPCL_OK;
}

/* partials[dot * slots + slot] <- <x, y> over one piece. */
static bloopcl_status sdot(bloopcl_combiner *comb, int dot, size_t slots, size_t slot,
                           size_t count, cl_mem x_buffer, size_t x_off, cl_mem y_buffer,
                           size_t y_off)
{
    bloopcl_context *ctx = comb->ctx;
    cl_command_queue queue = ctx->queue;
    bloopcl_status status = apply_xdot_parameters(ctx);
    clblast_operand x = {0}, y = {0};
    if (status == BLOOPCL_OK)
        status = operand(ctx, x_buffer, x_off, count, &x);
    if (status == BLOOPCL_OK)
        status = operand(ctx, y_buffer, y_off, count, &y);
    CLBlastStatusCode code = CLBlastSuccess;
    if (status == BLOOPCL_OK) {
        ctx->used_clblast = true;
        bloopcl__clblast_lock();
        code = CLBlastSdot(count, comb->partials, (size_t)dot * slots + slot, x.buffer, x.offset,
                           1, y.buffer, y.offset, 1, &queue, NULL);
        bloopcl__clblast_unlock();
    }
    if (x.owned)
        clReleaseMemObject(x.buffer);  /* the driver keeps it while the kernel needs it */
    if (y.owned)
        clReleaseMemObject(y.buffer);
    if (status != BLOOPCL_OK)
        return status;
    if (code != CLBlastSuccess)
        return bloopcl__fail(ctx, out_of_memory(code) ? BLOOPCL_ERR_OUT_OF_MEMORY
                                                      : BLOOPCL_ERR_CLBLAST,
                             "CLBlastSdot failed with status %d (n = %zu, dot %d) on device "
                             "\"%s\"", (int)code, count, dot, ctx->info.device_name);
    return BLOOPCL_OK;
}

/* The dots of one piece: <m',a>, <m',m'>, <a,a>; PCGrad adds <q',g>, <q',q'>. */
static bloopcl_status piece_dots(bloopcl_combiner *comb, const bloopcl_piece *p, size_t slots,
                                 size_t slot)
{
    cl_mem m = bloopcl__state_buffer(comb, p->state_chunk, BLOOPCL_STATE_EMA, true);
    cl_mem q = bloopcl__state_buffer(comb, p->state_chunk, BLOOPCL_STATE_AUX_EMA, true);
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

/* Each CLBlastSdot allocates a temporary buffer of 2 WGS2 floats, and when that allocation
 * fails CLBlast (1.5.3 to 1.7.0) ends the process: the Buffer constructor throws, and the
 * deleter of its half-built handle, run during the unwinding, throws again from
 * CheckError(clReleaseMemObject(NULL)) inside a destructor, which is std::terminate. CLBlast's
 * C API takes no scratch buffer for Xdot, so the step first makes one such allocation itself,
 * of the largest size WGS2 can take (the device's work-group limit), and refuses the step
 * before anything is enqueued when the device cannot give it. (A failure of CLBlast's own
 * allocation right after this one succeeded, say another allocator taking the last memory in
 * between, still ends the process; bloopcl.h says so.) */
static bloopcl_status check_clblast_temporary(bloopcl_context *ctx)
{
    size_t wgs2 = ctx->xdot_wgs[1];
    if (wgs2 == 0 && clGetDeviceInfo(ctx->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof wgs2,
                                     &wgs2, NULL) != CL_SUCCESS)
        wgs2 = 1024;
    size_t bytes = 2 * wgs2 * sizeof(float);
    cl_int err;
    cl_mem probe = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (err != CL_SUCCESS) {
        char what[200];
        bloopcl__format(what, sizeof what, "making room for CLBlastSdot's temporary buffer "
                        "(%zu bytes; nothing was enqueued)", bytes);
        return bloopcl__fail_cl(ctx, err, "clCreateBuffer", what);
    }
    clReleaseMemObject(probe);
    return BLOOPCL_OK;
}

/* EMA launches, then CLBlastSdot per piece and dot (two kernels each: Xdot's two stages). */
bloopcl_status bloopcl__enqueue_clblast_pass(bloopcl_combiner *comb, unsigned *kernels)
{
    const bloopcl_plan *plan = &comb->plan;
    bool has_ema = bloopcl__method_has_ema(comb->config.method);
    bool check = comb->config.nonfinite == BLOOPCL_NONFINITE_SKIP;
    unsigned dots = 1 + (has_ema ? 3 : 0) + (bloopcl__method_has_aux_ema(comb->config.method) ? 2 : 0);
    size_t slots = bloopcl__partial_slots(comb);
    bloopcl_status status = check_clblast_temporary(comb->ctx);
    for (size_t l = 0; l < plan->num_launches && status == BLOOPCL_OK && (has_ema || check); ++l) {
        status = enqueue_ema_launch(comb, (cl_uint)l);
        *kernels += status == BLOOPCL_OK;
    }
    for (size_t p = 0; p < plan->num_pieces && status == BLOOPCL_OK; ++p) {
        if (has_ema)
            status = piece_dots(comb, &plan->pieces[p], slots, p);
        if (status == BLOOPCL_OK)
            status = piece_grad_norm(comb, &plan->pieces[p], slots, p);
        *kernels += status == BLOOPCL_OK ? 2 * dots : 0;
    }
    return status;
}
