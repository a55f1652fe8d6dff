/* mpi_common.c — agreeing on a failure across ranks, and the report every rank gets. */
#include "mpi_common.h"

#include <stdio.h>
#include <string.h>

bloopcl_status bloopcl__mpi_check_report(const bloopcl_mpi_report *report)
{
    if (report != NULL && report->struct_size < sizeof(bloopcl_mpi_report))
        return BLOOPCL_ERR_UNSUPPORTED;
    return BLOOPCL_OK;
}

void bloopcl__mpi_write_report(const bloopcl_mpi_report *local, bloopcl_mpi_report *report)
{
    if (report == NULL || report->struct_size < sizeof *report)
        return;  /* a newer caller's fields beyond ours stay as they are */
    size_t caller_size = report->struct_size;
    memcpy(report, local, sizeof *report);
    report->struct_size = caller_size;
}

bool bloopcl__mpi_all_true(MPI_Comm comm, bool mine)
{
    int local = mine, all = 0;
    if (MPI_Allreduce(&local, &all, 1, MPI_INT, MPI_LAND, comm) != MPI_SUCCESS)
        return false;
    return all != 0;
}

bloopcl_status bloopcl__mpi_transport_failed(bloopcl_mpi_report *local,
                                             bloopcl_mpi_report *report, const char *call)
{
    local->failed_status = BLOOPCL_ERR_TRANSPORT;
    snprintf(local->message, sizeof local->message, "%s failed (the communicator's error "
             "handler returned an error); this rank did not step, and a rank where the call "
             "succeeded may have", call);
    bloopcl__mpi_write_report(local, report);
    return BLOOPCL_ERR_TRANSPORT;
}

int bloopcl__mpi_first_failure(const double *rows, int ranks, int stride, int status_index)
{
    for (int r = 0; r < ranks; ++r)
        if (rows[(size_t)r * (size_t)stride + (size_t)status_index] != 0.0)
            return r;
    return -1;
}

bloopcl_status bloopcl__mpi_share_failure(bloopcl_combiner *comb, MPI_Comm comm, int failed,
                                          const double *rows, int stride, int status_index,
                                          const char *why, bloopcl_mpi_report *local)
{
    int me = 0;
    MPI_Comm_rank(comm, &me);
    local->failed_rank = failed;
    local->failed_status =
        (bloopcl_status)rows[(size_t)failed * (size_t)stride + (size_t)status_index];
    if (me == failed) {
        if (why == NULL)
            why = comb != NULL ? bloopcl_context_last_error(bloopcl_combiner_context(comb)) : "";
        snprintf(local->message, sizeof local->message, "rank %d: %s", failed,
                 why[0] != '\0' ? why : bloopcl_status_string(local->failed_status));
    }
    if (MPI_Bcast(local->message, (int)sizeof local->message, MPI_CHAR, failed, comm) !=
        MPI_SUCCESS)
        return BLOOPCL_ERR_TRANSPORT;
    return BLOOPCL_OK;
}
