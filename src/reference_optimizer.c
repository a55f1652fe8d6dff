/* reference_optimizer.c — the CPU reference of the optimizer in the step: SGD and AdamW written
 * out like the equations of PyTorch's documentation (bloopcl.h, "Optimizer in the step"), one
 * element at a time, in fp32, with the operations of cl/optimize.cl in the same order (no
 * contraction: -ffp-contract=off), so that "bloopcl step, then this on d" is the oracle of the
 * fused step. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* base^t by squaring, as bloopcl_power in cl/optimize.cl. */
static float power(float base, uint64_t t)
{
    float result = 1.0f;
    while (t != 0) {
        if (t & 1u)
            result *= base;
        base *= base;
        t >>= 1;
    }
    return result;
}

bloopcl_status bloopcl_reference_optimizer_init(const bloopcl_optimizer *optimizer, size_t n,
                                                bloopcl_reference_optimizer_state *state)
{
    if (optimizer == NULL || state == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    memset(state, 0, sizeof *state);
    bloopcl_status status = bloopcl_optimizer_validate(optimizer, NULL, 0);
    if (status != BLOOPCL_OK)
        return status;
    if (n == 0)
        return BLOOPCL_ERR_SIZE_MISMATCH;
    state->n = n;
    bool adamw = optimizer->kind == BLOOPCL_OPTIMIZER_ADAMW;
    bool momentum = optimizer->kind == BLOOPCL_OPTIMIZER_SGD && optimizer->momentum != 0.0;
    if (adamw || momentum)
        state->moment1 = calloc(n, sizeof(float));
    if (adamw)
        state->moment2 = calloc(n, sizeof(float));
    if (((adamw || momentum) && state->moment1 == NULL) || (adamw && state->moment2 == NULL)) {
        bloopcl_reference_optimizer_free(state);
        return BLOOPCL_ERR_OUT_OF_MEMORY;
    }
    return BLOOPCL_OK;
}

void bloopcl_reference_optimizer_free(bloopcl_reference_optimizer_state *state)
{
    if (state == NULL)
        return;
    free(state->moment1);
    free(state->moment2);
    memset(state, 0, sizeof *state);
}

/* The per-step constants, as the kernel derives them. */
typedef struct step_constants {
    float lr, weight_decay, momentum, dampening, beta1, beta2, eps;
    float step_size, bias2_sqrt;
    bool first_step;
} step_constants;

static step_constants constants_of(const bloopcl_optimizer *o, double lr, uint64_t t)
{
    step_constants c = {(float)lr, (float)o->weight_decay, (float)o->momentum,
                        (float)o->dampening, (float)o->beta1, (float)o->beta2, (float)o->eps,
                        0.0f, 0.0f, t == 1};
    float c1 = o->bias_correction ? 1.0f - power(c.beta1, t) : 1.0f;
    float c2 = o->bias_correction ? 1.0f - power(c.beta2, t) : 1.0f;
    c.step_size = c.lr / c1;
    c.bias2_sqrt = sqrtf(c2);
    return c;
}

/* SGD on one element: b <- d (t = 1) or mu b + (1 - dampening) d; d <- d + mu b or b. */
static float sgd(const bloopcl_optimizer *o, const step_constants *c, float p, float d, float *b)
{
    if (c->momentum != 0.0f) {
        *b = c->first_step ? d : c->momentum * *b + (1.0f - c->dampening) * d;
        d = o->nesterov ? d + c->momentum * *b : *b;
    }
    return p - c->lr * d;
}

/* AdamW on one element: m <- m + (1 - beta1)(d - m); v <- beta2 v + (1 - beta2) d^2;
 * p <- p - (lr / c1) m / (sqrt(v) / sqrt(c2) + eps). */
static float adamw(const step_constants *c, float p, float d, float *m, float *v)
{
    *m = *m + (1.0f - c->beta1) * (d - *m);
    *v = c->beta2 * *v + (1.0f - c->beta2) * (d * d);
    return p - c->step_size * (*m / (sqrtf(*v) / c->bias2_sqrt + c->eps));
}

bloopcl_status bloopcl_reference_optimizer_step(const bloopcl_optimizer *o,
                                                bloopcl_reference_optimizer_state *state,
                                                double lr, const float *d, int accepted,
                                                void *params, bloopcl_dtype params_dtype)
{
    if (o == NULL || state == NULL || d == NULL || params == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    if (bloopcl_dtype_size(params_dtype) == 0 || o->kind == BLOOPCL_OPTIMIZER_NONE ||
        !isfinite(lr) || lr < 0.0)
        return BLOOPCL_ERR_INVALID_ARGUMENT;
    bool two_moments = o->kind == BLOOPCL_OPTIMIZER_ADAMW;
    bool one_moment = two_moments ||
                      (o->kind == BLOOPCL_OPTIMIZER_SGD && (float)o->momentum != 0.0f);
    if ((one_moment && state->moment1 == NULL) || (two_moments && state->moment2 == NULL))
        return BLOOPCL_ERR_STATE;  /* a state made for another optimizer */
    if (!accepted)
        return BLOOPCL_OK;
    state->steps++;
    step_constants c = constants_of(o, lr, state->steps);
    for (size_t i = 0; i < state->n; ++i) {
        float p = bloopcl__load_element(params, params_dtype, i);
        float di = d[i];
        if (o->decoupled_weight_decay)
            p = p * (1.0f - c.lr * c.weight_decay);
        else if (c.weight_decay != 0.0f)
            di = di + c.weight_decay * p;
        if (o->kind == BLOOPCL_OPTIMIZER_SGD)
            p = sgd(o, &c, p, di, state->moment1 != NULL ? &state->moment1[i] : NULL);
        else
            p = adamw(&c, p, di, &state->moment1[i], &state->moment2[i]);
        bloopcl__store_element(params, params_dtype, i, p);
    }
    return BLOOPCL_OK;
}
