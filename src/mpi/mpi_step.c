/* mpi_step.c — bloopcl_mpi_step: a split step whose totals travel over MPI.
 *
 * Each rank contributes one row to an MPI_Allgather: its status, a fingerprint of the step it
 * is about to take (method, backend, policy, hyperparameters, loss scales, the optimizer it
 * applies), and its
 * BLOOPCL_NUM_TOTALS totals. Every rank then holds every row in rank order and either (some
 * rank failed, or two ranks would take different steps) cancels its half, or adds the rows in
 * rank order with bloopcl_sum_totals and ends its half. Gathering instead of MPI_Allreduce is
 * what makes the sum deterministic: an MPI library may add in any order (and differently per
 * message size or topology); here the order is fixed and the arithmetic is ours. A row is 42
 * doubles, so the gather costs what an all-reduce would: one latency-bound exchange
 * (report->reduce_seconds times it).
 *
 * Every rank reaches the one collective on every path (a bad report, a failed allocation or
 * a failed begin only change the rank's row), so no rank can wait for another forever. */
#include "mpi_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    ROW_STATUS,
    ROW_HOLDS,          /* 1: this rank has a combiner (a non-empty slice) */
    ROW_FINGERPRINT,    /* ROW_FINGERPRINT_DOUBLES values that must agree across ranks */
    ROW_TOTALS = ROW_FINGERPRINT + 20,
    ROW_DOUBLES = ROW_TOTALS + BLOOPCL_NUM_TOTALS
};
#define ROW_FINGERPRINT_DOUBLES (ROW_TOTALS - ROW_FINGERPRINT)
#define STACK_RANKS 64  /* rows for up to this many ranks need no allocation */

static const char *const fingerprint_names[ROW_FINGERPRINT_DOUBLES] = {
    "method", "dot backend", "non-finite policy", "ema_weight", "lambda", "eps", "rescale",
    "ratio_only", "inverse scale of g", "inverse scale of a", "update_parameters",
    "optimizer", "learning rate", "weight_decay", "momentum or beta1", "dampening or beta2",
    "decoupled weight decay", "nesterov", "optimizer eps", "bias correction"};

/* The optimizer half of the fingerprint (a device-side learning rate counts as -1). */
static bloopcl_status optimizer_fingerprint(bloopcl_combiner *comb,
                                            const bloopcl_step_options *options, double *out)
{
    bloopcl_optimizer o = {.struct_size = sizeof o};
    bloopcl_status status = bloopcl_combiner_optimizer(comb, &o);
    if (status != BLOOPCL_OK)
        return status;
    /* fields of 0.5.0: read only from a struct that holds them */
    bool new_fields = options != NULL &&
                      options->struct_size >= offsetof(bloopcl_step_options, lr_index) +
                                                  sizeof options->lr_index;
    bool update = new_fields && options->update_parameters != 0;
    bool lr_on_device = new_fields && options->lr_buffer != NULL;
    bool adamw = o.kind == BLOOPCL_OPTIMIZER_ADAMW;
    const double values[10] = {update, o.kind, lr_on_device ? -1.0 : o.lr, o.weight_decay,
                               adamw ? o.beta1 : o.momentum, adamw ? o.beta2 : o.dampening,
                               o.decoupled_weight_decay != 0, o.nesterov != 0, o.eps,
                               o.bias_correction != 0};
    memcpy(out, values, sizeof values);
    return BLOOPCL_OK;
}

/* What two shards of one step must share (a device-side scale counts as -1: its value is
 * the caller's to keep equal). */
static bloopcl_status fingerprint(bloopcl_combiner *comb, const bloopcl_step_options *options,
                                  double *out)
{
    bloopcl_config config = {.struct_size = sizeof config};
    bloopcl_status status = bloopcl_combiner_config(comb, &config);
    if (status != BLOOPCL_OK)
        return status;
    bool on_device = options != NULL && options->inv_scale_buffer != NULL;
    const double values[10] = {
        config.method, config.dots, config.nonfinite, config.ema_weight, config.lambda,
        config.eps, config.rescale != 0, config.ratio_only != 0,
        on_device ? -1.0 : options != NULL ? options->inv_scale_g : 1.0,
        on_device ? -1.0 : options != NULL ? options->inv_scale_a : 1.0};
    memcpy(out, values, sizeof values);
    return optimizer_fingerprint(comb, options, out + sizeof values / sizeof values[0]);
}

