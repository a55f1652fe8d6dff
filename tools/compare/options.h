/* options.h — bloopcl-compare's command line (its own options; the common ones come from
 * tools/common/tool_cli.h) and its --help. */
#ifndef BLOOPCL_COMPARE_OPTIONS_H
#define BLOOPCL_COMPARE_OPTIONS_H

#include "segments.h"
#include "tool_cli.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MAX_STEPS 64
#define MAX_SIZES 64
#define MAX_FILTERS 16

typedef struct options {
    tool_common common;              /* --device, --json, --list, --verbose, BLOOPCL_LOG */
    bool all, quick;
    uint64_t seed;
    int steps;                       /* 0: as the size plan says */
    size_t sizes[MAX_SIZES];
    size_t num_sizes;                /* 0: the mode's default sizes */
    const char *filters[MAX_FILTERS];
    size_t num_filters;
    size_t segments;                 /* 0: bloopcl_step_host; else P segments per tensor */
    segment_layout layout;
    bool layout_given;
} options;

/* The tool's description for messages, --help and its JSON documents. */
extern const tool_spec COMPARE_TOOL;

/* Parses argv. Returns TOOL_CONTINUE to run, else the exit status (after --help, --version,
 * --list or a usage error). */
int parse_options(int argc, char **argv, options *opt);

#endif
