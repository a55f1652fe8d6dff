/* test_errors.c — the error contract of bloopcl.h: every bad input returns its own status code,
 * leaves a precise message in bloopcl_context_last_error, and changes nothing: the EMA state is
 * bit-identical afterwards and the next good step gives exactly what a combiner that never saw
 * the bad call gives (so no hidden flag, counter or buffer was touched either). Also non-finite
 * gradients under both policies, creation failures (device spec, environment, kernel build,
 * memory), status strings and the version. */
#include "support.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define N 1000          /* elements of the combiners under test */
#define HALF (N / 2)
#define BIG_N 100000    /* for the non-finite tests: many elements per fused work-item */

/* ---------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------- */

/* Asserts the status and that the context's message mentions every NULL-terminated needle. */
static void expect_failure(const bloopcl_context *ctx, bloopcl_status got, bloopcl_status want,
                           const char *what, ...)
{
    cr_expect_eq(got, want, "%s: status %d (%s), expected %d (%s); message: %s", what, (int)got,
                 bloopcl_status_string(got), (int)want, bloopcl_status_string(want),
                 bloopcl_context_last_error(ctx));
    const char *message = bloopcl_context_last_error(ctx);
    va_list needles;
    va_start(needles, what);
    for (const char *needle = va_arg(needles, const char *); needle != NULL;
         needle = va_arg(needles, const char *))
        cr_expect(strstr(message, needle) != NULL, "%s: the message should mention \"%s\": %s",
                  what, needle, message);
    va_end(needles);
}

static bloopcl_segment segment(cl_mem buffer, size_t offset_bytes, size_t count)
{
    return (bloopcl_segment){.buffer = buffer, .offset_bytes = offset_bytes, .count = count,
                             .dtype = BLOOPCL_DTYPE_F32, .reserved = 0};
}

/* Inputs of a good step: a is partly aligned with g so that r is far from 0. */
static void make_inputs(float *g, float *a, size_t n, uint64_t seed)
{
    support_fill_normal(g, n, seed, 1.0f);
    support_fill_normal(a, n, seed + 7919u, 1.0f);
    for (size_t i = 0; i < n; ++i)
        a[i] += 0.4f * g[i];
}

static bool has_ema(const bloopcl_config *config)
{
    return config->method != BLOOPCL_METHOD_MIXED;
}

static bool has_aux(const bloopcl_config *config)
{
    return config->method == BLOOPCL_METHOD_PCGRAD;
}

/* The state of one kind, or NULL when the method keeps none. */
static float *read_state(bloopcl_combiner *comb, bloopcl_state_kind kind, size_t n)
{
    float *state = support_alloc(n);
    bloopcl_status status = bloopcl_read_state(comb, kind, state, n);
    cr_assert_eq(status, BLOOPCL_OK, "read_state(%d): %s", (int)kind,
                 bloopcl_status_string(status));
    return state;
}

static void expect_same_bits(const float *x, const float *y, size_t n, const char *what)
{
    size_t differ = 0, first = 0;
    for (size_t i = 0; i < n; ++i)
        if (memcmp(&x[i], &y[i], sizeof(float)) != 0 && differ++ == 0)
            first = i;
    cr_expect_eq(differ, 0, "%s: %zu of %zu elements differ, first [%zu]: %.9g vs %.9g", what,
                 differ, n, first, x[first], y[first]);
}

/* Two diagnostics of identical steps agree exactly (the step counter aside). */
static void expect_same_diagnostics(const bloopcl_diagnostics *x, const bloopcl_diagnostics *y,
                                    const char *what)
{
#define SAME(field) cr_expect(memcmp(&x->field, &y->field, sizeof x->field) == 0, \
                              "%s: diagnostics." #field " %.9g vs %.9g", what, \
                              (double)x->field, (double)y->field)
    SAME(ratio);
    SAME(ratio_raw);
    SAME(dot_ema_aux);
    SAME(ema_norm_sq);
    SAME(aux_norm_sq);
    SAME(aux_ratio);
    SAME(dot_aux_ema_main);
    SAME(aux_ema_norm_sq);
    SAME(accepted);
#undef SAME
}

/* A context, the combiner that receives the bad calls (`comb`), a twin with the same
 * configuration that never does, and the CPU reference. All three take one good warm-up step
 * so the state holds something, then the state of `comb` is photographed. */
typedef struct world {
    bloopcl_context *ctx;
    bloopcl_config config;
    size_t n;
    bloopcl_combiner *comb;
    bloopcl_combiner *twin;
    bloopcl_reference_state ref;
    float *m_before, *q_before;   /* state of comb before the bad call (NULL: none kept) */
    uint64_t next_seed;
    cl_mem gb, ab, db;            /* n floats each, for bad calls through cl_mem */
} world;

static void world_good_step(world *w, const char *what);

static void world_snapshot(world *w)
{
    free(w->m_before);
    free(w->q_before);
    w->m_before = has_ema(&w->config) ? read_state(w->comb, BLOOPCL_STATE_EMA, w->n) : NULL;
    w->q_before = has_aux(&w->config) ? read_state(w->comb, BLOOPCL_STATE_AUX_EMA, w->n) : NULL;
}

static void world_open_config(world *w, const bloopcl_config *config, size_t n)
{
    memset(w, 0, sizeof *w);
    w->ctx = support_context();
    w->config = *config;
    w->n = n;
    w->next_seed = 100;
    cr_assert_eq(bloopcl_combiner_create(w->ctx, config, n, &w->comb), BLOOPCL_OK, "%s",
                 bloopcl_context_last_error(w->ctx));
    cr_assert_eq(bloopcl_combiner_create(w->ctx, config, n, &w->twin), BLOOPCL_OK, "%s",
                 bloopcl_context_last_error(w->ctx));
    cr_assert_eq(bloopcl_reference_init(config, n, &w->ref), BLOOPCL_OK);
    float *g = support_alloc(n), *a = support_alloc(n);
    make_inputs(g, a, n, 1);
    w->gb = support_buffer(w->ctx, g, n);
    w->ab = support_buffer(w->ctx, a, n);
    w->db = support_buffer(w->ctx, NULL, n);
    free(g), free(a);
    world_good_step(w, "warm-up step");
    world_snapshot(w);
}

static void world_open(world *w, bloopcl_method method)
{
    bloopcl_config config = {.struct_size = sizeof(bloopcl_config)};
    bloopcl_config_default(&config, method);
    world_open_config(w, &config, N);
}

/* One good step on comb, twin and reference from the same inputs: comb must equal the twin bit
 * for bit (d, scalars, state) and agree with the reference (state exactly). */
static void world_good_step(world *w, const char *what)
{
    size_t n = w->n;
    float *g = support_alloc(n), *a = support_alloc(n);
    float *d = support_alloc(n), *d_twin = support_alloc(n), *d_ref = support_alloc(n);
    make_inputs(g, a, n, w->next_seed++);
    bloopcl_status status = bloopcl_step_host(w->comb, g, a, d);
    cr_assert_eq(status, BLOOPCL_OK, "%s: %s", what, bloopcl_context_last_error(w->ctx));
    cr_expect_str_empty(bloopcl_context_last_error(w->ctx), "%s: a good step clears the error",
                        what);
    cr_assert_eq(bloopcl_step_host(w->twin, g, a, d_twin), BLOOPCL_OK, "%s (twin): %s", what,
                 bloopcl_context_last_error(w->ctx));
    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT, diag_twin = BLOOPCL_DIAGNOSTICS_INIT, diag_ref = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_diagnostics(w->comb, &diag), BLOOPCL_OK);
    cr_assert_eq(bloopcl_get_diagnostics(w->twin, &diag_twin), BLOOPCL_OK);
    cr_assert_eq(bloopcl_reference_step(&w->config, &w->ref, g, a, d_ref, &diag_ref), BLOOPCL_OK);
    expect_same_bits(d, d_twin, n, what);
    expect_same_diagnostics(&diag, &diag_twin, what);
    support_expect_step_matches(&w->config, n, g, a, d, d_ref, &diag, &diag_ref, w->ref.ema,
                                w->ref.aux_ema, 0);
    if (has_ema(&w->config)) {
        float *m = read_state(w->comb, BLOOPCL_STATE_EMA, n);
        float *m_twin = read_state(w->twin, BLOOPCL_STATE_EMA, n);
        expect_same_bits(m, m_twin, n, what);
        expect_same_bits(m, w->ref.ema, n, what);
        free(m), free(m_twin);
    }
    if (has_aux(&w->config)) {
        float *q = read_state(w->comb, BLOOPCL_STATE_AUX_EMA, n);
        float *q_twin = read_state(w->twin, BLOOPCL_STATE_AUX_EMA, n);
        expect_same_bits(q, q_twin, n, what);
        expect_same_bits(q, w->ref.aux_ema, n, what);
        free(q), free(q_twin);
    }
    free(g), free(a), free(d), free(d_twin), free(d_ref);
}

/* After a rejected call: the state is bit-identical to the photograph, and the next good step
 * is exactly the twin's (the rejected call left no trace anywhere). Takes a new photograph. */
static void world_expect_untouched(world *w, const char *what)
{
    if (w->m_before != NULL) {
        float *m = read_state(w->comb, BLOOPCL_STATE_EMA, w->n);
        expect_same_bits(m, w->m_before, w->n, what);
        free(m);
    }
    if (w->q_before != NULL) {
        float *q = read_state(w->comb, BLOOPCL_STATE_AUX_EMA, w->n);
        expect_same_bits(q, w->q_before, w->n, what);
        free(q);
    }
    world_good_step(w, what);
    world_snapshot(w);
}

static void world_close(world *w)
{
    clReleaseMemObject(w->gb);
    clReleaseMemObject(w->ab);
    clReleaseMemObject(w->db);
    free(w->m_before);
    free(w->q_before);
    bloopcl_reference_free(&w->ref);
    bloopcl_combiner_destroy(w->comb);
    bloopcl_combiner_destroy(w->twin);
    bloopcl_context_destroy(w->ctx);
}

/* bloopcl_step on one-segment tensors built from the given segments. */
static bloopcl_status step_segments(bloopcl_combiner *comb, bloopcl_segment g, bloopcl_segment a,
                                    bloopcl_segment d)
{
    bloopcl_tensor tg = {&g, 1}, ta = {&a, 1}, td = {&d, 1};
    cl_event done = NULL;
    bloopcl_status status = bloopcl_step(comb, &tg, &ta, &td, 0, NULL, &done);
    if (status != BLOOPCL_OK)
        cr_expect_null(done, "a rejected step must not hand out an event");
    if (done != NULL)
        clReleaseEvent(done);
    return status;
}

/* ---------------------------------------------------------------------------------------------
 * NULL handles and pointers
 * ------------------------------------------------------------------------------------------- */

Test(errors, null_out_at_context_creation)
{
    /* No place to put the context: nothing can carry a message, only the status. */
    cr_expect_eq(bloopcl_context_create(NULL, NULL), BLOOPCL_ERR_NULL_ARGUMENT);
    cr_expect_eq(bloopcl_context_create_from_cl(NULL, NULL, NULL, NULL, NULL),
                 BLOOPCL_ERR_NULL_ARGUMENT);
    cr_expect_eq(bloopcl_context_create_from_mem(NULL, NULL, NULL), BLOOPCL_ERR_NULL_ARGUMENT);

    /* NULL OpenCL objects: an error-only context says which. */
    bloopcl_context *ctx = NULL;
    bloopcl_status status = bloopcl_context_create_from_cl(NULL, NULL, NULL, NULL, &ctx);
    cr_assert_not_null(ctx, "an error-only context is expected");
    expect_failure(ctx, status, BLOOPCL_ERR_NULL_ARGUMENT, "create_from_cl(NULL)", "cl_context",
                   "cl_device_id", NULL);
    bloopcl_context_destroy(ctx);
    ctx = NULL;
    status = bloopcl_context_create_from_mem(NULL, NULL, &ctx);
    cr_assert_not_null(ctx);
    expect_failure(ctx, status, BLOOPCL_ERR_NULL_ARGUMENT, "create_from_mem(NULL)", "cl_context",
                   NULL);
    bloopcl_context_destroy(ctx);
}

Test(errors, null_arguments_at_combiner_creation)
{
    bloopcl_context *ctx = support_context();
    bloopcl_config config = {.struct_size = sizeof(bloopcl_config)};
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    bloopcl_combiner *comb = (bloopcl_combiner *)&config;  /* a sentinel that must be cleared */
    cr_expect_eq(bloopcl_combiner_create(NULL, &config, N, &comb), BLOOPCL_ERR_NULL_ARGUMENT);
    cr_expect_null(comb, "*out must be NULL after a failure");
    comb = (bloopcl_combiner *)&config;
    expect_failure(ctx, bloopcl_combiner_create(ctx, NULL, N, &comb), BLOOPCL_ERR_NULL_ARGUMENT,
                   "config NULL", "config", NULL);
    cr_expect_null(comb);
    expect_failure(ctx, bloopcl_combiner_create(ctx, &config, N, NULL), BLOOPCL_ERR_NULL_ARGUMENT,
                   "out NULL", "out", NULL);
    cr_expect_eq(bloopcl_config_validate(NULL, NULL, 0), BLOOPCL_ERR_NULL_ARGUMENT);
    char message[256];
    cr_expect_eq(bloopcl_config_validate(NULL, message, sizeof message),
                 BLOOPCL_ERR_NULL_ARGUMENT);
    cr_expect(strstr(message, "config is NULL") != NULL, "%s", message);
    bloopcl_context_destroy(ctx);
}

