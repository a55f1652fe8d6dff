/* test_split.c — split steps (bloopcl_step_begin / _end), the core of sharded Bloop.
 *
 * One shard: begin + end must be bloopcl_step bit for bit (d, state, scalars) for every
 * method, both dot backends and both EMA inits. Several shards in one process (combiners over
 * slices of the same gradients, uneven, one of them empty, their totals added by
 * bloopcl_sum_totals): the assembled d and the scalars must match the CPU reference over the
 * whole gradient within the dot tolerance and the assembled state bit for bit. A non-finite
 * input in one shard skips the step on all. Then the contract around the halves: every check
 * in begin (nothing pending after a refusal), nothing else accepted while a step is pending,
 * a cancel that changes nothing, the device-side totals paths, and bloopcl_sum_totals'
 * arithmetic in closed form. */
#include "support.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define STEPS 4
#define MAX_SHARDS 4

static bloopcl_config make_config(bloopcl_method method, bloopcl_dot_backend dots,
                                  bloopcl_init init)
{
    bloopcl_config config;
    bloopcl_config_default(&config, method);
    config.dots = dots;
    config.init = init;
    config.ema_weight = 0.3;
    config.lambda = 0.7;
    return config;
}

static bloopcl_tensor one_segment(bloopcl_segment *segment, cl_mem buffer, size_t count)
{
    *segment = (bloopcl_segment){.buffer = buffer, .count = count};
    return (bloopcl_tensor){segment, 1};
}

/* The scalars of the last step, as floats bit for bit. */
static void read_outputs(bloopcl_context *ctx, bloopcl_combiner *comb, float *out)
{
    cl_mem outputs = NULL;
    cr_assert_eq(bloopcl_combiner_outputs(comb, &outputs), BLOOPCL_OK);
    cr_assert_eq(clEnqueueReadBuffer(bloopcl_context_queue(ctx), outputs, CL_TRUE, 0,
                                     BLOOPCL_NUM_OUTPUTS * sizeof(float), out, 0, NULL, NULL),
                 CL_SUCCESS);
}

static bool has_kind(bloopcl_method method, bloopcl_state_kind kind)
{
    if (kind == BLOOPCL_STATE_EMA)
        return method != BLOOPCL_METHOD_MIXED;
    return method == BLOOPCL_METHOD_PCGRAD;
}

/* Reads every state kind the method keeps into state[kind] (n floats each). */
static void read_states(bloopcl_combiner *comb, bloopcl_method method, size_t n, float **state)
{
    for (int kind = 0; kind < 2; ++kind)
        if (has_kind(method, (bloopcl_state_kind)kind))
            cr_assert_eq(bloopcl_read_state(comb, (bloopcl_state_kind)kind, state[kind], n),
                         BLOOPCL_OK);
}

/* One split step on one shard, its totals combined with nobody else's. */
static bloopcl_status split_step(bloopcl_combiner *comb, const bloopcl_tensor *g,
                                 const bloopcl_tensor *a, const bloopcl_tensor *d)
{
    double totals[BLOOPCL_NUM_TOTALS];
    bloopcl_status status = bloopcl_step_begin(comb, g, a, d, NULL, 0, NULL, totals);
    if (status != BLOOPCL_OK)
        return status;
    double global[BLOOPCL_NUM_TOTALS];
    cr_assert_eq(bloopcl_sum_totals(totals, 1, global), BLOOPCL_OK);
    return bloopcl_step_end(comb, global, NULL);
}

/* --------------------------------------------------------------------------------------------
 * One shard: the split step is bloopcl_step
 * ------------------------------------------------------------------------------------------ */
