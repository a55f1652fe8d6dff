/* trainer.h — the trainer's device state: every buffer and kernel of one training process, on
 * the bloopcl context's device and in-order queue (both gradients stay in cl_mem), and the
 * helpers that enqueue work on it. Each run resets the parameters, the optimizer and the
 * power-iteration vectors from the host copies made for the run's seed.
 * Data-parallel (data_parallel.h), the trainer holds the whole model but owns the optimizer
 * state of one slice of each tensor: own_offset, own_count. */
#ifndef BLOOPCL_TRAIN_TRAINER_H
#define BLOOPCL_TRAIN_TRAINER_H

#include "bloopcl.h"
#include "data.h"
#include "data_parallel.h"
#include "options.h"
#include "train.h"

#include <clblast_c.h>
#include <stdint.h>

enum kernel_id { K_GATHER, K_BIAS_ACT, K_RELU_BACK, K_COLSUM, K_XENT, K_MATVEC, K_NORMALIZE,
                 K_AUX_GRAD, K_ADAM, K_ADAM_TICK, NUM_KERNELS };

typedef struct trainer {
    bloopcl_context *ctx;
    cl_context cl;
    cl_command_queue queue;
    cl_device_id device;
    cl_program program;
    cl_kernel k[NUM_KERNELS];
    size_t rows;                   /* capacity of the activation buffers */
    size_t tensor_size[NUM_TENSORS];
    cl_mem param[NUM_TENSORS], grad[NUM_TENSORS], aux[NUM_TENSORS];
    /* The slice of each tensor whose optimizer state this process owns: elements
     * [own_offset, own_offset + own_count) (the whole tensor unless data-parallel). The
     * combiner and the Adam moments cover exactly these slices. */
    size_t own_offset[NUM_TENSORS], own_count[NUM_TENSORS];
    cl_mem adam_m[NUM_TENSORS], adam_v[NUM_TENSORS]; /* own_count floats each (NULL if 0) */
    cl_mem adam_t;                 /* int: Adam steps applied in this run */
    cl_mem adam_bias;              /* float2 per t: (1 - b1^t, 1 - b2^t), t = 0 .. max steps */
    cl_mem act[NUM_LAYERS + 1];    /* act[0]: input batch, act[l]: output of layer l */
    cl_mem dact[NUM_LAYERS + 1];   /* gradients w.r.t. act[l] (dact[0] unused) */
    cl_mem u[NUM_LAYERS], v[NUM_LAYERS], tmp_u[NUM_LAYERS], tmp_v[NUM_LAYERS], sigma;
    cl_mem train_x, train_y, test_x, test_y, perm, batch_y, loss, correct;
    float *init_param[NUM_TENSORS]; /* host copy of the initial weights of init_seed */
    float *init_u[NUM_LAYERS], *init_v[NUM_LAYERS];
    uint64_t init_seed;
    size_t train_count, test_count;
    train_dp *dp;                  /* NULL: a single process */
} trainer;

/* Everything on the context's device for `opt` and the data; 0, or -1 after a message (then
 * trainer_destroy frees what was made). */
int trainer_init(trainer *tr, bloopcl_context *ctx, train_dp *dp, const options *opt,
                 const dataset *train, const dataset *test);
void trainer_destroy(trainer *tr);

/* The initial state of a run with `seed`: its weights and power-iteration vectors, zero Adam
 * moments and step count. 0 or -1. */
int trainer_reset(trainer *tr, uint64_t seed);

/* 0 on CL_SUCCESS, else -1 after naming `what` on stderr (likewise for CLBlast). */
int cl_check(cl_int err, const char *what);
int blast_check(CLBlastStatusCode code, const char *what);

/* A read-write buffer of `bytes`, copied from `init` unless NULL; NULL after a message. */
cl_mem make_buffer(trainer *tr, size_t bytes, const void *init);

/* Blocking copies between the host and a buffer (from offset 0). 0 or -1. */
int write_buffer(trainer *tr, cl_mem m, const void *host, size_t bytes);
int read_buffer(trainer *tr, cl_mem m, void *host, size_t bytes, const char *what);

/* Kernel arguments: KARG(x) passes x by address and size. */
typedef struct karg {
    size_t size;
    const void *value;
} karg;
#define KARG(x) {sizeof(x), &(x)}

/* Builds the program from the embedded tools/train/ *.cl files and creates its kernels. */
int kernels_build(trainer *tr);
void kernels_release(trainer *tr);

/* Sets the arguments and enqueues kernel `id` over gx (x gy when gy > 0) work-items. */
int launch(trainer *tr, int id, size_t gx, size_t gy, const karg *args, size_t nargs);

#endif
