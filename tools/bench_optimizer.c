/* bench_optimizer.c — bloopcl-bench --optimizer: what folding the optimizer into the step saves.
 *
 * Two ways to take one training step's update at n elements, timed in alternating blocks in
 * one run (the same machine state for both):
 *   separate  bloopcl_step writes d, then an optimizer kernel of the trainer's own reads d and
 *             updates p and its moments (and honours a skipped step through bloopcl's output
 *             buffer, as a trainer has to): what trainers do without the fused optimizer;
 *   fused     bloopcl_step_with_options(update_parameters): the optimizer inside pass 2.
 * Bytes per element (BLOOP, FUSED backend, fp32): the step moves 32 (g, a, m read twice; m
 * and d written); AdamW then reads d, p, m1, m2 and writes p, m1, m2: 28, so 60 in all; fused,
 * d is neither written nor read back: 52. SGD with momentum: 52 and 44. Launches: the
 * separate way adds one kernel per step to the step's own, one per tensor over P segments (a
 * per-tensor optimizer, as torch.optim's default loop launches one per parameter). */
#include "bench_optimizer.h"

#include "bench_mix.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The trainer-side optimizer kernels, shaped like bloopcl's own on the device: contiguous
 * chunks per work-item on CPUs (vectors of 8), one element per work-item on GPUs. */
static const char *optimizer_source =
    "#define ADAMW_AT(T, LOAD, STORE, i) {                                               \\\n"
    "    T di = LOAD(d, i), m = LOAD(m1, i), v = LOAD(m2, i);                              \\\n"
    "    T p = LOAD(param, i) * (1.0f - lr * wd);                                         \\\n"
    "    m = m + (1.0f - b1) * (di - m);                                                  \\\n"
    "    v = b2 * v + (1.0f - b2) * (di * di);                                            \\\n"
    "    STORE(m, m1, i); STORE(v, m2, i);                                                \\\n"
    "    STORE(p - step_size * (m / (sqrt(v) / bias2_sqrt + eps)), param, i); }\n"
    "#define SGD_AT(T, LOAD, STORE, i) {                                                 \\\n"
    "    T b = mu * LOAD(m1, i) + LOAD(d, i);                                             \\\n"
    "    STORE(b, m1, i); STORE(LOAD(param, i) - lr * b, param, i); }\n"
    "#define L1(p, i) ((p)[i])\n"
    "#define S1(x, p, i) ((p)[i] = (x))\n"
    "#define L8(p, i) vload8(0, (p) + (i))\n"
    "#define S8(x, p, i) vstore8((x), 0, (p) + (i))\n"
    "#ifdef CONTIGUOUS\n"
    "#define FOR_EACH(AT) \\\n"
    "    size_t items = get_global_size(0); \\\n"
    "    size_t chunk = ((n + items - 1) / items + 7) / 8 * 8; \\\n"
    "    size_t begin = min((size_t)n, get_global_id(0) * chunk); \\\n"
    "    size_t end = min((size_t)n, begin + chunk), i = begin; \\\n"
    "    for (; i + 8 <= end; i += 8) AT(float8, L8, S8, i) \\\n"
    "    for (; i < end; ++i) AT(float, L1, S1, i)\n"
    "#else\n"
    "#define FOR_EACH(AT) size_t i = get_global_id(0); if (i < n) AT(float, L1, S1, i)\n"
    "#endif\n"
    "kernel void adamw(global float *param, global float *m1, global float *m2,\n"
    "                  global const float *d, global const float *outputs, float lr, float wd,\n"
    "                  float b1, float b2, float eps, float step_size, float bias2_sqrt,\n"
    "                  ulong n)\n"
    "{\n"
    "    if (outputs[0] == 0.0f) return;  /* BLOOPCL_OUTPUT_ACCEPTED: a skipped step */\n"
    "    FOR_EACH(ADAMW_AT)\n"
    "}\n"
    "kernel void sgd(global float *param, global float *m1, global float *m2,\n"
    "                global const float *d, global const float *outputs, float lr, float mu,\n"
    "                ulong n)\n"
    "{\n"
    "    if (outputs[0] == 0.0f) return;\n"
    "    FOR_EACH(SGD_AT)\n"
    "}\n";

/* One tensor (g, a, d, the two copies of the parameters, the separate optimizer's moments)
 * as P segments, each in a cl_mem of its own (as a model's tensors are). */