Test(errors, null_arguments_to_steps)
{
    world w;
    world_open(&w, BLOOPCL_METHOD_BLOOP);
    bloopcl_segment gs = segment(w.gb, 0, N), as = segment(w.ab, 0, N), ds = segment(w.db, 0, N);
    bloopcl_tensor tg = {&gs, 1}, ta = {&as, 1}, td = {&ds, 1};
    float host[N] = {0};

    /* No combiner: no context to write to, only the status. */
    cr_expect_eq(bloopcl_step(NULL, &tg, &ta, &td, 0, NULL, NULL), BLOOPCL_ERR_NULL_ARGUMENT);
    cr_expect_eq(bloopcl_step_buffers(NULL, w.gb, w.ab, w.db), BLOOPCL_ERR_NULL_ARGUMENT);
    cr_expect_eq(bloopcl_step_host(NULL, host, host, host), BLOOPCL_ERR_NULL_ARGUMENT);

    /* A NULL tensor names the tensor. */
    expect_failure(w.ctx, bloopcl_step(w.comb, NULL, &ta, &td, 0, NULL, NULL),
                   BLOOPCL_ERR_NULL_ARGUMENT, "g NULL", "g: the tensor is NULL", NULL);
    expect_failure(w.ctx, bloopcl_step(w.comb, &tg, NULL, &td, 0, NULL, NULL),
                   BLOOPCL_ERR_NULL_ARGUMENT, "a NULL", "a: the tensor is NULL", NULL);
    expect_failure(w.ctx, bloopcl_step(w.comb, &tg, &ta, NULL, 0, NULL, NULL),
                   BLOOPCL_ERR_NULL_ARGUMENT, "d NULL", "d: the tensor is NULL", NULL);
    world_expect_untouched(&w, "after NULL tensors");

    /* A NULL cl_mem in a segment that holds elements names the tensor and the segment. */
    expect_failure(w.ctx, bloopcl_step_buffers(w.comb, NULL, w.ab, w.db),
                   BLOOPCL_ERR_NULL_ARGUMENT, "g buffer NULL", "g segment 0", "NULL", NULL);
    expect_failure(w.ctx, bloopcl_step_buffers(w.comb, w.gb, w.ab, NULL),
                   BLOOPCL_ERR_NULL_ARGUMENT, "d buffer NULL", "d segment 0", "NULL", NULL);
    world_expect_untouched(&w, "after NULL buffers");

    /* Host arrays. */
    expect_failure(w.ctx, bloopcl_step_host(w.comb, NULL, host, host), BLOOPCL_ERR_NULL_ARGUMENT,
                   "host g NULL", "g, a and d", NULL);
    expect_failure(w.ctx, bloopcl_step_host(w.comb, host, NULL, host), BLOOPCL_ERR_NULL_ARGUMENT,
                   "host a NULL", "g, a and d", NULL);
    expect_failure(w.ctx, bloopcl_step_host(w.comb, host, host, NULL), BLOOPCL_ERR_NULL_ARGUMENT,
                   "host d NULL", "g, a and d", NULL);
    world_expect_untouched(&w, "after NULL host arrays");

    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_diagnostics(w.comb, &diag), BLOOPCL_OK);
    cr_expect_eq(diag.steps, 4, "rejected steps are not counted (4 good steps so far), got %llu",
                 (unsigned long long)diag.steps);
    world_close(&w);
}

/* A segment with no elements is skipped, so its buffer may be NULL: the check is not
 * over-strict. */
Test(errors, empty_segment_with_null_buffer_is_accepted)
{
    world w;
    world_open(&w, BLOOPCL_METHOD_BLOOP);
    bloopcl_segment gs[2] = {segment(NULL, 0, 0), segment(w.gb, 0, N)};
    bloopcl_segment as[2] = {segment(NULL, 0, 0), segment(w.ab, 0, N)};
    bloopcl_segment ds[2] = {segment(NULL, 0, 0), segment(w.db, 0, N)};
    bloopcl_tensor tg = {gs, 2}, ta = {as, 2}, td = {ds, 2};
    bloopcl_status status = bloopcl_step(w.twin, &tg, &ta, &td, 0, NULL, NULL);
    cr_expect_eq(status, BLOOPCL_OK, "%s", bloopcl_context_last_error(w.ctx));
    world_close(&w);
}

/* bloopcl.h: NULL_ARGUMENT is "a required pointer or handle was NULL". A tensor that announces
 * one segment but whose list pointer is NULL is exactly that. */
Test(errors, null_segment_list_is_null_argument)
{
    world w;
    world_open(&w, BLOOPCL_METHOD_BLOOP);
    bloopcl_segment as = segment(w.ab, 0, N), ds = segment(w.db, 0, N);
    bloopcl_tensor tg = {NULL, 1}, ta = {&as, 1}, td = {&ds, 1};
    expect_failure(w.ctx, bloopcl_step(w.comb, &tg, &ta, &td, 0, NULL, NULL),
                   BLOOPCL_ERR_NULL_ARGUMENT, "segments NULL, num_segments 1", "g", NULL);
    world_expect_untouched(&w, "after a NULL segment list");
    world_close(&w);
}

Test(errors, null_arguments_to_state_and_diagnostics)
{
    world w;
    world_open(&w, BLOOPCL_METHOD_PCGRAD);
    float host[N];
    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
    bloopcl_config config = {.struct_size = sizeof(bloopcl_config)};

    cr_expect_eq(bloopcl_read_state(NULL, BLOOPCL_STATE_EMA, host, N), BLOOPCL_ERR_NULL_ARGUMENT);
    cr_expect_eq(bloopcl_write_state(NULL, BLOOPCL_STATE_EMA, host, N),
                 BLOOPCL_ERR_NULL_ARGUMENT);
    expect_failure(w.ctx, bloopcl_read_state(w.comb, BLOOPCL_STATE_EMA, NULL, N),
                   BLOOPCL_ERR_NULL_ARGUMENT, "read_state host NULL", "bloopcl_read_state",
                   "host is NULL", NULL);
    expect_failure(w.ctx, bloopcl_write_state(w.comb, BLOOPCL_STATE_AUX_EMA, NULL, N),
                   BLOOPCL_ERR_NULL_ARGUMENT, "write_state host NULL", "bloopcl_write_state",
                   "host is NULL", NULL);
    expect_failure(w.ctx, bloopcl_get_diagnostics(w.comb, NULL), BLOOPCL_ERR_NULL_ARGUMENT,
                   "get_diagnostics NULL", "bloopcl_get_diagnostics", NULL);
    cr_expect_eq(bloopcl_get_diagnostics(NULL, &diag), BLOOPCL_ERR_NULL_ARGUMENT);
    cr_expect_eq(bloopcl_combiner_config(NULL, &config), BLOOPCL_ERR_NULL_ARGUMENT);
    cr_expect_eq(bloopcl_combiner_config(w.comb, NULL), BLOOPCL_ERR_NULL_ARGUMENT);
    cr_expect_eq(bloopcl_combiner_set_hyperparameters(NULL, 0.1, 0.1, 0.0),
                 BLOOPCL_ERR_NULL_ARGUMENT);
    cr_expect_eq(bloopcl_reset_state(NULL), BLOOPCL_ERR_NULL_ARGUMENT);
    world_expect_untouched(&w, "after NULL state and diagnostics arguments");

    /* Context accessors. */
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    cr_expect_eq(bloopcl_context_device_info(NULL, &info), BLOOPCL_ERR_NULL_ARGUMENT);
    cr_expect_eq(bloopcl_context_device_info(w.ctx, NULL), BLOOPCL_ERR_NULL_ARGUMENT);
    cr_expect_eq(bloopcl_context_finish(NULL), BLOOPCL_ERR_NULL_ARGUMENT);
    cr_expect_null(bloopcl_context_cl_context(NULL));
    cr_expect_null(bloopcl_context_queue(NULL));
    cr_expect_not_null(bloopcl_context_last_error(NULL), "last_error never returns NULL");
    size_t count = 0;
    cr_expect_eq(bloopcl_list_devices(NULL, 0, NULL), BLOOPCL_ERR_NULL_ARGUMENT);
    cr_expect_eq(bloopcl_list_devices(NULL, 3, &count), BLOOPCL_ERR_NULL_ARGUMENT);
    char message[256];
    cr_expect_eq(bloopcl_select_device("cpu", NULL, message, sizeof message),
                 BLOOPCL_ERR_NULL_ARGUMENT);
    bloopcl_reference_state ref;
    cr_expect_eq(bloopcl_reference_init(NULL, N, &ref), BLOOPCL_ERR_NULL_ARGUMENT);
    world_close(&w);
}

Test(errors, destroy_null_is_fine)
{
    bloopcl_context_destroy(NULL);
    bloopcl_combiner_destroy(NULL);
    bloopcl_reference_free(NULL);
    bloopcl_context_params_default(NULL);
    bloopcl_config_default(NULL, BLOOPCL_METHOD_BLOOP);
}

/* ---------------------------------------------------------------------------------------------
 * Sizes and segment lists
 * ------------------------------------------------------------------------------------------- */

Test(errors, n_zero_at_creation)
{
    bloopcl_context *ctx = support_context();
    for (int m = BLOOPCL_METHOD_BLOOP; m <= BLOOPCL_METHOD_MIXED; ++m) {
        bloopcl_config config = {.struct_size = sizeof(bloopcl_config)};
        bloopcl_config_default(&config, (bloopcl_method)m);
        bloopcl_combiner *comb = (bloopcl_combiner *)&config;
        expect_failure(ctx, bloopcl_combiner_create(ctx, &config, 0, &comb),
                       BLOOPCL_ERR_SIZE_MISMATCH, bloopcl_method_name((bloopcl_method)m),
                       "n = 0", NULL);
        cr_expect_null(comb);
        bloopcl_reference_state ref;
        cr_expect_eq(bloopcl_reference_init(&config, 0, &ref), BLOOPCL_ERR_SIZE_MISMATCH);
    }
    bloopcl_context_destroy(ctx);
}

Test(errors, segments_not_adding_up_to_n)
{
    world w;
    world_open(&w, BLOOPCL_METHOD_PCGRAD);
    /* 400 + 500 = 900 < 1000. */
    bloopcl_segment gs[2] = {segment(w.gb, 0, 400), segment(w.gb, 400 * 4, 500)};
    bloopcl_segment as[2] = {segment(w.ab, 0, 400), segment(w.ab, 400 * 4, 500)};
    bloopcl_segment ds[2] = {segment(w.db, 0, 400), segment(w.db, 400 * 4, 500)};
    bloopcl_tensor tg = {gs, 2}, ta = {as, 2}, td = {ds, 2};
    expect_failure(w.ctx, bloopcl_step(w.comb, &tg, &ta, &td, 0, NULL, NULL),
                   BLOOPCL_ERR_SIZE_MISMATCH, "900 of 1000", "900", "n = 1000", NULL);
    world_expect_untouched(&w, "after 900 elements");
    /* 400 + 601 = 1001 > 1000 (the buffers are large enough for the pieces: 1001 > n is the
     * only fault, segment 1 reads from offset 399). */
    gs[1] = segment(w.gb, 399 * 4, 601);
    as[1] = segment(w.ab, 399 * 4, 601);
    ds[1] = segment(w.db, 399 * 4, 601);
    expect_failure(w.ctx, bloopcl_step(w.comb, &tg, &ta, &td, 0, NULL, NULL),
                   BLOOPCL_ERR_SIZE_MISMATCH, "1001 of 1000", "1001", "n = 1000", NULL);
    world_expect_untouched(&w, "after 1001 elements");
    world_close(&w);
}

Test(errors, different_numbers_of_segments)
{
    world w;
    world_open(&w, BLOOPCL_METHOD_BLOOP);
    bloopcl_segment two_g[2] = {segment(w.gb, 0, HALF), segment(w.gb, HALF * 4, HALF)};
    bloopcl_segment two_a[2] = {segment(w.ab, 0, HALF), segment(w.ab, HALF * 4, HALF)};
    bloopcl_segment two_d[2] = {segment(w.db, 0, HALF), segment(w.db, HALF * 4, HALF)};
    bloopcl_segment one_a = segment(w.ab, 0, N);
    bloopcl_segment three_d[3] = {segment(w.db, 0, 300), segment(w.db, 300 * 4, 200),
                                  segment(w.db, HALF * 4, HALF)};
    bloopcl_tensor tg = {two_g, 2}, ta = {two_a, 2}, td = {two_d, 2};
    bloopcl_tensor ta1 = {&one_a, 1}, td3 = {three_d, 3};
    expect_failure(w.ctx, bloopcl_step(w.comb, &tg, &ta1, &td, 0, NULL, NULL),
                   BLOOPCL_ERR_SIZE_MISMATCH, "a with 1 segment", "a has 1 segments",
                   "g has 2", NULL);
    expect_failure(w.ctx, bloopcl_step(w.comb, &tg, &ta, &td3, 0, NULL, NULL),
                   BLOOPCL_ERR_SIZE_MISMATCH, "d with 3 segments", "d has 3 segments",
                   "g has 2", NULL);
    world_expect_untouched(&w, "after different numbers of segments");
    world_close(&w);
}

Test(errors, different_per_segment_counts)
{
    world w;
    world_open(&w, BLOOPCL_METHOD_BLOOP);
    bloopcl_segment gs[2] = {segment(w.gb, 0, 400), segment(w.gb, 400 * 4, 600)};
    bloopcl_segment as[2] = {segment(w.ab, 0, 500), segment(w.ab, 500 * 4, 500)};
    bloopcl_segment ds[2] = {segment(w.db, 0, 400), segment(w.db, 400 * 4, 600)};
    bloopcl_tensor tg = {gs, 2}, ta = {as, 2}, td = {ds, 2};
    /* Same totals (1000), different split: segment 0 of a is the first fault. */
    expect_failure(w.ctx, bloopcl_step(w.comb, &tg, &ta, &td, 0, NULL, NULL),
                   BLOOPCL_ERR_SIZE_MISMATCH, "a split 500+500", "segment 0", "a has 500",
                   "g has 400", NULL);
    /* a fixed, d differs only in segment 1. */
    as[0] = segment(w.ab, 0, 400);
    as[1] = segment(w.ab, 400 * 4, 600);
    ds[1] = segment(w.db, 400 * 4, 599);
    expect_failure(w.ctx, bloopcl_step(w.comb, &tg, &ta, &td, 0, NULL, NULL),
                   BLOOPCL_ERR_SIZE_MISMATCH, "d segment 1 short", "segment 1", "d has 599",
                   "g has 600", NULL);
    world_expect_untouched(&w, "after different per-segment counts");
    world_close(&w);
}