static void expect_split_equals_step(bloopcl_method method, bloopcl_dot_backend dots,
                                     bloopcl_init init, float input_scale)
{
    const size_t n = 20011;
    bloopcl_context *ctx = support_context();
    bloopcl_config config = make_config(method, dots, init);
    bloopcl_combiner *plain = support_combiner(ctx, &config, n);
    bloopcl_combiner *split = support_combiner(ctx, &config, n);
    float *g = support_alloc(n), *a = support_alloc(n), *noise = support_alloc(n);
    float *d_plain = support_alloc(n), *d_split = support_alloc(n);
    float *state_plain[2] = {support_alloc(n), support_alloc(n)};
    float *state_split[2] = {support_alloc(n), support_alloc(n)};
    for (int t = 0; t < STEPS; ++t) {
        support_make_inputs(g, a, noise, n, 41, t);
        for (size_t i = 0; i < n; ++i) {  /* large inputs reach the rescued dots */
            g[i] *= input_scale;
            a[i] *= input_scale;
        }
        cl_mem gb = support_buffer(ctx, g, n), ab = support_buffer(ctx, a, n);
        cl_mem d1 = support_buffer(ctx, NULL, n), d2 = support_buffer(ctx, NULL, n);
        bloopcl_segment sg, sa, sd1, sd2;
        bloopcl_tensor tg = one_segment(&sg, gb, n), ta = one_segment(&sa, ab, n);
        bloopcl_tensor td1 = one_segment(&sd1, d1, n), td2 = one_segment(&sd2, d2, n);
        cr_assert_eq(bloopcl_step(plain, &tg, &ta, &td1, 0, NULL, NULL), BLOOPCL_OK, "%s",
                     bloopcl_context_last_error(ctx));
        cr_assert_eq(split_step(split, &tg, &ta, &td2), BLOOPCL_OK, "%s",
                     bloopcl_context_last_error(ctx));
        support_read(ctx, d1, d_plain, n);
        support_read(ctx, d2, d_split, n);
        cr_assert(memcmp(d_plain, d_split, n * sizeof(float)) == 0,
                  "%s/%s step %d: d differs", bloopcl_method_name(method),
                  dots == BLOOPCL_DOTS_FUSED ? "fused" : "clblast", t);
        float out_plain[BLOOPCL_NUM_OUTPUTS], out_split[BLOOPCL_NUM_OUTPUTS];
        read_outputs(ctx, plain, out_plain);
        read_outputs(ctx, split, out_split);
        cr_assert(memcmp(out_plain, out_split, sizeof out_plain) == 0,
                  "step %d: the scalars differ (r %.9g vs %.9g)", t,
                  out_plain[BLOOPCL_OUTPUT_RATIO], out_split[BLOOPCL_OUTPUT_RATIO]);
        if (init != BLOOPCL_INIT_FIRST_GRADIENT || out_plain[BLOOPCL_OUTPUT_ACCEPTED] != 0.0f) {
            read_states(plain, method, n, state_plain);
            read_states(split, method, n, state_split);
            for (int kind = 0; kind < 2; ++kind)
                if (has_kind(method, (bloopcl_state_kind)kind))
                    cr_assert(memcmp(state_plain[kind], state_split[kind],
                                     n * sizeof(float)) == 0, "step %d: state %d differs", t,
                              kind);
        }
        clReleaseMemObject(gb);
        clReleaseMemObject(ab);
        clReleaseMemObject(d1);
        clReleaseMemObject(d2);
    }
    bloopcl_diagnostics dp = BLOOPCL_DIAGNOSTICS_INIT, ds = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_diagnostics(plain, &dp), BLOOPCL_OK);
    cr_assert_eq(bloopcl_get_diagnostics(split, &ds), BLOOPCL_OK);
    cr_expect_eq(ds.steps, dp.steps, "the split steps are counted");
    cr_expect_eq(ds.kernels, dp.kernels + 1, "one more kernel: the totals' sum");
    for (int k = 0; k < 2; ++k) {
        free(state_plain[k]);
        free(state_split[k]);
    }
    free(g), free(a), free(noise), free(d_plain), free(d_split);
    bloopcl_combiner_destroy(plain);
    bloopcl_combiner_destroy(split);
    bloopcl_context_destroy(ctx);
}

static const bloopcl_method all_methods[] = {BLOOPCL_METHOD_BLOOP, BLOOPCL_METHOD_DYNAMIC_BARRIER,
                                             BLOOPCL_METHOD_PCGRAD, BLOOPCL_METHOD_MIXED};

Test(split, one_shard_is_bloopcl_step_bit_for_bit_fused)
{
    for (size_t m = 0; m < 4; ++m) {
        expect_split_equals_step(all_methods[m], BLOOPCL_DOTS_FUSED, BLOOPCL_INIT_ZEROS, 1.0f);
        expect_split_equals_step(all_methods[m], BLOOPCL_DOTS_FUSED,
                                 BLOOPCL_INIT_FIRST_GRADIENT, 1.0f);
    }
}

