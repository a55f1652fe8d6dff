/* context.c — a device, its in-order queue and the built kernels. The environment is read
 * once, when a context is created (environment.c copies every variable into ctx->env), and
 * explicit parameters override it. */
#include "internal.h"
#include "program_cache.h"

#include <clblast_c.h>

#include <stdlib.h>
#include <string.h>

void bloopcl_context_params_default(bloopcl_context_params *params)
{
    if (params != NULL)
        *params = (bloopcl_context_params){.struct_size = sizeof *params};
}

static bloopcl_context *allocate_context(const bloopcl_context_params *params)
{
    bloopcl_context *ctx = calloc(1, sizeof *ctx);
    if (ctx == NULL)
        return NULL;
    atomic_init(&ctx->busy, 0);
    atomic_init(&ctx->references, 1u);  /* the caller's */
    atomic_init(&ctx->combiners, 0u);
    atomic_init(&ctx->held_bytes, 0ull);
    if (params != NULL) {
        ctx->log_fn = params->log_fn;
        ctx->log_user = params->log_user;
    }
    return ctx;
}

/* --- threads: one call at a time per context ----------------------------------------------- */

bool bloopcl__enter(bloopcl_context *ctx)
{
    int idle = 0;
    return atomic_compare_exchange_strong_explicit(&ctx->busy, &idle, 1, memory_order_acquire,
                                                   memory_order_relaxed);
}

void bloopcl__leave(bloopcl_context *ctx)
{
    atomic_store_explicit(&ctx->busy, 0, memory_order_release);
}

/* --- lifetime: the caller's reference and one per combiner --------------------------------- */

void bloopcl__context_retain(bloopcl_context *ctx)
{
    atomic_fetch_add_explicit(&ctx->references, 1u, memory_order_relaxed);
}

/* Waits for the queue, then releases everything the context holds. */
static void free_context(bloopcl_context *ctx)
{
    if (ctx->queue != NULL)
        clFinish(ctx->queue);
    /* CLBlast caches its compiled programs process-wide and each holds a reference to its
     * cl_context: a cl_context bloopcl created would never be freed without clearing. A
     * caller's cl_context is left alone: clearing would evict the caller's own CLBlast
     * programs (its GEMMs) too, and the caller decides when that context goes (bloopcl.h). */
    if (ctx->used_clblast && ctx->owns_cl_ctx) {
        bloopcl__clblast_lock();
        CLBlastClearCache();
        bloopcl__clblast_unlock();
    }
    bloopcl__release_kernels(&ctx->kernels);
    if (ctx->queue != NULL)
        clReleaseCommandQueue(ctx->queue);
    if (ctx->cl_ctx != NULL)
        clReleaseContext(ctx->cl_ctx);
    bloopcl__environment_free(&ctx->env);
    free(ctx);
}

void bloopcl__context_release(bloopcl_context *ctx)
{
    /* acq_rel: the thread that frees sees every write of the threads that released before */
    if (atomic_fetch_sub_explicit(&ctx->references, 1u, memory_order_acq_rel) == 1u)
        free_context(ctx);
}

/* --- device memory held by the context's combiners ------------------------------------------ */

bloopcl_status bloopcl__reserve_bytes(bloopcl_combiner *comb, cl_ulong bytes, const char *what)
{
    bloopcl_context *ctx = comb->ctx;
    cl_ulong device = ctx->info.global_mem_bytes;
    cl_ulong held = atomic_load(&ctx->held_bytes);
    unsigned others = atomic_load(&ctx->combiners);
    if (bytes > device || held > device - bytes)
        return bloopcl__fail(ctx, BLOOPCL_ERR_OUT_OF_MEMORY,
                             "%s: needs %llu bytes of device memory, but device \"%s\" has "
                             "%llu bytes of global memory and this context's %u live "
                             "combiner(s) already hold %llu of them (%llu free for bloopcl); "
                             "destroy a combiner or use a smaller n", what,
                             (unsigned long long)bytes, ctx->info.device_name,
                             (unsigned long long)device, others, (unsigned long long)held,
                             (unsigned long long)(held < device ? device - held : 0));
    atomic_fetch_add(&ctx->held_bytes, bytes);
    comb->reserved_bytes += bytes;
    return BLOOPCL_OK;
}

