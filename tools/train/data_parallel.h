/* data_parallel.h — bloopcl-train's data-parallel mode over MPI (ZeRO-1 style).
 *
 * Every rank holds the whole model, the same initial parameters and the same batch order.
 * Per step, rank r of R:
 *   - computes the main-loss gradient of its contiguous part of the global batch
 *     (train_dp_rows), each row weighted 1/B for the global batch size B, so that the sum over
 *     the ranks is the global-batch mean gradient;
 *   - sums those gradients over the ranks (train_dp_sum_gradients: MPI_Allreduce) and keeps
 *     the sum on its shard of the flattened parameter vector (all tensors end to end, cut into
 *     R contiguous shards, uneven allowed: train_dp_plan);
 *   - computes the auxiliary gradient whole (it depends only on the parameters, which every
 *     rank holds bit for bit the same), and hands bloopcl its shard of g and a as segment lists
 *     over the trainer's own buffers; train_dp_step runs bloopcl_mpi_step on them with a
 *     combiner of the shard's size (non-finite inputs skip the step on every rank);
 *   - applies Adam to its shard only (moments sized to the shard), then all-gathers the
 *     parameters (train_dp_gather_parameters: MPI_Allgatherv of the host copies), so every rank
 *     has the full model for the next forward pass and for evaluation.
 * Rank 0 writes the outputs (stdout of the other ranks goes to /dev/null; stderr stays, for
 * their errors). A single process (dp NULL) is the plain trainer: every function
 * here takes NULL and then does what one process does (the whole batch, the whole vector).
 *
 * In a build without MPI (BLOOPCL_TRAIN_MPI undefined) the functions below are inline stubs
 * for dp NULL, and nothing ever asks for MPI. */
#ifndef BLOOPCL_TRAIN_DATA_PARALLEL_H
#define BLOOPCL_TRAIN_DATA_PARALLEL_H

#include "bloopcl.h"

#include <stdbool.h>
#include <stddef.h>

/* One per process in data-parallel mode; NULL: a single process. */
typedef struct train_dp train_dp;

#ifdef BLOOPCL_TRAIN_MPI
#define TRAIN_DP_AVAILABLE 1

/* True when the process was started by an MPI launcher (OMPI_COMM_WORLD_SIZE, PMI_SIZE or
 * PMIX_RANK in the environment) or argv holds --data-parallel: then, and only then, MPI is
 * initialised (a plain run never calls MPI_Init). */
bool train_dp_requested(int argc, char **argv);

/* MPI_Init and a communicator of its own (and stdout to /dev/null on ranks other than 0);
 * NULL after a message on stderr. */
train_dp *train_dp_start(int *argc, char ***argv);

/* Frees everything and calls MPI_Finalize; NULL: nothing. */
void train_dp_finish(train_dp *dp);

/* This process's rank (0 for NULL) and the number of ranks (1 for NULL). */
int train_dp_rank(const train_dp *dp);
int train_dp_ranks(const train_dp *dp);

/* This rank's rows of a global batch of `batch` rows: [*first, *first + *count). */
void train_dp_rows(const train_dp *dp, size_t batch, size_t *first, size_t *count);

/* Cuts the flattened vector of `num_tensors` tensors (sizes in elements) into shards and gives
 * this rank's piece of each tensor: elements [own_offset[t], own_offset[t] + own_count[t]) of
 * tensor t (count 0: none of it). NULL: every tensor whole. Returns 0, or -1 after a message
 * (out of memory; a rank would get an empty shard). */
int train_dp_plan(train_dp *dp, const size_t *tensor_size, size_t num_tensors,
                  size_t *own_offset, size_t *own_count);

/* grad[t] (one buffer per tensor, as planned) holds this rank's part of the gradient; after
 * the call this rank's shard holds the sum over all ranks (MPI_Allreduce of the host copies;
 * the rest of the buffers is left as it was and must not be read). Blocking. 0 or -1. */
int train_dp_sum_gradients(train_dp *dp, cl_command_queue queue, const cl_mem *grad);

/* bloopcl_mpi_step over this rank's shard (collective; a failure on any rank fails it on
 * every rank, with the failed rank and its message on stderr from rank 0). `options` as
 * bloopcl_step_with_options takes them (update_parameters: d is the parameters). */
bloopcl_status train_dp_step(train_dp *dp, bloopcl_combiner *comb, const bloopcl_tensor *g,
                             const bloopcl_tensor *a, const bloopcl_tensor *d,
                             const bloopcl_step_options *options);

/* Every rank's shard of param[] to every rank: param[t] whole, the same bits everywhere.
 * Blocking (waits for whatever updated this rank's shard). 0 or -1. */
int train_dp_gather_parameters(train_dp *dp, cl_command_queue queue, const cl_mem *param);

/* A rank that fails on its own ends the whole job (the others may be waiting for it in a
 * collective): MPI_Abort with `code` when there is more than one rank; else returns. */
void train_dp_abort(train_dp *dp, int code);

#else /* a build without MPI: one process, always */
#define TRAIN_DP_AVAILABLE 0

static inline bool train_dp_requested(int argc, char **argv)
{
    (void)argc, (void)argv;
    return false;
}
static inline train_dp *train_dp_start(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    return NULL;
}
static inline void train_dp_finish(train_dp *dp) { (void)dp; }
static inline int train_dp_rank(const train_dp *dp) { return (void)dp, 0; }
static inline int train_dp_ranks(const train_dp *dp) { return (void)dp, 1; }
static inline void train_dp_rows(const train_dp *dp, size_t batch, size_t *first,
                                 size_t *count)
{
    (void)dp;
    *first = 0;
    *count = batch;
}
static inline int train_dp_plan(train_dp *dp, const size_t *tensor_size, size_t num_tensors,
                                size_t *own_offset, size_t *own_count)
{
    (void)dp;
    for (size_t t = 0; t < num_tensors; ++t)
        own_offset[t] = 0, own_count[t] = tensor_size[t];
    return 0;
}
static inline int train_dp_sum_gradients(train_dp *dp, cl_command_queue queue,
                                         const cl_mem *grad)
{
    (void)dp, (void)queue, (void)grad;
    return 0;
}
static inline bloopcl_status train_dp_step(train_dp *dp, bloopcl_combiner *comb,
                                           const bloopcl_tensor *g, const bloopcl_tensor *a,
                                           const bloopcl_tensor *d,
                                           const bloopcl_step_options *options)
{
    (void)dp;
    return bloopcl_step_with_options(comb, g, a, d, options, 0, NULL, NULL);
}
static inline int train_dp_gather_parameters(train_dp *dp, cl_command_queue queue,
                                             const cl_mem *param)
{
    (void)dp, (void)queue, (void)param;
    return 0;
}
static inline void train_dp_abort(train_dp *dp, int code) { (void)dp, (void)code; }
#endif

#endif