enum { T_G, T_A, T_D, T_P_SEPARATE, T_P_FUSED, T_M1, T_M2, NUM_T };
static const float initial_value[NUM_T] = {0.5f, -0.25f, 0.0f, 1.0f, 1.0f, 0.0f, 0.0f};

typedef struct workload {
    size_t segments;
    size_t *count;
    cl_mem *buffer[NUM_T];
    bloopcl_segment *list[NUM_T];
    bloopcl_tensor tensor[NUM_T];
} workload;

typedef struct optimizer_kernel {
    cl_program program;
    cl_kernel kernel;
    bool cpu;
    size_t items;
} optimizer_kernel;

static cl_mem filled_buffer(bloopcl_context *ctx, size_t n, float value)
{
    cl_int err;
    cl_mem m = clCreateBuffer(bloopcl_context_cl_context(ctx), CL_MEM_READ_WRITE,
                              n * sizeof(float), NULL, &err);
    if (err != CL_SUCCESS)
        return NULL;
    err = clEnqueueFillBuffer(bloopcl_context_queue(ctx), m, &value, sizeof value, 0,
                              n * sizeof(float), 0, NULL, NULL);
    if (err != CL_SUCCESS) {
        clReleaseMemObject(m);
        return NULL;
    }
    return m;
}

static void destroy_workload(workload *w)
{
    for (int t = 0; t < NUM_T; ++t) {
        for (size_t s = 0; w->buffer[t] != NULL && s < w->segments; ++s)
            if (w->buffer[t][s] != NULL)
                clReleaseMemObject(w->buffer[t][s]);
        free(w->buffer[t]);
        free(w->list[t]);
    }
    free(w->count);
    memset(w, 0, sizeof *w);
}

/* g and a differ (a partly against g), so r and d are ordinary numbers. */
static int create_workload(bloopcl_context *ctx, size_t n, size_t segments, workload *w)
{
    memset(w, 0, sizeof *w);
    w->segments = segments;
    w->count = malloc(segments * sizeof *w->count);
    if (w->count == NULL || bench_segment_sizes(n, segments, w->count) != 0)
        return -1;
    for (int t = 0; t < NUM_T; ++t) {
        w->buffer[t] = calloc(segments, sizeof *w->buffer[t]);
        w->list[t] = calloc(segments, sizeof *w->list[t]);
        if (w->buffer[t] == NULL || w->list[t] == NULL)
            return -1;
        for (size_t s = 0; s < segments; ++s) {
            if ((w->buffer[t][s] = filled_buffer(ctx, w->count[s], initial_value[t])) == NULL)
                return -1;
            w->list[t][s] = (bloopcl_segment){.buffer = w->buffer[t][s], .count = w->count[s]};
        }
        w->tensor[t] = (bloopcl_tensor){w->list[t], segments};
    }
    return clFinish(bloopcl_context_queue(ctx)) == CL_SUCCESS ? 0 : -1;
}

static int build_kernel(bloopcl_context *ctx, bloopcl_optimizer_kind kind, optimizer_kernel *k)
{
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    bloopcl_context_device_info(ctx, &info);
    k->cpu = (info.type & CL_DEVICE_TYPE_CPU) != 0;
    k->items = (size_t)info.compute_units * 8;
    cl_int err;
    k->program = clCreateProgramWithSource(bloopcl_context_cl_context(ctx), 1,
                                           &optimizer_source, NULL, &err);
    if (err == CL_SUCCESS)
        err = clBuildProgram(k->program, 1, &info.device,
                             k->cpu ? "-cl-std=CL1.2 -DCONTIGUOUS" : "-cl-std=CL1.2", NULL, NULL);
    if (err == CL_SUCCESS)
        k->kernel = clCreateKernel(k->program, kind == BLOOPCL_OPTIMIZER_ADAMW ? "adamw" : "sgd",
                                   &err);
    return err == CL_SUCCESS ? 0 : -1;
}

