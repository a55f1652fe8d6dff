/* project.cl - pass 2: write the direction d and commit (or undo) the state. Work-items loop
 * over element ranges (bloopcl_my_range); the scalars come from the finalize kernel.
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
/* d for one element, given m' and q' (see the table above). */
float bloopcl_direction(int method, int ratio_only, float lambda, float s, float r, float r_q,
                        float gi, float ai, float mi, float qi)
{
    if (method == BLOOPCL_KERNEL_MIXED)
        return s * (gi + lambda * ai);
    if (method == BLOOPCL_KERNEL_PCGRAD)
        return s * ((gi - bloopcl_min_zero(r_q) * qi) + lambda * (ai - bloopcl_min_zero(r) * mi));
    if (ratio_only)
        return s * ((1.0f - lambda * r) * gi + lambda * ai);
    return s * (gi + lambda * (ai - r * mi));
}

/* A rejected step: d = 0 and the spare state buffers get the current state back. */
void bloopcl_undo(global float *d, global const float *m_cur, global float *m_next,
                  global const float *q_cur, global float *q_next, size_t di, size_t si,
                  int has_ema, int has_aux_ema)
{
    d[di] = 0.0f;
    if (has_ema)
        m_next[si] = m_cur[si];
    if (has_aux_ema)
        q_next[si] = q_cur[si];
}

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
    int accepted = flags[BLOOPCL_FLAG_ACCEPTED];
    float w_step = scalars[BLOOPCL_SCALAR_EMA_WEIGHT];
    float s = scalars[BLOOPCL_SCALAR_SCALE];
    float r = scalars[BLOOPCL_SCALAR_RATIO];
    float r_q = scalars[BLOOPCL_SCALAR_AUX_RATIO];
    bloopcl_range range = bloopcl_my_range((size_t)count);
    for (size_t i = range.begin; i < range.end; i += range.step) {
        size_t si = (size_t)s_off + i;
        if (!accepted) {
            bloopcl_undo(d, m_cur, m_next, q_cur, q_next, (size_t)d_off + i, si, has_ema,
                         has_aux_ema);
            continue;
        }
        float gi = g[g_off + i];
        float ai = a[a_off + i];
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
        d[d_off + i] = bloopcl_direction(method, ratio_only, lambda, s, r, r_q, gi, ai, mi, qi);
    }
}
