/* finalize.cl - turns the partial dot products into the scalars of this step, on the device
 * (no host round trip): one work-group sums the partials in a fixed order (Kahan per work-item,
 * then a fixed tree), then work-item 0 computes
 *     r   = <m,a> / (<m,m> + eps)         (dynamic barrier: r <- min(r, 1/lambda), lambda > 0)
 *     r_q = <q,g> / (<q,q> + eps)         (PCGrad)
 * decides whether the step is accepted (no non-finite input, or policy "propagate"), and
 * updates the device flags for the next step. */
kernel void bloopcl_finalize(global const float *partials, ulong slots, int dots_mask,
                             global float *scalars, global int *flags,
                             int method, int skip_nonfinite,
                             float w, float lambda, float eps, float scale, float cap,
                             local float *scratch)
{
    size_t lid = get_local_id(0);
    size_t size = get_local_size(0);
    for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k) {
        float sum = 0.0f, carry = 0.0f;
        if (dots_mask & (1 << k)) {
            for (size_t j = lid; j < slots; j += size)
                bloopcl_kahan_add(&sum, &carry, partials[k * slots + j]);
        }
        scratch[k * size + lid] = sum;
    }
    bloopcl_reduce_rows(scratch, lid, size);
    if (lid != 0)
        return;

    float dot[BLOOPCL_NUM_DOTS];
    for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
        dot[k] = scratch[k * size];
    int has_ema = (dots_mask & (1 << BLOOPCL_DOT_EMA_EMA)) != 0;
    int has_aux_ema = (dots_mask & (1 << BLOOPCL_DOT_AUXEMA_AUXEMA)) != 0;

    float ratio_raw = has_ema ? dot[BLOOPCL_DOT_EMA_AUX] / (dot[BLOOPCL_DOT_EMA_EMA] + eps) : 0.0f;
    float ratio = ratio_raw;
    if (method == BLOOPCL_KERNEL_DYNAMIC_BARRIER && lambda > 0.0f)
        ratio = bloopcl_min_cap(ratio_raw, cap);  /* cap = 1/lambda, divided on the host */
    float aux_ratio = has_aux_ema
        ? dot[BLOOPCL_DOT_AUXEMA_MAIN] / (dot[BLOOPCL_DOT_AUXEMA_AUXEMA] + eps) : 0.0f;

    int accepted = !(skip_nonfinite && flags[BLOOPCL_FLAG_NONFINITE]);
    scalars[BLOOPCL_SCALAR_ACCEPTED] = accepted ? 1.0f : 0.0f;
    scalars[BLOOPCL_SCALAR_RATIO] = ratio;
    scalars[BLOOPCL_SCALAR_RATIO_RAW] = ratio_raw;
    scalars[BLOOPCL_SCALAR_AUX_RATIO] = aux_ratio;
    scalars[BLOOPCL_SCALAR_SCALE] = scale;
    scalars[BLOOPCL_SCALAR_EMA_WEIGHT] = flags[BLOOPCL_FLAG_INITIALIZED] ? w : 1.0f;
    for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
        scalars[BLOOPCL_SCALAR_DOTS + k] = dot[k];

    flags[BLOOPCL_FLAG_BACKUP_INITIALIZED] = flags[BLOOPCL_FLAG_INITIALIZED];
    flags[BLOOPCL_FLAG_BACKUP_ACCEPTED] = flags[BLOOPCL_FLAG_ACCEPTED];
    flags[BLOOPCL_FLAG_NONFINITE] = 0;
    flags[BLOOPCL_FLAG_ACCEPTED] = accepted;
    if (accepted)
        flags[BLOOPCL_FLAG_INITIALIZED] = 1;
}