void bloopcl__unreserve_bytes(bloopcl_combiner *comb, cl_ulong bytes)
{
    if (bytes > comb->reserved_bytes)
        bytes = comb->reserved_bytes;
    atomic_fetch_sub(&comb->ctx->held_bytes, bytes);
    comb->reserved_bytes -= bytes;
}

/* Keeps a context that only carries the error (sqlite3_open's convention). */
static bloopcl_status fail_creation(bloopcl_context *ctx, bloopcl_status status,
                                    bloopcl_context **out)
{
    bloopcl__release_kernels(&ctx->kernels);
    if (ctx->queue != NULL)
        clReleaseCommandQueue(ctx->queue);
    if (ctx->cl_ctx != NULL)
        clReleaseContext(ctx->cl_ctx);
    ctx->queue = NULL;
    ctx->cl_ctx = NULL;
    ctx->is_error_only = true;
    *out = ctx;
    return status;
}

/* Every creation starts here: the caller's params (of any struct version, or NULL) are read
 * into `local`, and a context is allocated to carry the outcome. A bad struct_size leaves an
 * error-only context in *out, as every creation failure does. */
static bloopcl_status begin_creation(const bloopcl_context_params *params,
                                     bloopcl_context_params *local, bloopcl_context **ctx,
                                     bloopcl_context **out)
{
    *ctx = NULL;
    if (out == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    *out = NULL;
    char why[256];
    bloopcl_status status = bloopcl__read_context_params(params, local, why, sizeof why);
    *ctx = allocate_context(status == BLOOPCL_OK ? local : NULL);
    if (*ctx == NULL)
        return BLOOPCL_ERR_OUT_OF_MEMORY;
    if (status != BLOOPCL_OK)
        return fail_creation(*ctx, bloopcl__fail(*ctx, status, "%s", why), out);
    if (!bloopcl__environment_read(&(*ctx)->env))
        return fail_creation(*ctx, bloopcl__fail(*ctx, BLOOPCL_ERR_OUT_OF_MEMORY,
                                                 "copying the environment"), out);
    return BLOOPCL_OK;
}

static const char *build_options_from(const bloopcl_context *ctx,
                                      const bloopcl_context_params *params)
{
    if (params != NULL && params->build_options != NULL)
        return params->build_options;
    return ctx->env.build_options;
}

static bloopcl_status create_queue(bloopcl_context *ctx)
{
    cl_int err;
    ctx->queue = clCreateCommandQueue(ctx->cl_ctx, ctx->device, 0, &err);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(ctx, err, "clCreateCommandQueue", "creating the queue");
    return BLOOPCL_OK;
}

/* FUSED on every device type, from the library's byte model: for BLOOP it moves 32 B per
 * element where CLBlast's path moves 56 (44 against 88 for PCGRAD), in a constant number of
 * launches where CLBlast adds two Xdot kernels per dot per piece. `type` takes no part in the
 * rule today; it is an argument so that a measured exception would have one place to go. */
bloopcl_status bloopcl__default_dots(cl_device_type type, const char *forced,
                                     bloopcl_dot_backend *dots)
{
    (void)type;
    *dots = BLOOPCL_DOTS_FUSED;
    if (forced == NULL || forced[0] == '\0' || strcmp(forced, "auto") == 0)
        return BLOOPCL_OK;
    if (strcmp(forced, "clblast") == 0)
        *dots = BLOOPCL_DOTS_CLBLAST;
    else if (strcmp(forced, "fused") != 0)
        return BLOOPCL_ERR_INVALID_ARGUMENT;
    return BLOOPCL_OK;
}

/* The backend of combiners left on BLOOPCL_DOTS_AUTO: BLOOPCL_DOTS if set, else the rule. */
static bloopcl_status choose_default_dots(bloopcl_context *ctx)
{
    const char *forced = ctx->env.dots;
    if (bloopcl__default_dots(ctx->info.type, forced, &ctx->default_dots) != BLOOPCL_OK)
        return bloopcl__fail(ctx, BLOOPCL_ERR_INVALID_ARGUMENT,
                             "BLOOPCL_DOTS=\"%s\" is not one of auto, clblast, fused", forced);
    return BLOOPCL_OK;
}

/* The kernels' shape follows the device type; BLOOPCL_KERNEL_SHAPE=cpu|gpu forces one, so
 * that both shapes can be tested (and compared) on any device. */
static bloopcl_status choose_kernel_shape(bloopcl_context *ctx)
{
    const char *forced = ctx->env.kernel_shape;
    ctx->cpu_shape = (ctx->info.type & CL_DEVICE_TYPE_CPU) != 0;
    if (forced == NULL || forced[0] == '\0')
        return BLOOPCL_OK;
    if (strcmp(forced, "cpu") == 0 || strcmp(forced, "gpu") == 0) {
        ctx->cpu_shape = strcmp(forced, "cpu") == 0;
        return BLOOPCL_OK;
    }
    return bloopcl__fail(ctx, BLOOPCL_ERR_INVALID_ARGUMENT,
                         "BLOOPCL_KERNEL_SHAPE=\"%s\" is not cpu or gpu", forced);
}

unsigned bloopcl__vector_width(cl_uint preferred, cl_uint native)
{
    cl_uint width = preferred != 0 ? preferred : native != 0 ? native : 1;
    unsigned rounded = 1;
    while (rounded * 2 <= width && rounded < 16)
        rounded *= 2;
    return rounded;
}

static cl_uint device_uint(cl_device_id device, cl_device_info param)
{
    cl_uint value = 0;
    if (clGetDeviceInfo(device, param, sizeof value, &value, NULL) != CL_SUCCESS)
        return 0;
    return value;
}

unsigned bloopcl__slots_for(const char *platform_vendor, size_t max_parameter_bytes,
                            unsigned address_bits)
{
    /* Apple's GPU OpenCL runs on Metal, whose argument table holds 31 buffers: the projection
     * kernel takes 3 K + 7 (g, a, d per slot; the four state buffers, the table, the flags and
     * the optimizer's moments). */
    if (platform_vendor != NULL && strstr(platform_vendor, "Apple") != NULL)
        return 8;
    size_t pointer = address_bits >= 8 ? address_bits / 8 : 8;
    for (unsigned slots = 32; slots > 8; slots /= 2)
        if ((3 * slots + 7) * pointer + 64 <= max_parameter_bytes)  /* + the scalar arguments */
            return slots;
    return 8;
}

/* Ranges per launch of the multi-range kernels (cl/layout.h): as many as the device's
 * kernel-argument limits take; BLOOPCL_KERNEL_SLOTS=8|16|32 forces a count, for tests. */
static bloopcl_status choose_slots(bloopcl_context *ctx)
{
    size_t parameter_bytes = 1024;  /* the OpenCL minimum */
    clGetDeviceInfo(ctx->device, CL_DEVICE_MAX_PARAMETER_SIZE, sizeof parameter_bytes,
                    &parameter_bytes, NULL);
    ctx->kernels.slots = bloopcl__slots_for(ctx->info.platform_vendor, parameter_bytes,
                                            device_uint(ctx->device, CL_DEVICE_ADDRESS_BITS));
    const char *forced = ctx->env.kernel_slots;
    if (forced == NULL || forced[0] == '\0')
        return BLOOPCL_OK;
    if (strcmp(forced, "8") == 0 || strcmp(forced, "16") == 0 || strcmp(forced, "32") == 0) {
        ctx->kernels.slots = (unsigned)atoi(forced);
        return BLOOPCL_OK;
    }
    return bloopcl__fail(ctx, BLOOPCL_ERR_INVALID_ARGUMENT,
                         "BLOOPCL_KERNEL_SLOTS=\"%s\" is not 8, 16 or 32", forced);
}

/* The CPU shape streams vectors of the device's own preferred float width (a wider type is
 * split by the compiler, and PoCL warns about the float16 ABI on AVX2 at every build);
 * BLOOPCL_KERNEL_VECTOR=1|2|4|8|16 forces one so that every width can be tested. The GPU
 * shape is one element per work-item: there the width is 1 and nothing else is accepted. */
static bloopcl_status choose_vector_width(bloopcl_context *ctx)
{
    const char *forced = ctx->env.kernel_vector;
    ctx->vector_width = ctx->cpu_shape
                            ? bloopcl__vector_width(
                                  device_uint(ctx->device, CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT),
                                  device_uint(ctx->device, CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT))
                            : 1;
    if (forced == NULL || forced[0] == '\0')
        return BLOOPCL_OK;
    static const char *const widths[] = {"1", "2", "4", "8", "16"};
    for (unsigned i = 0; i < sizeof widths / sizeof widths[0]; ++i) {
        if (strcmp(forced, widths[i]) != 0)
            continue;
        if (!ctx->cpu_shape && i > 0)
            return bloopcl__fail(ctx, BLOOPCL_ERR_INVALID_ARGUMENT,
                                 "BLOOPCL_KERNEL_VECTOR=%s needs the CPU kernel shape; the "
                                 "kernels are in the GPU shape (one element per work-item, "
                                 "width 1): unset it or set BLOOPCL_KERNEL_SHAPE=cpu", forced);
        ctx->vector_width = 1u << i;
        return BLOOPCL_OK;
    }
    return bloopcl__fail(ctx, BLOOPCL_ERR_INVALID_ARGUMENT,
                         "BLOOPCL_KERNEL_VECTOR=\"%s\" is not one of 1, 2, 4, 8, 16", forced);
}

/* Options the kernels cannot honour are refused before anything is built, naming where
 * they came from. */
static bloopcl_status check_build_options(bloopcl_context *ctx,
                                          const bloopcl_context_params *params)
{
    const char *options = build_options_from(ctx, params);
    char why[512];
    if (bloopcl__check_build_options(options, why, sizeof why) == BLOOPCL_OK)
        return BLOOPCL_OK;
    const char *source = (params != NULL && params->build_options != NULL)
                             ? "params->build_options" : "BLOOPCL_BUILD_OPTIONS";
    char quoted[1024]; /* the caller's text, escaped (and cut if long) */
    bloopcl__quote(quoted, sizeof quoted, options, strlen(options));
    return bloopcl__fail(ctx, BLOOPCL_ERR_INVALID_ARGUMENT, "%s=%s: %s", source, quoted, why);
}

/* State buffers stay within half the device's largest allocation and under 2^30 elements:
 * the optimizer keeps both AdamW moments of a chunk in one buffer (one kernel argument). */
static void choose_state_chunk(bloopcl_context *ctx)
{
    size_t elements = (size_t)(ctx->info.max_alloc_bytes / (2 * sizeof(float)));
    if (elements == 0 || elements > BLOOPCL_MAX_PIECE)
        elements = BLOOPCL_MAX_PIECE;
    ctx->state_chunk_elements = elements;
}

static bloopcl_status finish_creation(bloopcl_context *ctx, const bloopcl_context_params *params,
                                      bloopcl_context **out)
{
    choose_state_chunk(ctx);
    if (!bloopcl__cache_folder(params != NULL ? params->cache_dir : NULL, &ctx->env,
                               ctx->cache_folder,
                               sizeof ctx->cache_folder))
        bloopcl__log(ctx, BLOOPCL_LOG_WARNING, "binary cache off: its folder's path is over "
                     "%d bytes", BLOOPCL_CACHE_PATH - 1);
    bloopcl_status status = check_build_options(ctx, params);
    if (status == BLOOPCL_OK)
        status = choose_default_dots(ctx);
    if (status == BLOOPCL_OK)
        status = bloopcl__choose_xdot_parameters(ctx);
    if (status == BLOOPCL_OK)
        status = choose_kernel_shape(ctx);
    if (status == BLOOPCL_OK)
        status = choose_vector_width(ctx);
    if (status == BLOOPCL_OK)
        status = choose_slots(ctx);
    if (status != BLOOPCL_OK)
        return fail_creation(ctx, status, out);
    status = bloopcl__build_kernels(ctx, build_options_from(ctx, params));
    if (status != BLOOPCL_OK)
        return fail_creation(ctx, status, out);
    bloopcl__log(ctx, BLOOPCL_LOG_INFO, "bloopcl %s on %d: %s / %s (%s)", BLOOPCL_VERSION_STRING,
                 (int)ctx->info.flat_index, ctx->info.platform_name, ctx->info.device_name,
                 ctx->info.driver_version);
    *out = ctx;
    return BLOOPCL_OK;
}

bloopcl_status bloopcl_context_create(const bloopcl_context_params *params, bloopcl_context **out)
{
    bloopcl_context_params local;
    bloopcl_context *ctx;
    bloopcl_status status = begin_creation(params, &local, &ctx, out);
    if (status != BLOOPCL_OK)
        return status;
    params = &local;
    const char *spec = params->device_spec;
    char skipped[2048];
    status = bloopcl__select_device_noting(spec, ctx->env.device, &ctx->info, ctx->last_error,
                                                          sizeof ctx->last_error, skipped,
                                                          sizeof skipped);
    if (skipped[0] != '\0')
        bloopcl__log(ctx, BLOOPCL_LOG_WARNING, "left out of the device list: %s", skipped);
    if (status != BLOOPCL_OK)
        return fail_creation(ctx, status, out);
    ctx->device = ctx->info.device;
    cl_context_properties properties[] = {CL_CONTEXT_PLATFORM,
                                          (cl_context_properties)ctx->info.platform, 0};
    cl_int err;
    ctx->cl_ctx = clCreateContext(properties, 1, &ctx->device, NULL, NULL, &err);
    ctx->owns_cl_ctx = err == CL_SUCCESS;
    if (err != CL_SUCCESS)
        return fail_creation(ctx, bloopcl__fail_cl(ctx, err, "clCreateContext", "creating the "
                                                   "context"), out);
    status = create_queue(ctx);
    if (status != BLOOPCL_OK)
        return fail_creation(ctx, status, out);
    return finish_creation(ctx, params, out);
}

/* Fills ctx->info for a device the caller chose; its flat index comes from the full list. */
static bloopcl_status describe_caller_device(bloopcl_context *ctx)
{
    cl_platform_id platform = NULL;
    cl_int err = clGetDeviceInfo(ctx->device, CL_DEVICE_PLATFORM, sizeof platform, &platform,
                                 NULL);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(ctx, err, "clGetDeviceInfo", "reading the caller's device");
    bloopcl_status status = bloopcl__describe_device(platform, ctx->device, &ctx->info);
    if (status != BLOOPCL_OK)
        return bloopcl__fail(ctx, status, "cannot describe the caller's device");
    bloopcl_device_info list[64];
    size_t count = 0;
    ctx->info.flat_index = (unsigned)-1;
    if (bloopcl__list_devices_noting(list, 64, &count, NULL, 0) == BLOOPCL_OK)
        for (size_t i = 0; i < count && i < 64; ++i)
            if (list[i].device == ctx->device)
                ctx->info = list[i];
    return BLOOPCL_OK;
}

/* The caller's queue must be in order (steps rely on it: CLBlast takes no wait list) and
 * belong to the given context and device. */
static bloopcl_status check_caller_queue(bloopcl_context *ctx, cl_command_queue queue)
{
    cl_command_queue_properties properties = 0;
    cl_context queue_ctx = NULL;
    cl_device_id queue_device = NULL;
    cl_int err = clGetCommandQueueInfo(queue, CL_QUEUE_PROPERTIES, sizeof properties, &properties,
                                       NULL);
    if (err == CL_SUCCESS)
        err = clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof queue_ctx, &queue_ctx, NULL);
    if (err == CL_SUCCESS)
        err = clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof queue_device, &queue_device,
                                    NULL);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(ctx, err, "clGetCommandQueueInfo", "checking the caller's queue");
    if (properties & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE)
        return bloopcl__fail(ctx, BLOOPCL_ERR_INVALID_ARGUMENT,
                             "the caller's queue is out of order; bloopcl needs an in-order queue");
    if (queue_ctx != ctx->cl_ctx || queue_device != ctx->device)
        return bloopcl__fail(ctx, BLOOPCL_ERR_WRONG_CONTEXT,
                             "the caller's queue belongs to another context or device");
    return BLOOPCL_OK;
}

