/* optimizer.h — Adam (beta1 0.9, beta2 0.999, eps 1e-8) along bloopcl's direction d, on the
 * device (adam.cl). It reads bloopcl's output buffer there: a step bloopcl skipped (a
 * non-finite input) leaves the parameters, the moments and the step count untouched, with no
 * host read in between. Data-parallel, each process updates its own slice of every tensor. */
#ifndef BLOOPCL_TRAIN_OPTIMIZER_H
#define BLOOPCL_TRAIN_OPTIMIZER_H

#include "trainer.h"

/* The moments of the own slices, the step counter and the bias-correction table for up to
 * `steps` steps. 0 or -1. */
int optimizer_alloc(trainer *tr, long steps);

/* Zero moments and step count (a run's start); enqueued. 0 or -1. */
int optimizer_reset(trainer *tr);

/* One step along d (held in grad[]) with learning rate lr, unless `outputs` (bloopcl's
 * output buffer) says the step was skipped. */
int optimizer_step(trainer *tr, double lr, cl_mem outputs);

/* Steps applied since the reset (blocking). 0 or -1. */
int optimizer_steps_applied(trainer *tr, cl_int *steps);

#endif
