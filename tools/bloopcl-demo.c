/*
 * bloopcl-demo — a small trainer that links bloopcl the way a user would.
 *
 * The problem is the quadratic one of apple/ml-bloop's notebook: an over-parameterised least
 * squares main loss, whose minimisers form a whole affine space, and an auxiliary loss that
 * prefers one point of that space:
 *
 *     L_main(theta) = 1/(2B) |X_B theta - y_B|^2    (mini-batches B of a p < n system)
 *     L_aux(theta)  = 1/2 |theta - theta_star|^2
 *
 * Each step computes both gradients on the host, hands them to bloopcl (on the device chosen
 * by --device or BLOOPCL_DEVICE), and moves theta along -lr * d. Bloop projects the auxiliary gradient off
 * an EMA of the main gradient, so it can follow the auxiliary loss without undoing progress on
 * the main loss; Mixed simply adds the two. The program prints the final losses per method.
 */
#include "bloopcl.h"
#include "tool_cli.h"
#include "tool_device.h"
#include "tool_json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROBLEM_ROWS 200
#define PROBLEM_PARAMS 400

typedef struct problem {
    size_t rows, params;
    float *x;          /* rows x params, row-major */
    float *y;          /* rows */
    float *theta_star; /* params: the auxiliary loss's favourite point */
} problem;

typedef struct options {
    tool_common common;   /* --device, --json, --list, --verbose, BLOOPCL_LOG */
    int steps;
    size_t batch;
    float lr;
    double lambda;
} options;

static void normal(uint64_t seed, size_t n, float *out, float scale)
{
    bloopcl_reference_normal(seed, 0, n, out);
    for (size_t i = 0; i < n; ++i)
        out[i] *= scale;
}

/* X ~ N(0,1)/sqrt(p), y = X theta_true + noise, theta_star ~ 10 N(0,1). */
static int make_problem(problem *pb, size_t rows, size_t params)
{
    pb->rows = rows;
    pb->params = params;
    pb->x = malloc(rows * params * sizeof(float));
    pb->y = malloc(rows * sizeof(float));
    pb->theta_star = malloc(params * sizeof(float));
    float *theta_true = malloc(params * sizeof(float));
    float *noise = malloc(rows * sizeof(float));
    if (!pb->x || !pb->y || !pb->theta_star || !theta_true || !noise) {
        free(theta_true);
        free(noise);
        return -1;
    }
    normal(1, rows * params, pb->x, 1.0f / sqrtf((float)params));
    normal(2, params, theta_true, 1.0f);
    normal(3, rows, noise, 0.05f);
    normal(4, params, pb->theta_star, 10.0f);
    for (size_t r = 0; r < rows; ++r) {
        double dot = 0.0;
        for (size_t j = 0; j < params; ++j)
            dot += (double)pb->x[r * params + j] * theta_true[j];
        pb->y[r] = (float)dot + noise[r];
    }
    free(theta_true);
    free(noise);
    return 0;
}

static void free_problem(problem *pb)
{
    free(pb->x);
    free(pb->y);
    free(pb->theta_star);
}

/* Residual of row r: x_r . theta - y_r. */
static double residual(const problem *pb, size_t r, const float *theta)
{
    double dot = 0.0;
    for (size_t j = 0; j < pb->params; ++j)
        dot += (double)pb->x[r * pb->params + j] * theta[j];
    return dot - pb->y[r];
}

static double main_loss(const problem *pb, const float *theta)
{
    double sum = 0.0;
    for (size_t r = 0; r < pb->rows; ++r) {
        double e = residual(pb, r, theta);
        sum += e * e;
    }
    return 0.5 * sum / (double)pb->rows;
}

static double aux_loss(const problem *pb, const float *theta)
{
    double sum = 0.0;
    for (size_t j = 0; j < pb->params; ++j) {
        double e = (double)theta[j] - pb->theta_star[j];
        sum += e * e;
    }
    return 0.5 * sum;
}

/* g = 1/B sum_{r in batch} (x_r . theta - y_r) x_r over rows first .. first+B (cyclic). */
static void main_gradient(const problem *pb, const float *theta, size_t first, size_t batch,
                          float *g)
{
    memset(g, 0, pb->params * sizeof *g);
    for (size_t k = 0; k < batch; ++k) {
        size_t r = (first + k) % pb->rows;
        float e = (float)(residual(pb, r, theta) / (double)batch);
        for (size_t j = 0; j < pb->params; ++j)
            g[j] += e * pb->x[r * pb->params + j];
    }
}

static void aux_gradient(const problem *pb, const float *theta, float *a)
{
    for (size_t j = 0; j < pb->params; ++j)
        a[j] = theta[j] - pb->theta_star[j];
}

typedef struct run_result {
    double main_loss, aux_loss, last_cosine;
} run_result;

