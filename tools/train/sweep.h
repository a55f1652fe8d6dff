/* sweep.h — the runs of one invocation, in order: every curve over its lambda grid, then
 * Bloop's EMA-weight sweep; each (curve, lambda, EMA weight) once per seed, the seeds
 * innermost. Runs with the same seed start from the same initial weights and see the same
 * batches; seed s + 1 draws both afresh. */
#ifndef BLOOPCL_TRAIN_SWEEP_H
#define BLOOPCL_TRAIN_SWEEP_H

#include "run.h"

/* The (curve, lambda, EMA weight) configurations, and the runs (times the seeds). */
size_t sweep_configs(const options *opt);
size_t sweep_size(const options *opt);

/* Fills res[0 .. sweep_size) (the CSV rows to `csv` if not NULL). 0 or -1. */
int sweep_run(trainer *tr, const options *opt, FILE *csv, run_result *res);

#endif