Test(errors, num_segments_zero)
{
    world w;
    world_open(&w, BLOOPCL_METHOD_BLOOP);
    bloopcl_segment gs = segment(w.gb, 0, N), as = segment(w.ab, 0, N), ds = segment(w.db, 0, N);
    bloopcl_tensor tg = {&gs, 1}, ta = {&as, 1}, td = {&ds, 1};
    bloopcl_tensor empty = {&gs, 0}, empty_null = {NULL, 0};
    expect_failure(w.ctx, bloopcl_step(w.comb, &empty, &ta, &td, 0, NULL, NULL),
                   BLOOPCL_ERR_SIZE_MISMATCH, "g empty", "g: num_segments = 0", "num_segments = 0",
                   NULL);
    expect_failure(w.ctx, bloopcl_step(w.comb, &tg, &empty_null, &td, 0, NULL, NULL),
                   BLOOPCL_ERR_SIZE_MISMATCH, "a empty", "a: num_segments = 0", NULL);
    expect_failure(w.ctx, bloopcl_step(w.comb, &tg, &ta, &empty, 0, NULL, NULL),
                   BLOOPCL_ERR_SIZE_MISMATCH, "d empty", "d: num_segments = 0", NULL);
    world_expect_untouched(&w, "after num_segments = 0");
    world_close(&w);
}

/* ---------------------------------------------------------------------------------------------
 * Buffers: size, alignment, dtype, owner, access flags
 * ------------------------------------------------------------------------------------------- */

Test(errors, undersized_buffers)
{
    world w;
    world_open(&w, BLOOPCL_METHOD_BLOOP);
    cl_mem short_buffer = support_buffer(w.ctx, NULL, N - 1);
    /* One float short, in each tensor in turn. */
    expect_failure(w.ctx, bloopcl_step_buffers(w.comb, short_buffer, w.ab, w.db),
                   BLOOPCL_ERR_BUFFER_TOO_SMALL, "g short", "g segment 0", "4000 bytes", "3996",
                   NULL);
    expect_failure(w.ctx, bloopcl_step_buffers(w.comb, w.gb, short_buffer, w.db),
                   BLOOPCL_ERR_BUFFER_TOO_SMALL, "a short", "a segment 0", NULL);
    expect_failure(w.ctx, bloopcl_step_buffers(w.comb, w.gb, w.ab, short_buffer),
                   BLOOPCL_ERR_BUFFER_TOO_SMALL, "d short", "d segment 0", NULL);
    /* Large enough, but the offset pushes the end past it. */
    expect_failure(w.ctx, step_segments(w.comb, segment(w.gb, 0, N), segment(w.ab, 4, N),
                                        segment(w.db, 0, N)),
                   BLOOPCL_ERR_BUFFER_TOO_SMALL, "a offset 4", "a segment 0", "offset 4", NULL);
    /* In the second segment of a list. */
    bloopcl_segment gs[2] = {segment(w.gb, 0, HALF), segment(w.gb, HALF * 4, HALF)};
    bloopcl_segment as[2] = {segment(w.ab, 0, HALF), segment(w.ab, HALF * 4, HALF)};
    bloopcl_segment ds[2] = {segment(w.db, 0, HALF), segment(short_buffer, HALF * 4, HALF)};
    bloopcl_tensor tg = {gs, 2}, ta = {as, 2}, td = {ds, 2};
    expect_failure(w.ctx, bloopcl_step(w.comb, &tg, &ta, &td, 0, NULL, NULL),
                   BLOOPCL_ERR_BUFFER_TOO_SMALL, "d segment 1 short", "d segment 1", NULL);
    /* An offset so large that offset + count * 4 overflows size_t must not wrap into "fits". */
    expect_failure(w.ctx, step_segments(w.comb, segment(w.gb, SIZE_MAX - 3, N),
                                        segment(w.ab, 0, N), segment(w.db, 0, N)),
                   BLOOPCL_ERR_BUFFER_TOO_SMALL, "offset near SIZE_MAX", "g segment 0", NULL);
    world_expect_untouched(&w, "after undersized buffers");
    clReleaseMemObject(short_buffer);
    world_close(&w);
}

Test(errors, misaligned_offset)
{
    world w;
    world_open(&w, BLOOPCL_METHOD_BLOOP);
    cl_mem large = support_buffer(w.ctx, NULL, N + 1);
    expect_failure(w.ctx, step_segments(w.comb, segment(large, 2, N), segment(w.ab, 0, N),
                                        segment(w.db, 0, N)),
                   BLOOPCL_ERR_SIZE_MISMATCH, "g offset 2", "g segment 0", "offset 2",
                   "multiple of 4", NULL);
    bloopcl_segment gs[2] = {segment(w.gb, 0, HALF), segment(w.gb, HALF * 4, HALF)};
    bloopcl_segment as[2] = {segment(w.ab, 0, HALF), segment(large, HALF * 4 + 1, HALF)};
    bloopcl_segment ds[2] = {segment(w.db, 0, HALF), segment(w.db, HALF * 4, HALF)};
    bloopcl_tensor tg = {gs, 2}, ta = {as, 2}, td = {ds, 2};
    expect_failure(w.ctx, bloopcl_step(w.comb, &tg, &ta, &td, 0, NULL, NULL),
                   BLOOPCL_ERR_SIZE_MISMATCH, "a segment 1 offset 2001", "a segment 1",
                   "offset 2001", NULL);
    world_expect_untouched(&w, "after misaligned offsets");
    clReleaseMemObject(large);
    world_close(&w);
}

Test(errors, unknown_dtype_or_reserved)
{
    world w;
    world_open(&w, BLOOPCL_METHOD_BLOOP);
    bloopcl_segment bad_dtype = segment(w.ab, 0, N);
    bad_dtype.dtype = (bloopcl_dtype)3;  /* the first value past BF16 */
    expect_failure(w.ctx, step_segments(w.comb, segment(w.gb, 0, N), bad_dtype,
                                        segment(w.db, 0, N)),
                   BLOOPCL_ERR_INVALID_ARGUMENT, "dtype 3", "a segment 0", "dtype 3", NULL);
    bloopcl_segment bad_reserved = segment(w.db, 0, N);
    bad_reserved.reserved = 1;
    expect_failure(w.ctx, step_segments(w.comb, segment(w.gb, 0, N), segment(w.ab, 0, N),
                                        bad_reserved),
                   BLOOPCL_ERR_UNSUPPORTED, "reserved 1", "d segment 0", "reserved", NULL);
    /* Even an empty segment must be well-formed. */
    bloopcl_segment empty_bad = segment(NULL, 0, 0);
    empty_bad.dtype = (bloopcl_dtype)7;
    bloopcl_segment gs[2] = {empty_bad, segment(w.gb, 0, N)};
    bloopcl_segment as[2] = {segment(NULL, 0, 0), segment(w.ab, 0, N)};
    bloopcl_segment ds[2] = {segment(NULL, 0, 0), segment(w.db, 0, N)};
    bloopcl_tensor tg = {gs, 2}, ta = {as, 2}, td = {ds, 2};
    expect_failure(w.ctx, bloopcl_step(w.comb, &tg, &ta, &td, 0, NULL, NULL),
                   BLOOPCL_ERR_INVALID_ARGUMENT, "empty segment dtype 7", "g segment 0", NULL);
    world_expect_untouched(&w, "after an unknown dtype / reserved");
    world_close(&w);
}

Test(errors, buffer_of_another_context)
{
    world w;
    world_open(&w, BLOOPCL_METHOD_BLOOP);
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    cr_assert_eq(bloopcl_context_device_info(w.ctx, &info), BLOOPCL_OK);
    cl_int err;
    cl_context other = clCreateContext(NULL, 1, &info.device, NULL, NULL, &err);
    cr_assert_eq(err, CL_SUCCESS);
    cl_mem foreign = clCreateBuffer(other, CL_MEM_READ_WRITE, N * sizeof(float), NULL, &err);
    cr_assert_eq(err, CL_SUCCESS);
    expect_failure(w.ctx, bloopcl_step_buffers(w.comb, w.gb, foreign, w.db),
                   BLOOPCL_ERR_WRONG_CONTEXT, "foreign a", "a segment 0", "another cl_context",
                   NULL);
    expect_failure(w.ctx, bloopcl_step_buffers(w.comb, w.gb, w.ab, foreign),
                   BLOOPCL_ERR_WRONG_CONTEXT, "foreign d", "d segment 0", NULL);
    world_expect_untouched(&w, "after a foreign buffer");
    clReleaseMemObject(foreign);
    clReleaseContext(other);
    world_close(&w);
}

Test(errors, read_only_d)
{
    world w;
    world_open(&w, BLOOPCL_METHOD_BLOOP);
    cl_int err;
    cl_mem read_only = clCreateBuffer(bloopcl_context_cl_context(w.ctx), CL_MEM_READ_ONLY,
                                      N * sizeof(float), NULL, &err);
    cr_assert_eq(err, CL_SUCCESS);
    expect_failure(w.ctx, bloopcl_step_buffers(w.comb, w.gb, w.ab, read_only),
                   BLOOPCL_ERR_INVALID_ARGUMENT, "read-only d", "d segment 0", "CL_MEM_READ_ONLY",
                   NULL);
    world_expect_untouched(&w, "after a read-only d");

    /* g and a are only read: read-only buffers are fine there. */
    float *g = support_alloc(N), *a = support_alloc(N);
    make_inputs(g, a, N, 5);
    cl_mem g_ro = clCreateBuffer(bloopcl_context_cl_context(w.ctx),
                                 CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, N * sizeof(float), g,
                                 &err);
    cr_assert_eq(err, CL_SUCCESS);
    cl_mem a_ro = clCreateBuffer(bloopcl_context_cl_context(w.ctx),
                                 CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, N * sizeof(float), a,
                                 &err);
    cr_assert_eq(err, CL_SUCCESS);
    bloopcl_combiner *other = NULL;
    cr_assert_eq(bloopcl_combiner_create(w.ctx, &w.config, N, &other), BLOOPCL_OK);
    cr_expect_eq(bloopcl_step_buffers(other, g_ro, a_ro, w.db), BLOOPCL_OK, "%s",
                 bloopcl_context_last_error(w.ctx));
    bloopcl_combiner_destroy(other);
    clReleaseMemObject(g_ro);
    clReleaseMemObject(a_ro);
    clReleaseMemObject(read_only);
    free(g), free(a);
    world_close(&w);
}

/* ---------------------------------------------------------------------------------------------
 * Memory shared between g, a and d (issue 15, item 4). The step reads g and a and writes d in
 * the same pass, element by element: d may be the very elements of g or a segment for segment
 * (each element is read before the work-item that reads it writes it), but d sharing any other
 * memory with g, a or itself races with other work-items, so d comes out wrong and (fused
 * backend, which recomputes the EMA from g in pass 2) so does the state. Overlap is judged by
 * bytes of the underlying allocation: through sub-buffers and host memory too.
 * ------------------------------------------------------------------------------------------- */

typedef struct overlap_case {
    bloopcl_method method;
    bloopcl_dot_backend dots;
} overlap_case;

ParameterizedTestParameters(errors, overlapping_d_is_refused)
{
    static overlap_case cases[] = {
        {BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_FUSED},  {BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_CLBLAST},
        {BLOOPCL_METHOD_PCGRAD, BLOOPCL_DOTS_FUSED}, {BLOOPCL_METHOD_PCGRAD, BLOOPCL_DOTS_CLBLAST},
        {BLOOPCL_METHOD_MIXED, BLOOPCL_DOTS_FUSED},
    };
    return cr_make_param_array(overlap_case, cases, sizeof cases / sizeof cases[0]);
}

/* The device's sub-buffer origin alignment, in bytes (CL_DEVICE_MEM_BASE_ADDR_ALIGN is bits). */
static size_t sub_buffer_alignment(bloopcl_context *ctx)
{
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    cr_assert_eq(bloopcl_context_device_info(ctx, &info), BLOOPCL_OK);
    cl_uint bits = 0;
    cr_assert_eq(clGetDeviceInfo(info.device, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof bits, &bits,
                                 NULL), CL_SUCCESS);
    return bits / 8 > sizeof(float) ? bits / 8 : sizeof(float);
}

static cl_mem sub_buffer(cl_mem parent, size_t origin, size_t size)
{
    cl_buffer_region region = {origin, size};
    cl_int err;
    cl_mem sub = clCreateSubBuffer(parent, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION,
                                   &region, &err);
    cr_assert_eq(err, CL_SUCCESS, "clCreateSubBuffer(origin %zu, size %zu): %d", origin, size,
                 (int)err);
    return sub;
}

/* The step over p-segment lists is refused as an overlap naming both segments, hands out no
 * event, and leaves the state bit for bit as it was (then a good step is exactly the twin's). */
static void expect_overlap_refused(world *w, const bloopcl_segment *g, const bloopcl_segment *a,
                                   const bloopcl_segment *d, size_t p, const char *what,
                                   const char *first, const char *second)
{
    bloopcl_tensor tg = {g, p}, ta = {a, p}, td = {d, p};
    cl_event done = NULL;
    bloopcl_status status = bloopcl_step(w->comb, &tg, &ta, &td, 0, NULL, &done);
    expect_failure(w->ctx, status, BLOOPCL_ERR_INVALID_ARGUMENT, what, first, second, "overlap",
                   NULL);
    cr_expect_null(done, "%s: a refused step hands out no event", what);
    if (done != NULL)
        clReleaseEvent(done);
    world_expect_untouched(w, what);
}

static void expect_overlap_refused_1(world *w, bloopcl_segment g, bloopcl_segment a,
                                     bloopcl_segment d, const char *what, const char *first,
                                     const char *second)
{
    expect_overlap_refused(w, &g, &a, &d, 1, what, first, second);
}

