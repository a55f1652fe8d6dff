/* trainer.c — see trainer.h: the device buffers, their lifetime, a run's reset. */
#include "trainer.h"
#include "model.h"
#include "optimizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cl_check(cl_int err, const char *what)
{
    if (err == CL_SUCCESS)
        return 0;
    fprintf(stderr, "%s: %s failed (OpenCL error %d)\n", PROGRAM, what, (int)err);
    return -1;
}

int blast_check(CLBlastStatusCode code, const char *what)
{
    if (code == CLBlastSuccess)
        return 0;
    fprintf(stderr, "%s: %s failed (CLBlast status %d)\n", PROGRAM, what, (int)code);
    return -1;
}

cl_mem make_buffer(trainer *tr, size_t bytes, const void *init)
{
    cl_int err;
    cl_mem m = clCreateBuffer(tr->cl, CL_MEM_READ_WRITE | (init ? CL_MEM_COPY_HOST_PTR : 0),
                              bytes, (void *)(uintptr_t)init, &err);
    if (cl_check(err, "clCreateBuffer") != 0)
        return NULL;
    return m;
}

int write_buffer(trainer *tr, cl_mem m, const void *host, size_t bytes)
{
    return cl_check(clEnqueueWriteBuffer(tr->queue, m, CL_TRUE, 0, bytes, host, 0, NULL, NULL),
                    "clEnqueueWriteBuffer");
}

int read_buffer(trainer *tr, cl_mem m, void *host, size_t bytes, const char *what)
{
    return cl_check(clEnqueueReadBuffer(tr->queue, m, CL_TRUE, 0, bytes, host, 0, NULL, NULL),
                    what);
}

/* Parameters, main and auxiliary gradients, one buffer per tensor (a = 0 on the biases). */
static int alloc_tensors(trainer *tr)
{
    for (int t = 0; t < NUM_TENSORS; ++t) {
        size_t bytes = tr->tensor_size[t] * sizeof(float);
        float *zeros = calloc(tr->tensor_size[t], sizeof(float));
        int ok = zeros != NULL;
        ok = ok && (tr->param[t] = make_buffer(tr, bytes, NULL)) != NULL;
        ok = ok && (tr->grad[t] = make_buffer(tr, bytes, NULL)) != NULL;
        ok = ok && (tr->aux[t] = make_buffer(tr, bytes, zeros)) != NULL;
        free(zeros);
        if (!ok)
            return -1;
    }
    return 0;
}

/* Activations and their gradients for `rows` rows, the power-iteration vectors, per-row
 * losses and hits. */
static int alloc_work(trainer *tr)
{
    for (int l = 0; l <= NUM_LAYERS; ++l) {
        size_t bytes = tr->rows * (size_t)train_widths[l] * sizeof(float);
        if (!(tr->act[l] = make_buffer(tr, bytes, NULL)) ||
            !(tr->dact[l] = make_buffer(tr, bytes, NULL)))
            return -1;
    }
    for (int l = 0; l < NUM_LAYERS; ++l) {
        size_t in = (size_t)train_widths[l] * sizeof(float);
        size_t out = (size_t)train_widths[l + 1] * sizeof(float);
        if (!(tr->u[l] = make_buffer(tr, in, NULL)) || !(tr->v[l] = make_buffer(tr, out, NULL)) ||
            !(tr->tmp_u[l] = make_buffer(tr, in, NULL)) ||
            !(tr->tmp_v[l] = make_buffer(tr, out, NULL)))
            return -1;
    }
    return (tr->sigma = make_buffer(tr, 2 * NUM_LAYERS * sizeof(float), NULL)) &&
                   (tr->batch_y = make_buffer(tr, tr->rows * sizeof(int), NULL)) &&
                   (tr->loss = make_buffer(tr, tr->rows * sizeof(float), NULL)) &&
                   (tr->correct = make_buffer(tr, tr->rows * sizeof(int), NULL))
               ? 0 : -1;
}

