/* fused_dots.cl - pass 1 of the fused backend: compute the updated EMA(s) on the fly (nothing
 * is written) and accumulate every dot product the method needs in one read of g, a, m (q).
 *
 * Each work-item sums blocks of BLOOPCL_BLOCK vectors plainly and accumulates the block sums
 * with Kahan compensation (per vector lane), sums its lanes
 * pairwise, then the work-group reduces in a fixed tree and writes one partial per dot; the
 * finalize kernel sums the partials in a fixed order. Elements are shared out by
 * bloopcl_my_range (common.cl); the geometry is fixed per device, so a run is bitwise
 * repeatable.
 *
 * fp32's range. A product x y of floats overflows once |x y| > FLT_MAX (|x| ~ 1.8e19 for a
 * square) and loses precision below 2^-126 (|x| < ~1e-19: subnormal, down to 0); a sum of
 * products can overflow although r, a ratio of two sums, is an ordinary number. So each dot
 * is kept at three scales, exact powers of two, so that the three are the same sum wherever
 * they do not overflow or underflow (bloopcl_scaled_dot in common.cl):
 *   mid  the plain sum, as it always was: what every step on normal data uses, bit for bit;
 *   lo   each factor times 2^86 (products times 2^172): a product of two subnormals
 *        (>= 2^-298) becomes >= 2^-126, normal, so no product is lost; overflows (harmlessly:
 *        mid is then used) once the sum passes 2^-44;
 *   hi   each factor times 2^-86 (products times 2^-172): n FLT_MAX^2 2^-172 < FLT_MAX for
 *        n < 2^44, so no sum of finite inputs overflows.
 * lo rides along in the one read (ALU only: the kernel is bound by memory). hi needs a second
 * read of a work-item's elements, made only where its mid sums overflowed: finite inputs of
 * 1.8e19 and more, never a normal step. A work-item that needs neither has exact stand-ins:
 * hi = mid 2^-172 (that mid is finite, so what this rounds away is below 2^-126 2^172 = 2^46
 * where it matters: only beside a total beyond 2^128), and lo as computed. A work-group whose
 * work-items needed none of it (or whose mid total overflowed) writes those stand-ins without
 * a second tree; otherwise it reduces lo and hi as it reduces mid and sets
 * BLOOPCL_FLAG_RESCUED. The finalize kernel chooses per dot (finalize.cl). */

/* Adds the products of one element (T = float) or one vector (T = floatv) at index i, with
 * each factor multiplied by scale0 (and, when `both`, by scale1), to the plain partial sums
 * acc0[] (acc1[]), and the non-finite probe of g and a to *probe (when checked). scale0 = 1
 * computes exactly the plain products. */
#define BLOOPCL_DEFINE_DOTS_AT(T, SFX, LOAD)                                                   \
    void bloopcl_products##SFX(T gi, T ai, T mi, T qi, float scale, int has_ema,              \
                               int has_aux_ema, T *acc)                                        \
    {                                                                                          \
        T gs = gi * scale, as = ai * scale, ms = mi * scale, qs = qi * scale;                  \
        acc[BLOOPCL_DOT_MAIN_MAIN] += gs * gs;                                                 \
        if (has_ema) {                                                                         \
            acc[BLOOPCL_DOT_EMA_AUX] += ms * as;                                               \
            acc[BLOOPCL_DOT_EMA_EMA] += ms * ms;                                               \
            acc[BLOOPCL_DOT_AUX_AUX] += as * as;                                               \
        }                                                                                      \
        if (has_aux_ema) {                                                                     \
            acc[BLOOPCL_DOT_AUXEMA_MAIN] += qs * gs;                                           \
            acc[BLOOPCL_DOT_AUXEMA_AUXEMA] += qs * qs;                                         \
        }                                                                                      \
    }                                                                                          \
    void bloopcl_dots_at##SFX(const bloopcl_dot_inputs *in, size_t i, int check, int both,    \
                             float scale0, float scale1, T *acc0, T *acc1, T *probe)          \
    {                                                                                          \
        T gi = bloopcl_load##SFX(in->in.g, i, in->in.g_type, in->in.g_scale);                  \
        T ai = bloopcl_load##SFX(in->in.a, i, in->in.a_type, in->in.a_scale);                  \
        if (check)                                                                             \
            *probe += bloopcl_probe##SFX(gi, ai);                                              \
        T mi = in->has_ema ? bloopcl_ema##SFX(LOAD(in->m, i), gi, in->w) : (T)(0.0f);          \
        T qi = in->has_aux_ema ? bloopcl_ema##SFX(LOAD(in->q, i), ai, in->w) : (T)(0.0f);      \
        bloopcl_products##SFX(gi, ai, mi, qi, scale0, in->has_ema, in->has_aux_ema, acc0);    \
        if (both)                                                                              \
            bloopcl_products##SFX(gi, ai, mi, qi, scale1, in->has_ema, in->has_aux_ema, acc1);\
    }

