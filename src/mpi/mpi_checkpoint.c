/* mpi_checkpoint.c — one checkpoint file for sharded state, readable by any number of ranks.
 *
 * Layout (native byte order; the header says which): a 64-byte header, then for each state
 * kind the method keeps (EMA, then the auxiliary EMA) the whole vector of n_total floats, the
 * slices in rank order. A rank's slice of kind k is at
 *     BLOOPCL_MPI_HEADER_BYTES + (k_index * n_total + offset) * 4,
 * offset = the sizes of the lower ranks added up. Nothing in the file depends on the rank
 * count, so re-sharding is reading with other sizes. Every call is collective and agrees on
 * failures before it writes anything: either every rank's slice is written or the call fails
 * on every rank (then the file may be partly written and must not be used). */
#include "mpi_common.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEADER_BYTES 64
#define FORMAT_VERSION 1u
static const char magic[8] = {'B', 'L', 'O', 'O', 'P', 'C', 'L', 'S'};

typedef struct header {
    char magic[8];
    uint32_t version;
    uint32_t byte_order;    /* 0x01020304 as written */
    uint32_t method;        /* bloopcl_method */
    uint32_t kinds;         /* bit (1 << bloopcl_state_kind) per kind stored */
    uint64_t n_total;
    uint8_t unused[HEADER_BYTES - 32];
} header;
_Static_assert(sizeof(header) == HEADER_BYTES, "the header is 64 bytes");

/* What each rank tells the others before any file access. */
#define ROW_STATUS 0
#define ROW_METHOD 1   /* -1: no combiner on this rank */
#define ROW_COUNT 2    /* elements of its slice */
#define ROW_DOUBLES 3

typedef struct shard_plan {
    int ranks, me;
    int method;            /* of the first rank with a combiner; -1 if none has one */
    uint64_t n_total, offset, count;
} shard_plan;

static unsigned kinds_of(int method)
{
    unsigned kinds = 0;
    if (method != BLOOPCL_METHOD_MIXED)
        kinds |= 1u << BLOOPCL_STATE_EMA;
    if (method == BLOOPCL_METHOD_PCGRAD)
        kinds |= 1u << BLOOPCL_STATE_AUX_EMA;
    return kinds;
}

/* This rank's combiner: its method, size, and (when saving) its state read into `state`. */
static bloopcl_status read_local(bloopcl_combiner *comb, bool saving, double *row,
                                 float **state)
{
    row[ROW_STATUS] = 0.0;
    row[ROW_METHOD] = -1.0;
    row[ROW_COUNT] = 0.0;
    if (comb == NULL)
        return BLOOPCL_OK;
    bloopcl_config config = {.struct_size = sizeof config};
    bloopcl_status status = bloopcl_combiner_config(comb, &config);
    if (status != BLOOPCL_OK)
        return status;
    size_t n = bloopcl_combiner_size(comb);
    row[ROW_METHOD] = (double)config.method;
    row[ROW_COUNT] = (double)n;
    unsigned kinds = kinds_of((int)config.method);
    for (int k = 0; k < 2 && status == BLOOPCL_OK; ++k) {
        if (!(kinds & (1u << k)))
            continue;
        state[k] = malloc(n * sizeof(float) + 1);
        if (state[k] == NULL)
            return BLOOPCL_ERR_OUT_OF_MEMORY;
        if (saving)
            status = bloopcl_read_state(comb, (bloopcl_state_kind)k, state[k], n);
    }
    return status;
}

