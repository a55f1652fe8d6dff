/* options.h — bloopcl-train's command line (the options every tool shares come from
 * tools/common/tool_cli.h). */
#ifndef BLOOPCL_TRAIN_OPTIONS_H
#define BLOOPCL_TRAIN_OPTIONS_H

#include "bloopcl.h"
#include "tool_cli.h"

#include <stddef.h>
#include <stdint.h>

#define MAX_LAMBDAS 32
#define NUM_METHODS 4

typedef struct options {
    tool_common common;   /* --device, --json, --list, --verbose, BLOOPCL_LOG */
    const char *data_dir, *csv_path;
    size_t train_size, test_size, batch;
    int epochs, power_iters, quick, check, num_lambdas, num_methods;
    int data_parallel; /* running data-parallel (MPI), over `ranks` ranks; else ranks = 1 */
    int ranks;
    long inject_step;  /* 0, or the optimizer step whose g gets a NaN (--inject-nonfinite) */
    double lr, bloop_ema, base_ema, min_accuracy;
    double lambdas[MAX_LAMBDAS];
    bloopcl_method methods[NUM_METHODS];
    uint64_t seed;
} options;

/* The tool's description for tool_setup (names, help, option table, checks). */
extern const tool_spec TRAIN_TOOL;

/* The defaults, then --quick's values where argv has --quick (so that explicit options given
 * with it still win when tool_setup parses argv). */
void options_defaults(int argc, char **argv, options *opt);

/* Optimizer steps in one run: every epoch drops the last partial batch. */
long options_steps(const options *opt);

#endif
