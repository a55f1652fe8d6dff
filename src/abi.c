/* abi.c — the public structs across library versions.
 *
 * Every public struct that crosses the API (bloopcl_config, bloopcl_context_params,
 * bloopcl_device_info, bloopcl_diagnostics, bloopcl_step_options) begins with `size_t struct_size`, set by the
 * caller's *_default() function or BLOOPCL_*_INIT macro to sizeof(the struct) as the caller's
 * header saw it. Fields are only ever appended, so the caller's struct is a prefix of ours (an
 * older header) or ours is a prefix of theirs (a newer header):
 *   - input structs: the library reads the caller's prefix over its own defaults; bytes past
 *     the end of our struct (fields of a newer header) must be zero, since a request this
 *     library cannot honour must not be ignored silently (Linux's copy_struct_from_user rule);
 *   - output structs: the library writes the common prefix and leaves the rest alone.
 * The smallest size accepted is the struct as of 0.2.0, the first versioned layout (0.3.0 for
 * bloopcl_step_options, which is new there); a
 * struct_size of 0 means the caller did not initialise the struct, which is an error. */
#include "internal.h"

#include <string.h>

/* The first versioned layout (0.2.0) of each struct ends after this field. */
#define END_OF(type, field) (offsetof(type, field) + sizeof(((type *)0)->field))
static const size_t config_v1_size = END_OF(bloopcl_config, dots);
static const size_t params_v1_size = END_OF(bloopcl_context_params, log_user);
static const size_t device_info_v1_size = END_OF(bloopcl_device_info, compute_units);
static const size_t diagnostics_v1_size = END_OF(bloopcl_diagnostics, reason);
static const size_t step_options_v1_size = END_OF(bloopcl_step_options, inv_scale_a_index);
static const size_t optimizer_v1_size = END_OF(bloopcl_optimizer, bias_correction);

static size_t declared_size(const void *caller)
{
    size_t size;
    memcpy(&size, caller, sizeof size);  /* struct_size is the first member of every struct */
    return size;
}

static bloopcl_status check_size(size_t size, size_t v1_size, const char *name, char *message,
                                 size_t message_size)
{
    if (size >= v1_size)
        return BLOOPCL_OK;
    if (size == 0)
        bloopcl__format(message, message_size,
                        "%s->struct_size is 0: initialise the struct with its *_default "
                        "function or BLOOPCL_*_INIT macro", name);
    else
        bloopcl__format(message, message_size,
                        "%s->struct_size = %zu is smaller than the oldest layout (%zu bytes)",
                        name, size, v1_size);
    return BLOOPCL_ERR_INVALID_ARGUMENT;
}

static bool tail_is_zero(const unsigned char *bytes, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        if (bytes[i] != 0)
            return false;
    return true;
}

/* Overlays the caller's struct on `ours` (already holding the defaults). */
static bloopcl_status read_struct(void *ours, size_t ours_size, size_t v1_size,
                                  const void *theirs, const char *name, char *message,
                                  size_t message_size)
{
    size_t size = declared_size(theirs);
    bloopcl_status status = check_size(size, v1_size, name, message, message_size);
    if (status != BLOOPCL_OK)
        return status;
    if (size > ours_size && !tail_is_zero(theirs, ours_size, size)) {
        bloopcl__format(message, message_size,
                        "%s sets fields this library (%s, %zu-byte struct) does not know "
                        "(struct_size = %zu)", name, BLOOPCL_VERSION_STRING, ours_size, size);
        return BLOOPCL_ERR_UNSUPPORTED;
    }
    memcpy(ours, theirs, size < ours_size ? size : ours_size);
    memcpy(ours, &ours_size, sizeof ours_size);
    return BLOOPCL_OK;
}

