/* finalize.cl - turns the partial dot products into the scalars of this step, on the device
 * (no host round trip): one work-group sums the partials in a fixed order (Kahan per work-item,
 * then a fixed tree), then work-item 0 computes
 *     r   = <m,a> / (<m,m> + eps)         (dynamic barrier: r <- min(r, 1/lambda), lambda > 0)
 *     r_q = <q,g> / (<q,q> + eps)         (PCGrad)
 * decides whether the step is accepted (no non-finite input, every coefficient of d finite,
 * or policy "propagate"), says why in BLOOPCL_SCALAR_REASON, and updates the device flags for
 * the next step.
 *
 * Range (fused backend, fused_dots.cl): each dot arrives at three scales. While no work-group
 * had to rescue anything (BLOOPCL_FLAG_RESCUED) and no plain total overflowed, only the plain
 * rows are read and everything is computed exactly as it always was. Otherwise each dot takes
 * the most precise of its totals that did not overflow: lo (times 2^172) where the plain total
 * is below BLOOPCL_TINY, else the plain one, else hi (times 2^-172); a ratio whose operands
 * are not both plain is formed in an extended exponent range (mantissa and exponent apart), so
 * r is right wherever fp32 represents it, and its dots are reported rounded to fp32 (beyond
 * FLT_MAX: infinite, as IEEE overflow rounds). r itself beyond FLT_MAX is out of range.
 *
 * CLBlast's dots are plain fp32 sums that cannot be rescaled: a dot that r depends on is
 * unreliable there when it is not finite, or nonzero and below 2^-100 (products may
 * have fallen into the subnormals), or when <m,m> + eps is 0 (0/0, or products of tiny values
 * that underflowed: the two cannot be told apart). The step is then out of range: reported,
 * never applied with a wrong r.
 *
 * 0/0: where m = 0 exactly and eps = 0 (known exactly on the fused backend), policy SKIP takes
 * r = 0: d = s (g + lambda a), nothing to project out. Policy PROPAGATE keeps IEEE's NaN. */

/* A value f 2^e (extended exponent range), f a float. */
typedef struct bloopcl_xf {
    float f;
    int e;
} bloopcl_xf;

/* The dot's total to use: the plain one unless it overflowed or may have underflowed. */
bloopcl_xf bloopcl_choose_total(float mid, float lo, float hi)
{
    bloopcl_xf x = {mid, 0};
    if (bloopcl_tiny_sum(mid, lo) && isfinite(lo))
        x = (bloopcl_xf){lo, -2 * BLOOPCL_SCALE_SHIFT};
    else if (!isfinite(mid) && isfinite(hi))
        x = (bloopcl_xf){hi, 2 * BLOOPCL_SCALE_SHIFT};
    return x;  /* none finite: a non-finite input (policy PROPAGATE); IEEE decides */
}

/* x / (y + eps) for y >= 0, eps >= 0, in the extended range, rounded once more to fp32. */
float bloopcl_xf_ratio(bloopcl_xf x, bloopcl_xf y, float eps)
{
    int ex, ey, ee;
    float fx = frexp(x.f, &ex), fy = frexp(y.f, &ey), fe = frexp(eps, &ee);
    ex += x.e;
    ey += y.e;
    /* the denominator at the exponent of its larger term (what the smaller loses there is
     * below fp32's precision of the sum) */
    float fd = fy + ldexp(fe, ee - ey);
    int ed = ey;
    if (fy == 0.0f || (fe != 0.0f && ee > ey)) {
        fd = fe + ldexp(fy, ey - ee);
        ed = ee;
    }
    if (fd == 0.0f)
        return fx / fd;  /* 0/0 or x/0, as IEEE says */
    return ldexp(fx / fd, ex - ed);  /* fx / fd in (1/4, 2): only ldexp can overflow */
}

/* r = x / (y + eps) from the chosen totals: plainly when both are plain (the same bits as
 * ever), else in the extended range. */
float bloopcl_ratio(bloopcl_xf x, bloopcl_xf y, float eps, int zero_over_zero_is_zero)
{
    float ratio = (x.e == 0 && y.e == 0) ? x.f / (y.f + eps) : bloopcl_xf_ratio(x, y, eps);
    if (zero_over_zero_is_zero && x.f == 0.0f && y.f == 0.0f && eps == 0.0f)
        ratio = 0.0f;
    return ratio;
}

/* A CLBlast dot that r depends on cannot be trusted (see above). At or above 2^-100, its n
 * products have lost at most n 2^-150 to underflow: below 2^-26 of it for n < 2^24. */
#define BLOOPCL_TINY_TOTAL 0x1p-100f
int bloopcl_unreliable_plain(float dot)
{
    return !isfinite(dot) || (dot != 0.0f && fabs(dot) < BLOOPCL_TINY_TOTAL);
}