Test(split, one_shard_is_bloopcl_step_bit_for_bit_clblast)
{
    for (size_t m = 0; m < 4; ++m)
        expect_split_equals_step(all_methods[m], BLOOPCL_DOTS_CLBLAST, BLOOPCL_INIT_ZEROS, 1.0f);
}

/* Inputs of 4e19: every square overflows fp32, so the fused dots are rescued (hi rows). */
Test(split, one_shard_is_bloopcl_step_bit_for_bit_rescued_dots)
{
    expect_split_equals_step(BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_FUSED, BLOOPCL_INIT_ZEROS, 4e19f);
    expect_split_equals_step(BLOOPCL_METHOD_PCGRAD, BLOOPCL_DOTS_FUSED, BLOOPCL_INIT_ZEROS,
                             1e-21f);
}

/* --------------------------------------------------------------------------------------------
 * Several shards in one process
 * ------------------------------------------------------------------------------------------ */
typedef struct shards {
    size_t count;                    /* shards */
    size_t size[MAX_SHARDS], start[MAX_SHARDS];
    bloopcl_combiner *comb[MAX_SHARDS];  /* NULL for an empty shard */
} shards;

static void make_shards(bloopcl_context *ctx, const bloopcl_config *config, const size_t *sizes,
                        size_t count, shards *s)
{
    size_t start = 0;
    s->count = count;
    for (size_t r = 0; r < count; ++r) {
        s->size[r] = sizes[r];
        s->start[r] = start;
        start += sizes[r];
        s->comb[r] = sizes[r] > 0 ? support_combiner(ctx, config, sizes[r]) : NULL;
    }
}

/* One sharded step over host g, a: each shard begins on its slice, the totals are added in
 * shard order (an empty shard adds zeros), each shard ends; d assembled into d_out. Returns
 * the first failing status of a begin (then every shard has cancelled). */
static bloopcl_status sharded_step(bloopcl_context *ctx, shards *s, const float *g,
                                   const float *a, float *d_out)
{
    double rows[MAX_SHARDS * BLOOPCL_NUM_TOTALS] = {0};
    cl_mem buffers[MAX_SHARDS][3] = {{NULL}};
    bloopcl_status failed = BLOOPCL_OK;
    for (size_t r = 0; r < s->count; ++r) {
        if (s->comb[r] == NULL)
            continue;
        size_t n = s->size[r], at = s->start[r];
        buffers[r][0] = support_buffer(ctx, g + at, n);
        buffers[r][1] = support_buffer(ctx, a + at, n);
        buffers[r][2] = support_buffer(ctx, NULL, n);
        bloopcl_segment seg[3];
        bloopcl_tensor tg = one_segment(&seg[0], buffers[r][0], n);
        bloopcl_tensor ta = one_segment(&seg[1], buffers[r][1], n);
        bloopcl_tensor td = one_segment(&seg[2], buffers[r][2], n);
        bloopcl_status status = bloopcl_step_begin(s->comb[r], &tg, &ta, &td, NULL, 0, NULL,
                                                   rows + r * BLOOPCL_NUM_TOTALS);
        if (status != BLOOPCL_OK && failed == BLOOPCL_OK)
            failed = status;
    }
    double global[BLOOPCL_NUM_TOTALS];
    cr_assert_eq(bloopcl_sum_totals(rows, s->count, global), BLOOPCL_OK);
    for (size_t r = 0; r < s->count; ++r) {
        if (s->comb[r] == NULL)
            continue;
        if (failed != BLOOPCL_OK)  /* the shards that did begin cancel: nobody steps alone */
            bloopcl_step_cancel(s->comb[r]);
        else
            cr_assert_eq(bloopcl_step_end(s->comb[r], global, NULL), BLOOPCL_OK, "%s",
                         bloopcl_context_last_error(ctx));
        if (failed == BLOOPCL_OK)
            support_read(ctx, buffers[r][2], d_out + s->start[r], s->size[r]);
        for (int k = 0; k < 3; ++k)
            clReleaseMemObject(buffers[r][k]);
    }
    return failed;
}

