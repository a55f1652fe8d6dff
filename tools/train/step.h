/* step.h — one optimizer step of the trainer:
 *
 *     gather batch -> forward -> cross-entropy -> backward (g) -> aux gradient (a)
 *     -> bloopcl: d = combine(g, a) in place over g -> Adam on d unless bloopcl skipped
 *
 * Data-parallel: this rank's rows of the batch only, each weighted 1/B of the global batch;
 * g summed over the ranks before the step, which runs on the own slices; the parameters
 * gathered after Adam. */
#ifndef BLOOPCL_TRAIN_STEP_H
#define BLOOPCL_TRAIN_STEP_H

#include "trainer.h"

/* Step t (1-based, counted over the run) on the batch at position `first` of the epoch's
 * order. 0 or -1 after a message. */
int train_step(trainer *tr, bloopcl_combiner *comb, const options *opt, size_t first, long t);

#endif
