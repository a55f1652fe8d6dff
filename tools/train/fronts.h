/* fronts.h — Bloop against another method at matched auxiliary loss: the Pareto front of
 * Bloop's runs (train and test loss against aux loss, linear between its points) read at the
 * aux loss of each of the other method's runs. */
#ifndef BLOOPCL_TRAIN_FRONTS_H
#define BLOOPCL_TRAIN_FRONTS_H

#include "run.h"

/* One line on stdout: at each point of `other` inside Bloop's aux range, the gap other - bloop
 * of train and test loss (> 0: Bloop is better), counted and averaged. */
void fronts_print_gap(const run_result *res, size_t n, bloopcl_method other);

#endif