static int upload_data(trainer *tr, const dataset *train, const dataset *test)
{
    tr->train_count = train->count;
    tr->test_count = test->count;
    size_t image_bytes = IMAGE_SIZE * sizeof(float);
    return (tr->train_x = make_buffer(tr, train->count * image_bytes, train->images)) &&
                   (tr->train_y = make_buffer(tr, train->count * sizeof(int), train->labels)) &&
                   (tr->test_x = make_buffer(tr, test->count * image_bytes, test->images)) &&
                   (tr->test_y = make_buffer(tr, test->count * sizeof(int), test->labels)) &&
                   (tr->perm = make_buffer(tr, train->count * sizeof(int), NULL))
               ? 0 : -1;
}

static void release_mems(cl_mem *mems, size_t n)
{
    for (size_t i = 0; i < n; ++i)
        if (mems[i])
            clReleaseMemObject(mems[i]);
}

void trainer_destroy(trainer *tr)
{
    if (tr->queue)
        clFinish(tr->queue);
    cl_mem *groups[] = {tr->param, tr->grad, tr->aux, tr->adam_m, tr->adam_v};
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; ++g)
        release_mems(groups[g], NUM_TENSORS);
    release_mems(tr->act, NUM_LAYERS + 1);
    release_mems(tr->dact, NUM_LAYERS + 1);
    cl_mem *vecs[] = {tr->u, tr->v, tr->tmp_u, tr->tmp_v};
    for (size_t g = 0; g < sizeof vecs / sizeof vecs[0]; ++g)
        release_mems(vecs[g], NUM_LAYERS);
    cl_mem singles[] = {tr->sigma, tr->train_x, tr->train_y, tr->test_x, tr->test_y, tr->perm,
                        tr->batch_y, tr->loss, tr->correct, tr->adam_t, tr->adam_bias};
    release_mems(singles, sizeof singles / sizeof singles[0]);
    kernels_release(tr);
    for (int t = 0; t < NUM_TENSORS; ++t)
        free(tr->init_param[t]);
    for (int l = 0; l < NUM_LAYERS; ++l)
        free(tr->init_u[l]), free(tr->init_v[l]);
}

int trainer_init(trainer *tr, bloopcl_context *ctx, train_dp *dp, const options *opt,
                 const dataset *train, const dataset *test)
{
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    memset(tr, 0, sizeof *tr);
    tr->ctx = ctx;
    tr->dp = dp;
    tr->cl = bloopcl_context_cl_context(ctx);
    tr->queue = bloopcl_context_queue(ctx);
    if (bloopcl_context_device_info(ctx, &info) != BLOOPCL_OK)
        return -1;
    tr->device = info.device;
    tr->rows = opt->batch > EVAL_CHUNK ? opt->batch : EVAL_CHUNK;
    if (kernels_build(tr) != 0 || model_alloc_initial_values(tr) != 0 ||
        train_dp_plan(dp, tr->tensor_size, NUM_TENSORS, tr->own_offset, tr->own_count) != 0 ||
        alloc_tensors(tr) != 0 || optimizer_alloc(tr, options_steps(opt)) != 0 ||
        alloc_work(tr) != 0 || upload_data(tr, train, test) != 0) {
        fprintf(stderr, "%s: could not set up the trainer on the device\n", PROGRAM);
        return -1;
    }
    model_initial_values(tr, opt->seed);
    return 0;
}

/* The host copies are redrawn only when the seed changes (every run of a seed starts from the
 * same bits). */
int trainer_reset(trainer *tr, uint64_t seed)
{
    if (seed != tr->init_seed)
        model_initial_values(tr, seed);
    if (optimizer_reset(tr) != 0)
        return -1;
    for (int t = 0; t < NUM_TENSORS; ++t)
        if (write_buffer(tr, tr->param[t], tr->init_param[t],
                         tr->tensor_size[t] * sizeof(float)) != 0)
            return -1;
    for (int l = 0; l < NUM_LAYERS; ++l)
        if (write_buffer(tr, tr->u[l], tr->init_u[l],
                         (size_t)train_widths[l] * sizeof(float)) != 0 ||
            write_buffer(tr, tr->v[l], tr->init_v[l],
                         (size_t)train_widths[l + 1] * sizeof(float)) != 0)
            return -1;
    return 0;
}
