/* optimizer.c — the optimizer attached to a combiner (bloopcl.h, "Optimizer in the step"): its
 * settings and their checks, its moments on the device (allocation, checkpoints, reset), the
 * step count t kept in the device flags, and the arguments pass 2 takes to apply it
 * (cl/optimize.cl). The step itself stays in step.c: an optimizing step is a step whose
 * projection updates the parameters instead of writing d. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* t lives in an int flag on the device. */
#define MAX_OPTIMIZER_STEPS ((uint64_t)0x7FFFFFFF)

void bloopcl_optimizer_default(bloopcl_optimizer *opt, bloopcl_optimizer_kind kind)
{
    if (opt == NULL)
        return;
    memset(opt, 0, sizeof *opt);
    opt->struct_size = sizeof *opt;
    opt->kind = kind;
    opt->lr = 1e-3;
    opt->beta1 = 0.9;
    opt->beta2 = 0.999;
    opt->eps = 1e-8;
    opt->bias_correction = 1;
    if (kind == BLOOPCL_OPTIMIZER_ADAMW) {
        opt->weight_decay = 1e-2;
        opt->decoupled_weight_decay = 1;
    }
}

static bool finite_at_least(double x, double low)
{
    return isfinite(x) && x >= low;
}

/* The first setting out of range, described in `message`; OK if none. */
static bloopcl_status check_settings(const bloopcl_optimizer *o, char *message, size_t size)
{
    const char *problem = NULL;
    if (o->kind != BLOOPCL_OPTIMIZER_NONE && o->kind != BLOOPCL_OPTIMIZER_SGD &&
        o->kind != BLOOPCL_OPTIMIZER_ADAMW)
        problem = "kind is not a bloopcl_optimizer_kind";
    else if (!finite_at_least(o->lr, 0.0))
        problem = "lr must be finite and >= 0";
    else if (!finite_at_least(o->weight_decay, 0.0))
        problem = "weight_decay must be finite and >= 0";
    else if (o->kind == BLOOPCL_OPTIMIZER_SGD && !finite_at_least(o->momentum, 0.0))
        problem = "momentum must be finite and >= 0";
    else if (o->kind == BLOOPCL_OPTIMIZER_SGD && !(o->dampening >= 0.0 && o->dampening <= 1.0))
        problem = "dampening must be in [0, 1]";
    else if (o->kind == BLOOPCL_OPTIMIZER_SGD && o->nesterov &&
             !(o->momentum > 0.0 && o->dampening == 0.0))
        problem = "nesterov needs momentum > 0 and dampening = 0 (as in PyTorch)";
    else if (o->kind == BLOOPCL_OPTIMIZER_ADAMW &&
             !(o->beta1 >= 0.0 && (float)o->beta1 < 1.0f && o->beta2 >= 0.0 &&
               (float)o->beta2 < 1.0f))  /* as the kernels see them: 1 - beta^t = 0 at 1 */
        problem = "beta1 and beta2 must be in [0, 1) (as floats)";
    else if (o->kind == BLOOPCL_OPTIMIZER_ADAMW && !finite_at_least(o->eps, 0.0))
        problem = "eps must be finite and >= 0";
    if (problem == NULL)
        return BLOOPCL_OK;
    bloopcl__format(message, size, "optimizer: %s (kind %d, lr %g, weight_decay %g, momentum "
                    "%g, dampening %g, nesterov %d, beta1 %g, beta2 %g, eps %g)", problem,
                    (int)o->kind, o->lr, o->weight_decay, o->momentum, o->dampening,
                    o->nesterov, o->beta1, o->beta2, o->eps);
    return BLOOPCL_ERR_INVALID_ARGUMENT;
}

bloopcl_status bloopcl_optimizer_validate(const bloopcl_optimizer *given, char *message,
                                          size_t message_size)
{
    bloopcl__format(message, message_size, "%s", "");
    if (given == NULL) {
        bloopcl__format(message, message_size, "optimizer is NULL");
        return BLOOPCL_ERR_NULL_ARGUMENT;
    }
    bloopcl_optimizer opt;
    bloopcl_status status = bloopcl__read_optimizer(given, &opt, message, message_size);
    if (status != BLOOPCL_OK)
        return status;
    return check_settings(&opt, message, message_size);
}

static unsigned moment_kinds(const bloopcl_optimizer *o)
{
    if (o->kind == BLOOPCL_OPTIMIZER_ADAMW)
        return 2;
    return o->kind == BLOOPCL_OPTIMIZER_SGD && o->momentum != 0.0 ? 1 : 0;
}