/* The optimizer kernel over segment s (its own buffers), as a per-tensor optimizer launches. */
static int launch_segment(bloopcl_context *ctx, const optimizer_kernel *k,
                          const bloopcl_optimizer *o, const workload *w, size_t s,
                          cl_mem outputs)
{
    cl_ulong count = w->count[s];
    float lr = (float)o->lr, wd = (float)o->weight_decay, b1 = (float)o->beta1;
    float b2 = (float)o->beta2, eps = (float)o->eps, mu = (float)o->momentum;
    float step_size = lr / (1.0f - b1), bias2_sqrt = sqrtf(1.0f - b2);  /* t = 1: any t costs
                                                                            the same */
    const cl_mem mems[5] = {w->buffer[T_P_SEPARATE][s], w->buffer[T_M1][s],
                            w->buffer[T_M2][s], w->buffer[T_D][s], outputs};
    for (cl_uint i = 0; i < 5; ++i)
        clSetKernelArg(k->kernel, i, sizeof(cl_mem), &mems[i]);
    if (o->kind == BLOOPCL_OPTIMIZER_ADAMW) {
        const float values[7] = {lr, wd, b1, b2, eps, step_size, bias2_sqrt};
        for (cl_uint i = 0; i < 7; ++i)
            clSetKernelArg(k->kernel, 5 + i, sizeof(float), &values[i]);
        clSetKernelArg(k->kernel, 12, sizeof count, &count);
    } else {
        clSetKernelArg(k->kernel, 5, sizeof lr, &lr);
        clSetKernelArg(k->kernel, 6, sizeof mu, &mu);
        clSetKernelArg(k->kernel, 7, sizeof count, &count);
    }
    size_t local = k->cpu ? 1 : 256;
    size_t global = k->cpu ? k->items : (w->count[s] + local - 1) / local * local;
    return clEnqueueNDRangeKernel(bloopcl_context_queue(ctx), k->kernel, 1, NULL, &global,
                                  &local, 0, NULL, NULL) == CL_SUCCESS ? 0 : -1;
}

/* One way's step, launch and wait included; <0 on failure. */
static double separate_step(bloopcl_context *ctx, bloopcl_combiner *comb,
                            const optimizer_kernel *k, const bloopcl_optimizer *o,
                            const workload *w, cl_mem outputs)
{
    double start = tool_seconds();
    if (bloopcl_step(comb, &w->tensor[T_G], &w->tensor[T_A], &w->tensor[T_D], 0, NULL,
                     NULL) != BLOOPCL_OK)
        return -1.0;
    for (size_t s = 0; s < w->segments; ++s)
        if (launch_segment(ctx, k, o, w, s, outputs) != 0)
            return -1.0;
    clFinish(bloopcl_context_queue(ctx));
    return tool_seconds() - start;
}

static double fused_step(bloopcl_context *ctx, bloopcl_combiner *comb, const workload *w)
{
    bloopcl_step_options options = BLOOPCL_STEP_OPTIONS_INIT;
    options.update_parameters = 1;
    double start = tool_seconds();
    if (bloopcl_step_with_options(comb, &w->tensor[T_G], &w->tensor[T_A], &w->tensor[T_P_FUSED],
                                  &options, 0, NULL, NULL) != BLOOPCL_OK)
        return -1.0;
    clFinish(bloopcl_context_queue(ctx));
    return tool_seconds() - start;
}

/* Bytes per element of each way (BLOOP on FUSED, fp32; see the head of this file). */
static double separate_bytes(bloopcl_optimizer_kind kind)
{
    return 32.0 + (kind == BLOOPCL_OPTIMIZER_ADAMW ? 28.0 : 20.0);
}

static double fused_bytes(bloopcl_optimizer_kind kind)
{
    return separate_bytes(kind) - 8.0;  /* d: no write, no read back */
}

#define BLOCK 5

typedef struct optimizer_measurement {
    size_t n, segments;
    double separate_s, fused_s;
    unsigned separate_launches, fused_launches;
} optimizer_measurement;

