/* test_dtypes.c — F16 and BF16 gradients and inverse loss scales.
 *
 *   1. The device's conversions (cl/dtype.cl, built here into a small program of its own, in
 *      the scalar and the vector forms) against the host's (src/dtype.c, bloopcl_convert):
 *      every 16-bit pattern widened, a million floats narrowed, bit for bit; closed forms.
 *   2. Every method with g, a and d in F32, F16 and BF16 (all 27 combinations for BLOOP; a
 *      mix of segment types in one tensor) against the typed CPU reference: the state bit for
 *      bit (element-wise fp32 from identical widened inputs), d within its type's rounding of
 *      the fp32 tolerance, r and the dots within the fp32 dot tolerance.
 *   3. Loss scaling: F16 gradients that only survive scaled, host and device scales
 *      bit-identical, overflow (stored Inf, Inf scale, finite value times a huge scale)
 *      skipped with the state untouched and the skip visible on the device.
 *   4. The gradient norm of the true (unscaled) gradient.
 *   5. Refused segments and options (state unchanged, message set); CLBlast with scales.
 *   6. bloopcl_convert's contract. */
#include "support.h"

#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F32 BLOOPCL_DTYPE_F32
#define F16 BLOOPCL_DTYPE_F16
#define BF16 BLOOPCL_DTYPE_BF16
#define PATTERNS 65536u

static uint32_t bits_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static void *xmalloc(size_t bytes)
{
    void *p = calloc(1, bytes ? bytes : 1);
    cr_assert_not_null(p);
    return p;
}

/* Host conversions of one element (bloopcl_convert is the oracle of the device kernels). */
static float host_widen(uint16_t bits, bloopcl_dtype type)
{
    float x;
    cr_assert_eq(bloopcl_convert(&bits, type, &x, F32, 1), BLOOPCL_OK);
    return x;
}

static uint16_t host_narrow(float x, bloopcl_dtype type)
{
    uint16_t bits;
    cr_assert_eq(bloopcl_convert(&x, F32, &bits, type, 1), BLOOPCL_OK);
    return bits;
}

/* x rounded into `type` and widened back: the value a d element of that type holds. */
static float round_to(float x, bloopcl_dtype type)
{
    return type == F32 ? x : host_widen(host_narrow(x, type), type);
}

/* --------------------------------------------------------------------------------------------
 * 1. Device conversions: cl/layout.h, cl/common.cl and cl/dtype.cl as the library embeds them,
 *    plus kernels that call bloopcl_load / bloopcl_store (and their _v forms) on every element.
 * ------------------------------------------------------------------------------------------ */
static const char conversion_kernels[] =
    "\nkernel void test_widen_v(global const uchar *in, int type, float inv_scale,\n"
    "                           global float *out)\n"
    "{\n"
    "    size_t i = get_global_id(0) * BLOOPCL_VECTOR;\n"
    "    bloopcl_store_v(bloopcl_load_v(in, i, type, inv_scale), (global uchar *)out, i,\n"
    "                    BLOOPCL_KERNEL_F32);\n"
    "}\n"
    "kernel void test_widen_1(global const uchar *in, int type, float inv_scale,\n"
    "                         global float *out)\n"
    "{\n"
    "    size_t i = get_global_id(0);\n"
    "    out[i] = bloopcl_load(in, i, type, inv_scale);\n"
    "}\n"
    "kernel void test_narrow_v(global const float *in, int type, global uchar *out)\n"
    "{\n"
    "    size_t i = get_global_id(0) * BLOOPCL_VECTOR;\n"
    "    bloopcl_store_v(BLOOPCL_LOADV(in, i), out, i, type);\n"
    "}\n"
    "kernel void test_narrow_1(global const float *in, int type, global uchar *out)\n"
    "{\n"
    "    size_t i = get_global_id(0);\n"
    "    bloopcl_store(in[i], out, i, type);\n"
    "}\n";

/* The two shapes the library builds (src/program.c): GPUs' grid-stride scalar loads, and the
 * CPUs' contiguous vectors (8: AVX2's width; the vector kernels then use vload_half8 etc.). */
typedef struct conversion_build {
    const char *options;
    size_t vector;
} conversion_build;

static const conversion_build builds[] = {
    {"-cl-std=CL1.2 -DBLOOPCL_VECTOR=1 -DBLOOPCL_SLOTS=8", 1},
    {"-cl-std=CL1.2 -DBLOOPCL_CONTIGUOUS -DBLOOPCL_VECTOR=8 -DBLOOPCL_SLOTS=8", 8},
};
#define NUM_BUILDS (sizeof builds / sizeof builds[0])

static char *slurp(const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/cl/%s", support_source_root(), name);
    return support_read_file(path, NULL);
}

static cl_device_id context_device(bloopcl_context *ctx)
{
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    cr_assert_eq(bloopcl_context_device_info(ctx, &info), BLOOPCL_OK);
    return info.device;
}

static cl_program build_conversions(bloopcl_context *ctx, const char *options)
{
    char *files[3] = {slurp("layout.h"), slurp("common.cl"), slurp("dtype.cl")};
    const char *sources[4] = {files[0], files[1], files[2], conversion_kernels};
    cl_int err;
    cl_program program = clCreateProgramWithSource(bloopcl_context_cl_context(ctx), 4, sources,
                                                   NULL, &err);
    cr_assert_eq(err, CL_SUCCESS);
    cl_device_id device = context_device(ctx);
    err = clBuildProgram(program, 1, &device, options, NULL, NULL);
    if (err != CL_SUCCESS) {
        static char log[16384];
        clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, sizeof log, log, NULL);
        cr_assert_fail("building the conversion kernels (%s): %d\n%s", options, err, log);
    }
    for (int i = 0; i < 3; ++i)
        free(files[i]);
    return program;
}

static cl_mem device_copy(bloopcl_context *ctx, const void *host, size_t bytes)
{
    cl_int err;
    cl_mem buffer = clCreateBuffer(bloopcl_context_cl_context(ctx), CL_MEM_READ_WRITE, bytes,
                                   NULL, &err);
    cr_assert_eq(err, CL_SUCCESS);
    if (host != NULL)
        cr_assert_eq(clEnqueueWriteBuffer(bloopcl_context_queue(ctx), buffer, CL_TRUE, 0, bytes,
                                          host, 0, NULL, NULL), CL_SUCCESS);
    return buffer;
}

static void read_bytes(bloopcl_context *ctx, cl_mem buffer, size_t offset, void *host,
                       size_t bytes)
{
    cr_assert_eq(clEnqueueReadBuffer(bloopcl_context_queue(ctx), buffer, CL_TRUE, offset, bytes,
                                     host, 0, NULL, NULL), CL_SUCCESS);
}

/* Runs conversion kernel `name` (arguments: in, type, [inv_scale,] out) over n elements,
 * n / vector work-items for the _v kernels. */
static void run_conversion(bloopcl_context *ctx, cl_program program, const char *name,
                           size_t vector, const void *in, size_t in_bytes, int type,
                           const float *inv_scale, void *out, size_t out_bytes, size_t n)
{
    cl_int err;
    cl_kernel kernel = clCreateKernel(program, name, &err);
    cr_assert_eq(err, CL_SUCCESS, "%s", name);
    cl_mem in_buffer = device_copy(ctx, in, in_bytes), out_buffer = device_copy(ctx, NULL,
                                                                                 out_bytes);
    cl_uint arg = 0;
    err = clSetKernelArg(kernel, arg++, sizeof in_buffer, &in_buffer);
    err |= clSetKernelArg(kernel, arg++, sizeof type, &type);
    if (inv_scale != NULL)
        err |= clSetKernelArg(kernel, arg++, sizeof *inv_scale, inv_scale);
    err |= clSetKernelArg(kernel, arg, sizeof out_buffer, &out_buffer);
    cr_assert_eq(err, CL_SUCCESS);
    bool vectors = strstr(name, "_v") != NULL;
    cr_assert_eq(n % vector, 0);
    size_t items = vectors ? n / vector : n;
    cr_assert_eq(clEnqueueNDRangeKernel(bloopcl_context_queue(ctx), kernel, 1, NULL, &items, NULL,
                                        0, NULL, NULL), CL_SUCCESS);
    read_bytes(ctx, out_buffer, 0, out, out_bytes);
    clReleaseMemObject(in_buffer);
    clReleaseMemObject(out_buffer);
    clReleaseKernel(kernel);
}

static void device_widen(bloopcl_context *ctx, cl_program program, size_t vector,
                         const char *kernel, const uint16_t *in, size_t n, bloopcl_dtype type,
                         float inv_scale, float *out)
{
    run_conversion(ctx, program, kernel, vector, in, n * sizeof *in, (int)type, &inv_scale, out,
                   n * sizeof *out, n);
}

static void device_narrow(bloopcl_context *ctx, cl_program program, size_t vector,
                          const char *kernel, const float *in, size_t n, bloopcl_dtype type,
                          uint16_t *out)
{
    run_conversion(ctx, program, kernel, vector, in, n * sizeof *in, (int)type, NULL, out,
                   n * sizeof *out, n);
}

/* Device widening of every pattern of `type` against the host's, bit for bit (NaNs too:
 * both make a signalling NaN quiet, sign and payload kept). With a scale: the fp32 product
 * of the widened value and the scale, as the reference forms it. */
static void expect_widening(const float *device, bloopcl_dtype type, float inv_scale,
                            const char *what)
{
    size_t mismatches = 0;
    for (uint32_t p = 0; p < PATTERNS; ++p) {
        float expected = host_widen((uint16_t)p, type) * inv_scale;
        if (bits_of(device[p]) != bits_of(expected) && mismatches++ < 5)
            cr_expect_fail("%s %s 0x%04x: device 0x%08x host 0x%08x", what,
                           bloopcl_dtype_name(type), p, bits_of(device[p]), bits_of(expected));
    }
    cr_expect_eq(mismatches, 0, "%s %s: %zu of 65536 patterns differ", what,
                 bloopcl_dtype_name(type), mismatches);
}

