/* aux.cl - several auxiliary gradients a_1 .. a_k with weights lambda_i (bloopcl_step_aux).
 *
 *   d = s (g + sum_i lambda_i (a_i - r_i m')),   r_i = <m', a_i> / (<m', m'> + eps)
 *     = s (g + A - R m'),  A = sum_i lambda_i a_i,  R = sum_i lambda_i r_i
 *
 * so the step is the one-gradient step with a = A, lambda = 1 and r = R. Before it, one
 * accumulate launch per gradient (per 8-32 ranges) adds lambda_i a_i into A (fp32, in the
 * combiner) and sums the gradient's own dots <m, a_i>, <g, a_i> and <a_i, a_i> per
 * work-group, with m the EMA before this step; <m', a_i> = <m, a_i> + w (<g, a_i> - <m, a_i>)
 * (m' = m + w (g - m) is linear). After the step's finalize, bloopcl_aux_finalize forms each
 * r_i (the dynamic barrier clips each at 1/lambda_i), R, and the per-gradient diagnostics;
 * pass 2 then reads R. These per-gradient sums are plain compensated fp32 (the single-gradient
 * step's rescue from overflow does not apply: an infinite r_i skips the step as out of
 * range). */

#define BLOOPCL_AUX_ROWS 3           /* per gradient: <m,a_i>, <g,a_i>, <a_i,a_i> */
#define BLOOPCL_AUX_MA 0
#define BLOOPCL_AUX_GA 1
#define BLOOPCL_AUX_AA 2

/* One element (T = float) or one vector (T = floatv): A <- A + lambda a (A <- lambda a for
 * the first gradient) and the three products into sums (Kahan). */
#define BLOOPCL_DEFINE_ACCUMULATE_AT(T, SFX, LOAD, STORE)                                      \
    void bloopcl_accumulate_at##SFX(const bloopcl_inputs *in, global const float *m,          \
                                    global float *sum_a, size_t i, float lambda, int first,   \
                                    int has_ema, T *sum, T *carry)                            \
    {                                                                                          \
        T gi = bloopcl_load##SFX(in->g, i, in->g_type, in->g_scale);                           \
        T ai = bloopcl_load##SFX(in->a, i, in->a_type, in->a_scale);                           \
        T mi = has_ema ? LOAD(m, i) : (T)(0.0f);                                               \
        T weighted = lambda * ai;                                                              \
        STORE(first ? weighted : LOAD(sum_a, i) + weighted, sum_a, i);                         \
        bloopcl_kahan_add##SFX(&sum[BLOOPCL_AUX_MA], &carry[BLOOPCL_AUX_MA], mi * ai);         \
        bloopcl_kahan_add##SFX(&sum[BLOOPCL_AUX_GA], &carry[BLOOPCL_AUX_GA], gi * ai);         \
        bloopcl_kahan_add##SFX(&sum[BLOOPCL_AUX_AA], &carry[BLOOPCL_AUX_AA], ai * ai);         \
    }
BLOOPCL_DEFINE_ACCUMULATE_AT(floatv, _v, BLOOPCL_LOADV, BLOOPCL_STOREV)
BLOOPCL_DEFINE_ACCUMULATE_AT(float, , BLOOPCL_LOAD1, BLOOPCL_STORE1)

/* The tree sum of `rows` values per work-item (a power-of-two group); work-item 0 gets them. */
void bloopcl_aux_group_sums(local float *scratch, size_t lid, size_t size, const float *mine,
                            int rows, float *totals)
{
    for (int k = 0; k < rows; ++k)
        scratch[k * size + lid] = mine[k];
    for (size_t stride = size / 2; stride > 0; stride /= 2) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < stride)
            for (int k = 0; k < rows; ++k)
                scratch[k * size + lid] += scratch[k * size + lid + stride];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int k = 0; k < rows; ++k)
        totals[k] = scratch[k * size];
    barrier(CLK_LOCAL_MEM_FENCE);  /* scratch may be written again */
}

/* One launch per 8-32 ranges of gradient `aux` (its own plan: g, a_i, and A in d's place).
 * Work-group j writes partial slot partial_base + j of rows aux * BLOOPCL_AUX_ROWS + k. */