static void read_sharded_state(shards *s, bloopcl_method method, float **state)
{
    for (int kind = 0; kind < 2; ++kind)
        for (size_t r = 0; r < s->count && has_kind(method, (bloopcl_state_kind)kind); ++r)
            if (s->comb[r] != NULL)
                cr_assert_eq(bloopcl_read_state(s->comb[r], (bloopcl_state_kind)kind,
                                                state[kind] + s->start[r], s->size[r]),
                             BLOOPCL_OK);
}

static void expect_sharded_matches_reference(bloopcl_method method, bloopcl_dot_backend dots,
                                             const size_t *sizes, size_t count)
{
    bloopcl_context *ctx = support_context();
    bloopcl_config config = make_config(method, dots, BLOOPCL_INIT_ZEROS);
    shards s;
    make_shards(ctx, &config, sizes, count, &s);
    size_t n = s.start[count - 1] + s.size[count - 1];
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(&config, n, &ref), BLOOPCL_OK);
    float *g = support_alloc(n), *a = support_alloc(n), *noise = support_alloc(n);
    float *d = support_alloc(n), *d_ref = support_alloc(n);
    float *state[2] = {support_alloc(n), support_alloc(n)};
    for (int t = 0; t < STEPS; ++t) {
        support_make_inputs(g, a, noise, n, 7, t);
        cr_assert_eq(sharded_step(ctx, &s, g, a, d), BLOOPCL_OK);
        bloopcl_diagnostics dev = BLOOPCL_DIAGNOSTICS_INIT, want = BLOOPCL_DIAGNOSTICS_INIT;
        for (size_t r = 0; r < count; ++r) {  /* every shard holds the same scalars */
            if (s.comb[r] == NULL)
                continue;
            bloopcl_diagnostics mine = BLOOPCL_DIAGNOSTICS_INIT;
            cr_assert_eq(bloopcl_get_diagnostics(s.comb[r], &mine), BLOOPCL_OK);
            if (dev.steps != 0)
                cr_assert(mine.ratio == dev.ratio && mine.aux_ratio == dev.aux_ratio &&
                              mine.grad_norm_sq == dev.grad_norm_sq,
                          "shards %zu and 0 disagree on the scalars", r);
            dev = mine;
        }
        cr_assert_eq(bloopcl_reference_step(&config, &ref, g, a, d_ref, &want), BLOOPCL_OK);
        support_expect_step_matches(&config, n, g, a, d, d_ref, &dev, &want, ref.ema,
                                    ref.aux_ema, t);
        read_sharded_state(&s, method, state);
        if (ref.ema != NULL)
            cr_assert(memcmp(state[0], ref.ema, n * sizeof(float)) == 0,
                      "step %d: the sharded EMA is not the reference's bit for bit", t);
        if (ref.aux_ema != NULL)
            cr_assert(memcmp(state[1], ref.aux_ema, n * sizeof(float)) == 0,
                      "step %d: the sharded auxiliary EMA differs", t);
    }
    for (size_t r = 0; r < count; ++r)
        bloopcl_combiner_destroy(s.comb[r]);
    bloopcl_reference_free(&ref);
    free(g), free(a), free(noise), free(d), free(d_ref), free(state[0]), free(state[1]);
    bloopcl_context_destroy(ctx);
}

Test(split, uneven_shards_with_an_empty_one_match_the_reference)
{
    static const size_t three[] = {3001, 0, 17010};
    static const size_t four[] = {1, 9000, 11010, 0};
    for (size_t m = 0; m < 4; ++m) {
        expect_sharded_matches_reference(all_methods[m], BLOOPCL_DOTS_FUSED, three, 3);
        expect_sharded_matches_reference(all_methods[m], BLOOPCL_DOTS_CLBLAST, four, 4);
    }
}

/* A NaN in one shard's g: every shard skips (policy SKIP), no state moves, and the next step
 * goes on from the state before it. */