Test(dtypes, widening_every_pattern_device_as_host, .timeout = 120)
{
    bloopcl_context *ctx = support_context();
    uint16_t *patterns = xmalloc(PATTERNS * sizeof *patterns);
    float *out = xmalloc(PATTERNS * sizeof *out);
    for (uint32_t p = 0; p < PATTERNS; ++p)
        patterns[p] = (uint16_t)p;
    static const char *const kernels[] = {"test_widen_1", "test_widen_v"};
    static const bloopcl_dtype types[] = {F16, BF16};
    static const float scales[] = {1.0f, 0x1p-16f, 0.3f};
    for (size_t b = 0; b < NUM_BUILDS; ++b) {
        cl_program program = build_conversions(ctx, builds[b].options);
        for (size_t k = 0; k < 2; ++k)
            for (size_t t = 0; t < 2; ++t)
                for (size_t s = 0; s < 3; ++s) {
                    char what[160];
                    snprintf(what, sizeof what, "%s [%s] scale %g", kernels[k],
                             builds[b].options, (double)scales[s]);
                    device_widen(ctx, program, builds[b].vector, kernels[k], patterns, PATTERNS,
                                 types[t], scales[s], out);
                    expect_widening(out, types[t], scales[s], what);
                }
        clReleaseProgram(program);
    }
    free(patterns);
    free(out);
    bloopcl_context_destroy(ctx);
}

