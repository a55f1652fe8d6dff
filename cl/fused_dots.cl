/* fused_dots.cl - pass 1 of the fused backend: compute the updated EMA(s) on the fly (nothing
 * is written) and accumulate every dot product the method needs in one read of g, a, m (q).
 *
 * Each work-item accumulates with Kahan compensation, then the work-group reduces in a fixed
 * tree and writes one partial per dot; the finalize kernel sums the partials in a fixed order.
 * Elements are shared out by bloopcl_my_range (common.cl); the geometry is fixed per device, so
 * a run is bitwise repeatable. */
kernel void bloopcl_fused_dots(global const float *g, ulong g_off,
                               global const float *a, ulong a_off,
                               global const float *m_cur, global const float *q_cur,
                               ulong s_off, ulong count, float w,
                               int has_ema, int has_aux_ema, int check_finite,
                               global int *flags, global float *partials,
                               ulong slots, ulong slot_base, local float *scratch)
{
    size_t lid = get_local_id(0);
    size_t size = get_local_size(0);
    float w_step = flags[BLOOPCL_FLAG_INITIALIZED] ? w : 1.0f;

    float sum[BLOOPCL_NUM_DOTS], carry[BLOOPCL_NUM_DOTS];
    for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
        sum[k] = carry[k] = 0.0f;
    int bad = 0;

    bloopcl_range range = bloopcl_my_range((size_t)count);
    for (size_t i = range.begin; i < range.end; i += range.step) {
        float gi = g[g_off + i];
        float ai = a[a_off + i];
        if (check_finite && !(isfinite(gi) && isfinite(ai)))
            bad = 1;
        if (has_ema) {
            float mi = bloopcl_ema(m_cur[s_off + i], gi, w_step);
            bloopcl_kahan_add(&sum[BLOOPCL_DOT_EMA_AUX], &carry[BLOOPCL_DOT_EMA_AUX], mi * ai);
            bloopcl_kahan_add(&sum[BLOOPCL_DOT_EMA_EMA], &carry[BLOOPCL_DOT_EMA_EMA], mi * mi);
            bloopcl_kahan_add(&sum[BLOOPCL_DOT_AUX_AUX], &carry[BLOOPCL_DOT_AUX_AUX], ai * ai);
        }
        if (has_aux_ema) {
            float qi = bloopcl_ema(q_cur[s_off + i], ai, w_step);
            bloopcl_kahan_add(&sum[BLOOPCL_DOT_AUXEMA_MAIN], &carry[BLOOPCL_DOT_AUXEMA_MAIN],
                              qi * gi);
            bloopcl_kahan_add(&sum[BLOOPCL_DOT_AUXEMA_AUXEMA],
                              &carry[BLOOPCL_DOT_AUXEMA_AUXEMA], qi * qi);
        }
    }
    if (bad)
        flags[BLOOPCL_FLAG_NONFINITE] = 1;  /* every writer stores the same value: no race */

    for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
        scratch[k * size + lid] = sum[k];
    bloopcl_reduce_rows(scratch, lid, size);
    if (lid == 0) {
        size_t slot = (size_t)slot_base + get_group_id(0);
        for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
            partials[k * slots + slot] = scratch[k * size];
    }
}
