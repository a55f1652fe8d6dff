/* ablation.h — does the EMA matter? Bloop's EMA-weight sweep (--ema-sweep) at one lambda:
 * each weight's losses against those of w = 1 (no EMA: the projection on the batch's own
 * main gradient), paired by seed. */
#ifndef BLOOPCL_TRAIN_ABLATION_H
#define BLOOPCL_TRAIN_ABLATION_H

#include "run.h"

/* The sweep's lines on stdout (nothing if the runs hold no sweep). */
void ablation_print(const run_result *res, size_t n, int seeds);

#endif
