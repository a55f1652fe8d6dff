/* support.h — helpers shared by the Criterion tests: contexts, inputs, tolerances. */
#ifndef BLOOPCL_TEST_SUPPORT_H
#define BLOOPCL_TEST_SUPPORT_H

#include "bloopcl.h"

#include <stdbool.h>

/* A context on the default device (BLOOPCL_DEVICE). Skips the test when the machine has no
 * OpenCL device at all; any other failure fails the test with the library's message. */
bloopcl_context *support_context(void);

/* Skips the test when the machine has no OpenCL device (CI always has PoCL). */
void support_context_skip_without_device(void);

/* Host buffers (abort the test on allocation failure). */
float *support_alloc(size_t n);

/* Deterministic inputs: N(0,1) stream `seed`, scaled. */
void support_fill_normal(float *x, size_t n, uint64_t seed, float scale);

/* Device buffer holding a copy of `host` (n floats); NULL host -> zero-filled. */
cl_mem support_buffer(bloopcl_context *ctx, const float *host, size_t n);
void support_read(bloopcl_context *ctx, cl_mem buffer, float *host, size_t n);

/* Tolerance for d (per element), r and the dots, from the error model of fp32 dot products:
 * a dot of n terms accumulated in any order with depth-k chains has error at most
 * about (k + log2 n) u sum|x_i y_i|; the tests use a uniform relative bound on those sums. */
#define SUPPORT_DOT_RTOL 2e-5

/* Compares a device step with the reference step taken from the same inputs; asserts on r,
 * the dots, d (per element, tolerance from the magnitudes involved) and the state (exact). */
void support_expect_step_matches(const bloopcl_config *config, size_t n, const float *g,
                                 const float *a, const float *d_device, const float *d_reference,
                                 const bloopcl_diagnostics *device,
                                 const bloopcl_diagnostics *reference, const float *m_reference,
                                 const float *q_reference, int step);

/* After a device step on `comb` that wrote d_device: reads its diagnostics, takes the same
 * step on the reference (which updates `ref` and writes d_reference) and compares the two. */
void support_check_step(bloopcl_combiner *comb, const bloopcl_config *config,
                        bloopcl_reference_state *ref, const float *g, const float *a,
                        const float *d_device, float *d_reference, int step);

/* A combiner that must be created (the library's message otherwise), with the dot backend
 * asked for in force (unless AUTO was asked for). */
bloopcl_combiner *support_combiner(bloopcl_context *ctx, const bloopcl_config *config, size_t n);

/* Runs `steps` steps on the device (through one cl_mem per tensor, or the host call) and on
 * the CPU reference from identical inputs and checks every step and the final state. */
void support_run_against_reference(const bloopcl_config *config, size_t n, int steps,
                                   uint64_t seed, bool use_host_call);

/* Asserts the device state equals `expected` bit for bit. */
void support_expect_state(bloopcl_combiner *comb, bloopcl_state_kind kind, const float *expected,
                          size_t n);

/* Names the case in the messages of the step and state checks above (parameterized tests:
 * Criterion does not print the parameters of a failing case). The string must outlive the
 * checks; NULL or "" (the default) prints no prefix. */
void support_set_label(const char *label);

/* The inputs of step t that support_run_against_reference uses: g drifts around a fixed
 * direction, a is partly aligned with it (`noise` is n floats of scratch). */
void support_make_inputs(float *g, float *a, float *noise, size_t n, uint64_t seed, int t);

/* Expects |device - reference| <= SUPPORT_DOT_RTOL * abs_sum (abs_sum = sum |x_i y_i|). */
void support_expect_dot(double device, double reference, double abs_sum, const char *name,
                        int step);

/* The source tree: BLOOPCL_TEST_SOURCE_ROOT (meson sets it), else ".", ".." or "../.." when
 * it holds cl/common.cl (a run by hand); the test fails when none does. */
const char *support_source_root(void);
/* A whole file, NUL-terminated (the test fails if it cannot be read); `length` may be NULL. */
char *support_read_file(const char *path, size_t *length);

#endif