bloopcl_status bloopcl_context_create_from_cl(cl_context cl_ctx, cl_device_id device,
                                              cl_command_queue queue,
                                              const bloopcl_context_params *params,
                                              bloopcl_context **out)
{
    bloopcl_context_params local;
    bloopcl_context *ctx;
    bloopcl_status status = begin_creation(params, &local, &ctx, out);
    if (status != BLOOPCL_OK)
        return status;
    params = &local;
    if (cl_ctx == NULL || device == NULL)
        return fail_creation(ctx, bloopcl__fail(ctx, BLOOPCL_ERR_NULL_ARGUMENT,
                                                "cl_context and cl_device_id are required"), out);
    clRetainContext(cl_ctx);
    ctx->cl_ctx = cl_ctx;
    ctx->device = device;
    status = describe_caller_device(ctx);
    if (status == BLOOPCL_OK && queue != NULL) {
        status = check_caller_queue(ctx, queue);
        if (status == BLOOPCL_OK) {
            clRetainCommandQueue(queue);
            ctx->queue = queue;
        }
    } else if (status == BLOOPCL_OK) {
        status = create_queue(ctx);
    }
    if (status != BLOOPCL_OK)
        return fail_creation(ctx, status, out);
    return finish_creation(ctx, params, out);
}

/* The buffer's cl_context and the first of its devices (CL_CONTEXT_DEVICES holds them all:
 * the query needs room for every one of them, so the size is asked first). */
