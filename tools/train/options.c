/* options.c — bloopcl-train's options: help, parsing, defaults, the checks between them. */
#include "options.h"
#include "data_parallel.h"
#include "train.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* The grids of --matched-grids (logspace A:B:N, see matched_grids below): the baselines keep
 * the default 1e-4 .. 1; Bloop's goes one decade further, to 10. Short runs of 1170 steps
 * (the steps of 5 epochs of 60000 images) put Mixed at lambda 1 at aux -0.61 and Bloop at
 * lambda 3, 10, 30 at 0.25, -0.74, -1.31 (README, "Matching the fronts"). */
#define MATCHED_GRID_BLOOP "-4:1:11"
#define MATCHED_GRID_BASELINES "-4:0:9"

static void help(FILE *to)
{
    fputs(
        "Trains an MLP 784-256-128-10 (ReLU) on Fashion-MNIST: main loss cross-entropy, aux\n"
        "loss log prod_l ||W_l||_2^2, combined by each bloopcl method over a lambda grid, then\n"
        "Adam. Forward, backward, power iteration and Adam run on the bloopcl device.\n"
        "The combiner keeps bloopcl's defaults otherwise (eps 1e-7, no rescale, EMA from 0).\n"
        "\n"
        "Options:\n"
        "  --data DIR          IDX .gz files (default /usr/share/datasets/fashion-mnist;\n"
        "                      missing files are an environment error, exit 2)\n"
        "  --train-size N      first N training images (default 10000; 1..60000)\n"
        "  --test-size N       first N test images (default 10000; 1..10000)\n"
        "  --epochs N          epochs per run (default 3)\n"
        "  --batch B           mini-batch size (default 256)\n"
        "  --lr LR             Adam learning rate (default 3e-4)\n"
        "  --optimizer O       fused (default): Adam runs inside bloopcl's step (its AdamW\n"
        "                      with no weight decay, update_parameters: d is never\n"
        "                      written); trainer: the trainer's own Adam kernel after the\n"
        "                      step, reading d (the same losses within fp32 rounding)\n",
        to);  /* in two parts: ISO C bounds a string literal at 4095 characters */
    fprintf(to,
        "  --lambdas SPEC      comma list (0.01,0.1) or logspace A:B:N (default -4:0:9):\n"
        "                      the grid of every method without a grid of its own\n"
        "  --lambdas-NAME SPEC the grid of method NAME alone (--lambdas-bloop, ...)\n"
        "  --matched-grids     per-method grids whose fronts span the same aux-loss range:\n"
        "                      bloop and bloop-noema " MATCHED_GRID_BLOOP ", the others "
        MATCHED_GRID_BASELINES "\n"
        "                      (--lambdas-NAME still wins)\n"
        "  --methods LIST      comma list of bloop,bloop-noema,mixed,pcgrad,dynamic_barrier\n"
        "                      (default bloop,mixed,pcgrad,dynamic_barrier); bloop-noema is\n"
        "                      Bloop with EMA weight 1, the ablation of the EMA\n"
        "  --bloop-ema W       EMA weight of Bloop (default 0.01)\n"
        "  --base-ema W        EMA weight of the baselines (default 1)\n"
        "  --ema-sweep LAMBDA  also run Bloop at LAMBDA once per --ema-weights value\n"
        "                      (label " EMA_SWEEP_LABEL ")\n"
        "  --ema-weights LIST  the sweep's EMA weights (default 1,0.1,0.01,0.001)\n"
        "  --power-iters K     power iterations per step (default 1)\n"
        "  --seed S            initial weights and batch order (default 1)\n"
        "  --seeds N           run everything with seeds S, S+1, ..., S+N-1 (default 1):\n"
        "                      the table shows mean +- standard deviation over seeds and\n"
        "                      the matched-aux gaps with 95%% t-intervals, paired by seed\n"
        "  --min-accuracy A    fail (exit 1) if a method's smallest-lambda run ends below\n"
        "                      this test accuracy (default 0.5)\n"
        "  --csv PATH          write one row per method, lambda, seed and epoch\n"
        "  --summary PATH      write one row per method, lambda and EMA weight: mean and\n"
        "                      standard deviation over the seeds at the last epoch\n"
        "  --check             first compare the device gradients with finite differences\n"
        "  --inject-nonfinite T  put a NaN into g at optimizer step T (1-based) of every run;\n"
        "                      fail unless bloopcl skips it and Adam leaves the parameters,\n"
        "                      its moments and its step count bit-identical, and every\n"
        "                      other step of the run is applied\n"
        "  --data-parallel     data-parallel over MPI, implied when an MPI launcher (mpirun)\n"
        "                      starts the program (a plain run never initialises MPI):\n"
        "                      rank r of R takes part r of every batch (sizes differ by at\n"
        "                      most one row, each weighted 1/B of the whole batch),\n"
        "                      the gradients are summed over the ranks (MPI_Allreduce),\n"
        "                      bloopcl-mpi combines each rank's shard of the flattened\n"
        "                      parameters, Adam updates that shard, the parameters are\n"
        "                      all-gathered. Losses match one process with the same --batch\n"
        "                      within fp32 rounding. Rank 0 writes the table, CSV and JSON.\n"
        "                      %s\n"
        "  --quick             8192 images, 2 epochs, lambdas 1e-4,1e-2,1, all methods,\n"
        "                      --check\n"
        "  --json              stdout is one JSON document: device, settings, results[]\n"
        "                      (method, lambda, ema_weight, losses, accuracy, seconds,\n"
        "                      diverged) and passed; progress stays on stderr\n"
        "\n"
        "Plot: gnuplot -e \"csv='run.csv'; png='pareto.png'\" %s/plot_pareto.gp\n"
        "(tools/plot_pareto.gp in the source tree).\n",
        TRAIN_DP_AVAILABLE ? "Example: mpirun -np 2 bloopcl-train --batch 256"
                           : "Not in this build (no MPI at build time): refused.",
        BLOOPCL_DATADIR);
}

