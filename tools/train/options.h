/* options.h — bloopcl-train's command line (the options every tool shares come from
 * tools/common/tool_cli.h), and the curves it can train: a curve is a method with a rule for
 * its EMA weight, run over its own lambda grid. */
#ifndef BLOOPCL_TRAIN_OPTIONS_H
#define BLOOPCL_TRAIN_OPTIONS_H

#include "bloopcl.h"
#include "tool_cli.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MAX_LAMBDAS 32
#define MAX_SEEDS 100

typedef enum curve_id {
    CURVE_BLOOP,            /* Bloop, EMA weight --bloop-ema (0.01, the paper's MLP example) */
    CURVE_BLOOP_NOEMA,      /* the ablation: Bloop with w = 1 (projection on the batch's g) */
    CURVE_MIXED,            /* the baselines, EMA weight --base-ema (1) */
    CURVE_PCGRAD,
    CURVE_DYNAMIC_BARRIER,
    NUM_CURVES
} curve_id;

/* The label of the runs of Bloop's EMA-weight sweep (--ema-sweep). */
#define EMA_SWEEP_LABEL "bloop-ema-sweep"

typedef struct lambda_grid {
    int count;
    double values[MAX_LAMBDAS];
} lambda_grid;

typedef struct options {
    tool_common common;   /* --device, --json, --list, --verbose, BLOOPCL_LOG */
    const char *data_dir, *csv_path, *summary_path;
    size_t train_size, test_size, batch;
    int epochs, power_iters, quick, check;
    int data_parallel; /* running data-parallel (MPI), over `ranks` ranks; else ranks = 1 */
    int ranks;
    long inject_step;  /* 0, or the optimizer step whose g gets a NaN (--inject-nonfinite) */
    int own_adam;      /* --optimizer trainer: the trainer's Adam kernel, not bloopcl's fused
                          AdamW (the default) */
    double lr, bloop_ema, base_ema, min_accuracy;
    curve_id curves[NUM_CURVES];
    int num_curves;
    lambda_grid lambdas;             /* --lambdas: every curve's grid unless it has its own */
    lambda_grid grid[NUM_CURVES];    /* each curve's grid, final after the options' check */
    bool own_grid[NUM_CURVES];       /* --lambdas-NAME given (or set by --matched-grids) */
    double ema_sweep_lambda;         /* < 0: no EMA sweep */
    lambda_grid ema_weights;         /* the sweep's weights */
    uint64_t seed;                   /* the first seed; the others follow it */
    int seeds;
} options;

/* The tool's description for tool_setup (names, help, option table, checks). */
extern const tool_spec TRAIN_TOOL;

/* The defaults, then --quick's values where argv has --quick (so that explicit options given
 * with it still win when tool_setup parses argv). */
void options_defaults(int argc, char **argv, options *opt);

/* Optimizer steps in one run: every epoch drops the last partial batch. */
long options_steps(const options *opt);

/* A curve's name (its label in every output), its bloopcl method, its EMA weight. */
const char *curve_name(curve_id curve);
bloopcl_method curve_method(curve_id curve);
double curve_ema_weight(const options *opt, curve_id curve);

#endif
