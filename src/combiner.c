/* combiner.c — a method, its hyperparameters and its device state: creation, checkpoints
 * (read/write), reset, diagnostics and the output buffer. On the CLBlast backend the state is
 * double-buffered: every change is staged in the spare half and made visible by one flip of
 * `current`, so a failure half-way leaves the state exactly as it was. On the fused backend it
 * is one buffer updated in place: a driver failure half-way through a write marks that state
 * kind invalid (BLOOPCL_ERR_STATE_INVALID) until it is written or reset. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define AUX_STREAM_XOR 0x5851F42D4C957F2Dull  /* as in reference.c */
#define UPLOAD_BLOCK ((size_t)1 << 20)        /* random init is generated 1M floats at a time */

static bloopcl_status create_buffer(bloopcl_context *ctx, size_t bytes, cl_mem *buffer,
                                    const char *what)
{
    cl_int err;
    *buffer = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(ctx, err, "clCreateBuffer", what);
    return BLOOPCL_OK;
}

static void release(cl_mem *buffer)
{
    if (*buffer != NULL)
        clReleaseMemObject(*buffer);
    *buffer = NULL;
}

static void release_state(bloopcl_combiner *comb)
{
    for (size_t c = 0; comb->chunks != NULL && c < comb->num_chunks; ++c)
        for (int b = 0; b < 2; ++b) {
            release(&comb->chunks[c].ema[b]);
            release(&comb->chunks[c].aux_ema[b]);
        }
    free(comb->chunks);
    comb->chunks = NULL;
}

/* Some drivers (PoCL) reserve buffers lazily and abort when they cannot back them, so what a
 * combiner needs is counted, with what the context's other combiners already hold, against
 * the device's memory before anything is allocated (a single buffer never passes the largest
 * allocation: the state is cut into chunks of at most CL_DEVICE_MAX_MEM_ALLOC_SIZE). */
static bloopcl_status reserve_state(bloopcl_combiner *comb)
{
    size_t kinds = (size_t)bloopcl__method_has_ema(comb->config.method) +
                   (size_t)bloopcl__method_has_aux_ema(comb->config.method);
    size_t buffers = kinds * (comb->double_buffered ? 2 : 1);  /* of n floats each */
    cl_ulong small = BLOOPCL_NUM_SCALARS * sizeof(float) + BLOOPCL_NUM_FLAGS * sizeof(cl_int);
    cl_ulong per_buffer = (cl_ulong)comb->n * sizeof(float);
    char what[256];
    bloopcl__format(what, sizeof what, "bloopcl_combiner_create: n = %zu (%zu state buffers of "
                    "%zu floats)", comb->n, buffers, comb->n);
    if (buffers > 0 && per_buffer / sizeof(float) != comb->n)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_OUT_OF_MEMORY, "%s: the size overflows",
                             what);
    if (buffers > 0 && per_buffer > (CL_ULONG_MAX - small) / buffers)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_OUT_OF_MEMORY, "%s: the size overflows",
                             what);
    return bloopcl__reserve_bytes(comb, buffers * per_buffer + small, what);
}

static bloopcl_status allocate_state(bloopcl_combiner *comb)
{
    bloopcl_context *ctx = comb->ctx;
    bloopcl_status fits = reserve_state(comb);
    if (fits != BLOOPCL_OK)
        return fits;
    bool has_aux = bloopcl__method_has_aux_ema(comb->config.method);
    comb->chunk_capacity = ctx->state_chunk_elements;
    size_t chunks = comb->n / comb->chunk_capacity + (comb->n % comb->chunk_capacity != 0);
    comb->num_chunks = bloopcl__method_has_ema(comb->config.method) ? chunks : 0;
    comb->chunks = calloc(comb->num_chunks ? comb->num_chunks : 1, sizeof *comb->chunks);
    if (comb->chunks == NULL)
        return bloopcl__fail(ctx, BLOOPCL_ERR_OUT_OF_MEMORY, "allocating the state table");
    for (size_t c = 0; c < comb->num_chunks; ++c) {
        size_t first = c * comb->chunk_capacity;
        size_t count = comb->n - first < comb->chunk_capacity ? comb->n - first
                                                               : comb->chunk_capacity;
        comb->chunks[c].count = count;
        for (int b = 0; b < (comb->double_buffered ? 2 : 1); ++b) {
            bloopcl_status status = create_buffer(ctx, count * sizeof(float),
                                                  &comb->chunks[c].ema[b], "allocating the EMA");
            if (status == BLOOPCL_OK && has_aux)
                status = create_buffer(ctx, count * sizeof(float), &comb->chunks[c].aux_ema[b],
                                       "allocating the auxiliary EMA");
            if (status != BLOOPCL_OK)
                return status;
        }
    }
    return BLOOPCL_OK;
}

