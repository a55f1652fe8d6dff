/* test_threads.c — the threading contract of bloopcl.h ("Threads"):
 *   - contexts in different threads are independent, also on the CLBlast backend, whose
 *     process-wide initialisation at the first call bloopcl serialises (thread_race.c);
 *   - one context (and its combiners) used by two threads at once is refused with
 *     BLOOPCL_ERR_BUSY, never a crash or a wrong answer: every call either succeeds and is
 *     correct, or returns BUSY and changes nothing;
 *   - a combiner keeps its context alive: the context may be destroyed first.
 * Criterion's asserts are not made from the worker threads: they record, the test thread
 * asserts. */
#include "internal.h"
#include "support.h"

#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

/* --- first CLBlast steps in separate contexts, in fresh processes ------------------------- */

/* Runs `program threads` and returns its wait status. */
static int run_race(const char *program, int threads)
{
    char path[4096], count[16];
    snprintf(path, sizeof path, "%s", program);
    snprintf(count, sizeof count, "%d", threads);
    char *argv[] = {path, count, NULL};
    pid_t pid;
    cr_assert_eq(posix_spawn(&pid, program, NULL, NULL, argv, environ), 0, "spawn %s", program);
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    return status;
}

/* Before the CLBlast lock, 8 threads' first steps crashed inside CLBlast (its database
 * initialisation) in a few runs in a hundred; every run must now exit 0 (all d correct). */
Test(clblast_first_steps, eight_threads_in_separate_contexts, .timeout = 900)
{
    support_context_skip_without_device();
    const char *program = getenv("BLOOPCL_THREAD_RACE");
    cr_assert_not_null(program, "BLOOPCL_THREAD_RACE names the thread_race program (meson)");
    const int runs = 100, threads = 8;
    int crashed = 0, wrong = 0;
    for (int run = 0; run < runs; ++run) {
        int status = run_race(program, threads);
        crashed += WIFSIGNALED(status);
        wrong += WIFEXITED(status) && WEXITSTATUS(status) != 0;
    }
    cr_expect_eq(crashed, 0, "%d of %d runs of %d threads crashed", crashed, runs, threads);
    cr_expect_eq(wrong, 0, "%d of %d runs of %d threads failed or were wrong (their stderr "
                 "says which)", wrong, runs, threads);
}

/* --- two threads on one context ------------------------------------------------------------ */

#define N 3001
#define SUCCESSES 60          /* successful steps each worker takes */
#define MAX_ATTEMPTS 1000000  /* calls each worker may make to get them (BUSY costs little) */

static bloopcl_config busy_config(bloopcl_dot_backend dots)
{
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    config.dots = dots;
    config.ema_weight = 0.3;  /* the EMA lags g: a lost or doubled step shows in the state */
    config.lambda = 0.5;
    config.init = BLOOPCL_INIT_RANDOM;
    return config;
}

/* The inputs of call `i` of a worker (different per worker and call). */
static void make_inputs(float *g, float *a, uint64_t seed, int i)
{
    bloopcl_reference_normal(seed + 2u * (uint64_t)i, 0, N, g);
    bloopcl_reference_normal(seed + 2u * (uint64_t)i + 1u, 0, N, a);
    for (size_t k = 0; k < N; ++k)
        a[k] += 0.5f * g[k];
}

/* Worst |d - d_ref| / (1 + |d_ref|); NaN counts as infinite. */
static double worst_error(const float *d, const float *d_reference)
{
    double worst = 0.0;
    for (size_t k = 0; k < N; ++k) {
        double e = fabs((double)d[k] - d_reference[k]) / (1.0 + fabs(d_reference[k]));
        worst = isnan(e) || e > worst ? (isnan(e) ? INFINITY : e) : worst;
    }
    return worst;
}

/* One worker: its own combiner on the shared context, step_host calls until SUCCESSES of them
 * succeeded (a BUSY call is retried with the same inputs after a yield), each successful one
 * checked against its own reference replay of the steps that succeeded. */
