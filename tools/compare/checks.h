/* checks.h — the checks of one step, device against reference: the status, the EMA state (bit
 * for bit), the SKIP policy, the dot products, r and the direction d, each within the bounds
 * of tolerance.h (derived in tools/COMPARE.md). */
#ifndef BLOOPCL_COMPARE_CHECKS_H
#define BLOOPCL_COMPARE_CHECKS_H

#include "results.h"
#include "tolerance.h"

#include "bloopcl.h"

#include <stdbool.h>
#include <stddef.h>

/* One step's data, as the checks see it. */
typedef struct step_view {
    const bloopcl_config *config;
    const fp_model *fp;
    size_t n;
    int step;
    const float *g, *a;                /* the true gradients: widened, times inverse scales */
    const float *d_dev, *d_ref;        /* d widened from its type */
    bloopcl_dtype d_dtype;             /* the type both sides stored d in */
    const float *m_dev, *q_dev;        /* device state read back (NULL: none) */
    const float *m_ref, *q_ref;        /* reference state after the step */
    const float *m_before, *q_before;  /* reference state before the step */
    bloopcl_status status_dev, status_ref;
    bloopcl_status state_status;       /* of bloopcl_read_state */
    const bloopcl_diagnostics *dev, *ref;
    bool ref_initialized;
} step_view;

/* Every check of one step; what fails goes into *res. */
void check_step(const step_view *sv, bloopcl_dot_backend backend, case_result *res);

#endif
