/* common.cl - helpers shared by every kernel (OpenCL C 1.2).
 *
 * Contraction of a*b+c into fma is switched off so that the element-wise results (the EMA in
 * particular) are bit-identical to the CPU reference, which is compiled the same way. */
#pragma OPENCL FP_CONTRACT OFF

/* Element loops run over vectors of BLOOPCL_VECTOR floats (a build option). On CPUs it is the
 * device's preferred float width (1, 2, 4, 8 or 16: 8 on AVX2, 16 on AVX-512): each work-item
 * streams one contiguous chunk with vector loads, which is what a CPU core does best, and the
 * lanes give independent Kahan chains to hide their latency. On GPUs it is 1: the lanes are
 * the work-items themselves, and neighbouring work-items read neighbouring elements
 * (coalesced). floatv is the vector type; the _v functions below work on it, the plain ones
 * on single floats (chunk tails). Lane sums are pairwise in a fixed order (repeatable). */
#ifndef BLOOPCL_VECTOR
#define BLOOPCL_VECTOR 1
#endif
#if BLOOPCL_VECTOR != 1 && !defined(BLOOPCL_CONTIGUOUS)
#error "BLOOPCL_VECTOR > 1 needs BLOOPCL_CONTIGUOUS (the grid-stride shape walks single floats)"
#endif
/* Vectors summed plainly before a Kahan step in the fused dot products (fused_dots.cl). */
#define BLOOPCL_BLOCK 8
#define BLOOPCL_LANE_SUM2(v) ((v).s0 + (v).s1)
#define BLOOPCL_LANE_SUM4(v) (BLOOPCL_LANE_SUM2((v).lo) + BLOOPCL_LANE_SUM2((v).hi))
#define BLOOPCL_LANE_SUM8(v) (BLOOPCL_LANE_SUM4((v).lo) + BLOOPCL_LANE_SUM4((v).hi))
#if BLOOPCL_VECTOR == 1
typedef float floatv;
#define BLOOPCL_LOADV(p, i) ((p)[i])
#define BLOOPCL_STOREV(v, p, i) ((p)[i] = (v))
typedef uint uintv;
typedef ushort ushortv;
#define BLOOPCL_LOADV_HALF(p, i) vload_half(0, (p) + (i))
#define BLOOPCL_STOREV_HALF(v, p, i) vstore_half_rte((v), 0, (p) + (i))
#define BLOOPCL_CONVERT_UINTV(x) convert_uint(x)
#define BLOOPCL_CONVERT_USHORTV(x) convert_ushort(x)
#define BLOOPCL_AS_FLOATV(x) as_float(x)
#define BLOOPCL_AS_UINTV(x) as_uint(x)
#define BLOOPCL_ANYV(c) (c)
#define BLOOPCL_LANE_SUM(v) (v)
#elif BLOOPCL_VECTOR == 2
typedef float2 floatv;
#define BLOOPCL_LOADV(p, i) vload2(0, (p) + (i))
#define BLOOPCL_STOREV(v, p, i) vstore2((v), 0, (p) + (i))
typedef uint2 uintv;
typedef ushort2 ushortv;
#define BLOOPCL_LOADV_HALF(p, i) vload_half2(0, (p) + (i))
#define BLOOPCL_STOREV_HALF(v, p, i) vstore_half2_rte((v), 0, (p) + (i))
#define BLOOPCL_CONVERT_UINTV(x) convert_uint2(x)
#define BLOOPCL_CONVERT_USHORTV(x) convert_ushort2(x)
#define BLOOPCL_AS_FLOATV(x) as_float2(x)
#define BLOOPCL_AS_UINTV(x) as_uint2(x)
#define BLOOPCL_ANYV(c) any(c)
#define BLOOPCL_LANE_SUM(v) BLOOPCL_LANE_SUM2(v)
#elif BLOOPCL_VECTOR == 4
typedef float4 floatv;
#define BLOOPCL_LOADV(p, i) vload4(0, (p) + (i))
#define BLOOPCL_STOREV(v, p, i) vstore4((v), 0, (p) + (i))
typedef uint4 uintv;
typedef ushort4 ushortv;
#define BLOOPCL_LOADV_HALF(p, i) vload_half4(0, (p) + (i))
#define BLOOPCL_STOREV_HALF(v, p, i) vstore_half4_rte((v), 0, (p) + (i))
#define BLOOPCL_CONVERT_UINTV(x) convert_uint4(x)
#define BLOOPCL_CONVERT_USHORTV(x) convert_ushort4(x)
#define BLOOPCL_AS_FLOATV(x) as_float4(x)
#define BLOOPCL_AS_UINTV(x) as_uint4(x)
#define BLOOPCL_ANYV(c) any(c)
#define BLOOPCL_LANE_SUM(v) BLOOPCL_LANE_SUM4(v)
#elif BLOOPCL_VECTOR == 8
typedef float8 floatv;
#define BLOOPCL_LOADV(p, i) vload8(0, (p) + (i))
#define BLOOPCL_STOREV(v, p, i) vstore8((v), 0, (p) + (i))
typedef uint8 uintv;
typedef ushort8 ushortv;
#define BLOOPCL_LOADV_HALF(p, i) vload_half8(0, (p) + (i))
#define BLOOPCL_STOREV_HALF(v, p, i) vstore_half8_rte((v), 0, (p) + (i))
#define BLOOPCL_CONVERT_UINTV(x) convert_uint8(x)
#define BLOOPCL_CONVERT_USHORTV(x) convert_ushort8(x)
#define BLOOPCL_AS_FLOATV(x) as_float8(x)
#define BLOOPCL_AS_UINTV(x) as_uint8(x)
#define BLOOPCL_ANYV(c) any(c)
#define BLOOPCL_LANE_SUM(v) BLOOPCL_LANE_SUM8(v)
#elif BLOOPCL_VECTOR == 16
typedef float16 floatv;
#define BLOOPCL_LOADV(p, i) vload16(0, (p) + (i))
#define BLOOPCL_STOREV(v, p, i) vstore16((v), 0, (p) + (i))
typedef uint16 uintv;
typedef ushort16 ushortv;
#define BLOOPCL_LOADV_HALF(p, i) vload_half16(0, (p) + (i))
#define BLOOPCL_STOREV_HALF(v, p, i) vstore_half16_rte((v), 0, (p) + (i))
#define BLOOPCL_CONVERT_UINTV(x) convert_uint16(x)
#define BLOOPCL_CONVERT_USHORTV(x) convert_ushort16(x)
#define BLOOPCL_AS_FLOATV(x) as_float16(x)
#define BLOOPCL_AS_UINTV(x) as_uint16(x)
#define BLOOPCL_ANYV(c) any(c)
#define BLOOPCL_LANE_SUM(v) (BLOOPCL_LANE_SUM8((v).lo) + BLOOPCL_LANE_SUM8((v).hi))
#else
#error "BLOOPCL_VECTOR must be 1, 2, 4, 8 or 16"
#endif
#define BLOOPCL_LOAD1(p, i) ((p)[i])
#define BLOOPCL_STORE1(v, p, i) ((p)[i] = (v))
#define BLOOPCL_LOAD1_HALF(p, i) vload_half(0, (p) + (i))
#define BLOOPCL_STORE1_HALF(v, p, i) vstore_half_rte((v), 0, (p) + (i))