/* Writes `count` floats of the N(0,1) stream, starting at element `first`, into `buffer`. */
static bloopcl_status upload_normal(bloopcl_context *ctx, cl_mem buffer, uint64_t seed,
                                    uint64_t first, size_t count)
{
    size_t block = count < UPLOAD_BLOCK ? count : UPLOAD_BLOCK;
    float *host = malloc(block * sizeof *host);
    if (host == NULL)
        return bloopcl__fail(ctx, BLOOPCL_ERR_OUT_OF_MEMORY, "allocating the random init block");
    cl_int err = CL_SUCCESS;
    for (size_t done = 0; done < count && err == CL_SUCCESS; done += block) {
        size_t now = count - done < block ? count - done : block;
        bloopcl_reference_normal(seed, first + done, now, host);
        err = clEnqueueWriteBuffer(ctx->queue, buffer, CL_TRUE, done * sizeof(float),
                                   now * sizeof(float), host, 0, NULL, NULL);
    }
    free(host);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(ctx, err, "clEnqueueWriteBuffer", "uploading the random init");
    return BLOOPCL_OK;
}

/* Fills one chunk buffer from the init rule: host data, the random stream, or zeros. */
static bloopcl_status fill_chunk(bloopcl_context *ctx, cl_mem buffer, size_t first, size_t count,
                                 bloopcl_init init, const float *host, uint64_t seed,
                                 uint64_t random_offset)
{
    cl_int err;
    if (host != NULL) {
        err = clEnqueueWriteBuffer(ctx->queue, buffer, CL_TRUE, 0, count * sizeof(float),
                                   host + first, 0, NULL, NULL);
    } else if (init == BLOOPCL_INIT_RANDOM) {
        return upload_normal(ctx, buffer, seed, random_offset + first, count);
    } else {
        const float zero = 0.0f;
        err = clEnqueueFillBuffer(ctx->queue, buffer, &zero, sizeof zero, 0,
                                  count * sizeof(float), 0, NULL, NULL);
        if (err == CL_SUCCESS)
            err = clFinish(ctx->queue);
    }
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(ctx, err, "writing the state", "initialising the EMA");
    return BLOOPCL_OK;
}

/* Which of the double buffers a reader (spare = false) or a writer staging a change
 * (spare = true) uses: on the CLBlast backend the spare is the other half, and the writer's
 * caller commits on success; in place (fused), both are the state itself. */
int bloopcl__state_half(const bloopcl_combiner *comb, bool spare)
{
    return spare && comb->double_buffered ? 1 - comb->current : comb->current;
}

/* Makes a staged change visible: one flip when double-buffered; in place it already is. */
void bloopcl__commit_state(bloopcl_combiner *comb)
{
    comb->current = bloopcl__state_half(comb, true);
}

/* A failed write in place leaves that kind partly written. */
static bloopcl_status fail_in_place(bloopcl_combiner *comb, unsigned kinds, bloopcl_status status)
{
    if (!comb->double_buffered)
        comb->invalid_kinds |= kinds;
    return status;
}

/* Stages a whole state kind into the write target. */
static bloopcl_status stage_state(bloopcl_combiner *comb, bloopcl_state_kind kind,
                                  bloopcl_init init, const float *host)
{
    uint64_t seed = kind == BLOOPCL_STATE_EMA ? comb->config.seed
                                              : comb->config.seed ^ AUX_STREAM_XOR;
    int target = bloopcl__state_half(comb, true);
    for (size_t c = 0; c < comb->num_chunks; ++c) {
        bloopcl_state_chunk *chunk = &comb->chunks[c];
        cl_mem buffer = kind == BLOOPCL_STATE_EMA ? chunk->ema[target] : chunk->aux_ema[target];
        bloopcl_status status = fill_chunk(comb->ctx, buffer, c * comb->chunk_capacity,
                                           chunk->count, init, host, seed,
                                           comb->config.random_offset);
        if (status != BLOOPCL_OK)
            return fail_in_place(comb, 1u << kind, status);
    }
    return BLOOPCL_OK;
}

