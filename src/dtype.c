/* dtype.c — the element types on the host, converted bit for bit as cl/dtype.cl converts them
 * on the device (the CPU reference and the tests rest on that):
 *   widening  every F16 and BF16 value is a float: exact; a NaN stays a NaN of the same sign
 *             with its payload in the upper mantissa bits and the quiet bit set;
 *   narrowing round to nearest, ties to even, on the bits; past the largest finite value
 *             (by half an ulp or more) an infinity; below the smallest subnormal (by more than
 *             half of it) a zero of the same sign; a NaN the quiet NaN of its sign and upper
 *             payload bits. */
#include "internal.h"

#include <string.h>

size_t bloopcl_dtype_size(bloopcl_dtype dtype)
{
    switch (dtype) {
    case BLOOPCL_DTYPE_F32: return 4;
    case BLOOPCL_DTYPE_F16:
    case BLOOPCL_DTYPE_BF16: return 2;
    default: return 0;
    }
}

const char *bloopcl_dtype_name(bloopcl_dtype dtype)
{
    switch (dtype) {
    case BLOOPCL_DTYPE_F32: return "f32";
    case BLOOPCL_DTYPE_F16: return "f16";
    case BLOOPCL_DTYPE_BF16: return "bf16";
    default: return "unknown";
    }
}

static uint32_t float_bits(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits;
}

static float bits_float(uint32_t bits)
{
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* value >> shift, rounded to nearest with ties to even (shift in 1..31). */
static uint32_t shift_right_even(uint32_t value, unsigned shift)
{
    uint32_t kept = value >> shift, rest = value & ((1u << shift) - 1u), half = 1u << (shift - 1);
    return kept + (rest > half || (rest == half && (kept & 1u)));
}

float bloopcl__bf16_to_float(uint16_t bits)
{
    return bits_float((uint32_t)bits << 16);
}

uint16_t bloopcl__float_to_bf16(float x)
{
    uint32_t u = float_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);  /* NaN: quiet, sign and upper payload kept */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

float bloopcl__f16_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
    if (exponent == 0x1f)  /* Inf, or NaN made quiet */
        return bits_float(sign | 0x7f800000u | (mantissa << 13) | (mantissa ? 0x400000u : 0u));
    if (exponent != 0)
        return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
    if (mantissa == 0)
        return bits_float(sign);
    /* subnormal: mantissa 2^-24, normalised into a float's exponent */
    unsigned shift = 0;
    while ((mantissa & 0x400u) == 0) {
        mantissa <<= 1;
        ++shift;
    }
    return bits_float(sign | ((113u - shift) << 23) | ((mantissa & 0x3ffu) << 13));
}

uint16_t bloopcl__float_to_f16(float x)
{
    uint32_t u = float_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t magnitude = u & 0x7fffffffu;
    if (magnitude > 0x7f800000u)  /* NaN: quiet, upper payload kept */
        return (uint16_t)(sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu));
    if (magnitude >= 0x477ff000u)  /* 65520 and above (Inf too): rounds past 65504 */
        return (uint16_t)(sign | 0x7c00u);
    if (magnitude >= 0x38800000u) {  /* 2^-14 and above: normal; a carry steps the exponent */
        uint32_t rebased = magnitude - (112u << 23);
        return (uint16_t)(sign | shift_right_even(rebased, 13));
    }
    /* subnormal or zero: units of 2^-24, from the 24-bit significand */
    unsigned exponent = magnitude >> 23;
    if (exponent < 101)  /* below 2^-26: less than half the smallest subnormal */
        return sign;
    uint32_t significand = (magnitude & 0x7fffffu) | 0x800000u;
    return (uint16_t)(sign | shift_right_even(significand, 126u - exponent));
}

float bloopcl__load_element(const void *array, bloopcl_dtype dtype, size_t i)
{
    uint16_t half;
    switch (dtype) {
    case BLOOPCL_DTYPE_F16:
        memcpy(&half, (const unsigned char *)array + 2 * i, sizeof half);
        return bloopcl__f16_to_float(half);
    case BLOOPCL_DTYPE_BF16:
        memcpy(&half, (const unsigned char *)array + 2 * i, sizeof half);
        return bloopcl__bf16_to_float(half);
    default: {
        float x;
        memcpy(&x, (const unsigned char *)array + 4 * i, sizeof x);
        return x;
    }
    }
}

void bloopcl__store_element(void *array, bloopcl_dtype dtype, size_t i, float x)
{
    uint16_t half;
    switch (dtype) {
    case BLOOPCL_DTYPE_F16:
        half = bloopcl__float_to_f16(x);
        memcpy((unsigned char *)array + 2 * i, &half, sizeof half);
        break;
    case BLOOPCL_DTYPE_BF16:
        half = bloopcl__float_to_bf16(x);
        memcpy((unsigned char *)array + 2 * i, &half, sizeof half);
        break;
    default:
        memcpy((unsigned char *)array + 4 * i, &x, sizeof x);
        break;
    }
}

bloopcl_status bloopcl_convert(const void *src, bloopcl_dtype src_dtype, void *dst,
                               bloopcl_dtype dst_dtype, size_t count)
{
    if (bloopcl_dtype_size(src_dtype) == 0 || bloopcl_dtype_size(dst_dtype) == 0)
        return BLOOPCL_ERR_INVALID_ARGUMENT;
    if (count > 0 && (src == NULL || dst == NULL))
        return BLOOPCL_ERR_NULL_ARGUMENT;
    /* element by element in order: in place works when the sizes match */
    for (size_t i = 0; i < count; ++i)
        bloopcl__store_element(dst, dst_dtype, i, bloopcl__load_element(src, src_dtype, i));
    return BLOOPCL_OK;
}