static const struct curve_info {
    const char *name;
    bloopcl_method method;
} curve_table[NUM_CURVES] = {
    [CURVE_BLOOP] = {"bloop", BLOOPCL_METHOD_BLOOP},
    [CURVE_BLOOP_NOEMA] = {"bloop-noema", BLOOPCL_METHOD_BLOOP},
    [CURVE_MIXED] = {"mixed", BLOOPCL_METHOD_MIXED},
    [CURVE_PCGRAD] = {"pcgrad", BLOOPCL_METHOD_PCGRAD},
    [CURVE_DYNAMIC_BARRIER] = {"dynamic_barrier", BLOOPCL_METHOD_DYNAMIC_BARRIER},
};

const char *curve_name(curve_id curve) { return curve_table[curve].name; }
bloopcl_method curve_method(curve_id curve) { return curve_table[curve].method; }

double curve_ema_weight(const options *opt, curve_id curve)
{
    switch (curve) {
    case CURVE_BLOOP: return opt->bloop_ema;
    case CURVE_BLOOP_NOEMA: return 1.0;
    default: return opt->base_ema;
    }
}

/* --matched-grids: lambda grids per curve over which every front spans about the same aux
 * loss range after short runs (README, "Matching the fronts"): Bloop's projection removes the
 * part of a that conflicts with g, so Bloop needs larger lambdas than the baselines to pull
 * the aux loss as far down. */
static const char *const matched_grids[NUM_CURVES] = {
    [CURVE_BLOOP] = MATCHED_GRID_BLOOP,
    [CURVE_BLOOP_NOEMA] = MATCHED_GRID_BLOOP,
    [CURVE_MIXED] = MATCHED_GRID_BASELINES,
    [CURVE_PCGRAD] = MATCHED_GRID_BASELINES,
    [CURVE_DYNAMIC_BARRIER] = MATCHED_GRID_BASELINES,
};

static bool parse_value(const char *text, size_t index, void *values)
{
    return tool_parse_double(text, 0.0, 1e6, &((double *)values)[index]);
}

/* "A:B:N" is 10^A .. 10^B in N log-spaced points; otherwise a comma list of values >= 0. */
static int parse_grid(const char *text, lambda_grid *grid)
{
    double a, b;
    int n, used = 0;
    if (sscanf(text, "%lf:%lf:%d%n", &a, &b, &n, &used) == 3 && text[used] == '\0') {
        if (n < 1 || n > MAX_LAMBDAS || !isfinite(a) || !isfinite(b) || a < -30 || b > 30)
            return -1;
        for (int i = 0; i < n; ++i)
            grid->values[i] = pow(10.0, n == 1 ? a : a + (b - a) * i / (n - 1));
        grid->count = n;
        return 0;
    }
    size_t count = 0;
    bool ok = tool_split_list(text, MAX_LAMBDAS, &count, parse_value, grid->values);
    grid->count = (int)count;
    return ok ? 0 : -1;
}

/* EMA weights: a comma list of values in (0, 1]. */
static bool parse_weight(const char *text, size_t index, void *values)
{
    return tool_parse_double(text, 1e-9, 1.0, &((double *)values)[index]);
}