/* The first half on this rank: its row of the exchange (`refused`: a status this rank
 * already knows it must report, such as a bad report struct). */
static void begin_local(bloopcl_combiner *comb, const bloopcl_tensor *g, const bloopcl_tensor *a,
                        const bloopcl_tensor *d, const bloopcl_step_options *options,
                        cl_uint num_wait, const cl_event *wait_list, bloopcl_status refused,
                        double *row)
{
    memset(row, 0, ROW_DOUBLES * sizeof(double));  /* an empty shard adds zeros */
    bloopcl_status status = refused;
    if (status == BLOOPCL_OK && comb != NULL) {
        row[ROW_HOLDS] = 1.0;
        status = fingerprint(comb, options, row + ROW_FINGERPRINT);
        if (status == BLOOPCL_OK)
            status = bloopcl_step_begin(comb, g, a, d, options, num_wait, wait_list,
                                        row + ROW_TOTALS);
    }
    row[ROW_STATUS] = (double)status;
}

/* The first rank whose fingerprint differs from the first holding rank's; -1 if none.
 * Every rank computes the same answer from the same rows. */
static int first_mismatch(const double *rows, int ranks, int *reference, int *field)
{
    *reference = -1;
    for (int r = 0; r < ranks; ++r) {
        const double *row = rows + (size_t)r * ROW_DOUBLES;
        if (row[ROW_HOLDS] == 0.0)
            continue;
        if (*reference < 0) {
            *reference = r;
            continue;
        }
        const double *first = rows + (size_t)*reference * ROW_DOUBLES;
        for (int k = 0; k < ROW_FINGERPRINT_DOUBLES; ++k)
            if (row[ROW_FINGERPRINT + k] != first[ROW_FINGERPRINT + k]) {
                *field = k;
                return r;
            }
    }
    return -1;
}

/* Every rank's totals added in rank order (compacted in place: row r's totals move down to
 * r * BLOOPCL_NUM_TOTALS, never past a row not yet moved), then this rank's second half. */
static bloopcl_status finish(bloopcl_combiner *comb, double *rows, int ranks, cl_event *done)
{
    for (int r = 0; r < ranks; ++r)
        memmove(rows + (size_t)r * BLOOPCL_NUM_TOTALS,
                rows + (size_t)r * ROW_DOUBLES + ROW_TOTALS, BLOOPCL_NUM_TOTALS * sizeof(double));
    double global[BLOOPCL_NUM_TOTALS];
    bloopcl_sum_totals(rows, (size_t)ranks, global);
    if (comb == NULL)
        return BLOOPCL_OK;
    return bloopcl_step_end(comb, global, done);
}

/* Some rank failed or two disagree: every rank that began cancels; the report says why. */
static bloopcl_status fail_collectively(bloopcl_combiner *comb, MPI_Comm comm,
                                        const double *rows, int ranks, bloopcl_status mine,
                                        const char *why, bloopcl_mpi_report *local)
{
    int failed = bloopcl__mpi_first_failure(rows, ranks, ROW_DOUBLES, ROW_STATUS);
    if (comb != NULL && mine == BLOOPCL_OK)
        bloopcl_step_cancel(comb);
    if (failed >= 0) {
        bloopcl_status status = bloopcl__mpi_share_failure(comb, comm, failed, rows,
                                                           ROW_DOUBLES, ROW_STATUS, why, local);
        if (status != BLOOPCL_OK)
            return status;
        return mine != BLOOPCL_OK ? mine : BLOOPCL_ERR_SHARD_FAILED;
    }
    int reference = -1, field = 0, other = first_mismatch(rows, ranks, &reference, &field);
    local->failed_rank = other;
    local->failed_status = BLOOPCL_ERR_INVALID_ARGUMENT;
    snprintf(local->message, sizeof local->message, "rank %d's step differs from rank %d's in "
             "its %s (%g, %g); no rank stepped", other, reference, fingerprint_names[field],
             rows[(size_t)other * ROW_DOUBLES + ROW_FINGERPRINT + (size_t)field],
             rows[(size_t)reference * ROW_DOUBLES + ROW_FINGERPRINT + (size_t)field]);
    return BLOOPCL_ERR_INVALID_ARGUMENT;
}