/* Agrees on failures, the method and the offsets: every rank's row to every rank. */
static bloopcl_status agree(MPI_Comm comm, bloopcl_combiner *comb, const double *row,
                            shard_plan *plan, bloopcl_mpi_report *local)
{
    MPI_Comm_size(comm, &plan->ranks);
    MPI_Comm_rank(comm, &plan->me);
    double *rows = malloc((size_t)plan->ranks * ROW_DOUBLES * sizeof(double));
    if (!bloopcl__mpi_all_true(comm, rows != NULL)) {  /* every rank stops here together */
        free(rows);
        snprintf(local->message, sizeof local->message, "no memory for the ranks' rows on "
                 "some rank");
        return BLOOPCL_ERR_OUT_OF_MEMORY;
    }
    if (MPI_Allgather(row, ROW_DOUBLES, MPI_DOUBLE, rows, ROW_DOUBLES, MPI_DOUBLE, comm) !=
        MPI_SUCCESS) {
        free(rows);
        return BLOOPCL_ERR_TRANSPORT;
    }
    bloopcl_status status = BLOOPCL_OK;
    int failed = bloopcl__mpi_first_failure(rows, plan->ranks, ROW_DOUBLES, ROW_STATUS);
    plan->method = -1;
    plan->n_total = plan->offset = 0;
    plan->count = (uint64_t)row[ROW_COUNT];
    for (int r = 0; r < plan->ranks; ++r) {
        const double *theirs = rows + (size_t)r * ROW_DOUBLES;
        if (r < plan->me)
            plan->offset += (uint64_t)theirs[ROW_COUNT];
        plan->n_total += (uint64_t)theirs[ROW_COUNT];
        if (theirs[ROW_METHOD] >= 0.0 && plan->method < 0)
            plan->method = (int)theirs[ROW_METHOD];
        if (failed < 0 && theirs[ROW_METHOD] >= 0.0 && (int)theirs[ROW_METHOD] != plan->method) {
            local->failed_rank = r;
            local->failed_status = BLOOPCL_ERR_INVALID_ARGUMENT;
            snprintf(local->message, sizeof local->message, "rank %d's combiner runs method %s "
                     "but a lower rank's runs %s", r,
                     bloopcl_method_name((bloopcl_method)theirs[ROW_METHOD]),
                     bloopcl_method_name((bloopcl_method)plan->method));
            status = BLOOPCL_ERR_INVALID_ARGUMENT;
        }
    }
    if (failed >= 0) {
        const char *why = plan->me == failed && row[ROW_STATUS] == BLOOPCL_ERR_UNSUPPORTED &&
                                  row[ROW_COUNT] < 2147483647.0
                              ? "its bloopcl_mpi_report's struct_size is not "
                                "sizeof(bloopcl_mpi_report) (BLOOPCL_MPI_REPORT_INIT)"
                              : NULL;
        status = bloopcl__mpi_share_failure(comb, comm, failed, rows, ROW_DOUBLES, ROW_STATUS,
                                            why, local);
        if (status == BLOOPCL_OK)
            status = row[ROW_STATUS] != 0.0 ? (bloopcl_status)row[ROW_STATUS]
                                            : BLOOPCL_ERR_SHARD_FAILED;
    }
    free(rows);
    return status;
}

/* Every rank's verdict on the step just taken: the worst (lowest) status, on every rank. */
static bloopcl_status agree_on(MPI_Comm comm, bloopcl_status mine)
{
    int local = (int)mine, worst = 0;
    if (MPI_Allreduce(&local, &worst, 1, MPI_INT, MPI_MIN, comm) != MPI_SUCCESS)
        return BLOOPCL_ERR_TRANSPORT;
    if (worst == BLOOPCL_OK)
        return BLOOPCL_OK;
    return mine != BLOOPCL_OK ? mine : BLOOPCL_ERR_SHARD_FAILED;
}

static MPI_Offset slice_at(const shard_plan *plan, int kind_index)
{
    return (MPI_Offset)(HEADER_BYTES +
                        ((uint64_t)kind_index * plan->n_total + plan->offset) * sizeof(float));
}

/* Writes (or reads) this rank's slice of each kind, collectively. */
static bloopcl_status transfer_slices(MPI_File file, const shard_plan *plan, float **state,
                                      bool writing)
{
    unsigned kinds = kinds_of(plan->method);
    int index = 0, failed = 0;
    for (int k = 0; k < 2; ++k) {
        if (!(kinds & (1u << k)))
            continue;
        MPI_Offset at = slice_at(plan, index++);
        int count = (int)plan->count;  /* slices below 2^31 elements (checked by the caller) */
        float unused = 0.0f;
        void *data = state[k] != NULL ? (void *)state[k] : &unused;
        int err = writing ? MPI_File_write_at_all(file, at, data, count, MPI_FLOAT,
                                                  MPI_STATUS_IGNORE)
                          : MPI_File_read_at_all(file, at, data, count, MPI_FLOAT,
                                                 MPI_STATUS_IGNORE);
        failed |= err != MPI_SUCCESS;
    }
    return failed ? BLOOPCL_ERR_TRANSPORT : BLOOPCL_OK;
}