typedef struct worker {
    bloopcl_combiner *comb;
    bloopcl_config config;
    bloopcl_reference_state ref;
    uint64_t seed;
    atomic_int *go;
    int ok, busy, other;         /* counts of each outcome */
    bloopcl_status other_status; /* the first status that was neither OK nor BUSY */
    double worst;                /* worst error of d over the successful calls */
} worker;

static void *hammer(void *argument)
{
    worker *w = argument;
    float *g = malloc(N * sizeof *g), *a = malloc(N * sizeof *a), *d = malloc(N * sizeof *d);
    float *d_reference = malloc(N * sizeof *d_reference);
    while (atomic_load(w->go) == 0) {
    }
    for (int attempt = 0; attempt < MAX_ATTEMPTS && w->ok < SUCCESSES && g && a && d &&
                          d_reference; ++attempt) {
        make_inputs(g, a, w->seed, w->ok);
        bloopcl_status status = bloopcl_step_host(w->comb, g, a, d);
        if (status == BLOOPCL_OK) {
            w->ok++;
            bloopcl_reference_step(&w->config, &w->ref, g, a, d_reference, NULL);
            double e = worst_error(d, d_reference);
            w->worst = e > w->worst ? e : w->worst;
        } else if (status == BLOOPCL_ERR_BUSY) {
            w->busy++;
            sched_yield();
        } else if (w->other++ == 0) {
            w->other_status = status;
        }
    }
    free(g), free(a), free(d), free(d_reference);
    return NULL;
}

static void hammer_one_context(bloopcl_dot_backend dots)
{
    bloopcl_context *ctx = support_context();
    atomic_int go = 0;
    worker workers[2];
    pthread_t ids[2];
    for (int t = 0; t < 2; ++t) {
        worker *w = &workers[t];
        memset(w, 0, sizeof *w);
        w->config = busy_config(dots);
        w->config.seed = 11u + (uint64_t)t;
        w->seed = 1000u * (uint64_t)(t + 1);
        w->go = &go;
        w->comb = support_combiner(ctx, &w->config, N);
        cr_assert_eq(bloopcl_reference_init(&w->config, N, &w->ref), BLOOPCL_OK);
        cr_assert_eq(pthread_create(&ids[t], NULL, hammer, w), 0);
    }
    atomic_store(&go, 1);
    for (int t = 0; t < 2; ++t)
        pthread_join(ids[t], NULL);
    for (int t = 0; t < 2; ++t) {
        worker *w = &workers[t];
        cr_log_info("worker %d: %d OK, %d BUSY, %d other", t, w->ok, w->busy, w->other);
        cr_expect_eq(w->other, 0, "worker %d: %d calls returned neither OK nor BUSY (first: %s)",
                     t, w->other, bloopcl_status_string(w->other_status));
        cr_expect_eq(w->ok, SUCCESSES, "worker %d: %d of %d steps succeeded in %d calls", t,
                     w->ok, SUCCESSES, MAX_ATTEMPTS);
        cr_expect(w->worst <= 1e-4, "worker %d: a successful step's d is wrong (worst relative "
                  "error %.3g)", t, w->worst);
        bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
        cr_assert_eq(bloopcl_get_diagnostics(w->comb, &diag), BLOOPCL_OK);
        cr_expect_eq(diag.steps, (uint64_t)w->ok, "worker %d: only the successful calls count", t);
        support_expect_state(w->comb, BLOOPCL_STATE_EMA, w->ref.ema, N);
        bloopcl_reference_free(&w->ref);
        bloopcl_combiner_destroy(w->comb);
    }
    bloopcl_context_destroy(ctx);
}

Test(one_context, two_threads_fused, .timeout = 300)
{
    hammer_one_context(BLOOPCL_DOTS_FUSED);
}