ParameterizedTest(overlap_case *c, errors, overlapping_d_is_refused, .timeout = 120)
{
    bloopcl_config config;
    bloopcl_config_default(&config, c->method);
    config.dots = c->dots;
    world w;
    world_open_config(&w, &config, N);
    size_t align = sub_buffer_alignment(w.ctx);
    size_t big_floats = align / sizeof(float) + 2 * N + 8;
    float *noise = support_alloc(big_floats);
    support_fill_normal(noise, big_floats, 77, 1.0f);
    cl_mem big = support_buffer(w.ctx, noise, big_floats);

    /* d one element further than g, or one element before a, in one buffer. */
    expect_overlap_refused_1(&w, segment(big, 0, N), segment(w.ab, 0, N), segment(big, 4, N),
                             "d = g shifted by one element", "d segment 0", "g segment 0");
    expect_overlap_refused_1(&w, segment(w.gb, 0, N), segment(big, 4, N), segment(big, 0, N),
                             "d = a shifted back by one element", "d segment 0", "a segment 0");

    /* d's segment 0 is exactly g's segment 1 (the same elements, another segment). */
    bloopcl_segment gs[2] = {segment(big, 0, HALF), segment(big, HALF * 4, HALF)};
    bloopcl_segment as[2] = {segment(w.ab, 0, HALF), segment(w.ab, HALF * 4, HALF)};
    bloopcl_segment ds[2] = {segment(big, HALF * 4, HALF), segment(w.db, HALF * 4, HALF)};
    expect_overlap_refused(&w, gs, as, ds, 2, "d segment 0 = g segment 1", "d segment 0",
                           "g segment 1");

    /* Through sub-buffers: other handles, the same bytes of `big`. */
    cl_mem sub = sub_buffer(big, align, (N + 1) * sizeof(float));
    expect_overlap_refused_1(&w, segment(big, align, N), segment(w.ab, 0, N), segment(sub, 4, N),
                             "d in a sub-buffer, one element past g", "d segment 0",
                             "g segment 0");
    expect_overlap_refused_1(&w, segment(sub, 0, N), segment(w.ab, 0, N),
                             segment(big, align + 4, N), "g in a sub-buffer, d in its parent",
                             "d segment 0", "g segment 0");
    cl_mem low = sub_buffer(big, 0, align + N * sizeof(float));
    expect_overlap_refused_1(&w, segment(w.gb, 0, N), segment(low, align, N), segment(sub, 4, N),
                             "a and d in two sub-buffers of one buffer", "d segment 0",
                             "a segment 0");

    /* d's segments overlapping each other: by one element, and entirely. */
    bloopcl_segment gd[2] = {segment(w.gb, 0, HALF), segment(w.gb, HALF * 4, HALF)};
    bloopcl_segment ad[2] = {segment(w.ab, 0, HALF), segment(w.ab, HALF * 4, HALF)};
    bloopcl_segment dd[2] = {segment(w.db, 0, HALF), segment(w.db, (HALF - 1) * 4, HALF)};
    expect_overlap_refused(&w, gd, ad, dd, 2, "d segments 0 and 1 share an element",
                           "d segment 0", "d segment 1");
    dd[1] = segment(w.db, 0, HALF);
    expect_overlap_refused(&w, gd, ad, dd, 2, "d segments 0 and 1 are the same elements",
                           "d segment 0", "d segment 1");

    /* Two buffers over overlapping host memory (CL_MEM_USE_HOST_PTR). */
    float *host = support_alloc(N + 1);
    cl_int err;
    cl_mem over_host[2];
    for (int k = 0; k < 2; ++k) {
        over_host[k] = clCreateBuffer(bloopcl_context_cl_context(w.ctx),
                                      CL_MEM_READ_WRITE | CL_MEM_USE_HOST_PTR,
                                      N * sizeof(float), host + k, &err);
        cr_assert_eq(err, CL_SUCCESS);
    }
    expect_overlap_refused_1(&w, segment(over_host[0], 0, N), segment(w.ab, 0, N),
                             segment(over_host[1], 0, N), "g and d over one host array",
                             "d segment 0", "g segment 0");

    for (int k = 0; k < 2; ++k)
        clReleaseMemObject(over_host[k]);
    clReleaseMemObject(low);
    clReleaseMemObject(sub);
    clReleaseMemObject(big);
    free(host), free(noise);
    world_close(&w);
}

/* What may share memory, and gives the reference's answer: g and a overlapping anyhow (both
 * only read), d exactly g and d exactly a (also through a sub-buffer: another handle, the same
 * elements). Each on a fresh combiner against the CPU reference. */
typedef enum sharing { G_AND_A_SHIFTED, D_IS_G, D_IS_A, D_IS_G_THROUGH_SUB_BUFFER } sharing;

static void expect_sharing_allowed(const overlap_case *c, sharing how)
{
    bloopcl_context *ctx = support_context();
    bloopcl_config config;
    bloopcl_config_default(&config, c->method);
    config.dots = c->dots;
    bloopcl_combiner *comb = support_combiner(ctx, &config, N);
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(&config, N, &ref), BLOOPCL_OK);
    size_t align = sub_buffer_alignment(ctx);
    size_t lead = align / sizeof(float);  /* g starts here in `big` */
    float *x = support_alloc(lead + 2 * N + 1);
    float *g = support_alloc(N), *a = support_alloc(N);
    float *d = support_alloc(N), *d_ref = support_alloc(N);
    for (int t = 0; t < 3; ++t) {
        make_inputs(g, a, N, 40 + (uint64_t)t);
        memcpy(x + lead, g, N * sizeof(float));
        if (how == G_AND_A_SHIFTED)
            memcpy(a, x + lead + 1, N * sizeof(float));  /* a is g's memory, one further */
        else
            memcpy(x + lead + N + 1, a, N * sizeof(float));
        cl_mem big = support_buffer(ctx, x, lead + 2 * N + 1);
        cl_mem own_d = support_buffer(ctx, NULL, N);
        cl_mem sub = sub_buffer(big, align, N * sizeof(float));
        bloopcl_segment gs = segment(big, align, N);
        bloopcl_segment as = how == G_AND_A_SHIFTED ? segment(big, align + 4, N)
                                                    : segment(big, align + (N + 1) * 4, N);
        bloopcl_segment ds = how == D_IS_G ? gs : how == D_IS_A ? as
                             : how == D_IS_G_THROUGH_SUB_BUFFER ? segment(sub, 0, N)
                                                                 : segment(own_d, 0, N);
        bloopcl_tensor tg = {&gs, 1}, ta = {&as, 1}, td = {&ds, 1};
        cr_assert_eq(bloopcl_step(comb, &tg, &ta, &td, 0, NULL, NULL), BLOOPCL_OK,
                     "sharing %d, step %d: %s", (int)how, t, bloopcl_context_last_error(ctx));
        cl_mem d_buffer = how == G_AND_A_SHIFTED ? own_d : big;
        size_t d_at = how == G_AND_A_SHIFTED ? 0 : ds.buffer == sub ? lead
                      : ds.offset_bytes / sizeof(float);
        float *all = support_alloc(lead + 2 * N + 1);
        support_read(ctx, d_buffer, all, how == G_AND_A_SHIFTED ? N : lead + 2 * N + 1);
        memcpy(d, all + d_at, N * sizeof(float));
        support_check_step(comb, &config, &ref, g, a, d, d_ref, t);
        if (ref.ema != NULL && ref.initialized)
            support_expect_state(comb, BLOOPCL_STATE_EMA, ref.ema, N);
        if (ref.aux_ema != NULL && ref.initialized)
            support_expect_state(comb, BLOOPCL_STATE_AUX_EMA, ref.aux_ema, N);
        free(all);
        clReleaseMemObject(sub);
        clReleaseMemObject(own_d);
        clReleaseMemObject(big);
    }
    free(x), free(g), free(a), free(d), free(d_ref);
    bloopcl_reference_free(&ref);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