kernel void bloopcl_aux_accumulate(BLOOPCL_SLOT_PARAMS(global const uchar *, g),
                                   BLOOPCL_SLOT_PARAMS(global const uchar *, a),
                                   BLOOPCL_SLOT_PARAMS(global uchar *, sum_a),
                                   global const float *m_cur, global const ulong *table,
                                   uint launch, uint num_slots, float lambda, int first,
                                   int has_ema, uint aux, global float *partials,
                                   ulong partial_stride, ulong partial_base,
                                   local float *scratch, float inv_scale_g, float inv_scale_a)
{
    global const uchar *g_slots[BLOOPCL_SLOTS] = BLOOPCL_SLOT_TABLE(g);
    global const uchar *a_slots[BLOOPCL_SLOTS] = BLOOPCL_SLOT_TABLE(a);
    global uchar *s_slots[BLOOPCL_SLOTS] = BLOOPCL_SLOT_TABLE(sum_a);
    bloopcl_slot slot = bloopcl_find_slot(table, launch, num_slots);
    bloopcl_inputs in;
    bloopcl_slot_inputs(&in, g_slots[slot.index], a_slots[slot.index], &slot, inv_scale_g,
                        inv_scale_a);
    /* A is fp32 (the host checks d's place holds f32 segments of the combiner's own) */
    global float *sp = (global float *)s_slots[slot.index] + slot.d_off;
    global const float *m = m_cur + slot.s_off;
    floatv sum_v[BLOOPCL_AUX_ROWS], carry_v[BLOOPCL_AUX_ROWS];
    float sum[BLOOPCL_AUX_ROWS], carry[BLOOPCL_AUX_ROWS];
    for (int k = 0; k < BLOOPCL_AUX_ROWS; ++k) {
        sum_v[k] = carry_v[k] = (floatv)(0.0f);
        sum[k] = carry[k] = 0.0f;
    }
    bloopcl_range r = bloopcl_slot_range(&slot);
    size_t i = r.begin;
    for (; i + BLOOPCL_VECTOR <= r.end; i += r.step)
        bloopcl_accumulate_at_v(&in, m, sp, i, lambda, first, has_ema, sum_v, carry_v);
    for (; i < r.end; ++i)
        bloopcl_accumulate_at(&in, m, sp, i, lambda, first, has_ema, sum, carry);
    float mine[BLOOPCL_AUX_ROWS], totals[BLOOPCL_AUX_ROWS];
    for (int k = 0; k < BLOOPCL_AUX_ROWS; ++k)  /* compensated values: sum - carry */
        mine[k] = BLOOPCL_LANE_SUM(sum_v[k] - carry_v[k]) + (sum[k] - carry[k]);
    size_t lid = get_local_id(0);
    bloopcl_aux_group_sums(scratch, lid, get_local_size(0), mine, BLOOPCL_AUX_ROWS, totals);
    if (lid == 0)
        for (int k = 0; k < BLOOPCL_AUX_ROWS; ++k)
            partials[(aux * BLOOPCL_AUX_ROWS + k) * partial_stride + partial_base +
                     get_group_id(0)] = totals[k];
}

/* Per-gradient outputs (aux_outputs[aux * BLOOPCL_AUX_OUTPUTS + field]). */
#define BLOOPCL_AUX_OUT_RATIO 0      /* r_i used (after the dynamic barrier's clip) */
#define BLOOPCL_AUX_OUT_RATIO_RAW 1  /* <m', a_i> / (<m', m'> + eps) */
#define BLOOPCL_AUX_OUT_DOT 2        /* <m', a_i> */
#define BLOOPCL_AUX_OUT_NORM_SQ 3    /* <a_i, a_i> */
#define BLOOPCL_AUX_OUTPUTS 4

/* One work-group, after the step's finalize: sums every gradient's partials (each work-item
 * a Kahan sum over a stride of the slots, then the tree), then work-item 0 forms r_i and R,
 * writes R where pass 2 reads r, and rejects the step if R is not finite (policy SKIP),
 * undoing what finalize's acceptance set. lambdas and caps (1/lambda_i, divided on the host)
 * hold the k weights, groups the work-groups of each gradient's plan (its partial slots: the
 * plans of differently laid out gradients differ; the row stride is `slots`). */
