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
#define MAX_DTYPES 16
#define DTYPE_LABEL_SIZE 32

/* Where a combination's inverse loss scales come from (bloopcl_step_options). */
typedef enum scale_mode {
    SCALE_NONE,     /* unscaled: inverse scales 1 */
    SCALE_HOST,     /* inv_scale_g = --inv-scale, inv_scale_a = 2 --inv-scale, from the host */
    SCALE_DEVICE    /* the same two values, read from a device buffer */
} scale_mode;

/* One element-type combination: the dtypes of g, a and d (the state is always fp32) and the
 * loss scaling. Its label is what --dtypes takes and what --filter sees after "dtype=". */
typedef struct dtype_combo {
    bloopcl_dtype g, a, d;
    scale_mode scale;
    char label[DTYPE_LABEL_SIZE];
} dtype_combo;

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
    size_t shards;                   /* 0: one combiner; else K, through split steps */
    segment_layout layout;
    bool layout_given;
    dtype_combo dtypes[MAX_DTYPES];  /* --dtypes, else the default set (options.c) */
    size_t num_dtypes;
    double inv_scale;                /* --inv-scale: g's inverse loss scale (a's is twice it) */
} options;

/* g, a and d all f32 and no loss scale: the combination of the tool's original cases, which
 * runs through bloopcl_step_host (or bloopcl_step with --segments) on both backends. */
bool dtype_combo_plain(const dtype_combo *dt);
/* Some of g, a and d is a 2-byte type: FUSED only (CLBLAST refuses it). */
bool dtype_combo_narrow(const dtype_combo *dt);
/* The inverse scales of g and a for the combination (1 when unscaled). */
double combo_inv_scale_g(const options *opt, const dtype_combo *dt);
double combo_inv_scale_a(const options *opt, const dtype_combo *dt);

/* The tool's description for messages, --help and its JSON documents. */
extern const tool_spec COMPARE_TOOL;

/* Parses argv. Returns TOOL_CONTINUE to run, else the exit status (after --help, --version,
 * --list or a usage error). */
int parse_options(int argc, char **argv, options *opt);

#endif