Test(split, a_nonfinite_input_in_one_shard_skips_the_step_on_every_shard)
{
    static const size_t sizes[] = {4000, 5000, 3000};
    bloopcl_context *ctx = support_context();
    bloopcl_config config = make_config(BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_FUSED,
                                        BLOOPCL_INIT_ZEROS);
    shards s;
    make_shards(ctx, &config, sizes, 3, &s);
    size_t n = 12000;
    float *g = support_alloc(n), *a = support_alloc(n), *noise = support_alloc(n);
    float *d = support_alloc(n), *before[2] = {support_alloc(n), NULL};
    float *after[2] = {support_alloc(n), NULL};
    support_make_inputs(g, a, noise, n, 3, 0);
    cr_assert_eq(sharded_step(ctx, &s, g, a, d), BLOOPCL_OK);
    read_sharded_state(&s, config.method, before);
    g[4000 + 777] = NAN;  /* in shard 1 only */
    cr_assert_eq(sharded_step(ctx, &s, g, a, d), BLOOPCL_OK);
    for (size_t r = 0; r < 3; ++r) {
        bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
        cr_assert_eq(bloopcl_get_diagnostics(s.comb[r], &diag), BLOOPCL_OK);
        cr_expect(!diag.accepted, "shard %zu applied a step another shard found non-finite", r);
        cr_expect_eq(diag.reason, BLOOPCL_SKIP_NONFINITE_INPUT);
    }
    read_sharded_state(&s, config.method, after);
    cr_assert(memcmp(before[0], after[0], n * sizeof(float)) == 0, "the state moved");
    for (size_t r = 0; r < 3; ++r)
        bloopcl_combiner_destroy(s.comb[r]);
    free(g), free(a), free(noise), free(d), free(before[0]), free(after[0]);
    bloopcl_context_destroy(ctx);
}

/* --------------------------------------------------------------------------------------------
 * The contract between the halves
 * ------------------------------------------------------------------------------------------ */
typedef struct fixture {
    bloopcl_context *ctx;
    bloopcl_combiner *comb;
    cl_mem g, a, d;
    bloopcl_segment seg[3];
    bloopcl_tensor tg, ta, td;
    size_t n;
    float *host_g, *host_a;
} fixture;

static void fixture_open(fixture *f, bloopcl_method method)
{
    f->n = 4099;
    f->ctx = support_context();
    bloopcl_config config = make_config(method, BLOOPCL_DOTS_FUSED, BLOOPCL_INIT_ZEROS);
    f->comb = support_combiner(f->ctx, &config, f->n);
    float *noise = support_alloc(f->n);
    f->host_g = support_alloc(f->n);
    f->host_a = support_alloc(f->n);
    support_make_inputs(f->host_g, f->host_a, noise, f->n, 5, 1);
    free(noise);
    f->g = support_buffer(f->ctx, f->host_g, f->n);
    f->a = support_buffer(f->ctx, f->host_a, f->n);
    f->d = support_buffer(f->ctx, NULL, f->n);
    f->tg = one_segment(&f->seg[0], f->g, f->n);
    f->ta = one_segment(&f->seg[1], f->a, f->n);
    f->td = one_segment(&f->seg[2], f->d, f->n);
}

static void fixture_close(fixture *f)
{
    clReleaseMemObject(f->g);
    clReleaseMemObject(f->a);
    clReleaseMemObject(f->d);
    free(f->host_g);
    free(f->host_a);
    bloopcl_combiner_destroy(f->comb);
    bloopcl_context_destroy(f->ctx);
}

static void expect_message(bloopcl_context *ctx, const char *part)
{
    const char *message = bloopcl_context_last_error(ctx);
    cr_expect(strstr(message, part) != NULL, "message \"%s\" lacks \"%s\"", message, part);
}