/* A deterministic 32-bit stream (xorshift32), for the random lower halves. */
static uint32_t next_random(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

/* Lower 16 bits that sit at or next to a rounding boundary: BF16 keeps the upper 16 bits
 * (0x8000 is its tie), F16's normal range keeps 10 mantissa bits (0x1000 is its tie, 0x2000
 * its last kept bit); the rest are all-zero and all-one tails. */
static const uint16_t lower_halves[] = {0x0000, 0x7fff, 0x8000, 0x8001, 0xffff, 0x0fff,
                                        0x1000, 0x1001, 0x2fff, 0x3000, 0x3001};
#define NUM_LOWER (sizeof lower_halves / sizeof lower_halves[0])
#define RANDOM_LOWER 3
#define F16_SUBNORMALS 1024u

/* The floats narrowed on the device: every upper half with each lower half above and a few
 * random ones (every exponent, both signs, Inf, NaNs with payloads, FLT_MAX's neighbours);
 * then every F16 subnormal midpoint k + 1/2 (in units of 2^-24) and its two fp32 neighbours
 * (the ties of F16's subnormal range, 2^-25 among them), rounded to even. Returns the count,
 * a multiple of 8. */
static size_t narrowing_inputs(float **out)
{
    size_t n = PATTERNS * (NUM_LOWER + RANDOM_LOWER) + 3 * F16_SUBNORMALS * 2;
    n = (n + 7) / 8 * 8;
    float *x = xmalloc(n * sizeof *x);
    size_t k = 0;
    uint32_t state = 0x9e3779b9u;
    for (uint32_t upper = 0; upper < PATTERNS; ++upper) {
        for (size_t l = 0; l < NUM_LOWER; ++l)
            x[k++] = float_of(upper << 16 | lower_halves[l]);
        for (int r = 0; r < RANDOM_LOWER; ++r)
            x[k++] = float_of(upper << 16 | (next_random(&state) & 0xffffu));
    }
    for (uint32_t m = 0; m < F16_SUBNORMALS; ++m)
        for (int sign = 0; sign < 2; ++sign) {
            float mid = (sign ? -1.0f : 1.0f) * ((float)m + 0.5f) * 0x1p-24f;
            x[k++] = mid;
            x[k++] = nextafterf(mid, 0.0f);
            x[k++] = nextafterf(mid, sign ? -INFINITY : INFINITY);
        }
    while (k < n)
        x[k++] = 0.0f;
    *out = x;
    return n;
}

/* Device narrowings against the host's, bit for bit, NaNs included: OpenCL leaves the NaN that
 * vstore_half_rte writes to the implementation (PoCL 3.1 writes 0x7fff with the sign from its
 * scalar store, the payload from its vector ones), so cl/dtype.cl writes NaN bits itself, by
 * the host's rule. */
static void expect_narrowing(const float *in, const uint16_t *device, size_t n,
                             bloopcl_dtype type, const char *what)
{
    size_t mismatches = 0;
    for (size_t i = 0; i < n; ++i) {
        uint16_t expected = host_narrow(in[i], type);
        if (device[i] != expected && mismatches++ < 5)
            cr_expect_fail("%s %s(0x%08x = %.9g): device 0x%04x host 0x%04x", what,
                           bloopcl_dtype_name(type), bits_of(in[i]), (double)in[i], device[i],
                           expected);
    }
    cr_expect_eq(mismatches, 0, "%s %s: %zu of %zu floats differ", what, bloopcl_dtype_name(type),
                 mismatches, n);
}

Test(dtypes, narrowing_device_as_host, .timeout = 120)
{
    bloopcl_context *ctx = support_context();
    float *in = NULL;
    size_t n = narrowing_inputs(&in);
    uint16_t *out = xmalloc(n * sizeof *out);
    static const char *const kernels[] = {"test_narrow_1", "test_narrow_v"};
    for (size_t b = 0; b < NUM_BUILDS; ++b) {
        cl_program program = build_conversions(ctx, builds[b].options);
        for (size_t k = 0; k < 2; ++k)
            for (bloopcl_dtype type = F16; type <= BF16; ++type) {
                char what[160];
                snprintf(what, sizeof what, "%s [%s]", kernels[k], builds[b].options);
                device_narrow(ctx, program, builds[b].vector, kernels[k], in, n, type, out);
                expect_narrowing(in, out, n, type, what);
            }
        clReleaseProgram(program);
    }
    free(in);
    free(out);
    bloopcl_context_destroy(ctx);
}

typedef struct narrowing_case {
    uint32_t input;     /* float bits */
    bloopcl_dtype type;
    uint16_t expected;
} narrowing_case;

/* Closed forms of round to nearest, ties to even, overflow and NaN. */
static const narrowing_case closed_forms[] = {
    {0x477fef00u, F16, 0x7bffu},  /* 65519: below the midpoint 65520 of 65504 and "65536" */
    {0x477ff000u, F16, 0x7c00u},  /* 65520: the tie rounds to even, which is past 65504: Inf */
    {0xc77ff000u, F16, 0xfc00u},  /* -65520: -Inf */
    {0x477fe000u, F16, 0x7bffu},  /* 65504, the largest half */
    {0x33000000u, F16, 0x0000u},  /* 2^-25: half the smallest subnormal, ties to even: 0 */
    {0x33000001u, F16, 0x0001u},  /* 2^-25 (1 + 2^-23): above the tie: 2^-24 */
    {0xb3000000u, F16, 0x8000u},  /* -2^-25: -0 */
    {0x33c00000u, F16, 0x0002u},  /* 3 * 2^-25: tie between 1 and 2 units: 2 (even) */
    {0x33800000u, F16, 0x0001u},  /* 2^-24, the smallest subnormal */
    {0x38800000u, F16, 0x0400u},  /* 2^-14, the smallest normal */
    {0x387fc000u, F16, 0x03ffu},  /* 2^-14 - 2^-24, the largest subnormal */
    {0x3f801000u, F16, 0x3c00u},  /* 1 + 2^-11: tie, 1 is even */
    {0x3f803000u, F16, 0x3c02u},  /* 1 + 3 * 2^-11: tie, rounds up to the even 1 + 2^-9 */
    {0x322bcc77u, F16, 0x0000u},  /* 1e-8: below 2^-26 */
    {0x80000000u, F16, 0x8000u},  /* -0 */
    {0x7f800000u, F16, 0x7c00u},  /* Inf */
    {0x7f800001u, F16, 0x7e00u},  /* signalling NaN, payload below F16's mantissa: quiet NaN */
    {0xffc02000u, F16, 0xfe01u},  /* -NaN with an upper payload bit: kept */
    {0x3f808000u, BF16, 0x3f80u}, /* 1 + 2^-8: tie, 1 is even */
    {0x3f818000u, BF16, 0x3f82u}, /* 1 + 3 * 2^-8: tie, rounds up to even */
    {0x3f808001u, BF16, 0x3f81u}, /* just above the tie */
    {0x7f7f7fffu, BF16, 0x7f7fu}, /* just below the midpoint to "2^128": the largest bf16 */
    {0x7f7f8000u, BF16, 0x7f80u}, /* the tie, odd kept bit: up, to Inf */
    {0x7f7fffffu, BF16, 0x7f80u}, /* FLT_MAX: Inf */
    {0xff7fffffu, BF16, 0xff80u}, /* -FLT_MAX: -Inf */
    {0x00008000u, BF16, 0x0000u}, /* subnormal tie to even: +0 */
    {0x00018000u, BF16, 0x0002u}, /* subnormal tie, odd kept bit: up */
    {0x7f800001u, BF16, 0x7fc0u}, /* signalling NaN that truncation would make Inf: quiet NaN */
    {0xffff0000u, BF16, 0xffffu}, /* -NaN, every payload bit: kept */
    {0x7f80ffffu, BF16, 0x7fc0u}, /* NaN whose low payload rounding would drop: quiet NaN */
    {0x7fffffffu, BF16, 0x7fffu}, /* NaN whose rounding would carry into the sign (-0) */
};
#define NUM_CLOSED (sizeof closed_forms / sizeof closed_forms[0])

Test(dtypes, narrowing_closed_forms_host_and_device)
{
    bloopcl_context *ctx = support_context();
    float in[(NUM_CLOSED + 7) / 8 * 8] = {0};
    uint16_t out[sizeof in / sizeof in[0]];
    for (size_t i = 0; i < NUM_CLOSED; ++i) {
        in[i] = float_of(closed_forms[i].input);
        uint16_t host = host_narrow(in[i], closed_forms[i].type);
        cr_expect_eq(host, closed_forms[i].expected, "host %s(0x%08x) = 0x%04x, expected 0x%04x",
                     bloopcl_dtype_name(closed_forms[i].type), closed_forms[i].input, host,
                     closed_forms[i].expected);
    }
    static const char *const kernels[] = {"test_narrow_1", "test_narrow_v"};
    for (size_t b = 0; b < NUM_BUILDS; ++b) {
        cl_program program = build_conversions(ctx, builds[b].options);
        for (size_t k = 0; k < 2; ++k)
            for (bloopcl_dtype type = F16; type <= BF16; ++type) {
                device_narrow(ctx, program, builds[b].vector, kernels[k], in,
                              sizeof in / sizeof in[0], type, out);
                for (size_t i = 0; i < NUM_CLOSED; ++i)
                    if (closed_forms[i].type == type)
                        cr_expect_eq(out[i], closed_forms[i].expected, "%s [%s] %s(0x%08x) = "
                                     "0x%04x, expected 0x%04x", kernels[k], builds[b].options,
                                     bloopcl_dtype_name(type), closed_forms[i].input, out[i],
                                     closed_forms[i].expected);
            }
        clReleaseProgram(program);
    }
    bloopcl_context_destroy(ctx);
}

/* --------------------------------------------------------------------------------------------
 * Typed gradients: g, a and d as lists of segments, each with its own type and offset.
 * ------------------------------------------------------------------------------------------ */
#define MAX_SEGS 3
#define STEPS 3
enum { TG = 0, TA = 1, TD = 2 };

typedef struct seg_spec {
    size_t count;
    bloopcl_dtype type[3];  /* of g, a and d */
    size_t offset[3];       /* elements before the segment in its own buffer */
} seg_spec;

typedef struct typed_tensors {
    size_t n, num;
    seg_spec spec[MAX_SEGS];
    size_t start[MAX_SEGS];                /* first element of each segment in the vector */
    cl_mem buffer[3][MAX_SEGS];
    unsigned char *host[3][MAX_SEGS];      /* the stored elements of each segment */
    bloopcl_segment seg[3][MAX_SEGS];
    bloopcl_tensor tensor[3];
} typed_tensors;

static void tensors_create(bloopcl_context *ctx, typed_tensors *t, const seg_spec *spec,
                           size_t num)
{
    memset(t, 0, sizeof *t);
    t->num = num;
    for (size_t s = 0; s < num; ++s) {
        t->spec[s] = spec[s];
        t->start[s] = t->n;
        t->n += spec[s].count;
        for (int k = 0; k < 3; ++k) {
            size_t size = bloopcl_dtype_size(spec[s].type[k]);
            size_t bytes = (spec[s].offset[k] + spec[s].count + 2) * size;
            t->buffer[k][s] = device_copy(ctx, NULL, bytes);
            t->host[k][s] = xmalloc(spec[s].count * size);
            t->seg[k][s] = (bloopcl_segment){.buffer = t->buffer[k][s],
                                             .offset_bytes = spec[s].offset[k] * size,
                                             .count = spec[s].count, .dtype = spec[s].type[k]};
        }
    }
    for (int k = 0; k < 3; ++k)
        t->tensor[k] = (bloopcl_tensor){t->seg[k], num};
}

static void tensors_release(typed_tensors *t)
{
    for (size_t s = 0; s < t->num; ++s)
        for (int k = 0; k < 3; ++k) {
            clReleaseMemObject(t->buffer[k][s]);
            free(t->host[k][s]);
        }
}

static size_t seg_bytes(const typed_tensors *t, int k, size_t s)
{
    return t->spec[s].count * bloopcl_dtype_size(t->spec[s].type[k]);
}

/* Stores n fp32 values into tensor k: rounded per segment into its type, then written. */
static void tensors_store(bloopcl_context *ctx, typed_tensors *t, int k, const float *values)
{
    for (size_t s = 0; s < t->num; ++s) {
        cr_assert_eq(bloopcl_convert(values + t->start[s], F32, t->host[k][s],
                                     t->spec[s].type[k], t->spec[s].count), BLOOPCL_OK);
        cr_assert_eq(clEnqueueWriteBuffer(bloopcl_context_queue(ctx), t->buffer[k][s], CL_TRUE,
                                          t->seg[k][s].offset_bytes, seg_bytes(t, k, s),
                                          t->host[k][s], 0, NULL, NULL), CL_SUCCESS);
    }
}

/* The stored elements of tensor k widened, times the inverse scale in fp32: what the step
 * reads (g_true, a_true) and what d holds (scale 1). */
static void tensors_widen(const typed_tensors *t, int k, float inv_scale, float *out)
{
    for (size_t s = 0; s < t->num; ++s) {
        float *x = out + t->start[s];
        cr_assert_eq(bloopcl_convert(t->host[k][s], t->spec[s].type[k], x, F32,
                                     t->spec[s].count), BLOOPCL_OK);
        for (size_t i = 0; i < t->spec[s].count; ++i)
            x[i] *= inv_scale;
    }
}

static void tensors_read_d(bloopcl_context *ctx, typed_tensors *t)
{
    for (size_t s = 0; s < t->num; ++s)
        read_bytes(ctx, t->buffer[TD][s], t->seg[TD][s].offset_bytes, t->host[TD][s],
                   seg_bytes(t, TD, s));
}

static bloopcl_dtype type_at(const typed_tensors *t, int k, size_t i)
{
    size_t s = 0;
    while (s + 1 < t->num && i >= t->start[s + 1])
        ++s;
    return t->spec[s].type[k];
}

/* The step's outputs buffer (bloopcl_output: BLOOPCL_NUM_OUTPUTS floats), read back. */
static void read_outputs(bloopcl_context *ctx, bloopcl_combiner *comb, float *out)
{
    cl_mem outputs = NULL;
    cr_assert_eq(bloopcl_combiner_outputs(comb, &outputs), BLOOPCL_OK);
    read_bytes(ctx, outputs, 0, out, BLOOPCL_NUM_OUTPUTS * sizeof *out);
}

/* --------------------------------------------------------------------------------------------
 * 2. Typed steps against the reference. The oracle of every layout is bloopcl_reference_step
 *    on the widened, scaled inputs (fp32 d, rounded into each segment's type); for one segment
 *    bloopcl_reference_step_typed on the stored bytes must give exactly the same.
 * ------------------------------------------------------------------------------------------ */
/* The case being checked, at the head of every message (support_set_label too). */
static char case_label[256];

typedef struct typed_oracle {
    bloopcl_reference_state fp32, typed;
    float *g_true, *a_true, *d32, *d_dev;
    unsigned char *d_typed;
} typed_oracle;

static void oracle_init(typed_oracle *o, const bloopcl_config *config, size_t n)
{
    cr_assert_eq(bloopcl_reference_init(config, n, &o->fp32), BLOOPCL_OK);
    cr_assert_eq(bloopcl_reference_init(config, n, &o->typed), BLOOPCL_OK);
    o->g_true = support_alloc(n);
    o->a_true = support_alloc(n);
    o->d32 = support_alloc(n);
    o->d_dev = support_alloc(n);
    o->d_typed = xmalloc(n * sizeof(float));
}

static void oracle_free(typed_oracle *o)
{
    bloopcl_reference_free(&o->fp32);
    bloopcl_reference_free(&o->typed);
    free(o->g_true), free(o->a_true), free(o->d32), free(o->d_dev), free(o->d_typed);
}

static double abs_dot(const float *x, const float *y, size_t n)
{
    double sum = 0.0;
    for (size_t i = 0; x != NULL && y != NULL && i < n; ++i)
        sum += fabs((double)x[i] * (double)y[i]);
    return sum;
}

/* |r_device - r_reference|: ~1e-5 relative to |r| and to the terms of <m,a> (cancellation). */
static double ratio_tolerance(double r, double abs_xy, double yy, double eps)
{
    return 1e-5 * (fabs(r) + abs_xy / (yy + eps)) + 1e-30;
}

/* Bound on |d_device - d_reference| in fp32, before d is rounded into its type: a few fp32
 * roundings of each term of d = s (g + lambda (a - r m)) (or its variants), plus what the
 * errors of r and r_q move. */
static double d_tolerance(const bloopcl_config *config, const bloopcl_diagnostics *ref, double dr,
                          double dr_q, double g, double a, double m, double q)
{
    double lambda = (float)config->lambda, s = config->rescale ? 1.0 / (1.0 + lambda) : 1.0;
    double r = fabs(ref->ratio), r_q = fabs(ref->aux_ratio);
    double terms = fabs(g) + lambda * fabs(a) + lambda * r * (fabs(m) + fabs(g)) +
                   r_q * fabs(q);
    return s * (8 * FLT_EPSILON * terms + lambda * dr * (fabs(m) + fabs(g)) + dr_q * fabs(q)) +
           1e-37;
}

/* The device's d element lies between the roundings into its type of the ends of the fp32
 * interval reference +- tol: rounding is monotone, so an fp32 d within the tolerance rounds
 * there; the two may differ by one unit of the type only next to a rounding boundary. */
static bool d_within(float device, double reference, double tol, bloopcl_dtype type)
{
    float lo = (float)(reference - tol), hi = (float)(reference + tol);
    if ((double)lo > reference - tol)
        lo = nextafterf(lo, -INFINITY);
    if ((double)hi < reference + tol)
        hi = nextafterf(hi, INFINITY);
    return round_to(lo, type) <= device && device <= round_to(hi, type);
}

static void expect_d(const typed_tensors *t, const typed_oracle *o, const bloopcl_config *config,
                     const bloopcl_diagnostics *ref, double dr, double dr_q, int step)
{
    const float *m = o->fp32.ema, *q = o->fp32.aux_ema;
    int reported = 0;
    for (size_t i = 0; i < t->n && reported < 5; ++i) {
        double tol = d_tolerance(config, ref, m ? dr : 0.0, q ? dr_q : 0.0, o->g_true[i],
                                 o->a_true[i], m ? m[i] : 0.0, q ? q[i] : 0.0);
        bloopcl_dtype type = type_at(t, TD, i);
        if (!d_within(o->d_dev[i], o->d32[i], tol, type)) {
            cr_expect_fail("%sstep %d: d[%zu] (%s) device %.9g reference %.9g (fp32 tol %.3g)",
                           case_label, step, i, bloopcl_dtype_name(type), (double)o->d_dev[i],
                           (double)o->d32[i], tol);
            ++reported;
        }
    }
}

static void expect_relative(double device, double reference, double rtol, const char *what,
                            int step)
{
    cr_expect(fabs(device - reference) <= rtol * fabs(reference) + 1e-30,
              "%sstep %d: %s device %.9g reference %.9g", case_label, step, what, device,
              reference);
}

/* r, r_q, the dots and the gradient norm (diagnostics and output buffer) of an accepted step. */
static void expect_scalars(const typed_tensors *t, const typed_oracle *o,
                           const bloopcl_config *config, const bloopcl_diagnostics *dev,
                           const bloopcl_diagnostics *ref, const float *outputs, int step,
                           double *dr, double *dr_q)
{
    size_t n = t->n;
    double eps = (float)config->eps;
    double abs_ma = abs_dot(o->fp32.ema, o->a_true, n), abs_qg = abs_dot(o->fp32.aux_ema,
                                                                           o->g_true, n);
    *dr = ratio_tolerance(ref->ratio_raw, abs_ma, ref->ema_norm_sq, eps);
    *dr_q = ratio_tolerance(ref->aux_ratio, abs_qg, ref->aux_ema_norm_sq, eps);
    cr_expect(fabs(dev->ratio - ref->ratio) <= *dr, "%sstep %d: r device %.9g reference %.9g",
              case_label, step, dev->ratio, ref->ratio);
    cr_expect(fabs(dev->aux_ratio - ref->aux_ratio) <= *dr_q, "%sstep %d: r_q device %.9g "
              "reference %.9g", case_label, step, dev->aux_ratio, ref->aux_ratio);
    support_expect_dot(dev->dot_ema_aux, ref->dot_ema_aux, abs_ma, "<m,a>", step);
    support_expect_dot(dev->ema_norm_sq, ref->ema_norm_sq, ref->ema_norm_sq, "<m,m>", step);
    support_expect_dot(dev->dot_aux_ema_main, ref->dot_aux_ema_main, abs_qg, "<q,g>", step);
    expect_relative(dev->grad_norm_sq, ref->grad_norm_sq, 1e-5, "grad_norm_sq", step);
    expect_relative(outputs[BLOOPCL_OUTPUT_GRAD_NORM_SQ], ref->grad_norm_sq, 1e-5,
                    "BLOOPCL_OUTPUT_GRAD_NORM_SQ", step);
    cr_expect_eq(outputs[BLOOPCL_OUTPUT_ACCEPTED], 1.0f, "%sstep %d: accepted on the device",
                 case_label, step);
}

static void expect_same_floats(const float *x, const float *y, size_t n, const char *what)
{
    cr_expect(x == NULL || memcmp(x, y, n * sizeof *x) == 0, "%s%s differ", case_label, what);
}

/* bloopcl_reference_step_typed on the stored bytes of a one-segment layout: the same d bytes
 * (the fp32 d rounded into d's type), state and scalars as the fp32 route. */
static void expect_typed_reference(const bloopcl_config *config, const typed_tensors *t,
                                   typed_oracle *o, double inv_g, double inv_a,
                                   const bloopcl_diagnostics *ref, int step)
{
    const seg_spec *spec = &t->spec[0];
    bloopcl_diagnostics typed = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_reference_step_typed(config, &o->typed, t->host[TG][0], spec->type[TG],
                                              t->host[TA][0], spec->type[TA], o->d_typed,
                                              spec->type[TD], inv_g, inv_a, &typed), BLOOPCL_OK);
    unsigned char *rounded = xmalloc(t->n * sizeof(float));
    cr_assert_eq(bloopcl_convert(o->d32, F32, rounded, spec->type[TD], t->n), BLOOPCL_OK);
    cr_expect(memcmp(rounded, o->d_typed, seg_bytes(t, TD, 0)) == 0,
              "%sstep %d: reference_step_typed's d is not the fp32 d rounded", case_label, step);
    expect_same_floats(o->typed.ema, o->fp32.ema, t->n, "typed and fp32 reference EMAs");
    expect_same_floats(o->typed.aux_ema, o->fp32.aux_ema, t->n, "typed and fp32 aux EMAs");
    cr_expect_eq(typed.ratio, ref->ratio, "%sstep %d: typed reference r", case_label, step);
    cr_expect_eq(typed.grad_norm_sq, ref->grad_norm_sq, "%sstep %d: typed reference |g|^2",
                 case_label, step);
    free(rounded);
}