/* Keeps the spare buffers equal to the current ones for a kind that was not restaged. */
static bloopcl_status copy_current_to_spare(bloopcl_combiner *comb, bloopcl_state_kind kind)
{
    if (!comb->double_buffered)
        return BLOOPCL_OK;
    for (size_t c = 0; c < comb->num_chunks; ++c) {
        bloopcl_state_chunk *chunk = &comb->chunks[c];
        cl_mem *pair = kind == BLOOPCL_STATE_EMA ? chunk->ema : chunk->aux_ema;
        cl_int err = clEnqueueCopyBuffer(comb->ctx->queue, pair[bloopcl__state_half(comb, false)],
                                         pair[bloopcl__state_half(comb, true)], 0, 0,
                                         chunk->count * sizeof(float), 0, NULL, NULL);
        if (err != CL_SUCCESS)
            return bloopcl__fail_cl(comb->ctx, err, "clEnqueueCopyBuffer", "staging the state");
    }
    return BLOOPCL_OK;
}

static bloopcl_status write_flags(bloopcl_combiner *comb, const cl_int *flags)
{
    cl_int err = clEnqueueWriteBuffer(comb->ctx->queue, comb->flags, CL_TRUE, 0,
                                      BLOOPCL_NUM_FLAGS * sizeof(cl_int), flags, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(comb->ctx, err, "clEnqueueWriteBuffer", "writing the flags");
    return BLOOPCL_OK;
}

static bloopcl_status read_flags(bloopcl_combiner *comb, cl_int *flags)
{
    cl_int err = clEnqueueReadBuffer(comb->ctx->queue, comb->flags, CL_TRUE, 0,
                                     BLOOPCL_NUM_FLAGS * sizeof(cl_int), flags, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(comb->ctx, err, "clEnqueueReadBuffer", "reading the flags");
    return BLOOPCL_OK;
}

/* Initialises every state kind from the configuration, then flips to it. */
static bloopcl_status initialise_state(bloopcl_combiner *comb, const float *ema,
                                       const float *aux_ema)
{
    bloopcl_init init = comb->config.init;
    bloopcl_status status = BLOOPCL_OK;
    if (comb->num_chunks > 0)
        status = stage_state(comb, BLOOPCL_STATE_EMA, init, init == BLOOPCL_INIT_BUFFER ? ema : NULL);
    if (status == BLOOPCL_OK && bloopcl__method_has_aux_ema(comb->config.method))
        status = stage_state(comb, BLOOPCL_STATE_AUX_EMA, init,
                             init == BLOOPCL_INIT_BUFFER ? aux_ema : NULL);
    cl_int flags[BLOOPCL_NUM_FLAGS] = {0};
    flags[BLOOPCL_FLAG_INITIALIZED] = init != BLOOPCL_INIT_FIRST_GRADIENT;
    flags[BLOOPCL_FLAG_ACCEPTED] = 1;
    if (status == BLOOPCL_OK)
        status = write_flags(comb, flags);
    if (status != BLOOPCL_OK)
        return fail_in_place(comb, bloopcl__state_kinds(comb), status);
    bloopcl__commit_state(comb);
    comb->invalid_kinds = 0;
    return BLOOPCL_OK;
}

static bloopcl_status setup(bloopcl_combiner *comb)
{
    bloopcl_context *ctx = comb->ctx;
    bloopcl_status status = allocate_state(comb);
    if (status == BLOOPCL_OK)
        status = create_buffer(ctx, BLOOPCL_NUM_SCALARS * sizeof(float), &comb->scalars,
                               "allocating the step scalars");
    if (status == BLOOPCL_OK)
        status = create_buffer(ctx, BLOOPCL_NUM_FLAGS * sizeof(cl_int), &comb->flags,
                               "allocating the step flags");
    if (status == BLOOPCL_OK) {
        const float zeros[BLOOPCL_NUM_SCALARS] = {0};
        cl_int err = clEnqueueWriteBuffer(ctx->queue, comb->scalars, CL_TRUE, 0, sizeof zeros,
                                          zeros, 0, NULL, NULL);
        if (err != CL_SUCCESS)
            status = bloopcl__fail_cl(ctx, err, "clEnqueueWriteBuffer", "clearing the scalars");
    }
    if (status == BLOOPCL_OK)
        status = initialise_state(comb, comb->config.initial_ema, comb->config.initial_aux_ema);
    return status;
}

static bloopcl_dot_backend resolve_backend(const bloopcl_context *ctx, bloopcl_dot_backend asked)
{
    if (asked != BLOOPCL_DOTS_AUTO)
        return asked;
    return ctx->default_dots;
}

static void set_kernel_hyperparameters(bloopcl_combiner *comb)
{
    comb->w = (float)comb->config.ema_weight;
    comb->lambda = (float)comb->config.lambda;
    comb->eps = (float)comb->config.eps;
}

/* n as every method needs it, whether it keeps a state or not (MIXED keeps none): n * 4 bytes
 * computable, so no size or index a step derives from n can wrap, and one vector of n floats
 * within the device's global memory (g, a and d each are one, wherever their segments lie). */
static bloopcl_status check_vector_length(bloopcl_context *ctx, size_t n)
{
    if (n > SIZE_MAX / sizeof(float))
        return bloopcl__fail(ctx, BLOOPCL_ERR_SIZE_MISMATCH, "bloopcl_combiner_create: n = %zu "
                             "floats: n * 4 bytes overflows size_t", n);
    cl_ulong bytes = (cl_ulong)n * sizeof(float), device = ctx->info.global_mem_bytes;
    if (bytes > device)
        return bloopcl__fail(ctx, BLOOPCL_ERR_OUT_OF_MEMORY, "bloopcl_combiner_create: a vector "
                             "of n = %zu floats is %llu bytes but device \"%s\" has %llu bytes of "
                             "global memory", n, (unsigned long long)bytes,
                             ctx->info.device_name, (unsigned long long)device);
    return BLOOPCL_OK;
}

static bloopcl_status create_entered(bloopcl_context *ctx, const bloopcl_config *config,
                                     size_t n, bloopcl_combiner **out)
{
    bloopcl__clear_error(ctx);
    char message[512];
    bloopcl_config given;
    bloopcl_status status = bloopcl__read_config(config, &given, message, sizeof message);
    if (status == BLOOPCL_OK)
        status = bloopcl_config_validate(&given, message, sizeof message);
    if (status != BLOOPCL_OK)
        return bloopcl__fail(ctx, status, "bloopcl_combiner_create: %s", message);
    config = &given;
    if (n == 0)
        return bloopcl__fail(ctx, BLOOPCL_ERR_SIZE_MISMATCH,
                             "bloopcl_combiner_create: n = 0 (a combiner needs n >= 1)");
    status = check_vector_length(ctx, n);
    if (status != BLOOPCL_OK)
        return status;
    bloopcl_combiner *comb = calloc(1, sizeof *comb);
    if (comb == NULL)
        return bloopcl__fail(ctx, BLOOPCL_ERR_OUT_OF_MEMORY, "allocating the combiner");
    comb->ctx = ctx;
    bloopcl__context_retain(ctx);  /* released by bloopcl_combiner_destroy */
    comb->config = *config;
    comb->config.dots = resolve_backend(ctx, config->dots);
    comb->double_buffered = comb->config.dots == BLOOPCL_DOTS_CLBLAST;
    comb->n = n;
    set_kernel_hyperparameters(comb);
    status = setup(comb);
    comb->config.initial_ema = NULL;  /* copied: the caller may free them */
    comb->config.initial_aux_ema = NULL;
    if (status != BLOOPCL_OK) {
        bloopcl_combiner_destroy(comb);
        return status;
    }
    comb->live = true;
    atomic_fetch_add(&ctx->combiners, 1u);
    *out = comb;
    return BLOOPCL_OK;
}

bloopcl_status bloopcl_combiner_create(bloopcl_context *ctx, const bloopcl_config *config,
                                       size_t n, bloopcl_combiner **out)
{
    if (out != NULL)
        *out = NULL;
    if (ctx == NULL || config == NULL || out == NULL)
        return bloopcl__fail(ctx, BLOOPCL_ERR_NULL_ARGUMENT,
                             "bloopcl_combiner_create: ctx, config and out are required");
    if (ctx->is_error_only)
        return BLOOPCL_ERR_STATE;  /* keep the creation error message */
    if (!bloopcl__enter(ctx))
        return BLOOPCL_ERR_BUSY;
    bloopcl_status status = create_entered(ctx, config, n, out);
    bloopcl__leave(ctx);
    return status;
}

void bloopcl_combiner_destroy(bloopcl_combiner *comb)
{
    if (comb == NULL)
        return;
    bloopcl_context *ctx = comb->ctx;
    if (ctx->queue != NULL)
        clFinish(ctx->queue);
    release_state(comb);
    bloopcl__release_optimizer(comb);
    bloopcl__release_aux(comb);
    release(&comb->scalars);
    release(&comb->flags);
    release(&comb->partials);
    release(&comb->totals);
    bloopcl__plan_release(&comb->plan);
    for (int k = 0; k < 3; ++k) {
        for (size_t s = 0; comb->staging[k] != NULL && s < comb->staging_segments; ++s)
            release(&comb->staging[k][s]);
        free(comb->staging[k]);
    }
    bloopcl__unreserve_bytes(comb, comb->reserved_bytes);
    if (comb->live)
        atomic_fetch_sub(&ctx->combiners, 1u);
    free(comb);
    bloopcl__context_release(ctx);  /* frees the context if it was destroyed already */
}

/* The public output indices are the kernels' scalar indices. */
_Static_assert(BLOOPCL_OUTPUT_ACCEPTED == BLOOPCL_SCALAR_ACCEPTED &&
               BLOOPCL_OUTPUT_RATIO == BLOOPCL_SCALAR_RATIO &&
               BLOOPCL_OUTPUT_RATIO_RAW == BLOOPCL_SCALAR_RATIO_RAW &&
               BLOOPCL_OUTPUT_AUX_RATIO == BLOOPCL_SCALAR_AUX_RATIO &&
               BLOOPCL_OUTPUT_SCALE == BLOOPCL_SCALAR_SCALE &&
               BLOOPCL_OUTPUT_EMA_WEIGHT == BLOOPCL_SCALAR_EMA_WEIGHT &&
               BLOOPCL_OUTPUT_DOT_EMA_AUX == BLOOPCL_SCALAR_DOTS + BLOOPCL_DOT_EMA_AUX &&
               BLOOPCL_OUTPUT_EMA_NORM_SQ == BLOOPCL_SCALAR_DOTS + BLOOPCL_DOT_EMA_EMA &&
               BLOOPCL_OUTPUT_AUX_NORM_SQ == BLOOPCL_SCALAR_DOTS + BLOOPCL_DOT_AUX_AUX &&
               BLOOPCL_OUTPUT_DOT_AUX_EMA_MAIN == BLOOPCL_SCALAR_DOTS + BLOOPCL_DOT_AUXEMA_MAIN &&
               BLOOPCL_OUTPUT_AUX_EMA_NORM_SQ ==
                   BLOOPCL_SCALAR_DOTS + BLOOPCL_DOT_AUXEMA_AUXEMA &&
               BLOOPCL_OUTPUT_GRAD_NORM_SQ == BLOOPCL_SCALAR_DOTS + BLOOPCL_DOT_MAIN_MAIN &&
               BLOOPCL_OUTPUT_REASON == BLOOPCL_SCALAR_REASON &&
               BLOOPCL_SKIP_NONFINITE_INPUT == BLOOPCL_REASON_NONFINITE_INPUT &&
               BLOOPCL_SKIP_OUT_OF_RANGE == BLOOPCL_REASON_OUT_OF_RANGE &&
               BLOOPCL_NUM_OUTPUTS == BLOOPCL_NUM_SCALARS,
               "bloopcl_output and cl/layout.h disagree");

bloopcl_context *bloopcl_combiner_context(const bloopcl_combiner *comb)
{
    return comb != NULL ? comb->ctx : NULL;
}

size_t bloopcl_combiner_size(const bloopcl_combiner *comb)
{
    return comb != NULL ? comb->n : 0;
}

bloopcl_status bloopcl_combiner_outputs(const bloopcl_combiner *comb, cl_mem *outputs)
{
    if (comb == NULL || outputs == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    *outputs = comb->scalars;
    return BLOOPCL_OK;
}

bloopcl_status bloopcl_combiner_config(const bloopcl_combiner *comb, bloopcl_config *config)
{
    if (comb == NULL || config == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    if (!bloopcl__enter(comb->ctx))
        return BLOOPCL_ERR_BUSY;  /* a schedule change may be half-written */
    char why[256];
    bloopcl_status status = bloopcl__write_config(config, &comb->config, why, sizeof why);
    if (status != BLOOPCL_OK)
        bloopcl__fail(comb->ctx, status, "bloopcl_combiner_config: %s", why);
    bloopcl__leave(comb->ctx);
    return status;
}

static bloopcl_status set_hyperparameters(bloopcl_combiner *comb, double ema_weight,
                                          double lambda, double eps)
{
    if (comb == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    char message[512];
    bloopcl_status status = bloopcl__validate_hyperparameters(ema_weight, lambda, eps, message,
                                                              sizeof message);
    if (status != BLOOPCL_OK)
        return bloopcl__fail(comb->ctx, status, "bloopcl_combiner_set_hyperparameters: %s",
                             message);
    comb->config.ema_weight = ema_weight;
    comb->config.lambda = lambda;
    comb->config.eps = eps;
    set_kernel_hyperparameters(comb);
    return BLOOPCL_OK;
}

/* The optimizer's moments are state kinds too, single-buffered (optimizer.c). */
static bool is_moment(bloopcl_state_kind kind)
{
    return kind == BLOOPCL_STATE_MOMENT1 || kind == BLOOPCL_STATE_MOMENT2;
}

static bloopcl_status check_state_request(bloopcl_combiner *comb, bloopcl_state_kind kind,
                                          const void *host, size_t n, const char *call)
{
    if (comb == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    bloopcl__clear_error(comb->ctx);
    if (host == NULL)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_NULL_ARGUMENT, "%s: host is NULL", call);
    if (kind < BLOOPCL_STATE_EMA || kind > BLOOPCL_STATE_MOMENT2)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_INVALID_ARGUMENT, "%s: kind = %d is not a "
                             "bloopcl_state_kind", call, (int)kind);
    if (is_moment(kind) && !bloopcl__has_moment(comb, kind))
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_STATE, "%s: the combiner's optimizer keeps "
                             "no moment %d (kind %d)", call, kind == BLOOPCL_STATE_MOMENT1 ? 1 : 2,
                             (int)kind);
    bool present = kind == BLOOPCL_STATE_EMA ? bloopcl__method_has_ema(comb->config.method)
                                             : bloopcl__method_has_aux_ema(comb->config.method);
    if (!is_moment(kind) && !present)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_STATE, "%s: method %s keeps no %s", call,
                             bloopcl_method_name(comb->config.method),
                             kind == BLOOPCL_STATE_EMA ? "EMA" : "auxiliary EMA");
    if (n != comb->n)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_SIZE_MISMATCH,
                             "%s: n = %zu but the combiner holds %zu elements", call, n, comb->n);
    return BLOOPCL_OK;
}

static bloopcl_status read_state(bloopcl_combiner *comb, bloopcl_state_kind kind, float *host,
                                 size_t n)
{
    bloopcl_status status = check_state_request(comb, kind, host, n, "bloopcl_read_state");
    if (status != BLOOPCL_OK)
        return status;
    cl_int flags[BLOOPCL_NUM_FLAGS];
    status = read_flags(comb, flags);
    if (status != BLOOPCL_OK)
        return status;
    if (comb->invalid_kinds & (1u << kind))
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_STATE_INVALID,
                             "bloopcl_read_state: the state is invalid since a driver failure "
                             "in the middle of a step or a write; write or reset it first");
    if (is_moment(kind))
        return bloopcl__read_moment(comb, kind, host);
    if (!flags[BLOOPCL_FLAG_INITIALIZED])
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_STATE,
                             "bloopcl_read_state: the EMA is not initialised yet (init "
                             "FIRST_GRADIENT before the first accepted step)");
    for (size_t c = 0; c < comb->num_chunks; ++c) {
        bloopcl_state_chunk *chunk = &comb->chunks[c];
        cl_mem buffer = bloopcl__state_buffer(comb, c, kind, false);
        cl_int err = clEnqueueReadBuffer(comb->ctx->queue, buffer, CL_TRUE, 0,
                                         chunk->count * sizeof(float),
                                         host + c * comb->chunk_capacity, 0, NULL, NULL);
        if (err != CL_SUCCESS)
            return bloopcl__fail_cl(comb->ctx, err, "clEnqueueReadBuffer", "reading the state");
    }
    return BLOOPCL_OK;
}