/* Sums row `row0 + k` of the partials for every dot k in the mask; every work-item gets the
 * totals. */
void bloopcl_sum_rows(global const float *partials, ulong slots, int dots_mask, int row0,
                      local float *scratch, size_t lid, size_t size, float *totals)
{
    for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k) {
        float sum = 0.0f, carry = 0.0f;
        if (dots_mask & (1 << k)) {
            for (size_t j = lid; j < slots; j += size)
                bloopcl_kahan_add(&sum, &carry, partials[(row0 + k) * slots + j]);
        }
        scratch[k * size + lid] = sum;
    }
    bloopcl_reduce_rows(scratch, lid, size);
    for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
        totals[k] = scratch[k * size];
    barrier(CLK_LOCAL_MEM_FENCE);  /* scratch may be written again */
}

/* CLBlast's dots of g and a are of the stored values; the true ones carry the inverse loss
 * scales (the EMAs are already true: the EMA kernel scaled what it read). Exact for scale 1. */
void bloopcl_unscale_dots(float *dot, float g_scale, float a_scale)
{
    dot[BLOOPCL_DOT_EMA_AUX] *= a_scale;
    dot[BLOOPCL_DOT_AUX_AUX] = (dot[BLOOPCL_DOT_AUX_AUX] * a_scale) * a_scale;
    dot[BLOOPCL_DOT_AUXEMA_MAIN] *= g_scale;
    dot[BLOOPCL_DOT_MAIN_MAIN] = (dot[BLOOPCL_DOT_MAIN_MAIN] * g_scale) * g_scale;
}

/* Whether a dot needs its scaled totals: some work-group rescued one, or a plain total
 * overflowed although every partial was finite (fused backend only). */
int bloopcl_needs_rescue(int scaled_rows, int any_rescued, const float *mid)
{
    int rescue = scaled_rows && any_rescued;
    for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
        rescue |= scaled_rows && !isfinite(mid[k]);
    return rescue;
}

/* What the decision of a step is made from (besides its totals). */
typedef struct bloopcl_decision_inputs {
    int dots_mask, method, skip_nonfinite, optimize;
    float w, lambda, eps, scale, cap;
    float inv_scale_g, inv_scale_a;
    int scales_on_device;
} bloopcl_decision_inputs;

/* One work-item: r (and r_q) from the totals, acceptance, the scalars, and the device flags
 * for the next step. mid[] is unscaled here on CLBlast. */