typedef struct typed_case {
    bloopcl_config config;
    size_t num;
    seg_spec spec[MAX_SEGS];
    double inv_g, inv_a;  /* inverse loss scales (host values) */
    float magnitude;      /* of the true gradients */
} typed_case;

static void poison_d(bloopcl_context *ctx, typed_tensors *t, unsigned char byte)
{
    for (size_t s = 0; s < t->num; ++s) {
        memset(t->host[TD][s], byte, seg_bytes(t, TD, s));
        cr_assert_eq(clEnqueueWriteBuffer(bloopcl_context_queue(ctx), t->buffer[TD][s], CL_TRUE,
                                          t->seg[TD][s].offset_bytes, seg_bytes(t, TD, s),
                                          t->host[TD][s], 0, NULL, NULL), CL_SUCCESS);
    }
}

/* True gradients of step `step` (support_make_inputs times the magnitude), stored as the
 * trainer would: times the loss scale 1/inv, rounded into each segment's type. */
static void store_inputs(bloopcl_context *ctx, typed_tensors *t, const typed_case *c,
                         uint64_t seed, int step)
{
    float *g = support_alloc(t->n), *a = support_alloc(t->n), *noise = support_alloc(t->n);
    support_make_inputs(g, a, noise, t->n, seed, step);
    float to_g = (float)(c->magnitude / c->inv_g), to_a = (float)(c->magnitude / c->inv_a);
    for (size_t i = 0; i < t->n; ++i) {
        g[i] *= to_g;
        a[i] *= to_a;
    }
    tensors_store(ctx, t, TG, g);
    tensors_store(ctx, t, TA, a);
    poison_d(ctx, t, 0xff);  /* NaN in every type: an element left unwritten shows */
    free(g), free(a), free(noise);
}

/* The checks of one accepted device step (its d already in the buffers). */
static void check_typed_step(bloopcl_context *ctx, bloopcl_combiner *comb, const typed_case *c,
                             typed_tensors *t, typed_oracle *o, int step)
{
    bloopcl_diagnostics dev = BLOOPCL_DIAGNOSTICS_INIT, ref = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_diagnostics(comb, &dev), BLOOPCL_OK);
    float outputs[BLOOPCL_NUM_OUTPUTS];
    read_outputs(ctx, comb, outputs);
    tensors_widen(t, TG, (float)c->inv_g, o->g_true);
    tensors_widen(t, TA, (float)c->inv_a, o->a_true);
    cr_assert_eq(bloopcl_reference_step(&c->config, &o->fp32, o->g_true, o->a_true, o->d32,
                                        &ref), BLOOPCL_OK, "step %d: reference", step);
    cr_assert_eq(dev.accepted, 1, "%sstep %d: the device skipped the step (reason %d)",
                 case_label, step, dev.reason);
    double dr, dr_q;
    expect_scalars(t, o, &c->config, &dev, &ref, outputs, step, &dr, &dr_q);
    tensors_read_d(ctx, t);
    tensors_widen(t, TD, 1.0f, o->d_dev);
    expect_d(t, o, &c->config, &ref, dr, dr_q, step);
    if (o->fp32.ema != NULL)
        support_expect_state(comb, BLOOPCL_STATE_EMA, o->fp32.ema, t->n);
    if (o->fp32.aux_ema != NULL)
        support_expect_state(comb, BLOOPCL_STATE_AUX_EMA, o->fp32.aux_ema, t->n);
    if (t->num == 1)
        expect_typed_reference(&c->config, t, o, c->inv_g, c->inv_a, &ref, step);
}

static void run_typed_case(bloopcl_context *ctx, const typed_case *c, uint64_t seed)
{
    typed_tensors t;
    tensors_create(ctx, &t, c->spec, c->num);
    bloopcl_combiner *comb = support_combiner(ctx, &c->config, t.n);
    typed_oracle o;
    oracle_init(&o, &c->config, t.n);
    bloopcl_step_options options = BLOOPCL_STEP_OPTIONS_INIT;
    options.inv_scale_g = c->inv_g;
    options.inv_scale_a = c->inv_a;
    for (int step = 0; step < STEPS; ++step) {
        store_inputs(ctx, &t, c, seed, step);
        bloopcl_status status = bloopcl_step_with_options(comb, &t.tensor[TG], &t.tensor[TA],
                                                          &t.tensor[TD], &options, 0, NULL, NULL);
        cr_assert_eq(status, BLOOPCL_OK, "%sstep %d: %s", case_label, step,
                     bloopcl_context_last_error(ctx));
        check_typed_step(ctx, comb, c, &t, &o, step);
    }
    oracle_free(&o);
    bloopcl_combiner_destroy(comb);
    tensors_release(&t);
}

static bloopcl_config method_config(bloopcl_method method, double w, double lambda, int rescale,
                                    int ratio_only, bloopcl_init init)
{
    bloopcl_config config;
    bloopcl_config_default(&config, method);
    config.ema_weight = w;
    config.lambda = lambda;
    config.rescale = rescale;
    config.ratio_only = ratio_only;
    config.init = init;
    config.seed = 11;
    config.dots = BLOOPCL_DOTS_FUSED;
    return config;
}

/* One segment of n elements at element offsets 1, 2 and 3 in g, a and d (2-byte types then
 * start at odd 2-byte addresses: vload_half8 must not need more alignment than a half). */
static typed_case one_segment_case(bloopcl_config config, size_t n, bloopcl_dtype g,
                                   bloopcl_dtype a, bloopcl_dtype d)
{
    typed_case c = {.config = config, .num = 1, .inv_g = 1.0, .inv_a = 1.0, .magnitude = 1.0f};
    c.spec[0] = (seg_spec){n, {g, a, d}, {1, 2, 3}};
    return c;
}

static void label_case(const char *method, const typed_case *c)
{
    int used = snprintf(case_label, sizeof case_label, "%s", method);
    for (size_t s = 0; s < c->num && used > 0 && (size_t)used < sizeof case_label; ++s)
        used += snprintf(case_label + used, sizeof case_label - (size_t)used, " [g %s a %s d %s]",
                         bloopcl_dtype_name(c->spec[s].type[TG]),
                         bloopcl_dtype_name(c->spec[s].type[TA]),
                         bloopcl_dtype_name(c->spec[s].type[TD]));
    snprintf(case_label + strlen(case_label), sizeof case_label - strlen(case_label),
             " scales %g %g: ", c->inv_g, c->inv_a);
    support_set_label(case_label);
}

static const bloopcl_dtype all_types[] = {F32, F16, BF16};

Test(dtypes, bloop_every_type_combination, .timeout = 300)
{
    bloopcl_context *ctx = support_context();
    bloopcl_config config = method_config(BLOOPCL_METHOD_BLOOP, 0.3, 0.5, 1, 0,
                                          BLOOPCL_INIT_ZEROS);
    for (size_t g = 0; g < 3; ++g)
        for (size_t a = 0; a < 3; ++a)
            for (size_t d = 0; d < 3; ++d) {
                typed_case c = one_segment_case(config, 1031, all_types[g], all_types[a],
                                                all_types[d]);
                label_case("BLOOP", &c);
                run_typed_case(ctx, &c, 100 + 9 * g + 3 * a + d);
            }
    bloopcl_context_destroy(ctx);
}

/* Five combinations per method: each type throughout, and each type in each role. */
static const bloopcl_dtype some_combinations[][3] = {
    {F16, F16, F16}, {BF16, BF16, BF16}, {F16, BF16, F32}, {BF16, F32, F16}, {F32, F16, BF16}};

static void run_some_combinations(bloopcl_context *ctx, const char *name, bloopcl_config config,
                                  size_t n)
{
    for (size_t k = 0; k < sizeof some_combinations / sizeof some_combinations[0]; ++k) {
        const bloopcl_dtype *types = some_combinations[k];
        typed_case c = one_segment_case(config, n, types[0], types[1], types[2]);
        label_case(name, &c);
        run_typed_case(ctx, &c, 200 + k);
    }
}

