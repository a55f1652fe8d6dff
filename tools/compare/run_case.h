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
    bool segmented;        /* the device buffers of the segment lists (--segments, or one
                            * segment per tensor for the typed combinations) */
    segmented_io seg;
    /* Typed combinations: g and a as stored (n 4-byte elements of room each), the true
     * gradients the checks see (widened, times the inverse scales), the reference's d in its
     * type, and the device buffer of the inverse scales (SCALE_DEVICE). */
    unsigned char *g_stored, *a_stored, *d_stored;
    float *g_true, *a_true;
    cl_mem scales;
} workspace;

bool make_workspace(size_t n, workspace *ws);
/* The device buffer of the inverse scales (SCALE_DEVICE); false if it cannot be made. */
bool make_scale_buffer(bloopcl_context *ctx, workspace *ws);
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
