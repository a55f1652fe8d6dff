/* summary.h — the runs of one configuration (curve, lambda, EMA weight) over the seeds, at the
 * last epoch: mean and spread of each loss. The sweep lays a configuration's seeds side by
 * side (sweep.h), so a configuration is `seeds` consecutive results. */
#ifndef BLOOPCL_TRAIN_SUMMARY_H
#define BLOOPCL_TRAIN_SUMMARY_H

#include "run.h"
#include "stats.h"

typedef struct summary_row {
    const run_result *first;     /* the configuration's first seed: label, lambda, weight */
    stats_summary train, test, accuracy, aux, seconds;
} summary_row;

/* One row per configuration: n / seeds of them into rows[]. */
size_t summary_build(const run_result *res, size_t n, int seeds, summary_row *rows);

/* The table of mean +- standard deviation on stdout. */
void summary_print(const summary_row *rows, size_t count);

/* The summary CSV (header and rows); 0, or -1 after perror. */
int summary_write_csv(const char *path, const summary_row *rows, size_t count);

#endif