Test(dtypes, other_methods_typed, .timeout = 300)
{
    bloopcl_context *ctx = support_context();
    /* lambda 3: the barrier's cap 1/3 clips the r of about 0.4 that the inputs give */
    run_some_combinations(ctx, "DYNAMIC_BARRIER",
                          method_config(BLOOPCL_METHOD_DYNAMIC_BARRIER, 0.2, 3.0, 0, 0,
                                        BLOOPCL_INIT_ZEROS), 4099);
    run_some_combinations(ctx, "BLOOP ratio_only",
                          method_config(BLOOPCL_METHOD_BLOOP, 0.5, 1.0, 0, 1,
                                        BLOOPCL_INIT_RANDOM), 257);
    run_some_combinations(ctx, "PCGRAD",
                          method_config(BLOOPCL_METHOD_PCGRAD, 0.5, 0.7, 1, 0,
                                        BLOOPCL_INIT_FIRST_GRADIENT), 1031);
    run_some_combinations(ctx, "MIXED",
                          method_config(BLOOPCL_METHOD_MIXED, 1.0, 0.25, 1, 0,
                                        BLOOPCL_INIT_ZEROS), 1031);
    bloopcl_context_destroy(ctx);
}

/* Three segments in separate buffers, each type in a different role in each segment. */
static typed_case three_segment_case(bloopcl_config config, double inv_g, double inv_a)
{
    typed_case c = {.config = config, .num = 3, .inv_g = inv_g, .inv_a = inv_a,
                    .magnitude = 1.0f};
    c.spec[0] = (seg_spec){300, {F32, BF16, F16}, {2, 0, 1}};
    c.spec[1] = (seg_spec){517, {BF16, F16, F32}, {3, 5, 0}};
    c.spec[2] = (seg_spec){211, {F16, F32, BF16}, {0, 1, 7}};
    return c;
}

Test(dtypes, segments_of_different_types, .timeout = 120)
{
    bloopcl_context *ctx = support_context();
    static const bloopcl_method methods[] = {BLOOPCL_METHOD_BLOOP, BLOOPCL_METHOD_PCGRAD,
                                             BLOOPCL_METHOD_DYNAMIC_BARRIER};
    for (size_t k = 0; k < 3; ++k) {
        bloopcl_config config = method_config(methods[k], 0.4, 2.0, 1, 0, BLOOPCL_INIT_ZEROS);
        typed_case plain = three_segment_case(config, 1.0, 1.0);
        label_case(bloopcl_method_name(methods[k]), &plain);
        run_typed_case(ctx, &plain, 300 + k);
        typed_case scaled = three_segment_case(config, 0.25, 3.0);
        label_case(bloopcl_method_name(methods[k]), &scaled);
        run_typed_case(ctx, &scaled, 310 + k);
    }
    bloopcl_context_destroy(ctx);
}

/* --------------------------------------------------------------------------------------------
 * 3. Loss scaling.
 * ------------------------------------------------------------------------------------------ */
#define LOSS_SCALE 65536.0  /* 2^16 */
#define TINY 1e-6f          /* true gradients of 1e-6 and below: F16 keeps them only scaled */

/* True gradients of about 1e-6 (many near 1e-7) kept as F16: unscaled, they are F16
 * subnormals (spacing 2^-24 = 6e-8) that keep a few bits or none; times 2^16 they are normal
 * halves, within 2^-11 of the true value. This is what makes scaling necessary, and what the
 * step below must undo exactly. */
Test(dtypes, loss_scale_keeps_small_f16_gradients)
{
    size_t n = 4099;
    float *g = support_alloc(n), *a = support_alloc(n), *noise = support_alloc(n);
    uint16_t *half = xmalloc(n * sizeof *half);
    float *back = support_alloc(n);
    support_make_inputs(g, a, noise, n, 77, 0);
    double worst_unscaled = 0.0, worst_scaled = 0.0;
    for (size_t i = 0; i < n; ++i)
        g[i] *= TINY;
    cr_assert_eq(bloopcl_convert(g, F32, half, F16, n), BLOOPCL_OK);
    cr_assert_eq(bloopcl_convert(half, F16, back, F32, n), BLOOPCL_OK);
    for (size_t i = 0; i < n; ++i)
        if (fabs(g[i]) >= 1e-8)  /* scaled, a normal half */
            worst_unscaled = fmax(worst_unscaled, fabs(back[i] - g[i]) / fabs(g[i]));
    for (size_t i = 0; i < n; ++i)
        noise[i] = g[i] * (float)LOSS_SCALE;
    cr_assert_eq(bloopcl_convert(noise, F32, half, F16, n), BLOOPCL_OK);
    cr_assert_eq(bloopcl_convert(half, F16, back, F32, n), BLOOPCL_OK);
    for (size_t i = 0; i < n; ++i)
        if (fabs(g[i]) >= 1e-8)
                worst_scaled = fmax(worst_scaled,
                                fabs(back[i] * (float)(1.0 / LOSS_SCALE) - g[i]) / fabs(g[i]));
    cr_expect_gt(worst_unscaled, 0.5, "unscaled F16 loses the small gradients: %g",
                 worst_unscaled);
    cr_expect_leq(worst_scaled, 0x1p-11, "scaled F16 keeps 11 bits: %g", worst_scaled);
    free(g), free(a), free(noise), free(half), free(back);
}

static typed_case scaled_case(bloopcl_method method, bloopcl_dtype g, bloopcl_dtype a,
                              bloopcl_dtype d)
{
    bloopcl_config config = method_config(method, 0.3, 0.5, 1, 0, BLOOPCL_INIT_ZEROS);
    config.eps = 1e-30;  /* the default 1e-7 would swamp <m,m> of gradients of 1e-6 */
    typed_case c = one_segment_case(config, 4099, g, a, d);
    c.inv_g = 1.0 / LOSS_SCALE;
    c.inv_a = 1.0 / LOSS_SCALE;
    c.magnitude = TINY;
    return c;
}

/* The step on the stored F16 values and the inverse scale 2^-16 is the reference's step on
 * the true gradients (g_stored * 2^-16 in fp32): state bit for bit, d, r, the dots. */
Test(dtypes, loss_scaled_f16_matches_reference_on_true_gradients, .timeout = 120)
{
    bloopcl_context *ctx = support_context();
    static const bloopcl_method methods[] = {BLOOPCL_METHOD_BLOOP, BLOOPCL_METHOD_PCGRAD};
    static const bloopcl_dtype d_types[] = {F32, F16};
    for (size_t m = 0; m < 2; ++m)
        for (size_t d = 0; d < 2; ++d) {
            typed_case c = scaled_case(methods[m], F16, F16, d_types[d]);
            label_case(bloopcl_method_name(methods[m]), &c);
            run_typed_case(ctx, &c, 400 + 2 * m + d);
        }
    bloopcl_context_destroy(ctx);
}

static void read_state(bloopcl_combiner *comb, bloopcl_state_kind kind, float *out, size_t n)
{
    cr_assert_eq(bloopcl_read_state(comb, kind, out, n), BLOOPCL_OK);
}

/* A buffer of four floats with the inverse scales at indices 1 (g) and 2 (a), junk around. */
static cl_mem scale_buffer(bloopcl_context *ctx, float inv_g, float inv_a)
{
    const float scales[4] = {7.0f, inv_g, inv_a, -3.0f};
    return device_copy(ctx, scales, sizeof scales);
}

/* Two PCGRAD combiners hold the same m and q, bit for bit. */
static void expect_same_state(bloopcl_combiner *x, bloopcl_combiner *y, size_t n, int step)
{
    float *sx = support_alloc(n), *sy = support_alloc(n);
    for (bloopcl_state_kind kind = BLOOPCL_STATE_EMA; kind <= BLOOPCL_STATE_AUX_EMA; ++kind) {
        read_state(x, kind, sx, n);
        read_state(y, kind, sy, n);
        cr_expect(memcmp(sx, sy, n * sizeof *sx) == 0, "step %d: state %d differs", step,
                  (int)kind);
    }
    free(sx), free(sy);
}

/* The scalars of two combiners' last steps, equal exactly (both accepted). */
static void expect_same_scalars(bloopcl_combiner *x, bloopcl_combiner *y, int step)
{
    bloopcl_diagnostics dx = BLOOPCL_DIAGNOSTICS_INIT, dy = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_diagnostics(x, &dx), BLOOPCL_OK);
    cr_assert_eq(bloopcl_get_diagnostics(y, &dy), BLOOPCL_OK);
    cr_expect(dx.accepted == 1 && dy.accepted == 1, "step %d: accepted %d %d", step,
              dx.accepted, dy.accepted);
    cr_expect_eq(dx.ratio, dy.ratio, "step %d: r %.9g %.9g", step, dx.ratio, dy.ratio);
    cr_expect_eq(dx.aux_ratio, dy.aux_ratio, "step %d: r_q %.9g %.9g", step, dx.aux_ratio,
                 dy.aux_ratio);
    cr_expect_eq(dx.grad_norm_sq, dy.grad_norm_sq, "step %d: |g|^2 %.9g %.9g", step,
                 dx.grad_norm_sq, dy.grad_norm_sq);
}

/* Two combiners of one configuration stepping on the same g and a: `host` with the case's
 * scales from the host, writing t's d; `device` with the same scales from a buffer (indices 1
 * and 2), writing t2's d. */
typedef struct scale_pair {
    typed_tensors t, t2;
    bloopcl_combiner *host, *device;
    bloopcl_step_options on_host, on_device;
} scale_pair;

static void pair_create(bloopcl_context *ctx, scale_pair *p, const typed_case *c)
{
    tensors_create(ctx, &p->t, c->spec, 1);
    tensors_create(ctx, &p->t2, c->spec, 1);  /* only its d is used */
    p->host = support_combiner(ctx, &c->config, p->t.n);
    p->device = support_combiner(ctx, &c->config, p->t.n);
    p->on_host = p->on_device = (bloopcl_step_options)BLOOPCL_STEP_OPTIONS_INIT;
    p->on_host.inv_scale_g = c->inv_g;
    p->on_host.inv_scale_a = c->inv_a;
    p->on_device.inv_scale_buffer = scale_buffer(ctx, (float)c->inv_g, (float)c->inv_a);
    p->on_device.inv_scale_g_index = 1;
    p->on_device.inv_scale_a_index = 2;
}