static size_t chunk_count(const bloopcl_combiner *comb, size_t chunk)
{
    size_t first = chunk * comb->chunk_capacity;
    return comb->n - first < comb->chunk_capacity ? comb->n - first : comb->chunk_capacity;
}

void bloopcl__release_optimizer(bloopcl_combiner *comb)
{
    bloopcl_attached_optimizer *att = &comb->optimizer;
    for (size_t c = 0; att->moments != NULL && c < att->num_chunks; ++c)
        if (att->moments[c] != NULL)
            clReleaseMemObject(att->moments[c]);
    free(att->moments);
    bloopcl__unreserve_bytes(comb, att->reserved_bytes);
    comb->invalid_kinds &= ~((1u << BLOOPCL_STATE_MOMENT1) | (1u << BLOOPCL_STATE_MOMENT2));
    memset(att, 0, sizeof *att);
}

static bloopcl_status write_steps_flag(bloopcl_combiner *comb, cl_int steps)
{
    cl_int err = clEnqueueWriteBuffer(comb->ctx->queue, comb->flags, CL_TRUE,
                                      BLOOPCL_FLAG_OPT_STEPS * sizeof(cl_int), sizeof steps,
                                      &steps, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(comb->ctx, err, "clEnqueueWriteBuffer", "writing the optimizer "
                                "step count");
    return BLOOPCL_OK;
}

/* Zeroes every moment buffer (blocking). */
static bloopcl_status zero_moments(bloopcl_combiner *comb)
{
    bloopcl_attached_optimizer *att = &comb->optimizer;
    const float zero = 0.0f;
    for (size_t c = 0; c < att->num_chunks && att->kinds > 0; ++c) {
        cl_int err = clEnqueueFillBuffer(comb->ctx->queue, att->moments[c], &zero, sizeof zero,
                                         0, att->kinds * chunk_count(comb, c) * sizeof(float),
                                         0, NULL, NULL);
        if (err != CL_SUCCESS)
            return bloopcl__fail_cl(comb->ctx, err, "clEnqueueFillBuffer", "zeroing the "
                                    "optimizer's moments");
    }
    cl_int err = clFinish(comb->ctx->queue);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(comb->ctx, err, "clFinish", "zeroing the optimizer's moments");
    return BLOOPCL_OK;
}

bloopcl_status bloopcl__reset_optimizer(bloopcl_combiner *comb)
{
    if (comb->optimizer.settings.kind == BLOOPCL_OPTIMIZER_NONE)
        return BLOOPCL_OK;
    bloopcl_status status = zero_moments(comb);
    if (status == BLOOPCL_OK)
        status = write_steps_flag(comb, 0);
    return status;
}

/* Counts, allocates and zeroes the moments of `kinds` vectors of n floats; t = 0. */
static bloopcl_status allocate_moments(bloopcl_combiner *comb, unsigned kinds)
{
    bloopcl_attached_optimizer *att = &comb->optimizer;
    att->kinds = kinds;
    att->num_chunks = comb->n / comb->chunk_capacity + (comb->n % comb->chunk_capacity != 0);
    if (kinds == 0)
        return write_steps_flag(comb, 0);
    cl_ulong bytes = (cl_ulong)kinds * comb->n * sizeof(float);
    char what[160];
    bloopcl__format(what, sizeof what, "bloopcl_combiner_set_optimizer: %u moment vectors of "
                    "n = %zu floats", kinds, comb->n);
    bloopcl_status status = bloopcl__reserve_bytes(comb, bytes, what);
    if (status != BLOOPCL_OK)
        return status;
    att->reserved_bytes = bytes;
    att->moments = calloc(att->num_chunks, sizeof *att->moments);
    if (att->moments == NULL)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_OUT_OF_MEMORY, "allocating the moment table");
    for (size_t c = 0; c < att->num_chunks; ++c) {
        cl_int err;
        att->moments[c] = clCreateBuffer(comb->ctx->cl_ctx, CL_MEM_READ_WRITE,
                                         kinds * chunk_count(comb, c) * sizeof(float), NULL,
                                         &err);
        if (err != CL_SUCCESS)
            return bloopcl__fail_cl(comb->ctx, err, "clCreateBuffer", "allocating the "
                                    "optimizer's moments");
    }
    status = zero_moments(comb);
    if (status == BLOOPCL_OK)
        status = write_steps_flag(comb, 0);
    return status;
}

