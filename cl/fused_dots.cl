/* fused_dots.cl - pass 1 of the fused backend: compute the updated EMA(s) on the fly (nothing
 * is written) and accumulate every dot product the method needs in one read of g, a, m (q).
 *
 * Each work-item accumulates with Kahan compensation (per vector lane), sums its lanes
 * pairwise, then the work-group reduces in a fixed tree and writes one partial per dot; the
 * finalize kernel sums the partials in a fixed order. Elements are shared out by
 * bloopcl_my_range (common.cl); the geometry is fixed per device, so a run is bitwise
 * repeatable. */

/* Accumulates the dots of one element (T = float) or one vector (T = floatv) at index i, and
 * the non-finite probe of g and a (when checked). */
#define BLOOPCL_DEFINE_DOTS_AT(T, SFX, LOAD)                                                   \
    void bloopcl_dots_at##SFX(global const float *g, global const float *a,                    \
                             global const float *m_cur, global const float *q_cur, size_t i,  \
                             float w, int has_ema, int has_aux_ema, int check, T *sum,        \
                             T *carry, T *probe)                                               \
    {                                                                                          \
        T gi = LOAD(g, i);                                                                     \
        T ai = LOAD(a, i);                                                                     \
        if (check)                                                                             \
            *probe += bloopcl_probe##SFX(gi, ai);                                              \
        if (has_ema) {                                                                         \
            T mi = bloopcl_ema##SFX(LOAD(m_cur, i), gi, w);                                    \
            bloopcl_kahan_add##SFX(&sum[BLOOPCL_DOT_EMA_AUX], &carry[BLOOPCL_DOT_EMA_AUX],     \
                                   mi * ai);                                                   \
            bloopcl_kahan_add##SFX(&sum[BLOOPCL_DOT_EMA_EMA], &carry[BLOOPCL_DOT_EMA_EMA],     \
                                   mi * mi);                                                   \
            bloopcl_kahan_add##SFX(&sum[BLOOPCL_DOT_AUX_AUX], &carry[BLOOPCL_DOT_AUX_AUX],     \
                                   ai * ai);                                                   \
        }                                                                                      \
        if (has_aux_ema) {                                                                     \
            T qi = bloopcl_ema##SFX(LOAD(q_cur, i), ai, w);                                    \
            bloopcl_kahan_add##SFX(&sum[BLOOPCL_DOT_AUXEMA_MAIN],                              \
                                   &carry[BLOOPCL_DOT_AUXEMA_MAIN], qi * gi);                  \
            bloopcl_kahan_add##SFX(&sum[BLOOPCL_DOT_AUXEMA_AUXEMA],                            \
                                   &carry[BLOOPCL_DOT_AUXEMA_AUXEMA], qi * qi);                \
        }                                                                                      \
    }
BLOOPCL_DEFINE_DOTS_AT(floatv, _v, BLOOPCL_LOADV)
BLOOPCL_DEFINE_DOTS_AT(float, , BLOOPCL_LOAD1)

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
    global const float *gp = g + g_off, *ap = a + a_off;
    global const float *mc = m_cur + s_off, *qc = q_cur + s_off;

    floatv sum_v[BLOOPCL_NUM_DOTS], carry_v[BLOOPCL_NUM_DOTS];
    float sum[BLOOPCL_NUM_DOTS], carry[BLOOPCL_NUM_DOTS];
    for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k) {
        sum_v[k] = carry_v[k] = (floatv)(0.0f);
        sum[k] = carry[k] = 0.0f;
    }
    floatv probe_v = (floatv)(0.0f);
    float probe = 0.0f;
    bloopcl_range r = bloopcl_my_range((size_t)count);
    size_t i = r.begin;
    for (; i + BLOOPCL_VECTOR <= r.end; i += r.step)
        bloopcl_dots_at_v(gp, ap, mc, qc, i, w_step, has_ema, has_aux_ema, check_finite, sum_v,
                          carry_v, &probe_v);
    for (; i < r.end; ++i)
        bloopcl_dots_at(gp, ap, mc, qc, i, w_step, has_ema, has_aux_ema, check_finite, sum, carry,
                        &probe);
    if (isnan(BLOOPCL_LANE_SUM(probe_v) + probe))
        flags[BLOOPCL_FLAG_NONFINITE] = 1;  /* every writer stores the same value: no race */

    /* the compensated value of a Kahan sum is sum - carry */
    for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
        scratch[k * size + lid] = BLOOPCL_LANE_SUM(sum_v[k] - carry_v[k]) + (sum[k] - carry[k]);
    bloopcl_reduce_rows(scratch, lid, size);
    if (lid == 0) {
        size_t slot = (size_t)slot_base + get_group_id(0);
        for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
            partials[k * slots + slot] = scratch[k * size];
    }
}
