/* tool_log.c — see tool_log.h. */
#include "tool_log.h"

#include <stdio.h>
#include <string.h>

/* The library's levels are DEBUG 0, INFO 1, WARNING 2; "error" asks for the levels above
 * WARNING only, so a message the library marks as an error (if a later version has that level)
 * shows and notes and warnings do not. */
#define LEVEL_ERROR (BLOOPCL_LOG_WARNING + 1)

static const struct {
    const char *word;
    int level;
} LEVELS[] = {{"debug", BLOOPCL_LOG_DEBUG},
              {"info", BLOOPCL_LOG_INFO},
              {"warn", BLOOPCL_LOG_WARNING},
              {"error", LEVEL_ERROR}};
#define NUM_LEVELS (sizeof LEVELS / sizeof LEVELS[0])

bool tool_log_parse(const char *text, int *threshold)
{
    *threshold = TOOL_LOG_OFF;
    if (text == NULL || text[0] == '\0')
        return true;
    for (size_t i = 0; i < NUM_LEVELS; ++i)
        if (strcmp(text, LEVELS[i].word) == 0) {
            *threshold = LEVELS[i].level;
            return true;
        }
    return false;
}

static const char *level_word(int level)
{
    const char *word = LEVELS[0].word;
    for (size_t i = 0; i < NUM_LEVELS; ++i)
        if (level >= LEVELS[i].level)
            word = LEVELS[i].word;
    return word;
}

/* What the callback needs: one tool per process, so one sink. */
typedef struct log_sink {
    const char *program;
    int threshold;
} log_sink;

static log_sink the_sink;

static void print_message(void *user, bloopcl_log_level level, const char *message)
{
    const log_sink *sink = user;
    if ((int)level < sink->threshold)
        return;
    fprintf(stderr, "%s: bloopcl %s: %s\n", sink->program, level_word((int)level), message);
}

void tool_log_attach(bloopcl_context_params *params, const tool_spec *spec,
                     const tool_common *common)
{
    if (common->log_threshold == TOOL_LOG_OFF)
        return;
    the_sink = (log_sink){spec->name, common->log_threshold};
    params->log_fn = print_message;
    params->log_user = &the_sink;
}
