/* aux_loss.c — see aux_loss.h; the kernels are those of aux_loss.cl. */
#include "aux_loss.h"

#include <math.h>

int aux_power_iteration(trainer *tr, int l)
{
    cl_int in = train_widths[l], out = train_widths[l + 1], no = 0, yes = 1,
           slot_u = NUM_LAYERS + l, slot_v = l;
    karg mv1[] = {KARG(tr->param[2 * l]), KARG(in), KARG(out), KARG(no), KARG(tr->v[l]),
                  KARG(tr->u[l])};
    karg n1[] = {KARG(tr->u[l]), KARG(in), KARG(tr->sigma), KARG(slot_u)};
    karg mv2[] = {KARG(tr->param[2 * l]), KARG(in), KARG(out), KARG(yes), KARG(tr->u[l]),
                  KARG(tr->v[l])};
    karg n2[] = {KARG(tr->v[l]), KARG(out), KARG(tr->sigma), KARG(slot_v)};
    if (launch(tr, K_MATVEC, (size_t)in, 0, mv1, 6) != 0 ||
        launch(tr, K_NORMALIZE, 1, 0, n1, 4) != 0 ||
        launch(tr, K_MATVEC, (size_t)out, 0, mv2, 6) != 0)
        return -1;
    return launch(tr, K_NORMALIZE, 1, 0, n2, 4);
}

int aux_gradient(trainer *tr, int iterations)
{
    for (int l = 0; l < NUM_LAYERS; ++l) {
        for (int i = 0; i < iterations; ++i)
            if (aux_power_iteration(tr, l) != 0)
                return -1;
        cl_int out = train_widths[l + 1], slot = l;
        karg args[] = {KARG(tr->u[l]), KARG(tr->v[l]), KARG(out), KARG(tr->sigma), KARG(slot),
                       KARG(tr->aux[2 * l])};
        if (launch(tr, K_AUX_GRAD, (size_t)out, (size_t)train_widths[l], args, 6) != 0)
            return -1;
    }
    return 0;
}

int aux_loss(trainer *tr, int iterations, double *out)
{
    float sigma[2 * NUM_LAYERS];
    for (int l = 0; l < NUM_LAYERS; ++l)
        for (int i = 0; i < iterations; ++i)
            if (aux_power_iteration(tr, l) != 0)
                return -1;
    if (read_buffer(tr, tr->sigma, sigma, sizeof sigma, "read sigma") != 0)
        return -1;
    *out = 0.0;
    for (int l = 0; l < NUM_LAYERS; ++l)
        *out += 2.0 * log((double)sigma[l]);
    return 0;
}