static void pair_release(scale_pair *p)
{
    clReleaseMemObject(p->on_device.inv_scale_buffer);
    bloopcl_combiner_destroy(p->host);
    bloopcl_combiner_destroy(p->device);
    tensors_release(&p->t);
    tensors_release(&p->t2);
}

/* One step of both; the two agree bit for bit: d bytes, state, scalars. */
static void pair_step(bloopcl_context *ctx, scale_pair *p, const typed_case *c, uint64_t seed,
                      int step)
{
    typed_tensors *t = &p->t;
    store_inputs(ctx, t, c, seed, step);
    poison_d(ctx, &p->t2, 0xff);
    cr_assert_eq(bloopcl_step_with_options(p->host, &t->tensor[TG], &t->tensor[TA],
                                           &t->tensor[TD], &p->on_host, 0, NULL, NULL),
                 BLOOPCL_OK, "%s", bloopcl_context_last_error(ctx));
    cr_assert_eq(bloopcl_step_with_options(p->device, &t->tensor[TG], &t->tensor[TA],
                                           &p->t2.tensor[TD], &p->on_device, 0, NULL, NULL),
                 BLOOPCL_OK, "%s", bloopcl_context_last_error(ctx));
    tensors_read_d(ctx, t);
    tensors_read_d(ctx, &p->t2);
    cr_expect(memcmp(t->host[TD][0], p->t2.host[TD][0], seg_bytes(t, TD, 0)) == 0,
              "step %d: d with device scales differs", step);
    expect_same_state(p->host, p->device, t->n, step);
    expect_same_scalars(p->host, p->device, step);
}

/* The same steps with the scales from the host and from a device buffer: the same d bytes,
 * state and scalars, bit for bit (the kernels see the same float either way). */
Test(dtypes, host_and_device_scales_bit_identical, .timeout = 120)
{
    bloopcl_context *ctx = support_context();
    bloopcl_config config = method_config(BLOOPCL_METHOD_PCGRAD, 0.3, 0.5, 1, 0,
                                          BLOOPCL_INIT_ZEROS);
    typed_case c = one_segment_case(config, 4099, F16, BF16, F16);
    c.inv_g = 1.0 / LOSS_SCALE;
    c.inv_a = 0.003;  /* not a power of two: rounded to float on both paths */
    c.magnitude = TINY;
    scale_pair p;
    pair_create(ctx, &p, &c);
    for (int step = 0; step < STEPS; ++step)
        pair_step(ctx, &p, &c, 500, step);
    pair_release(&p);
    bloopcl_context_destroy(ctx);
}

/* One overflow to skip: what is stored, and the scales that come with it. */
typedef struct overflow_case {
    const char *what;
    int tensor;          /* TG or TA: where the bad element goes */
    uint16_t stored;     /* F16 bits put at element 17 (0: leave the element as it is) */
    double host_inv_g;   /* host scales... */
    float device_inv_g;  /* ...or, if not 0, this scale for g from a device buffer */
} overflow_case;

static const overflow_case overflows[] = {
    {"F16 +Inf stored in g (overflow in backward)", TG, 0x7c00u, 1.0 / LOSS_SCALE, 0.0f},
    {"F16 -Inf stored in a", TA, 0xfc00u, 1.0 / LOSS_SCALE, 0.0f},
    {"F16 NaN stored in g", TG, 0x7e00u, 1.0 / LOSS_SCALE, 0.0f},
    {"device inverse scale +Inf", TG, 0, 1.0, INFINITY},
    {"device inverse scale NaN", TG, 0, 1.0, NAN},
    {"finite 60000 times the host scale 1e35 overflows fp32", TG, 0x7b53u, 1e35, 0.0f},
};

/* The skip as the device shows it: outputs ACCEPTED 0 and REASON NONFINITE_INPUT, the
 * diagnostics, d all zeros (the reference's zeros), the state as it was. */
static void expect_skipped(bloopcl_context *ctx, bloopcl_combiner *comb, typed_tensors *t,
                           const float *state_before, const unsigned char *d_reference,
                           const char *what)
{
    float outputs[BLOOPCL_NUM_OUTPUTS];
    read_outputs(ctx, comb, outputs);
    cr_expect_eq(outputs[BLOOPCL_OUTPUT_ACCEPTED], 0.0f, "%s: ACCEPTED on the device %g", what,
                 (double)outputs[BLOOPCL_OUTPUT_ACCEPTED]);
    cr_expect_eq(outputs[BLOOPCL_OUTPUT_REASON], (float)BLOOPCL_SKIP_NONFINITE_INPUT,
                 "%s: REASON on the device %g", what, (double)outputs[BLOOPCL_OUTPUT_REASON]);
    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_diagnostics(comb, &diag), BLOOPCL_OK);
    cr_expect_eq(diag.accepted, 0, "%s: diagnostics.accepted", what);
    cr_expect_eq(diag.reason, BLOOPCL_SKIP_NONFINITE_INPUT, "%s: diagnostics.reason", what);
    float *state = support_alloc(t->n), *d = support_alloc(t->n);
    read_state(comb, BLOOPCL_STATE_EMA, state, t->n);
    cr_expect(memcmp(state, state_before, t->n * sizeof *state) == 0, "%s: state changed", what);
    tensors_read_d(ctx, t);
    tensors_widen(t, TD, 1.0f, d);
    size_t nonzero = 0;
    for (size_t i = 0; i < t->n; ++i)
        nonzero += d[i] != 0.0f;
    cr_expect_eq(nonzero, 0, "%s: %zu elements of d are not 0", what, nonzero);
    cr_expect(memcmp(t->host[TD][0], d_reference, seg_bytes(t, TD, 0)) == 0,
              "%s: d is not the reference's", what);
    free(state), free(d);
}

typedef struct overflow_fixture {
    bloopcl_context *ctx;
    typed_case c;
    typed_tensors t;
    bloopcl_combiner *comb;
    bloopcl_reference_state ref;
    unsigned char *d_ref;
    float *before;  /* the state after the last accepted step */
} overflow_fixture;

/* An accepted step (device and reference): the state then holds something to keep, and
 * after a skip it shows that the combiner goes on from the state it kept. */
static void accepted_step(overflow_fixture *f, uint64_t seed, const char *what)
{
    typed_tensors *t = &f->t;
    store_inputs(f->ctx, t, &f->c, seed, 0);
    cr_assert_eq(bloopcl_step(f->comb, &t->tensor[TG], &t->tensor[TA], &t->tensor[TD], 0, NULL,
                              NULL), BLOOPCL_OK);
    cr_assert_eq(bloopcl_reference_step_typed(&f->c.config, &f->ref, t->host[TG][0], F16,
                                              t->host[TA][0], F16, f->d_ref, F16, 1.0, 1.0,
                                              NULL), BLOOPCL_OK);
    read_state(f->comb, BLOOPCL_STATE_EMA, f->before, t->n);
    cr_assert(memcmp(f->before, f->ref.ema, t->n * sizeof *f->before) == 0,
              "%s: the accepted step before", what);
}

/* Puts `stored` (F16 bits) at element 17 of tensor k. */
static void store_element_17(bloopcl_context *ctx, typed_tensors *t, int k, uint16_t stored)
{
    memcpy(t->host[k][0] + 2 * 17, &stored, 2);
    cr_assert_eq(clEnqueueWriteBuffer(bloopcl_context_queue(ctx), t->buffer[k][0], CL_TRUE,
                                      t->seg[k][0].offset_bytes + 2 * 17, 2, &stored, 0, NULL,
                                      NULL), CL_SUCCESS);
}

static void overflowing_step(overflow_fixture *f, const overflow_case *o, uint64_t seed)
{
    typed_tensors *t = &f->t;
    store_inputs(f->ctx, t, &f->c, seed, 1);
    if (o->stored != 0)
        store_element_17(f->ctx, t, o->tensor, o->stored);
    poison_d(f->ctx, t, 0x3c);  /* 0x3c3c: 1.06 in F16, so the zeros below are written */
    bloopcl_step_options options = BLOOPCL_STEP_OPTIONS_INIT;
    options.inv_scale_g = o->host_inv_g;
    if (o->device_inv_g != 0.0f) {  /* NaN included */
        options.inv_scale_buffer = scale_buffer(f->ctx, o->device_inv_g, 1.0f);
        options.inv_scale_g_index = 1;
        options.inv_scale_a_index = 2;
    }
    cr_assert_eq(bloopcl_step_with_options(f->comb, &t->tensor[TG], &t->tensor[TA],
                                           &t->tensor[TD], &options, 0, NULL, NULL), BLOOPCL_OK,
                 "%s: %s", o->what, bloopcl_context_last_error(f->ctx));
    if (options.inv_scale_buffer == NULL) {
        cr_assert_eq(bloopcl_reference_step_typed(&f->c.config, &f->ref, t->host[TG][0], F16,
                                                  t->host[TA][0], F16, f->d_ref, F16,
                                                  o->host_inv_g, 1.0, NULL),
                     BLOOPCL_ERR_NONFINITE_INPUT, "%s: the reference skips too", o->what);
    } else {  /* the reference takes no non-finite scale; its skip is d = 0, state kept */
        memset(f->d_ref, 0, seg_bytes(t, TD, 0));
        clReleaseMemObject(options.inv_scale_buffer);
    }
    expect_skipped(f->ctx, f->comb, t, f->before, f->d_ref, o->what);
}

/* Every overflow a dynamic loss scaler meets is a skipped step (policy SKIP) that the device
 * reports without a host read; the reference skips it too. */
Test(dtypes, overflow_skips_the_step, .timeout = 120)
{
    overflow_fixture f;
    f.ctx = support_context();
    bloopcl_config config = method_config(BLOOPCL_METHOD_BLOOP, 0.3, 0.5, 1, 0,
                                          BLOOPCL_INIT_ZEROS);
    f.c = one_segment_case(config, 1031, F16, F16, F16);
    tensors_create(f.ctx, &f.t, f.c.spec, 1);
    f.comb = support_combiner(f.ctx, &config, f.t.n);
    cr_assert_eq(bloopcl_reference_init(&config, f.t.n, &f.ref), BLOOPCL_OK);
    f.d_ref = xmalloc(seg_bytes(&f.t, TD, 0));
    f.before = support_alloc(f.t.n);
    for (size_t k = 0; k < sizeof overflows / sizeof overflows[0]; ++k) {
        accepted_step(&f, 600 + k, overflows[k].what);
        overflowing_step(&f, &overflows[k], 700 + k);
    }
    accepted_step(&f, 800, "after the skips");
    free(f.before), free(f.d_ref);
    bloopcl_reference_free(&f.ref);
    bloopcl_combiner_destroy(f.comb);
    tensors_release(&f.t);
    bloopcl_context_destroy(f.ctx);
}

