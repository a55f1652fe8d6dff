/* run.h — one training run: one method at one lambda and EMA weight, from the initial state,
 * epochs of shuffled mini-batches, the losses evaluated after each epoch. */
#ifndef BLOOPCL_TRAIN_RUN_H
#define BLOOPCL_TRAIN_RUN_H

#include "trainer.h"

#include <stdio.h>

typedef struct run_result {
    bloopcl_method method;
    double lambda, ema_weight;
    double train_loss, test_loss, test_accuracy, aux_loss, seconds;  /* after the last epoch */
    int diverged;
} run_result;

/* Runs res->method at res->lambda and res->ema_weight (bloopcl's defaults otherwise); fills
 * the rest of *res, writes one CSV row per epoch to `csv` (if not NULL). `perm` has room for
 * the batch order (train_count ints). 0, or -1 after a message. */
int run_config(trainer *tr, const options *opt, FILE *csv, int *perm, run_result *res);

#endif