static int train(bloopcl_context *ctx, const problem *pb, const bloopcl_config *config,
                 const options *opt, run_result *out)
{
    size_t p = pb->params;
    float *theta = calloc(p, sizeof *theta), *g = malloc(p * sizeof *g);
    float *a = malloc(p * sizeof *a), *d = malloc(p * sizeof *d);
    bloopcl_combiner *comb = NULL;
    bloopcl_status status = (theta && g && a && d) ? bloopcl_combiner_create(ctx, config, p, &comb)
                                                   : BLOOPCL_ERR_OUT_OF_MEMORY;
    for (int t = 0; t < opt->steps && status == BLOOPCL_OK; ++t) {
        main_gradient(pb, theta, (size_t)t * opt->batch, opt->batch, g);
        aux_gradient(pb, theta, a);
        status = bloopcl_step_host(comb, g, a, d);
        for (size_t j = 0; j < p && status == BLOOPCL_OK; ++j)
            theta[j] -= opt->lr * d[j];
    }
    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
    if (status == BLOOPCL_OK)
        status = bloopcl_get_diagnostics(comb, &diag);
    if (status != BLOOPCL_OK)
        fprintf(stderr, "bloopcl-demo: %s: %s\n", bloopcl_status_string(status),
                bloopcl_context_last_error(ctx));
    out->main_loss = main_loss(pb, theta);
    out->aux_loss = aux_loss(pb, theta);
    out->last_cosine = diag.cosine;
    bloopcl_combiner_destroy(comb);
    free(theta), free(g), free(a), free(d);
    return status == BLOOPCL_OK ? 0 : -1;
}

static void help(FILE *to)
{
    fputs("Trains an over-parameterised least-squares model (main loss) with a pull towards\n"
          "a target point (auxiliary loss) using each bloopcl method, and prints the final\n"
          "main and auxiliary losses.\n"
          "\n"
          "Options:\n"
          "  --steps N        steps per method (default 4000)\n"
          "  --lambda L       weight of the auxiliary loss, >= 0 (default 0.1)\n"
          "  --lr LR          learning rate, > 0 (default 0.1)\n"
          "  --batch B        rows per mini-batch, 1..200 (default 16)\n"
          "  --json           stdout is one JSON document: device, problem, results[]\n"
          "                   (method, ema_weight, main_loss, aux_loss, cosine, passed)\n",
          to);
}

enum { OPT_STEPS, OPT_LAMBDA, OPT_LR, OPT_BATCH };

static const tool_option DEMO_OPTIONS[] = {
    {"steps", true, OPT_STEPS},
    {"lambda", true, OPT_LAMBDA},
    {"lr", true, OPT_LR},
    {"batch", true, OPT_BATCH},
};

static const tool_spec DEMO_TOOL;

static bool apply_option(int id, const char *value, void *user)
{
    options *opt = user;
    unsigned long long number = 0;
    double real = 0.0;
    switch (id) {
    case OPT_STEPS:
        if (!tool_parse_unsigned(value, 1, 100000000, &number))
            return tool_usage_error(&DEMO_TOOL, "--steps takes 1..100000000, not \"%s\"", value);
        opt->steps = (int)number;
        return true;
    case OPT_BATCH:
        if (!tool_parse_unsigned(value, 1, PROBLEM_ROWS, &number))
            return tool_usage_error(&DEMO_TOOL, "--batch takes 1..%d, not \"%s\"", PROBLEM_ROWS,
                                    value);
        opt->batch = (size_t)number;
        return true;
    case OPT_LAMBDA:
        if (!tool_parse_double(value, 0.0, 1e6, &real))
            return tool_usage_error(&DEMO_TOOL, "--lambda takes a number in [0, 1e6], not \"%s\"",
                                    value);
        opt->lambda = real;
        return true;
    default:   /* OPT_LR */
        if (!tool_parse_double(value, 1e-12, 1e3, &real))
            return tool_usage_error(&DEMO_TOOL, "--lr takes a number in [1e-12, 1e3], not \"%s\"",
                                    value);
        opt->lr = (float)real;
        return true;
    }
}

static const tool_spec DEMO_TOOL = {
    .name = "bloopcl-demo",
    .usage = "usage: bloopcl-demo [--steps N] [--lambda L] [--lr LR] [--batch B] [--json]\n"
             "                    [--device SPEC]\n",
    .failure = "a method's run failed (a bloopcl call returned an error)",
    .schema = "bloopcl-demo/1",
    .help = help,
    .options = DEMO_OPTIONS,
    .num_options = sizeof DEMO_OPTIONS / sizeof DEMO_OPTIONS[0],
    .apply = apply_option,
};

/* Bloop with the EMA weight of the paper's examples, the baselines without EMA. */
static const struct {
    bloopcl_method method;
    double w;
} RUNS[] = {{BLOOPCL_METHOD_MIXED, 1.0}, {BLOOPCL_METHOD_DYNAMIC_BARRIER, 1.0},
            {BLOOPCL_METHOD_PCGRAD, 1.0}, {BLOOPCL_METHOD_BLOOP, 1.0}, {BLOOPCL_METHOD_BLOOP, 0.01}};
