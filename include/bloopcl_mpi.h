/*
 * bloopcl_mpi.h — sharded Bloop over MPI (libbloopcl-mpi, pkg-config bloopcl-mpi).
 *
 * When a model outgrows one device, trainers shard the optimizer state (ZeRO-1/2, FSDP): each
 * rank holds a contiguous slice of the flattened gradient and of the EMA. Bloop's projection
 * is global, so each rank runs its half of a split step (bloopcl.h, "Split steps") on its
 * slice, the ranks add their dot-product totals, and each finishes with the global ones:
 *
 *   rank r:  bloopcl_step_begin on its slice -> its totals
 *            MPI_Allgather of (status, totals) from every rank, in rank order
 *            every rank adds the rows in rank order (bloopcl_sum_totals, compensated): the same
 *            bits on every rank, on every run, for any MPI library and any reduction order
 *            it would have chosen
 *            bloopcl_step_end with the global totals
 *
 * The state is elementwise, so the shards' EMAs together are bit for bit the EMA one device
 * would hold; d agrees with one device's within the rounding of the dots' order.
 *
 * Conventions (as bloopcl.h's): every call returns a bloopcl_status; the library never prints
 * and never exits. These calls are collective: every rank of `comm` must make the same call.
 * A rank whose slice is empty passes combiner NULL (its tensors are not looked at) and takes
 * part with zeros. MPI errors are seen only where the communicator's error handler returns
 * them (MPI_ERRORS_RETURN; MPI's default ends the job): BLOOPCL_ERR_TRANSPORT.
 */
#ifndef BLOOPCL_MPI_H
#define BLOOPCL_MPI_H

#include <bloopcl.h>
#include <mpi.h>

#ifdef __cplusplus
extern "C" {
#endif

/** What a collective call found, on every rank the same (except `reduce_seconds`). Output
 * only: the library writes the prefix of the caller's struct_size (at least this struct's). */
typedef struct bloopcl_mpi_report {
    size_t struct_size;         /* sizeof(bloopcl_mpi_report): set by BLOOPCL_MPI_REPORT_INIT */
    int failed_rank;            /* the lowest rank that failed its checks; -1: none */
    bloopcl_status failed_status;  /* that rank's status (BLOOPCL_OK when none failed) */
    char message[512];          /* that rank's message (its context's last error) */
    double reduce_seconds;      /* this rank's time in the exchange and sum of the totals */
} bloopcl_mpi_report;

#define BLOOPCL_MPI_REPORT_INIT { .struct_size = sizeof(bloopcl_mpi_report), .failed_rank = -1 }

/**
 * One step of a combiner sharded over `comm` (arguments as bloopcl_step_with_options, for this
 * rank's slices). If any rank's bloopcl_step_begin fails, no rank steps: each cancels its half
 * (state unchanged everywhere) and returns its own status, or BLOOPCL_ERR_SHARD_FAILED where
 * its own half was fine; `report` (may be NULL) names the failed rank and its message on every
 * rank. The ranks must take the same step: a rank whose method, dot backend, non-finite
 * policy, hyperparameters or host-side loss scales differ from the lowest holding rank's
 * fails every rank (BLOOPCL_ERR_INVALID_ARGUMENT; the report names the two ranks and the
 * field). A driver failure in the second half is local to its rank, reported as bloopcl_step
 * reports it (the other ranks have stepped: the trainer should stop or restore a checkpoint).
 */
BLOOPCL_API bloopcl_status bloopcl_mpi_step(bloopcl_combiner *combiner, MPI_Comm comm,
                                const bloopcl_tensor *g, const bloopcl_tensor *a,
                                const bloopcl_tensor *d, const bloopcl_step_options *options,
                                cl_uint num_wait_events, const cl_event *wait_list,
                                cl_event *done, bloopcl_mpi_report *report);

/**
 * Checkpoints of sharded state: one file whatever the number of ranks, holding the whole
 * state as one device would (a header, then each state kind the method keeps, n_total floats
 * each, in rank order of the slices). Each rank writes (reads) its slice at its offset, the
 * sum of the lower ranks' sizes (MPI-IO). So a checkpoint written by R ranks is read back by
 * any other number of ranks, re-sharded by their sizes: the state is elementwise.
 * Reading checks the header (method, total size) and the file's size (a truncated file is
 * refused) and marks the state initialised. Either call fails on every rank if it fails on
 * one; a failed save leaves no usable file, and a load that fails in its last part (a rank's
 * bloopcl_write_state) may have loaded the other ranks already: load again or reset.
 */
BLOOPCL_API bloopcl_status bloopcl_mpi_save_state(bloopcl_combiner *combiner, MPI_Comm comm,
                                      const char *path, bloopcl_mpi_report *report);
BLOOPCL_API bloopcl_status bloopcl_mpi_load_state(bloopcl_combiner *combiner, MPI_Comm comm,
                                      const char *path, bloopcl_mpi_report *report);

#ifdef __cplusplus
}
#endif
#endif /* BLOOPCL_MPI_H */