Test(split, begin_refuses_what_bloopcl_step_refuses_and_leaves_nothing_pending)
{
    fixture f;
    fixture_open(&f, BLOOPCL_METHOD_BLOOP);
    bloopcl_segment short_segment = f.seg[1];
    short_segment.count = f.n - 1;
    bloopcl_tensor short_a = {&short_segment, 1};
    double totals[BLOOPCL_NUM_TOTALS];
    cr_expect_eq(bloopcl_step_begin(f.comb, &f.tg, &short_a, &f.td, NULL, 0, NULL, totals),
                 BLOOPCL_ERR_SIZE_MISMATCH);
    bloopcl_step_options bad = BLOOPCL_STEP_OPTIONS_INIT;
    bad.inv_scale_g = NAN;
    cr_expect_eq(bloopcl_step_begin(f.comb, &f.tg, &f.ta, &f.td, &bad, 0, NULL, totals),
                 BLOOPCL_ERR_INVALID_ARGUMENT);
    cr_expect_eq(bloopcl_step_begin(NULL, &f.tg, &f.ta, &f.td, NULL, 0, NULL, totals),
                 BLOOPCL_ERR_NULL_ARGUMENT);
    cr_expect_eq(bloopcl_step_cancel(f.comb), BLOOPCL_ERR_STATE, "nothing is pending");
    expect_message(f.ctx, "no split step is pending");
    cr_expect_eq(bloopcl_step_end(f.comb, totals, NULL), BLOOPCL_ERR_STATE);
    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_diagnostics(f.comb, &diag), BLOOPCL_OK);
    cr_expect_eq(diag.steps, 0u, "no step was counted");
    cr_expect_eq(bloopcl_step(f.comb, &f.tg, &f.ta, &f.td, 0, NULL, NULL), BLOOPCL_OK,
                 "the combiner steps normally after the refusals");
    fixture_close(&f);
}

Test(split, a_pending_step_refuses_every_other_call)
{
    fixture f;
    fixture_open(&f, BLOOPCL_METHOD_BLOOP);
    cr_assert_eq(bloopcl_step_begin(f.comb, &f.tg, &f.ta, &f.td, NULL, 0, NULL, NULL),
                 BLOOPCL_OK);
    float *host = support_alloc(f.n), *d = support_alloc(f.n);
    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
    cr_expect_eq(bloopcl_step(f.comb, &f.tg, &f.ta, &f.td, 0, NULL, NULL), BLOOPCL_ERR_STATE);
    expect_message(f.ctx, "a split step is pending");
    cr_expect_eq(bloopcl_step_begin(f.comb, &f.tg, &f.ta, &f.td, NULL, 0, NULL, NULL),
                 BLOOPCL_ERR_STATE);
    expect_message(f.ctx, "bloopcl_step_begin: a split step is pending");
    cr_expect_eq(bloopcl_step_host(f.comb, f.host_g, f.host_a, d), BLOOPCL_ERR_STATE);
    cr_expect_eq(bloopcl_read_state(f.comb, BLOOPCL_STATE_EMA, host, f.n), BLOOPCL_ERR_STATE);
    cr_expect_eq(bloopcl_write_state(f.comb, BLOOPCL_STATE_EMA, host, f.n), BLOOPCL_ERR_STATE);
    cr_expect_eq(bloopcl_reset_state(f.comb), BLOOPCL_ERR_STATE);
    cr_expect_eq(bloopcl_combiner_set_hyperparameters(f.comb, 0.5, 0.5, 0.0), BLOOPCL_ERR_STATE);
    cr_expect_eq(bloopcl_get_diagnostics(f.comb, &diag), BLOOPCL_ERR_STATE);
    double totals[BLOOPCL_NUM_TOTALS];
    cr_expect_eq(bloopcl_step_read_totals(f.comb, NULL), BLOOPCL_ERR_NULL_ARGUMENT);
    cr_expect_eq(bloopcl_step_read_totals(f.comb, totals), BLOOPCL_OK, "still pending");
    cr_expect_eq(bloopcl_step_end(f.comb, NULL, NULL), BLOOPCL_ERR_NULL_ARGUMENT);
    expect_message(f.ctx, "the step was cancelled");
    cr_expect_eq(bloopcl_step_cancel(f.comb), BLOOPCL_ERR_STATE, "the NULL end cancelled it");
    cr_assert_eq(bloopcl_get_diagnostics(f.comb, &diag), BLOOPCL_OK);
    cr_expect_eq(diag.steps, 0u);
    free(host), free(d);
    fixture_close(&f);
}

