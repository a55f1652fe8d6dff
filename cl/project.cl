/* project.cl - pass 2: write the direction d and commit (or undo) the state. One work-item per
 * element; the scalars come from the finalize kernel.
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
    size_t i = get_global_id(0);
    if (i >= count)
        return;
    size_t si = (size_t)s_off + i;
    float gi = g[g_off + i];
    float ai = a[a_off + i];

    if (!flags[BLOOPCL_FLAG_ACCEPTED]) {
        d[d_off + i] = 0.0f;
        if (has_ema)
            m_next[si] = m_cur[si];
        if (has_aux_ema)
            q_next[si] = q_cur[si];
        return;
    }

    float w_step = scalars[BLOOPCL_SCALAR_EMA_WEIGHT];
    float mi = 0.0f, qi = 0.0f;
    if (has_ema) {
        mi = recompute_ema ? bloopcl_ema(m_cur[si], gi, w_step) : m_next[si];
        if (recompute_ema)
            m_next[si] = mi;
    }
    if (has_aux_ema) {
        qi = recompute_ema ? bloopcl_ema(q_cur[si], ai, w_step) : q_next[si];
        if (recompute_ema)
            q_next[si] = qi;
    }

    float s = scalars[BLOOPCL_SCALAR_SCALE];
    float r = scalars[BLOOPCL_SCALAR_RATIO];
    float di;
    if (method == BLOOPCL_KERNEL_MIXED) {
        di = s * (gi + lambda * ai);
    } else if (method == BLOOPCL_KERNEL_PCGRAD) {
        float r_q = scalars[BLOOPCL_SCALAR_AUX_RATIO];
        di = s * ((gi - bloopcl_min_zero(r_q) * qi) + lambda * (ai - bloopcl_min_zero(r) * mi));
    } else if (ratio_only) {
        di = s * ((1.0f - lambda * r) * gi + lambda * ai);
    } else {
        di = s * (gi + lambda * (ai - r * mi));
    }
    d[d_off + i] = di;
}