/* --------------------------------------------------------------------------------------------
 * 4. The gradient norm: ||g_true||^2, with g_true = g_stored * inv_scale_g.
 * ------------------------------------------------------------------------------------------ */
static void fill_tensor_bits(bloopcl_context *ctx, typed_tensors *t, int k, uint16_t bits)
{
    uint16_t *x = (uint16_t *)(void *)t->host[k][0];
    for (size_t i = 0; i < t->spec[0].count; ++i)
        x[i] = bits;
    cr_assert_eq(clEnqueueWriteBuffer(bloopcl_context_queue(ctx), t->buffer[k][0], CL_TRUE,
                                      t->seg[k][0].offset_bytes, seg_bytes(t, k, 0), x, 0, NULL,
                                      NULL), CL_SUCCESS);
}

/* Closed forms: every g element stored as 2 (F16) with inverse scale 1/2 is 1, so
 * ||g_true||^2 = n; stored 3 (BF16) times 1/8 is 3/8, so it is 9 n / 64. Both sums are exact
 * in fp32 (n = 1031), so the device must give them exactly; the stored norm would be 4 n or
 * 9 n. */
Test(dtypes, grad_norm_closed_forms)
{
    bloopcl_context *ctx = support_context();
    static const struct {
        bloopcl_dtype type;
        uint16_t stored;
        double inv_scale, expected;
    } cases[] = {{F16, 0x4000u, 0.5, 1031.0}, {BF16, 0x4040u, 0.125, 1031.0 * 9.0 / 64.0}};
    bloopcl_config config = method_config(BLOOPCL_METHOD_BLOOP, 0.3, 0.5, 1, 0,
                                          BLOOPCL_INIT_ZEROS);
    for (size_t k = 0; k < 2; ++k) {
        typed_case c = one_segment_case(config, 1031, cases[k].type, cases[k].type, F32);
        typed_tensors t;
        tensors_create(ctx, &t, c.spec, 1);
        bloopcl_combiner *comb = support_combiner(ctx, &config, t.n);
        fill_tensor_bits(ctx, &t, TG, cases[k].stored);
        fill_tensor_bits(ctx, &t, TA, cases[k].stored);
        bloopcl_step_options options = BLOOPCL_STEP_OPTIONS_INIT;
        options.inv_scale_g = cases[k].inv_scale;
        cr_assert_eq(bloopcl_step_with_options(comb, &t.tensor[TG], &t.tensor[TA], &t.tensor[TD],
                                               &options, 0, NULL, NULL), BLOOPCL_OK);
        bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
        cr_assert_eq(bloopcl_get_diagnostics(comb, &diag), BLOOPCL_OK);
        float outputs[BLOOPCL_NUM_OUTPUTS];
        read_outputs(ctx, comb, outputs);
        cr_expect_eq(diag.grad_norm_sq, cases[k].expected, "%s: grad_norm_sq %.9g",
                     bloopcl_dtype_name(cases[k].type), diag.grad_norm_sq);
        cr_expect_eq(outputs[BLOOPCL_OUTPUT_GRAD_NORM_SQ], (float)cases[k].expected,
                     "%s: BLOOPCL_OUTPUT_GRAD_NORM_SQ %.9g", bloopcl_dtype_name(cases[k].type),
                     (double)outputs[BLOOPCL_OUTPUT_GRAD_NORM_SQ]);
        bloopcl_combiner_destroy(comb);
        tensors_release(&t);
    }
    bloopcl_context_destroy(ctx);
}

/* Random F16 and BF16 gradients with scales: the norm (diagnostics and output buffer, checked
 * in expect_scalars) against the reference's ||g_true||^2 within 1e-5. */
Test(dtypes, grad_norm_scaled_typed, .timeout = 120)
{
    bloopcl_context *ctx = support_context();
    bloopcl_config config = method_config(BLOOPCL_METHOD_BLOOP, 0.3, 0.5, 0, 0,
                                          BLOOPCL_INIT_ZEROS);
    typed_case f16 = one_segment_case(config, 4099, F16, F32, F32);
    f16.inv_g = 0x1p-8;
    typed_case bf16 = one_segment_case(config, 4099, BF16, BF16, F16);
    bf16.inv_g = 0.25;
    bf16.inv_a = 3.0;
    typed_case mixed = one_segment_case(method_config(BLOOPCL_METHOD_MIXED, 1.0, 0.5, 0, 0,
                                                      BLOOPCL_INIT_ZEROS), 4099, BF16, F16,
                                        BF16);
    mixed.inv_g = 0.1;
    const typed_case *cases[] = {&f16, &bf16, &mixed};
    for (size_t k = 0; k < 3; ++k) {
        label_case(bloopcl_method_name(cases[k]->config.method), cases[k]);
        run_typed_case(ctx, cases[k], 800 + k);
    }
    bloopcl_context_destroy(ctx);
}

/* --------------------------------------------------------------------------------------------
 * 5. Refused calls: nothing applied, the state unchanged, a message.
 * ------------------------------------------------------------------------------------------ */
#define SMALL_N 64

typedef struct refusal_fixture {
    bloopcl_context *ctx;
    bloopcl_combiner *comb;
    typed_tensors t;
    float state[SMALL_N];
} refusal_fixture;

/* A BLOOP combiner on `dots` over tensors of SMALL_N elements of `type`, one step taken. */
static void refusal_setup(refusal_fixture *f, bloopcl_dot_backend dots, bloopcl_dtype type)
{
    f->ctx = support_context();
    bloopcl_config config = method_config(BLOOPCL_METHOD_BLOOP, 0.3, 0.5, 1, 0,
                                          BLOOPCL_INIT_ZEROS);
    config.dots = dots;
    typed_case c = one_segment_case(config, SMALL_N, type, type, type);
    tensors_create(f->ctx, &f->t, c.spec, 1);
    f->comb = support_combiner(f->ctx, &config, SMALL_N);
    store_inputs(f->ctx, &f->t, &c, 900, 0);
    cr_assert_eq(bloopcl_step(f->comb, &f->t.tensor[TG], &f->t.tensor[TA], &f->t.tensor[TD], 0,
                              NULL, NULL), BLOOPCL_OK);
    read_state(f->comb, BLOOPCL_STATE_EMA, f->state, SMALL_N);
}

static void refusal_teardown(refusal_fixture *f)
{
    bloopcl_combiner_destroy(f->comb);
    tensors_release(&f->t);
    bloopcl_context_destroy(f->ctx);
}

static void expect_refused(refusal_fixture *f, bloopcl_status status, bloopcl_status expected,
                           const char *what, const char *needle)
{
    const char *message = bloopcl_context_last_error(f->ctx);
    cr_expect_eq(status, expected, "%s: %s (%d), expected %s: %s", what,
                 bloopcl_status_string(status), (int)status, bloopcl_status_string(expected),
                 message);
    cr_expect_neq(message[0], '\0', "%s: no message", what);
    if (needle != NULL)
        cr_expect(strstr(message, needle) != NULL, "%s: message without \"%s\": %s", what,
                  needle, message);
    float state[SMALL_N];
    read_state(f->comb, BLOOPCL_STATE_EMA, state, SMALL_N);
    cr_expect(memcmp(state, f->state, sizeof state) == 0, "%s: the state changed", what);
}

/* The step with tensor k's segment replaced by `bad` (the others as set up). */
static bloopcl_status step_with_segment(refusal_fixture *f, int k, bloopcl_segment bad)
{
    bloopcl_tensor tensors[3] = {f->t.tensor[TG], f->t.tensor[TA], f->t.tensor[TD]};
    tensors[k] = (bloopcl_tensor){&bad, 1};
    return bloopcl_step(f->comb, &tensors[TG], &tensors[TA], &tensors[TD], 0, NULL, NULL);
}

Test(dtypes, refused_segments)
{
    refusal_fixture f;
    refusal_setup(&f, BLOOPCL_DOTS_FUSED, F16);
    bloopcl_segment seg = f.t.seg[TG][0];
    seg.dtype = (bloopcl_dtype)7;
    expect_refused(&f, step_with_segment(&f, TG, seg), BLOOPCL_ERR_INVALID_ARGUMENT,
                   "g dtype 7", "dtype 7");
    seg = f.t.seg[TD][0];
    seg.dtype = (bloopcl_dtype)3;
    expect_refused(&f, step_with_segment(&f, TD, seg), BLOOPCL_ERR_INVALID_ARGUMENT,
                   "d dtype 3", "dtype 3");
    seg = f.t.seg[TA][0];
    seg.offset_bytes = 3;
    expect_refused(&f, step_with_segment(&f, TA, seg), BLOOPCL_ERR_SIZE_MISMATCH,
                   "F16 offset 3 bytes", "multiple of 2");
    /* the buffer holds offset + count + 2 halves (tensors_create): 3 more pass its end */
    seg = f.t.seg[TG][0];
    seg.offset_bytes += 2 * 3;
    expect_refused(&f, step_with_segment(&f, TG, seg), BLOOPCL_ERR_BUFFER_TOO_SMALL,
                   "F16 segment past the buffer's end", NULL);
    /* ending exactly at the buffer's end is fine: the check counts 2 bytes per element */
    seg = f.t.seg[TG][0];
    seg.offset_bytes += 2 * 2;
    cr_expect_eq(step_with_segment(&f, TG, seg), BLOOPCL_OK, "F16 segment ending at the "
                 "buffer's end: %s", bloopcl_context_last_error(f.ctx));
    refusal_teardown(&f);
}

Test(dtypes, clblast_refuses_16_bit_types)
{
    refusal_fixture f;
    refusal_setup(&f, BLOOPCL_DOTS_CLBLAST, F32);
    for (bloopcl_dtype type = F16; type <= BF16; ++type)
        for (int k = 0; k < 3; ++k) {
            typed_tensors t;
            seg_spec spec = {SMALL_N, {F32, F32, F32}, {0, 0, 0}};
            spec.type[k] = type;
            tensors_create(f.ctx, &t, &spec, 1);
            bloopcl_status status = bloopcl_step(f.comb, &t.tensor[TG], &t.tensor[TA],
                                                 &t.tensor[TD], 0, NULL, NULL);
            char what[64];
            snprintf(what, sizeof what, "CLBLAST with %s in tensor %d", bloopcl_dtype_name(type),
                     k);
            expect_refused(&f, status, BLOOPCL_ERR_UNSUPPORTED, what, "FUSED");
            tensors_release(&t);
        }
    refusal_teardown(&f);
}

