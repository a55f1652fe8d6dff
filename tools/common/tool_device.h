/* tool_device.h — devices as every tool sees them: the list (--list, --list --json, the
 * summary of --version --verbose) and a context on the chosen device, with an error that names
 * where the device specification came from (--device or BLOOPCL_DEVICE). */
#ifndef BLOOPCL_TOOL_DEVICE_H
#define BLOOPCL_TOOL_DEVICE_H

#include "bloopcl.h"
#include "tool_cli.h"

#include <stddef.h>
#include <stdio.h>

/* "GPU", "CPU", "ACC" or "other". */
const char *tool_device_type_name(cl_device_type type);

/* Every device, or NULL with *status set (BLOOPCL_OK and *count 0: there is none). Free it. */
bloopcl_device_info *tool_devices(size_t *count, bloopcl_status *status);

/* --list: a table (and, on stderr, how to select one) or, with --json, a document of schema
 * "bloopcl-devices/1". Returns an exit status. */
int tool_list_devices(const tool_spec *spec, const tool_common *common);

/* One line per device, "  N  platform / device (TYPE), driver D, OpenCL C V". */
void tool_print_device_summary(FILE *out);

/* A context on `device_spec` (NULL: BLOOPCL_DEVICE's choice), with the BLOOPCL_LOG callback
 * attached. On failure prints why on stderr, naming the source of the specification
 * (`--device "X"` when device_spec is common->device, else `BLOOPCL_DEVICE="X"` or the device
 * given), followed by the library's message, and returns TOOL_EXIT_USAGE with *out NULL.
 * The library's status goes to *status unless status is NULL. */
int tool_open_context(const tool_spec *spec, const tool_common *common, const char *device_spec,
                      bloopcl_context **out, bloopcl_status *status);

/* What a tool on one device does first: parses argv (tool_parse_args) and opens the context
 * on --device's choice (tool_open_context). Returns TOOL_CONTINUE with *ctx set, or the exit
 * status with *ctx NULL. */
int tool_setup(const tool_spec *spec, int argc, char **argv, tool_common *common, void *user,
               bloopcl_context **ctx);

#endif
