/* data_parallel.c — see data_parallel.h. MPI and the shard geometry only: the
 * trainer keeps its kernels (the forward and backward passes, Adam) and calls these between
 * them. Host staging: one float per parameter, reused by the sum of the gradients and by the
 * gathering of the parameters. */
#include "data_parallel.h"
#include "train.h"

#include "bloopcl_mpi.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct train_dp {
    MPI_Comm comm;          /* a duplicate of MPI_COMM_WORLD: the trainer's own traffic */
    int rank, ranks;
    size_t num_tensors;
    size_t *tensor_size;    /* elements of each tensor */
    size_t *tensor_start;   /* where each tensor begins in the flattened vector */
    size_t total;           /* elements of the flattened vector */
    size_t lo, hi;          /* this rank's shard: elements [lo, hi) of it */
    int *counts, *displs;   /* every rank's shard, for MPI_Allgatherv */
    float *flat;            /* host copy of the flattened vector (total floats) */
};

/* Part `part` of `parts` of `total` items: [total part / parts, total (part+1) / parts), so
 * the parts are contiguous, in rank order, and differ in size by at most one. */
static void split(size_t total, int part, int parts, size_t *first, size_t *count)
{
    unsigned long long n = total;
    size_t lo = (size_t)(n * (unsigned)part / (unsigned)parts);
    size_t hi = (size_t)(n * (unsigned)(part + 1) / (unsigned)parts);
    *first = lo;
    *count = hi - lo;
}

bool train_dp_requested(int argc, char **argv)
{
    static const char *const launcher_variables[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE",
                                                     "PMIX_RANK"};
    for (size_t i = 0; i < sizeof launcher_variables / sizeof launcher_variables[0]; ++i)
        if (getenv(launcher_variables[i]) != NULL)
            return true;
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; ++i)
        if (strcmp(argv[i], "--data-parallel") == 0)
            return true;
    return false;
}

train_dp *train_dp_start(int *argc, char ***argv)
{
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized && MPI_Init(argc, argv) != MPI_SUCCESS) {
        fprintf(stderr, "%s: MPI_Init failed\n", PROGRAM);
        return NULL;
    }
    train_dp *dp = calloc(1, sizeof *dp);
    if (dp == NULL || MPI_Comm_dup(MPI_COMM_WORLD, &dp->comm) != MPI_SUCCESS) {
        fprintf(stderr, "%s: cannot set up the data-parallel mode\n", PROGRAM);
        free(dp);
        MPI_Finalize();
        return NULL;
    }
    MPI_Comm_rank(dp->comm, &dp->rank);
    MPI_Comm_size(dp->comm, &dp->ranks);
    /* stdout is rank 0's: the table, the JSON document, --help and --list appear once. */
    if (dp->rank != 0 && freopen("/dev/null", "w", stdout) == NULL)
        fprintf(stderr, "%s: rank %d: cannot silence stdout\n", PROGRAM, dp->rank);
    return dp;
}

void train_dp_finish(train_dp *dp)
{
    if (dp == NULL)
        return;
    free(dp->tensor_size);
    free(dp->tensor_start);
    free(dp->counts);
    free(dp->displs);
    free(dp->flat);
    MPI_Comm_free(&dp->comm);
    free(dp);
    MPI_Finalize();
}

int train_dp_rank(const train_dp *dp)
{
    return dp != NULL ? dp->rank : 0;
}

int train_dp_ranks(const train_dp *dp)
{
    return dp != NULL ? dp->ranks : 1;
}

void train_dp_rows(const train_dp *dp, size_t batch, size_t *first, size_t *count)
{
    split(batch, train_dp_rank(dp), train_dp_ranks(dp), first, count);
}

/* This rank's piece of tensor t: the part of [start, start + size) inside [lo, hi). */
static void own_piece(const train_dp *dp, size_t t, size_t *offset, size_t *count)
{
    size_t begin = dp->tensor_start[t], end = begin + dp->tensor_size[t];
    size_t lo = dp->lo > begin ? dp->lo : begin, hi = dp->hi < end ? dp->hi : end;
    *offset = lo - begin;
    *count = hi > lo ? hi - lo : 0;
    if (*count == 0)
        *offset = 0;
}

int train_dp_plan(train_dp *dp, const size_t *tensor_size, size_t num_tensors,
                  size_t *own_offset, size_t *own_count)
{
    if (dp == NULL) {
        for (size_t t = 0; t < num_tensors; ++t)
            own_offset[t] = 0, own_count[t] = tensor_size[t];
        return 0;
    }
    size_t ranks = (size_t)dp->ranks;
    dp->num_tensors = num_tensors;
    dp->tensor_size = malloc(num_tensors * sizeof(size_t));
    dp->tensor_start = malloc(num_tensors * sizeof(size_t));
    dp->counts = malloc(ranks * sizeof(int));
    dp->displs = malloc(ranks * sizeof(int));
    if (!dp->tensor_size || !dp->tensor_start || !dp->counts || !dp->displs) {
        fprintf(stderr, "%s: out of memory\n", PROGRAM);
        return -1;
    }
    dp->total = 0;
    for (size_t t = 0; t < num_tensors; ++t) {
        dp->tensor_size[t] = tensor_size[t];
        dp->tensor_start[t] = dp->total;
        dp->total += tensor_size[t];
    }
    if (dp->total > (size_t)INT_MAX || dp->total < ranks) {
        fprintf(stderr, "%s: %zu parameters cannot be cut into %zu non-empty shards of MPI "
                "size\n", PROGRAM, dp->total, ranks);
        return -1;
    }
    for (int r = 0; r < dp->ranks; ++r) {
        size_t first, count;
        split(dp->total, r, dp->ranks, &first, &count);
        dp->counts[r] = (int)count;
        dp->displs[r] = (int)first;
    }
    dp->lo = (size_t)dp->displs[dp->rank];
    dp->hi = dp->lo + (size_t)dp->counts[dp->rank];
    if ((dp->flat = malloc(dp->total * sizeof(float))) == NULL) {
        fprintf(stderr, "%s: out of memory\n", PROGRAM);
        return -1;
    }
    for (size_t t = 0; t < num_tensors; ++t)
        own_piece(dp, t, &own_offset[t], &own_count[t]);
    return 0;
}

