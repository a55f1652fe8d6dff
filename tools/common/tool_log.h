/* tool_log.h — BLOOPCL_LOG=error|warn|info|debug: the tools hand the library a log callback that
 * prints its messages of that level and above to stderr. This is also the example of how a
 * trainer hooks the callback: set bloopcl_context_params.log_fn and .log_user before
 * bloopcl_context_create (see tool_log_attach in tool_log.c). */
#ifndef BLOOPCL_TOOL_LOG_H
#define BLOOPCL_TOOL_LOG_H

#include "bloopcl.h"
#include "tool_cli.h"

#include <stdbool.h>

/* "error", "warn", "info" or "debug" to the lowest bloopcl_log_level shown; NULL or "" to
 * TOOL_LOG_OFF. Returns false for any other value. */
bool tool_log_parse(const char *text, int *threshold);

/* The words tool_log_parse takes, for messages and --help. */
#define TOOL_LOG_LEVELS "error, warn, info or debug"

/* Sets params->log_fn and log_user so that messages at common->log_threshold and above go to
 * stderr as "<name>: bloopcl <level>: <message>" (nothing when the threshold is TOOL_LOG_OFF). */
void tool_log_attach(bloopcl_context_params *params, const tool_spec *spec,
                     const tool_common *common);

#endif