static bloopcl_status write_state(bloopcl_combiner *comb, bloopcl_state_kind kind,
                                  const float *host, size_t n)
{
    bloopcl_status status = check_state_request(comb, kind, host, n, "bloopcl_write_state");
    if (status != BLOOPCL_OK)
        return status;
    if (is_moment(kind))
        return bloopcl__write_moment(comb, kind, host);
    cl_int flags[BLOOPCL_NUM_FLAGS];
    status = read_flags(comb, flags);
    if (status != BLOOPCL_OK)
        return status;  /* nothing written yet */
    status = stage_state(comb, kind, BLOOPCL_INIT_BUFFER, host);
    bloopcl_state_kind other = kind == BLOOPCL_STATE_EMA ? BLOOPCL_STATE_AUX_EMA : BLOOPCL_STATE_EMA;
    if (status == BLOOPCL_OK && bloopcl__method_has_aux_ema(comb->config.method))
        status = copy_current_to_spare(comb, other);
    flags[BLOOPCL_FLAG_INITIALIZED] = 1;
    if (status == BLOOPCL_OK)
        status = write_flags(comb, flags);
    if (status != BLOOPCL_OK)
        return fail_in_place(comb, 1u << kind, status);
    bloopcl__commit_state(comb);
    comb->invalid_kinds &= ~(1u << kind);
    return BLOOPCL_OK;
}

