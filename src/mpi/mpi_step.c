/* mpi_step.c — bloopcl_mpi_step: a split step whose totals travel over MPI.
 *
 * Each rank contributes one row, (its status, its BLOOPCL_NUM_TOTALS totals), to an
 * MPI_Allgather: every rank then holds every row in rank order and either (some rank failed)
 * cancels its half, or adds the rows in rank order with bloopcl_sum_totals and ends its half.
 * Gathering instead of MPI_Allreduce is what makes the sum deterministic: an MPI library may
 * add in any order (and differently per message size or topology); here the order is fixed
 * and the arithmetic is ours. A row is 21 doubles, so the gather costs what an all-reduce
 * would: one latency-bound exchange (report->reduce_seconds times it). */
#include "mpi_common.h"

#include <stdlib.h>
#include <string.h>

#define ROW_STATUS 0
#define ROW_TOTALS 1
#define ROW_DOUBLES (ROW_TOTALS + BLOOPCL_NUM_TOTALS)

/* The first half on this rank: its row of the exchange. */
static void begin_local(bloopcl_combiner *comb, const bloopcl_tensor *g, const bloopcl_tensor *a,
                        const bloopcl_tensor *d, const bloopcl_step_options *options,
                        cl_uint num_wait, const cl_event *wait_list, double *row)
{
    memset(row, 0, ROW_DOUBLES * sizeof(double));  /* an empty shard adds zeros */
    if (comb != NULL)
        row[ROW_STATUS] = bloopcl_step_begin(comb, g, a, d, options, num_wait, wait_list,
                                             row + ROW_TOTALS);
}

/* Every rank's totals added in rank order, then this rank's second half. */
static bloopcl_status finish(bloopcl_combiner *comb, const double *rows, int ranks,
                             cl_event *done)
{
    double *totals = malloc((size_t)ranks * BLOOPCL_NUM_TOTALS * sizeof(double));
    if (totals == NULL) {
        if (comb != NULL)
            bloopcl_step_cancel(comb);
        return BLOOPCL_ERR_OUT_OF_MEMORY;
    }
    for (int r = 0; r < ranks; ++r)
        memcpy(totals + (size_t)r * BLOOPCL_NUM_TOTALS,
               rows + (size_t)r * ROW_DOUBLES + ROW_TOTALS, BLOOPCL_NUM_TOTALS * sizeof(double));
    double global[BLOOPCL_NUM_TOTALS];
    bloopcl_sum_totals(totals, (size_t)ranks, global);
    free(totals);
    if (comb == NULL)
        return BLOOPCL_OK;
    return bloopcl_step_end(comb, global, done);
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
    bloopcl_status status = bloopcl__mpi_check_report(report);
    if (status != BLOOPCL_OK)
        return status;  /* before any collective: a caller's mistake on every rank alike */
    int ranks = 0;
    if (MPI_Comm_size(comm, &ranks) != MPI_SUCCESS)
        return bloopcl__mpi_transport_failed(&local, report, "MPI_Comm_size");
    double row[ROW_DOUBLES];
    begin_local(comb, g, a, d, options, num_wait_events, wait_list, row);
    bloopcl_status mine = (bloopcl_status)row[ROW_STATUS];

    double started = MPI_Wtime();
    double *rows = malloc((size_t)ranks * ROW_DOUBLES * sizeof(double));
    int err = rows == NULL ? MPI_ERR_NO_MEM
                           : MPI_Allgather(row, ROW_DOUBLES, MPI_DOUBLE, rows, ROW_DOUBLES,
                                           MPI_DOUBLE, comm);
    if (err != MPI_SUCCESS) {  /* no rank can know what the others saw: nobody steps */
        if (comb != NULL && mine == BLOOPCL_OK)
            bloopcl_step_cancel(comb);
        free(rows);
        return bloopcl__mpi_transport_failed(&local, report, "MPI_Allgather of the totals");
    }
    local.reduce_seconds = MPI_Wtime() - started;
    int failed = bloopcl__mpi_first_failure(rows, ranks, ROW_DOUBLES, ROW_STATUS);
    if (failed >= 0) {
        if (comb != NULL && mine == BLOOPCL_OK)
            bloopcl_step_cancel(comb);
        status = bloopcl__mpi_share_failure(comb, comm, failed, rows, ROW_DOUBLES, ROW_STATUS,
                                            &local);
        if (status == BLOOPCL_OK)
            status = mine != BLOOPCL_OK ? mine : BLOOPCL_ERR_SHARD_FAILED;
    } else {
        status = finish(comb, rows, ranks, done);
    }
    free(rows);
    bloopcl__mpi_write_report(&local, report);
    return status;
}