/* What the dots of one range are taken from (the pointers already at the range's start). */
typedef struct bloopcl_dot_inputs {
    bloopcl_inputs in;
    global const float *m, *q;
    float w;
    int has_ema, has_aux_ema;
} bloopcl_dot_inputs;

BLOOPCL_DEFINE_DOTS_AT(floatv, _v, BLOOPCL_LOADV)
BLOOPCL_DEFINE_DOTS_AT(float, , BLOOPCL_LOAD1)

/* Every dot over this work-item's elements [begin, end) (visited begin, begin + step, ...:
 * bloopcl_range; its fields are passed apart, since a pointer to the range would keep an
 * intrinsic in the code that Oclgrind cannot run), factors scaled by scale0 into out0[] and, when
 * `both`, by scale1 into out1[] (one read for both); *probe_out: the sum of the probes. */
void bloopcl_walk(const bloopcl_dot_inputs *in, size_t begin, size_t end, size_t step,
                  int check, int both,
                  float scale0, float scale1, float *out0, float *out1, float *probe_out)
{
    floatv sum_v[2][BLOOPCL_NUM_DOTS], carry_v[2][BLOOPCL_NUM_DOTS], part_v[2][BLOOPCL_NUM_DOTS];
    float sum[2][BLOOPCL_NUM_DOTS], carry[2][BLOOPCL_NUM_DOTS], part[2][BLOOPCL_NUM_DOTS];
    int sets = both ? 2 : 1;
    for (int s = 0; s < 2; ++s)
        for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k) {
            sum_v[s][k] = carry_v[s][k] = (floatv)(0.0f);
            sum[s][k] = carry[s][k] = 0.0f;
        }
    floatv probe_v = (floatv)(0.0f);
    float probe = 0.0f;
    size_t i = begin;
    /* Blocks of BLOOPCL_BLOCK vectors are summed plainly, then folded into the Kahan sums: a
     * Kahan step is four dependent additions, which per element would make a core wait on
     * latency instead of memory; per block it costs little, and the error stays within
     * (BLOOPCL_BLOCK - 1) u of each block plus Kahan's 2u overall. */
    for (; i + (BLOOPCL_BLOCK - 1) * step + BLOOPCL_VECTOR <= end;
         i += BLOOPCL_BLOCK * step) {
        for (int s = 0; s < sets; ++s)
            for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
                part_v[s][k] = (floatv)(0.0f);
        for (int b = 0; b < BLOOPCL_BLOCK; ++b)
            bloopcl_dots_at_v(in, i + b * step, check, both, scale0, scale1, part_v[0],
                              part_v[1], &probe_v);
        for (int s = 0; s < sets; ++s)
            for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
                bloopcl_kahan_add_v(&sum_v[s][k], &carry_v[s][k], part_v[s][k]);
    }
    for (; i + BLOOPCL_VECTOR <= end; i += step) {
        for (int s = 0; s < sets; ++s)
            for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
                part_v[s][k] = (floatv)(0.0f);
        bloopcl_dots_at_v(in, i, check, both, scale0, scale1, part_v[0], part_v[1], &probe_v);
        for (int s = 0; s < sets; ++s)
            for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
                bloopcl_kahan_add_v(&sum_v[s][k], &carry_v[s][k], part_v[s][k]);
    }
    for (; i < end; ++i) {
        for (int s = 0; s < sets; ++s)
            for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
                part[s][k] = 0.0f;
        bloopcl_dots_at(in, i, check, both, scale0, scale1, part[0], part[1], &probe);
        for (int s = 0; s < sets; ++s)
            for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
                bloopcl_kahan_add(&sum[s][k], &carry[s][k], part[s][k]);
    }
    /* the compensated value of a Kahan sum is sum - carry */
    for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k) {
        out0[k] = BLOOPCL_LANE_SUM(sum_v[0][k] - carry_v[0][k]) + (sum[0][k] - carry[0][k]);
        if (both)
            out1[k] = BLOOPCL_LANE_SUM(sum_v[1][k] - carry_v[1][k]) + (sum[1][k] - carry[1][k]);
    }
    *probe_out = BLOOPCL_LANE_SUM(probe_v) + probe;
}

/* The tree sum of one value per work-item and dot (all work-items read the totals). */
void bloopcl_group_totals(local float *scratch, size_t lid, size_t size, const float *mine,
                          float *totals)
{
    for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
        scratch[k * size + lid] = mine[k];
    bloopcl_reduce_rows(scratch, lid, size);
    for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
        totals[k] = scratch[k * size];
    barrier(CLK_LOCAL_MEM_FENCE);  /* scratch may be written again */
}