ParameterizedTestParameters(errors, allowed_sharing_matches_reference)
{
    static overlap_case cases[] = {
        {BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_FUSED},  {BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_CLBLAST},
        {BLOOPCL_METHOD_PCGRAD, BLOOPCL_DOTS_FUSED}, {BLOOPCL_METHOD_PCGRAD, BLOOPCL_DOTS_CLBLAST},
        {BLOOPCL_METHOD_MIXED, BLOOPCL_DOTS_FUSED},
    };
    return cr_make_param_array(overlap_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(overlap_case *c, errors, allowed_sharing_matches_reference, .timeout = 120)
{
    expect_sharing_allowed(c, G_AND_A_SHIFTED);
    expect_sharing_allowed(c, D_IS_G);
    expect_sharing_allowed(c, D_IS_A);
    expect_sharing_allowed(c, D_IS_G_THROUGH_SUB_BUFFER);
}

/* The combiner's own output buffer is written by the step (finalize) and read by pass 2: it
 * can be none of g, a, d of that combiner's step. */
Test(errors, own_output_buffer_is_refused)
{
    bloopcl_context *ctx = support_context();
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    const size_t n = 4;
    bloopcl_combiner *comb = support_combiner(ctx, &config, n);
    cl_mem outputs = NULL, g = support_buffer(ctx, NULL, n), a = support_buffer(ctx, NULL, n),
           d = support_buffer(ctx, NULL, n);
    cr_assert_eq(bloopcl_combiner_outputs(comb, &outputs), BLOOPCL_OK);
    expect_failure(ctx, bloopcl_step_buffers(comb, outputs, a, d), BLOOPCL_ERR_INVALID_ARGUMENT,
                   "g = outputs", "g segment 0", "output buffer", NULL);
    expect_failure(ctx, bloopcl_step_buffers(comb, g, outputs, d), BLOOPCL_ERR_INVALID_ARGUMENT,
                   "a = outputs", "a segment 0", "output buffer", NULL);
    expect_failure(ctx, bloopcl_step_buffers(comb, g, a, outputs), BLOOPCL_ERR_INVALID_ARGUMENT,
                   "d = outputs", "d segment 0", "output buffer", NULL);
    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_diagnostics(comb, &diag), BLOOPCL_OK);
    cr_expect_eq(diag.steps, 0, "a refused step is not counted");
    /* Another combiner's output buffer is just memory to this one: read it. */
    bloopcl_combiner *other = support_combiner(ctx, &config, n);
    cr_expect_eq(bloopcl_step_buffers(other, outputs, a, d), BLOOPCL_OK, "%s",
                 bloopcl_context_last_error(ctx));
    bloopcl_combiner_destroy(other);
    clReleaseMemObject(g), clReleaseMemObject(a), clReleaseMemObject(d);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

/* ---------------------------------------------------------------------------------------------
 * Memory objects that are not buffers (issue 15, item 11): an image holds texels in a layout
 * of the driver's choosing, not floats at byte offsets, so it is refused as g, a or d.
 * ------------------------------------------------------------------------------------------- */

static cl_mem float_image(bloopcl_context *ctx, cl_mem_object_type type)
{
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    cr_assert_eq(bloopcl_context_device_info(ctx, &info), BLOOPCL_OK);
    cl_bool images = CL_FALSE;
    cr_assert_eq(clGetDeviceInfo(info.device, CL_DEVICE_IMAGE_SUPPORT, sizeof images, &images,
                                 NULL), CL_SUCCESS);
    cr_assert(images, "the test device (PoCL in CI) supports images");
    cl_image_format format = {CL_R, CL_FLOAT};
    cl_image_desc desc = {.image_type = type, .image_width = type == CL_MEM_OBJECT_IMAGE1D ? N
                                                                                           : 100,
                          .image_height = type == CL_MEM_OBJECT_IMAGE1D ? 0 : N / 100};
    cl_int err;
    cl_mem image = clCreateImage(bloopcl_context_cl_context(ctx), CL_MEM_READ_WRITE, &format,
                                 &desc, NULL, &err);
    cr_assert_eq(err, CL_SUCCESS, "clCreateImage: %d", (int)err);
    return image;
}

Test(errors, image_is_not_a_gradient_buffer)
{
    world w;
    world_open(&w, BLOOPCL_METHOD_BLOOP);
    const cl_mem_object_type types[] = {CL_MEM_OBJECT_IMAGE1D, CL_MEM_OBJECT_IMAGE2D};
    const char *const type_names[] = {"CL_MEM_OBJECT_IMAGE1D", "CL_MEM_OBJECT_IMAGE2D"};
    for (size_t i = 0; i < 2; ++i) {
        cl_mem image = float_image(w.ctx, types[i]);
        expect_failure(w.ctx, bloopcl_step_buffers(w.comb, image, w.ab, w.db),
                       BLOOPCL_ERR_INVALID_ARGUMENT, "image g", "g segment 0", type_names[i],
                       "not a buffer", NULL);
        expect_failure(w.ctx, bloopcl_step_buffers(w.comb, w.gb, image, w.db),
                       BLOOPCL_ERR_INVALID_ARGUMENT, "image a", "a segment 0", type_names[i],
                       NULL);
        expect_failure(w.ctx, bloopcl_step_buffers(w.comb, w.gb, w.ab, image),
                       BLOOPCL_ERR_INVALID_ARGUMENT, "image d", "d segment 0", type_names[i],
                       NULL);
        world_expect_untouched(&w, type_names[i]);
        clReleaseMemObject(image);
    }
    world_close(&w);
}

/* ---------------------------------------------------------------------------------------------
 * Hyperparameters and enums
 * ------------------------------------------------------------------------------------------- */

typedef struct bad_hyper {
    double ema_weight, lambda, eps;
    const char *needle;   /* the parameter the message must name */
} bad_hyper;

static const bad_hyper bad_hypers[] = {
    {0.0, 0.1, 1e-7, "ema_weight"},      {-0.1, 0.1, 1e-7, "ema_weight"},
    {1.5, 0.1, 1e-7, "ema_weight"},      {NAN, 0.1, 1e-7, "ema_weight"},
    {INFINITY, 0.1, 1e-7, "ema_weight"},
    {1e-60, 0.1, 1e-7, "ema_weight"},    /* > 0 in double, 0 as the kernels' float */
    {0.1, -1.0, 1e-7, "lambda"},         {0.1, NAN, 1e-7, "lambda"},
    {0.1, INFINITY, 1e-7, "lambda"},     {0.1, -INFINITY, 1e-7, "lambda"},
    {0.1, 1e39, 1e-7, "lambda"},         /* finite in double, Inf as a float */
    {0.1, 0.1, -1e-7, "eps"},            {0.1, 0.1, NAN, "eps"},
    {0.1, 0.1, INFINITY, "eps"},         {0.1, 0.1, 1e39, "eps"},
};
#define NUM_BAD_HYPERS (sizeof bad_hypers / sizeof bad_hypers[0])

Test(errors, bad_hyperparameters_at_creation)
{
    bloopcl_context *ctx = support_context();
    for (size_t i = 0; i < NUM_BAD_HYPERS; ++i) {
        const bad_hyper *h = &bad_hypers[i];
        char what[128];
        snprintf(what, sizeof what, "create (w %g, lambda %g, eps %g)", h->ema_weight, h->lambda,
                 h->eps);
        bloopcl_config config = {.struct_size = sizeof(bloopcl_config)};
        bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
        config.ema_weight = h->ema_weight;
        config.lambda = h->lambda;
        config.eps = h->eps;
        bloopcl_combiner *comb = (bloopcl_combiner *)&config;
        expect_failure(ctx, bloopcl_combiner_create(ctx, &config, N, &comb),
                       BLOOPCL_ERR_INVALID_ARGUMENT, what, "bloopcl_combiner_create", h->needle,
                       NULL);
        cr_expect_null(comb, "%s", what);
        /* bloopcl_config_validate says the same without a context. */
        char message[512];
        cr_expect_eq(bloopcl_config_validate(&config, message, sizeof message),
                     BLOOPCL_ERR_INVALID_ARGUMENT, "%s", what);
        cr_expect(strstr(message, h->needle) != NULL, "%s: %s", what, message);
    }
    /* The edges of the valid ranges are accepted: w = 1 (no EMA), the smallest w that is
     * positive as a float, lambda = 0, eps = 0, lambda = FLT_MAX. */
    const double good[][3] = {{1.0, 0.1, 1e-7}, {1e-30, 0.1, 1e-7}, {0.1, 0.0, 0.0},
                              {0.1, FLT_MAX, 1e-7}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; ++i) {
        bloopcl_config config = {.struct_size = sizeof(bloopcl_config)};
        bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
        config.ema_weight = good[i][0];
        config.lambda = good[i][1];
        config.eps = good[i][2];
        char message[512];
        cr_expect_eq(bloopcl_config_validate(&config, message, sizeof message), BLOOPCL_OK,
                     "w %g lambda %g eps %g: %s", good[i][0], good[i][1], good[i][2], message);
    }
    bloopcl_context_destroy(ctx);
}

Test(errors, bad_hyperparameters_through_set)
{
    world w;
    world_open(&w, BLOOPCL_METHOD_DYNAMIC_BARRIER);
    bloopcl_config before = {.struct_size = sizeof(bloopcl_config)};
    cr_assert_eq(bloopcl_combiner_config(w.comb, &before), BLOOPCL_OK);
    for (size_t i = 0; i < NUM_BAD_HYPERS; ++i) {
        const bad_hyper *h = &bad_hypers[i];
        char what[128];
        snprintf(what, sizeof what, "set (w %g, lambda %g, eps %g)", h->ema_weight, h->lambda,
                 h->eps);
        expect_failure(w.ctx,
                       bloopcl_combiner_set_hyperparameters(w.comb, h->ema_weight, h->lambda,
                                                            h->eps),
                       BLOOPCL_ERR_INVALID_ARGUMENT, what, "set_hyperparameters", h->needle,
                       NULL);
        /* The old values stay in force, in the reported configuration ... */
        bloopcl_config now = {.struct_size = sizeof(bloopcl_config)};
        cr_assert_eq(bloopcl_combiner_config(w.comb, &now), BLOOPCL_OK);
        cr_expect(memcmp(&now.ema_weight, &before.ema_weight, sizeof(double)) == 0 &&
                  memcmp(&now.lambda, &before.lambda, sizeof(double)) == 0 &&
                  memcmp(&now.eps, &before.eps, sizeof(double)) == 0,
                  "%s changed the configuration to w %g lambda %g eps %g", what, now.ema_weight,
                  now.lambda, now.eps);
    }
    /* ... and in the kernels: the next step equals the twin's and the reference's with the
     * original hyperparameters (the reference uses w.config, never modified). */
    world_expect_untouched(&w, "after rejected set_hyperparameters");

    /* A valid change does take effect (and the reference follows it). */
    cr_assert_eq(bloopcl_combiner_set_hyperparameters(w.comb, 0.5, 2.0, 1e-6), BLOOPCL_OK);
    cr_assert_eq(bloopcl_combiner_set_hyperparameters(w.twin, 0.5, 2.0, 1e-6), BLOOPCL_OK);
    w.config.ema_weight = 0.5;
    w.config.lambda = 2.0;
    w.config.eps = 1e-6;
    bloopcl_config now = {.struct_size = sizeof(bloopcl_config)};
    cr_assert_eq(bloopcl_combiner_config(w.comb, &now), BLOOPCL_OK);
    cr_expect(now.ema_weight == 0.5 && now.lambda == 2.0 && now.eps == 1e-6);
    world_good_step(&w, "after a valid set_hyperparameters");
    world_close(&w);
}

Test(errors, bad_enum_values)
{
    bloopcl_context *ctx = support_context();
    static const struct {
        const char *field;
        const char *needle;
    } cases[] = {{"method", "method = 99"}, {"init", "init = 99"},
                 {"nonfinite", "nonfinite = 99"}, {"dots", "dots = 99"},
                 {"method", "method = -1"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        bloopcl_config config = {.struct_size = sizeof(bloopcl_config)};
        bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
        int value = strstr(cases[i].needle, "-1") ? -1 : 99;
        if (strcmp(cases[i].field, "method") == 0)
            config.method = (bloopcl_method)value;
        else if (strcmp(cases[i].field, "init") == 0)
            config.init = (bloopcl_init)value;
        else if (strcmp(cases[i].field, "nonfinite") == 0)
            config.nonfinite = (bloopcl_nonfinite_policy)value;
        else
            config.dots = (bloopcl_dot_backend)value;
        bloopcl_combiner *comb = (bloopcl_combiner *)&config;
        expect_failure(ctx, bloopcl_combiner_create(ctx, &config, N, &comb),
                       BLOOPCL_ERR_INVALID_ARGUMENT, cases[i].needle, cases[i].needle, NULL);
        cr_expect_null(comb);
    }
    cr_expect_str_eq(bloopcl_method_name((bloopcl_method)99), "unknown");
    bloopcl_context_destroy(ctx);
}

Test(errors, bad_state_kind)
{
    world w;
    world_open(&w, BLOOPCL_METHOD_PCGRAD);
    float host[N] = {0};
    expect_failure(w.ctx, bloopcl_read_state(w.comb, (bloopcl_state_kind)99, host, N),
                   BLOOPCL_ERR_INVALID_ARGUMENT, "read kind 99", "kind = 99", NULL);
    expect_failure(w.ctx, bloopcl_write_state(w.comb, (bloopcl_state_kind)99, host, N),
                   BLOOPCL_ERR_INVALID_ARGUMENT, "write kind 99", "kind = 99", NULL);
    world_expect_untouched(&w, "after state kind 99");
    world_close(&w);
}

Test(errors, ratio_only_with_pcgrad_or_mixed)
{
    bloopcl_context *ctx = support_context();
    const bloopcl_method methods[] = {BLOOPCL_METHOD_PCGRAD, BLOOPCL_METHOD_MIXED};
    for (size_t i = 0; i < 2; ++i) {
        bloopcl_config config = {.struct_size = sizeof(bloopcl_config)};
        bloopcl_config_default(&config, methods[i]);
        config.ratio_only = 1;
        bloopcl_combiner *comb = NULL;
        expect_failure(ctx, bloopcl_combiner_create(ctx, &config, N, &comb),
                       BLOOPCL_ERR_INVALID_ARGUMENT, bloopcl_method_name(methods[i]),
                       "ratio_only", bloopcl_method_name(methods[i]), NULL);
        cr_expect_null(comb);
    }
    bloopcl_context_destroy(ctx);
}

Test(errors, init_buffer_without_initial_ema)
{
    bloopcl_context *ctx = support_context();
    float initial[N] = {0};
    bloopcl_config config = {.struct_size = sizeof(bloopcl_config)};
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    config.init = BLOOPCL_INIT_BUFFER;
    bloopcl_combiner *comb = NULL;
    expect_failure(ctx, bloopcl_combiner_create(ctx, &config, N, &comb),
                   BLOOPCL_ERR_NULL_ARGUMENT, "bloop BUFFER", "initial_ema", NULL);
    cr_expect_null(comb);
    /* PCGrad needs both. */
    bloopcl_config_default(&config, BLOOPCL_METHOD_PCGRAD);
    config.init = BLOOPCL_INIT_BUFFER;
    config.initial_ema = initial;
    expect_failure(ctx, bloopcl_combiner_create(ctx, &config, N, &comb),
                   BLOOPCL_ERR_NULL_ARGUMENT, "pcgrad BUFFER", "initial_aux_ema", NULL);
    cr_expect_null(comb);
    /* Mixed keeps no state: nothing to copy, nothing required. */
    bloopcl_config_default(&config, BLOOPCL_METHOD_MIXED);
    config.init = BLOOPCL_INIT_BUFFER;
    cr_expect_eq(bloopcl_combiner_create(ctx, &config, N, &comb), BLOOPCL_OK, "%s",
                 bloopcl_context_last_error(ctx));
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

/* ---------------------------------------------------------------------------------------------
 * Non-finite gradients, policy SKIP
 * ------------------------------------------------------------------------------------------- */

typedef struct skip_case {
    bloopcl_method method;
    bloopcl_dot_backend dots;
} skip_case;

ParameterizedTestParameters(errors, nonfinite_skip)
{
    static skip_case cases[] = {
        {BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_CLBLAST},
        {BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_FUSED},
        {BLOOPCL_METHOD_DYNAMIC_BARRIER, BLOOPCL_DOTS_CLBLAST},
        {BLOOPCL_METHOD_PCGRAD, BLOOPCL_DOTS_CLBLAST},
        {BLOOPCL_METHOD_PCGRAD, BLOOPCL_DOTS_FUSED},
        {BLOOPCL_METHOD_MIXED, BLOOPCL_DOTS_CLBLAST},
        {BLOOPCL_METHOD_MIXED, BLOOPCL_DOTS_FUSED},
    };
    return cr_make_param_array(skip_case, cases, sizeof cases / sizeof cases[0]);
}

/* NaN in g, +Inf in a, -Inf in g at various places: the host call reports NONFINITE_INPUT with
 * d = 0 and the state untouched; the asynchronous call returns OK and shows the skip only in
 * the diagnostics. After each, the next finite step equals the twin's, which never saw them. */
ParameterizedTest(skip_case *c, errors, nonfinite_skip, .timeout = 60)
{
    bloopcl_config config = {.struct_size = sizeof(bloopcl_config)};
    bloopcl_config_default(&config, c->method);
    config.dots = c->dots;
    config.nonfinite = BLOOPCL_NONFINITE_SKIP;
    world w;
    world_open_config(&w, &config, BIG_N);
    float *g = support_alloc(BIG_N), *a = support_alloc(BIG_N), *d = support_alloc(BIG_N);
    const struct {
        int in_a;
        size_t index;
        float value;
    } bad[] = {{0, 17, NAN}, {1, BIG_N / 2 + 3, INFINITY}, {0, BIG_N - 1, -INFINITY}};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; ++k) {
        char what[160];
        snprintf(what, sizeof what, "%s[%zu] = %g (%s, %s)", bad[k].in_a ? "a" : "g",
                 bad[k].index, (double)bad[k].value, bloopcl_method_name(c->method),
                 c->dots == BLOOPCL_DOTS_FUSED ? "fused" : "clblast");
        make_inputs(g, a, BIG_N, 50 + k);
        (bad[k].in_a ? a : g)[bad[k].index] = bad[k].value;

        /* Host call. */
        for (size_t i = 0; i < BIG_N; ++i)
            d[i] = 42.0f;
        expect_failure(w.ctx, bloopcl_step_host(w.comb, g, a, d), BLOOPCL_ERR_NONFINITE_INPUT,
                       what, "NaN or Inf", "skipped", NULL);
        size_t nonzero = 0;
        for (size_t i = 0; i < BIG_N; ++i)
            nonzero += !(d[i] == 0.0f && !signbit(d[i]));
        cr_expect_eq(nonzero, 0, "%s: d must be all +0 after a skipped host step (%zu are not)",
                     what, nonzero);
        bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
        cr_assert_eq(bloopcl_get_diagnostics(w.comb, &diag), BLOOPCL_OK);
        cr_expect_eq(diag.accepted, 0, "%s: host step accepted", what);
        world_expect_untouched(&w, what);

        /* Asynchronous call through cl_mem: OK, skip visible only in the diagnostics. */
        cr_assert_eq(clEnqueueWriteBuffer(bloopcl_context_queue(w.ctx), w.gb, CL_TRUE, 0,
                                          BIG_N * sizeof(float), g, 0, NULL, NULL), CL_SUCCESS);
        cr_assert_eq(clEnqueueWriteBuffer(bloopcl_context_queue(w.ctx), w.ab, CL_TRUE, 0,
                                          BIG_N * sizeof(float), a, 0, NULL, NULL), CL_SUCCESS);
        const float fill = 42.0f;
        cr_assert_eq(clEnqueueFillBuffer(bloopcl_context_queue(w.ctx), w.db, &fill, sizeof fill,
                                         0, BIG_N * sizeof(float), 0, NULL, NULL), CL_SUCCESS);
        bloopcl_status status = bloopcl_step_buffers(w.comb, w.gb, w.ab, w.db);
        cr_expect_eq(status, BLOOPCL_OK, "%s (async): %s", what,
                     bloopcl_context_last_error(w.ctx));
        cr_assert_eq(bloopcl_get_diagnostics(w.comb, &diag), BLOOPCL_OK);
        cr_expect_eq(diag.accepted, 0, "%s (async): step accepted", what);
        support_read(w.ctx, w.db, d, BIG_N);
        nonzero = 0;
        for (size_t i = 0; i < BIG_N; ++i)
            nonzero += !(d[i] == 0.0f && !signbit(d[i]));
        cr_expect_eq(nonzero, 0, "%s (async): d must be all +0 (%zu are not)", what, nonzero);
        world_expect_untouched(&w, what);
        cr_assert_eq(bloopcl_get_diagnostics(w.comb, &diag), BLOOPCL_OK);
        cr_expect_eq(diag.accepted, 1, "%s: the next finite step is accepted", what);
    }
    free(g), free(a), free(d);
    world_close(&w);
}

ParameterizedTestParameters(errors, skipped_first_gradient_leaves_ema_uninitialised)
{
    static skip_case cases[] = {
        {BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_CLBLAST},
        {BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_FUSED},
        {BLOOPCL_METHOD_PCGRAD, BLOOPCL_DOTS_CLBLAST},
        {BLOOPCL_METHOD_PCGRAD, BLOOPCL_DOTS_FUSED},
    };
    return cr_make_param_array(skip_case, cases, sizeof cases / sizeof cases[0]);
}

/* INIT_FIRST_GRADIENT: a skipped first step must not count as "the first accepted step". The
 * EMA stays uninitialised (read_state -> STATE), and the next finite step sets m <- g (q <- a)
 * exactly, as on a twin whose first step is that finite one. Both the host and the async
 * path. */
ParameterizedTest(skip_case *c, errors, skipped_first_gradient_leaves_ema_uninitialised)
{
    bloopcl_context *ctx = support_context();
    bloopcl_config config = {.struct_size = sizeof(bloopcl_config)};
    bloopcl_config_default(&config, c->method);
    config.dots = c->dots;
    config.init = BLOOPCL_INIT_FIRST_GRADIENT;
    bloopcl_combiner *comb = NULL, *twin = NULL;
    cr_assert_eq(bloopcl_combiner_create(ctx, &config, N, &comb), BLOOPCL_OK);
    cr_assert_eq(bloopcl_combiner_create(ctx, &config, N, &twin), BLOOPCL_OK);
    float *g = support_alloc(N), *a = support_alloc(N), *d = support_alloc(N);
    float *d_twin = support_alloc(N), *m = support_alloc(N);
    make_inputs(g, a, N, 3);
    g[10] = NAN;
    expect_failure(ctx, bloopcl_step_host(comb, g, a, d), BLOOPCL_ERR_NONFINITE_INPUT,
                   "first step NaN (host)", "NaN", NULL);
    expect_failure(ctx, bloopcl_read_state(comb, BLOOPCL_STATE_EMA, m, N), BLOOPCL_ERR_STATE,
                   "read after a skipped first step", "not initialised", NULL);
    /* The same through cl_mem. */
    cl_mem gb = support_buffer(ctx, g, N), ab = support_buffer(ctx, a, N);
    cl_mem db = support_buffer(ctx, NULL, N);
    cr_expect_eq(bloopcl_step_buffers(comb, gb, ab, db), BLOOPCL_OK);
    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_diagnostics(comb, &diag), BLOOPCL_OK);
    cr_expect_eq(diag.accepted, 0);
    expect_failure(ctx, bloopcl_read_state(comb, BLOOPCL_STATE_EMA, m, N), BLOOPCL_ERR_STATE,
                   "read after a skipped first step (async)", "not initialised", NULL);

    make_inputs(g, a, N, 4);
    cr_assert_eq(bloopcl_step_host(comb, g, a, d), BLOOPCL_OK, "%s",
                 bloopcl_context_last_error(ctx));
    cr_assert_eq(bloopcl_step_host(twin, g, a, d_twin), BLOOPCL_OK);
    expect_same_bits(d, d_twin, N, "first accepted step: d");
    cr_assert_eq(bloopcl_read_state(comb, BLOOPCL_STATE_EMA, m, N), BLOOPCL_OK);
    expect_same_bits(m, g, N, "first accepted step: m = g");
    if (c->method == BLOOPCL_METHOD_PCGRAD) {
        cr_assert_eq(bloopcl_read_state(comb, BLOOPCL_STATE_AUX_EMA, m, N), BLOOPCL_OK);
        expect_same_bits(m, a, N, "first accepted step: q = a");
    }
    clReleaseMemObject(gb);
    clReleaseMemObject(ab);
    clReleaseMemObject(db);
    free(g), free(a), free(d), free(d_twin), free(m);
    bloopcl_combiner_destroy(comb);
    bloopcl_combiner_destroy(twin);
    bloopcl_context_destroy(ctx);
}

/* ---------------------------------------------------------------------------------------------
 * Non-finite gradients, policy PROPAGATE: IEEE arithmetic as the reference writes it
 * ------------------------------------------------------------------------------------------- */

typedef struct propagate_case {
    bloopcl_dot_backend dots;
    int inf_in_a;   /* 0: NaN in g */
} propagate_case;

ParameterizedTestParameters(errors, nonfinite_propagate)
{
    static propagate_case cases[] = {
        {BLOOPCL_DOTS_CLBLAST, 0}, {BLOOPCL_DOTS_CLBLAST, 1},
        {BLOOPCL_DOTS_FUSED, 0},   {BLOOPCL_DOTS_FUSED, 1},
    };
    return cr_make_param_array(propagate_case, cases, sizeof cases / sizeof cases[0]);
}

static char fp_class(double x)
{
    return isnan(x) ? 'N' : isinf(x) ? (x > 0 ? '+' : '-') : 'f';
}

/* Per element: same class (finite, NaN, +Inf, -Inf); finite values within the usual bound. */
static void expect_same_classes(const float *device, const float *reference, size_t n,
                                const char *what)
{
    size_t differ = 0, first = 0, nonfinite = 0;
    for (size_t i = 0; i < n; ++i) {
        nonfinite += !isfinite(reference[i]);
        if (fp_class(device[i]) != fp_class(reference[i]) && differ++ == 0)
            first = i;
    }
    cr_expect_eq(differ, 0, "%s: %zu of %zu elements differ in class (%zu non-finite in the "
                 "reference); first [%zu]: device %g reference %g", what, differ, n, nonfinite,
                 first, device[first], reference[first]);
}

#define EXPECT_SAME_CLASS(what, field, dev, ref) \
    cr_expect_eq(fp_class((dev).field), fp_class((ref).field), \
                 "%s: diagnostics." #field " device %g reference %g", what, (dev).field, \
                 (ref).field)

/* bloop, policy PROPAGATE: a NaN in g (it enters m and stays) or an Inf in a (it makes <m,a>
 * and r infinite for one step). d, the state and the scalars must be NaN/Inf exactly where
 * the reference has them, on both dot backends; the Inf lies inside a fused work-item's run. */
ParameterizedTest(propagate_case *c, errors, nonfinite_propagate, .timeout = 60)
{
    bloopcl_context *ctx = support_context();
    bloopcl_config config = {.struct_size = sizeof(bloopcl_config)};
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    config.dots = c->dots;
    config.nonfinite = BLOOPCL_NONFINITE_PROPAGATE;
    const size_t n = BIG_N;
    bloopcl_combiner *comb = NULL;
    cr_assert_eq(bloopcl_combiner_create(ctx, &config, n, &comb), BLOOPCL_OK);
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(&config, n, &ref), BLOOPCL_OK);
    float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
    float *d_ref = support_alloc(n), *m = support_alloc(n);
    for (int t = 0; t < 3; ++t) {
        char what[128];
        snprintf(what, sizeof what, "%s, %s, step %d", c->inf_in_a ? "Inf in a" : "NaN in g",
                 c->dots == BLOOPCL_DOTS_FUSED ? "fused" : "clblast", t);
        make_inputs(g, a, n, 60 + (uint64_t)t);
        if (t == 1) {
            if (c->inf_in_a)
                a[1001] = INFINITY;
            else
                g[1001] = NAN;
        }
        bloopcl_status status = bloopcl_step_host(comb, g, a, d);
        cr_expect_eq(status, BLOOPCL_OK, "%s: %s", what, bloopcl_context_last_error(ctx));
        bloopcl_diagnostics dev = BLOOPCL_DIAGNOSTICS_INIT, rd = BLOOPCL_DIAGNOSTICS_INIT;
        cr_assert_eq(bloopcl_get_diagnostics(comb, &dev), BLOOPCL_OK);
        cr_assert_eq(bloopcl_reference_step(&config, &ref, g, a, d_ref, &rd), BLOOPCL_OK);
        cr_expect_eq(dev.accepted, 1, "%s: propagate never skips", what);
        EXPECT_SAME_CLASS(what, dot_ema_aux, dev, rd);
        EXPECT_SAME_CLASS(what, ema_norm_sq, dev, rd);
        EXPECT_SAME_CLASS(what, aux_norm_sq, dev, rd);
        EXPECT_SAME_CLASS(what, ratio, dev, rd);
        expect_same_classes(d, d_ref, n, what);
        cr_assert_eq(bloopcl_read_state(comb, BLOOPCL_STATE_EMA, m, n), BLOOPCL_OK);
        expect_same_classes(m, ref.ema, n, what);
        /* Finite state elements are computed element-wise exactly as the reference does. */
        size_t differ = 0;
        for (size_t i = 0; i < n; ++i)
            differ += isfinite(ref.ema[i]) && memcmp(&m[i], &ref.ema[i], sizeof(float)) != 0;
        cr_expect_eq(differ, 0, "%s: %zu finite state elements differ", what, differ);
    }
    free(g), free(a), free(d), free(d_ref), free(m);
    bloopcl_reference_free(&ref);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

/* The same Inf in a, CLBlast backend, but spread over 130 segments: each segment is one
 * partial slot, and the finalize kernel's work-items sum several slots each (more slots than
 * its work-group has items), so the Inf is not the last term a work-item adds. */
Test(errors, nonfinite_propagate_many_segments)
{
    bloopcl_context *ctx = support_context();
    bloopcl_config config = {.struct_size = sizeof(bloopcl_config)};
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    config.dots = BLOOPCL_DOTS_CLBLAST;
    config.nonfinite = BLOOPCL_NONFINITE_PROPAGATE;
    enum { SEGMENTS = 130, PER = 100, TOTAL = SEGMENTS * PER };
    bloopcl_combiner *comb = NULL;
    cr_assert_eq(bloopcl_combiner_create(ctx, &config, TOTAL, &comb), BLOOPCL_OK);
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(&config, TOTAL, &ref), BLOOPCL_OK);
    float *g = support_alloc(TOTAL), *a = support_alloc(TOTAL), *d = support_alloc(TOTAL);
    float *d_ref = support_alloc(TOTAL);
    make_inputs(g, a, TOTAL, 70);
    a[3] = INFINITY;  /* segment 0 */
    cl_mem gb = support_buffer(ctx, g, TOTAL), ab = support_buffer(ctx, a, TOTAL);
    cl_mem db = support_buffer(ctx, NULL, TOTAL);
    bloopcl_segment *lists = calloc(3 * SEGMENTS, sizeof *lists);
    cr_assert_not_null(lists);
    for (size_t s = 0; s < SEGMENTS; ++s) {
        lists[s] = segment(gb, s * PER * sizeof(float), PER);
        lists[SEGMENTS + s] = segment(ab, s * PER * sizeof(float), PER);
        lists[2 * SEGMENTS + s] = segment(db, s * PER * sizeof(float), PER);
    }
    bloopcl_tensor tg = {lists, SEGMENTS}, ta = {lists + SEGMENTS, SEGMENTS};
    bloopcl_tensor td = {lists + 2 * SEGMENTS, SEGMENTS};
    cr_assert_eq(bloopcl_step(comb, &tg, &ta, &td, 0, NULL, NULL), BLOOPCL_OK, "%s",
                 bloopcl_context_last_error(ctx));
    support_read(ctx, db, d, TOTAL);
    bloopcl_diagnostics dev = BLOOPCL_DIAGNOSTICS_INIT, rd = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_diagnostics(comb, &dev), BLOOPCL_OK);
    cr_assert_eq(bloopcl_reference_step(&config, &ref, g, a, d_ref, &rd), BLOOPCL_OK);
    const char *what = "Inf in a, clblast, 130 segments";
    EXPECT_SAME_CLASS(what, dot_ema_aux, dev, rd);
    EXPECT_SAME_CLASS(what, aux_norm_sq, dev, rd);
    EXPECT_SAME_CLASS(what, ratio, dev, rd);
    expect_same_classes(d, d_ref, TOTAL, what);
    clReleaseMemObject(gb);
    clReleaseMemObject(ab);
    clReleaseMemObject(db);
    free(lists);
    free(g), free(a), free(d), free(d_ref);
    bloopcl_reference_free(&ref);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

/* ---------------------------------------------------------------------------------------------
 * Event wait lists
 * ------------------------------------------------------------------------------------------- */

Test(errors, inconsistent_wait_list)
{
    world w;
    world_open(&w, BLOOPCL_METHOD_BLOOP);
    bloopcl_segment gs = segment(w.gb, 0, N), as = segment(w.ab, 0, N), ds = segment(w.db, 0, N);
    bloopcl_tensor tg = {&gs, 1}, ta = {&as, 1}, td = {&ds, 1};
    cl_event done = NULL;
    expect_failure(w.ctx, bloopcl_step(w.comb, &tg, &ta, &td, 2, NULL, &done),
                   BLOOPCL_ERR_INVALID_ARGUMENT, "2 events, NULL list", "num_wait_events = 2",
                   "NULL", NULL);
    cr_expect_null(done, "no completion event for a rejected step");
    cl_int err;
    cl_event user = clCreateUserEvent(bloopcl_context_cl_context(w.ctx), &err);
    cr_assert_eq(err, CL_SUCCESS);
    expect_failure(w.ctx, bloopcl_step(w.comb, &tg, &ta, &td, 0, &user, &done),
                   BLOOPCL_ERR_INVALID_ARGUMENT, "0 events, a list", "num_wait_events = 0",
                   "not NULL", NULL);
    cr_expect_null(done);
    /* The user event was never waited on: had the step been enqueued behind it, the checks
     * below (which finish the queue) would hang. */
    world_expect_untouched(&w, "after inconsistent wait lists");
    clSetUserEventStatus(user, CL_COMPLETE);
    clReleaseEvent(user);
    world_close(&w);
}

/* ---------------------------------------------------------------------------------------------
 * Creation failures: device spec, environment, kernel build, memory
 * ------------------------------------------------------------------------------------------- */

/* The name of the first device (the one the messages must list). */
static void first_device_name(char *name, size_t size)
{
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    size_t count = 0;
    cr_assert_eq(bloopcl_list_devices(&info, 1, &count), BLOOPCL_OK);
    if (count == 0)
        cr_skip_test("no OpenCL device on this machine");
    snprintf(name, size, "%s", info.device_name);
}

/* What an error-only context allows: its message, destruction, and STATE for the rest. */
static void expect_error_only_context(bloopcl_context *ctx, const char *message_part)
{
    cr_assert_not_null(ctx, "creation failures still hand out an error-only context");
    cr_expect_null(bloopcl_context_cl_context(ctx));
    cr_expect_null(bloopcl_context_queue(ctx));
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    cr_expect_eq(bloopcl_context_device_info(ctx, &info), BLOOPCL_ERR_STATE);
    cr_expect_eq(bloopcl_context_finish(ctx), BLOOPCL_ERR_STATE);
    bloopcl_config config = {.struct_size = sizeof(bloopcl_config)};
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    bloopcl_combiner *comb = (bloopcl_combiner *)&config;
    cr_expect_eq(bloopcl_combiner_create(ctx, &config, N, &comb), BLOOPCL_ERR_STATE);
    cr_expect_null(comb);
    /* ... and the creation message survives that refusal. */
    cr_expect(strstr(bloopcl_context_last_error(ctx), message_part) != NULL,
              "the creation message is kept: %s", bloopcl_context_last_error(ctx));
}

Test(errors, unknown_device_spec)
{
    char device[128];
    first_device_name(device, sizeof device);
    static const struct {
        const char *spec;
        bloopcl_status status;
    } cases[] = {{"nvidia-nowhere:", BLOOPCL_ERR_DEVICE_NOT_FOUND},
                 {"gpu:x", BLOOPCL_ERR_DEVICE_SPEC},
                 {":no-such-device-name", BLOOPCL_ERR_DEVICE_NOT_FOUND},
                 {"999", BLOOPCL_ERR_DEVICE_NOT_FOUND},
                 {"a:b:c", BLOOPCL_ERR_DEVICE_SPEC}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        bloopcl_context_params params;
        bloopcl_context_params_default(&params);
        params.device_spec = cases[i].spec;
        bloopcl_context *ctx = NULL;
        bloopcl_status status = bloopcl_context_create(&params, &ctx);
        cr_assert_not_null(ctx, "%s", cases[i].spec);
        expect_failure(ctx, status, cases[i].status, cases[i].spec, cases[i].spec,
                       "devices found", device, NULL);
        expect_error_only_context(ctx, cases[i].spec);
        bloopcl_context_destroy(ctx);
    }
}

Test(errors, bloopcl_dots_env_bogus)
{
    char device[128];
    first_device_name(device, sizeof device);
    cr_assert_eq(setenv("BLOOPCL_DOTS", "bogus", 1), 0);
    bloopcl_context *ctx = NULL;
    bloopcl_status status = bloopcl_context_create(NULL, &ctx);
    expect_failure(ctx, status, BLOOPCL_ERR_INVALID_ARGUMENT, "BLOOPCL_DOTS=bogus",
                   "BLOOPCL_DOTS", "bogus", NULL);
    expect_error_only_context(ctx, "bogus");
    bloopcl_context_destroy(ctx);

    /* A valid value is taken, and a combiner reports the resolved backend (never AUTO). */
    cr_assert_eq(setenv("BLOOPCL_DOTS", "fused", 1), 0);
    ctx = support_context();
    bloopcl_config config = {.struct_size = sizeof(bloopcl_config)};
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    bloopcl_combiner *comb = NULL;
    cr_assert_eq(bloopcl_combiner_create(ctx, &config, N, &comb), BLOOPCL_OK);
    cr_assert_eq(bloopcl_combiner_config(comb, &config), BLOOPCL_OK);
    cr_expect_eq(config.dots, BLOOPCL_DOTS_FUSED);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

static const char *const kernel_files[] = {"layout.h", "common.cl", "dtype.cl", "ema.cl", "fused_dots.cl",
                                           "finalize.cl", "optimize.cl", "project.cl", "aux.cl"};
#define NUM_KERNEL_FILES (sizeof kernel_files / sizeof kernel_files[0])

/* Copies the kernel sources into a fresh temporary folder, appending `injection` to `victim`
 * (NULL: pristine copies). The folder name is written to `dir` (at least 64 bytes). */
static void copy_kernels(char *dir, const char *victim, const char *injection)
{
    const char *root = support_source_root();
    snprintf(dir, 64, "/tmp/bloopcl-kernels-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    for (size_t i = 0; i < NUM_KERNEL_FILES; ++i) {
        char from[4096], to[4096];
        snprintf(from, sizeof from, "%s/cl/%s", root, kernel_files[i]);
        snprintf(to, sizeof to, "%s/%s", dir, kernel_files[i]);
        size_t length = 0;
        char *text = support_read_file(from, &length);
        FILE *out = fopen(to, "wb");
        cr_assert_not_null(out, "cannot write %s", to);
        cr_assert_eq(fwrite(text, 1, length, out), length);
        if (victim != NULL && strcmp(victim, kernel_files[i]) == 0)
            fputs(injection, out);
        cr_assert_eq(fclose(out), 0);
        free(text);
    }
}

static void remove_kernels(const char *dir)
{
    for (size_t i = 0; i < NUM_KERNEL_FILES; ++i) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, kernel_files[i]);
        unlink(path);
    }
    rmdir(dir);
}

