/* run_case.h — one case of bloopcl-compare: a combiner and a reference state made from the
 * same configuration, stepped side by side over the inputs, every step checked. */
#ifndef BLOOPCL_COMPARE_RUN_CASE_H
#define BLOOPCL_COMPARE_RUN_CASE_H

#include "catalogue.h"
#include "inputs.h"
#include "report.h"
#include "results.h"
#include "segments.h"

#include "bloopcl.h"

#include <stdbool.h>
#include <stddef.h>

/* Host arrays reused by every case of one size. */
typedef struct workspace {
    size_t n;
    float *d_dev, *d_ref, *m_dev, *q_dev, *m_before, *q_before;
    bool segmented;        /* --segments: the device buffers of the segment lists */
    segmented_io seg;
} workspace;

bool make_workspace(size_t n, workspace *ws);
void free_workspace(workspace *ws);

/* What every case of one device shares. */
typedef struct runner {
    bloopcl_context *ctx;
    const device_facts *facts;
    const options *opt;
    report *rp;
} runner;

/* Runs case c on both sides; what fails goes into *res. */
void run_case(const runner *rn, const case_def *c, const input_set *in, workspace *ws,
              case_result *res);

#endif
