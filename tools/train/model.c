/* model.c — see model.h. Row-major throughout: activations are (rows x width), W_l is
 * (in x out) so that Z = X W + b. */
#include "model.h"
#include "rng.h"

#include <math.h>
#include <stdlib.h>

const int train_widths[NUM_LAYERS + 1] = {IMAGE_SIZE, 256, 128, NUM_CLASSES};

int model_alloc_initial_values(trainer *tr)
{
    for (int l = 0; l < NUM_LAYERS; ++l) {
        size_t in = (size_t)train_widths[l], out = (size_t)train_widths[l + 1];
        tr->tensor_size[2 * l] = in * out;
        tr->tensor_size[2 * l + 1] = out;
        tr->init_param[2 * l] = malloc(in * out * sizeof(float));
        tr->init_param[2 * l + 1] = calloc(out, sizeof(float));
        tr->init_u[l] = malloc(in * sizeof(float));
        tr->init_v[l] = malloc(out * sizeof(float));
        if (!tr->init_param[2 * l] || !tr->init_param[2 * l + 1] || !tr->init_u[l] ||
            !tr->init_v[l])
            return -1;
    }
    return 0;
}

/* One stream per seed, layer by layer: W_l, then u_l, then v_l (the biases stay zero). */
void model_initial_values(trainer *tr, uint64_t seed)
{
    uint64_t state = seed * 0x2545F4914F6CDD1Dull + 7;
    for (int l = 0; l < NUM_LAYERS; ++l) {
        size_t in = (size_t)train_widths[l], out = (size_t)train_widths[l + 1];
        float bound = sqrtf(6.0f / (float)in);
        for (size_t i = 0; i < in * out; ++i)
            tr->init_param[2 * l][i] = bound * rng_uniform_pm1(&state);
        for (size_t i = 0; i < in; ++i)
            tr->init_u[l][i] = rng_uniform_pm1(&state);
        for (size_t i = 0; i < out; ++i)
            tr->init_v[l][i] = rng_uniform_pm1(&state);
    }
    tr->init_seed = seed;
}

/* C (m x n) = op(A) op(B), row-major, A read from element a_off on. */
static int gemm(trainer *tr, int ta, int tb, size_t m, size_t n, size_t k, cl_mem a,
                size_t a_off, size_t lda, cl_mem b, size_t ldb, cl_mem c, size_t ldc)
{
    return blast_check(CLBlastSgemm(CLBlastLayoutRowMajor,
                                    ta ? CLBlastTransposeYes : CLBlastTransposeNo,
                                    tb ? CLBlastTransposeYes : CLBlastTransposeNo, m, n, k, 1.0f,
                                    a, a_off, lda, b, 0, ldb, 0.0f, c, 0, ldc, &tr->queue, NULL),
                       "CLBlastSgemm");
}

int model_forward(trainer *tr, cl_mem input, size_t first, size_t rows)
{
    for (int l = 0; l < NUM_LAYERS; ++l) {
        cl_int in = train_widths[l], out = train_widths[l + 1], relu = l + 1 < NUM_LAYERS;
        cl_mem x = l == 0 ? input : tr->act[l];
        size_t off = l == 0 ? first * IMAGE_SIZE : 0;
        if (gemm(tr, 0, 0, rows, (size_t)out, (size_t)in, x, off, (size_t)in, tr->param[2 * l],
                 (size_t)out, tr->act[l + 1], (size_t)out) != 0)
            return -1;
        karg args[] = {KARG(tr->act[l + 1]), KARG(tr->param[2 * l + 1]), KARG(out), KARG(relu)};
        if (launch(tr, K_BIAS_ACT, (size_t)out, rows, args, 4) != 0)
            return -1;
    }
    return 0;
}

int model_cross_entropy(trainer *tr, cl_mem labels, size_t first, size_t rows, float scale)
{
    cl_int classes = NUM_CLASSES, off = (cl_int)first;
    karg args[] = {KARG(tr->act[NUM_LAYERS]), KARG(labels), KARG(off), KARG(classes),
                   KARG(scale), KARG(tr->loss), KARG(tr->correct)};
    return launch(tr, K_XENT, rows, 0, args, 7);
}

/* dZ_l lies in act[L] for the last layer (cross_entropy's output, in place) and in dact[l+1]
 * for the others. */
int model_backward(trainer *tr, size_t rows)
{
    for (int l = NUM_LAYERS - 1; l >= 0; --l) {
        cl_int in = train_widths[l], out = train_widths[l + 1], r = (cl_int)rows;
        cl_mem dz = l == NUM_LAYERS - 1 ? tr->act[NUM_LAYERS] : tr->dact[l + 1];
        if (gemm(tr, 1, 0, (size_t)in, (size_t)out, rows, tr->act[l], 0, (size_t)in, dz,
                 (size_t)out, tr->grad[2 * l], (size_t)out) != 0)
            return -1;
        karg cs[] = {KARG(dz), KARG(r), KARG(out), KARG(tr->grad[2 * l + 1])};
        if (launch(tr, K_COLSUM, (size_t)out, 0, cs, 4) != 0)
            return -1;
        if (l == 0)
            break;
        if (gemm(tr, 0, 1, rows, (size_t)in, (size_t)out, dz, 0, (size_t)out, tr->param[2 * l],
                 (size_t)out, tr->dact[l], (size_t)in) != 0)
            return -1;
        karg rb[] = {KARG(tr->dact[l]), KARG(tr->act[l])};
        if (launch(tr, K_RELU_BACK, rows * (size_t)in, 0, rb, 2) != 0)
            return -1;
    }
    return 0;
}

/* Sums in double on the host, in row order (the same bits every run). */
int model_evaluate(trainer *tr, cl_mem x, cl_mem y, size_t count, eval_result *out)
{
    static float loss[EVAL_CHUNK];
    static int correct[EVAL_CHUNK];
    double sum_loss = 0.0, sum_correct = 0.0;
    for (size_t first = 0; first < count; first += EVAL_CHUNK) {
        size_t rows = count - first < EVAL_CHUNK ? count - first : EVAL_CHUNK;
        int ok = model_forward(tr, x, first, rows) == 0 &&
                 model_cross_entropy(tr, y, first, rows, 0.0f) == 0 &&
                 read_buffer(tr, tr->loss, loss, rows * 4, "read loss") == 0 &&
                 read_buffer(tr, tr->correct, correct, rows * 4, "read accuracy") == 0;
        if (!ok)
            return -1;
        for (size_t r = 0; r < rows; ++r)
            sum_loss += loss[r], sum_correct += correct[r];
    }
    out->loss = sum_loss / (double)count;
    out->accuracy = sum_correct / (double)count;
    return 0;
}
