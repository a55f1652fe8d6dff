/* report.c — see report.h. */
#include "report.h"
#include "ablation.h"
#include "fronts.h"
#include "summary.h"
#include "tool_json.h"

#include <stdio.h>
#include <stdlib.h>

FILE *report_open_csv(const char *path)
{
    if (path == NULL)
        return NULL;
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        perror(path);
        return NULL;
    }
    fprintf(f, "method,lambda,ema_weight,epoch,train_loss,test_loss,test_accuracy,aux_loss,"
               "wall_seconds,seed\n");
    return f;
}

static void print_rows(const run_result *res, size_t n)
{
    printf("%-16s %10s %6s %11s %11s %9s %11s %8s\n", "method", "lambda", "w", "train_loss",
           "test_loss", "test_acc", "aux_loss", "seconds");
    for (size_t i = 0; i < n; ++i)
        printf("%-16s %10.4g %6g %11.5f %11.5f %9.4f %11.5f %8.1f\n",
               res[i].label, res[i].lambda, res[i].ema_weight,
               res[i].train_loss, res[i].test_loss, res[i].test_accuracy, res[i].aux_loss,
               res[i].seconds);
}

/* One seed: a row per run and one gap line per curve. Several: mean +- sd per
 * configuration and the paired gaps per lambda. Curves in the order of curve_id. */
static void print_results(const options *opt, const run_result *res, size_t n,
                          const summary_row *rows)
{
    if (opt->seeds == 1)
        print_rows(res, n);
    else
        summary_print(rows, n / (size_t)opt->seeds);
    for (int c = CURVE_BLOOP + 1; c < NUM_CURVES; ++c) {
        if (opt->seeds == 1)
            fronts_print_gap(res, n, curve_name((curve_id)c));
        else
            fronts_print_paired(res, n, opt->seeds, curve_name((curve_id)c));
    }
    ablation_print(res, n, opt->seeds);
}

static void print_table(const options *opt, const run_result *res, size_t n,
                        const summary_row *rows, double seconds)
{
    printf("\nFashion-MNIST MLP 784-256-128-10: %zu train / %zu test images, %d epoch(s), "
           "batch %zu, Adam lr %g %s (%.1f s)", opt->train_size, opt->test_size, opt->epochs,
           opt->batch, opt->lr,
           opt->own_adam ? "(the trainer's Adam kernel)" : "(fused in bloopcl's step)", seconds);
    if (opt->data_parallel)
        printf(", data-parallel over %d rank%s", opt->ranks, opt->ranks == 1 ? "" : "s");
    if (opt->seeds > 1)
        printf(", seeds %llu..%llu", (unsigned long long)opt->seed,
               (unsigned long long)(opt->seed + (uint64_t)opt->seeds - 1));
    printf("\n");
    print_results(opt, res, n, rows);
}

static void json_settings(tool_json *json, const options *opt)
{
    tool_json_object_begin(json, "settings");
    tool_json_unsigned(json, "train_size", opt->train_size);
    tool_json_unsigned(json, "test_size", opt->test_size);
    tool_json_integer(json, "epochs", opt->epochs);
    tool_json_unsigned(json, "batch", opt->batch);
    tool_json_number(json, "lr", opt->lr);
    tool_json_string(json, "optimizer", opt->own_adam ? "trainer" : "fused");
    tool_json_unsigned(json, "seed", opt->seed);
    tool_json_integer(json, "seeds", opt->seeds);
    if (opt->data_parallel)
        tool_json_integer(json, "ranks", opt->ranks);
    tool_json_object_end(json);
}

static void json_result(tool_json *json, const run_result *r)
{
    tool_json_object_begin(json, NULL);
    tool_json_string(json, "method", r->label);
    tool_json_number(json, "lambda", r->lambda);
    tool_json_number(json, "ema_weight", r->ema_weight);
    tool_json_unsigned(json, "seed", r->seed);
    tool_json_number(json, "train_loss", r->train_loss);
    tool_json_number(json, "test_loss", r->test_loss);
    tool_json_number(json, "test_accuracy", r->test_accuracy);
    tool_json_number(json, "aux_loss", r->aux_loss);
    tool_json_number(json, "seconds", r->seconds);
    tool_json_bool(json, "diverged", r->diverged != 0);
    tool_json_object_end(json);
}

/* The JSON document (schema "bloopcl-train/1"). */
static void print_json(const options *opt, const bloopcl_device_info *info,
                       const run_result *res, size_t n, double seconds, bool passed)
{
    tool_json json;
    tool_json_init(&json, stdout);
    tool_json_document_begin(&json, &TRAIN_TOOL);
    tool_json_device(&json, "device", info);
    json_settings(&json, opt);
    tool_json_array_begin(&json, "results");
    for (size_t i = 0; i < n; ++i)
        json_result(&json, &res[i]);
    tool_json_array_end(&json);
    tool_json_number(&json, "seconds", seconds);
    tool_json_bool(&json, "passed", passed);
    tool_json_document_end(&json);
}

/* Fails on divergence, or when a method's smallest-lambda run misses --min-accuracy; says so
 * on stderr when `say`. */
static int check_results(const run_result *res, size_t n, const options *opt, bool say)
{
    int failures = 0;
    for (size_t i = 0; i < n; ++i) {
        const char *name = res[i].label;
        if (res[i].diverged) {
            if (say)
                fprintf(stderr, "%s: FAIL: %s lambda %g diverged (non-finite loss)\n", PROGRAM,
                        name, res[i].lambda);
            ++failures;
        } else if (res[i].accuracy_floor && res[i].test_accuracy < opt->min_accuracy) {
            if (say)
                fprintf(stderr, "%s: FAIL: %s lambda %g test accuracy %.4f < %.4f\n", PROGRAM,
                        name, res[i].lambda, res[i].test_accuracy, opt->min_accuracy);
            ++failures;
        }
    }
    return failures ? -1 : 0;
}

int report_write(bloopcl_context *ctx, const options *opt, const run_result *res, size_t n,
                 double seconds, bool writer)
{
    int rc = check_results(res, n, opt, writer);
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    if (!writer)
        return rc;
    summary_row *rows = malloc((n / (size_t)opt->seeds) * sizeof *rows);
    if (rows == NULL) {
        fprintf(stderr, "%s: out of memory\n", PROGRAM);
        return -1;
    }
    size_t count = summary_build(res, n, opt->seeds, rows);
    if (opt->summary_path && summary_write_csv(opt->summary_path, rows, count) != 0)
        rc = -1;
    if (!opt->common.json)
        print_table(opt, res, n, rows, seconds);
    else if (bloopcl_context_device_info(ctx, &info) == BLOOPCL_OK)
        print_json(opt, &info, res, n, seconds, rc == 0);
    free(rows);
    return rc;
}
