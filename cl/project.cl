/* project.cl - pass 2: write the direction d and commit (or undo) the state; the scalars come
 * from the finalize kernel.
 *
 *   BLOOP, DYNAMIC_BARRIER   d = s (g + lambda (a - r m'))
 *   ratio-only               d = s ((1 - lambda r) g + lambda a)
 *   PCGRAD                   d = s ((g - min(r_q, 0) q') + lambda (a - min(r, 0) m'))
 *   MIXED                    d = s (g + lambda a)
 *
 * m' (and q') either were materialised in m_next by pass 1 (CLBlast backend, recompute_ema = 0)
 * or are recomputed here from m_cur exactly as pass 1 computed them (fused backend). A rejected
 * step writes d = 0 and copies m_cur into m_next, so the state after the host's buffer flip is
 * exactly the state before the step. g and a are read before d is written, so d may alias them. */

typedef struct bloopcl_step_scalars {
    int method, ratio_only, has_ema, has_aux_ema, recompute_ema, accepted;
    float lambda, s, r, r_q, w;
} bloopcl_step_scalars;

/* One element (T = float) or one vector (T = floatv) at index i. */
#define BLOOPCL_DEFINE_PROJECT_AT(T, SFX, LOAD, STORE)                                         \
    void bloopcl_project_at##SFX(global const float *g, global const float *a, global float *d,\
                                 global const float *m_cur, global float *m_next,             \
                                 global const float *q_cur, global float *q_next, size_t i,   \
                                 const bloopcl_step_scalars *k)                                \
    {                                                                                          \
        if (!k->accepted) {                                                                    \
            STORE((T)(0.0f), d, i);                                                            \
            if (k->has_ema)                                                                    \
                STORE(LOAD(m_cur, i), m_next, i);                                              \
            if (k->has_aux_ema)                                                                \
                STORE(LOAD(q_cur, i), q_next, i);                                              \
            return;                                                                            \
        }                                                                                      \
        T gi = LOAD(g, i), ai = LOAD(a, i), mi = (T)(0.0f), qi = (T)(0.0f), di;               \
        if (k->has_ema) {                                                                      \
            mi = k->recompute_ema ? bloopcl_ema##SFX(LOAD(m_cur, i), gi, k->w)                 \
                                  : LOAD(m_next, i);                                           \
            if (k->recompute_ema)                                                              \
                STORE(mi, m_next, i);                                                          \
        }                                                                                      \
        if (k->has_aux_ema) {                                                                  \
            qi = k->recompute_ema ? bloopcl_ema##SFX(LOAD(q_cur, i), ai, k->w)                 \
                                  : LOAD(q_next, i);                                           \
            if (k->recompute_ema)                                                              \
                STORE(qi, q_next, i);                                                          \
        }                                                                                      \
        if (k->method == BLOOPCL_KERNEL_MIXED)                                                 \
            di = k->s * (gi + k->lambda * ai);                                                 \
        else if (k->method == BLOOPCL_KERNEL_PCGRAD)                                           \
            di = k->s * ((gi - bloopcl_min_zero(k->r_q) * qi) +                                \
                         k->lambda * (ai - bloopcl_min_zero(k->r) * mi));                      \
        else if (k->ratio_only)                                                                \
            di = k->s * ((1.0f - k->lambda * k->r) * gi + k->lambda * ai);                     \
        else                                                                                   \
            di = k->s * (gi + k->lambda * (ai - k->r * mi));                                   \
        STORE(di, d, i);                                                                       \
    }
BLOOPCL_DEFINE_PROJECT_AT(floatv, _v, BLOOPCL_LOADV, BLOOPCL_STOREV)
BLOOPCL_DEFINE_PROJECT_AT(float, , BLOOPCL_LOAD1, BLOOPCL_STORE1)

kernel void bloopcl_project(global const float *g, ulong g_off,
                            global const float *a, ulong a_off,
                            global float *d, ulong d_off,
                            global const float *m_cur, global float *m_next,
                            global const float *q_cur, global float *q_next,
                            ulong s_off, ulong count,
                            int method, int ratio_only, int has_ema, int has_aux_ema,
                            int recompute_ema, float lambda,
                            global const float *scalars, global const int *flags)
{
    bloopcl_step_scalars k = {
        method, ratio_only, has_ema, has_aux_ema, recompute_ema,
        flags[BLOOPCL_FLAG_ACCEPTED], lambda, scalars[BLOOPCL_SCALAR_SCALE],
        scalars[BLOOPCL_SCALAR_RATIO], scalars[BLOOPCL_SCALAR_AUX_RATIO],
        scalars[BLOOPCL_SCALAR_EMA_WEIGHT]};
    global const float *gp = g + g_off, *ap = a + a_off, *mc = m_cur + s_off, *qc = q_cur + s_off;
    global float *dp = d + d_off, *mn = m_next + s_off, *qn = q_next + s_off;
    bloopcl_range r = bloopcl_my_range((size_t)count);
    size_t i = r.begin;
    for (; i + BLOOPCL_VECTOR <= r.end; i += r.step)
        bloopcl_project_at_v(gp, ap, dp, mc, mn, qc, qn, i, &k);
    for (; i < r.end; ++i)
        bloopcl_project_at(gp, ap, dp, mc, mn, qc, qn, i, &k);
}