Test(one_context, two_threads_clblast, .timeout = 300)
{
    hammer_one_context(BLOOPCL_DOTS_CLBLAST);
}

/* --- every guarded call is refused while another thread is inside the context ------------- */

typedef struct blocked_step {
    bloopcl_combiner *comb;
    const float *g, *a;
    float *d;
    bloopcl_status status;
} blocked_step;

static void *step_behind_the_gate(void *argument)
{
    blocked_step *b = argument;
    b->status = bloopcl_step_host(b->comb, b->g, b->a, b->d);
    return NULL;
}

/* A user event that the test completes holds the context's queue, so that a step_host in a
 * second thread stays inside the context (waiting for its upload) for as long as the test
 * wants: meanwhile every call that uses the context must return BLOOPCL_ERR_BUSY at once, and
 * change nothing. */
Test(one_context, calls_during_a_step_are_refused, .timeout = 120)
{
    bloopcl_context *ctx = support_context();
    bloopcl_config config = busy_config(BLOOPCL_DOTS_FUSED);
    bloopcl_combiner *comb = support_combiner(ctx, &config, N);
    bloopcl_combiner *other = support_combiner(ctx, &config, N);
    float *g = support_alloc(N), *a = support_alloc(N), *d = support_alloc(N);
    float *scratch = support_alloc(N), *d_reference = support_alloc(N);
    make_inputs(g, a, 5, 0);
    cl_int err;
    cl_event gate = clCreateUserEvent(bloopcl_context_cl_context(ctx), &err);
    cr_assert_eq(err, CL_SUCCESS);
    cr_assert_eq(clEnqueueBarrierWithWaitList(bloopcl_context_queue(ctx), 1, &gate, NULL),
                 CL_SUCCESS);
    blocked_step b = {comb, g, a, d, BLOOPCL_ERR_OPENCL};
    pthread_t id;
    cr_assert_eq(pthread_create(&id, NULL, step_behind_the_gate, &b), 0);
    bloopcl_config seen = {.struct_size = sizeof(bloopcl_config)};
    struct timespec pause = {0, 1000000};
    int tries = 0;
    while (bloopcl_combiner_config(other, &seen) == BLOOPCL_OK && ++tries < 10000)
        nanosleep(&pause, NULL);  /* until the step has entered the context */
    cr_assert_lt(tries, 10000, "the step in the other thread never held the context");

    cl_mem buffer = clCreateBuffer(bloopcl_context_cl_context(ctx),  /* not through the queue */
                                   CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, N * sizeof(float),
                                   g, &err);
    cr_assert_eq(err, CL_SUCCESS);
    bloopcl_segment segment = {.buffer = buffer, .count = N};
    bloopcl_tensor tensor = {&segment, 1};
    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
    bloopcl_combiner *created = NULL;
    cl_event done = NULL;
    const char *message_before = "";
    cr_expect_eq(bloopcl_step(other, &tensor, &tensor, &tensor, 0, NULL, &done), BLOOPCL_ERR_BUSY);
    cr_expect_null(done);
    cr_expect_eq(bloopcl_step_buffers(other, buffer, buffer, buffer), BLOOPCL_ERR_BUSY);
    cr_expect_eq(bloopcl_step_host(other, g, a, scratch), BLOOPCL_ERR_BUSY);
    cr_expect_eq(bloopcl_step_host(comb, g, a, scratch), BLOOPCL_ERR_BUSY);
    cr_expect_eq(bloopcl_get_diagnostics(other, &diag), BLOOPCL_ERR_BUSY);
    cr_expect_eq(bloopcl_read_state(other, BLOOPCL_STATE_EMA, scratch, N), BLOOPCL_ERR_BUSY);
    cr_expect_eq(bloopcl_write_state(other, BLOOPCL_STATE_EMA, g, N), BLOOPCL_ERR_BUSY);
    cr_expect_eq(bloopcl_reset_state(other), BLOOPCL_ERR_BUSY);
    cr_expect_eq(bloopcl_combiner_set_hyperparameters(comb, 0.9, 0.9, 0.0), BLOOPCL_ERR_BUSY);
    cr_expect_eq(bloopcl_combiner_config(comb, &seen), BLOOPCL_ERR_BUSY);
    cr_expect_eq(bloopcl_combiner_create(ctx, &config, N, &created), BLOOPCL_ERR_BUSY);
    cr_expect_null(created);
    cr_expect_eq(bloopcl_context_finish(ctx), BLOOPCL_ERR_BUSY);
    cr_expect_str_eq(bloopcl_context_last_error(ctx), message_before,
                     "a refused call leaves the message of the call in progress alone");

    clSetUserEventStatus(gate, CL_COMPLETE);
    pthread_join(id, NULL);
    clReleaseEvent(gate);
    cr_assert_eq(b.status, BLOOPCL_OK, "the step behind the gate: %s",
                 bloopcl_context_last_error(ctx));
    /* It ran once, with the hyperparameters it started with, and nothing else changed. */
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(&config, N, &ref), BLOOPCL_OK);
    support_check_step(comb, &config, &ref, g, a, d, d_reference, 1);
    support_expect_state(comb, BLOOPCL_STATE_EMA, ref.ema, N);
    bloopcl_reference_free(&ref);
    cr_assert_eq(bloopcl_reference_init(&config, N, &ref), BLOOPCL_OK);  /* the other: no step */
    support_expect_state(other, BLOOPCL_STATE_EMA, ref.ema, N);
    cr_assert_eq(bloopcl_get_diagnostics(other, &diag), BLOOPCL_OK);
    cr_expect_eq(diag.steps, 0, "the refused steps were not applied");
    bloopcl_reference_free(&ref);
    bloopcl_combiner_config(comb, &seen);
    cr_expect_float_eq(seen.lambda, config.lambda, 0.0, "the refused schedule change was not made");
    clReleaseMemObject(buffer);
    free(g), free(a), free(d), free(scratch), free(d_reference);
    bloopcl_combiner_destroy(other);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

