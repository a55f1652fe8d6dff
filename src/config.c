/* config.c — method names, defaults (those of apple/ml-bloop) and validation. Validation
 * rejects instead of clamping: a silently changed hyperparameter is a silent bug. */
#include "internal.h"

#include <float.h>
#include <math.h>

const char *bloopcl_method_name(bloopcl_method method)
{
    switch (method) {
    case BLOOPCL_METHOD_BLOOP: return "bloop";
    case BLOOPCL_METHOD_DYNAMIC_BARRIER: return "dynamic_barrier";
    case BLOOPCL_METHOD_PCGRAD: return "pcgrad";
    case BLOOPCL_METHOD_MIXED: return "mixed";
    }
    return "unknown";
}

void bloopcl_config_default(bloopcl_config *config, bloopcl_method method)
{
    if (config == NULL)
        return;
    *config = (bloopcl_config){
        .struct_size = sizeof *config,
        .method = method,
        .ema_weight = 0.1,
        .lambda = 0.1,
        .eps = 1e-7,
        .rescale = 0,
        .ratio_only = 0,
        .init = BLOOPCL_INIT_ZEROS,
        .seed = 0,
        .initial_ema = NULL,
        .initial_aux_ema = NULL,
        .nonfinite = BLOOPCL_NONFINITE_SKIP,
        .dots = BLOOPCL_DOTS_AUTO,
    };
}

bool bloopcl__method_has_ema(bloopcl_method method)
{
    return method != BLOOPCL_METHOD_MIXED;
}

bool bloopcl__method_has_aux_ema(bloopcl_method method)
{
    return method == BLOOPCL_METHOD_PCGRAD;
}

/* A hyperparameter must be representable as a float kernel argument: finite after rounding. */
static bool fits_float(double value)
{
    return isfinite(value) && fabs(value) <= FLT_MAX;
}

bloopcl_status bloopcl__validate_hyperparameters(double ema_weight, double lambda, double eps,
                                                 char *message, size_t message_size)
{
    if (!fits_float(ema_weight) || !((float)ema_weight > 0.0f) || ema_weight > 1.0) {
        bloopcl__format(message, message_size,
                        "ema_weight = %g is outside (0, 1] (it is the weight of the new "
                        "gradient; 1 means no EMA)", ema_weight);
        return BLOOPCL_ERR_INVALID_ARGUMENT;
    }
    if (!fits_float(lambda) || lambda < 0.0) {
        bloopcl__format(message, message_size, "lambda = %g must be finite and >= 0", lambda);
        return BLOOPCL_ERR_INVALID_ARGUMENT;
    }
    if (!fits_float(eps) || eps < 0.0) {
        bloopcl__format(message, message_size, "eps = %g must be finite and >= 0", eps);
        return BLOOPCL_ERR_INVALID_ARGUMENT;
    }
    return BLOOPCL_OK;
}

static bloopcl_status validate_enums(const bloopcl_config *config, char *message,
                                     size_t message_size)
{
    if ((unsigned)config->method > BLOOPCL_METHOD_MIXED) {
        bloopcl__format(message, message_size, "method = %d is not a bloopcl_method",
                        (int)config->method);
        return BLOOPCL_ERR_INVALID_ARGUMENT;
    }
    if ((unsigned)config->init > BLOOPCL_INIT_BUFFER) {
        bloopcl__format(message, message_size, "init = %d is not a bloopcl_init",
                        (int)config->init);
        return BLOOPCL_ERR_INVALID_ARGUMENT;
    }
    if ((unsigned)config->nonfinite > BLOOPCL_NONFINITE_PROPAGATE) {
        bloopcl__format(message, message_size, "nonfinite = %d is not a policy",
                        (int)config->nonfinite);
        return BLOOPCL_ERR_INVALID_ARGUMENT;
    }
    if ((unsigned)config->dots > BLOOPCL_DOTS_FUSED) {
        bloopcl__format(message, message_size, "dots = %d is not a bloopcl_dot_backend",
                        (int)config->dots);
        return BLOOPCL_ERR_INVALID_ARGUMENT;
    }
    return BLOOPCL_OK;
}

static bloopcl_status validate_combination(const bloopcl_config *config, char *message,
                                           size_t message_size)
{
    bool projects = config->method == BLOOPCL_METHOD_BLOOP ||
                    config->method == BLOOPCL_METHOD_DYNAMIC_BARRIER;
    if (config->ratio_only && !projects) {
        bloopcl__format(message, message_size,
                        "ratio_only applies to bloop and dynamic_barrier, not %s",
                        bloopcl_method_name(config->method));
        return BLOOPCL_ERR_INVALID_ARGUMENT;
    }
    if (config->init == BLOOPCL_INIT_BUFFER && bloopcl__method_has_ema(config->method)) {
        if (config->initial_ema == NULL) {
            bloopcl__format(message, message_size, "init BUFFER needs initial_ema");
            return BLOOPCL_ERR_NULL_ARGUMENT;
        }
        if (bloopcl__method_has_aux_ema(config->method) && config->initial_aux_ema == NULL) {
            bloopcl__format(message, message_size, "init BUFFER with pcgrad needs initial_aux_ema");
            return BLOOPCL_ERR_NULL_ARGUMENT;
        }
    }
    return BLOOPCL_OK;
}

bloopcl_status bloopcl_config_validate(const bloopcl_config *given, char *message,
                                       size_t message_size)
{
    bloopcl__format(message, message_size, "%s", "");
    if (given == NULL) {
        bloopcl__format(message, message_size, "config is NULL");
        return BLOOPCL_ERR_NULL_ARGUMENT;
    }
    bloopcl_config local;
    const bloopcl_config *config = &local;
    bloopcl_status status = bloopcl__read_config(given, &local, message, message_size);
    if (status == BLOOPCL_OK)
        status = validate_enums(config, message, message_size);
    if (status == BLOOPCL_OK)
        status = bloopcl__validate_hyperparameters(config->ema_weight, config->lambda,
                                                   config->eps, message, message_size);
    if (status == BLOOPCL_OK)
        status = validate_combination(config, message, message_size);
    return status;
}