/* Element-wise rules, written once and instantiated for float and floatv:
 *   ema       m' = m + w (g - m); w = 1 means "no EMA": m' = g exactly, whatever m held
 *   min_zero  min(x, 0), propagating NaN like jnp.minimum (fmin would drop it)
 *   probe     g*0 + a*0: 0 for finite g and a, NaN as soon as either is NaN or infinite;
 *             summed over a chunk it flags non-finite inputs without a branch per element
 *   kahan_add sum + x with the lost low part carried in *carry; once the sum is infinite or
 *             NaN there is no low part (Inf - Inf would turn a correct Inf into NaN), so the
 *             carry is dropped and IEEE arithmetic decides, as in the double reference */
#define BLOOPCL_DEFINE_ELEMENTWISE(T, SFX)                                                     \
    T bloopcl_ema##SFX(T m, T g, float w)                                                    \
    {                                                                                          \
        return (w == 1.0f) ? g : m + w * (g - m);                                              \
    }                                                                                          \
    T bloopcl_probe##SFX(T g, T a)                                                           \
    {                                                                                          \
        return g * 0.0f + a * 0.0f;                                                            \
    }                                                                                          \
    T bloopcl_min_zero##SFX(T x)                                                             \
    {                                                                                          \
        return select(x, (T)(0.0f), x > (T)(0.0f));                                            \
    }                                                                                          \
    void bloopcl_kahan_add##SFX(T *sum, T *carry, T x)                                       \
    {                                                                                          \
        T y = x - *carry;                                                                      \
        T t = *sum + y;                                                                        \
        *carry = select((T)(0.0f), (t - *sum) - y, isfinite(t));                               \
        *sum = t;                                                                              \
    }