static bloopcl_status context_of_buffer(bloopcl_context *ctx, cl_mem buffer, cl_context *cl_ctx,
                                        cl_device_id *device)
{
    size_t bytes = 0;
    cl_int err = clGetMemObjectInfo(buffer, CL_MEM_CONTEXT, sizeof *cl_ctx, cl_ctx, NULL);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(ctx, err, "clGetMemObjectInfo", "reading the buffer's context");
    err = clGetContextInfo(*cl_ctx, CL_CONTEXT_DEVICES, 0, NULL, &bytes);
    if (err == CL_SUCCESS && bytes < sizeof *device)
        return bloopcl__fail(ctx, BLOOPCL_ERR_DEVICE_NOT_FOUND,
                             "the buffer's cl_context holds no device");
    cl_device_id *devices = err == CL_SUCCESS ? malloc(bytes) : NULL;
    if (err == CL_SUCCESS && devices == NULL)
        return bloopcl__fail(ctx, BLOOPCL_ERR_OUT_OF_MEMORY, "listing the buffer's devices");
    if (err == CL_SUCCESS)
        err = clGetContextInfo(*cl_ctx, CL_CONTEXT_DEVICES, bytes, devices, NULL);
    if (err == CL_SUCCESS)
        *device = devices[0];
    free(devices);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(ctx, err, "clGetContextInfo", "listing the buffer's devices");
    return BLOOPCL_OK;
}