typedef struct log_capture {
    char text[16384];
    int warnings;
} log_capture;

static void capture_log(void *user, bloopcl_log_level level, const char *message)
{
    log_capture *log = user;
    size_t used = strlen(log->text);
    snprintf(log->text + used, sizeof log->text - used, "%s\n", message);
    log->warnings += level == BLOOPCL_LOG_WARNING;
}

Test(errors, kernel_with_syntax_error)
{
    char device[128];
    first_device_name(device, sizeof device);
    char dir[64];
    /* Control: pristine copies from BLOOPCL_KERNEL_DIR build and run, so the failure below is
     * the injected error and nothing else. */
    copy_kernels(dir, NULL, NULL);
    cr_assert_eq(setenv("BLOOPCL_KERNEL_DIR", dir, 1), 0);
    bloopcl_context *ctx = support_context();
    bloopcl_context_destroy(ctx);
    remove_kernels(dir);

    copy_kernels(dir, "project.cl",
                 "\nkernel void bloopcl_broken(global float *x) { x[0] = ; }\n");
    cr_assert_eq(setenv("BLOOPCL_KERNEL_DIR", dir, 1), 0);
    log_capture log = {{0}, 0};
    bloopcl_context_params params;
    bloopcl_context_params_default(&params);
    params.log_fn = capture_log;
    params.log_user = &log;
    ctx = NULL;
    bloopcl_status status = bloopcl_context_create(&params, &ctx);
    expect_failure(ctx, status, BLOOPCL_ERR_KERNEL_BUILD, "syntax error in project.cl",
                   "CL_BUILD_PROGRAM_FAILURE", "build log", "error", device, NULL);
    expect_error_only_context(ctx, "build log");
    cr_expect_geq(log.warnings, 1, "the build log also goes to the log callback");
    cr_expect(strstr(log.text, "error") != NULL, "log: %s", log.text);
    bloopcl_context_destroy(ctx);
    remove_kernels(dir);
}