static header make_header(const shard_plan *plan)
{
    header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, magic, sizeof magic);
    h.version = FORMAT_VERSION;
    h.byte_order = 0x01020304u;
    h.method = (uint32_t)plan->method;
    h.kinds = kinds_of(plan->method);
    h.n_total = plan->n_total;
    return h;
}

static bloopcl_status check_header(const header *h, const shard_plan *plan, char *why,
                                   size_t size)
{
    if (memcmp(h->magic, magic, sizeof magic) != 0 || h->version != FORMAT_VERSION ||
        h->byte_order != 0x01020304u) {
        snprintf(why, size, "not a bloopcl-mpi checkpoint of format %u in this byte order",
                 FORMAT_VERSION);
        return BLOOPCL_ERR_INVALID_ARGUMENT;
    }
    if ((int)h->method != plan->method) {
        snprintf(why, size, "the checkpoint holds method %s's state, the combiners run %s",
                 bloopcl_method_name((bloopcl_method)h->method),
                 bloopcl_method_name((bloopcl_method)plan->method));
        return BLOOPCL_ERR_INVALID_ARGUMENT;
    }
    if (h->n_total != plan->n_total) {
        snprintf(why, size, "the checkpoint holds %llu elements, the ranks' combiners %llu",
                 (unsigned long long)h->n_total, (unsigned long long)plan->n_total);
        return BLOOPCL_ERR_SIZE_MISMATCH;
    }
    return BLOOPCL_OK;
}

static void free_state(float **state)
{
    free(state[0]);
    free(state[1]);
}

/* The common opening of both calls: checks, this rank's state, the agreement. */
static bloopcl_status open_collective(bloopcl_combiner *comb, MPI_Comm comm, const char *path,
                                      bool saving, bloopcl_status refused, float **state,
                                      shard_plan *plan, bloopcl_mpi_report *local)
{
    double row[ROW_DOUBLES];
    bloopcl_status mine = refused != BLOOPCL_OK ? refused
                        : path == NULL          ? BLOOPCL_ERR_NULL_ARGUMENT
                                                : read_local(comb, saving, row, state);
    if (refused != BLOOPCL_OK || path == NULL)
        row[ROW_METHOD] = -1.0, row[ROW_COUNT] = 0.0;
    if (mine == BLOOPCL_OK && row[ROW_COUNT] >= 2147483647.0)
        mine = BLOOPCL_ERR_UNSUPPORTED;  /* MPI-IO counts are ints */
    row[ROW_STATUS] = (double)mine;
    bloopcl_status status = agree(comm, comb, row, plan, local);
    if (status == BLOOPCL_OK && plan->method < 0) {
        snprintf(local->message, sizeof local->message, "no rank holds a combiner");
        status = BLOOPCL_ERR_NULL_ARGUMENT;
    }
    return status;
}

/* The file's whole size: the header and every kind's n_total floats. */
static MPI_Offset file_size(const shard_plan *plan)
{
    return (MPI_Offset)(HEADER_BYTES + (uint64_t)__builtin_popcount(kinds_of(plan->method)) *
                                           plan->n_total * sizeof(float));
}

/* Opens `path` on every rank; OK only where it opened on every rank (else the ranks that
 * did open it close it again). */
static bloopcl_status open_everywhere(MPI_Comm comm, const char *path, int mode, MPI_File *file,
                                      bloopcl_mpi_report *local)
{
    int err = MPI_File_open(comm, path, mode, MPI_INFO_NULL, file);
    bloopcl_status status = agree_on(comm, err == MPI_SUCCESS ? BLOOPCL_OK
                                                              : BLOOPCL_ERR_TRANSPORT);
    if (status != BLOOPCL_OK && err == MPI_SUCCESS)
        MPI_File_close(file);
    if (status != BLOOPCL_OK)
        snprintf(local->message, sizeof local->message, "cannot open \"%s\" on some rank",
                 path);
    return status;
}

