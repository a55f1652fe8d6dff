/* common.cl - helpers shared by every kernel (OpenCL C 1.2).
 *
 * Contraction of a*b+c into fma is switched off so that the element-wise results (the EMA in
 * particular) are bit-identical to the CPU reference, which is compiled the same way. */
#pragma OPENCL FP_CONTRACT OFF

/* m' = m + w (g - m). w = 1 means "no EMA": m' = g exactly, whatever m held before. */
float bloopcl_ema(float m, float g, float w)
{
    return (w == 1.0f) ? g : m + w * (g - m);
}

/* min(x, 0) that propagates NaN like jnp.minimum (fmin would drop it). */
float bloopcl_min_zero(float x)
{
    return (x > 0.0f) ? 0.0f : x;
}

/* min(x, cap) that propagates NaN in x. */
float bloopcl_min_cap(float x, float cap)
{
    return (x > cap) ? cap : x;
}

/* How a kernel's work-items share the `count` elements of a piece. The launch geometry is fixed
 * per device (never per n), so every reduction happens in the same order on every run.
 *  BLOOPCL_CONTIGUOUS (CPU devices): each work-group owns one contiguous block (one core
 *    streams through its own memory) and its work-items step through the block by the local
 *    size, so consecutive lanes read consecutive elements and the vectoriser emits vector loads;
 *  otherwise (GPUs): a grid-stride loop, so neighbouring work-items read neighbouring elements
 *    (coalesced). */
typedef struct bloopcl_range {
    size_t begin, end, step;
} bloopcl_range;

bloopcl_range bloopcl_my_range(size_t count)
{
    bloopcl_range r;
#ifdef BLOOPCL_CONTIGUOUS
    size_t width = get_local_size(0);
    size_t groups = get_num_groups(0);
    size_t block = (count + groups - 1) / groups;
    block = (block + width - 1) / width * width;
    size_t first = get_group_id(0) * block;
    r.begin = first + get_local_id(0);
    r.end = min(count, first + block);
    r.step = width;
#else
    r.begin = get_global_id(0);
    r.end = count;
    r.step = get_global_size(0);
#endif
    return r;
}

/* Kahan-compensated accumulation: sum + x with the lost low part carried in *carry. Once the
 * sum is infinite or NaN there is no low part (Inf - Inf would turn a correct Inf into NaN),
 * so the carry is dropped and IEEE arithmetic decides, as in the double reference. */
void bloopcl_kahan_add(float *sum, float *carry, float x)
{
    float y = x - *carry;
    float t = *sum + y;
    *carry = isfinite(t) ? (t - *sum) - y : 0.0f;
    *sum = t;
}

/* Tree reduction of BLOOPCL_NUM_DOTS rows of `scratch` (row k holds one value per work-item);
 * the local size must be a power of two. The order is fixed, so results are repeatable. */
void bloopcl_reduce_rows(local float *scratch, size_t lid, size_t size)
{
    for (size_t stride = size / 2; stride > 0; stride /= 2) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < stride) {
            for (int k = 0; k < BLOOPCL_NUM_DOTS; ++k)
                scratch[k * size + lid] += scratch[k * size + lid + stride];
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}
