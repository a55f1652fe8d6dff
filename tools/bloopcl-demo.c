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
 * by BLOOPCL_DEVICE), and moves theta along -lr * d. Bloop projects the auxiliary gradient off
 * an EMA of the main gradient, so it can follow the auxiliary loss without undoing progress on
 * the main loss; Mixed simply adds the two. The program prints the final losses per method.
 */
#include "bloopcl.h"
#include "tool_context.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct problem {
    size_t rows, params;
    float *x;          /* rows x params, row-major */
    float *y;          /* rows */
    float *theta_star; /* params: the auxiliary loss's favourite point */
} problem;

typedef struct options {
    int steps;
    size_t batch;
    float lr;
    double lambda;
    const char *device;
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

static void usage(FILE *to)
{
    fprintf(to,
            "usage: bloopcl-demo [--steps N] [--lambda L] [--lr LR] [--batch B] [--device SPEC]\n"
            "\n"
            "Trains an over-parameterised least-squares model (main loss) with a pull towards\n"
            "a target point (auxiliary loss) using each bloopcl method, and prints the final\n"
            "main and auxiliary losses. The device is BLOOPCL_DEVICE's unless --device is given.\n"
            "Defaults: --steps 4000 --lambda 0.1 --lr 0.1 --batch 16.\n");
}

static int parse_options(int argc, char **argv, options *opt)
{
    static const struct option long_options[] = {
        {"steps", required_argument, NULL, 's'}, {"lambda", required_argument, NULL, 'l'},
        {"lr", required_argument, NULL, 'r'},    {"batch", required_argument, NULL, 'b'},
        {"device", required_argument, NULL, 'd'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    *opt = (options){.steps = 4000, .batch = 16, .lr = 0.1f, .lambda = 0.1, .device = NULL};
    int c;
    while ((c = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
        switch (c) {
        case 's': opt->steps = atoi(optarg); break;
        case 'l': opt->lambda = atof(optarg); break;
        case 'r': opt->lr = (float)atof(optarg); break;
        case 'b': opt->batch = (size_t)atol(optarg); break;
        case 'd': opt->device = optarg; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
    }
    if (optind != argc || opt->steps <= 0 || opt->batch == 0 || !(opt->lr > 0.0f)) {
        usage(stderr);
        return -1;
    }
    return 0;
}

static bloopcl_context *open_context(const options *opt)
{
    bloopcl_context *ctx = tool_open_context("bloopcl-demo", opt->device);
    if (ctx == NULL)
        return NULL;
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    bloopcl_context_device_info(ctx, &info);
    printf("bloopcl %s on device %u: %s / %s (%s)\n", bloopcl_version_string(), info.flat_index,
           info.platform_name, info.device_name, info.driver_version);
    return ctx;
}

int main(int argc, char **argv)
{
    options opt;
    if (parse_options(argc, argv, &opt) != 0)
        return 2;
    bloopcl_context *ctx = open_context(&opt);
    if (ctx == NULL)
        return 1;
    problem pb;
    if (make_problem(&pb, 200, 400) != 0) {
        fprintf(stderr, "bloopcl-demo: out of memory\n");
        return 1;
    }
    /* Bloop with the EMA weight of the paper's examples, the baselines without EMA. */
    const struct { bloopcl_method method; double w; } runs[] = {
        {BLOOPCL_METHOD_MIXED, 1.0}, {BLOOPCL_METHOD_DYNAMIC_BARRIER, 1.0},
        {BLOOPCL_METHOD_PCGRAD, 1.0}, {BLOOPCL_METHOD_BLOOP, 1.0}, {BLOOPCL_METHOD_BLOOP, 0.01}};
    printf("least squares 200 x 400 (main) + pull to a target (aux), lambda %g, %d steps\n",
           opt.lambda, opt.steps);
    printf("%-16s %6s %14s %14s %10s\n", "method", "w", "main loss", "aux loss", "cos(m,a)");
    int failures = 0;
    for (size_t k = 0; k < sizeof runs / sizeof runs[0]; ++k) {
        bloopcl_config config;
        bloopcl_config_default(&config, runs[k].method);
        config.ema_weight = runs[k].w;
        config.lambda = opt.lambda;
        run_result result;
        if (train(ctx, &pb, &config, &opt, &result) != 0) {
            ++failures;
            continue;
        }
        printf("%-16s %6g %14.6g %14.6g %10.4f\n", bloopcl_method_name(runs[k].method),
               runs[k].w, result.main_loss, result.aux_loss, result.last_cosine);
    }
    free_problem(&pb);
    bloopcl_context_destroy(ctx);
    return failures ? 1 : 0;
}