bloopcl_status bloopcl_mpi_save_state(bloopcl_combiner *comb, MPI_Comm comm, const char *path,
                                      bloopcl_mpi_report *report)
{
    bloopcl_mpi_report local = BLOOPCL_MPI_REPORT_INIT;
    float *state[2] = {NULL, NULL};
    shard_plan plan;
    bloopcl_status status = open_collective(comb, comm, path, true,
                                            bloopcl__mpi_check_report(report), state, &plan,
                                            &local);
    MPI_File file;
    if (status == BLOOPCL_OK)
        status = open_everywhere(comm, path, MPI_MODE_CREATE | MPI_MODE_WRONLY, &file, &local);
    if (status == BLOOPCL_OK) {
        bloopcl_status mine = BLOOPCL_OK;
        if (MPI_File_set_size(file, file_size(&plan)) != MPI_SUCCESS)  /* no stale tail */
            mine = BLOOPCL_ERR_TRANSPORT;
        header h = make_header(&plan);
        if (plan.me == 0 && MPI_File_write_at(file, 0, &h, (int)sizeof h, MPI_BYTE,
                                              MPI_STATUS_IGNORE) != MPI_SUCCESS)
            mine = BLOOPCL_ERR_TRANSPORT;
        if (transfer_slices(file, &plan, state, true) != BLOOPCL_OK)
            mine = BLOOPCL_ERR_TRANSPORT;
        MPI_File_close(&file);
        status = agree_on(comm, mine);
        if (status != BLOOPCL_OK)
            snprintf(local.message, sizeof local.message, "writing \"%s\" failed on some rank; "
                     "the file is not a checkpoint", path);
    }
    free_state(state);
    bloopcl__mpi_write_report(&local, report);
    return status;
}

/* After the slices are read: each rank writes its state into its combiner. */
static bloopcl_status write_local(bloopcl_combiner *comb, const shard_plan *plan, float **state)
{
    if (comb == NULL)
        return BLOOPCL_OK;
    bloopcl_status status = BLOOPCL_OK;
    for (int k = 0; k < 2 && status == BLOOPCL_OK; ++k)
        if (kinds_of(plan->method) & (1u << k))
            status = bloopcl_write_state(comb, (bloopcl_state_kind)k, state[k], plan->count);
    return status;
}

/* The header every rank reads, checked against the ranks' combiners and the file's size. */
static bloopcl_status read_header(MPI_File file, const shard_plan *plan, char *why,
                                  size_t why_size)
{
    header h;
    memset(&h, 0, sizeof h);  /* a file shorter than the header leaves no stale bytes */
    MPI_Status read;
    int got = 0;
    if (MPI_File_read_at_all(file, 0, &h, (int)sizeof h, MPI_BYTE, &read) != MPI_SUCCESS ||
        MPI_Get_count(&read, MPI_BYTE, &got) != MPI_SUCCESS || got != (int)sizeof h) {
        snprintf(why, why_size, "the file is shorter than a checkpoint's header");
        return BLOOPCL_ERR_INVALID_ARGUMENT;
    }
    bloopcl_status status = check_header(&h, plan, why, why_size);
    MPI_Offset size = 0;
    if (status == BLOOPCL_OK && (MPI_File_get_size(file, &size) != MPI_SUCCESS ||
                                 size != file_size(plan))) {
        snprintf(why, why_size, "the file holds %lld bytes where a checkpoint of %llu elements "
                 "holds %lld (truncated, or not written whole)", (long long)size,
                 (unsigned long long)plan->n_total, (long long)file_size(plan));
        status = BLOOPCL_ERR_INVALID_ARGUMENT;
    }
    return status;
}

bloopcl_status bloopcl_mpi_load_state(bloopcl_combiner *comb, MPI_Comm comm, const char *path,
                                      bloopcl_mpi_report *report)
{
    bloopcl_mpi_report local = BLOOPCL_MPI_REPORT_INIT;
    float *state[2] = {NULL, NULL};
    shard_plan plan;
    bloopcl_status status = open_collective(comb, comm, path, false,
                                            bloopcl__mpi_check_report(report), state, &plan,
                                            &local);
    MPI_File file;
    if (status == BLOOPCL_OK)
        status = open_everywhere(comm, path, MPI_MODE_RDONLY, &file, &local);
    if (status == BLOOPCL_OK) {
        status = agree_on(comm, read_header(file, &plan, local.message, sizeof local.message));
        if (status == BLOOPCL_OK)
            status = agree_on(comm, transfer_slices(file, &plan, state, false));
        if (status == BLOOPCL_OK)  /* nothing is written until every rank has read */
            status = agree_on(comm, write_local(comb, &plan, state));
        MPI_File_close(&file);
    }
    free_state(state);
    bloopcl__mpi_write_report(&local, report);
    return status;
}