void bloopcl_decide(float *mid, const float *lo, const float *hi, int rescue,
                    int nonfinite_input, const bloopcl_decision_inputs *in,
                    global float *scalars, global int *flags)
{
    int scaled_rows = (in->dots_mask & BLOOPCL_DOTS_MASK_SCALED_ROWS) != 0;
    float eps = in->eps;
    int skip_nonfinite = in->skip_nonfinite;
    if (!scaled_rows)  /* CLBlast */
        bloopcl_unscale_dots(
            mid, bloopcl_inv_scale(flags, BLOOPCL_FLAG_INV_SCALE_G, in->inv_scale_g,
                                   in->scales_on_device),
            bloopcl_inv_scale(flags, BLOOPCL_FLAG_INV_SCALE_A, in->inv_scale_a,
                              in->scales_on_device));

    bloopcl_xf dot[BLOOPCL_NUM_DOTS];
    for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
        dot[k] = rescue ? bloopcl_choose_total(mid[k], lo[k], hi[k]) : (bloopcl_xf){mid[k], 0};
    int has_ema = (in->dots_mask & (1 << BLOOPCL_DOT_EMA_EMA)) != 0;
    int has_aux_ema = (in->dots_mask & (1 << BLOOPCL_DOT_AUXEMA_AUXEMA)) != 0;

    float ratio_raw = has_ema ? bloopcl_ratio(dot[BLOOPCL_DOT_EMA_AUX],
                                              dot[BLOOPCL_DOT_EMA_EMA], eps, skip_nonfinite)
                              : 0.0f;
    float ratio = ratio_raw;
    if (in->method == BLOOPCL_KERNEL_DYNAMIC_BARRIER && in->lambda > 0.0f)
        ratio = bloopcl_min_cap(ratio_raw, in->cap);  /* cap = 1/lambda, divided on the host */
    float aux_ratio = has_aux_ema ? bloopcl_ratio(dot[BLOOPCL_DOT_AUXEMA_MAIN],
                                                  dot[BLOOPCL_DOT_AUXEMA_AUXEMA], eps,
                                                  skip_nonfinite)
                                  : 0.0f;

    /* The coefficients d is made of (PCGrad's are min(r, 0) and min(r_q, 0)) must be finite;
     * on CLBlast the dots behind them must be trustworthy too. */
    int pcgrad = in->method == BLOOPCL_KERNEL_PCGRAD;
    float r_used = pcgrad ? bloopcl_min_zero(ratio) : ratio;
    float r_q_used = pcgrad ? bloopcl_min_zero(aux_ratio) : 0.0f;
    int out_of_range = (has_ema && !isfinite(r_used)) || (has_aux_ema && !isfinite(r_q_used));
    if (!scaled_rows && has_ema)
        out_of_range |= bloopcl_unreliable_plain(mid[BLOOPCL_DOT_EMA_AUX]) ||
                        bloopcl_unreliable_plain(mid[BLOOPCL_DOT_EMA_EMA]) ||
                        mid[BLOOPCL_DOT_EMA_EMA] + eps == 0.0f;
    if (!scaled_rows && has_aux_ema)
        out_of_range |= bloopcl_unreliable_plain(mid[BLOOPCL_DOT_AUXEMA_MAIN]) ||
                        bloopcl_unreliable_plain(mid[BLOOPCL_DOT_AUXEMA_AUXEMA]) ||
                        mid[BLOOPCL_DOT_AUXEMA_AUXEMA] + eps == 0.0f;
    int reason = nonfinite_input ? BLOOPCL_REASON_NONFINITE_INPUT
               : out_of_range    ? BLOOPCL_REASON_OUT_OF_RANGE
                                 : BLOOPCL_REASON_NONE;
    int accepted = !(skip_nonfinite && reason != BLOOPCL_REASON_NONE);
    scalars[BLOOPCL_SCALAR_ACCEPTED] = accepted ? 1.0f : 0.0f;
    scalars[BLOOPCL_SCALAR_RATIO] = ratio;
    scalars[BLOOPCL_SCALAR_RATIO_RAW] = ratio_raw;
    scalars[BLOOPCL_SCALAR_AUX_RATIO] = aux_ratio;
    scalars[BLOOPCL_SCALAR_SCALE] = in->scale;
    scalars[BLOOPCL_SCALAR_EMA_WEIGHT] = flags[BLOOPCL_FLAG_INITIALIZED] ? in->w : 1.0f;
    for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)  /* plain totals as they are; others rounded */
        scalars[BLOOPCL_SCALAR_DOTS + k] = dot[k].e == 0 ? dot[k].f : ldexp(dot[k].f, dot[k].e);
    scalars[BLOOPCL_SCALAR_REASON] = (float)reason;

    flags[BLOOPCL_FLAG_STEP_SCALE] = as_int(in->scale);
    flags[BLOOPCL_FLAG_STEP_RATIO] = as_int(ratio);
    flags[BLOOPCL_FLAG_STEP_AUX_RATIO] = as_int(aux_ratio);
    flags[BLOOPCL_FLAG_STEP_EMA_WEIGHT] = as_int(scalars[BLOOPCL_SCALAR_EMA_WEIGHT]);

    flags[BLOOPCL_FLAG_BACKUP_INITIALIZED] = flags[BLOOPCL_FLAG_INITIALIZED];
    flags[BLOOPCL_FLAG_BACKUP_ACCEPTED] = flags[BLOOPCL_FLAG_ACCEPTED];
    flags[BLOOPCL_FLAG_BACKUP_OPT_STEPS] = flags[BLOOPCL_FLAG_OPT_STEPS];
    if (accepted && in->optimize)  /* t of this step's bias correction (pass 2 reads it) */
        flags[BLOOPCL_FLAG_OPT_STEPS] += 1;
    flags[BLOOPCL_FLAG_NONFINITE] = 0;
    flags[BLOOPCL_FLAG_RESCUED] = 0;
    flags[BLOOPCL_FLAG_ACCEPTED] = accepted;
    if (accepted)
        flags[BLOOPCL_FLAG_INITIALIZED] = 1;
}

/* Sums the partials into mid[] and, when `all_rows` or a rescue needs them, into lo[] and
 * hi[] (else left as they are); returns whether the dots need rescuing. */
int bloopcl_sum_partials_into(global const float *partials, ulong slots, int dots_mask,
                              int any_rescued, int all_rows, local float *scratch, size_t lid,
                              size_t size, float *mid, float *lo, float *hi)
{
    int scaled_rows = (dots_mask & BLOOPCL_DOTS_MASK_SCALED_ROWS) != 0;
    bloopcl_sum_rows(partials, slots, dots_mask, 0, scratch, lid, size, mid);
    int rescue = bloopcl_needs_rescue(scaled_rows, any_rescued, mid);
    if (scaled_rows && (rescue || all_rows)) {  /* uniform over the group */
        bloopcl_sum_rows(partials, slots, dots_mask, BLOOPCL_ROWS_LO, scratch, lid, size, lo);
        bloopcl_sum_rows(partials, slots, dots_mask, BLOOPCL_ROWS_HI, scratch, lid, size, hi);
    }
    return rescue;
}

