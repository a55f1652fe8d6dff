/* run.c — see run.h. */
#include "run.h"
#include "aux_loss.h"
#include "model.h"
#include "optimizer.h"
#include "rng.h"
#include "skip_check.h"
#include "step.h"
#include "tool_time.h"

#include <math.h>

/* Extra power iterations before the reported aux loss: sigma_l to a few digits. */
#define AUX_EVAL_ITERATIONS 10

/* The epoch's batch order: a permutation from the seed and the epoch. */
static int shuffle_epoch(trainer *tr, uint64_t seed, int epoch, int *perm)
{
    rng_permutation(seed * 1000003ull + (uint64_t)epoch, perm, tr->train_count);
    return write_buffer(tr, tr->perm, perm, tr->train_count * sizeof(int));
}

/* Losses after an epoch; writes the CSV row and a progress line. */
static int end_epoch(trainer *tr, const options *opt, FILE *csv, int epoch, run_result *res)
{
    eval_result train, test;
    if (model_evaluate(tr, tr->train_x, tr->train_y, tr->train_count, &train) != 0 ||
        model_evaluate(tr, tr->test_x, tr->test_y, tr->test_count, &test) != 0 ||
        aux_loss(tr, AUX_EVAL_ITERATIONS, &res->aux_loss) != 0)
        return -1;
    res->train_loss = train.loss;
    res->test_loss = test.loss;
    res->test_accuracy = test.accuracy;
    res->diverged = !isfinite(train.loss) || !isfinite(test.loss) || !isfinite(res->aux_loss);
    const char *name = res->label;
    if (train_dp_rank(tr->dp) == 0)  /* every rank holds the same model and losses */
        fprintf(stderr, "%s: %-16s lambda %-8.3g epoch %d/%d  train %.4f  test %.4f  acc %.4f  "
                "aux %.4f  (%.1f s)\n", PROGRAM, name, res->lambda, epoch, opt->epochs,
                train.loss, test.loss, test.accuracy, res->aux_loss, res->seconds);
    if (csv)
        fprintf(csv, "%s,%.9g,%.9g,%d,%.9g,%.9g,%.9g,%.9g,%.3f,%llu\n", name, res->lambda,
                res->ema_weight, epoch, train.loss, test.loss, test.accuracy, res->aux_loss,
                res->seconds, (unsigned long long)res->seed);
    return 0;
}

/* One epoch's steps; *t counts the run's steps. */
static int run_epoch(trainer *tr, bloopcl_combiner *comb, const options *opt, long *t)
{
    size_t steps = tr->train_count / opt->batch; /* the last partial batch is dropped */
    for (size_t s = 0; s < steps; ++s) {
        ++*t;
        int rc = *t == opt->inject_step ? skip_check_step(tr, comb, opt, s * opt->batch, *t)
                                        : train_step(tr, comb, opt, s * opt->batch, *t);
        if (rc != 0)
            return -1;
    }
    return cl_check(clFinish(tr->queue), "clFinish");
}

static int run_epochs(trainer *tr, bloopcl_combiner *comb, const options *opt, FILE *csv,
                      int *perm, run_result *res)
{
    double start = tool_seconds();
    long t = 0;
    if (trainer_reset(tr, res->seed) != 0)
        return -1;
    for (int epoch = 1; epoch <= opt->epochs && !res->diverged; ++epoch) {
        if (shuffle_epoch(tr, res->seed, epoch, perm) != 0 || run_epoch(tr, comb, opt, &t) != 0)
            return -1;
        res->seconds = tool_seconds() - start;
        if (end_epoch(tr, opt, csv, epoch, res) != 0)
            return -1;
    }
    return opt->inject_step && !res->diverged ? skip_check_steps_applied(tr, opt, comb, t) : 0;
}

int run_config(trainer *tr, const options *opt, FILE *csv, int *perm, run_result *res)
{
    bloopcl_config config;
    bloopcl_config_default(&config, res->method);
    config.ema_weight = res->ema_weight;
    config.lambda = res->lambda;
    bloopcl_combiner *comb = NULL;
    size_t n = 0;  /* the own slices: every parameter unless data-parallel (a shard then) */
    for (int k = 0; k < NUM_TENSORS; ++k)
        n += tr->own_count[k];
    bloopcl_status st = bloopcl_combiner_create(tr->ctx, &config, n, &comb);
    if (st == BLOOPCL_OK)
        st = optimizer_attach(opt, comb);  /* fused Adam (the default) */
    if (st != BLOOPCL_OK) {
        fprintf(stderr, "%s: bloopcl_combiner_create: %s: %s\n", PROGRAM,
                bloopcl_status_string(st), bloopcl_context_last_error(tr->ctx));
        bloopcl_combiner_destroy(comb);
        return -1;
    }
    int rc = run_epochs(tr, comb, opt, csv, perm, res);
    bloopcl_combiner_destroy(comb);
    return rc;
}