static int measure(bloopcl_context *ctx, bloopcl_optimizer_kind kind, size_t n,
                   size_t segments, int reps, optimizer_measurement *out)
{
    workload w = {0};
    optimizer_kernel k = {0};
    bloopcl_combiner *plain = NULL, *fused = NULL;
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    config.dots = BLOOPCL_DOTS_FUSED;
    bloopcl_optimizer o;
    bloopcl_optimizer_default(&o, kind);
    o.momentum = 0.9;
    int rounds = (reps + BLOCK - 1) / BLOCK, samples = rounds * BLOCK;
    double *times = malloc(2 * (size_t)samples * sizeof *times);
    cl_mem outputs = NULL;
    int status = times != NULL && create_workload(ctx, n, segments, &w) == 0 &&
                         build_kernel(ctx, kind, &k) == 0 &&
                         bloopcl_combiner_create(ctx, &config, n, &plain) == BLOOPCL_OK &&
                         bloopcl_combiner_create(ctx, &config, n, &fused) == BLOOPCL_OK &&
                         bloopcl_combiner_set_optimizer(fused, &o) == BLOOPCL_OK &&
                         bloopcl_combiner_outputs(plain, &outputs) == BLOOPCL_OK
                     ? 0 : -1;
    for (int round = -1; round < rounds && status == 0; ++round)  /* round -1 warms up */
        for (int way = 0; way < 2 && status == 0; ++way)
            for (int i = 0; i < BLOCK && status == 0; ++i) {
                double s = way == 0 ? separate_step(ctx, plain, &k, &o, &w, outputs)
                                    : fused_step(ctx, fused, &w);
                status = s < 0.0 ? -1 : 0;
                if (round >= 0)
                    times[way * (size_t)samples + (size_t)(round * BLOCK + i)] = s;
            }
    bloopcl_diagnostics dp = BLOOPCL_DIAGNOSTICS_INIT, df = BLOOPCL_DIAGNOSTICS_INIT;
    if (status == 0 && bloopcl_get_diagnostics(plain, &dp) == BLOOPCL_OK &&
        bloopcl_get_diagnostics(fused, &df) == BLOOPCL_OK)
        *out = (optimizer_measurement){n, segments, tool_median(times, (size_t)samples),
                                       tool_median(times + samples, (size_t)samples),
                                       dp.kernels + (unsigned)segments, df.kernels};
    else
        status = -1;
    bloopcl_combiner_destroy(plain);
    bloopcl_combiner_destroy(fused);
    if (k.kernel != NULL)
        clReleaseKernel(k.kernel);
    if (k.program != NULL)
        clReleaseProgram(k.program);
    destroy_workload(&w);
    free(times);
    return status;
}

static void print_measurement(bloopcl_optimizer_kind kind, const optimizer_measurement *m)
{
    const char *name = kind == BLOOPCL_OPTIMIZER_ADAMW ? "adamw" : "sgd-momentum";
    double e = (double)m->n;
    printf("optimizer %-12s n %9zu P %4zu  separate %10.1f us  %2.0f B/elem  %3u launches  "
           "%6.2f GB/s   fused %10.1f us  %2.0f B/elem  %3u launches  %6.2f GB/s   speedup "
           "%.3fx\n", name, m->n, m->segments, m->separate_s * 1e6, separate_bytes(kind),
           m->separate_launches, separate_bytes(kind) * e / m->separate_s * 1e-9,
           m->fused_s * 1e6, fused_bytes(kind), m->fused_launches,
           fused_bytes(kind) * e / m->fused_s * 1e-9, m->separate_s / m->fused_s);
}

int bench_optimizer(bloopcl_context *ctx, bloopcl_optimizer_kind kind, const size_t *sizes,
                    size_t num_sizes, const size_t *segments, size_t num_segments, int reps)
{
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    bloopcl_context_device_info(ctx, &info);
    printf("device %u: %s / %s (%s), %d reps, median per step incl. clFinish; BLOOP, fused "
           "dots, f32, P segments in a cl_mem each; separate = bloopcl_step + the trainer's own "
           "optimizer kernel per segment, fused = update_parameters\n", info.flat_index,
           info.platform_name, info.device_name, info.driver_version, reps);
    for (size_t s = 0; s < num_sizes; ++s)
        for (size_t p = 0; p < num_segments; ++p) {
            optimizer_measurement m;
            fprintf(stderr, "bloopcl-bench: optimizer at n = %zu, P = %zu\n", sizes[s],
                    segments[p]);
            if (measure(ctx, kind, sizes[s], segments[p], reps, &m) != 0) {
                fprintf(stderr, "bloopcl-bench: the optimizer measurement failed at n = %zu, "
                        "P = %zu: %s\n", sizes[s], segments[p], bloopcl_context_last_error(ctx));
                return TOOL_EXIT_FAILED;
            }
            print_measurement(kind, &m);
            fflush(stdout);
        }
    return TOOL_EXIT_OK;
}
