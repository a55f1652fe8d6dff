/* test_optimizer.c — the optimizer in the step (bloopcl_combiner_set_optimizer and
 * options.update_parameters).
 *
 * The oracle: a fused step must equal "bloopcl step, then the reference optimizer on d".
 * A twin combiner without an optimizer takes the same steps over the same layout and writes
 * d; the host applies bloopcl_reference_optimizer_step to its own copy of the parameters;
 * the device's parameters, moments and t must agree after every step, for every method, both
 * dot backends, SGD (momentum, dampening, Nesterov, L2 and decoupled decay) and AdamW (with
 * and without bias correction), over 60 steps of three segments with learning-rate changes
 * from the host and from a device buffer, and a non-finite step in the middle that must
 * leave everything as it was. Then: checkpoint and resume mid-run bit for bit, closed forms
 * of the equations themselves (which the reference cannot check, being written like the
 * kernel), 2-byte parameters, a split step, and every refusal. */
#include "support.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NUM_SEGMENTS 3
static const size_t segment_counts[NUM_SEGMENTS] = {1000, 7, 2500};
#define N_TOTAL 3507
#define STEPS 60
#define NAN_STEP 30          /* g holds a NaN: the step is skipped everywhere */
#define HOST_LR_STEP 20      /* the learning rate is halved from the host */
#define DEVICE_LR_STEP 40    /* and from here on read from a device buffer */

/* One tensor as NUM_SEGMENTS buffers of its own. */
typedef struct tensor_set {
    cl_mem buffers[NUM_SEGMENTS];
    bloopcl_segment segments[NUM_SEGMENTS];
    bloopcl_tensor tensor;
} tensor_set;

static void make_tensor(bloopcl_context *ctx, tensor_set *t, const float *host)
{
    size_t first = 0;
    for (int s = 0; s < NUM_SEGMENTS; ++s) {
        t->buffers[s] = support_buffer(ctx, host ? host + first : NULL, segment_counts[s]);
        t->segments[s] = (bloopcl_segment){.buffer = t->buffers[s], .count = segment_counts[s]};
        first += segment_counts[s];
    }
    t->tensor = (bloopcl_tensor){t->segments, NUM_SEGMENTS};
}

static void write_tensor(bloopcl_context *ctx, tensor_set *t, const float *host)
{
    size_t first = 0;
    for (int s = 0; s < NUM_SEGMENTS; ++s) {
        cr_assert_eq(clEnqueueWriteBuffer(bloopcl_context_queue(ctx), t->buffers[s], CL_TRUE, 0,
                                          segment_counts[s] * sizeof(float), host + first, 0,
                                          NULL, NULL),
                     CL_SUCCESS);
        first += segment_counts[s];
    }
}

static void read_tensor(bloopcl_context *ctx, const tensor_set *t, float *host)
{
    size_t first = 0;
    for (int s = 0; s < NUM_SEGMENTS; ++s) {
        support_read(ctx, t->buffers[s], host + first, segment_counts[s]);
        first += segment_counts[s];
    }
}

static void release_tensor(tensor_set *t)
{
    for (int s = 0; s < NUM_SEGMENTS; ++s)
        clReleaseMemObject(t->buffers[s]);
}

typedef struct optimizer_case {
    bloopcl_method method;
    bloopcl_dot_backend dots;
    bloopcl_optimizer_kind kind;
    double momentum, dampening, weight_decay;
    int nesterov, decoupled, bias_correction;
} optimizer_case;

static bloopcl_optimizer optimizer_of(const optimizer_case *c)
{
    bloopcl_optimizer o;
    bloopcl_optimizer_default(&o, c->kind);
    o.lr = c->kind == BLOOPCL_OPTIMIZER_SGD ? 0.05 : 0.01;
    o.momentum = c->momentum;
    o.dampening = c->dampening;
    o.nesterov = c->nesterov;
    o.weight_decay = c->weight_decay;
    o.decoupled_weight_decay = c->decoupled;
    o.bias_correction = c->bias_correction;
    return o;
}

static bloopcl_config config_of(const optimizer_case *c)
{
    bloopcl_config config;
    bloopcl_config_default(&config, c->method);
    config.dots = c->dots;
    config.ema_weight = 0.2;
    config.lambda = 0.6;
    return config;
}

/* |x - y| within a few fp32 roundings of the values involved. */
static void expect_close(const float *device, const float *host, size_t n, const char *what,
                         int step)
{
    for (size_t i = 0; i < n; ++i) {
        double tol = 4e-6 * (1.0 + fabs((double)host[i]));
        cr_assert(fabs((double)device[i] - (double)host[i]) <= tol,
                  "step %d, %s[%zu]: device %.9g, reference %.9g", step, what, i,
                  (double)device[i], (double)host[i]);
    }
}

static void expect_moments(bloopcl_combiner *comb, const bloopcl_reference_optimizer_state *ref,
                           int step)
{
    float *host = support_alloc(N_TOTAL);
    if (ref->moment1 != NULL) {
        cr_assert_eq(bloopcl_read_state(comb, BLOOPCL_STATE_MOMENT1, host, N_TOTAL), BLOOPCL_OK);
        expect_close(host, ref->moment1, N_TOTAL, "moment1", step);
    }
    if (ref->moment2 != NULL) {
        cr_assert_eq(bloopcl_read_state(comb, BLOOPCL_STATE_MOMENT2, host, N_TOTAL), BLOOPCL_OK);
        expect_close(host, ref->moment2, N_TOTAL, "moment2", step);
    }
    uint64_t t = 0;
    cr_assert_eq(bloopcl_optimizer_steps(comb, &t), BLOOPCL_OK);
    cr_assert_eq(t, ref->steps, "step %d: device t %llu, reference %llu", step,
                 (unsigned long long)t, (unsigned long long)ref->steps);
    free(host);
}

