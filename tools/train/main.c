/*
 * bloopcl-train — trains an MLP on Fashion-MNIST with bloopcl combining two losses on the device.
 *
 * The C counterpart of the MLP example of Hsieh et al. (ICML 2024):
 *
 *     model      784 -> 256 -> 128 -> 10, ReLU (model.h)
 *     main loss  L = mean cross-entropy of softmax(logits)
 *     aux loss   A = log prod_l ||W_l||_2^2, by power iteration (aux_loss.h)
 *     update     d = bloopcl(g = dL/dtheta, a = dA/dtheta) in place over g, one segment per
 *                tensor (a = 0 on the biases), then Adam on d (step.h, optimizer.h)
 *
 * Everything runs on the bloopcl context's device and queue: CLBlast GEMMs for the layers and
 * the kernels of tools/train/ *.cl for the rest; both gradients stay in cl_mem.
 * The sweep (sweep.h) covers methods x lambdas; progress goes to stderr, a final table to
 * stdout (report.h), rows to --csv.
 * Under an MPI launcher (or --data-parallel) it runs data-parallel with sharded optimizer
 * state (data_parallel.h).
 */
#include "bloopcl.h"
#include "data.h"
#include "data_parallel.h"
#include "gradcheck.h"
#include "options.h"
#include "report.h"
#include "sweep.h"
#include "tool_cli.h"
#include "tool_device.h"
#include "tool_time.h"
#include "trainer.h"

#include <stdio.h>
#include <stdlib.h>

/* The whole sweep on the context's device; returns the exit status. Data-parallel: every rank
 * runs it, rank 0 writes the outputs, and a rank that fails ends the job. */
static int run_all(bloopcl_context *ctx, train_dp *dp, const options *opt, const dataset *train,
                   const dataset *test)
{
    trainer tr;
    size_t n = sweep_size(opt);
    run_result *res = calloc(n, sizeof *res);
    bool writer = train_dp_rank(dp) == 0;
    FILE *csv = writer ? report_open_csv(opt->csv_path) : NULL;
    double start = tool_seconds();
    if (res == NULL)
        fprintf(stderr, "%s: out of memory\n", PROGRAM);
    int rc = (res && (csv || !opt->csv_path || !writer))
                 ? trainer_init(&tr, ctx, dp, opt, train, test) : -2;
    if (rc == 0 && opt->check)
        rc = gradcheck_run(&tr, train, opt->seed);
    if (rc == 0)
        rc = sweep_run(&tr, opt, csv, res);
    if (rc != 0)
        train_dp_abort(dp, TOOL_EXIT_FAILED);
    if (rc == 0)
        rc = report_write(ctx, opt, res, n, tool_seconds() - start, writer);
    if (rc != -2)
        trainer_destroy(&tr);
    if (csv && fclose(csv) != 0) {
        perror(opt->csv_path);
        rc = -1;
    }
    free(res);
    return rc == 0 ? TOOL_EXIT_OK : TOOL_EXIT_FAILED;
}

/* "bloopcl 0.4.0 on PLATFORM / DEVICE" on stderr; each rank names its own. */
static void say_device(bloopcl_context *ctx, const train_dp *dp)
{
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    if (bloopcl_context_device_info(ctx, &info) == BLOOPCL_OK && dp == NULL)
        fprintf(stderr, "%s: bloopcl %s on %s / %s\n", PROGRAM, bloopcl_version_string(),
                info.platform_name, info.device_name);
    else if (dp != NULL && info.device != NULL)
        fprintf(stderr, "%s: rank %d of %d: bloopcl %s on %s / %s\n", PROGRAM,
                train_dp_rank(dp), train_dp_ranks(dp), bloopcl_version_string(),
                info.platform_name, info.device_name);
}

static int train_main(int argc, char **argv, train_dp *dp)
{
    options opt;
    options_defaults(argc, argv, &opt);
    opt.data_parallel = dp != NULL;
    opt.ranks = train_dp_ranks(dp);
    bloopcl_context *ctx = NULL;
    int rc = tool_setup(&TRAIN_TOOL, argc, argv, &opt.common, &opt, &ctx);
    if (rc != TOOL_CONTINUE)
        return rc;
    say_device(ctx, dp);
    dataset train = {0}, test = {0};
    if (!data_load(opt.data_dir, opt.train_size, opt.test_size, &train, &test)) {
        bloopcl_context_destroy(ctx);
        return TOOL_EXIT_USAGE;   /* the data are part of the environment */
    }
    rc = run_all(ctx, dp, &opt, &train, &test);
    /* CLBlast's program cache holds references to our cl_context: drop them first. */
    CLBlastClearCache();
    bloopcl_context_destroy(ctx);
    data_free(&train);
    data_free(&test);
    return rc;
}

/* MPI only when asked (an MPI launcher or --data-parallel): a plain run never initialises it. */
int main(int argc, char **argv)
{
    train_dp *dp = NULL;
    if (train_dp_requested(argc, argv) && (dp = train_dp_start(&argc, &argv)) == NULL)
        return TOOL_EXIT_USAGE;
    int rc = train_main(argc, argv, dp);
    train_dp_finish(dp);
    return rc;
}