static bloopcl_status reset_state(bloopcl_combiner *comb)
{
    if (comb == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    bloopcl__clear_error(comb->ctx);
    if (comb->config.init == BLOOPCL_INIT_BUFFER)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_STATE,
                             "bloopcl_reset_state: init BUFFER keeps no copy of the caller's "
                             "buffer; write the state with bloopcl_write_state instead");
    bloopcl_status status = initialise_state(comb, NULL, NULL);
    if (status != BLOOPCL_OK)
        return status;  /* initialise_state marked what it left half-written */
    status = bloopcl__reset_optimizer(comb);  /* zero moments, t = 0 (the flags' write above
                                                 zeroed t already) */
    if (status == BLOOPCL_OK)
        return BLOOPCL_OK;
    comb->invalid_kinds |= bloopcl__state_kinds(comb) &
                           ((1u << BLOOPCL_STATE_MOMENT1) | (1u << BLOOPCL_STATE_MOMENT2));
    if (comb->optimizer.kinds == 0)
        return status;
    char cause[1024];
    bloopcl__format(cause, sizeof cause, "%s", comb->ctx->last_error);
    return bloopcl__fail(comb->ctx, BLOOPCL_ERR_STATE_INVALID, "bloopcl_reset_state: zeroing "
                         "the optimizer's moments failed part-way; reset or write them again. "
                         "Cause: %s", cause);
}