/* The inputs of step t; a NaN in g at NAN_STEP. */
static void inputs_of(float *g, float *a, float *noise, int t)
{
    support_make_inputs(g, a, noise, N_TOTAL, 77, t);
    if (t == NAN_STEP)
        g[N_TOTAL / 2] = NAN;
}

typedef struct fused_run {
    bloopcl_context *ctx;
    bloopcl_combiner *fused, *plain;
    tensor_set g, a, d, params;
    cl_mem lr_buffer;
    double lr;
} fused_run;

static void open_run(fused_run *run, const optimizer_case *c, const float *params0)
{
    run->ctx = support_context();
    bloopcl_config config = config_of(c);
    run->fused = support_combiner(run->ctx, &config, N_TOTAL);
    run->plain = support_combiner(run->ctx, &config, N_TOTAL);
    bloopcl_optimizer o = optimizer_of(c);
    cr_assert_eq(bloopcl_combiner_set_optimizer(run->fused, &o), BLOOPCL_OK, "%s",
                 bloopcl_context_last_error(run->ctx));
    run->lr = o.lr;
    make_tensor(run->ctx, &run->g, NULL);
    make_tensor(run->ctx, &run->a, NULL);
    make_tensor(run->ctx, &run->d, NULL);
    make_tensor(run->ctx, &run->params, params0);
    run->lr_buffer = support_buffer(run->ctx, NULL, 4);
}

static void close_run(fused_run *run)
{
    release_tensor(&run->g);
    release_tensor(&run->a);
    release_tensor(&run->d);
    release_tensor(&run->params);
    clReleaseMemObject(run->lr_buffer);
    bloopcl_combiner_destroy(run->fused);
    bloopcl_combiner_destroy(run->plain);
    bloopcl_context_destroy(run->ctx);
}

/* Step t of the fused combiner, with the schedule: host lr from HOST_LR_STEP, device lr
 * (index 2 of lr_buffer) from DEVICE_LR_STEP. */
static bloopcl_status fused_step(fused_run *run, int t)
{
    bloopcl_step_options options = BLOOPCL_STEP_OPTIONS_INIT;
    options.update_parameters = 1;
    if (t == HOST_LR_STEP) {
        run->lr *= 0.5;
        cr_assert_eq(bloopcl_combiner_set_learning_rate(run->fused, run->lr), BLOOPCL_OK);
    }
    if (t >= DEVICE_LR_STEP) {
        const float device_lr[4] = {0.0f, 0.0f, (float)(run->lr * 0.25), 0.0f};
        cr_assert_eq(clEnqueueWriteBuffer(bloopcl_context_queue(run->ctx), run->lr_buffer,
                                          CL_TRUE, 0, sizeof device_lr, device_lr, 0, NULL,
                                          NULL),
                     CL_SUCCESS);
        options.lr_buffer = run->lr_buffer;
        options.lr_index = 2;
    }
    return bloopcl_step_with_options(run->fused, &run->g.tensor, &run->a.tensor,
                                     &run->params.tensor, &options, 0, NULL, NULL);
}

static double lr_at(const fused_run *run, int t)
{
    return t >= DEVICE_LR_STEP ? (double)(float)(run->lr * 0.25) : run->lr;
}

static void run_against_reference(const optimizer_case *c)
{
    float *g = support_alloc(N_TOTAL), *a = support_alloc(N_TOTAL), *d = support_alloc(N_TOTAL);
    float *noise = support_alloc(N_TOTAL), *p_ref = support_alloc(N_TOTAL);
    float *p_dev = support_alloc(N_TOTAL), *p_before = support_alloc(N_TOTAL);
    support_fill_normal(p_ref, N_TOTAL, 5, 0.5f);
    fused_run run;
    open_run(&run, c, p_ref);
    bloopcl_optimizer o = optimizer_of(c);
    bloopcl_reference_optimizer_state ref;
    cr_assert_eq(bloopcl_reference_optimizer_init(&o, N_TOTAL, &ref), BLOOPCL_OK);
    for (int t = 1; t <= STEPS; ++t) {
        inputs_of(g, a, noise, t);
        write_tensor(run.ctx, &run.g, g);
        write_tensor(run.ctx, &run.a, a);
        memcpy(p_before, p_ref, N_TOTAL * sizeof(float));
        cr_assert_eq(fused_step(&run, t), BLOOPCL_OK, "step %d: %s", t,
                     bloopcl_context_last_error(run.ctx));
        cr_assert_eq(bloopcl_step(run.plain, &run.g.tensor, &run.a.tensor, &run.d.tensor, 0,
                                  NULL, NULL), BLOOPCL_OK);
        bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
        cr_assert_eq(bloopcl_get_diagnostics(run.plain, &diag), BLOOPCL_OK);
        cr_assert_eq(diag.accepted, t != NAN_STEP, "step %d", t);
        read_tensor(run.ctx, &run.d, d);
        cr_assert_eq(bloopcl_reference_optimizer_step(&o, &ref, lr_at(&run, t), d, diag.accepted,
                                                      p_ref, BLOOPCL_DTYPE_F32), BLOOPCL_OK);
        read_tensor(run.ctx, &run.params, p_dev);
        expect_close(p_dev, p_ref, N_TOTAL, "params", t);
        if (t == NAN_STEP)  /* skipped: the parameters exactly as before */
            cr_assert_eq(memcmp(p_dev, p_before, N_TOTAL * sizeof(float)), 0);
        if (t == NAN_STEP || t % 15 == 0)
            expect_moments(run.fused, &ref, t);
        bloopcl_diagnostics fused = BLOOPCL_DIAGNOSTICS_INIT;
        cr_assert_eq(bloopcl_get_diagnostics(run.fused, &fused), BLOOPCL_OK);
        cr_assert_eq(fused.optimizer_steps, ref.steps);
        cr_assert_eq(fused.kernels, diag.kernels, "no launch more than a plain step");
    }
    bloopcl_reference_optimizer_free(&ref);
    close_run(&run);
    free(g), free(a), free(d), free(noise), free(p_ref), free(p_dev), free(p_before);
}