/* begin, cancel, then a step: the same bits as a combiner that only took the step. */
Test(split, a_cancelled_step_changes_nothing)
{
    fixture f, fresh;
    fixture_open(&f, BLOOPCL_METHOD_PCGRAD);
    fixture_open(&fresh, BLOOPCL_METHOD_PCGRAD);
    float *nan_g = support_alloc(f.n);
    memcpy(nan_g, f.host_g, f.n * sizeof(float));
    nan_g[10] = INFINITY;  /* pass 1 sets the non-finite flag: the cancel must clear it */
    cl_mem bad = support_buffer(f.ctx, nan_g, f.n);
    bloopcl_segment bad_seg = {.buffer = bad, .count = f.n};
    bloopcl_tensor bad_g = {&bad_seg, 1};
    cr_assert_eq(bloopcl_step_begin(f.comb, &bad_g, &f.ta, &f.td, NULL, 0, NULL, NULL),
                 BLOOPCL_OK);
    cr_assert_eq(bloopcl_step_cancel(f.comb), BLOOPCL_OK);
    cr_assert_eq(bloopcl_step(f.comb, &f.tg, &f.ta, &f.td, 0, NULL, NULL), BLOOPCL_OK);
    cr_assert_eq(bloopcl_step(fresh.comb, &fresh.tg, &fresh.ta, &fresh.td, 0, NULL, NULL),
                 BLOOPCL_OK);
    float *d1 = support_alloc(f.n), *d2 = support_alloc(f.n);
    support_read(f.ctx, f.d, d1, f.n);
    support_read(fresh.ctx, fresh.d, d2, f.n);
    cr_expect(memcmp(d1, d2, f.n * sizeof(float)) == 0, "d after a cancelled step");
    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_diagnostics(f.comb, &diag), BLOOPCL_OK);
    cr_expect(diag.accepted, "the non-finite flag of the cancelled step was cleared");
    cr_expect_eq(diag.steps, 1u);
    float *s1 = support_alloc(f.n), *s2 = support_alloc(f.n);
    for (int kind = 0; kind < 2; ++kind) {
        cr_assert_eq(bloopcl_read_state(f.comb, (bloopcl_state_kind)kind, s1, f.n), BLOOPCL_OK);
        cr_assert_eq(bloopcl_read_state(fresh.comb, (bloopcl_state_kind)kind, s2, f.n),
                     BLOOPCL_OK);
        cr_expect(memcmp(s1, s2, f.n * sizeof(float)) == 0, "state %d", kind);
    }
    clReleaseMemObject(bad);
    free(nan_g), free(d1), free(d2), free(s1), free(s2);
    fixture_close(&f);
    fixture_close(&fresh);
}

/* The device path: copy the local totals out, end from a buffer; the same as the host path. */
Test(split, device_totals_equal_host_totals)
{
    fixture f, host;
    fixture_open(&f, BLOOPCL_METHOD_BLOOP);
    fixture_open(&host, BLOOPCL_METHOD_BLOOP);
    cl_int err;
    const size_t offset = 12;  /* bytes */
    size_t bytes = offset + BLOOPCL_NUM_TOTALS * sizeof(float);
    cl_mem reduce = clCreateBuffer(bloopcl_context_cl_context(f.ctx), CL_MEM_READ_WRITE, bytes,
                                   NULL, &err);
    cr_assert_eq(err, CL_SUCCESS);
    cl_mem small = clCreateBuffer(bloopcl_context_cl_context(f.ctx), CL_MEM_READ_WRITE,
                                  bytes - 4, NULL, &err);
    cr_assert_eq(err, CL_SUCCESS);
    for (int t = 0; t < 3; ++t) {
        cr_assert_eq(bloopcl_step_begin(f.comb, &f.tg, &f.ta, &f.td, NULL, 0, NULL, NULL),
                     BLOOPCL_OK);
        cr_expect_eq(bloopcl_step_copy_totals(f.comb, small, offset), BLOOPCL_ERR_BUFFER_TOO_SMALL);
        cr_expect_eq(bloopcl_step_copy_totals(f.comb, NULL, 0), BLOOPCL_ERR_NULL_ARGUMENT);
        cr_assert_eq(bloopcl_step_copy_totals(f.comb, reduce, offset), BLOOPCL_OK);
        double read_back[BLOOPCL_NUM_TOTALS];
        cr_assert_eq(bloopcl_step_read_totals(f.comb, read_back), BLOOPCL_OK);
        float copied[BLOOPCL_NUM_TOTALS];
        cr_assert_eq(clEnqueueReadBuffer(bloopcl_context_queue(f.ctx), reduce, CL_TRUE, offset,
                                         sizeof copied, copied, 0, NULL, NULL), CL_SUCCESS);
        for (int i = 0; i < BLOOPCL_NUM_TOTALS; ++i)
            cr_expect_eq((double)copied[i], read_back[i], "total %d", i);
        cr_expect(read_back[BLOOPCL_NUM_TOTALS - 2] == 0.0, "no non-finite input counted");
        cr_assert_eq(bloopcl_step_end_buffer(f.comb, reduce, offset, NULL), BLOOPCL_OK, "%s",
                     bloopcl_context_last_error(f.ctx));
        cr_assert_eq(split_step(host.comb, &host.tg, &host.ta, &host.td), BLOOPCL_OK);
    }
    float *d1 = support_alloc(f.n), *d2 = support_alloc(f.n);
    support_read(f.ctx, f.d, d1, f.n);
    support_read(host.ctx, host.d, d2, f.n);
    cr_expect(memcmp(d1, d2, f.n * sizeof(float)) == 0, "the device path's d");
    cr_assert_eq(bloopcl_step_begin(f.comb, &f.tg, &f.ta, &f.td, NULL, 0, NULL, NULL),
                 BLOOPCL_OK);
    cr_expect_eq(bloopcl_step_end_buffer(f.comb, small, offset, NULL),
                 BLOOPCL_ERR_BUFFER_TOO_SMALL);
    expect_message(f.ctx, "the step was cancelled");
    cr_expect_eq(bloopcl_step_cancel(f.comb), BLOOPCL_ERR_STATE, "nothing left pending");
    clReleaseMemObject(reduce);
    clReleaseMemObject(small);
    free(d1), free(d2);
    fixture_close(&f);
    fixture_close(&host);
}