Test(errors, kernel_dir_missing)
{
    const char *dir = "/nonexistent/bloopcl-kernels-for-test_errors";
    cr_assert_eq(setenv("BLOOPCL_KERNEL_DIR", dir, 1), 0);
    bloopcl_context *ctx = NULL;
    bloopcl_status status = bloopcl_context_create(NULL, &ctx);
    expect_failure(ctx, status, BLOOPCL_ERR_KERNEL_BUILD, "missing BLOOPCL_KERNEL_DIR", dir,
                   "cannot read", "layout.h", NULL);
    expect_error_only_context(ctx, dir);
    bloopcl_context_destroy(ctx);
}

/* PoCL rejects an unknown option in clBuildProgram with CL_INVALID_BUILD_OPTIONS (and says so
 * in the log); the library reports it as a kernel build failure naming the options. Both the
 * parameter and the BLOOPCL_BUILD_OPTIONS variable, which the parameter overrides. */
Test(errors, bad_build_options)
{
    char device[128];
    first_device_name(device, sizeof device);
    const char *options = "-DBROKEN -Werror-bogus-option";
    bloopcl_context_params params;
    bloopcl_context_params_default(&params);
    params.build_options = options;
    bloopcl_context *ctx = NULL;
    bloopcl_status status = bloopcl_context_create(&params, &ctx);
    expect_failure(ctx, status, BLOOPCL_ERR_KERNEL_BUILD, "params.build_options",
                   "-Werror-bogus-option", "-DBROKEN", device, "CL_INVALID_BUILD_OPTIONS", NULL);
    expect_error_only_context(ctx, "-Werror-bogus-option");
    bloopcl_context_destroy(ctx);

    cr_assert_eq(setenv("BLOOPCL_BUILD_OPTIONS", "-cl-no-such-option", 1), 0);
    ctx = NULL;
    status = bloopcl_context_create(NULL, &ctx);
    expect_failure(ctx, status, BLOOPCL_ERR_KERNEL_BUILD, "BLOOPCL_BUILD_OPTIONS",
                   "-cl-no-such-option", NULL);
    bloopcl_context_destroy(ctx);

    /* An explicit (valid) parameter wins over the broken variable. */
    params.build_options = "-DTEST_HARMLESS=1";
    ctx = NULL;
    status = bloopcl_context_create(&params, &ctx);
    cr_expect_eq(status, BLOOPCL_OK, "%s", bloopcl_context_last_error(ctx));
    bloopcl_context_destroy(ctx);
}

/* Bounds this process's address space to what it uses now plus `headroom` bytes, so that a
 * runaway allocation fails here instead of pushing the machine into the OOM killer. */
static void limit_address_space(unsigned long long headroom)
{
    FILE *status = fopen("/proc/self/status", "r");
    if (status == NULL)
        cr_skip_test("no /proc/self/status: cannot bound the address space safely");
    char line[256];
    unsigned long long kib = 0;
    while (fgets(line, sizeof line, status) != NULL)
        if (strncmp(line, "VmSize:", 7) == 0)
            kib = strtoull(line + 7, NULL, 10);
    fclose(status);
    cr_assert_gt(kib, 0);
    struct rlimit limit = {.rlim_cur = kib * 1024 + headroom, .rlim_max = kib * 1024 + headroom};
    cr_assert_eq(setrlimit(RLIMIT_AS, &limit), 0);
}

static void expect_combiner_refused(bloopcl_context *ctx, size_t n, bloopcl_method method)
{
    bloopcl_config config = {.struct_size = sizeof(bloopcl_config)};
    bloopcl_config_default(&config, method);
    bloopcl_combiner *comb = NULL;
    bloopcl_status status = bloopcl_combiner_create(ctx, &config, n, &comb);
    cr_expect(status == BLOOPCL_ERR_OUT_OF_MEMORY || status == BLOOPCL_ERR_SIZE_MISMATCH,
              "%s, n = %zu: status %d (%s), expected OUT_OF_MEMORY or SIZE_MISMATCH; message: %s",
              bloopcl_method_name(method), n, (int)status, bloopcl_status_string(status),
              bloopcl_context_last_error(ctx));
    cr_expect_null(comb, "n = %zu: no combiner may be handed out", n);
    if (comb != NULL) {
        /* Show what such a combiner is worth: it cannot even take a step. */
        float x = 0.0f;
        bloopcl_status step = bloopcl_step_host(comb, &x, &x, &x);
        cr_expect_fail("n = %zu was accepted; a step on it returns %d: %s", n, (int)step,
                       bloopcl_context_last_error(ctx));
        bloopcl_combiner_destroy(comb);
    } else {
        cr_expect_str_not_empty(bloopcl_context_last_error(ctx));
    }
}

/* n = SIZE_MAX / 8: the table of state chunks alone cannot be allocated on the host. */
Test(errors, huge_n_host_allocation)
{
    bloopcl_context *ctx = support_context();
    limit_address_space(2ull << 30);
    bloopcl_config config = {.struct_size = sizeof(bloopcl_config)};
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    bloopcl_combiner *comb = NULL;
    expect_failure(ctx, bloopcl_combiner_create(ctx, &config, SIZE_MAX / 8, &comb),
                   BLOOPCL_ERR_OUT_OF_MEMORY, "n = SIZE_MAX / 8", "global memory", NULL);
    cr_expect_null(comb);
    bloopcl_context_destroy(ctx);
}

/* n = 2^40 floats: 4 TiB per state buffer, far beyond the device (and this machine). The
 * contract says OUT_OF_MEMORY. The address space is bounded first (see above). */
Test(errors, huge_n_device_allocation, .timeout = 60)
{
    bloopcl_context *ctx = support_context();
    limit_address_space(4ull << 30);
    expect_combiner_refused(ctx, (size_t)1 << 40, BLOOPCL_METHOD_BLOOP);
    bloopcl_context_destroy(ctx);
}

/* n near SIZE_MAX: sizes must not wrap around into something small that "fits". */
Test(errors, n_near_size_max)
{
    bloopcl_context *ctx = support_context();
    limit_address_space(2ull << 30);
    expect_combiner_refused(ctx, SIZE_MAX, BLOOPCL_METHOD_BLOOP);
    expect_combiner_refused(ctx, SIZE_MAX - 5, BLOOPCL_METHOD_PCGRAD);
    bloopcl_context_destroy(ctx);
}

/* Issue 15, item 15: n is checked the same way for every method, MIXED (which keeps no state)
 * included: n * 4 bytes must not overflow size_t (SIZE_MISMATCH) and one vector of n floats
 * must fit the device's global memory (OUT_OF_MEMORY). Never a combiner whose steps wrap. */
