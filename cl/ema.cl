/* ema.cl - pass 1 of the CLBlast backend: write the updated EMA(s) into the "next" buffers, so
 * that CLBlast can take their dot products, and flag non-finite inputs. Work-items loop over
 * element ranges (see bloopcl_my_range). The state is double-buffered: m_cur is never written,
 * so a rejected step can be undone by the projection kernel. */
kernel void bloopcl_ema_update(global const float *g, ulong g_off,
                               global const float *a, ulong a_off,
                               global const float *m_cur, global float *m_next,
                               global const float *q_cur, global float *q_next,
                               ulong s_off, ulong count, float w,
                               int has_ema, int has_aux_ema, int check_finite,
                               global int *flags)
{
    /* Before a first-gradient initialisation the EMA takes g whole (w = 1). */
    float w_step = flags[BLOOPCL_FLAG_INITIALIZED] ? w : 1.0f;
    int bad = 0;
    bloopcl_range range = bloopcl_my_range((size_t)count);
    for (size_t i = range.begin; i < range.end; i += range.step) {
        float gi = g[g_off + i];
        float ai = (has_aux_ema || check_finite) ? a[a_off + i] : 0.0f;
        if (check_finite && !(isfinite(gi) && isfinite(ai)))
            bad = 1;
        if (has_ema)
            m_next[s_off + i] = bloopcl_ema(m_cur[s_off + i], gi, w_step);
        if (has_aux_ema)
            q_next[s_off + i] = bloopcl_ema(q_cur[s_off + i], ai, w_step);
    }
    if (bad)
        flags[BLOOPCL_FLAG_NONFINITE] = 1;  /* every writer stores the same value: no race */
}