/* --------------------------------------------------------------------------------------------
 * bloopcl_sum_totals
 * ------------------------------------------------------------------------------------------ */
Test(split, sum_totals_is_exact_for_one_row_and_compensated_for_many)
{
    double rows[3 * BLOOPCL_NUM_TOTALS], out[BLOOPCL_NUM_TOTALS];
    for (int i = 0; i < 3 * BLOOPCL_NUM_TOTALS; ++i)
        rows[i] = 0.0;
    rows[0] = -0.0;
    rows[1] = 0x1.fffffep+127;
    rows[2] = 1e-45;
    cr_assert_eq(bloopcl_sum_totals(rows, 1, out), BLOOPCL_OK);
    cr_expect(out[0] == 0.0 && signbit(out[0]), "one row: -0 stays -0");
    cr_expect_eq(out[1], rows[1]);
    cr_expect_eq(out[2], rows[2]);
    /* 1e16 + 1 - 1e16: plainly 0 in double; compensated, exactly 1 */
    rows[3] = 1e16;
    rows[BLOOPCL_NUM_TOTALS + 3] = 1.0;
    rows[2 * BLOOPCL_NUM_TOTALS + 3] = -1e16;
    /* Inf plus finite is Inf, never NaN from the compensation; Inf - Inf is NaN */
    rows[4] = INFINITY;
    rows[BLOOPCL_NUM_TOTALS + 4] = 1.0;
    rows[5] = INFINITY;
    rows[BLOOPCL_NUM_TOTALS + 5] = -INFINITY;
    rows[6] = 1.0;
    rows[BLOOPCL_NUM_TOTALS + 6] = 2.0;
    rows[2 * BLOOPCL_NUM_TOTALS + 6] = 4.0;
    cr_assert_eq(bloopcl_sum_totals(rows, 3, out), BLOOPCL_OK);
    cr_expect_eq(out[3], 1.0, "compensated: %.17g", out[3]);
    cr_expect(isinf(out[4]) && out[4] > 0, "Inf + 1 = %g", out[4]);
    cr_expect(isnan(out[5]), "Inf - Inf = %g", out[5]);
    cr_expect_eq(out[6], 7.0);
    cr_expect_eq(bloopcl_sum_totals(NULL, 1, out), BLOOPCL_ERR_NULL_ARGUMENT);
    cr_expect_eq(bloopcl_sum_totals(rows, 1, NULL), BLOOPCL_ERR_NULL_ARGUMENT);
    cr_assert_eq(bloopcl_sum_totals(NULL, 0, out), BLOOPCL_OK);
    cr_expect_eq(out[7], 0.0, "no rows: zeros");
}