static const overlap_case every_method[] = {
    {BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_FUSED},
    {BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_CLBLAST},
    {BLOOPCL_METHOD_DYNAMIC_BARRIER, BLOOPCL_DOTS_FUSED},
    {BLOOPCL_METHOD_DYNAMIC_BARRIER, BLOOPCL_DOTS_CLBLAST},
    {BLOOPCL_METHOD_PCGRAD, BLOOPCL_DOTS_FUSED},
    {BLOOPCL_METHOD_PCGRAD, BLOOPCL_DOTS_CLBLAST},
    {BLOOPCL_METHOD_MIXED, BLOOPCL_DOTS_FUSED},
    {BLOOPCL_METHOD_MIXED, BLOOPCL_DOTS_CLBLAST},
};
#define NUM_EVERY_METHOD (sizeof every_method / sizeof every_method[0])

static void expect_n_refused(bloopcl_context *ctx, const overlap_case *c, size_t n,
                             bloopcl_status want, const char *needle)
{
    bloopcl_config config;
    bloopcl_config_default(&config, c->method);
    config.dots = c->dots;
    bloopcl_combiner *comb = (bloopcl_combiner *)&config;
    char what[160];
    snprintf(what, sizeof what, "%s (%s), n = %zu", bloopcl_method_name(c->method),
             c->dots == BLOOPCL_DOTS_FUSED ? "fused" : "clblast", n);
    char n_text[64];
    snprintf(n_text, sizeof n_text, "n = %zu", n);
    expect_failure(ctx, bloopcl_combiner_create(ctx, &config, n, &comb), want, what, n_text,
                   needle, NULL);
    cr_expect_null(comb, "%s: no combiner may be handed out", what);
    if (comb != NULL) {
        float x[4] = {0};
        bloopcl_status step = bloopcl_step_host(comb, x, x, x);
        cr_expect_fail("%s was accepted; a step on it returns %d: %s", what, (int)step,
                       bloopcl_context_last_error(ctx));
        bloopcl_combiner_destroy(comb);
    }
}

Test(errors, huge_n_for_every_method, .timeout = 60)
{
    bloopcl_context *ctx = support_context();
    limit_address_space(2ull << 30);
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    cr_assert_eq(bloopcl_context_device_info(ctx, &info), BLOOPCL_OK);
    size_t device_floats = (size_t)(info.global_mem_bytes / sizeof(float));
    for (size_t m = 0; m < NUM_EVERY_METHOD; ++m) {
        const overlap_case *c = &every_method[m];
        expect_n_refused(ctx, c, SIZE_MAX, BLOOPCL_ERR_SIZE_MISMATCH, "overflows");
        expect_n_refused(ctx, c, SIZE_MAX / 4 + 1, BLOOPCL_ERR_SIZE_MISMATCH, "overflows");
        expect_n_refused(ctx, c, SIZE_MAX / 4, BLOOPCL_ERR_OUT_OF_MEMORY, "global memory");
        expect_n_refused(ctx, c, device_floats + 1, BLOOPCL_ERR_OUT_OF_MEMORY, "global memory");
    }
    /* The bound is one vector, not more: MIXED keeps no state, so n = all of the device's
     * memory in floats is a combiner (its steps run over the caller's buffers). */
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_MIXED);
    bloopcl_combiner *comb = NULL;
    cr_expect_eq(bloopcl_combiner_create(ctx, &config, device_floats, &comb), BLOOPCL_OK, "%s",
                 bloopcl_context_last_error(ctx));
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

/* bloopcl_step_host stages g, a and d on the device: 3 n floats, which must fit the device's
 * global memory, or the call is refused before it allocates or reads anything (PoCL aborts the
 * process when it cannot back a buffer). The host arrays here are shorter than n: the call
 * must refuse before it reads them. */
Test(errors, step_host_staging_must_fit_the_device, .timeout = 60)
{
    bloopcl_context *ctx = support_context();
    limit_address_space(2ull << 30);
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    cr_assert_eq(bloopcl_context_device_info(ctx, &info), BLOOPCL_OK);
    size_t n = (size_t)(info.global_mem_bytes / (3 * sizeof(float))) + 1;
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_MIXED);
    bloopcl_combiner *comb = NULL;
    cr_assert_eq(bloopcl_combiner_create(ctx, &config, n, &comb), BLOOPCL_OK, "%s",
                 bloopcl_context_last_error(ctx));
    float x[4] = {0};
    expect_failure(ctx, bloopcl_step_host(comb, x, x, x), BLOOPCL_ERR_OUT_OF_MEMORY,
                   "step_host staging 3 n floats", "bloopcl_step_host", "staging",
                   "global memory", NULL);
    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_diagnostics(comb, &diag), BLOOPCL_OK);
    cr_expect_eq(diag.steps, 0, "a refused step is not counted");
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

/* The CPU reference takes the same n as the combiner, for every method: n * 4 bytes that
 * overflow size_t are SIZE_MISMATCH, not a wrapped allocation its loops then overrun. */
Test(errors, reference_n_overflow_for_every_method)
{
    const bloopcl_method methods[] = {BLOOPCL_METHOD_BLOOP, BLOOPCL_METHOD_DYNAMIC_BARRIER,
                                      BLOOPCL_METHOD_PCGRAD, BLOOPCL_METHOD_MIXED};
    const size_t sizes[] = {SIZE_MAX, SIZE_MAX / 4 + 1, SIZE_MAX / 2 + 1};
    for (size_t m = 0; m < 4; ++m)
        for (size_t i = 0; i < 3; ++i) {
            bloopcl_config config;
            bloopcl_config_default(&config, methods[m]);
            bloopcl_reference_state ref;
            bloopcl_status status = bloopcl_reference_init(&config, sizes[i], &ref);
            cr_expect_eq(status, BLOOPCL_ERR_SIZE_MISMATCH, "%s, n = %zu: status %d (%s)",
                         bloopcl_method_name(methods[m]), sizes[i], (int)status,
                         bloopcl_status_string(status));
            cr_expect_null(ref.ema, "no state for a refused n");
            if (status == BLOOPCL_OK)
                bloopcl_reference_free(&ref);
        }
}

/* A segment whose end (offset + count * 4 bytes) passes SIZE_MAX must be refused as too large
 * for its buffer with a message that says so, not one with the wrapped byte count, for every
 * method; nothing changes. */
ParameterizedTestParameters(errors, segment_end_wraps_for_every_method)
{
    static overlap_case cases[NUM_EVERY_METHOD];
    memcpy(cases, every_method, sizeof cases);
    return cr_make_param_array(overlap_case, cases, NUM_EVERY_METHOD);
}

ParameterizedTest(overlap_case *c, errors, segment_end_wraps_for_every_method, .timeout = 60)
{
    bloopcl_config config;
    bloopcl_config_default(&config, c->method);
    config.dots = c->dots;
    world w;
    world_open_config(&w, &config, N);
    const size_t wraps_with_offset = SIZE_MAX / 4;  /* * 4 = SIZE_MAX - 3; + 4 wraps to 0 */
    const size_t wraps_alone = SIZE_MAX / 4 + 1;    /* * 4 wraps to 0 */
    expect_failure(w.ctx, step_segments(w.comb, segment(w.gb, 4, wraps_with_offset),
                                        segment(w.ab, 0, wraps_with_offset),
                                        segment(w.db, 0, wraps_with_offset)),
                   BLOOPCL_ERR_BUFFER_TOO_SMALL, "offset 4 + (SIZE_MAX / 4) floats",
                   "g segment 0", "offset 4", "address space", NULL);
    cr_expect(strstr(bloopcl_context_last_error(w.ctx), "needs 0 bytes") == NULL,
              "the wrapped size must not be reported: %s", bloopcl_context_last_error(w.ctx));
    expect_failure(w.ctx, step_segments(w.comb, segment(w.gb, 0, wraps_alone),
                                        segment(w.ab, 0, wraps_alone),
                                        segment(w.db, 0, wraps_alone)),
                   BLOOPCL_ERR_BUFFER_TOO_SMALL, "(SIZE_MAX / 4 + 1) floats", "g segment 0",
                   "address space", NULL);
    cr_expect(strstr(bloopcl_context_last_error(w.ctx), "needs 0 bytes") == NULL,
              "the wrapped size must not be reported: %s", bloopcl_context_last_error(w.ctx));
    world_expect_untouched(&w, "after segment ends that wrap");
    world_close(&w);
}

/* ---------------------------------------------------------------------------------------------
 * Status strings and version
 * ------------------------------------------------------------------------------------------- */

Test(errors, status_strings)
{
    const char *seen[20];
    for (int code = 0; code >= BLOOPCL_ERR_TRANSPORT; --code) {
        const char *text = bloopcl_status_string((bloopcl_status)code);
        cr_assert_not_null(text);
        cr_expect_str_not_empty(text, "code %d", code);
        cr_expect_str_neq(text, "unknown status code", "code %d is a real code", code);
        for (int other = 0; other > code; --other)
            cr_expect_str_neq(text, seen[-other], "codes %d and %d share \"%s\"", code, other,
                              text);
        seen[-code] = text;
    }
    cr_expect_str_eq(bloopcl_status_string((bloopcl_status)-999), "unknown status code");
    cr_expect_str_eq(bloopcl_status_string((bloopcl_status)(BLOOPCL_ERR_TRANSPORT - 1)),
                     "unknown status code");
    cr_expect_str_eq(bloopcl_status_string((bloopcl_status)1), "unknown status code");
}

Test(errors, version)
{
    cr_expect_eq(bloopcl_version_number(), BLOOPCL_VERSION_NUMBER);
    cr_expect_eq(BLOOPCL_VERSION_NUMBER, BLOOPCL_VERSION_MAJOR * 10000 +
                 BLOOPCL_VERSION_MINOR * 100 + BLOOPCL_VERSION_PATCH);
    cr_expect_str_eq(bloopcl_version_string(), BLOOPCL_VERSION_STRING);
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", BLOOPCL_VERSION_MAJOR, BLOOPCL_VERSION_MINOR,
             BLOOPCL_VERSION_PATCH);
    cr_expect_str_eq(bloopcl_version_string(), expected);
}

/* ---------------------------------------------------------------------------------------------
 * State calls that do not fit the combiner
 * ------------------------------------------------------------------------------------------- */

Test(errors, state_with_wrong_n)
{
    world w;
    world_open(&w, BLOOPCL_METHOD_PCGRAD);
    float *host = support_alloc(N + 1);
    for (size_t i = 0; i <= N; ++i)
        host[i] = 123.0f;
    expect_failure(w.ctx, bloopcl_read_state(w.comb, BLOOPCL_STATE_EMA, host, N - 1),
                   BLOOPCL_ERR_SIZE_MISMATCH, "read n - 1", "n = 999", "1000", NULL);
    expect_failure(w.ctx, bloopcl_read_state(w.comb, BLOOPCL_STATE_AUX_EMA, host, N + 1),
                   BLOOPCL_ERR_SIZE_MISMATCH, "read n + 1", "n = 1001", NULL);
    for (size_t i = 0; i <= N; ++i)
        cr_assert_eq(host[i], 123.0f, "a refused read must not write the host array");
    expect_failure(w.ctx, bloopcl_write_state(w.comb, BLOOPCL_STATE_EMA, host, N + 1),
                   BLOOPCL_ERR_SIZE_MISMATCH, "write n + 1", "n = 1001", "1000", NULL);
    expect_failure(w.ctx, bloopcl_write_state(w.comb, BLOOPCL_STATE_AUX_EMA, host, 0),
                   BLOOPCL_ERR_SIZE_MISMATCH, "write n = 0", "n = 0", NULL);
    world_expect_untouched(&w, "after state calls with the wrong n");
    free(host);
    world_close(&w);
}

Test(errors, aux_state_on_bloop)
{
    world w;
    world_open(&w, BLOOPCL_METHOD_BLOOP);
    float host[N] = {0};
    expect_failure(w.ctx, bloopcl_read_state(w.comb, BLOOPCL_STATE_AUX_EMA, host, N),
                   BLOOPCL_ERR_STATE, "read AUX on bloop", "bloop", "auxiliary EMA", NULL);
    expect_failure(w.ctx, bloopcl_write_state(w.comb, BLOOPCL_STATE_AUX_EMA, host, N),
                   BLOOPCL_ERR_STATE, "write AUX on bloop", "bloop", "auxiliary EMA", NULL);
    world_expect_untouched(&w, "after AUX_EMA on bloop");
    world_close(&w);
}

Test(errors, state_on_mixed)
{
    world w;
    world_open(&w, BLOOPCL_METHOD_MIXED);
    float host[N] = {0};
    const bloopcl_state_kind kinds[] = {BLOOPCL_STATE_EMA, BLOOPCL_STATE_AUX_EMA};
    for (size_t k = 0; k < 2; ++k) {
        expect_failure(w.ctx, bloopcl_read_state(w.comb, kinds[k], host, N), BLOOPCL_ERR_STATE,
                       "read on mixed", "mixed", NULL);
        expect_failure(w.ctx, bloopcl_write_state(w.comb, kinds[k], host, N), BLOOPCL_ERR_STATE,
                       "write on mixed", "mixed", NULL);
        /* Even with the wrong n, the missing state is the first thing said. */
        expect_failure(w.ctx, bloopcl_read_state(w.comb, kinds[k], host, 3), BLOOPCL_ERR_STATE,
                       "read on mixed, n = 3", "mixed", NULL);
    }
    world_expect_untouched(&w, "after state calls on mixed");
    world_close(&w);
}

/* reset_state cannot restore an INIT_BUFFER state (no copy is kept): STATE, nothing changed. */
Test(errors, reset_of_buffer_init)
{
    bloopcl_config config = {.struct_size = sizeof(bloopcl_config)};
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    float *initial = support_alloc(N);
    support_fill_normal(initial, N, 9, 1.0f);
    config.init = BLOOPCL_INIT_BUFFER;
    config.initial_ema = initial;
    world w;
    world_open_config(&w, &config, N);
    expect_failure(w.ctx, bloopcl_reset_state(w.comb), BLOOPCL_ERR_STATE, "reset BUFFER",
                   "bloopcl_reset_state", "BUFFER", NULL);
    world_expect_untouched(&w, "after reset of a BUFFER init");
    free(initial);
    world_close(&w);
}