/* Writes the prefix of `ours` that the caller's struct holds; its struct_size stays. */
static bloopcl_status write_struct(void *theirs, const void *ours, size_t ours_size,
                                   size_t v1_size, const char *name, char *message,
                                   size_t message_size)
{
    size_t size = declared_size(theirs);
    bloopcl_status status = check_size(size, v1_size, name, message, message_size);
    if (status != BLOOPCL_OK)
        return status;
    size_t common = size < ours_size ? size : ours_size;
    memcpy((unsigned char *)theirs + sizeof size, (const unsigned char *)ours + sizeof size,
           common - sizeof size);
    return BLOOPCL_OK;
}

bloopcl_status bloopcl__read_config(const bloopcl_config *given, bloopcl_config *config,
                                    char *message, size_t message_size)
{
    bloopcl_config_default(config, BLOOPCL_METHOD_BLOOP);
    return read_struct(config, sizeof *config, config_v1_size, given, "config", message,
                       message_size);
}

bloopcl_status bloopcl__read_context_params(const bloopcl_context_params *given,
                                            bloopcl_context_params *params, char *message,
                                            size_t message_size)
{
    bloopcl_context_params_default(params);
    if (given == NULL)
        return BLOOPCL_OK;
    return read_struct(params, sizeof *params, params_v1_size, given, "params", message,
                       message_size);
}

void bloopcl_step_options_default(bloopcl_step_options *options)
{
    if (options != NULL)
        *options = (bloopcl_step_options)BLOOPCL_STEP_OPTIONS_INIT;
}

bloopcl_status bloopcl__read_step_options(const bloopcl_step_options *given,
                                          bloopcl_step_options *options, char *message,
                                          size_t message_size)
{
    bloopcl_step_options_default(options);
    if (given == NULL)
        return BLOOPCL_OK;
    return read_struct(options, sizeof *options, step_options_v1_size, given, "options",
                       message, message_size);
}

bloopcl_status bloopcl__read_optimizer(const bloopcl_optimizer *given,
                                      bloopcl_optimizer *optimizer, char *message,
                                      size_t message_size)
{
    bloopcl_optimizer_default(optimizer, BLOOPCL_OPTIMIZER_NONE);
    return read_struct(optimizer, sizeof *optimizer, optimizer_v1_size, given, "optimizer",
                       message, message_size);
}

bloopcl_status bloopcl__write_optimizer(bloopcl_optimizer *out, const bloopcl_optimizer *ours,
                                       char *message, size_t message_size)
{
    return write_struct(out, ours, sizeof *ours, optimizer_v1_size, "optimizer", message,
                        message_size);
}

bloopcl_status bloopcl__write_config(bloopcl_config *out, const bloopcl_config *config,
                                     char *message, size_t message_size)
{
    return write_struct(out, config, sizeof *config, config_v1_size, "config", message,
                        message_size);
}

bloopcl_status bloopcl__write_device_info(bloopcl_device_info *out,
                                          const bloopcl_device_info *info, char *message,
                                          size_t message_size)
{
    return write_struct(out, info, sizeof *info, device_info_v1_size, "device info", message,
                        message_size);
}

bloopcl_status bloopcl__write_diagnostics(bloopcl_diagnostics *out,
                                          const bloopcl_diagnostics *diagnostics, char *message,
                                          size_t message_size)
{
    return write_struct(out, diagnostics, sizeof *diagnostics, diagnostics_v1_size,
                        "diagnostics", message, message_size);
}

/* An array of device infos is laid out with the caller's struct size as its stride. */
bloopcl_status bloopcl__write_device_infos(bloopcl_device_info *out, size_t capacity,
                                           const bloopcl_device_info *infos, size_t count,
                                           char *message, size_t message_size)
{
    if (capacity == 0)
        return BLOOPCL_OK;
    size_t stride = declared_size(out);
    bloopcl_status status = check_size(stride, device_info_v1_size, "devices[0]", message,
                                       message_size);
    unsigned char *entry = (unsigned char *)out;
    for (size_t i = 0; status == BLOOPCL_OK && i < count && i < capacity; i++, entry += stride) {
        memcpy(entry, &stride, sizeof stride);
        status = write_struct(entry, &infos[i], sizeof infos[i], device_info_v1_size,
                              "device info", message, message_size);
    }
    return status;
}