static bloopcl_status set_optimizer(bloopcl_combiner *comb, const bloopcl_optimizer *given)
{
    bloopcl_optimizer opt;
    char message[512];
    bloopcl_status status = BLOOPCL_OK;
    if (given == NULL)
        bloopcl_optimizer_default(&opt, BLOOPCL_OPTIMIZER_NONE);
    else
        status = bloopcl__read_optimizer(given, &opt, message, sizeof message);
    if (status == BLOOPCL_OK)
        status = check_settings(&opt, message, sizeof message);
    if (status != BLOOPCL_OK)
        return bloopcl__fail(comb->ctx, status, "bloopcl_combiner_set_optimizer: %s", message);
    bloopcl_attached_optimizer *att = &comb->optimizer;
    bool keep = opt.kind != BLOOPCL_OPTIMIZER_NONE && opt.kind == att->settings.kind &&
                moment_kinds(&opt) == att->kinds;
    if (!keep) {
        bloopcl__release_optimizer(comb);
        if (opt.kind != BLOOPCL_OPTIMIZER_NONE)
            status = allocate_moments(comb, moment_kinds(&opt));
        if (status != BLOOPCL_OK) {
            bloopcl__release_optimizer(comb);  /* as before the call: none attached */
            return status;
        }
    }
    att->settings = opt;
    att->lr = (float)opt.lr;
    return BLOOPCL_OK;
}

/* The public calls that touch the combiner enter its context and refuse a pending split. */
typedef bloopcl_status (*entered_call)(bloopcl_combiner *comb, const void *in, void *out);

static bloopcl_status run_entered(bloopcl_combiner *comb, const char *name, entered_call call,
                                  const void *in, void *out)
{
    if (comb == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    if (!bloopcl__enter(comb->ctx))
        return BLOOPCL_ERR_BUSY;
    bloopcl__clear_error(comb->ctx);
    bloopcl_status status = bloopcl__check_no_split_step(comb, name);
    if (status == BLOOPCL_OK)
        status = call(comb, in, out);
    bloopcl__leave(comb->ctx);
    return status;
}

static bloopcl_status call_set_optimizer(bloopcl_combiner *comb, const void *in, void *out)
{
    (void)out;
    return set_optimizer(comb, in);
}

bloopcl_status bloopcl_combiner_set_optimizer(bloopcl_combiner *comb,
                                              const bloopcl_optimizer *optimizer)
{
    return run_entered(comb, "bloopcl_combiner_set_optimizer", call_set_optimizer, optimizer,
                       NULL);
}

bloopcl_status bloopcl_combiner_optimizer(const bloopcl_combiner *comb,
                                          bloopcl_optimizer *optimizer)
{
    if (comb == NULL || optimizer == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    if (!bloopcl__enter(comb->ctx))
        return BLOOPCL_ERR_BUSY;  /* a set_optimizer or learning rate may be half-written */
    char message[256];
    bloopcl_optimizer ours = comb->optimizer.settings;
    bloopcl__leave(comb->ctx);
    ours.struct_size = sizeof ours;
    if (ours.kind == BLOOPCL_OPTIMIZER_NONE)
        bloopcl_optimizer_default(&ours, BLOOPCL_OPTIMIZER_NONE);
    return bloopcl__write_optimizer(optimizer, &ours, message, sizeof message);
}

static bloopcl_status call_set_lr(bloopcl_combiner *comb, const void *in, void *out)
{
    (void)out;
    double lr = *(const double *)in;
    if (!finite_at_least(lr, 0.0))
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_INVALID_ARGUMENT, "bloopcl_combiner_set_"
                             "learning_rate: lr = %g must be finite and >= 0", lr);
    if (comb->optimizer.settings.kind == BLOOPCL_OPTIMIZER_NONE)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_STATE, "bloopcl_combiner_set_learning_rate: "
                             "no optimizer is attached (bloopcl_combiner_set_optimizer)");
    comb->optimizer.settings.lr = lr;
    comb->optimizer.lr = (float)lr;
    return BLOOPCL_OK;
}

bloopcl_status bloopcl_combiner_set_learning_rate(bloopcl_combiner *comb, double lr)
{
    return run_entered(comb, "bloopcl_combiner_set_learning_rate", call_set_lr, &lr, NULL);
}

