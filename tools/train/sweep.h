/* sweep.h — every (method, lambda) of the options, one run each, in that order; each run
 * starts from the same initial weights and sees the same batches. */
#ifndef BLOOPCL_TRAIN_SWEEP_H
#define BLOOPCL_TRAIN_SWEEP_H

#include "run.h"

/* Runs in the sweep's order. */
size_t sweep_size(const options *opt);

/* Fills res[0 .. sweep_size) (the CSV rows to `csv` if not NULL). 0 or -1. */
int sweep_run(trainer *tr, const options *opt, FILE *csv, run_result *res);

#endif
