/* skip_check.h — the skipped-step check (--inject-nonfinite): a NaN in g at one step must make
 * bloopcl skip it and leave everything Adam owns bit-identical, and every other step must be
 * applied. */
#ifndef BLOOPCL_TRAIN_SKIP_CHECK_H
#define BLOOPCL_TRAIN_SKIP_CHECK_H

#include "trainer.h"

/* train_step at step t (where the NaN goes in), with the parameters, the moments and the step
 * count compared bit for bit before and after. 0, or -1 after a FAIL line. */
int skip_check_step(trainer *tr, bloopcl_combiner *comb, const options *opt, size_t first,
                    long t);

/* After a run of `steps_run` steps with one NaN: Adam (the trainer's, or bloopcl's fused one
 * in `comb`) applied all but one. 0 or -1. */
int skip_check_steps_applied(trainer *tr, const options *opt, bloopcl_combiner *comb,
                             long steps_run);

#endif