/* One launch serves up to BLOOPCL_SLOTS ranges (layout.h); every range of a launch lies in
 * the same state buffers m_cur (q_cur). Work-group k of the launch writes partial slot
 * partial_base + k of each row (layout.h: BLOOPCL_PARTIAL_ROWS). */
kernel void bloopcl_fused_dots(BLOOPCL_SLOT_PARAMS(global const uchar *, g),
                               BLOOPCL_SLOT_PARAMS(global const uchar *, a),
                               global const float *m_cur, global const float *q_cur,
                               global const ulong *table, uint launch, uint num_slots, float w,
                               int has_ema, int has_aux_ema, int check_finite,
                               global int *flags, global float *partials,
                               ulong partial_stride, ulong partial_base, local float *scratch,
                               float inv_scale_g, float inv_scale_a, int scales_on_device)
{
    local int group_rescued;
    size_t lid = get_local_id(0);
    size_t size = get_local_size(0);
    if (lid == 0)
        group_rescued = 0;
    float w_step = flags[BLOOPCL_FLAG_INITIALIZED] ? w : 1.0f;
    global const uchar *g_slots[BLOOPCL_SLOTS] = BLOOPCL_SLOT_TABLE(g);
    global const uchar *a_slots[BLOOPCL_SLOTS] = BLOOPCL_SLOT_TABLE(a);
    bloopcl_slot slot = bloopcl_find_slot(table, launch, num_slots);
    bloopcl_dot_inputs in;
    bloopcl_slot_inputs(
        &in.in, g_slots[slot.index], a_slots[slot.index], &slot,
        bloopcl_inv_scale(flags, BLOOPCL_FLAG_INV_SCALE_G, inv_scale_g, scales_on_device),
        bloopcl_inv_scale(flags, BLOOPCL_FLAG_INV_SCALE_A, inv_scale_a, scales_on_device));
    in.m = m_cur + slot.s_off;
    in.q = q_cur + slot.s_off;
    in.w = w_step;
    in.has_ema = has_ema;
    in.has_aux_ema = has_aux_ema;
    bloopcl_range r = bloopcl_slot_range(&slot);

    float mid[BLOOPCL_NUM_DOTS], lo[BLOOPCL_NUM_DOTS], hi[BLOOPCL_NUM_DOTS], probe;
    bloopcl_walk(&in, r.begin, r.end, r.step, check_finite, 1, 1.0f, BLOOPCL_SCALE_UP, mid, lo,
                 &probe);
    int nonfinite_input = isnan(probe);
    if (nonfinite_input)
        flags[BLOOPCL_FLAG_NONFINITE] = 1;  /* every writer stores the same value: no race */
    int overflow = 0, tiny = 0;
    for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k) {
        overflow |= !isfinite(mid[k]);
        tiny |= bloopcl_tiny_sum(mid[k], lo[k]);
    }
    if (overflow && !nonfinite_input) {  /* a skipped step needs no second read */
        float unused[BLOOPCL_NUM_DOTS];
        bloopcl_walk(&in, r.begin, r.end, r.step, 0, 0, BLOOPCL_SCALE_DOWN, 0.0f, hi, unused, &probe);
    } else {
        for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
            hi[k] = ldexp(mid[k], -2 * BLOOPCL_SCALE_SHIFT);
    }
    barrier(CLK_LOCAL_MEM_FENCE);  /* group_rescued is cleared */
    if (overflow || tiny)
        atomic_or(&group_rescued, 1);

    float mid_total[BLOOPCL_NUM_DOTS], lo_total[BLOOPCL_NUM_DOTS], hi_total[BLOOPCL_NUM_DOTS];
    bloopcl_group_totals(scratch, lid, size, mid, mid_total);  /* its barriers publish the flag */
    int rescued = group_rescued;
    for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
        rescued |= !isfinite(mid_total[k]);  /* finite work-items, overflowing total */
    if (rescued) {  /* uniform over the group */
        bloopcl_group_totals(scratch, lid, size, lo, lo_total);
        bloopcl_group_totals(scratch, lid, size, hi, hi_total);
    } else {
        for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k) {
            lo_total[k] = ldexp(mid_total[k], 2 * BLOOPCL_SCALE_SHIFT);
            hi_total[k] = ldexp(mid_total[k], -2 * BLOOPCL_SCALE_SHIFT);
        }
    }
    if (lid == 0) {
        size_t slot_index = (size_t)partial_base + get_group_id(0);
        for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k) {
            partials[k * partial_stride + slot_index] = mid_total[k];
            partials[(BLOOPCL_ROWS_LO + k) * partial_stride + slot_index] = lo_total[k];
            partials[(BLOOPCL_ROWS_HI + k) * partial_stride + slot_index] = hi_total[k];
        }
        if (rescued)
            flags[BLOOPCL_FLAG_RESCUED] = 1;  /* the same value from every writer */
    }
}