bloopcl_status bloopcl_context_create_from_mem(cl_mem buffer, const bloopcl_context_params *params,
                                               bloopcl_context **out)
{
    if (out == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    cl_context cl_ctx = NULL;
    cl_device_id device = NULL;
    if (buffer != NULL) {
        /* Queried here so that a failure carries its call and code, like every creation
         * failure, in an error-only context. */
        bloopcl_context_params local;
        bloopcl_context *ctx;
        bloopcl_status status = begin_creation(params, &local, &ctx, out);
        if (status != BLOOPCL_OK)
            return status;
        status = context_of_buffer(ctx, buffer, &cl_ctx, &device);
        if (status != BLOOPCL_OK)
            return fail_creation(ctx, status, out);
        bloopcl__environment_free(&ctx->env);
        free(ctx);
    }
    /* A NULL buffer reaches create_from_cl's own NULL check and message. */
    return bloopcl_context_create_from_cl(cl_ctx, device, NULL, params, out);
}

void bloopcl_context_destroy(bloopcl_context *ctx)
{
    if (ctx != NULL)
        bloopcl__context_release(ctx);  /* freed now, or by its last combiner's destroy */
}

const char *bloopcl_context_last_error(const bloopcl_context *ctx)
{
    return ctx != NULL ? ctx->last_error : "no context (NULL)";
}

bloopcl_status bloopcl_context_device_info(bloopcl_context *ctx, bloopcl_device_info *info)
{
    if (ctx == NULL || info == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    if (ctx->is_error_only)
        return BLOOPCL_ERR_STATE;
    char why[256];
    bloopcl_status status = bloopcl__write_device_info(info, &ctx->info, why, sizeof why);
    if (status != BLOOPCL_OK)
        return bloopcl__fail(ctx, status, "bloopcl_context_device_info: %s",
                             why);
    return BLOOPCL_OK;
}

cl_context bloopcl_context_cl_context(const bloopcl_context *ctx)
{
    return ctx != NULL ? ctx->cl_ctx : NULL;
}

cl_command_queue bloopcl_context_queue(const bloopcl_context *ctx)
{
    return ctx != NULL ? ctx->queue : NULL;
}

bloopcl_status bloopcl_context_finish(bloopcl_context *ctx)
{
    if (ctx == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    if (ctx->is_error_only)
        return BLOOPCL_ERR_STATE;
    if (!bloopcl__enter(ctx))
        return BLOOPCL_ERR_BUSY;
    cl_int err = clFinish(ctx->queue);
    bloopcl_status status = BLOOPCL_OK;
    if (err != CL_SUCCESS)
        status = bloopcl__fail_cl(ctx, err, "clFinish", "waiting for the queue");
    bloopcl__leave(ctx);
    return status;
}
