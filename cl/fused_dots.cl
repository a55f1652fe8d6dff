/* fused_dots.cl - pass 1 of the fused backend: compute the updated EMA(s) on the fly (nothing
 * is written) and accumulate every dot product the method needs in one read of g, a, m (q).
 *
 * Each work-item sums blocks of BLOOPCL_BLOCK vectors plainly and accumulates the block sums
 * with Kahan compensation (per vector lane), sums its lanes
 * pairwise, then the work-group reduces in a fixed tree and writes one partial per dot; the
 * finalize kernel sums the partials in a fixed order. Elements are shared out by
 * bloopcl_my_range (common.cl); the geometry is fixed per device, so a run is bitwise
 * repeatable. */

/* Adds the products of one element (T = float) or one vector (T = floatv) at index i to the
 * plain partial sums acc[], and the non-finite probe of g and a to *probe (when checked). */
#define BLOOPCL_DEFINE_DOTS_AT(T, SFX, LOAD)                                                   \
    void bloopcl_dots_at##SFX(global const float *g, global const float *a,                    \
                             global const float *m_cur, global const float *q_cur, size_t i,  \
                             float w, int has_ema, int has_aux_ema, int check, T *acc,        \
                             T *probe)                                                         \
    {                                                                                          \
        T gi = LOAD(g, i);                                                                     \
        T ai = LOAD(a, i);                                                                     \
        if (check)                                                                             \
            *probe += bloopcl_probe##SFX(gi, ai);                                              \
        acc[BLOOPCL_DOT_MAIN_MAIN] += gi * gi;                                                 \
        if (has_ema) {                                                                         \
            T mi = bloopcl_ema##SFX(LOAD(m_cur, i), gi, w);                                    \
            acc[BLOOPCL_DOT_EMA_AUX] += mi * ai;                                               \
            acc[BLOOPCL_DOT_EMA_EMA] += mi * mi;                                               \
            acc[BLOOPCL_DOT_AUX_AUX] += ai * ai;                                               \
        }                                                                                      \
        if (has_aux_ema) {                                                                     \
            T qi = bloopcl_ema##SFX(LOAD(q_cur, i), ai, w);                                    \
            acc[BLOOPCL_DOT_AUXEMA_MAIN] += qi * gi;                                           \
            acc[BLOOPCL_DOT_AUXEMA_AUXEMA] += qi * qi;                                         \
        }                                                                                      \
    }
BLOOPCL_DEFINE_DOTS_AT(floatv, _v, BLOOPCL_LOADV)
BLOOPCL_DEFINE_DOTS_AT(float, , BLOOPCL_LOAD1)

/* One launch serves up to BLOOPCL_SLOTS ranges (layout.h); every range of a launch lies in
 * the same state buffers m_cur (q_cur). Work-group k of the launch writes partial slot
 * partial_base + k of each dot. */
kernel void bloopcl_fused_dots(BLOOPCL_SLOT_PARAMS(global const float *, g),
                               BLOOPCL_SLOT_PARAMS(global const float *, a),
                               global const float *m_cur, global const float *q_cur,
                               global const ulong *table, uint launch, uint num_slots, float w,
                               int has_ema, int has_aux_ema, int check_finite,
                               global int *flags, global float *partials,
                               ulong partial_stride, ulong partial_base, local float *scratch)
{
    size_t lid = get_local_id(0);
    size_t size = get_local_size(0);
    float w_step = flags[BLOOPCL_FLAG_INITIALIZED] ? w : 1.0f;
    global const float *g_slots[BLOOPCL_SLOTS] = BLOOPCL_SLOT_TABLE(g);
    global const float *a_slots[BLOOPCL_SLOTS] = BLOOPCL_SLOT_TABLE(a);
    bloopcl_slot slot = bloopcl_find_slot(table, launch, num_slots);
    global const float *gp = g_slots[slot.index] + slot.g_off;
    global const float *ap = a_slots[slot.index] + slot.a_off;
    global const float *mc = m_cur + slot.s_off, *qc = q_cur + slot.s_off;

    floatv sum_v[BLOOPCL_NUM_DOTS], carry_v[BLOOPCL_NUM_DOTS], part_v[BLOOPCL_NUM_DOTS];
    float sum[BLOOPCL_NUM_DOTS], carry[BLOOPCL_NUM_DOTS], part[BLOOPCL_NUM_DOTS];
    for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k) {
        sum_v[k] = carry_v[k] = (floatv)(0.0f);
        sum[k] = carry[k] = 0.0f;
    }
    floatv probe_v = (floatv)(0.0f);
    float probe = 0.0f;
    bloopcl_range r = bloopcl_slot_range(&slot);
    size_t i = r.begin;
    /* Blocks of BLOOPCL_BLOCK vectors are summed plainly, then folded into the Kahan sums: a
     * Kahan step is four dependent additions, which per element would make a core wait on
     * latency instead of memory; per block it costs little, and the error stays within
     * (BLOOPCL_BLOCK - 1) u of each block plus Kahan's 2u overall. */
    for (; i + (BLOOPCL_BLOCK - 1) * r.step + BLOOPCL_VECTOR <= r.end;
         i += BLOOPCL_BLOCK * r.step) {
        for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
            part_v[k] = (floatv)(0.0f);
        for (int b = 0; b < BLOOPCL_BLOCK; ++b)
            bloopcl_dots_at_v(gp, ap, mc, qc, i + b * r.step, w_step, has_ema, has_aux_ema,
                              check_finite, part_v, &probe_v);
        for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
            bloopcl_kahan_add_v(&sum_v[k], &carry_v[k], part_v[k]);
    }
    for (; i + BLOOPCL_VECTOR <= r.end; i += r.step) {
        for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
            part_v[k] = (floatv)(0.0f);
        bloopcl_dots_at_v(gp, ap, mc, qc, i, w_step, has_ema, has_aux_ema, check_finite, part_v,
                          &probe_v);
        for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
            bloopcl_kahan_add_v(&sum_v[k], &carry_v[k], part_v[k]);
    }
    for (; i < r.end; ++i) {
        for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
            part[k] = 0.0f;
        bloopcl_dots_at(gp, ap, mc, qc, i, w_step, has_ema, has_aux_ema, check_finite, part,
                        &probe);
        for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
            bloopcl_kahan_add(&sum[k], &carry[k], part[k]);
    }
    if (isnan(BLOOPCL_LANE_SUM(probe_v) + probe))
        flags[BLOOPCL_FLAG_NONFINITE] = 1;  /* every writer stores the same value: no race */

    /* the compensated value of a Kahan sum is sum - carry */
    for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
        scratch[k * size + lid] = BLOOPCL_LANE_SUM(sum_v[k] - carry_v[k]) + (sum[k] - carry[k]);
    bloopcl_reduce_rows(scratch, lid, size);
    if (lid == 0) {
        size_t slot_index = (size_t)partial_base + get_group_id(0);
        for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
            partials[k * partial_stride + slot_index] = scratch[k * size];
    }
}
