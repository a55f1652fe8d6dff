/* tool_device.c — see tool_device.h. */
#include "tool_device.h"
#include "tool_json.h"
#include "tool_log.h"

#include <stdlib.h>

const char *tool_device_type_name(cl_device_type type)
{
    if (type & CL_DEVICE_TYPE_GPU)
        return "GPU";
    if (type & CL_DEVICE_TYPE_CPU)
        return "CPU";
    if (type & CL_DEVICE_TYPE_ACCELERATOR)
        return "ACC";
    return "other";
}

bloopcl_device_info *tool_devices(size_t *count, bloopcl_status *status)
{
    *count = 0;
    *status = bloopcl_list_devices(NULL, 0, count);
    if (*status != BLOOPCL_OK || *count == 0)
        return NULL;
    bloopcl_device_info *devices = calloc(*count, sizeof *devices);
    if (devices == NULL) {
        *status = BLOOPCL_ERR_OUT_OF_MEMORY;
        return NULL;
    }
    devices[0].struct_size = sizeof *devices;  /* the size of every entry (bloopcl.h, ABI) */
    *status = bloopcl_list_devices(devices, *count, count);
    if (*status != BLOOPCL_OK) {
        free(devices);
        return NULL;
    }
    return devices;
}

static void print_device_table(const bloopcl_device_info *devices, size_t count)
{
    printf("%-5s %-32s %-40s %-5s %-18s %-16s %-4s %-4s %9s %4s\n", "index", "platform",
           "device", "type", "driver", "OpenCL C", "fp64", "fp16", "memory", "CUs");
    for (size_t i = 0; i < count; ++i) {
        const bloopcl_device_info *d = &devices[i];
        printf("%-5u %-32.32s %-40.40s %-5s %-18.18s %-16.16s %-4s %-4s %6.1f GiB %4u\n",
               d->flat_index, d->platform_name, d->device_name, tool_device_type_name(d->type),
               d->driver_version, d->opencl_c_version, d->has_fp64 ? "yes" : "no",
               d->has_fp16 ? "yes" : "no", (double)d->global_mem_bytes / (1024.0 * 1024 * 1024),
               d->compute_units);
    }
}

static void print_device_document(const tool_spec *spec, const bloopcl_device_info *devices,
                                  size_t count)
{
    tool_spec list_spec = *spec;
    list_spec.schema = "bloopcl-devices/1";
    tool_json json;
    tool_json_init(&json, stdout);
    tool_json_document_begin(&json, &list_spec);
    tool_json_array_begin(&json, "devices");
    for (size_t i = 0; i < count; ++i)
        tool_json_device(&json, NULL, &devices[i]);
    tool_json_document_end(&json);
}

int tool_list_devices(const tool_spec *spec, const tool_common *common)
{
    size_t count = 0;
    bloopcl_status status;
    bloopcl_device_info *devices = tool_devices(&count, &status);
    if (status != BLOOPCL_OK) {
        fprintf(stderr, "%s: listing the OpenCL devices failed: %s\n", spec->name,
                bloopcl_status_string(status));
        return TOOL_EXIT_USAGE;
    }
    if (common->json) {
        print_device_document(spec, devices, count);
    } else if (count == 0) {
        fprintf(stderr, "%s: no OpenCL device found\n", spec->name);
    } else {
        print_device_table(devices, count);
        fprintf(stderr, "select one with --device <index> or BLOOPCL_DEVICE=<index>\n");
    }
    fflush(stdout);
    free(devices);
    return TOOL_EXIT_OK;
}

void tool_print_device_summary(FILE *out)
{
    size_t count = 0;
    bloopcl_status status;
    bloopcl_device_info *devices = tool_devices(&count, &status);
    if (status != BLOOPCL_OK) {
        fprintf(out, "devices: listing failed: %s\n", bloopcl_status_string(status));
        return;
    }
    fprintf(out, "devices: %zu\n", count);
    for (size_t i = 0; i < count; ++i) {
        const bloopcl_device_info *d = &devices[i];
        fprintf(out, "  %u  %s / %s (%s), driver %s, %s\n", d->flat_index, d->platform_name,
                d->device_name, tool_device_type_name(d->type), d->driver_version,
                d->opencl_c_version);
    }
    free(devices);
}

/* Where the specification came from, as the user wrote it. */
static void describe_source(const tool_common *common, const char *device_spec, char *text,
                            size_t size)
{
    const char *variable = getenv("BLOOPCL_DEVICE");
    if (device_spec != NULL && device_spec == common->device)
        snprintf(text, size, "--device \"%s\"", device_spec);
    else if (device_spec != NULL)
        snprintf(text, size, "device \"%s\"", device_spec);
    else if (variable != NULL && variable[0] != '\0')
        snprintf(text, size, "BLOOPCL_DEVICE=\"%s\"", variable);
    else
        snprintf(text, size, "the default device (BLOOPCL_DEVICE unset)");
}

int tool_open_context(const tool_spec *spec, const tool_common *common, const char *device_spec,
                      bloopcl_context **out, bloopcl_status *status_out)
{
    bloopcl_context_params params;
    bloopcl_context_params_default(&params);
    params.device_spec = device_spec;
    tool_log_attach(&params, spec, common);
    *out = NULL;
    bloopcl_context *ctx = NULL;
    bloopcl_status status = bloopcl_context_create(&params, &ctx);
    if (status_out != NULL)
        *status_out = status;
    if (status == BLOOPCL_OK) {
        *out = ctx;
        return TOOL_EXIT_OK;
    }
    char source[256];
    describe_source(common, device_spec, source, sizeof source);
    fprintf(stderr, "%s: %s: %s\n", spec->name, source, bloopcl_status_string(status));
    if (ctx != NULL)
        fprintf(stderr, "%s\n", bloopcl_context_last_error(ctx));
    bloopcl_context_destroy(ctx);
    return TOOL_EXIT_USAGE;
}

int tool_setup(const tool_spec *spec, int argc, char **argv, tool_common *common, void *user,
               bloopcl_context **ctx)
{
    *ctx = NULL;
    int status = tool_parse_args(spec, argc, argv, common, user);
    if (status != TOOL_CONTINUE)
        return status;
    status = tool_open_context(spec, common, common->device, ctx, NULL);
    return status == TOOL_EXIT_OK ? TOOL_CONTINUE : status;
}
