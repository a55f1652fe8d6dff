/* report.h — the sweep's verdict and outputs: the table (or the JSON document) on stdout. */
#ifndef BLOOPCL_TRAIN_REPORT_H
#define BLOOPCL_TRAIN_REPORT_H

#include "run.h"

#include <stdbool.h>

/* The CSV file with its header; NULL (after perror) if it cannot be opened, or for NULL. */
FILE *report_open_csv(const char *path);

/* The verdict (the same on every rank: they hold the same results), said on stderr where
 * `writer`: 0, or -1 on divergence or a smallest-lambda run below --min-accuracy. Writes the
 * table or the JSON document only where `writer` (rank 0). */
int report_write(bloopcl_context *ctx, const options *opt, const run_result *res, size_t n,
                 double seconds, bool writer);

#endif