kernel void bloopcl_aux_finalize(global const float *partials, ulong slots, uint8 groups,
                                 uint count, float8 lambdas, float8 caps, int method, float eps,
                                 int skip_nonfinite, global float *scalars, global int *flags,
                                 global float *aux_outputs, local float *scratch)
{
    size_t lid = get_local_id(0), size = get_local_size(0);
    float totals[8 * BLOOPCL_AUX_ROWS];
    uint used[8];
    vstore8(groups, 0, used);
    for (uint row = 0; row < count * BLOOPCL_AUX_ROWS; ++row) {
        float sum = 0.0f, carry = 0.0f;  /* gradient row / 3 wrote its plan's groups only */
        for (size_t j = lid; j < used[row / BLOOPCL_AUX_ROWS]; j += size)
            bloopcl_kahan_add(&sum, &carry, partials[row * slots + j]);
        float mine = sum - carry;
        bloopcl_aux_group_sums(scratch, lid, size, &mine, 1, &totals[row]);
    }
    if (lid != 0)
        return;
    float lambda[8], cap[8];
    vstore8(lambdas, 0, lambda);
    vstore8(caps, 0, cap);
    float w = scalars[BLOOPCL_SCALAR_EMA_WEIGHT];
    float norm = scalars[BLOOPCL_SCALAR_DOTS + BLOOPCL_DOT_EMA_EMA];
    int has_ema = method != BLOOPCL_KERNEL_MIXED;
    float big_r = 0.0f, big_r_raw = 0.0f;
    for (uint i = 0; i < count; ++i) {
        float ma = totals[i * BLOOPCL_AUX_ROWS + BLOOPCL_AUX_MA];
        float ga = totals[i * BLOOPCL_AUX_ROWS + BLOOPCL_AUX_GA];
        float dot = (w == 1.0f) ? ga : ma + w * (ga - ma);  /* <m', a_i>, as m' = ema(m, g) */
        float raw = has_ema ? dot / (norm + eps) : 0.0f;
        if (skip_nonfinite && dot == 0.0f && norm == 0.0f && eps == 0.0f)
            raw = 0.0f;  /* m' = 0: nothing to project out (as the one-gradient step) */
        float used = raw;
        if (method == BLOOPCL_KERNEL_DYNAMIC_BARRIER && lambda[i] > 0.0f)
            used = bloopcl_min_cap(raw, cap[i]);
        big_r += lambda[i] * used;
        big_r_raw += lambda[i] * raw;
        global float *out = aux_outputs + i * BLOOPCL_AUX_OUTPUTS;
        out[BLOOPCL_AUX_OUT_RATIO] = used;
        out[BLOOPCL_AUX_OUT_RATIO_RAW] = raw;
        out[BLOOPCL_AUX_OUT_DOT] = has_ema ? dot : 0.0f;
        out[BLOOPCL_AUX_OUT_NORM_SQ] = totals[i * BLOOPCL_AUX_ROWS + BLOOPCL_AUX_AA];
    }
    scalars[BLOOPCL_SCALAR_RATIO] = big_r;
    scalars[BLOOPCL_SCALAR_RATIO_RAW] = big_r_raw;
    flags[BLOOPCL_FLAG_STEP_RATIO] = as_int(big_r);
    if (skip_nonfinite && flags[BLOOPCL_FLAG_ACCEPTED] && !isfinite(big_r)) {
        /* out of range after all: finalize's acceptance is undone */
        flags[BLOOPCL_FLAG_ACCEPTED] = 0;
        flags[BLOOPCL_FLAG_INITIALIZED] = flags[BLOOPCL_FLAG_BACKUP_INITIALIZED];
        flags[BLOOPCL_FLAG_OPT_STEPS] = flags[BLOOPCL_FLAG_BACKUP_OPT_STEPS];
        scalars[BLOOPCL_SCALAR_ACCEPTED] = 0.0f;
        scalars[BLOOPCL_SCALAR_REASON] = (float)BLOOPCL_REASON_OUT_OF_RANGE;
    }
}