#define NUM_RUNS (sizeof RUNS / sizeof RUNS[0])

typedef struct run_outcome {
    run_result result;
    bool ok;
} run_outcome;

static void print_table(const options *opt, const bloopcl_device_info *info,
                        const run_outcome *outcomes)
{
    printf("bloopcl %s on device %u: %s / %s (%s)\n", bloopcl_version_string(), info->flat_index,
           info->platform_name, info->device_name, info->driver_version);
    printf("least squares %d x %d (main) + pull to a target (aux), lambda %g, %d steps\n",
           PROBLEM_ROWS, PROBLEM_PARAMS, opt->lambda, opt->steps);
    printf("%-16s %6s %14s %14s %10s\n", "method", "w", "main loss", "aux loss", "cos(m,a)");
    for (size_t k = 0; k < NUM_RUNS; ++k)
        if (outcomes[k].ok)
            printf("%-16s %6g %14.6g %14.6g %10.4f\n", bloopcl_method_name(RUNS[k].method),
                   RUNS[k].w, outcomes[k].result.main_loss, outcomes[k].result.aux_loss,
                   outcomes[k].result.last_cosine);
        else
            printf("%-16s %6g %14s %14s %10s\n", bloopcl_method_name(RUNS[k].method), RUNS[k].w,
                   "failed", "", "");
}

static void print_json(const options *opt, const bloopcl_device_info *info,
                       const run_outcome *outcomes)
{
    tool_json json;
    tool_json_init(&json, stdout);
    tool_json_document_begin(&json, &DEMO_TOOL);
    tool_json_device(&json, "device", info);
    tool_json_object_begin(&json, "problem");
    tool_json_integer(&json, "rows", PROBLEM_ROWS);
    tool_json_integer(&json, "params", PROBLEM_PARAMS);
    tool_json_number(&json, "lambda", opt->lambda);
    tool_json_number(&json, "lr", opt->lr);
    tool_json_integer(&json, "steps", opt->steps);
    tool_json_unsigned(&json, "batch", opt->batch);
    tool_json_object_end(&json);
    tool_json_array_begin(&json, "results");
    for (size_t k = 0; k < NUM_RUNS; ++k) {
        tool_json_object_begin(&json, NULL);
        tool_json_string(&json, "method", bloopcl_method_name(RUNS[k].method));
        tool_json_number(&json, "ema_weight", RUNS[k].w);
        tool_json_bool(&json, "passed", outcomes[k].ok);
        tool_json_number(&json, "main_loss", outcomes[k].ok ? outcomes[k].result.main_loss : NAN);
        tool_json_number(&json, "aux_loss", outcomes[k].ok ? outcomes[k].result.aux_loss : NAN);
        tool_json_number(&json, "cosine", outcomes[k].ok ? outcomes[k].result.last_cosine : NAN);
        tool_json_object_end(&json);
    }
    tool_json_document_end(&json);
}

/* Every run of RUNS on the problem; returns the exit status. */
static int run_all(bloopcl_context *ctx, const problem *pb, const options *opt)
{
    run_outcome outcomes[NUM_RUNS];
    int failures = 0;
    for (size_t k = 0; k < NUM_RUNS; ++k) {
        bloopcl_config config;
        bloopcl_config_default(&config, RUNS[k].method);
        config.ema_weight = RUNS[k].w;
        config.lambda = opt->lambda;
        outcomes[k].ok = train(ctx, pb, &config, opt, &outcomes[k].result) == 0;
        failures += !outcomes[k].ok;
    }
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    bloopcl_context_device_info(ctx, &info);
    if (opt->common.json)
        print_json(opt, &info, outcomes);
    else
        print_table(opt, &info, outcomes);
    return failures ? TOOL_EXIT_FAILED : TOOL_EXIT_OK;
}

int main(int argc, char **argv)
{
    options opt = {.steps = 4000, .batch = 16, .lr = 0.1f, .lambda = 0.1};
    bloopcl_context *ctx = NULL;
    int status = tool_setup(&DEMO_TOOL, argc, argv, &opt.common, &opt, &ctx);
    if (status != TOOL_CONTINUE)
        return status;
    problem pb;
    if (make_problem(&pb, PROBLEM_ROWS, PROBLEM_PARAMS) != 0) {
        fprintf(stderr, "%s: out of memory\n", DEMO_TOOL.name);
        free_problem(&pb);
        bloopcl_context_destroy(ctx);
        return TOOL_EXIT_FAILED;
    }
    status = run_all(ctx, &pb, &opt);
    free_problem(&pb);
    bloopcl_context_destroy(ctx);
    return status;
}
