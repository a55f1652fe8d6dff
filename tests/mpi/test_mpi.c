/* test_mpi.c — bloopcl-mpi under `mpirun -np R` (R = 1..4), on the default device.
 *
 * Every rank builds the same global gradients (the reference's N(0,1) stream, so no data
 * travels) and steps two ways: sharded (its slice through bloopcl_mpi_step) and alone (a
 * combiner over the whole gradient, bloopcl_step). Checked, for every method, both dot
 * backends and uneven shard sizes (one layout with an empty shard where R > 1):
 *   - the state of each shard is bit for bit the single combiner's slice;
 *   - d and r agree with the single step within the dot tolerance;
 *   - every rank holds the same r, bit for bit, and three runs give the same bits;
 *   - one rank given a bad tensor makes every rank fail (its own status there,
 *     BLOOPCL_ERR_SHARD_FAILED elsewhere, the failed rank and message in every report) with
 *     every state unchanged, and the next step goes on;
 *   - ranks about to take different steps (one rank's lambda differs) all fail, as does a
 *     rank that passes an uninitialised report (no rank left waiting in a collective);
 *   - a checkpoint saved by R ranks loads, re-sharded, on R - 1 of them with other sizes, and
 *     a truncated one is refused on every rank.
 * Not Criterion: its tests run in forked workers, which MPI does not survive. Each check
 * prints one line on rank 0; the last line is "mpi: R ranks: N passed, M failed"; the exit
 * status is 1 if any check failed on any rank. */
#include "bloopcl_mpi.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N_TOTAL 30011
#define STEPS 4
#define RUNS 3

static int me, ranks, passed, failed;

/* A check on this rank; its verdict on rank 0 is the verdict of every rank. */
static void check(bool ok, const char *format, ...)
{
    int mine = ok, all = 0;
    MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    if (all)
        passed++;
    else
        failed++;
    if (me == 0 || !ok) {
        va_list args;
        va_start(args, format);
        printf("%s [rank %d] ", all ? "ok  " : "FAIL", me);
        vprintf(format, args);
        printf("\n");
        va_end(args);
        fflush(stdout);
    }
}

static void *must_alloc(size_t bytes)
{
    void *p = calloc(1, bytes ? bytes : 1);
    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return p;
}

/* Slice sizes for `count` ranks: uneven; with `empty`, the second-to-last rank (rank 0 when
 * there are two) holds nothing. */
static void layout(int count, bool empty, size_t *size, size_t *start)
{
    size_t left = N_TOTAL, at = 0;
    for (int r = 0; r < count; ++r) {
        size_t s = r + 1 == count ? left : (left * (size_t)(r + 2)) / (size_t)(2 * count + 1);
        if (empty && r == (count == 2 ? 0 : count - 2))
            s = 0;
        size[r] = s;
        start[r] = at;
        at += s;
        left -= s;
    }
}

typedef struct world {
    bloopcl_context *ctx;
    float *g, *a;             /* the global inputs of one step */
} world;