#define BLOOPCL_DECISION_PARAMS                                                                \
    int method, int skip_nonfinite, int optimize, float w, float lambda, float eps,         \
        float scale, float cap, float inv_scale_g, float inv_scale_a, int scales_on_device
#define BLOOPCL_DECISION_INPUTS                                                                \
    {dots_mask, method, skip_nonfinite, optimize, w, lambda, eps, scale, cap, inv_scale_g,   \
     inv_scale_a, scales_on_device}

/* The whole step's finalize in one work-group: partials -> totals -> decision. */
kernel void bloopcl_finalize(global const float *partials, ulong slots, int dots_mask,
                             global float *scalars, global int *flags, local float *scratch,
                             BLOOPCL_DECISION_PARAMS)
{
    size_t lid = get_local_id(0);
    size_t size = get_local_size(0);
    int any_rescued = flags[BLOOPCL_FLAG_RESCUED];
    barrier(CLK_GLOBAL_MEM_FENCE);  /* every work-item has read it before work-item 0 resets it */
    float mid[BLOOPCL_NUM_DOTS], lo[BLOOPCL_NUM_DOTS], hi[BLOOPCL_NUM_DOTS];
    int rescue = bloopcl_sum_partials_into(partials, slots, dots_mask, any_rescued, 0, scratch,
                                           lid, size, mid, lo, hi);
    if (lid != 0)
        return;
    bloopcl_decision_inputs in = BLOOPCL_DECISION_INPUTS;
    bloopcl_decide(mid, lo, hi, rescue, flags[BLOOPCL_FLAG_NONFINITE] != 0, &in, scalars,
                   flags);
}

/* The first half of a split step (bloopcl_step_begin): this shard's totals, every row, summed
 * as bloopcl_finalize sums them (same work-group size), into totals[BLOOPCL_TOTALS]. */
kernel void bloopcl_sum_partials(global const float *partials, ulong slots, int dots_mask,
                                 global const int *flags, local float *scratch,
                                 global float *totals)
{
    size_t lid = get_local_id(0);
    size_t size = get_local_size(0);
    float mid[BLOOPCL_NUM_DOTS], lo[BLOOPCL_NUM_DOTS], hi[BLOOPCL_NUM_DOTS];
    for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
        lo[k] = hi[k] = 0.0f;
    bloopcl_sum_partials_into(partials, slots, dots_mask, 0, 1, scratch, lid, size, mid, lo, hi);
    if (lid != 0)
        return;
    for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k) {
        totals[BLOOPCL_TOTAL_MID + k] = mid[k];
        totals[BLOOPCL_TOTAL_LO + k] = lo[k];
        totals[BLOOPCL_TOTAL_HI + k] = hi[k];
    }
    totals[BLOOPCL_TOTAL_NONFINITE] = flags[BLOOPCL_FLAG_NONFINITE] != 0 ? 1.0f : 0.0f;
    totals[BLOOPCL_TOTAL_RESCUED] = flags[BLOOPCL_FLAG_RESCUED] != 0 ? 1.0f : 0.0f;
}

/* The second half's finalize (bloopcl_step_end), one work-item: the decision from the totals
 * of every shard added up, exactly as bloopcl_finalize decides from one device's. */
kernel void bloopcl_finalize_totals(global const float *totals, int dots_mask,
                                    global float *scalars, global int *flags,
                                    BLOOPCL_DECISION_PARAMS)
{
    int scaled_rows = (dots_mask & BLOOPCL_DOTS_MASK_SCALED_ROWS) != 0;
    float mid[BLOOPCL_NUM_DOTS], lo[BLOOPCL_NUM_DOTS], hi[BLOOPCL_NUM_DOTS];
    for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k) {
        int used = (dots_mask & (1 << k)) != 0;  /* unused dots are 0, as finalize sums them */
        mid[k] = used ? totals[BLOOPCL_TOTAL_MID + k] : 0.0f;
        lo[k] = used ? totals[BLOOPCL_TOTAL_LO + k] : 0.0f;
        hi[k] = used ? totals[BLOOPCL_TOTAL_HI + k] : 0.0f;
    }
    int rescue = bloopcl_needs_rescue(scaled_rows, totals[BLOOPCL_TOTAL_RESCUED] != 0.0f, mid);
    bloopcl_decision_inputs in = BLOOPCL_DECISION_INPUTS;
    bloopcl_decide(mid, lo, hi, rescue, totals[BLOOPCL_TOTAL_NONFINITE] != 0.0f, &in, scalars,
                   flags);
}