BLOOPCL_DEFINE_ELEMENTWISE(float, )
BLOOPCL_DEFINE_ELEMENTWISE(floatv, _v)

/* min(x, cap) that propagates NaN in x. */
float bloopcl_min_cap(float x, float cap)
{
    return (x > cap) ? cap : x;
}

/* Exact power-of-two scaling of the dot products (fused_dots.cl, finalize.cl): each factor
 * times 2^(+-86), each product times 2^(+-172). A sum whose plain value is below
 * BLOOPCL_TINY may have lost products to underflow (|x y| < 2^-126 keeps fewer than 24 bits)
 * unless its scaled value is 0 (then every product was exactly 0); above it, the n products'
 * losses (2^-150 each at most) are below n 2^-90 of the sum. */
#define BLOOPCL_SCALE_SHIFT 86
#define BLOOPCL_SCALE_UP 0x1p86f
#define BLOOPCL_SCALE_DOWN 0x1p-86f
#define BLOOPCL_TINY 0x1p-60f

int bloopcl_tiny_sum(float plain, float scaled_up)
{
    return fabs(plain) < BLOOPCL_TINY && scaled_up != 0.0f;
}

/* Multi-range launches (layout.h): the range a work-group serves, and its place in it. */
#ifndef BLOOPCL_SLOTS
#define BLOOPCL_SLOTS 16  /* the host always passes it */
#endif
typedef struct bloopcl_slot {
    uint index;             /* which of the launch's BLOOPCL_SLOTS buffer arguments */
    size_t g_off, a_off, d_off, s_off, count;
    size_t item, items;     /* this work-item among the work-items serving the range */
    int g_type, a_type, d_type; /* BLOOPCL_KERNEL_F32, _F16, _BF16 */
} bloopcl_slot;

/* The table holds BLOOPCL_SLOTS rows per launch; this is launch `launch`, with `num_slots`
 * ranges. Work-groups are handed to the ranges in order, so the range of this group is the last one
 * whose first group is not after it (at most BLOOPCL_SLOTS comparisons, uniform per group). */
bloopcl_slot bloopcl_find_slot(global const ulong *table, uint launch, uint num_slots)
{
    size_t group = get_group_id(0);
    table += (size_t)launch * BLOOPCL_SLOTS * BLOOPCL_SLOT_WORDS;
    uint s = 0;
    while (s + 1 < num_slots &&
           group >= table[(s + 1) * BLOOPCL_SLOT_WORDS + BLOOPCL_SLOT_FIRST_GROUP])
        ++s;
    global const ulong *row = table + s * BLOOPCL_SLOT_WORDS;
    bloopcl_slot slot;
    slot.index = s;
    slot.g_off = row[BLOOPCL_SLOT_G_OFFSET];
    slot.a_off = row[BLOOPCL_SLOT_A_OFFSET];
    slot.d_off = row[BLOOPCL_SLOT_D_OFFSET];
    slot.s_off = row[BLOOPCL_SLOT_STATE_OFFSET];
    slot.count = row[BLOOPCL_SLOT_COUNT];
    slot.item = (group - row[BLOOPCL_SLOT_FIRST_GROUP]) * get_local_size(0) + get_local_id(0);
    slot.items = row[BLOOPCL_SLOT_GROUPS] * get_local_size(0);
    uint types = (uint)row[BLOOPCL_SLOT_DTYPES], mask = (1u << BLOOPCL_DTYPE_BITS) - 1u;
    slot.g_type = (int)(types & mask);
    slot.a_type = (int)((types >> BLOOPCL_DTYPE_BITS) & mask);
    slot.d_type = (int)((types >> (2 * BLOOPCL_DTYPE_BITS)) & mask);
    return slot;
}

/* The elements [begin, end) of its range a work-item owns, visited begin, begin + step, ...
 * The number of work-items per range is a fixed function of the layout, so every reduction
 * happens in the same order on every run.
 *  BLOOPCL_CONTIGUOUS (CPUs): one contiguous chunk per work-item, a multiple of the vector
 *    width long, walked with step BLOOPCL_VECTOR;
 *  otherwise (GPUs): a grid-stride loop over single elements (neighbours read neighbours). */