static bloopcl_status call_read_steps(bloopcl_combiner *comb, const void *in, void *out)
{
    (void)in;
    cl_int steps = 0;
    cl_int err = clEnqueueReadBuffer(comb->ctx->queue, comb->flags, CL_TRUE,
                                     BLOOPCL_FLAG_OPT_STEPS * sizeof(cl_int), sizeof steps,
                                     &steps, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(comb->ctx, err, "clEnqueueReadBuffer", "reading the optimizer "
                                "step count");
    *(uint64_t *)out = comb->optimizer.settings.kind == BLOOPCL_OPTIMIZER_NONE ? 0
                                                                               : (uint64_t)steps;
    return BLOOPCL_OK;
}

bloopcl_status bloopcl_optimizer_steps(bloopcl_combiner *comb, uint64_t *steps)
{
    if (steps == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    return run_entered(comb, "bloopcl_optimizer_steps", call_read_steps, NULL, steps);
}

static bloopcl_status call_set_steps(bloopcl_combiner *comb, const void *in, void *out)
{
    (void)out;
    uint64_t steps = *(const uint64_t *)in;
    if (comb->optimizer.settings.kind == BLOOPCL_OPTIMIZER_NONE)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_STATE, "bloopcl_set_optimizer_steps: no "
                             "optimizer is attached (bloopcl_combiner_set_optimizer)");
    if (steps > MAX_OPTIMIZER_STEPS)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_INVALID_ARGUMENT, "bloopcl_set_optimizer_"
                             "steps: %llu is beyond 2^31 - 1, the device counter's range",
                             (unsigned long long)steps);
    return write_steps_flag(comb, (cl_int)steps);
}

bloopcl_status bloopcl_set_optimizer_steps(bloopcl_combiner *comb, uint64_t steps)
{
    return run_entered(comb, "bloopcl_set_optimizer_steps", call_set_steps, &steps, NULL);
}

/* --- what the step needs ------------------------------------------------------------------ */

bool bloopcl__step_optimizes(const bloopcl_combiner *comb)
{
    return comb->options.update_parameters != 0 &&
           comb->optimizer.settings.kind != BLOOPCL_OPTIMIZER_NONE;
}

static bloopcl_status check_lr_buffer(bloopcl_context *ctx, const bloopcl_step_options *o)
{
    size_t bytes = 0;
    bloopcl_status status = bloopcl__check_float_buffer(ctx, o->lr_buffer, "lr_buffer", &bytes);
    size_t floats = bytes / sizeof(cl_float);
    if (status == BLOOPCL_OK && o->lr_index >= floats)
        status = bloopcl__fail(ctx, BLOOPCL_ERR_BUFFER_TOO_SMALL, "bloopcl_step: "
                               "options->lr_buffer holds %zu floats but lr_index is %zu",
                               floats, o->lr_index);
    return status;
}

bloopcl_status bloopcl__check_optimizer_options(bloopcl_combiner *comb,
                                                const bloopcl_step_options *o)
{
    if (o->update_parameters && comb->optimizer.settings.kind == BLOOPCL_OPTIMIZER_NONE)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_STATE, "bloopcl_step: "
                             "options->update_parameters is set but no optimizer is attached "
                             "(bloopcl_combiner_set_optimizer)");
    if (o->lr_buffer != NULL && !o->update_parameters)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_INVALID_ARGUMENT, "bloopcl_step: "
                             "options->lr_buffer is set but update_parameters is 0 (the "
                             "learning rate would not be used)");
    if (o->lr_buffer != NULL)
        return check_lr_buffer(comb->ctx, o);
    return BLOOPCL_OK;
}

bloopcl_status bloopcl__copy_device_lr(bloopcl_combiner *comb)
{
    const bloopcl_step_options *o = &comb->options;
    if (o->lr_buffer == NULL)
        return BLOOPCL_OK;
    cl_int err = clEnqueueCopyBuffer(comb->ctx->queue, o->lr_buffer, comb->flags,
                                     o->lr_index * sizeof(cl_float),
                                     BLOOPCL_FLAG_LR * sizeof(cl_int), sizeof(cl_float), 0,
                                     NULL, NULL);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(comb->ctx, err, "clEnqueueCopyBuffer", "reading the learning "
                                "rate from options->lr_buffer");
    return BLOOPCL_OK;
}

