/* tool_context.h — what the command-line tools share: opening a context on a device. */
#ifndef BLOOPCL_TOOL_CONTEXT_H
#define BLOOPCL_TOOL_CONTEXT_H

#include "bloopcl.h"

/* A context on `device_spec` (NULL: BLOOPCL_DEVICE's choice), or NULL after printing
 * "<program>: <the library's message>" to stderr. */
bloopcl_context *tool_open_context(const char *program, const char *device_spec);

#endif
