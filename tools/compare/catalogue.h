/* catalogue.h — what bloopcl-compare runs: configurations x inputs x dot backends x sizes, and
 * the size plan that decides which of them run at each n (before any --filter). */
#ifndef BLOOPCL_COMPARE_CATALOGUE_H
#define BLOOPCL_COMPARE_CATALOGUE_H

#include "options.h"

#include "bloopcl.h"

#include <stdbool.h>
#include <stddef.h>

#define TEXT_SIZE 256
#define SMALL_LIMIT 65537u            /* every input and configuration up to here */
#define LARGE_LIMIT ((size_t)1 << 21) /* beyond: few inputs, two steps */

typedef struct config_spec {
    const char *label;       /* the options, as the table shows them */
    bloopcl_method method;
    double ema_weight, lambda, eps;
    bool rescale, ratio_only, propagate;
    bloopcl_init init;
    bool core;               /* kept at the largest sizes of --quick */
} config_spec;

typedef enum input_kind {
    KIND_NORMAL, KIND_ZEROS, KIND_DENORMAL, KIND_LARGE, KIND_HUGE, KIND_MIXED, KIND_PARALLEL,
    KIND_ANTIPARALLEL, KIND_ORTHOGONAL, KIND_NAN_G, KIND_INF_A, KIND_NINF_G
} input_kind;

typedef enum policy_override { POLICY_CONFIG, POLICY_PROPAGATE, POLICY_SKIP } policy_override;

typedef struct input_spec {
    const char *label;
    input_kind kind;
    policy_override policy;   /* non-finite inputs run under both policies */
    bool medium, large;       /* also run at n > 65537 / at n > 2^21 */
    bool narrow;              /* fits 2-byte types: runs with every dtype combination */
} input_spec;

typedef struct case_def {
    const config_spec *config;
    const input_spec *input;
    bloopcl_dot_backend backend;
    const dtype_combo *dtypes;
    size_t n;
    int steps;
} case_def;

extern const config_spec CONFIGS[];
extern const size_t NUM_CONFIGS;
extern const input_spec INPUTS[];
extern const size_t NUM_INPUTS;
extern const bloopcl_dot_backend BACKENDS[];
#define NUM_BACKENDS 2

/* "clblast" or "fused". */
const char *backend_name(bloopcl_dot_backend backend);

/* The steps of every case at n. */
int plan_steps(const options *opt, size_t n);

/* "method options backend input n=N dtype=LABEL", what --filter matches. */
void describe_case(const case_def *c, char *text, size_t size);

/* The size plan and every --filter accept the case. */
bool case_selected(const options *opt, const case_def *c);

/* Some case of `input` at n is selected. */
bool input_has_cases(const options *opt, const input_spec *input, size_t n);

/* Some case at n with another combination than plain f32 is selected (it needs device
 * buffers even without --segments). */
bool typed_cases_at(const options *opt, size_t n);

/* Some combination of the run has a 2-byte type (the header says clblast skips it). */
bool run_has_narrow(const options *opt);

/* The sizes of the run: --sizes, else the mode's. */
void sizes_of_run(const options *opt, const size_t **sizes, size_t *count);

/* How many cases the run has on one device (for the progress counter). */
size_t count_cases(const options *opt);

#endif