void bloopcl__optimizer_kernel_args(const bloopcl_combiner *comb, size_t chunk,
                                    bloopcl_optimizer_kernel_args *k, bloopcl_arg *args)
{
    const bloopcl_attached_optimizer *att = &comb->optimizer;
    const bloopcl_optimizer *o = &att->settings;
    bool on = bloopcl__step_optimizes(comb);
    /* without moments the kernel never reads them: any buffer will do */
    k->moments = on && att->kinds > 0 ? att->moments[chunk] : comb->flags;
    k->moment2_offset = att->kinds == 2 ? chunk_count(comb, chunk) : 0;
    k->kind = on ? (cl_int)o->kind : BLOOPCL_KERNEL_OPT_NONE;
    k->decoupled = o->decoupled_weight_decay != 0;
    k->nesterov = o->nesterov != 0;
    k->lr_on_device = comb->options.lr_buffer != NULL;
    k->bias_correction = o->bias_correction != 0;
    k->lr = att->lr;
    k->weight_decay = (cl_float)o->weight_decay;
    k->momentum = (cl_float)o->momentum;
    k->dampening = (cl_float)o->dampening;
    k->beta1 = (cl_float)o->beta1;
    k->beta2 = (cl_float)o->beta2;
    k->eps = (cl_float)o->eps;
    const bloopcl_arg list[BLOOPCL_OPTIMIZER_ARGS] = {
        {BLOOPCL_ARG(k->moments)}, {BLOOPCL_ARG(k->moment2_offset)}, {BLOOPCL_ARG(k->kind)},
        {BLOOPCL_ARG(k->decoupled)}, {BLOOPCL_ARG(k->nesterov)}, {BLOOPCL_ARG(k->lr)},
        {BLOOPCL_ARG(k->lr_on_device)}, {BLOOPCL_ARG(k->weight_decay)},
        {BLOOPCL_ARG(k->momentum)}, {BLOOPCL_ARG(k->dampening)}, {BLOOPCL_ARG(k->beta1)},
        {BLOOPCL_ARG(k->beta2)}, {BLOOPCL_ARG(k->eps)}, {BLOOPCL_ARG(k->bias_correction)}};
    memcpy(args, list, sizeof list);
}

/* --- moments as state kinds ----------------------------------------------------------------- */

bool bloopcl__has_moment(const bloopcl_combiner *comb, bloopcl_state_kind kind)
{
    unsigned index = kind == BLOOPCL_STATE_MOMENT1 ? 0 : 1;
    return comb->optimizer.settings.kind != BLOOPCL_OPTIMIZER_NONE &&
           index < comb->optimizer.kinds;
}

static size_t moment_offset(const bloopcl_combiner *comb, bloopcl_state_kind kind, size_t chunk)
{
    return kind == BLOOPCL_STATE_MOMENT1 ? 0 : chunk_count(comb, chunk);
}

bloopcl_status bloopcl__read_moment(bloopcl_combiner *comb, bloopcl_state_kind kind, float *host)
{
    const bloopcl_attached_optimizer *att = &comb->optimizer;
    for (size_t c = 0; c < att->num_chunks; ++c) {
        cl_int err = clEnqueueReadBuffer(comb->ctx->queue, att->moments[c], CL_TRUE,
                                         moment_offset(comb, kind, c) * sizeof(float),
                                         chunk_count(comb, c) * sizeof(float),
                                         host + c * comb->chunk_capacity, 0, NULL, NULL);
        if (err != CL_SUCCESS)
            return bloopcl__fail_cl(comb->ctx, err, "clEnqueueReadBuffer", "reading the "
                                    "optimizer's moments");
    }
    return BLOOPCL_OK;
}

/* In place: a failure part-way leaves that moment invalid until written again or reset. */
bloopcl_status bloopcl__write_moment(bloopcl_combiner *comb, bloopcl_state_kind kind,
                                     const float *host)
{
    const bloopcl_attached_optimizer *att = &comb->optimizer;
    for (size_t c = 0; c < att->num_chunks; ++c) {
        cl_int err = clEnqueueWriteBuffer(comb->ctx->queue, att->moments[c], CL_TRUE,
                                          moment_offset(comb, kind, c) * sizeof(float),
                                          chunk_count(comb, c) * sizeof(float),
                                          host + c * comb->chunk_capacity, 0, NULL, NULL);
        if (err != CL_SUCCESS) {
            comb->invalid_kinds |= 1u << kind;
            return bloopcl__fail_cl(comb->ctx, err, "clEnqueueWriteBuffer", "writing the "
                                    "optimizer's moments");
        }
    }
    comb->invalid_kinds &= ~(1u << kind);
    return BLOOPCL_OK;
}