static int parse_weights(const char *text, lambda_grid *grid)
{
    size_t count = 0;
    bool ok = tool_split_list(text, MAX_LAMBDAS, &count, parse_weight, grid->values);
    grid->count = (int)count;
    return ok ? 0 : -1;
}

static bool parse_curve(const char *name, size_t index, void *curves)
{
    for (int c = 0; c < NUM_CURVES; ++c)
        if (strcmp(name, curve_table[c].name) == 0) {
            ((curve_id *)curves)[index] = (curve_id)c;
            return true;
        }
    return false;
}

static int parse_curves(const char *text, options *opt)
{
    size_t count = 0;
    bool ok = tool_split_list(text, NUM_CURVES, &count, parse_curve, opt->curves);
    opt->num_curves = (int)count;
    return ok ? 0 : -1;
}

void options_defaults(int argc, char **argv, options *opt)
{
    *opt = (options){.data_dir = "/usr/share/datasets/fashion-mnist", .train_size = 10000,
                     .test_size = 10000, .batch = 256, .epochs = 3, .power_iters = 1,
                     .lr = 3e-4, .bloop_ema = 0.01, .base_ema = 1.0, .min_accuracy = 0.5,
                     .seed = 1, .seeds = 1, .ranks = 1, .ema_sweep_lambda = -1.0};
    parse_grid("-4:0:9", &opt->lambdas);
    parse_weights("1,0.1,0.01,0.001", &opt->ema_weights);
    parse_curves("bloop,mixed,pcgrad,dynamic_barrier", opt);
    for (int i = 1; i < argc; ++i)
        if (strcmp(argv[i], "--quick") == 0) {
            opt->quick = 1;
            opt->check = 1;
            opt->train_size = 8192;
            opt->epochs = 2;
            parse_grid("1e-4,1e-2,1", &opt->lambdas);
        }
}

long options_steps(const options *opt)
{
    return (long)opt->epochs * (long)(opt->train_size / opt->batch);
}

/* --matched-grids: every curve's grid from the table, unless --lambdas-NAME set it. */
static void apply_matched_grids(options *opt)
{
    for (int c = 0; c < NUM_CURVES; ++c)
        if (!opt->own_grid[c]) {
            parse_grid(matched_grids[c], &opt->grid[c]);
            opt->own_grid[c] = true;
        }
}

/* --lambdas-NAME (option ids 0x100 + curve). */
static bool parse_curve_grid(int c, const char *arg, options *opt)
{
    opt->own_grid[c] = true;
    return parse_grid(arg, &opt->grid[c]) == 0;
}

#define CURVE_GRID_ID 0x100

/* Applies option `c` (its short letter); returns false if its value is out of range. */
static bool parse_one(int c, const char *arg, options *opt)
{
    unsigned long long n = 0;
    bool ok = true;
    if (c >= CURVE_GRID_ID)
        return parse_curve_grid(c - CURVE_GRID_ID, arg, opt);
    switch (c) {
    case 'D': opt->data_dir = arg; break;
    case 'c': opt->csv_path = arg; break;
    case 'q': break;   /* applied first, by options_defaults */
    case 'G': apply_matched_grids(opt); break;
    case 'y': opt->summary_path = arg; break;
    case 'S': ok = tool_parse_unsigned(arg, 1, MAX_SEEDS, &n), opt->seeds = (int)n; break;
    case 'E': ok = tool_parse_double(arg, 0.0, 1e6, &opt->ema_sweep_lambda); break;
    case 'H': ok = parse_weights(arg, &opt->ema_weights) == 0; break;
    case 'g': opt->check = 1; break;
    case 'P': ok = TRAIN_DP_AVAILABLE; break;   /* applied first, by main (MPI_Init) */
    case 'n': ok = tool_parse_unsigned(arg, 1, 60000, &n), opt->train_size = (size_t)n; break;
    case 't': ok = tool_parse_unsigned(arg, 1, 10000, &n), opt->test_size = (size_t)n; break;
    case 'b': ok = tool_parse_unsigned(arg, 1, 8192, &n), opt->batch = (size_t)n; break;
    case 'e': ok = tool_parse_unsigned(arg, 1, 1000, &n), opt->epochs = (int)n; break;
    case 'p': ok = tool_parse_unsigned(arg, 1, 100, &n), opt->power_iters = (int)n; break;
    case 's': ok = tool_parse_unsigned(arg, 0, UINT64_MAX, &n), opt->seed = n; break;
    case 'i': ok = tool_parse_unsigned(arg, 1, 100000000, &n), opt->inject_step = (long)n; break;
    case 'r': ok = tool_parse_double(arg, 1e-12, 10.0, &opt->lr); break;
    case 'w': ok = tool_parse_double(arg, 1e-9, 1.0, &opt->bloop_ema); break;
    case 'W': ok = tool_parse_double(arg, 1e-9, 1.0, &opt->base_ema); break;
    case 'a': ok = tool_parse_double(arg, 0.0, 1.0, &opt->min_accuracy); break;
    case 'o':
        ok = strcmp(arg, "fused") == 0 || strcmp(arg, "trainer") == 0;
        opt->own_adam = strcmp(arg, "trainer") == 0;
        break;
    case 'l': ok = parse_grid(arg, &opt->lambdas) == 0; break;
    default: ok = parse_curves(arg, opt) == 0; break;   /* 'm' */
    }
    return ok;
}