static bloopcl_status step_with_options(refusal_fixture *f, const bloopcl_step_options *options)
{
    return bloopcl_step_with_options(f->comb, &f->t.tensor[TG], &f->t.tensor[TA],
                                     &f->t.tensor[TD], options, 0, NULL, NULL);
}

Test(dtypes, refused_options)
{
    refusal_fixture f;
    refusal_setup(&f, BLOOPCL_DOTS_FUSED, F16);
    /* 1e300 and 1e-300 are finite doubles but no positive finite float */
    static const double bad[] = {0.0, -1.0, NAN, INFINITY, -INFINITY, 1e300, 1e-300};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; ++k)
        for (int which = 0; which < 2; ++which) {
            bloopcl_step_options options = BLOOPCL_STEP_OPTIONS_INIT;
            *(which ? &options.inv_scale_a : &options.inv_scale_g) = bad[k];
            char what[64];
            snprintf(what, sizeof what, "inv_scale_%s = %g", which ? "a" : "g", bad[k]);
            expect_refused(&f, step_with_options(&f, &options), BLOOPCL_ERR_INVALID_ARGUMENT,
                           what, which ? "inv_scale_a" : "inv_scale_g");
        }
    bloopcl_step_options options = BLOOPCL_STEP_OPTIONS_INIT;
    options.inv_scale_buffer = scale_buffer(f.ctx, 1.0f, 1.0f);  /* 4 floats */
    options.inv_scale_g_index = 4;
    expect_refused(&f, step_with_options(&f, &options), BLOOPCL_ERR_BUFFER_TOO_SMALL,
                   "g's scale index 4 of 4 floats", "inv_scale_buffer");
    options.inv_scale_g_index = 3;
    options.inv_scale_a_index = 100;
    expect_refused(&f, step_with_options(&f, &options), BLOOPCL_ERR_BUFFER_TOO_SMALL,
                   "a's scale index 100 of 4 floats", "inv_scale_buffer");
    clReleaseMemObject(options.inv_scale_buffer);
    bloopcl_context *other = support_context();  /* a cl_context of its own */
    options.inv_scale_buffer = scale_buffer(other, 1.0f, 1.0f);
    options.inv_scale_g_index = options.inv_scale_a_index = 1;
    expect_refused(&f, step_with_options(&f, &options), BLOOPCL_ERR_WRONG_CONTEXT,
                   "a scale buffer of another cl_context", "another cl_context");
    clReleaseMemObject(options.inv_scale_buffer);
    bloopcl_context_destroy(other);
    options = (bloopcl_step_options)BLOOPCL_STEP_OPTIONS_INIT;
    options.struct_size = 0;
    expect_refused(&f, step_with_options(&f, &options), BLOOPCL_ERR_INVALID_ARGUMENT,
                   "struct_size 0", NULL);
    refusal_teardown(&f);
}

/* CLBLAST with host scales (F32 data): the support checks (CLBlast's dot tolerance) against the
 * reference on the scaled inputs; the gradient norm is that of g_true, not of the stored g
 * (which is 64 times larger at inv_scale_g = 1/8). A second combiner with the same scales
 * from a device buffer gives the same d and state bit for bit. */
static void expect_true_grad_norm(bloopcl_combiner *comb, const float *g_true, size_t n,
                                  int step)
{
    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_diagnostics(comb, &diag), BLOOPCL_OK);
    double norm = 0.0;
    for (size_t i = 0; i < n; ++i)
        norm += (double)g_true[i] * g_true[i];
    expect_relative(diag.grad_norm_sq, norm, 1e-5, "grad_norm_sq of g_true", step);
}

Test(dtypes, clblast_with_scales, .timeout = 120)
{
    bloopcl_context *ctx = support_context();
    bloopcl_config config = method_config(BLOOPCL_METHOD_PCGRAD, 0.3, 0.5, 1, 0,
                                          BLOOPCL_INIT_ZEROS);
    config.dots = BLOOPCL_DOTS_CLBLAST;
    typed_case c = one_segment_case(config, 4099, F32, F32, F32);
    c.spec[0].offset[TG] = c.spec[0].offset[TA] = c.spec[0].offset[TD] = 0;
    c.inv_g = 0.125;
    c.inv_a = 3.0;
    scale_pair p;
    pair_create(ctx, &p, &c);
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(&config, p.t.n, &ref), BLOOPCL_OK);
    size_t n = p.t.n;
    float *g = support_alloc(n), *a = support_alloc(n), *d = support_alloc(n);
    float *d_ref = support_alloc(n);
    for (int step = 0; step < STEPS; ++step) {
        pair_step(ctx, &p, &c, 1000, step);
        tensors_widen(&p.t, TG, (float)c.inv_g, g);
        tensors_widen(&p.t, TA, (float)c.inv_a, a);
        tensors_widen(&p.t, TD, 1.0f, d);
        support_check_step(p.host, &config, &ref, g, a, d, d_ref, step);
        expect_true_grad_norm(p.host, g, n, step);
    }
    support_expect_state(p.host, BLOOPCL_STATE_EMA, ref.ema, n);
    support_expect_state(p.host, BLOOPCL_STATE_AUX_EMA, ref.aux_ema, n);
    free(g), free(a), free(d), free(d_ref);
    bloopcl_reference_free(&ref);
    pair_release(&p);
    bloopcl_context_destroy(ctx);
}

/* --------------------------------------------------------------------------------------------
 * 6. bloopcl_convert and the type helpers.
 * ------------------------------------------------------------------------------------------ */
Test(dtypes, type_sizes_and_names)
{
    cr_expect_eq(bloopcl_dtype_size(F32), 4);
    cr_expect_eq(bloopcl_dtype_size(F16), 2);
    cr_expect_eq(bloopcl_dtype_size(BF16), 2);
    cr_expect_eq(bloopcl_dtype_size((bloopcl_dtype)3), 0);
    cr_expect_eq(bloopcl_dtype_size((bloopcl_dtype)-1), 0);
    cr_expect_str_eq(bloopcl_dtype_name(F32), "f32");
    cr_expect_str_eq(bloopcl_dtype_name(F16), "f16");
    cr_expect_str_eq(bloopcl_dtype_name(BF16), "bf16");
    cr_expect_str_eq(bloopcl_dtype_name((bloopcl_dtype)7), "unknown");
}

Test(dtypes, convert_refuses_null_and_unknown_types)
{
    float x[2] = {1.0f, 2.0f};
    uint16_t h[2] = {0x1234, 0x5678};
    cr_expect_eq(bloopcl_convert(NULL, F32, h, F16, 1), BLOOPCL_ERR_NULL_ARGUMENT);
    cr_expect_eq(bloopcl_convert(x, F32, NULL, F16, 1), BLOOPCL_ERR_NULL_ARGUMENT);
    cr_expect_eq(bloopcl_convert(NULL, F32, NULL, F16, 0), BLOOPCL_OK, "count 0: nothing read");
    cr_expect_eq(bloopcl_convert(x, (bloopcl_dtype)7, h, F16, 2), BLOOPCL_ERR_INVALID_ARGUMENT);
    cr_expect_eq(bloopcl_convert(x, F32, h, (bloopcl_dtype)3, 2), BLOOPCL_ERR_INVALID_ARGUMENT);
    cr_expect_eq(bloopcl_convert(x, F32, h, (bloopcl_dtype)3, 0), BLOOPCL_ERR_INVALID_ARGUMENT);
    cr_expect(h[0] == 0x1234 && h[1] == 0x5678, "a refused conversion writes nothing");
}

/* Every pattern of `type` (F16 or BF16) widened and narrowed back: the identity but for NaNs,
 * which come back as NaNs of the same sign with the quiet bit set. */
static void expect_round_trip(bloopcl_dtype type)
{
    uint16_t *in = xmalloc(PATTERNS * sizeof *in), *out = xmalloc(PATTERNS * sizeof *out);
    float *wide = xmalloc(PATTERNS * sizeof *wide);
    for (uint32_t p = 0; p < PATTERNS; ++p)
        in[p] = (uint16_t)p;
    cr_assert_eq(bloopcl_convert(in, type, wide, F32, PATTERNS), BLOOPCL_OK);
    cr_assert_eq(bloopcl_convert(wide, F32, out, type, PATTERNS), BLOOPCL_OK);
    uint16_t quiet = type == F16 ? 0x0200u : 0x0040u;
    size_t mismatches = 0;
    for (uint32_t p = 0; p < PATTERNS; ++p) {
        bool nan = isnan(wide[p]);
        uint16_t expected = nan ? (uint16_t)(p | quiet) : (uint16_t)p;
        if (out[p] != expected && mismatches++ < 5)
            cr_expect_fail("%s 0x%04x -> %.9g -> 0x%04x", bloopcl_dtype_name(type), p,
                           (double)wide[p], out[p]);
    }
    cr_expect_eq(mismatches, 0, "%s round trip: %zu patterns", bloopcl_dtype_name(type),
                 mismatches);
    free(in), free(out), free(wide);
}

Test(dtypes, convert_round_trip_every_pattern)
{
    expect_round_trip(F16);
    expect_round_trip(BF16);
}

/* In place is allowed between types of one size: F16 <-> BF16 in one array gives what the
 * conversion into another array gives (each element read before it is written). */
Test(dtypes, convert_in_place_same_size)
{
    uint16_t *in = xmalloc(PATTERNS * sizeof *in), *out = xmalloc(PATTERNS * sizeof *out);
    for (bloopcl_dtype from = F16; from <= BF16; ++from) {
        bloopcl_dtype to = from == F16 ? BF16 : F16;
        for (uint32_t p = 0; p < PATTERNS; ++p)
            in[p] = (uint16_t)p;
        cr_assert_eq(bloopcl_convert(in, from, out, to, PATTERNS), BLOOPCL_OK);
        cr_assert_eq(bloopcl_convert(in, from, in, to, PATTERNS), BLOOPCL_OK);
        cr_expect(memcmp(in, out, PATTERNS * sizeof *in) == 0, "%s -> %s in place",
                  bloopcl_dtype_name(from), bloopcl_dtype_name(to));
        /* and a known value: F16 1.5 (0x3e00) is BF16 0x3fc0, and back */
        uint16_t x = 0x3e00;
        cr_assert_eq(bloopcl_convert(&x, F16, &x, BF16, 1), BLOOPCL_OK);
        cr_expect_eq(x, 0x3fc0);
        cr_assert_eq(bloopcl_convert(&x, BF16, &x, F16, 1), BLOOPCL_OK);
        cr_expect_eq(x, 0x3e00);
    }
    free(in), free(out);
}