#define SGD_CASE(m, dots, mom, damp, wd, nest, dec) \
    {m, dots, BLOOPCL_OPTIMIZER_SGD, mom, damp, wd, nest, dec, 1}
#define ADAMW_CASE(m, dots, wd, dec, bias) \
    {m, dots, BLOOPCL_OPTIMIZER_ADAMW, 0, 0, wd, 0, dec, bias}

ParameterizedTestParameters(optimizer, fused_equals_step_then_reference)
{
    static optimizer_case cases[] = {
        ADAMW_CASE(BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_FUSED, 0.01, 1, 1),
        ADAMW_CASE(BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_CLBLAST, 0.01, 1, 1),
        ADAMW_CASE(BLOOPCL_METHOD_DYNAMIC_BARRIER, BLOOPCL_DOTS_FUSED, 0.1, 0, 1),
        ADAMW_CASE(BLOOPCL_METHOD_PCGRAD, BLOOPCL_DOTS_FUSED, 0.01, 1, 0),
        ADAMW_CASE(BLOOPCL_METHOD_MIXED, BLOOPCL_DOTS_FUSED, 0.0, 1, 1),
        SGD_CASE(BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_FUSED, 0.9, 0.0, 0.01, 1, 0),
        SGD_CASE(BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_CLBLAST, 0.9, 0.1, 0.01, 0, 1),
        SGD_CASE(BLOOPCL_METHOD_DYNAMIC_BARRIER, BLOOPCL_DOTS_FUSED, 0.5, 0.5, 0.0, 0, 0),
        SGD_CASE(BLOOPCL_METHOD_PCGRAD, BLOOPCL_DOTS_CLBLAST, 0.9, 0.0, 0.001, 1, 1),
        SGD_CASE(BLOOPCL_METHOD_MIXED, BLOOPCL_DOTS_FUSED, 0.0, 0.0, 0.01, 0, 0),
    };
    return cr_make_param_array(optimizer_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(optimizer_case *c, optimizer, fused_equals_step_then_reference, .timeout = 300)
{
    run_against_reference(c);
}

/* --------------------------------------------------------------------------------------------
 * Checkpoint and resume mid-run: bit for bit
 * ------------------------------------------------------------------------------------------ */

static void take_steps(fused_run *run, int from, int to, float *g, float *a, float *noise)
{
    for (int t = from; t <= to; ++t) {
        inputs_of(g, a, noise, t);
        write_tensor(run->ctx, &run->g, g);
        write_tensor(run->ctx, &run->a, a);
        cr_assert_eq(fused_step(run, t), BLOOPCL_OK, "step %d: %s", t,
                     bloopcl_context_last_error(run->ctx));
    }
}

static void copy_state(bloopcl_combiner *from, bloopcl_combiner *to, bloopcl_state_kind kind)
{
    float *host = support_alloc(N_TOTAL);
    cr_assert_eq(bloopcl_read_state(from, kind, host, N_TOTAL), BLOOPCL_OK);
    cr_assert_eq(bloopcl_write_state(to, kind, host, N_TOTAL), BLOOPCL_OK);
    free(host);
}

static void expect_same_state(bloopcl_combiner *x, bloopcl_combiner *y, bloopcl_state_kind kind)
{
    float *hx = support_alloc(N_TOTAL), *hy = support_alloc(N_TOTAL);
    cr_assert_eq(bloopcl_read_state(x, kind, hx, N_TOTAL), BLOOPCL_OK);
    cr_assert_eq(bloopcl_read_state(y, kind, hy, N_TOTAL), BLOOPCL_OK);
    cr_assert_eq(memcmp(hx, hy, N_TOTAL * sizeof(float)), 0, "state kind %d differs", kind);
    free(hx), free(hy);
}

Test(optimizer, checkpoint_resume_is_bit_exact, .timeout = 300)
{
    optimizer_case c = ADAMW_CASE(BLOOPCL_METHOD_PCGRAD, BLOOPCL_DOTS_FUSED, 0.01, 1, 1);
    float *g = support_alloc(N_TOTAL), *a = support_alloc(N_TOTAL);
    float *noise = support_alloc(N_TOTAL), *p0 = support_alloc(N_TOTAL);
    float *straight = support_alloc(N_TOTAL), *resumed = support_alloc(N_TOTAL);
    support_fill_normal(p0, N_TOTAL, 9, 0.5f);
    fused_run run, second;
    open_run(&run, &c, p0);
    take_steps(&run, 1, STEPS, g, a, noise);
    read_tensor(run.ctx, &run.params, straight);

    open_run(&second, &c, p0);  /* stops half-way: the checkpoint */
    take_steps(&second, 1, STEPS / 2, g, a, noise);
    bloopcl_config config = config_of(&c);
    bloopcl_combiner *fresh = support_combiner(second.ctx, &config, N_TOTAL);
    bloopcl_optimizer o = optimizer_of(&c);
    cr_assert_eq(bloopcl_combiner_set_optimizer(fresh, &o), BLOOPCL_OK);
    cr_assert_eq(bloopcl_combiner_set_learning_rate(fresh, second.lr), BLOOPCL_OK);
    const bloopcl_state_kind kinds[] = {BLOOPCL_STATE_EMA, BLOOPCL_STATE_AUX_EMA,
                                        BLOOPCL_STATE_MOMENT1, BLOOPCL_STATE_MOMENT2};
    for (int k = 0; k < 4; ++k)
        copy_state(second.fused, fresh, kinds[k]);
    uint64_t t = 0;
    cr_assert_eq(bloopcl_optimizer_steps(second.fused, &t), BLOOPCL_OK);
    cr_assert_eq(t, STEPS / 2 - 1, "the NaN step at %d is not counted", NAN_STEP);
    cr_assert_eq(bloopcl_set_optimizer_steps(fresh, t), BLOOPCL_OK);
    bloopcl_combiner_destroy(second.fused);
    second.fused = fresh;  /* the resumed run goes on with the new combiner */
    take_steps(&second, STEPS / 2 + 1, STEPS, g, a, noise);
    read_tensor(second.ctx, &second.params, resumed);
    cr_assert_eq(memcmp(straight, resumed, N_TOTAL * sizeof(float)), 0,
                 "resumed parameters differ from the straight run");
    cr_assert_eq(bloopcl_optimizer_steps(second.fused, &t), BLOOPCL_OK);
    cr_assert_eq(t, STEPS - 1);
    close_run(&second);
    /* the straight run's moments, compared through a fresh resume of its own state */
    close_run(&run);
    free(g), free(a), free(noise), free(p0), free(straight), free(resumed);
}

Test(optimizer, resume_matches_moments_bitwise, .timeout = 300)
{
    optimizer_case c = SGD_CASE(BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_CLBLAST, 0.9, 0.1, 0.01, 0, 1);
    float *g = support_alloc(N_TOTAL), *a = support_alloc(N_TOTAL);
    float *noise = support_alloc(N_TOTAL), *p0 = support_alloc(N_TOTAL);
    support_fill_normal(p0, N_TOTAL, 4, 0.5f);
    fused_run run;
    open_run(&run, &c, p0);
    take_steps(&run, 1, 10, g, a, noise);
    bloopcl_config config = config_of(&c);
    bloopcl_combiner *copy = support_combiner(run.ctx, &config, N_TOTAL);
    bloopcl_optimizer o = optimizer_of(&c);
    cr_assert_eq(bloopcl_combiner_set_optimizer(copy, &o), BLOOPCL_OK);
    copy_state(run.fused, copy, BLOOPCL_STATE_EMA);
    copy_state(run.fused, copy, BLOOPCL_STATE_MOMENT1);
    expect_same_state(run.fused, copy, BLOOPCL_STATE_MOMENT1);
    float *host = support_alloc(N_TOTAL);
    cr_assert_eq(bloopcl_read_state(copy, BLOOPCL_STATE_MOMENT2, host, N_TOTAL),
                 BLOOPCL_ERR_STATE, "SGD keeps no second moment");
    bloopcl_combiner_destroy(copy);
    close_run(&run);
    free(g), free(a), free(noise), free(p0), free(host);
}

/* --------------------------------------------------------------------------------------------
 * Closed forms: MIXED with lambda = 0 gives d = g, so the optimizer alone is seen
 * ------------------------------------------------------------------------------------------ */

/* Runs `steps` steps of d = g (constant g) with optimizer o from p0; parameters into p. */
static void run_constant_direction(const bloopcl_optimizer *o, const float *g_host,
                                   const float *p0, float *p, size_t n, int steps)
{
    bloopcl_context *ctx = support_context();
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_MIXED);
    config.lambda = 0.0;
    bloopcl_combiner *comb = support_combiner(ctx, &config, n);
    cr_assert_eq(bloopcl_combiner_set_optimizer(comb, o), BLOOPCL_OK, "%s",
                 bloopcl_context_last_error(ctx));
    cl_mem g = support_buffer(ctx, g_host, n), a = support_buffer(ctx, NULL, n);
    cl_mem params = support_buffer(ctx, p0, n);
    bloopcl_segment segs[3] = {{.buffer = g, .count = n}, {.buffer = a, .count = n},
                               {.buffer = params, .count = n}};
    bloopcl_tensor tg = {&segs[0], 1}, ta = {&segs[1], 1}, tp = {&segs[2], 1};
    bloopcl_step_options options = BLOOPCL_STEP_OPTIONS_INIT;
    options.update_parameters = 1;
    for (int t = 0; t < steps; ++t)
        cr_assert_eq(bloopcl_step_with_options(comb, &tg, &ta, &tp, &options, 0, NULL, NULL),
                     BLOOPCL_OK);
    support_read(ctx, params, p, n);
    clReleaseMemObject(g), clReleaseMemObject(a), clReleaseMemObject(params);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

Test(optimizer, adamw_first_step_closed_form)
{
    /* t = 1 with bias correction: m = (1 - b1) d, v = (1 - b2) d^2, c1 = 1 - b1, c2 = 1 - b2,
     * so p1 = p0 (1 - lr wd) - lr d / (|d| + eps): a step of lr against the sign of d. */
    enum { N = 64 };
    float g[N], p0[N], p[N];
    support_fill_normal(g, N, 1, 1.0f);
    support_fill_normal(p0, N, 2, 1.0f);
    bloopcl_optimizer o;
    bloopcl_optimizer_default(&o, BLOOPCL_OPTIMIZER_ADAMW);
    o.lr = 0.01;
    o.weight_decay = 0.1;
    run_constant_direction(&o, g, p0, p, N, 1);
    for (int i = 0; i < N; ++i) {
        double expected = p0[i] * (1.0 - o.lr * o.weight_decay) -
                          o.lr * g[i] / (fabs((double)g[i]) + o.eps);
        cr_assert(fabs(p[i] - expected) <= 1e-6 * (1.0 + fabs(expected)), "p[%d] = %.9g, "
                  "expected %.9g", i, (double)p[i], expected);
    }
}

Test(optimizer, sgd_momentum_closed_form)
{
    /* Constant d, no dampening: b_t = d (1 - mu^t) / (1 - mu); Nesterov steps d + mu b_t.
     * After T steps p_T = p0 - lr sum_t (step_t). */
    enum { N = 32, T = 12 };
    float g[N], p0[N], p[N], pn[N];
    support_fill_normal(g, N, 3, 1.0f);
    support_fill_normal(p0, N, 4, 1.0f);
    bloopcl_optimizer o;
    bloopcl_optimizer_default(&o, BLOOPCL_OPTIMIZER_SGD);
    o.lr = 0.1;
    o.momentum = 0.9;
    run_constant_direction(&o, g, p0, p, N, T);
    o.nesterov = 1;
    run_constant_direction(&o, g, p0, pn, N, T);
    double heavy = 0.0, nesterov = 0.0;
    for (int t = 1; t <= T; ++t) {
        double b = (1.0 - pow(o.momentum, t)) / (1.0 - o.momentum);
        heavy += b;
        nesterov += 1.0 + o.momentum * b;
    }
    for (int i = 0; i < N; ++i) {
        double e1 = p0[i] - o.lr * heavy * g[i], e2 = p0[i] - o.lr * nesterov * g[i];
        cr_assert(fabs(p[i] - e1) <= 1e-5 * (1.0 + fabs(e1)), "p[%d] = %.9g, expected %.9g", i,
                  (double)p[i], e1);
        cr_assert(fabs(pn[i] - e2) <= 1e-5 * (1.0 + fabs(e2)), "nesterov p[%d] = %.9g, "
                  "expected %.9g", i, (double)pn[i], e2);
    }
}

Test(optimizer, sgd_l2_versus_decoupled_closed_form)
{
    /* One plain SGD step: L2 gives p - lr (d + wd p), decoupled p (1 - lr wd) - lr d: the
     * same number in exact arithmetic, here two roundings apart at most. */
    enum { N = 32 };
    float g[N], p0[N], p_l2[N], p_dec[N];
    support_fill_normal(g, N, 5, 1.0f);
    support_fill_normal(p0, N, 6, 1.0f);
    bloopcl_optimizer o;
    bloopcl_optimizer_default(&o, BLOOPCL_OPTIMIZER_SGD);
    o.lr = 0.1;
    o.weight_decay = 0.5;
    run_constant_direction(&o, g, p0, p_l2, N, 1);
    o.decoupled_weight_decay = 1;
    run_constant_direction(&o, g, p0, p_dec, N, 1);
    for (int i = 0; i < N; ++i) {
        double e = p0[i] - o.lr * (g[i] + o.weight_decay * p0[i]);
        cr_assert(fabs(p_l2[i] - e) <= 1e-6 * (1.0 + fabs(e)));
        cr_assert(fabs(p_dec[i] - e) <= 1e-6 * (1.0 + fabs(e)));
    }
}

/* --------------------------------------------------------------------------------------------
 * 2-byte parameters and split steps
 * ------------------------------------------------------------------------------------------ */

Test(optimizer, bf16_parameters_match_reference)
{
    enum { N = 4099 };
    bloopcl_context *ctx = support_context();
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    bloopcl_combiner *fused = support_combiner(ctx, &config, N);
    bloopcl_combiner *plain = support_combiner(ctx, &config, N);
    bloopcl_optimizer o;
    bloopcl_optimizer_default(&o, BLOOPCL_OPTIMIZER_ADAMW);
    cr_assert_eq(bloopcl_combiner_set_optimizer(fused, &o), BLOOPCL_OK);
    float *g = support_alloc(N), *a = support_alloc(N), *noise = support_alloc(N);
    float *d = support_alloc(N), *p32 = support_alloc(N);
    uint16_t *p_ref = calloc(N, 2), *p_dev = calloc(N, 2);
    cr_assert(p_ref != NULL && p_dev != NULL);
    support_fill_normal(p32, N, 8, 1.0f);
    cr_assert_eq(bloopcl_convert(p32, BLOOPCL_DTYPE_F32, p_ref, BLOOPCL_DTYPE_BF16, N),
                 BLOOPCL_OK);
    cl_int err;
    cl_mem params = clCreateBuffer(bloopcl_context_cl_context(ctx),
                                   CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, N * 2, p_ref, &err);
    cr_assert_eq(err, CL_SUCCESS);
    cl_mem gb = support_buffer(ctx, NULL, N), ab = support_buffer(ctx, NULL, N);
    cl_mem db = support_buffer(ctx, NULL, N);
    bloopcl_segment segs[4] = {{.buffer = gb, .count = N}, {.buffer = ab, .count = N},
                               {.buffer = params, .count = N, .dtype = BLOOPCL_DTYPE_BF16},
                               {.buffer = db, .count = N}};
    bloopcl_tensor tg = {&segs[0], 1}, ta = {&segs[1], 1}, tp = {&segs[2], 1}, td = {&segs[3], 1};
    bloopcl_reference_optimizer_state ref;
    cr_assert_eq(bloopcl_reference_optimizer_init(&o, N, &ref), BLOOPCL_OK);
    bloopcl_step_options options = BLOOPCL_STEP_OPTIONS_INIT;
    options.update_parameters = 1;
    for (int t = 1; t <= 8; ++t) {
        support_make_inputs(g, a, noise, N, 3, t);
        cr_assert_eq(clEnqueueWriteBuffer(bloopcl_context_queue(ctx), gb, CL_TRUE, 0, N * 4, g,
                                          0, NULL, NULL), CL_SUCCESS);
        cr_assert_eq(clEnqueueWriteBuffer(bloopcl_context_queue(ctx), ab, CL_TRUE, 0, N * 4, a,
                                          0, NULL, NULL), CL_SUCCESS);
        cr_assert_eq(bloopcl_step_with_options(fused, &tg, &ta, &tp, &options, 0, NULL, NULL),
                     BLOOPCL_OK, "%s", bloopcl_context_last_error(ctx));
        cr_assert_eq(bloopcl_step(plain, &tg, &ta, &td, 0, NULL, NULL), BLOOPCL_OK);
        support_read(ctx, db, d, N);
        cr_assert_eq(bloopcl_reference_optimizer_step(&o, &ref, o.lr, d, 1, p_ref,
                                                      BLOOPCL_DTYPE_BF16), BLOOPCL_OK);
    }
    cr_assert_eq(clEnqueueReadBuffer(bloopcl_context_queue(ctx), params, CL_TRUE, 0, N * 2,
                                     p_dev, 0, NULL, NULL), CL_SUCCESS);
    size_t differ = 0;
    for (size_t i = 0; i < N; ++i)  /* one bf16 ulp at most, where fp32 rounding differed */
        differ += abs((int)p_dev[i] - (int)p_ref[i]) > 1;
    cr_assert_eq(differ, 0, "%zu bf16 parameters differ by more than one ulp", differ);
    bloopcl_reference_optimizer_free(&ref);
    clReleaseMemObject(params), clReleaseMemObject(gb), clReleaseMemObject(ab);
    clReleaseMemObject(db);
    bloopcl_combiner_destroy(fused), bloopcl_combiner_destroy(plain);
    bloopcl_context_destroy(ctx);
    free(g), free(a), free(noise), free(d), free(p32), free(p_ref), free(p_dev);
}

Test(optimizer, split_step_equals_fused_step, .timeout = 300)
{
    optimizer_case c = ADAMW_CASE(BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_FUSED, 0.01, 1, 1);
    float *g = support_alloc(N_TOTAL), *a = support_alloc(N_TOTAL);
    float *noise = support_alloc(N_TOTAL), *p0 = support_alloc(N_TOTAL);
    float *whole = support_alloc(N_TOTAL), *split = support_alloc(N_TOTAL);
    support_fill_normal(p0, N_TOTAL, 11, 0.5f);
    fused_run run;
    open_run(&run, &c, p0);
    bloopcl_config config = config_of(&c);
    bloopcl_combiner *shard = support_combiner(run.ctx, &config, N_TOTAL);
    bloopcl_optimizer o = optimizer_of(&c);
    cr_assert_eq(bloopcl_combiner_set_optimizer(shard, &o), BLOOPCL_OK);
    tensor_set p_split;
    make_tensor(run.ctx, &p_split, p0);
    bloopcl_step_options options = BLOOPCL_STEP_OPTIONS_INIT;
    options.update_parameters = 1;
    for (int t = 1; t <= 5; ++t) {
        inputs_of(g, a, noise, t);
        write_tensor(run.ctx, &run.g, g);
        write_tensor(run.ctx, &run.a, a);
        cr_assert_eq(fused_step(&run, t), BLOOPCL_OK);
        double totals[BLOOPCL_NUM_TOTALS];
        cr_assert_eq(bloopcl_step_begin(shard, &run.g.tensor, &run.a.tensor, &p_split.tensor,
                                        &options, 0, NULL, totals), BLOOPCL_OK);
        cr_assert_eq(bloopcl_step_end(shard, totals, NULL), BLOOPCL_OK);
    }
    read_tensor(run.ctx, &run.params, whole);
    read_tensor(run.ctx, &p_split, split);
    cr_assert_eq(memcmp(whole, split, N_TOTAL * sizeof(float)), 0);
    expect_same_state(run.fused, shard, BLOOPCL_STATE_MOMENT2);
    release_tensor(&p_split);
    bloopcl_combiner_destroy(shard);
    close_run(&run);
    free(g), free(a), free(noise), free(p0), free(whole), free(split);
}

/* --------------------------------------------------------------------------------------------
 * Refusals: a status and a message, and nothing changed
 * ------------------------------------------------------------------------------------------ */

static void expect_refused(bloopcl_status status, bloopcl_status expected, bloopcl_context *ctx,
                           const char *needle)
{
    cr_assert_eq(status, expected, "status %d (%s), expected %d: %s", status,
                 bloopcl_status_string(status), expected, bloopcl_context_last_error(ctx));
    cr_assert(strstr(bloopcl_context_last_error(ctx), needle) != NULL,
              "message \"%s\" lacks \"%s\"", bloopcl_context_last_error(ctx), needle);
}

Test(optimizer, bad_settings_are_refused)
{
    bloopcl_optimizer o;
    char message[512];
    struct { const char *field; double value; } bad[] = {
        {"lr", NAN}, {"lr", -1.0}, {"weight_decay", INFINITY}, {"beta1", 1.0}, {"beta2", -0.1},
        {"eps", NAN}, {"momentum", -0.5}, {"dampening", 1.5}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        bool sgd = strcmp(bad[i].field, "momentum") == 0 || strcmp(bad[i].field, "dampening") == 0;
        bloopcl_optimizer_default(&o, sgd ? BLOOPCL_OPTIMIZER_SGD : BLOOPCL_OPTIMIZER_ADAMW);
        double *field = strcmp(bad[i].field, "lr") == 0             ? &o.lr
                        : strcmp(bad[i].field, "weight_decay") == 0 ? &o.weight_decay
                        : strcmp(bad[i].field, "beta1") == 0        ? &o.beta1
                        : strcmp(bad[i].field, "beta2") == 0        ? &o.beta2
                        : strcmp(bad[i].field, "eps") == 0          ? &o.eps
                        : strcmp(bad[i].field, "momentum") == 0     ? &o.momentum
                                                                    : &o.dampening;
        *field = bad[i].value;
        cr_assert_eq(bloopcl_optimizer_validate(&o, message, sizeof message),
                     BLOOPCL_ERR_INVALID_ARGUMENT, "%s = %g accepted", bad[i].field,
                     bad[i].value);
        cr_assert(strstr(message, bad[i].field) != NULL, "\"%s\" lacks %s", message,
                  bad[i].field);
    }
    bloopcl_optimizer_default(&o, BLOOPCL_OPTIMIZER_SGD);
    o.nesterov = 1;  /* without momentum */
    cr_assert_eq(bloopcl_optimizer_validate(&o, message, sizeof message),
                 BLOOPCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(message, "nesterov") != NULL);
    bloopcl_optimizer_default(&o, (bloopcl_optimizer_kind)7);
    cr_assert_eq(bloopcl_optimizer_validate(&o, message, sizeof message),
                 BLOOPCL_ERR_INVALID_ARGUMENT);
    o.struct_size = 0;
    cr_assert_eq(bloopcl_optimizer_validate(&o, message, sizeof message),
                 BLOOPCL_ERR_INVALID_ARGUMENT);
    cr_assert_eq(bloopcl_optimizer_validate(NULL, message, sizeof message),
                 BLOOPCL_ERR_NULL_ARGUMENT);
}

Test(optimizer, misuse_is_refused_and_changes_nothing)
{
    optimizer_case c = ADAMW_CASE(BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_FUSED, 0.01, 1, 1);
    float *p0 = support_alloc(N_TOTAL), *p = support_alloc(N_TOTAL);
    float *g = support_alloc(N_TOTAL), *a = support_alloc(N_TOTAL), *noise = support_alloc(N_TOTAL);
    support_fill_normal(p0, N_TOTAL, 12, 1.0f);
    fused_run run;
    open_run(&run, &c, p0);
    inputs_of(g, a, noise, 1);
    write_tensor(run.ctx, &run.g, g);
    write_tensor(run.ctx, &run.a, a);
    bloopcl_step_options options = BLOOPCL_STEP_OPTIONS_INIT;
    options.update_parameters = 1;
    /* no optimizer on the plain combiner */
    expect_refused(bloopcl_step_with_options(run.plain, &run.g.tensor, &run.a.tensor,
                                             &run.params.tensor, &options, 0, NULL, NULL),
                   BLOOPCL_ERR_STATE, run.ctx, "no optimizer is attached");
    expect_refused(bloopcl_combiner_set_learning_rate(run.plain, 0.1), BLOOPCL_ERR_STATE,
                   run.ctx, "no optimizer");
    /* parameters aliasing g exactly (allowed for d, not for parameters) */
    expect_refused(bloopcl_step_with_options(run.fused, &run.g.tensor, &run.a.tensor,
                                             &run.g.tensor, &options, 0, NULL, NULL),
                   BLOOPCL_ERR_INVALID_ARGUMENT, run.ctx, "may share no memory");
    /* a learning-rate buffer without update_parameters, or too small */
    bloopcl_step_options plain = BLOOPCL_STEP_OPTIONS_INIT;
    plain.lr_buffer = run.lr_buffer;
    expect_refused(bloopcl_step_with_options(run.fused, &run.g.tensor, &run.a.tensor,
                                             &run.d.tensor, &plain, 0, NULL, NULL),
                   BLOOPCL_ERR_INVALID_ARGUMENT, run.ctx, "update_parameters is 0");
    options.lr_buffer = run.lr_buffer;
    options.lr_index = 4;
    expect_refused(bloopcl_step_with_options(run.fused, &run.g.tensor, &run.a.tensor,
                                             &run.params.tensor, &options, 0, NULL, NULL),
                   BLOOPCL_ERR_BUFFER_TOO_SMALL, run.ctx, "lr_index is 4");
    expect_refused(bloopcl_combiner_set_learning_rate(run.fused, NAN),
                   BLOOPCL_ERR_INVALID_ARGUMENT, run.ctx, "lr = nan");
    expect_refused(bloopcl_set_optimizer_steps(run.fused, (uint64_t)1 << 31),
                   BLOOPCL_ERR_INVALID_ARGUMENT, run.ctx, "2^31 - 1");
    bloopcl_optimizer bad;
    bloopcl_optimizer_default(&bad, BLOOPCL_OPTIMIZER_ADAMW);
    bad.beta2 = 1.0;
    expect_refused(bloopcl_combiner_set_optimizer(run.fused, &bad), BLOOPCL_ERR_INVALID_ARGUMENT,
                   run.ctx, "beta1 and beta2");
    /* nothing changed: parameters, t, moments zero, the attached optimizer */
    read_tensor(run.ctx, &run.params, p);
    cr_assert_eq(memcmp(p, p0, N_TOTAL * sizeof(float)), 0);
    uint64_t t = 99;
    cr_assert_eq(bloopcl_optimizer_steps(run.fused, &t), BLOOPCL_OK);
    cr_assert_eq(t, 0);
    cr_assert_eq(bloopcl_read_state(run.fused, BLOOPCL_STATE_MOMENT1, p, N_TOTAL), BLOOPCL_OK);
    for (size_t i = 0; i < N_TOTAL; ++i)
        cr_assert_eq(p[i], 0.0f);
    bloopcl_optimizer now = {.struct_size = sizeof now};
    cr_assert_eq(bloopcl_combiner_optimizer(run.fused, &now), BLOOPCL_OK);
    cr_assert_eq(now.kind, BLOOPCL_OPTIMIZER_ADAMW);
    cr_assert_eq(now.beta2, 0.999);
    /* a detached optimizer: update_parameters is refused again, its moments are gone */
    cr_assert_eq(bloopcl_combiner_set_optimizer(run.fused, NULL), BLOOPCL_OK);
    options.lr_buffer = NULL;
    expect_refused(bloopcl_step_with_options(run.fused, &run.g.tensor, &run.a.tensor,
                                             &run.params.tensor, &options, 0, NULL, NULL),
                   BLOOPCL_ERR_STATE, run.ctx, "no optimizer is attached");
    expect_refused(bloopcl_read_state(run.fused, BLOOPCL_STATE_MOMENT1, p, N_TOTAL),
                   BLOOPCL_ERR_STATE, run.ctx, "no moment 1");
    close_run(&run);
    free(p0), free(p), free(g), free(a), free(noise);
}

Test(optimizer, same_kind_keeps_moments_and_reset_clears_them)
{
    optimizer_case c = SGD_CASE(BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_FUSED, 0.9, 0.0, 0.0, 0, 0);
    float *p0 = support_alloc(N_TOTAL), *m = support_alloc(N_TOTAL), *m2 = support_alloc(N_TOTAL);
    float *g = support_alloc(N_TOTAL), *a = support_alloc(N_TOTAL), *noise = support_alloc(N_TOTAL);
    support_fill_normal(p0, N_TOTAL, 13, 1.0f);
    fused_run run;
    open_run(&run, &c, p0);
    take_steps(&run, 1, 3, g, a, noise);
    cr_assert_eq(bloopcl_read_state(run.fused, BLOOPCL_STATE_MOMENT1, m, N_TOTAL), BLOOPCL_OK);
    bloopcl_optimizer o = optimizer_of(&c);
    o.weight_decay = 0.2;  /* a schedule of the decay: same kind, moments kept */
    cr_assert_eq(bloopcl_combiner_set_optimizer(run.fused, &o), BLOOPCL_OK);
    cr_assert_eq(bloopcl_read_state(run.fused, BLOOPCL_STATE_MOMENT1, m2, N_TOTAL), BLOOPCL_OK);
    cr_assert_eq(memcmp(m, m2, N_TOTAL * sizeof(float)), 0);
    uint64_t t = 0;
    cr_assert_eq(bloopcl_optimizer_steps(run.fused, &t), BLOOPCL_OK);
    cr_assert_eq(t, 3);
    cr_assert_eq(bloopcl_reset_state(run.fused), BLOOPCL_OK);
    cr_assert_eq(bloopcl_optimizer_steps(run.fused, &t), BLOOPCL_OK);
    cr_assert_eq(t, 0);
    cr_assert_eq(bloopcl_read_state(run.fused, BLOOPCL_STATE_MOMENT1, m2, N_TOTAL), BLOOPCL_OK);
    for (size_t i = 0; i < N_TOTAL; ++i)
        cr_assert_eq(m2[i], 0.0f);
    close_run(&run);
    free(p0), free(m), free(m2), free(g), free(a), free(noise);
}
