/* gradcheck.c — see gradcheck.h. Tolerances: a central difference with step h = 1e-2 on a
 * piecewise-linear network has error O(h^2) away from ReLU kinks and up to O(1) where a kink
 * falls inside [x - h, x + h]; 1e-4 + 2% of the value passes the first and catches a wrong
 * term of the backward pass (which is off by a factor, not a percent). */
#include "gradcheck.h"
#include "aux_loss.h"
#include "model.h"
#include "rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK_ROWS 16
#define CHECK_COORDS 4          /* per tensor */
#define CHECK_STEP 1e-2f
#define HOST_POWER_ITERATIONS 300
#define DEVICE_POWER_ITERATIONS 100

/* Mean cross-entropy of rows 0..rows-1 of the training set under host parameters p. */
static double host_loss(float *const p[NUM_TENSORS], const dataset *ds, size_t rows)
{
    double act[2][256], total = 0.0;
    for (size_t r = 0; r < rows; ++r) {
        const float *x = ds->images + r * IMAGE_SIZE;
        for (int l = 0; l < NUM_LAYERS; ++l) {
            int in = train_widths[l], out = train_widths[l + 1];
            double *dst = act[(l + 1) % 2];
            const double *src = act[l % 2];
            for (int j = 0; j < out; ++j) {
                double z = p[2 * l + 1][j];
                for (int i = 0; i < in; ++i)
                    z += (l == 0 ? (double)x[i] : src[i]) * p[2 * l][(size_t)i * out + j];
                dst[j] = (l + 1 < NUM_LAYERS && z < 0.0) ? 0.0 : z;
            }
        }
        const double *z = act[NUM_LAYERS % 2];
        double mx = z[0], s = 0.0;
        for (int c = 1; c < NUM_CLASSES; ++c)
            mx = z[c] > mx ? z[c] : mx;
        for (int c = 0; c < NUM_CLASSES; ++c)
            s += exp(z[c] - mx);
        total += log(s) + mx - z[ds->labels[r]];
    }
    return total / (double)rows;
}

/* Largest singular value of W (in x out) by power iteration in double. */
static double host_sigma(const float *w, int in, int out)
{
    double u[IMAGE_SIZE], v[256], nv = 0.0;
    for (int j = 0; j < out; ++j)
        v[j] = 1.0 + 0.01 * j;
    for (int it = 0; it < HOST_POWER_ITERATIONS; ++it) {
        double nu = 0.0;
        for (int i = 0; i < in; ++i) {
            u[i] = 0.0;
            for (int j = 0; j < out; ++j)
                u[i] += (double)w[(size_t)i * out + j] * v[j];
            nu += u[i] * u[i];
        }
        nv = 0.0;
        for (int j = 0; j < out; ++j) {
            v[j] = 0.0;
            for (int i = 0; i < in; ++i)
                v[j] += (double)w[(size_t)i * out + j] * u[i] / sqrt(nu);
            nv += v[j] * v[j];
        }
        for (int j = 0; j < out; ++j)
            v[j] /= sqrt(nv);
    }
    return sqrt(nv);
}

static int read_tensors(trainer *tr, cl_mem *bufs, float *host[NUM_TENSORS])
{
    for (int t = 0; t < NUM_TENSORS; ++t)
        if (read_buffer(tr, bufs[t], host[t], tr->tensor_size[t] * sizeof(float),
                        "clEnqueueReadBuffer") != 0)
            return -1;
    return 0;
}

/* (L(p + h e_i) - L(p - h e_i)) / 2h on the host. */
static double central_difference(float *p[NUM_TENSORS], const dataset *ds, int t, size_t i)
{
    float saved = p[t][i], h = CHECK_STEP;
    p[t][i] = saved + h;
    double up = host_loss(p, ds, CHECK_ROWS);
    p[t][i] = saved - h;
    double down = host_loss(p, ds, CHECK_ROWS);
    p[t][i] = saved;
    return (up - down) / (2.0 * (double)h);
}