bloopcl_status bloopcl__get_diagnostics(bloopcl_combiner *comb, bloopcl_diagnostics *diagnostics)
{
    if (comb == NULL || diagnostics == NULL)
        return bloopcl__fail(comb ? comb->ctx : NULL, BLOOPCL_ERR_NULL_ARGUMENT,
                             "bloopcl_get_diagnostics: NULL argument");
    float scalars[BLOOPCL_NUM_SCALARS];
    cl_int flags[BLOOPCL_NUM_FLAGS];
    cl_int err = clEnqueueReadBuffer(comb->ctx->queue, comb->scalars, CL_TRUE, 0, sizeof scalars,
                                     scalars, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(comb->ctx, err, "clEnqueueReadBuffer", "reading diagnostics");
    bloopcl_status status = read_flags(comb, flags);
    if (status != BLOOPCL_OK)
        return status;
    const float *dot = scalars + BLOOPCL_SCALAR_DOTS;
    bloopcl_diagnostics diag = {
        .struct_size = sizeof diag,
        .ratio = scalars[BLOOPCL_SCALAR_RATIO],
        .ratio_raw = scalars[BLOOPCL_SCALAR_RATIO_RAW],
        .dot_ema_aux = dot[BLOOPCL_DOT_EMA_AUX],
        .ema_norm_sq = dot[BLOOPCL_DOT_EMA_EMA],
        .aux_norm_sq = dot[BLOOPCL_DOT_AUX_AUX],
        .aux_ratio = scalars[BLOOPCL_SCALAR_AUX_RATIO],
        .dot_aux_ema_main = dot[BLOOPCL_DOT_AUXEMA_MAIN],
        .aux_ema_norm_sq = dot[BLOOPCL_DOT_AUXEMA_AUXEMA],
        .accepted = flags[BLOOPCL_FLAG_ACCEPTED] != 0,
        .steps = comb->steps,
        .grad_norm_sq = dot[BLOOPCL_DOT_MAIN_MAIN],
        .kernels = comb->kernels_last_step,
        .reason = (int)scalars[BLOOPCL_SCALAR_REASON],
        .optimizer_steps = comb->optimizer.settings.kind == BLOOPCL_OPTIMIZER_NONE
                               ? 0 : (uint64_t)flags[BLOOPCL_FLAG_OPT_STEPS],
    };
    double norms = sqrt(diag.ema_norm_sq) * sqrt(diag.aux_norm_sq);
    diag.cosine = norms > 0.0 ? diag.dot_ema_aux / norms : 0.0;
    char why[256];
    status = bloopcl__write_diagnostics(diagnostics, &diag, why, sizeof why);
    if (status != BLOOPCL_OK)
        return bloopcl__fail(comb->ctx, status, "bloopcl_get_diagnostics: %s", why);
    return BLOOPCL_OK;
}

/* --- the public calls that change or read a combiner: one at a time per context ----------- */

bloopcl_status bloopcl_combiner_set_hyperparameters(bloopcl_combiner *comb, double ema_weight,
                                                    double lambda, double eps)
{
    if (comb == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    if (!bloopcl__enter(comb->ctx))
        return BLOOPCL_ERR_BUSY;
    bloopcl_status status = bloopcl__check_no_split_step(comb, "bloopcl_combiner_set_hyperparameters");
    if (status == BLOOPCL_OK)
        status = set_hyperparameters(comb, ema_weight, lambda, eps);
    bloopcl__leave(comb->ctx);
    return status;
}

bloopcl_status bloopcl_read_state(bloopcl_combiner *comb, bloopcl_state_kind kind, float *host,
                                  size_t n)
{
    if (comb == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    if (!bloopcl__enter(comb->ctx))
        return BLOOPCL_ERR_BUSY;
    bloopcl_status status = bloopcl__check_no_split_step(comb, "bloopcl_read_state");
    if (status == BLOOPCL_OK)
        status = read_state(comb, kind, host, n);
    bloopcl__leave(comb->ctx);
    return status;
}

bloopcl_status bloopcl_write_state(bloopcl_combiner *comb, bloopcl_state_kind kind,
                                   const float *host, size_t n)
{
    if (comb == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    if (!bloopcl__enter(comb->ctx))
        return BLOOPCL_ERR_BUSY;
    bloopcl_status status = bloopcl__check_no_split_step(comb, "bloopcl_write_state");
    if (status == BLOOPCL_OK)
        status = write_state(comb, kind, host, n);
    bloopcl__leave(comb->ctx);
    return status;
}

bloopcl_status bloopcl_reset_state(bloopcl_combiner *comb)
{
    if (comb == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    if (!bloopcl__enter(comb->ctx))
        return BLOOPCL_ERR_BUSY;
    bloopcl_status status = bloopcl__check_no_split_step(comb, "bloopcl_reset_state");
    if (status == BLOOPCL_OK)
        status = reset_state(comb);
    bloopcl__leave(comb->ctx);
    return status;
}

bloopcl_status bloopcl_get_diagnostics(bloopcl_combiner *comb, bloopcl_diagnostics *diagnostics)
{
    if (comb == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    if (!bloopcl__enter(comb->ctx))
        return BLOOPCL_ERR_BUSY;
    bloopcl_status status = bloopcl__check_no_split_step(comb, "bloopcl_get_diagnostics");
    if (status == BLOOPCL_OK)
        status = bloopcl__get_diagnostics(comb, diagnostics);
    bloopcl__leave(comb->ctx);
    return status;
}
