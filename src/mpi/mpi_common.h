/* mpi_common.h — what the collective calls of bloopcl-mpi share: agreeing on a failure and
 * reporting it on every rank. */
#ifndef BLOOPCL_MPI_COMMON_H
#define BLOOPCL_MPI_COMMON_H

#include "bloopcl_mpi.h"

#include <stdbool.h>

/* BLOOPCL_ERR_UNSUPPORTED for a report whose struct_size is smaller than this library's
 * (uninitialised, or from no header this library knows); NULL is fine (no report wanted). */
bloopcl_status bloopcl__mpi_check_report(const bloopcl_mpi_report *report);

/* Copies `local` into the caller's report, if any: the prefix both know. */
void bloopcl__mpi_write_report(const bloopcl_mpi_report *local, bloopcl_mpi_report *report);

/* BLOOPCL_ERR_TRANSPORT, with "`call` failed" in the report. */
bloopcl_status bloopcl__mpi_transport_failed(bloopcl_mpi_report *local,
                                             bloopcl_mpi_report *report, const char *call);

/* The lowest rank whose row (`stride` doubles per rank) holds a status other than OK at
 * `status_index`; -1 if none. */
int bloopcl__mpi_first_failure(const double *rows, int ranks, int stride, int status_index);

/* Every rank learns the failed rank's status and message (a broadcast from it) into `local`.
 * On the failed rank the message is `why`, or when NULL its combiner's context's last error. */
bloopcl_status bloopcl__mpi_share_failure(bloopcl_combiner *comb, MPI_Comm comm, int failed,
                                          const double *rows, int stride, int status_index,
                                          const char *why, bloopcl_mpi_report *local);

/* True on every rank when `mine` is true on every rank (a collective). */
bool bloopcl__mpi_all_true(MPI_Comm comm, bool mine);

#endif