typedef struct bloopcl_range {
    size_t begin, end, step;
} bloopcl_range;

bloopcl_range bloopcl_slot_range(const bloopcl_slot *slot)
{
    bloopcl_range r;
#ifdef BLOOPCL_CONTIGUOUS
    size_t chunk = (slot->count + slot->items - 1) / slot->items;
    chunk = (chunk + BLOOPCL_VECTOR - 1) / BLOOPCL_VECTOR * BLOOPCL_VECTOR;
    r.begin = min(slot->count, slot->item * chunk);
    r.end = min(slot->count, r.begin + chunk);
    r.step = BLOOPCL_VECTOR;
#else
    r.begin = slot->item;
    r.end = slot->count;
    r.step = slot->items;
#endif
    return r;
}

/* Kernel parameters for one buffer per slot, and the private table that indexes them, for
 * BLOOPCL_SLOTS = 8, 16 or 32 (a build option). */
#define BLOOPCL_PARAMS_8(T, n, a, b, c, d, e, f, g, h)                                         \
    T n##a, T n##b, T n##c, T n##d, T n##e, T n##f, T n##g, T n##h
#define BLOOPCL_NAMES_8(n, a, b, c, d, e, f, g, h) n##a, n##b, n##c, n##d, n##e, n##f, n##g, n##h
#define BLOOPCL_PARAMS_0_7(T, n) BLOOPCL_PARAMS_8(T, n, 0, 1, 2, 3, 4, 5, 6, 7)
#define BLOOPCL_PARAMS_8_15(T, n) BLOOPCL_PARAMS_8(T, n, 8, 9, 10, 11, 12, 13, 14, 15)
#define BLOOPCL_PARAMS_16_31(T, n)                                                             \
    BLOOPCL_PARAMS_8(T, n, 16, 17, 18, 19, 20, 21, 22, 23),                                    \
    BLOOPCL_PARAMS_8(T, n, 24, 25, 26, 27, 28, 29, 30, 31)
#define BLOOPCL_NAMES_0_7(n) BLOOPCL_NAMES_8(n, 0, 1, 2, 3, 4, 5, 6, 7)
#define BLOOPCL_NAMES_8_15(n) BLOOPCL_NAMES_8(n, 8, 9, 10, 11, 12, 13, 14, 15)
#define BLOOPCL_NAMES_16_31(n)                                                                 \
    BLOOPCL_NAMES_8(n, 16, 17, 18, 19, 20, 21, 22, 23),                                        \
    BLOOPCL_NAMES_8(n, 24, 25, 26, 27, 28, 29, 30, 31)
#if BLOOPCL_SLOTS == 8
#define BLOOPCL_SLOT_PARAMS(T, n) BLOOPCL_PARAMS_0_7(T, n)
#define BLOOPCL_SLOT_TABLE(n) {BLOOPCL_NAMES_0_7(n)}
#elif BLOOPCL_SLOTS == 16
#define BLOOPCL_SLOT_PARAMS(T, n) BLOOPCL_PARAMS_0_7(T, n), BLOOPCL_PARAMS_8_15(T, n)
#define BLOOPCL_SLOT_TABLE(n) {BLOOPCL_NAMES_0_7(n), BLOOPCL_NAMES_8_15(n)}
#elif BLOOPCL_SLOTS == 32
#define BLOOPCL_SLOT_PARAMS(T, n)                                                              \
    BLOOPCL_PARAMS_0_7(T, n), BLOOPCL_PARAMS_8_15(T, n), BLOOPCL_PARAMS_16_31(T, n)
#define BLOOPCL_SLOT_TABLE(n) {BLOOPCL_NAMES_0_7(n), BLOOPCL_NAMES_8_15(n), BLOOPCL_NAMES_16_31(n)}
#else
#error "BLOOPCL_SLOTS must be 8, 16 or 32"
#endif

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

/* The kernels' invariants, guarded where the compiler can see them: exact IEEE arithmetic
 * (NaN/Inf detection, the bit-exact EMA; the host refuses the other math options). */
#ifdef __FAST_RELAXED_MATH__
#error "bloopcl kernels must not be built with -cl-fast-relaxed-math"
#endif
