/* optimizer.h — Adam (beta1 0.9, beta2 0.999, eps 1e-8, no weight decay) along bloopcl's
 * direction d, in one of two places:
 *   fused (the default)  bloopcl's AdamW with weight decay 0, attached to the combiner and
 *                        applied in its pass 2 (update_parameters: d is never written);
 *   trainer              --optimizer trainer: the trainer's kernel (adam.cl) after the step,
 *                        reading d; it reads bloopcl's output buffer on the device, so a step
 *                        bloopcl skipped leaves the parameters, the moments and the step count
 *                        untouched with no host read in between.
 * Both compute the same Adam in a different order of fp32 operations. Data-parallel, each
 * process updates its own slice of every tensor. */
#ifndef BLOOPCL_TRAIN_OPTIMIZER_H
#define BLOOPCL_TRAIN_OPTIMIZER_H

#include "trainer.h"

/* The moments of the own slices, the step counter and the bias-correction table for up to
 * `steps` steps. 0 or -1. */
int optimizer_alloc(trainer *tr, long steps);

/* Zero moments and step count (a run's start); enqueued. 0 or -1. */
int optimizer_reset(trainer *tr);

/* Fused: attaches bloopcl's AdamW with the trainer's settings to the new combiner (nothing
 * for --optimizer trainer). A bloopcl_status. */
bloopcl_status optimizer_attach(const options *opt, bloopcl_combiner *comb);

/* The trainer's step along d (held in grad[]) with learning rate lr, unless `outputs`
 * (bloopcl's output buffer) says the step was skipped; nothing when fused. */
int optimizer_step(trainer *tr, const options *opt, cl_mem outputs);

/* Steps applied since the reset (blocking): the trainer's counter, or bloopcl's t when fused
 * (`comb` then the combiner). 0 or -1. */
int optimizer_steps_applied(trainer *tr, const options *opt, bloopcl_combiner *comb,
                            cl_int *steps);

/* Fused: bloopcl's moments over the own slices, n floats each into m[0], m[1] (malloc'ed;
 * NULL for the trainer's Adam, whose moments live in the trainer's buffers). 0 or -1. */
int optimizer_fused_moments(const options *opt, bloopcl_combiner *comb, float *m[2]);

#endif