/* --- a combiner keeps its context alive ----------------------------------------------------- */

/* The context is destroyed first; its memory is then reused (and scribbled on) by the next
 * allocation of its size, so a combiner that still used a freed context would read garbage.
 * The combiner keeps working against the reference, and its destruction frees the context. */
Test(lifetime, context_destroyed_before_its_combiners, .timeout = 120)
{
    bloopcl_context *ctx = support_context();
    bloopcl_config config = busy_config(BLOOPCL_DOTS_FUSED);
    bloopcl_combiner *first = support_combiner(ctx, &config, N);
    bloopcl_combiner *second = support_combiner(ctx, &config, N);
    bloopcl_context_destroy(ctx);
    void *reuse = malloc(sizeof(struct bloopcl_context));
    cr_assert_not_null(reuse);
    memset(reuse, 0xA5, sizeof(struct bloopcl_context));

    float *g = support_alloc(N), *a = support_alloc(N), *d = support_alloc(N);
    float *d_reference = support_alloc(N);
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(&config, N, &ref), BLOOPCL_OK);
    for (int step = 0; step < 3; ++step) {
        make_inputs(g, a, 77, step);
        cr_assert_eq(bloopcl_step_host(first, g, a, d), BLOOPCL_OK);
        support_check_step(first, &config, &ref, g, a, d, d_reference, step);
    }
    support_expect_state(first, BLOOPCL_STATE_EMA, ref.ema, N);
    bloopcl_combiner_destroy(first);
    make_inputs(g, a, 78, 0);
    cr_assert_eq(bloopcl_step_host(second, g, a, d), BLOOPCL_OK, "the context lives on while "
                 "one combiner does");
    bloopcl_combiner_destroy(second);
    bloopcl_reference_free(&ref);
    free(reuse);
    free(g), free(a), free(d), free(d_reference);
}
