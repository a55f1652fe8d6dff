/* fronts.h — Bloop against another curve at matched auxiliary loss. Bloop's Pareto front
 * (its runs' train and test loss against aux loss, linear between the points, one front per
 * seed) is read at the aux loss of each run of the other curve with the same seed:
 *
 *     gap = loss(other run) - loss(Bloop's front of that seed, at the run's aux loss)
 *
 * (> 0: Bloop is better). Runs outside Bloop's aux range of their seed are not matched. */
#ifndef BLOOPCL_TRAIN_FRONTS_H
#define BLOOPCL_TRAIN_FRONTS_H

#include "run.h"

/* One line on stdout: the matched points of curve `other` counted, won and averaged (the
 * single-seed report). */
void fronts_print_gap(const run_result *res, size_t n, const char *other);

/* With several seeds (a configuration's seeds side by side, sweep.h): per lambda of `other`,
 * the mean gap over the seeds where it matched, with its 95% t-interval (paired by seed: the
 * seed-to-seed noise common to both curves cancels); then one line over all lambdas. */
void fronts_print_paired(const run_result *res, size_t n, int seeds, const char *other);

#endif