static const tool_option TRAIN_OPTIONS[] = {
    {"data", true, 'D'},         {"csv", true, 'c'},          {"quick", false, 'q'},
    {"train-size", true, 'n'},   {"test-size", true, 't'},    {"batch", true, 'b'},
    {"epochs", true, 'e'},       {"power-iters", true, 'p'},  {"seed", true, 's'},
    {"lr", true, 'r'},           {"bloop-ema", true, 'w'},    {"base-ema", true, 'W'},
    {"lambdas", true, 'l'},      {"methods", true, 'm'},      {"min-accuracy", true, 'a'},
    {"check", false, 'g'},       {"inject-nonfinite", true, 'i'},
    {"optimizer", true, 'o'},
    {"data-parallel", false, 'P'},
    {"seeds", true, 'S'},        {"summary", true, 'y'},      {"ema-sweep", true, 'E'},
    {"ema-weights", true, 'H'},  {"matched-grids", false, 'G'},
    {"lambdas-bloop", true, CURVE_GRID_ID + CURVE_BLOOP},
    {"lambdas-bloop-noema", true, CURVE_GRID_ID + CURVE_BLOOP_NOEMA},
    {"lambdas-mixed", true, CURVE_GRID_ID + CURVE_MIXED},
    {"lambdas-pcgrad", true, CURVE_GRID_ID + CURVE_PCGRAD},
    {"lambdas-dynamic_barrier", true, CURVE_GRID_ID + CURVE_DYNAMIC_BARRIER},
};
#define NUM_TRAIN_OPTIONS (sizeof TRAIN_OPTIONS / sizeof TRAIN_OPTIONS[0])

static bool apply_option(int id, const char *value, void *user)
{
    if (parse_one(id, value, user))
        return true;
    if (id == 'P')
        return tool_usage_error(&TRAIN_TOOL, "--data-parallel: this bloopcl-train was built "
                                "without MPI");
    const char *name = "";
    for (size_t k = 0; k < NUM_TRAIN_OPTIONS; ++k)
        if (TRAIN_OPTIONS[k].id == id)
            name = TRAIN_OPTIONS[k].name;
    return tool_usage_error(&TRAIN_TOOL, "invalid value for --%s: \"%s\"", name, value);
}

/* Each curve's final grid: its own, else --lambdas (whatever the order on the command line). */
static void settle_grids(options *opt)
{
    for (int c = 0; c < NUM_CURVES; ++c)
        if (!opt->own_grid[c])
            opt->grid[c] = opt->lambdas;
}

/* The options that bound each other. */
static bool check_options(void *user)
{
    options *opt = user;
    settle_grids(opt);
    if (opt->batch > opt->train_size)
        return tool_usage_error(&TRAIN_TOOL, "--batch %zu exceeds --train-size %zu", opt->batch,
                                opt->train_size);
    if (opt->batch < (size_t)opt->ranks)
        return tool_usage_error(&TRAIN_TOOL, "--batch %zu: each of the %d ranks needs a row",
                                opt->batch, opt->ranks);
    long steps = options_steps(opt);
    if (opt->inject_step > steps)
        return tool_usage_error(&TRAIN_TOOL, "--inject-nonfinite %ld: a run has only %ld steps",
                                opt->inject_step, steps);
    return true;
}

const tool_spec TRAIN_TOOL = {
    .name = PROGRAM,
    .usage = "usage: bloopcl-train [--quick] [--data DIR] [--train-size N] [--test-size N]\n"
             "                     [--epochs N] [--batch B] [--lambdas SPEC] [--methods LIST]\n"
             "                     [--csv PATH] [--json] [--device SPEC] [options below]\n",
    .failure = "the training failed (OpenCL, divergence, accuracy below --min-accuracy, a\n"
               "gradient or skipped-step check)",
    .schema = "bloopcl-train/1",
    .help = help,
    .options = TRAIN_OPTIONS,
    .num_options = NUM_TRAIN_OPTIONS,
    .apply = apply_option,
    .check = check_options,
};