/* Compares CHECK_COORDS coordinates of every tensor; returns the number of mismatches. */
static int compare_coordinates(trainer *tr, float *p[NUM_TENSORS], float *g[NUM_TENSORS],
                               const dataset *ds)
{
    uint64_t state = 12345;
    int bad = 0;
    for (int t = 0; t < NUM_TENSORS; ++t)
        for (int c = 0; c < CHECK_COORDS; ++c) {
            size_t i = (size_t)(rng_next(&state) % tr->tensor_size[t]);
            double numeric = central_difference(p, ds, t, i), err = fabs(numeric - g[t][i]);
            if (err > 1e-4 + 2e-2 * fabs(numeric)) {
                fprintf(stderr, "%s: gradient check: tensor %d [%zu]: device %.6g, finite "
                        "difference %.6g\n", PROGRAM, t, i, (double)g[t][i], numeric);
                ++bad;
            }
        }
    return bad;
}

/* sigma_l within 1% (the device ran DEVICE_POWER_ITERATIONS from its random start). */
static int compare_sigmas(trainer *tr, float *p[NUM_TENSORS])
{
    float sigma[2 * NUM_LAYERS];
    int bad = 0;
    if (read_buffer(tr, tr->sigma, sigma, sizeof sigma, "read sigma") != 0)
        return 1;
    for (int l = 0; l < NUM_LAYERS; ++l) {
        double ref = host_sigma(p[2 * l], train_widths[l], train_widths[l + 1]);
        if (fabs(sigma[l] - ref) > 1e-2 * ref) {
            fprintf(stderr, "%s: sigma check: layer %d: device %.6g, host %.6g\n", PROGRAM,
                    l + 1, (double)sigma[l], ref);
            ++bad;
        }
    }
    return bad;
}

/* The device's gradients of the first CHECK_ROWS training rows and its sigmas. */
static int device_gradients(trainer *tr, uint64_t seed)
{
    return cl_check(clEnqueueCopyBuffer(tr->queue, tr->train_x, tr->act[0], 0, 0,
                                        CHECK_ROWS * IMAGE_SIZE * sizeof(float), 0, NULL, NULL),
                    "clEnqueueCopyBuffer") == 0 &&
                   trainer_reset(tr, seed) == 0 &&
                   model_forward(tr, tr->act[0], 0, CHECK_ROWS) == 0 &&
                   model_cross_entropy(tr, tr->train_y, 0, CHECK_ROWS, 1.0f / CHECK_ROWS) == 0 &&
                   model_backward(tr, CHECK_ROWS) == 0 &&
                   aux_gradient(tr, DEVICE_POWER_ITERATIONS) == 0
               ? 0 : -1;
}

int gradcheck_run(trainer *tr, const dataset *train, uint64_t seed)
{
    float *p[NUM_TENSORS] = {NULL}, *g[NUM_TENSORS] = {NULL};
    int ok = 1, bad = -1;
    for (int t = 0; t < NUM_TENSORS; ++t)
        ok = ok && (p[t] = malloc(tr->tensor_size[t] * sizeof(float))) &&
             (g[t] = malloc(tr->tensor_size[t] * sizeof(float)));
    if (ok && device_gradients(tr, seed) == 0 && read_tensors(tr, tr->param, p) == 0 &&
        read_tensors(tr, tr->grad, g) == 0)
        bad = compare_coordinates(tr, p, g, train) + compare_sigmas(tr, p);
    for (int t = 0; t < NUM_TENSORS; ++t)
        free(p[t]), free(g[t]);
    if (bad == 0 && train_dp_rank(tr->dp) == 0)
        fprintf(stderr, "%s: gradient check passed (%d coordinates, %d spectral norms)\n",
                PROGRAM, NUM_TENSORS * CHECK_COORDS, NUM_LAYERS);
    return bad == 0 ? 0 : -1;
}
