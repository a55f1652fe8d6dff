/* bloopcl-mpi-bench — what sharding costs per step: under `mpirun -np R`, each rank steps its
 * own slice of N elements through bloopcl_mpi_step and, for comparison, the same slice
 * through plain bloopcl_step (no exchange). It prints, per rank count, the median step time
 * of both, the median time of the totals' exchange and sum (bloopcl_mpi_report's
 * reduce_seconds: the MPI_Allgather of 21 doubles per rank and the rank-order sum), and the
 * exchange's share of the sharded step. Each timed step is fenced by a barrier and ends with
 * bloopcl_context_finish, so a step is the time from all ranks starting to this rank's d
 * being written. */
#include "bloopcl_mpi.h"
#include "tool_cli.h"
#include "tool_device.h"
#include "tool_time.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REPS 1000

typedef struct bench_options {
    size_t n;         /* elements per rank */
    int reps;
    bloopcl_method method;
} bench_options;

static void help(FILE *to)
{
    fputs("Times a sharded Bloop step (bloopcl_mpi_step: pass 1 on each rank's slice, the\n"
          "totals exchanged and summed in rank order, pass 2) against the same slice stepped\n"
          "alone (bloopcl_step), on each rank's device (--device or BLOOPCL_DEVICE). Run it\n"
          "under mpirun -np R.\n"
          "\n"
          "Options:\n"
          "  --n N        elements per rank (default 16777216; suffixes K and M)\n"
          "  --reps K     timed steps of each kind, after 3 warm-up steps (1..1000, default 20)\n"
          "  --method M   bloop, dynamic_barrier, pcgrad or mixed (default bloop)\n"
          "\n"
          "Output (rank 0): ranks, n per rank, median sharded step, median local step, median\n"
          "exchange inside bloopcl_mpi_step (MPI_Allgather of the totals and their sum, which\n"
          "includes waiting for the slowest rank's pass 1), the same MPI_Allgather alone after\n"
          "a barrier (the transport's latency), their shares of the sharded step, and the\n"
          "sharded step's overhead over the local one. Ranks that share cores (mpirun\n"
          "--oversubscribe on a small machine) slow each other's passes: the exchange then\n"
          "mostly measures that skew.\n",
          to);
}

static bool parse_size(const char *text, size_t *out)
{
    char *end = NULL;
    unsigned long long value = strtoull(text, &end, 10);
    if (end == text)
        return false;
    if (*end == 'K' || *end == 'k')
        value <<= 10, ++end;
    else if (*end == 'M' || *end == 'm')
        value <<= 20, ++end;
    *out = (size_t)value;
    return *end == '\0' && value > 0;
}

static bool parse_method(const char *text, bloopcl_method *out)
{
    for (int m = 0; m < 4; ++m)
        if (strcmp(text, bloopcl_method_name((bloopcl_method)m)) == 0) {
            *out = (bloopcl_method)m;
            return true;
        }
    return false;
}

enum { OPT_N, OPT_REPS, OPT_METHOD };

static const tool_option BENCH_OPTIONS[] = {
    {"n", true, OPT_N}, {"reps", true, OPT_REPS}, {"method", true, OPT_METHOD}};

static const tool_spec MPI_BENCH_TOOL;

static bool apply_option(int id, const char *value, void *user)
{
    bench_options *opt = user;
    unsigned long long reps = 0;
    if (id == OPT_N && !parse_size(value, &opt->n))
        return tool_usage_error(&MPI_BENCH_TOOL, "--n takes a size such as 16M, not \"%s\"",
                                value);
    if (id == OPT_REPS && !tool_parse_unsigned(value, 1, MAX_REPS, &reps))
        return tool_usage_error(&MPI_BENCH_TOOL, "--reps takes 1..%d, not \"%s\"", MAX_REPS,
                                value);
    if (id == OPT_REPS)
        opt->reps = (int)reps;
    if (id == OPT_METHOD && !parse_method(value, &opt->method))
        return tool_usage_error(&MPI_BENCH_TOOL, "--method takes bloop, dynamic_barrier, "
                                "pcgrad or mixed, not \"%s\"", value);
    return true;
}