bloopcl_status bloopcl_mpi_step(bloopcl_combiner *comb, MPI_Comm comm, const bloopcl_tensor *g,
                                const bloopcl_tensor *a, const bloopcl_tensor *d,
                                const bloopcl_step_options *options, cl_uint num_wait_events,
                                const cl_event *wait_list, cl_event *done,
                                bloopcl_mpi_report *report)
{
    if (done != NULL)
        *done = NULL;
    bloopcl_mpi_report local = BLOOPCL_MPI_REPORT_INIT;
    int ranks = 0;
    if (MPI_Comm_size(comm, &ranks) != MPI_SUCCESS)  /* local: no rank is left waiting */
        return bloopcl__mpi_transport_failed(&local, report, "MPI_Comm_size");
    static _Thread_local double stack_rows[STACK_RANKS * ROW_DOUBLES];
    double *rows = ranks <= STACK_RANKS ? stack_rows
                                        : malloc((size_t)ranks * ROW_DOUBLES * sizeof(double));
    if (ranks > STACK_RANKS && !bloopcl__mpi_all_true(comm, rows != NULL)) {
        free(rows);  /* every rank learns that some rank could not hold the rows */
        local.failed_status = BLOOPCL_ERR_OUT_OF_MEMORY;
        snprintf(local.message, sizeof local.message, "no memory for %d rows of totals on "
                 "some rank; no rank stepped", ranks);
        bloopcl__mpi_write_report(&local, report);
        return BLOOPCL_ERR_OUT_OF_MEMORY;
    }
    double row[ROW_DOUBLES];
    bloopcl_status refused = bloopcl__mpi_check_report(report);
    begin_local(comb, g, a, d, options, num_wait_events, wait_list, refused, row);
    bloopcl_status mine = (bloopcl_status)row[ROW_STATUS];
    /* this rank's own words for a failure its context's last error does not hold */
    const char *why = refused != BLOOPCL_OK ? "its bloopcl_mpi_report's struct_size is not "
                                              "sizeof(bloopcl_mpi_report) (BLOOPCL_MPI_REPORT_INIT)"
                    : mine == BLOOPCL_ERR_BUSY ? bloopcl_status_string(mine)
                                               : NULL;

    double started = MPI_Wtime();
    int err = MPI_Allgather(row, ROW_DOUBLES, MPI_DOUBLE, rows, ROW_DOUBLES, MPI_DOUBLE, comm);
    local.reduce_seconds = MPI_Wtime() - started;
    bloopcl_status status;
    if (err != MPI_SUCCESS) {  /* this rank cannot know what the others saw: it does not step */
        if (comb != NULL && mine == BLOOPCL_OK)
            bloopcl_step_cancel(comb);
        status = bloopcl__mpi_transport_failed(&local, NULL, "MPI_Allgather of the totals");
    } else {
        int reference = 0, field = 0;
        bool agreed = bloopcl__mpi_first_failure(rows, ranks, ROW_DOUBLES, ROW_STATUS) < 0 &&
                      first_mismatch(rows, ranks, &reference, &field) < 0;
        status = agreed ? finish(comb, rows, ranks, done)
                        : fail_collectively(comb, comm, rows, ranks, mine, why, &local);
    }
    if (rows != stack_rows)
        free(rows);
    if (bloopcl__mpi_check_report(report) == BLOOPCL_OK)
        bloopcl__mpi_write_report(&local, report);
    return status;
}