static int cl_failed(const train_dp *dp, cl_int err, const char *what)
{
    if (err == CL_SUCCESS)
        return 0;
    fprintf(stderr, "%s: rank %d: %s failed (OpenCL error %d)\n", PROGRAM, dp->rank, what,
            (int)err);
    return -1;
}

/* Enqueues the copies between this rank's pieces of bufs[] and the host copy (to the host
 * when `to_host`); no wait. */
static int copy_own_pieces(train_dp *dp, cl_command_queue queue, const cl_mem *bufs,
                           bool to_host)
{
    for (size_t t = 0; t < dp->num_tensors; ++t) {
        size_t offset, count;
        own_piece(dp, t, &offset, &count);
        if (count == 0)
            continue;
        float *host = dp->flat + dp->tensor_start[t] + offset;
        cl_int err = to_host ? clEnqueueReadBuffer(queue, bufs[t], CL_FALSE,
                                                   offset * sizeof(float),
                                                   count * sizeof(float), host, 0, NULL, NULL)
                             : clEnqueueWriteBuffer(queue, bufs[t], CL_FALSE,
                                                    offset * sizeof(float),
                                                    count * sizeof(float), host, 0, NULL, NULL);
        if (cl_failed(dp, err, to_host ? "clEnqueueReadBuffer" : "clEnqueueWriteBuffer") != 0)
            return -1;
    }
    return 0;
}

int train_dp_sum_gradients(train_dp *dp, cl_command_queue queue, const cl_mem *grad)
{
    if (dp == NULL)
        return 0;
    for (size_t t = 0; t < dp->num_tensors; ++t)
        if (cl_failed(dp, clEnqueueReadBuffer(queue, grad[t], CL_FALSE, 0,
                                          dp->tensor_size[t] * sizeof(float),
                                          dp->flat + dp->tensor_start[t], 0, NULL, NULL),
                      "clEnqueueReadBuffer") != 0)
            return -1;
    if (cl_failed(dp, clFinish(queue), "clFinish") != 0)
        return -1;
    /* Each rank's rows were weighted 1/B for the global batch size B: the plain sum is the
     * global-batch mean. The default error handler ends the job on a transport failure. */
    MPI_Allreduce(MPI_IN_PLACE, dp->flat, (int)dp->total, MPI_FLOAT, MPI_SUM, dp->comm);
    /* Only this rank's shard is read from here on (by its bloopcl step). The writes must be
     * done before the host copy changes again: the wait is here. */
    if (copy_own_pieces(dp, queue, grad, false) != 0)
        return -1;
    return cl_failed(dp, clFinish(queue), "clFinish");
}

bloopcl_status train_dp_step(train_dp *dp, bloopcl_combiner *comb, const bloopcl_tensor *g,
                             const bloopcl_tensor *a, const bloopcl_tensor *d,
                             const bloopcl_step_options *options)
{
    if (dp == NULL)
        return bloopcl_step_with_options(comb, g, a, d, options, 0, NULL, NULL);
    bloopcl_mpi_report report = BLOOPCL_MPI_REPORT_INIT;
    bloopcl_status status = bloopcl_mpi_step(comb, dp->comm, g, a, d, options, 0, NULL, NULL,
                                             &report);
    if (status == BLOOPCL_OK)
        return status;
    if (report.failed_rank >= 0) {  /* the same report on every rank: said once */
        if (dp->rank == 0)
            fprintf(stderr, "%s: bloopcl_mpi_step: rank %d failed (%s): %s\n", PROGRAM,
                    report.failed_rank, bloopcl_status_string(report.failed_status),
                    report.message);
    } else {
        fprintf(stderr, "%s: rank %d: bloopcl_mpi_step: %s: %s\n", PROGRAM, dp->rank,
                bloopcl_status_string(status),
                report.message[0] != '\0'
                    ? report.message
                    : bloopcl_context_last_error(bloopcl_combiner_context(comb)));
    }
    return status;
}

int train_dp_gather_parameters(train_dp *dp, cl_command_queue queue, const cl_mem *param)
{
    if (dp == NULL)
        return 0;
    if (copy_own_pieces(dp, queue, param, true) != 0 ||
        cl_failed(dp, clFinish(queue), "clFinish") != 0)
        return -1;
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, dp->flat, dp->counts, dp->displs,
                   MPI_FLOAT, dp->comm);
    /* Whole tensors (this rank's own piece comes back with the bits it had). The host copy is
     * next written by the reads of train_dp_sum_gradients, which this in-order queue runs after
     * these writes, and next touched by the host only after its clFinish. */
    for (size_t t = 0; t < dp->num_tensors; ++t)
        if (cl_failed(dp, clEnqueueWriteBuffer(queue, param[t], CL_FALSE, 0,
                                           dp->tensor_size[t] * sizeof(float),
                                           dp->flat + dp->tensor_start[t], 0, NULL, NULL),
                      "clEnqueueWriteBuffer") != 0)
            return -1;
    return 0;
}

void train_dp_abort(train_dp *dp, int code)
{
    if (dp != NULL && dp->ranks > 1) {
        fprintf(stderr, "%s: rank %d failed: ending every rank\n", PROGRAM, dp->rank);
        MPI_Abort(dp->comm, code);
    }
}
