/* run.h — one training run: one method at one lambda and EMA weight, from the initial state,
 * epochs of shuffled mini-batches, the losses evaluated after each epoch. */
#ifndef BLOOPCL_TRAIN_RUN_H
#define BLOOPCL_TRAIN_RUN_H

#include "trainer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct run_result {
    const char *label;          /* the curve's name (options.h) or EMA_SWEEP_LABEL */
    bloopcl_method method;
    double lambda, ema_weight;
    uint64_t seed;              /* initial weights and batch order */
    bool accuracy_floor;        /* held to --min-accuracy (its curve's smallest lambda) */
    double train_loss, test_loss, test_accuracy, aux_loss, seconds;  /* after the last epoch */
    int diverged;
} run_result;

/* The double field at `offset` (offsetof(run_result, train_loss), ...) of a result. */
static inline double run_field(const run_result *r, size_t offset)
{
    return *(const double *)((const char *)r + offset);
}

/* Runs res->method at res->lambda and res->ema_weight (bloopcl's defaults otherwise) from
 * the initial weights and with the batch order of res->seed; fills the rest of *res, writes
 * one CSV row per epoch to `csv` (if not NULL). `perm` has room for the batch order
 * (train_count ints). 0, or -1 after a message. */
int run_config(trainer *tr, const options *opt, FILE *csv, int *perm, run_result *res);

#endif