static const tool_spec MPI_BENCH_TOOL = {
    .name = "bloopcl-mpi-bench",
    .usage = "usage: mpirun -np R bloopcl-mpi-bench [--device SPEC] [--n N] [--reps K]\n"
             "                                      [--method M]\n",
    .failure = "a step failed on some rank",
    .schema = "bloopcl-mpi-bench/1",
    .help = help,
    .options = BENCH_OPTIONS,
    .num_options = sizeof BENCH_OPTIONS / sizeof BENCH_OPTIONS[0],
    .apply = apply_option,
};

typedef struct rank_setup {
    bloopcl_context *ctx;
    bloopcl_combiner *sharded, *local;
    cl_mem g, a, d;
    bloopcl_segment seg[3];
    bloopcl_tensor tg, ta, td;
} rank_setup;

static cl_mem filled(bloopcl_context *ctx, size_t n, float value)
{
    cl_int err;
    cl_mem b = clCreateBuffer(bloopcl_context_cl_context(ctx), CL_MEM_READ_WRITE,
                              n * sizeof(float), NULL, &err);
    if (err == CL_SUCCESS)
        err = clEnqueueFillBuffer(bloopcl_context_queue(ctx), b, &value, sizeof value, 0,
                                  n * sizeof(float), 0, NULL, NULL);
    return err == CL_SUCCESS ? b : NULL;
}

static bool setup(const bench_options *opt, bloopcl_context *ctx, rank_setup *rs)
{
    memset(rs, 0, sizeof *rs);
    rs->ctx = ctx;
    bloopcl_config config;
    bloopcl_config_default(&config, opt->method);
    if (bloopcl_combiner_create(rs->ctx, &config, opt->n, &rs->sharded) != BLOOPCL_OK ||
        bloopcl_combiner_create(rs->ctx, &config, opt->n, &rs->local) != BLOOPCL_OK) {
        fprintf(stderr, "bloopcl-mpi-bench: %s\n", bloopcl_context_last_error(rs->ctx));
        return false;
    }
    rs->g = filled(rs->ctx, opt->n, 0.5f);
    rs->a = filled(rs->ctx, opt->n, -0.25f);
    rs->d = filled(rs->ctx, opt->n, 0.0f);
    if (rs->g == NULL || rs->a == NULL || rs->d == NULL) {
        fprintf(stderr, "bloopcl-mpi-bench: cannot allocate 3 x %zu floats\n", opt->n);
        return false;
    }
    rs->seg[0] = (bloopcl_segment){.buffer = rs->g, .count = opt->n};
    rs->seg[1] = (bloopcl_segment){.buffer = rs->a, .count = opt->n};
    rs->seg[2] = (bloopcl_segment){.buffer = rs->d, .count = opt->n};
    rs->tg = (bloopcl_tensor){&rs->seg[0], 1};
    rs->ta = (bloopcl_tensor){&rs->seg[1], 1};
    rs->td = (bloopcl_tensor){&rs->seg[2], 1};
    return true;
}

static void teardown(rank_setup *rs)
{
    cl_mem buffers[] = {rs->g, rs->a, rs->d};
    for (int k = 0; k < 3; ++k)
        if (buffers[k] != NULL)
            clReleaseMemObject(buffers[k]);
    bloopcl_combiner_destroy(rs->sharded);
    bloopcl_combiner_destroy(rs->local);
    bloopcl_context_destroy(rs->ctx);
}

/* One timed step of either kind; false on an error (printed). */
static bool timed_step(rank_setup *rs, bool sharded, double *seconds, double *reduce)
{
    bloopcl_mpi_report report = BLOOPCL_MPI_REPORT_INIT;
    MPI_Barrier(MPI_COMM_WORLD);
    double start = tool_seconds();
    bloopcl_status status =
        sharded ? bloopcl_mpi_step(rs->sharded, MPI_COMM_WORLD, &rs->tg, &rs->ta, &rs->td, NULL,
                                   0, NULL, NULL, &report)
                : bloopcl_step(rs->local, &rs->tg, &rs->ta, &rs->td, 0, NULL, NULL);
    if (status == BLOOPCL_OK)
        status = bloopcl_context_finish(rs->ctx);
    *seconds = tool_seconds() - start;
    *reduce = report.reduce_seconds;
    if (status != BLOOPCL_OK)
        fprintf(stderr, "bloopcl-mpi-bench: step: %s %s\n", bloopcl_status_string(status),
                sharded ? report.message : bloopcl_context_last_error(rs->ctx));
    return status == BLOOPCL_OK;
}

