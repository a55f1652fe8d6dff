/* context.c — a device, its in-order queue and the built kernels. The environment is read
 * here and only here (BLOOPCL_DEVICE, BLOOPCL_BUILD_OPTIONS); explicit parameters override it. */
#include "internal.h"
#include "program_cache.h"

#include <clblast_c.h>

#include <stdlib.h>
#include <string.h>

void bloopcl_context_params_default(bloopcl_context_params *params)
{
    if (params != NULL)
        *params = (bloopcl_context_params){0};
}

static bloopcl_context *allocate_context(const bloopcl_context_params *params)
{
    bloopcl_context *ctx = calloc(1, sizeof *ctx);
    if (ctx != NULL && params != NULL) {
        ctx->log_fn = params->log_fn;
        ctx->log_user = params->log_user;
    }
    return ctx;
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

static const char *build_options_from(const bloopcl_context_params *params)
{
    if (params != NULL && params->build_options != NULL)
        return params->build_options;
    return getenv("BLOOPCL_BUILD_OPTIONS");
}

static bloopcl_status create_queue(bloopcl_context *ctx)
{
    cl_int err;
    ctx->queue = clCreateCommandQueue(ctx->cl_ctx, ctx->device, 0, &err);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(ctx, err, "clCreateCommandQueue", "creating the queue");
    return BLOOPCL_OK;
}

/* The backend of combiners left on BLOOPCL_DOTS_AUTO: BLOOPCL_DOTS if set, else a rule from
 * bloopcl-bench's figures. On CPU devices (PoCL) CLBlast's GPU-shaped Sdot runs at 1-6 GB/s
 * where the fused pass streams at the triad's bandwidth: 10-60x slower steps from 64k
 * elements up. Elsewhere CLBlast, the design's default, stays until measured otherwise. */
static bloopcl_status choose_default_dots(bloopcl_context *ctx)
{
    const char *forced = getenv("BLOOPCL_DOTS");
    ctx->default_dots = (ctx->info.type & CL_DEVICE_TYPE_CPU) ? BLOOPCL_DOTS_FUSED
                                                              : BLOOPCL_DOTS_CLBLAST;
    if (forced == NULL || forced[0] == '\0' || strcmp(forced, "auto") == 0)
        return BLOOPCL_OK;
    if (strcmp(forced, "clblast") == 0)
        ctx->default_dots = BLOOPCL_DOTS_CLBLAST;
    else if (strcmp(forced, "fused") == 0)
        ctx->default_dots = BLOOPCL_DOTS_FUSED;
    else
        return bloopcl__fail(ctx, BLOOPCL_ERR_INVALID_ARGUMENT,
                             "BLOOPCL_DOTS=\"%s\" is not one of auto, clblast, fused", forced);
    return BLOOPCL_OK;
}

/* The kernels' shape follows the device type; BLOOPCL_KERNEL_SHAPE=cpu|gpu forces one, so
 * that both shapes can be tested (and compared) on any device. */
static bloopcl_status choose_kernel_shape(bloopcl_context *ctx)
{
    const char *forced = getenv("BLOOPCL_KERNEL_SHAPE");
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

/* State buffers stay within the device's largest allocation and under 2^30 elements. */
static void choose_state_chunk(bloopcl_context *ctx)
{
    size_t elements = (size_t)(ctx->info.max_alloc_bytes / sizeof(float));
    if (elements == 0 || elements > BLOOPCL_MAX_PIECE)
        elements = BLOOPCL_MAX_PIECE;
    ctx->state_chunk_elements = elements;
}

static bloopcl_status finish_creation(bloopcl_context *ctx, const bloopcl_context_params *params,
                                      bloopcl_context **out)
{
    choose_state_chunk(ctx);
    bloopcl__cache_folder(params != NULL ? params->cache_dir : NULL, ctx->cache_folder,
                          sizeof ctx->cache_folder);
    bloopcl_status status = choose_default_dots(ctx);
    if (status == BLOOPCL_OK)
        status = bloopcl__choose_xdot_parameters(ctx);
    if (status == BLOOPCL_OK)
        status = choose_kernel_shape(ctx);
    if (status != BLOOPCL_OK)
        return fail_creation(ctx, status, out);
    status = bloopcl__build_kernels(ctx, build_options_from(params));
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
    if (out == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    *out = NULL;
    bloopcl_context *ctx = allocate_context(params);
    if (ctx == NULL)
        return BLOOPCL_ERR_OUT_OF_MEMORY;
    const char *spec = params != NULL ? params->device_spec : NULL;
    bloopcl_status status = bloopcl_select_device(spec, &ctx->info, ctx->last_error,
                                                  sizeof ctx->last_error);
    if (status != BLOOPCL_OK)
        return fail_creation(ctx, status, out);
    ctx->device = ctx->info.device;
    cl_context_properties properties[] = {CL_CONTEXT_PLATFORM,
                                          (cl_context_properties)ctx->info.platform, 0};
    cl_int err;
    ctx->cl_ctx = clCreateContext(properties, 1, &ctx->device, NULL, NULL, &err);
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
    if (bloopcl_list_devices(list, 64, &count) == BLOOPCL_OK)
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
    if (out == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    *out = NULL;
    bloopcl_context *ctx = allocate_context(params);
    if (ctx == NULL)
        return BLOOPCL_ERR_OUT_OF_MEMORY;
    if (cl_ctx == NULL || device == NULL)
        return fail_creation(ctx, bloopcl__fail(ctx, BLOOPCL_ERR_NULL_ARGUMENT,
                                                "cl_context and cl_device_id are required"), out);
    clRetainContext(cl_ctx);
    ctx->cl_ctx = cl_ctx;
    ctx->device = device;
    bloopcl_status status = describe_caller_device(ctx);
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

bloopcl_status bloopcl_context_create_from_mem(cl_mem buffer, const bloopcl_context_params *params,
                                               bloopcl_context **out)
{
    if (out == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    cl_context cl_ctx = NULL;
    cl_device_id device = NULL;
    if (buffer != NULL &&
        clGetMemObjectInfo(buffer, CL_MEM_CONTEXT, sizeof cl_ctx, &cl_ctx, NULL) == CL_SUCCESS)
        clGetContextInfo(cl_ctx, CL_CONTEXT_DEVICES, sizeof device, &device, NULL);
    return bloopcl_context_create_from_cl(cl_ctx, device, NULL, params, out);
}

void bloopcl_context_destroy(bloopcl_context *ctx)
{
    if (ctx == NULL)
        return;
    if (ctx->queue != NULL)
        clFinish(ctx->queue);
    /* CLBlast caches its compiled programs process-wide and each holds a reference to our
     * cl_context: without clearing, a caller's context could never be freed. The price is a
     * recompilation (cached on disk by most drivers) for any other CLBlast user. */
    if (ctx->used_clblast)
        CLBlastClearCache();
    bloopcl__release_kernels(&ctx->kernels);
    if (ctx->queue != NULL)
        clReleaseCommandQueue(ctx->queue);
    if (ctx->cl_ctx != NULL)
        clReleaseContext(ctx->cl_ctx);
    free(ctx);
}

const char *bloopcl_context_last_error(const bloopcl_context *ctx)
{
    return ctx != NULL ? ctx->last_error : "no context (NULL)";
}

bloopcl_status bloopcl_context_device_info(const bloopcl_context *ctx, bloopcl_device_info *info)
{
    if (ctx == NULL || info == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    if (ctx->is_error_only)
        return BLOOPCL_ERR_STATE;
    *info = ctx->info;
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
    cl_int err = clFinish(ctx->queue);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(ctx, err, "clFinish", "waiting for the queue");
    return BLOOPCL_OK;
}
