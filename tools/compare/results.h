/* results.h — what one case found: the failures (by kind, with their first messages), an
 * expected divergence, and the largest errors the table and the JSON document show. */
#ifndef BLOOPCL_COMPARE_RESULTS_H
#define BLOOPCL_COMPARE_RESULTS_H

#include "catalogue.h"

#include <stdbool.h>
#include <stddef.h>

#define MAX_DETAILS 32         /* failure messages kept per case (--verbose prints them) */
#define DETAILS_SHOWN 4        /* printed per case without --verbose */

enum {
    FAIL_STATUS = 1 << 0,   /* step status or accepted flag differ */
    FAIL_STATE = 1 << 1,    /* EMA state not bit-identical */
    FAIL_DOTS = 1 << 2,
    FAIL_R = 1 << 3,
    FAIL_D = 1 << 4,
    FAIL_PARITY = 1 << 5,   /* NaN/Inf where the other side has none, or another class */
    FAIL_SKIP = 1 << 6,     /* SKIP policy: d != 0 or state changed */
    FAIL_CALL = 1 << 7,     /* a library call failed */
    FAIL_BOUNDS = 1 << 8    /* --segments: a write outside d's segments, or g or a changed */
};
#define NUM_FAIL_KINDS 9

typedef struct case_result {
    double max_abs, max_rel, max_ulp;   /* over finite pairs of d */
    double r_rel;                       /* largest |r_dev - r_ref| / |r_ref| */
    double worst_d;                     /* largest error / tolerance of d */
    double worst_r;                     /* largest error / tolerance of r and the dots */
    bool parity_ok;
    unsigned failed;                    /* FAIL_* bits */
    size_t num_details, more_details;
    char details[MAX_DETAILS][TEXT_SIZE];
    bool diverged;
    char divergence[TEXT_SIZE];
    bool ftz_state;                     /* a flush-to-zero state difference was accepted */
} case_result;

/* Records a failure of kind `what` (FAIL_* bits) at `step`, with its message. */
void fail(case_result *res, unsigned what, int step, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* Records an expected divergence (the first reason is the one kept). */
void diverge(case_result *res, int step, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* *worst = max(*worst, error / tolerance); a nonzero error with no tolerance is INFINITY. */
void note_ratio(double *worst, double error, double tolerance);

/* "PASS", "PASS*" or "FAIL(kind,kind,...)". */
void verdict_text(const case_result *res, char *text, size_t size);

#endif