/* The transport alone: an MPI_Allgather of one row of totals per rank (what bloopcl_mpi_step
 * exchanges) right after a barrier, so no rank waits for another's pass 1. */
static double allgather_seconds(int ranks)
{
    double row[BLOOPCL_NUM_TOTALS + 1] = {0};
    double *rows = malloc((size_t)ranks * sizeof row);
    if (rows == NULL)
        return 0.0;
    MPI_Barrier(MPI_COMM_WORLD);
    double start = tool_seconds();
    MPI_Allgather(row, BLOOPCL_NUM_TOTALS + 1, MPI_DOUBLE, rows, BLOOPCL_NUM_TOTALS + 1,
                  MPI_DOUBLE, MPI_COMM_WORLD);
    double seconds = tool_seconds() - start;
    free(rows);
    return seconds;
}

/* The median over ranks of each rank's median (what a typical rank sees). */
static double median_over_ranks(double mine, int ranks)
{
    double *all = malloc((size_t)ranks * sizeof *all);
    if (all == NULL)
        return mine;
    MPI_Allgather(&mine, 1, MPI_DOUBLE, all, 1, MPI_DOUBLE, MPI_COMM_WORLD);
    double median = tool_median(all, (size_t)ranks);
    free(all);
    return median;
}

static bool run(const bench_options *opt, bloopcl_context *ctx, int me, int ranks)
{
    rank_setup rs;
    bool ok = setup(opt, ctx, &rs);
    int all_ok = 0, mine_ok = ok;
    MPI_Allreduce(&mine_ok, &all_ok, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    static double sharded[MAX_REPS], local[MAX_REPS], reduce[MAX_REPS], gather[MAX_REPS];
    double unused;
    for (int w = 0; all_ok && w < 3; ++w)  /* kernels built, caches and buffers warm */
        all_ok = timed_step(&rs, true, &unused, &unused) && timed_step(&rs, false, &unused,
                                                                       &unused);
    for (int k = 0; all_ok && k < opt->reps; ++k)
        all_ok = timed_step(&rs, true, &sharded[k], &reduce[k]) &&
                 timed_step(&rs, false, &local[k], &unused) &&
                 (gather[k] = allgather_seconds(ranks)) >= 0.0;
    if (all_ok) {
        double step = median_over_ranks(tool_median(sharded, (size_t)opt->reps), ranks);
        double alone = median_over_ranks(tool_median(local, (size_t)opt->reps), ranks);
        double exchange = median_over_ranks(tool_median(reduce, (size_t)opt->reps), ranks);
        double transport = median_over_ranks(tool_median(gather, (size_t)opt->reps), ranks);
        if (me == 0)
            printf("mpi-bench %-6s ranks %d  n/rank %zu  sharded step %9.1f us  local step "
                   "%9.1f us  exchange %7.1f us (allgather alone %6.1f us)  exchange/step "
                   "%5.2f%%  allgather/step %6.3f%%  overhead %+6.2f%%\n",
                   bloopcl_method_name(opt->method), ranks, opt->n, step * 1e6, alone * 1e6,
                   exchange * 1e6, transport * 1e6, 100.0 * exchange / step,
                   100.0 * transport / step, 100.0 * (step / alone - 1.0));
    }
    teardown(&rs);
    return all_ok;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int me = 0, ranks = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    bench_options opt = {.n = (size_t)1 << 24, .reps = 20, .method = BLOOPCL_METHOD_BLOOP};
    tool_common common;
    bloopcl_context *ctx = NULL;
    int status = tool_setup(&MPI_BENCH_TOOL, argc, argv, &common, &opt, &ctx);
    if (status == TOOL_CONTINUE && common.json) {
        tool_usage_error(&MPI_BENCH_TOOL, "--json is not supported (one line per run)");
        status = TOOL_EXIT_USAGE;
    }
    int all_continue = 0, mine = status == TOOL_CONTINUE;
    MPI_Allreduce(&mine, &all_continue, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    if (all_continue)  /* every rank has a context: the collectives below meet */
        status = run(&opt, ctx, me, ranks) ? TOOL_EXIT_OK : TOOL_EXIT_FAILED;
    else if (status == TOOL_CONTINUE)
        status = TOOL_EXIT_USAGE;  /* another rank could not start */
    if (!all_continue)
        bloopcl_context_destroy(ctx);
    MPI_Finalize();
    return status;
}
