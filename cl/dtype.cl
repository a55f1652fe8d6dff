/* dtype.cl - reading and writing g, a and d in their own element types (layout.h):
 *   F32   float, as it is;
 *   F16   IEEE binary16 through vload_half / vstore_half_rte (core OpenCL 1.2: no cl_khr_fp16
 *         is needed to convert, only to compute in half, which nothing here does);
 *   BF16  bfloat16, the upper 16 bits of a float: widening is exact (the bits shifted up);
 *         narrowing rounds to nearest, ties to even, on the bits (below).
 * Everything is computed in fp32: a value is widened as it is read, multiplied by its inverse
 * loss scale (exact when the scale is 1), and d is narrowed once, as it is written. The host
 * converts by the same rules (src/dtype.c), so the CPU reference sees exactly these values.
 * The type of a range is uniform over its work-groups (one slot), so the branches below cost
 * no divergence; the pointers are bytes, offset by the range's own element size. */

/* log2 of the element size of a type: its byte offsets are element offsets shifted by it. */
uint bloopcl_dtype_shift(int type)
{
    return type == BLOOPCL_KERNEL_F32 ? 2u : 1u;
}

/* F16 narrowing is vstore_half_rte's, except for NaN, whose bits drivers choose differently
 * (PoCL 3.1: the payload kept by its vector stores, 0x7fff from its scalar one): a NaN is
 * written as the quiet NaN of its sign and upper payload bits, as src/dtype.c writes it.
 * float -> bfloat16 bits, round to nearest even: add 0x7fff plus the lowest kept bit and
 * truncate; a carry out of the mantissa steps the exponent, which is the rounding (up to
 * infinity beyond the largest bfloat16). NaN is kept a NaN with its sign (truncation could
 * clear every kept mantissa bit and make it an infinity): the quiet bit is set instead. */
#define BLOOPCL_DEFINE_DTYPE_IO(T, U, US, SFX, LOAD, STORE, LOAD_HALF, STORE_HALF, TO_U,      \
                                TO_US, AS_F, AS_U, ANY)                                        \
    U bloopcl_f16_nan_bits##SFX(T x)                                                           \
    {                                                                                          \
        U u = AS_U(x);                                                                         \
        return ((u >> 16) & (U)0x8000u) | (U)0x7e00u | ((u >> 13) & (U)0x3ffu);                \
    }                                                                                          \
    US bloopcl_bf16_bits##SFX(T x)                                                             \
    {                                                                                          \
        U u = AS_U(x);                                                                         \
        U rounded = (u + (U)0x7fffu + ((u >> 16) & (U)1u)) >> 16;                              \
        U quiet = (u >> 16) | (U)0x40u;                                                        \
        return TO_US(select(rounded, quiet, isnan(x)));                                        \
    }                                                                                          \
    T bloopcl_load##SFX(global const uchar *p, size_t i, int type, float inv_scale)           \
    {                                                                                          \
        T x;                                                                                   \
        if (type == BLOOPCL_KERNEL_BF16)                                                       \
            x = AS_F(TO_U(LOAD((global const ushort *)p, i)) << 16);                           \
        else if (type == BLOOPCL_KERNEL_F16)                                                   \
            x = LOAD_HALF((global const half *)p, i);                                          \
        else                                                                                   \
            x = LOAD((global const float *)p, i);                                              \
        return x * inv_scale;                                                                  \
    }                                                                                          \
    void bloopcl_store##SFX(T x, global uchar *p, size_t i, int type)                         \
    {                                                                                          \
        if (type == BLOOPCL_KERNEL_BF16)                                                       \
            STORE(bloopcl_bf16_bits##SFX(x), (global ushort *)p, i);                           \
        else if (type == BLOOPCL_KERNEL_F16) {                                                 \
            STORE_HALF(x, (global half *)p, i);                                                \
            if (ANY(isnan(x))) { /* rare: the NaN bits by the host's rule, whatever the */    \
                global ushort *bits = (global ushort *)p; /* driver's vstore_half wrote */    \
                U fixed = select(TO_U(LOAD(bits, i)), bloopcl_f16_nan_bits##SFX(x), isnan(x)); \
                STORE(TO_US(fixed), bits, i);                                                  \
            }                                                                                  \
        } else                                                                                 \
            STORE(x, (global float *)p, i);                                                    \
    }
BLOOPCL_DEFINE_DTYPE_IO(floatv, uintv, ushortv, _v, BLOOPCL_LOADV, BLOOPCL_STOREV,
                        BLOOPCL_LOADV_HALF, BLOOPCL_STOREV_HALF, BLOOPCL_CONVERT_UINTV,
                        BLOOPCL_CONVERT_USHORTV, BLOOPCL_AS_FLOATV, BLOOPCL_AS_UINTV, BLOOPCL_ANYV)
BLOOPCL_DEFINE_DTYPE_IO(float, uint, ushort, , BLOOPCL_LOAD1, BLOOPCL_STORE1,
                        BLOOPCL_LOAD1_HALF, BLOOPCL_STORE1_HALF, convert_uint, convert_ushort,
                        as_float, as_uint, )

/* Where one range's g and a are read from: bytes, their element types, inverse loss scales. */
typedef struct bloopcl_inputs {
    global const uchar *g, *a;
    int g_type, a_type;
    float g_scale, a_scale;
} bloopcl_inputs;

/* The g and a of one range as a work-item of one slot reads them. Filled through a pointer:
 * a struct returned by value is a noalias sret argument, whose inlining leaves an intrinsic
 * (llvm.experimental.noalias.scope.decl) that Oclgrind cannot run. */
void bloopcl_slot_inputs(bloopcl_inputs *in, global const uchar *g, global const uchar *a,
                         const bloopcl_slot *slot, float g_scale, float a_scale)
{
    in->g = g + (slot->g_off << bloopcl_dtype_shift(slot->g_type));
    in->a = a + (slot->a_off << bloopcl_dtype_shift(slot->a_type));
    in->g_type = slot->g_type;
    in->a_type = slot->a_type;
    in->g_scale = g_scale;
    in->a_scale = a_scale;
}

/* The inverse loss scales of a step: the host's values, or the caller's device copies (in the
 * flags, as float bits: copied there by the host at the start of the step). */
float bloopcl_inv_scale(global const int *flags, int flag, float host_value, int on_device)
{
    return on_device ? as_float(flags[flag]) : host_value;
}
