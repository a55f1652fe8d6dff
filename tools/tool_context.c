/* tool_context.c — see tool_context.h. */
#include "tool_context.h"

#include <stdio.h>

bloopcl_context *tool_open_context(const char *program, const char *device_spec)
{
    bloopcl_context_params params;
    bloopcl_context_params_default(&params);
    params.device_spec = device_spec;
    bloopcl_context *ctx = NULL;
    if (bloopcl_context_create(&params, &ctx) != BLOOPCL_OK) {
        fprintf(stderr, "%s: %s\n", program, bloopcl_context_last_error(ctx));
        bloopcl_context_destroy(ctx);
        return NULL;
    }
    return ctx;
}
