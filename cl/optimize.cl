/* optimize.cl - the optimizer pass 2 can apply in place of writing d (bloopcl_optimizer in
 * bloopcl.h): the direction d of an element goes straight into the parameter update, so d is
 * never written to memory nor read back by another kernel. With t the optimizer steps applied
 * so far, this one included (BLOOPCL_FLAG_OPT_STEPS, counted by the finalize kernel), lr the
 * learning rate and wd the weight decay, as PyTorch's documentation writes them:
 *
 *   weight decay  decoupled: p <- p (1 - lr wd);  L2: d <- d + wd p
 *   SGD           momentum mu: b <- d if t = 1, else mu b + (1 - dampening) d;
 *                 d <- d + mu b (Nesterov) or b;   p <- p - lr d
 *   AdamW         m <- m + (1 - beta1) (d - m);    v <- beta2 v + (1 - beta2) d d
 *                 p <- p - (lr / c1) (m / (sqrt(v) / sqrt(c2) + eps)),
 *                 c1 = 1 - beta1^t, c2 = 1 - beta2^t (both 1 without bias correction)
 *
 * The moments (b; m and v) are fp32 and live in the combiner, one buffer per state chunk
 * (v after m's `count` floats). A rejected step never gets here: the parameters and moments
 * stay as they were. src/reference_optimizer.c computes the same operations in the same
 * order on the host. */

typedef struct bloopcl_optimizer_scalars {
    int kind;                   /* BLOOPCL_KERNEL_OPT_* */
    int decoupled, nesterov, first_step;
    float lr, weight_decay, momentum, dampening, beta1, beta2, eps;
    float step_size, bias2_sqrt;  /* lr / c1 and sqrt(c2) */
} bloopcl_optimizer_scalars;

/* base^t by squaring: at most 2 log2(t) roundings, the same on every device (the host's
 * reference does the same multiplications); pow() would be allowed 16 ulp and differ. */
float bloopcl_power(float base, uint t)
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

/* Fills *o from the kernel's arguments; t is read from the flags after this step's finalize. */
void bloopcl_optimizer_setup(bloopcl_optimizer_scalars *o, int kind, int decoupled,
                             int nesterov, float lr, float weight_decay, float momentum,
                             float dampening, float beta1, float beta2, float eps,
                             int bias_correction, uint t)
{
    o->kind = kind;
    o->decoupled = decoupled;
    o->nesterov = nesterov;
    o->first_step = t == 1u;
    o->lr = lr;
    o->weight_decay = weight_decay;
    o->momentum = momentum;
    o->dampening = dampening;
    o->beta1 = beta1;
    o->beta2 = beta2;
    o->eps = eps;
    float c1 = bias_correction ? 1.0f - bloopcl_power(beta1, t) : 1.0f;
    float c2 = bias_correction ? 1.0f - bloopcl_power(beta2, t) : 1.0f;
    o->step_size = lr / c1;
    o->bias2_sqrt = sqrt(c2);
}

/* One element (T = float) or one vector (T = floatv) of the parameters p (type p_type) at
 * index i, updated from its direction d; m1 and m2 point at the element's chunk of moments. */
#define BLOOPCL_DEFINE_OPTIMIZE_AT(T, SFX, LOAD, STORE)                                        \
    void bloopcl_optimize_at##SFX(global uchar *p, int p_type, global float *m1,             \
                                  global float *m2, size_t i, T d,                             \
                                  const bloopcl_optimizer_scalars *o)                          \
    {                                                                                          \
        T pi = bloopcl_load##SFX(p, i, p_type, 1.0f);                                          \
        if (o->decoupled)                                                                      \
            pi = pi * (1.0f - o->lr * o->weight_decay);                                        \
        else if (o->weight_decay != 0.0f)                                                      \
            d = d + o->weight_decay * pi;                                                      \
        if (o->kind == BLOOPCL_KERNEL_OPT_SGD) {                                               \
            if (o->momentum != 0.0f) {                                                         \
                T b = o->first_step ? d                                                        \
                                    : o->momentum * LOAD(m1, i) + (1.0f - o->dampening) * d;   \
                STORE(b, m1, i);                                                               \
                d = o->nesterov ? d + o->momentum * b : b;                                     \
            }                                                                                  \
            pi = pi - o->lr * d;                                                               \
        } else {                                                                               \
            T m = LOAD(m1, i), v = LOAD(m2, i);                                                \
            m = m + (1.0f - o->beta1) * (d - m);                                               \
            v = o->beta2 * v + (1.0f - o->beta2) * (d * d);                                    \
            STORE(m, m1, i);                                                                   \
            STORE(v, m2, i);                                                                   \
            pi = pi - o->step_size * (m / (sqrt(v) / o->bias2_sqrt + o->eps));                 \
        }                                                                                      \
        bloopcl_store##SFX(pi, p, i, p_type);                                                  \
    }
BLOOPCL_DEFINE_OPTIMIZE_AT(floatv, _v, BLOOPCL_LOADV, BLOOPCL_STOREV)
BLOOPCL_DEFINE_OPTIMIZE_AT(float, , BLOOPCL_LOAD1, BLOOPCL_STORE1)