static bloopcl_combiner *make_combiner_lambda(world *w, bloopcl_method method,
                                              bloopcl_dot_backend dots, size_t n, double lambda)
{
    if (n == 0)
        return NULL;
    bloopcl_config config;
    bloopcl_config_default(&config, method);
    config.dots = dots;
    config.ema_weight = 0.3;
    config.lambda = lambda;
    bloopcl_combiner *comb = NULL;
    if (bloopcl_combiner_create(w->ctx, &config, n, &comb) != BLOOPCL_OK) {
        fprintf(stderr, "rank %d: combiner_create: %s\n", me,
                bloopcl_context_last_error(w->ctx));
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return comb;
}

static bloopcl_combiner *make_combiner(world *w, bloopcl_method method,
                                       bloopcl_dot_backend dots, size_t n)
{
    return make_combiner_lambda(w, method, dots, n, 0.7);
}

static void inputs(world *w, int t)
{
    bloopcl_reference_normal(1000 + (uint64_t)t, 0, N_TOTAL, w->g);
    bloopcl_reference_normal(2000 + (uint64_t)t, 0, N_TOTAL, w->a);
    for (size_t i = 0; i < N_TOTAL; ++i)  /* a partly along g: r is not tiny */
        w->a[i] = 0.5f * w->a[i] + 0.4f * w->g[i] + 0.1f;
}

static cl_mem buffer(world *w, const float *host, size_t n)
{
    cl_int err;
    cl_mem b = clCreateBuffer(bloopcl_context_cl_context(w->ctx), CL_MEM_READ_WRITE,
                              (n ? n : 1) * sizeof(float), NULL, &err);
    if (err == CL_SUCCESS && host != NULL && n > 0)
        err = clEnqueueWriteBuffer(bloopcl_context_queue(w->ctx), b, CL_TRUE, 0,
                                   n * sizeof(float), host, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        MPI_Abort(MPI_COMM_WORLD, 2);
    return b;
}

static void read_back(world *w, cl_mem b, float *host, size_t n)
{
    if (n > 0)
        clEnqueueReadBuffer(bloopcl_context_queue(w->ctx), b, CL_TRUE, 0, n * sizeof(float),
                            host, 0, NULL, NULL);
}

/* One step of `comb` (NULL: an empty slice) over elements [start, start + n) of the global
 * inputs, through bloopcl_mpi_step (sharded) or bloopcl_step; d into d_out. `short_by`
 * shortens this rank's a (a bad input). */
static bloopcl_status step_slice(world *w, bloopcl_combiner *comb, bool sharded, size_t start,
                                 size_t n, float *d_out, size_t short_by,
                                 bloopcl_mpi_report *report)
{
    cl_mem gb = buffer(w, w->g + start, n), ab = buffer(w, w->a + start, n);
    cl_mem db = buffer(w, NULL, n);
    bloopcl_segment sg = {.buffer = gb, .count = n}, sa = {.buffer = ab, .count = n - short_by};
    bloopcl_segment sd = {.buffer = db, .count = n};
    bloopcl_tensor tg = {&sg, 1}, ta = {&sa, 1}, td = {&sd, 1};
    bloopcl_status status =
        sharded ? bloopcl_mpi_step(comb, MPI_COMM_WORLD, &tg, &ta, &td, NULL, 0, NULL, NULL,
                                   report)
                : bloopcl_step(comb, &tg, &ta, &td, 0, NULL, NULL);
    if (status == BLOOPCL_OK)
        read_back(w, db, d_out, n);
    clReleaseMemObject(gb);
    clReleaseMemObject(ab);
    clReleaseMemObject(db);
    return status;
}

static bool has_kind(bloopcl_method method, int kind)
{
    return kind == BLOOPCL_STATE_EMA ? method != BLOOPCL_METHOD_MIXED
                                     : method == BLOOPCL_METHOD_PCGRAD;
}

static void read_state(bloopcl_combiner *comb, bloopcl_method method, size_t n, float **state)
{
    for (int k = 0; k < 2; ++k)
        if (comb != NULL && has_kind(method, k))
            bloopcl_read_state(comb, (bloopcl_state_kind)k, state[k], n);
}

static float ratio_of(bloopcl_combiner *comb)
{
    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
    if (comb == NULL || bloopcl_get_diagnostics(comb, &diag) != BLOOPCL_OK)
        return NAN;
    return (float)diag.ratio;
}

/* Every rank that holds a slice has the same r, bit for bit. */
static bool same_ratio_everywhere(float r, bool holds)
{
    float mine[2] = {holds ? r : 0.0f, holds ? 1.0f : 0.0f};
    float *all = must_alloc((size_t)ranks * sizeof mine);
    MPI_Allgather(mine, 2, MPI_FLOAT, all, 2, MPI_FLOAT, MPI_COMM_WORLD);
    bool same = true;
    float first = NAN;
    for (int q = 0; q < ranks; ++q) {
        if (all[2 * q + 1] == 0.0f)
            continue;
        if (isnan(first))
            first = all[2 * q];
        same = same && memcmp(&first, &all[2 * q], sizeof first) == 0;
    }
    free(all);
    return same;
}

typedef struct run_result {
    float *d, *state[2];      /* this rank's slice after the last step */
    float r;
} run_result;

/* STEPS sharded steps next to STEPS single ones; checks every step; keeps the last. */
static void sharded_run(world *w, bloopcl_method method, bloopcl_dot_backend dots, bool empty,
                        run_result *out)
{
    size_t size[8], start[8];
    layout(ranks, empty, size, start);
    size_t n = size[me], at = start[me];
    bloopcl_combiner *shard = make_combiner(w, method, dots, n);
    bloopcl_combiner *single = make_combiner(w, method, dots, N_TOTAL);
    float *d_single = must_alloc(N_TOTAL * sizeof(float));
    float *state_single[2] = {must_alloc(N_TOTAL * sizeof(float)),
                              must_alloc(N_TOTAL * sizeof(float))};
    out->d = must_alloc((n + 1) * sizeof(float));
    out->state[0] = must_alloc((n + 1) * sizeof(float));
    out->state[1] = must_alloc((n + 1) * sizeof(float));
    bool state_exact = true, d_close = true, r_close = true, same_r = true, ok = true;
    double worst_d = 0.0;
    for (int t = 0; t < STEPS; ++t) {
        inputs(w, t);
        ok = ok && step_slice(w, shard, true, at, n, out->d, 0, NULL) == BLOOPCL_OK;
        ok = ok && step_slice(w, single, false, 0, N_TOTAL, d_single, 0, NULL) == BLOOPCL_OK;
        read_state(shard, method, n, out->state);
        read_state(single, method, N_TOTAL, state_single);
        for (int k = 0; k < 2; ++k)
            if (has_kind(method, k) && n > 0)
                state_exact = state_exact && memcmp(out->state[k], state_single[k] + at,
                                                    n * sizeof(float)) == 0;
        float r_single = ratio_of(single);
        out->r = n > 0 ? ratio_of(shard) : r_single;
        r_close = r_close && fabsf(out->r - r_single) <= 2e-5f * fabsf(r_single) + 1e-30f;
        for (size_t i = 0; i < n; ++i) {
            double scale = fabs(w->g[at + i]) + fabs(w->a[at + i]) + 1.0;
            double err = fabs((double)out->d[i] - d_single[at + i]) / scale;
            worst_d = err > worst_d ? err : worst_d;
        }
        same_r = same_r && same_ratio_everywhere(out->r, n > 0);
    }
    d_close = worst_d <= 2e-5;
    const char *name = bloopcl_method_name(method);
    const char *backend = dots == BLOOPCL_DOTS_FUSED ? "fused" : "clblast";
    const char *shape = empty ? "with an empty shard" : "uneven";
    check(ok, "%s/%s %s: every step OK", name, backend, shape);
    check(state_exact, "%s/%s %s: state bit for bit the single combiner's", name, backend, shape);
    check(d_close && r_close, "%s/%s %s: d and r within the dot tolerance (worst %.2g)", name,
          backend, shape, worst_d);
    check(same_r, "%s/%s %s: r the same bits on every rank", name, backend, shape);
    bloopcl_combiner_destroy(shard);
    bloopcl_combiner_destroy(single);
    free(d_single), free(state_single[0]), free(state_single[1]);
}

static void free_run(run_result *r)
{
    free(r->d), free(r->state[0]), free(r->state[1]);
}

static void every_method_and_layout(world *w)
{
    static const bloopcl_method methods[] = {BLOOPCL_METHOD_BLOOP, BLOOPCL_METHOD_DYNAMIC_BARRIER,
                                             BLOOPCL_METHOD_PCGRAD, BLOOPCL_METHOD_MIXED};
    for (int m = 0; m < 4; ++m)
        for (int e = 0; e < (ranks > 1 ? 2 : 1); ++e) {
            bloopcl_dot_backend dots = (m + e) % 2 ? BLOOPCL_DOTS_CLBLAST : BLOOPCL_DOTS_FUSED;
            run_result r;
            sharded_run(w, methods[m], dots, e == 1, &r);
            free_run(&r);
        }
}

static void repeatable_over_runs(world *w)
{
    run_result runs[RUNS];
    size_t size[8], start[8];
    layout(ranks, ranks > 2, size, start);
    bool same = true;
    for (int k = 0; k < RUNS; ++k) {
        sharded_run(w, BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_FUSED, ranks > 2, &runs[k]);
        if (k > 0)
            same = same && memcmp(runs[k].d, runs[0].d, size[me] * sizeof(float)) == 0 &&
                   memcmp(runs[k].state[0], runs[0].state[0], size[me] * sizeof(float)) == 0 &&
                   memcmp(&runs[k].r, &runs[0].r, sizeof(float)) == 0;
    }
    check(same, "%d runs: d, state and r the same bits", RUNS);
    for (int k = 0; k < RUNS; ++k)
        free_run(&runs[k]);
}

/* The last rank's a is one element short: nobody steps. */
static void one_bad_rank_fails_all(world *w)
{
    size_t size[8], start[8];
    layout(ranks, false, size, start);
    size_t n = size[me];
    bloopcl_combiner *shard = make_combiner(w, BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_FUSED, n);
    float *d = must_alloc((n + 1) * sizeof(float));
    float *before[2] = {must_alloc((n + 1) * sizeof(float)), NULL};
    float *after[2] = {must_alloc((n + 1) * sizeof(float)), NULL};
    inputs(w, 0);
    step_slice(w, shard, true, start[me], n, d, 0, NULL);
    read_state(shard, BLOOPCL_METHOD_BLOOP, n, before);
    bloopcl_mpi_report report = BLOOPCL_MPI_REPORT_INIT;
    inputs(w, 1);
    bool bad_here = me == ranks - 1;
    bloopcl_status status = step_slice(w, shard, true, start[me], n, d, bad_here ? 1 : 0,
                                       &report);
    bloopcl_status expected = bad_here ? BLOOPCL_ERR_SIZE_MISMATCH : BLOOPCL_ERR_SHARD_FAILED;
    check(status == expected, "a bad tensor on rank %d: status %d here (want %d)", ranks - 1,
          (int)status, (int)expected);
    char rank_text[32];
    snprintf(rank_text, sizeof rank_text, "rank %d:", ranks - 1);
    check(report.failed_rank == ranks - 1 && report.failed_status == BLOOPCL_ERR_SIZE_MISMATCH &&
              strstr(report.message, rank_text) != NULL,
          "every report names the failed rank: \"%s\"", report.message);
    read_state(shard, BLOOPCL_METHOD_BLOOP, n, after);
    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
    bloopcl_get_diagnostics(shard, &diag);
    check(memcmp(before[0], after[0], n * sizeof(float)) == 0 && diag.steps == 1,
          "every state unchanged, no step counted");
    check(step_slice(w, shard, true, start[me], n, d, 0, NULL) == BLOOPCL_OK,
          "the next step goes on");
    bloopcl_combiner_destroy(shard);
    free(d), free(before[0]), free(after[0]);
}

/* The last rank's lambda differs: every rank fails, the report names the field. Then one
 * rank's report is uninitialised: every rank returns (no deadlock), none steps. */
static void ranks_must_agree(world *w)
{
    size_t size[8], start[8];
    layout(ranks, false, size, start);
    size_t n = size[me];
    bool odd_one = ranks > 1 && me == ranks - 1;
    bloopcl_combiner *shard = make_combiner_lambda(w, BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_FUSED,
                                                   n, odd_one ? 0.5 : 0.7);
    float *d = must_alloc((n + 1) * sizeof(float));
    inputs(w, 0);
    bloopcl_mpi_report report = BLOOPCL_MPI_REPORT_INIT;
    bloopcl_status status = step_slice(w, shard, true, start[me], n, d, 0, &report);
    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
    bloopcl_get_diagnostics(shard, &diag);
    if (ranks > 1)
        check(status == BLOOPCL_ERR_INVALID_ARGUMENT && strstr(report.message, "lambda") &&
                  report.failed_rank == ranks - 1 && diag.steps == 0,
              "a rank with another lambda fails every rank: \"%s\"", report.message);
    bloopcl_combiner_destroy(shard);
    shard = make_combiner(w, BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_FUSED, n);
    bloopcl_mpi_report bad = BLOOPCL_MPI_REPORT_INIT, good = BLOOPCL_MPI_REPORT_INIT;
    bad.struct_size = 0;
    bool bad_here = me == ranks - 1;
    status = step_slice(w, shard, true, start[me], n, d, 0, bad_here ? &bad : &good);
    bloopcl_get_diagnostics(shard, &diag);
    bloopcl_status expected = bad_here ? BLOOPCL_ERR_UNSUPPORTED : BLOOPCL_ERR_SHARD_FAILED;
    check(status == expected && diag.steps == 0 &&
              (bad_here || strstr(good.message, "struct_size") != NULL),
          "an uninitialised report on rank %d fails every rank, none waits: \"%s\"", ranks - 1,
          good.message);
    bloopcl_combiner_destroy(shard);
    free(d);
}

/* One sharded AdamW step in pass 2 (update_parameters) on every rank's slice of the
 * parameters, into buf: the status and the report. */
static bloopcl_status optimizer_step(world *w, bloopcl_combiner *comb, size_t start, size_t n,
                                     cl_mem params, bloopcl_mpi_report *report)
{
    cl_mem gb = buffer(w, w->g + start, n), ab = buffer(w, w->a + start, n);
    bloopcl_segment sg = {.buffer = gb, .count = n}, sa = {.buffer = ab, .count = n};
    bloopcl_segment sp = {.buffer = params, .count = n};
    bloopcl_tensor tg = {&sg, 1}, ta = {&sa, 1}, tp = {&sp, 1};
    bloopcl_step_options options = BLOOPCL_STEP_OPTIONS_INIT;
    options.update_parameters = 1;
    bloopcl_status status = bloopcl_mpi_step(comb, MPI_COMM_WORLD, &tg, &ta, &tp, &options, 0,
                                             NULL, NULL, report);
    clReleaseMemObject(gb);
    clReleaseMemObject(ab);
    return status;
}

/* The fused optimizer over MPI: ranks whose learning rates differ fail together (the report
 * names it, no rank counts a step); agreeing ranks take the step and each counts t = 1. */
static void optimizers_must_agree(world *w)
{
    size_t size[8], start[8];
    layout(ranks, false, size, start);
    size_t n = size[me];
    bloopcl_combiner *shard = make_combiner(w, BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_FUSED, n);
    bloopcl_optimizer o;
    bloopcl_optimizer_default(&o, BLOOPCL_OPTIMIZER_ADAMW);
    o.lr = ranks > 1 && me == ranks - 1 ? 0.02 : 0.01;
    check(bloopcl_combiner_set_optimizer(shard, &o) == BLOOPCL_OK, "attach AdamW");
    inputs(w, 0);
    float *p = must_alloc((n + 1) * sizeof(float));
    for (size_t i = 0; i < n; ++i)
        p[i] = 1.0f;
    cl_mem params = buffer(w, p, n);
    bloopcl_mpi_report report = BLOOPCL_MPI_REPORT_INIT;
    bloopcl_status status = BLOOPCL_OK;
    uint64_t t = 99;
    if (ranks > 1) {  /* one rank alone agrees with itself */
        status = optimizer_step(w, shard, start[me], n, params, &report);
        bloopcl_optimizer_steps(shard, &t);
        check(status == BLOOPCL_ERR_INVALID_ARGUMENT && strstr(report.message, "learning rate") &&
                  t == 0,
              "ranks with other learning rates fail together: \"%s\"", report.message);
    }
    o.lr = 0.01;
    check(bloopcl_combiner_set_optimizer(shard, &o) == BLOOPCL_OK, "same lr everywhere");
    status = optimizer_step(w, shard, start[me], n, params, &report);
    bloopcl_optimizer_steps(shard, &t);
    read_back(w, params, p, n);
    bool moved = true;  /* AdamW's first step moves every parameter by about lr */
    for (size_t i = 0; i < n; ++i)
        moved &= fabsf(p[i] - 1.0f) > 0.005f && fabsf(p[i] - 1.0f) < 0.0115f;
    check(status == BLOOPCL_OK && t == 1 && moved, "the agreeing step applies AdamW (t = %llu, "
          "status %d: %s)", (unsigned long long)t, status, report.message);
    clReleaseMemObject(params);
    bloopcl_combiner_destroy(shard);
    free(p);
}

/* Saved by every rank, loaded by ranks 1.. (R - 1 of them, other sizes) where R > 1. */
static void checkpoint_reshards(world *w)
{
    size_t size[8], start[8];
    layout(ranks, false, size, start);
    bloopcl_method method = BLOOPCL_METHOD_PCGRAD;  /* two state kinds */
    bloopcl_combiner *shard = make_combiner(w, method, BLOOPCL_DOTS_FUSED, size[me]);
    bloopcl_combiner *single = make_combiner(w, method, BLOOPCL_DOTS_FUSED, N_TOTAL);
    float *d = must_alloc(N_TOTAL * sizeof(float));
    for (int t = 0; t < 2; ++t) {
        inputs(w, t);
        step_slice(w, shard, true, start[me], size[me], d, 0, NULL);
        step_slice(w, single, false, 0, N_TOTAL, d, 0, NULL);
    }
    char path[256] = {0};
    if (me == 0)
        snprintf(path, sizeof path, "%s/bloopcl-mpi-test-%d.ckpt",
                 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    MPI_Bcast(path, sizeof path, MPI_CHAR, 0, MPI_COMM_WORLD);
    bloopcl_mpi_report report = BLOOPCL_MPI_REPORT_INIT;
    check(bloopcl_mpi_save_state(shard, MPI_COMM_WORLD, path, &report) == BLOOPCL_OK,
          "save_state on %d ranks %s", ranks, report.message);

    MPI_Comm sub;
    int keep = ranks == 1 || me > 0;
    MPI_Comm_split(MPI_COMM_WORLD, keep ? 0 : MPI_UNDEFINED, me, &sub);
    bool exact = true;
    if (keep) {
        int sub_ranks = 0, sub_me = 0;
        MPI_Comm_size(sub, &sub_ranks);
        MPI_Comm_rank(sub, &sub_me);
        size_t sub_size[8], sub_start[8];
        layout(sub_ranks, sub_ranks > 1, sub_size, sub_start);  /* another sharding */
        size_t n = sub_size[sub_me];
        bloopcl_combiner *loaded = make_combiner(w, method, BLOOPCL_DOTS_FUSED, n);
        bloopcl_status status = bloopcl_mpi_load_state(loaded, sub, path, &report);
        exact = status == BLOOPCL_OK;
        float *mine[2] = {must_alloc((n + 1) * sizeof(float)), must_alloc((n + 1) * sizeof(float))};
        float *all[2] = {must_alloc(N_TOTAL * sizeof(float)), must_alloc(N_TOTAL * sizeof(float))};
        read_state(loaded, method, n, mine);
        read_state(single, method, N_TOTAL, all);
        for (int k = 0; k < 2 && n > 0; ++k)
            exact = exact && memcmp(mine[k], all[k] + sub_start[sub_me], n * sizeof(float)) == 0;
        bloopcl_combiner *wrong = make_combiner(w, BLOOPCL_METHOD_BLOOP, BLOOPCL_DOTS_FUSED,
                                                n > 0 ? n : 1);
        status = bloopcl_mpi_load_state(wrong, sub, path, &report);
        exact = exact && status == BLOOPCL_ERR_INVALID_ARGUMENT &&
                strstr(report.message, "pcgrad") != NULL;
        bloopcl_combiner_destroy(wrong);
        bloopcl_combiner_destroy(loaded);
        free(mine[0]), free(mine[1]), free(all[0]), free(all[1]);
        MPI_Comm_free(&sub);
    }
    check(exact, "loaded on %d ranks, re-sharded: the state bit for bit; a BLOOP combiner is "
          "refused", ranks > 1 ? ranks - 1 : 1);
    MPI_Barrier(MPI_COMM_WORLD);
    if (me == 0 && truncate(path, 64 + 4 * 1000) != 0)
        perror("truncate");
    MPI_Barrier(MPI_COMM_WORLD);
    bloopcl_status status = bloopcl_mpi_load_state(shard, MPI_COMM_WORLD, path, &report);
    check(status == BLOOPCL_ERR_INVALID_ARGUMENT || status == BLOOPCL_ERR_SHARD_FAILED,
          "a truncated checkpoint is refused on every rank (%d: \"%s\")", (int)status,
          report.message);
    if (me == 0)
        unlink(path);
    bloopcl_combiner_destroy(shard);
    bloopcl_combiner_destroy(single);
    free(d);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    if (ranks > 8) {
        if (me == 0)
            fprintf(stderr, "test_mpi: at most 8 ranks\n");
        MPI_Finalize();
        return 2;
    }
    world w = {NULL, must_alloc(N_TOTAL * sizeof(float)), must_alloc(N_TOTAL * sizeof(float))};
    if (bloopcl_context_create(NULL, &w.ctx) != BLOOPCL_OK) {
        fprintf(stderr, "rank %d: context: %s\n", me, bloopcl_context_last_error(w.ctx));
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    every_method_and_layout(&w);
    repeatable_over_runs(&w);
    one_bad_rank_fails_all(&w);
    ranks_must_agree(&w);
    optimizers_must_agree(&w);
    checkpoint_reshards(&w);
    if (me == 0)
        printf("mpi: %d ranks: %d passed, %d failed\n", ranks, passed, failed);
    bloopcl_context_destroy(w.ctx);
    free(w.g), free(w.a);
    MPI_Finalize();
    return failed > 0;
}
