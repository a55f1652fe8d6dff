/*
 * bloopcl-bench — how close a bloopcl step comes to the device's own memory bandwidth, and
 * what it costs to hand bloopcl a model's gradient as many tensors instead of one buffer.
 *
 * For each size n it first measures, in the same process and on the same device, a STREAM-like
 * triad x = y + s z (12 bytes per element), then times steps of each method and dot backend.
 * A step is judged by its effective bandwidth, bytes it must move / median step time, against
 * the triad's. Two byte counts are printed:
 *   model bytes   what an exact step must move: read g, a, m, write m, d = 20 B per element
 *                 (plus q for PCGrad: 28 B, and nothing of m for Mixed: 12 B), the lower bound;
 *   moved bytes   what the backend really reads and writes (fused: two passes, 32 B for Bloop;
 *                 CLBlast: EMA kernel, three Sdot calls, projection: 56 B for Bloop).
 * With --dtype f16 or bf16, g, a and d hold 2-byte elements (the state stays fp32) and both
 * counts follow: fused Bloop moves 22 B per element (backend_bytes); CLBlast takes fp32 only,
 * so its rows are left out.
 * With --segments the same n elements are handed over as P segments of a model-like size mix
 * (see bench_mix.c), each in a buffer of its own or end to end in one buffer per tensor;
 * each row then also shows the kernels the step enqueued (the library's own count, read from
 * bloopcl_diagnostics) and its time over the P = 1 time of the same n, method and backend.
 * Each step is followed by clFinish, so small sizes show the per-step latency (launches).
 * Steps and triads run in alternating blocks (see time_steps).
 */
#include "bench_mix.h"
#include "bench_optimizer.h"
#include "bloopcl.h"
#include "tool_cli.h"
#include "tool_device.h"
#include "tool_json.h"
#include "tool_time.h"

#include <stdbool.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SIZES 16
#define MAX_SEGMENT_COUNTS 16

typedef struct options {
    tool_common common;                   /* --device, --json, --list, --verbose, BLOOPCL_LOG */
    size_t sizes[MAX_SIZES];
    size_t num_sizes;
    size_t segments[MAX_SEGMENT_COUNTS];  /* P values; segments[0] is always 1 */
    size_t num_segments;
    bool segmented;  /* --segments given: print the segment columns */
    bool packed;     /* --layout packed: segments end to end in one buffer per tensor */
    int reps;
    bloopcl_dtype dtype;  /* --dtype: of g, a and d */
    bloopcl_optimizer_kind optimizer;  /* --optimizer: the fused-optimizer comparison instead */
} options;

typedef struct measurement {
    const char *method;
    const char *backend;
    const char *dtype;       /* of g, a and d */
    size_t n;
    size_t segments;         /* P */
    double step_seconds;     /* median */
    double model_bytes;      /* per element */
    double moved_bytes;      /* per element */
    double triad_gbs;
    unsigned kernels;        /* bloopcl_diagnostics.kernels after a step */
    double ratio_to_p1;      /* step_seconds / the P = 1 step_seconds; 0 if none */
} measurement;

/* The launch target for a step over P segments: 2 ceil(P/16) + 3. */
static size_t kernel_bound(size_t segments)
{
    return 2 * ((segments + 15) / 16) + 3;
}

/* ---- the triad reference ---------------------------------------------------------------- */

/* The triad in the shape bloopcl's own kernels take on the device (the same build options):
 * contiguous float8 chunks per work-item on CPUs, one element per work-item on GPUs. Judging
 * a step against a badly shaped triad would flatter it. */
static const char *triad_source =
    "kernel void triad(global float *x, global const float *y, global const float *z,\n"
    "                  float s, ulong n)\n"
    "{\n"
    "#ifdef CONTIGUOUS\n"
    "    size_t items = get_global_size(0);\n"
    "    size_t chunk = ((n + items - 1) / items + 7) / 8 * 8;\n"
    "    size_t begin = min((size_t)n, get_global_id(0) * chunk);\n"
    "    size_t end = min((size_t)n, begin + chunk), i = begin;\n"
    "    for (; i + 8 <= end; i += 8)\n"
    "        vstore8(vload8(0, y + i) + s * vload8(0, z + i), 0, x + i);\n"
    "    for (; i < end; ++i)\n"
    "        x[i] = y[i] + s * z[i];\n"
    "#else\n"
    "    size_t i = get_global_id(0);\n"
    "    if (i < n) x[i] = y[i] + s * z[i];\n"
    "#endif\n"
    "}\n";

typedef struct triad {
    cl_program program;
    cl_kernel kernel;
    bool cpu;
    size_t items;  /* CPUs: work-items (each one contiguous chunk) */
} triad;

static int build_triad(bloopcl_context *ctx, triad *t)
{
    cl_int err;
    cl_device_id device;
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    bloopcl_context_device_info(ctx, &info);
    device = info.device;
    t->cpu = (info.type & CL_DEVICE_TYPE_CPU) != 0;
    t->items = (size_t)info.compute_units * 8;
    t->program = clCreateProgramWithSource(bloopcl_context_cl_context(ctx), 1, &triad_source,
                                           NULL, &err);
    if (err == CL_SUCCESS)
        err = clBuildProgram(t->program, 1, &device,
                             t->cpu ? "-cl-std=CL1.2 -DCONTIGUOUS" : "-cl-std=CL1.2", NULL, NULL);
    if (err == CL_SUCCESS)
        t->kernel = clCreateKernel(t->program, "triad", &err);
    return err == CL_SUCCESS ? 0 : -1;
}

/* Binds x = y + s z over n elements to the triad kernel. */
static void bind_triad(const triad *t, cl_mem x, cl_mem y, cl_mem z, size_t n)
{
    float s = 0.5f;
    cl_ulong count = n;
    clSetKernelArg(t->kernel, 0, sizeof x, &x);
    clSetKernelArg(t->kernel, 1, sizeof y, &y);
    clSetKernelArg(t->kernel, 2, sizeof z, &z);
    clSetKernelArg(t->kernel, 3, sizeof s, &s);
    clSetKernelArg(t->kernel, 4, sizeof count, &count);
}

/* Seconds of one triad over n elements, launch and wait included (as for a step). */
static double run_triad(bloopcl_context *ctx, const triad *t, size_t n)
{
    cl_command_queue queue = bloopcl_context_queue(ctx);
    size_t local = t->cpu ? 1 : 256;
    size_t global = t->cpu ? t->items : (n + local - 1) / local * local;
    double start = tool_seconds();
    clEnqueueNDRangeKernel(queue, t->kernel, 1, NULL, &global, &local, 0, NULL, NULL);
    clFinish(queue);
    return tool_seconds() - start;
}

/* ---- the buffers a step reads and writes --------------------------------------------------- */

/* g, a and d as P segments: in P buffers each (separate) or end to end in one (packed). */
typedef struct workload {
    size_t segments, num_buffers;
    cl_mem *buffers;            /* 3 x num_buffers: g's, a's, d's */
    bloopcl_segment *lists;     /* 3 x segments */
    bloopcl_tensor tensor[3];   /* g, a, d */
    size_t largest, smallest;   /* segment counts, for the report */
} workload;

static void destroy_workload(workload *w)
{
    for (size_t b = 0; w->buffers != NULL && b < 3 * w->num_buffers; ++b)
        if (w->buffers[b] != NULL)
            clReleaseMemObject(w->buffers[b]);
    free(w->buffers);
    free(w->lists);
    *w = (workload){0};
}

/* A buffer of `count` elements of `dtype` holding elements first .. first + count - 1 of
 * the N(0,1) stream `seed` (rounded into the type), so that the values do not depend on the
 * layout. */
static cl_mem random_buffer(bloopcl_context *ctx, size_t count, uint64_t seed, size_t first,
                           bloopcl_dtype dtype)
{
    cl_int err;
    size_t elem = bloopcl_dtype_size(dtype);
    cl_mem buffer = clCreateBuffer(bloopcl_context_cl_context(ctx), CL_MEM_READ_WRITE,
                                   count * elem, NULL, &err);
    if (err != CL_SUCCESS)
        return NULL;
    size_t block = (size_t)1 << 20;
    float *host = malloc(block * sizeof *host);
    unsigned char *typed = malloc(block * elem);   /* not in place: the sizes differ */
    for (size_t done = 0; err == CL_SUCCESS && done < count; done += block) {
        size_t part = count - done < block ? count - done : block;
        err = host && typed ? CL_SUCCESS : CL_OUT_OF_HOST_MEMORY;
        if (err == CL_SUCCESS) {
            bloopcl_reference_normal(seed, first + done, part, host);
            bloopcl_convert(host, BLOOPCL_DTYPE_F32, typed, dtype, part);
            err = clEnqueueWriteBuffer(bloopcl_context_queue(ctx), buffer, CL_TRUE, done * elem,
                                       part * elem, typed, 0, NULL, NULL);
        }
    }
    free(host);
    free(typed);
    if (err != CL_SUCCESS) {
        clReleaseMemObject(buffer);
        return NULL;
    }
    return buffer;
}

static int create_workload(bloopcl_context *ctx, size_t n, size_t segments, bool packed,
                           bloopcl_dtype dtype, workload *w)
{
    size_t elem = bloopcl_dtype_size(dtype);
    *w = (workload){.segments = segments, .num_buffers = packed ? 1 : segments};
    size_t *count = malloc(segments * sizeof *count);
    w->buffers = calloc(3 * w->num_buffers, sizeof *w->buffers);
    w->lists = calloc(3 * segments, sizeof *w->lists);
    int status = count && w->buffers && w->lists ? bench_segment_sizes(n, segments, count) : -1;
    w->smallest = n;
    for (size_t s = 0, first = 0; status == 0 && s < segments; first += count[s], ++s) {
        w->largest = count[s] > w->largest ? count[s] : w->largest;
        w->smallest = count[s] < w->smallest ? count[s] : w->smallest;
        for (int k = 0; k < 3 && status == 0; ++k) {
            cl_mem *buffer = &w->buffers[(size_t)k * w->num_buffers + (packed ? 0 : s)];
            if (*buffer == NULL)
                *buffer = random_buffer(ctx, packed ? n : count[s], (uint64_t)k + 1,
                                        packed ? 0 : first, dtype);
            status = *buffer ? 0 : -1;
            w->lists[(size_t)k * segments + s] = (bloopcl_segment){
                .buffer = *buffer, .offset_bytes = packed ? first * elem : 0,
                .count = count[s], .dtype = dtype};
        }
    }
    for (int k = 0; k < 3; ++k)
        w->tensor[k] = (bloopcl_tensor){w->lists + (size_t)k * segments, segments};
    free(count);
    if (status != 0)
        destroy_workload(w);
    return status;
}

/* ---- steps -------------------------------------------------------------------------------- */

/* The lower bound: read g, a (e bytes each) and the state, write the state (4 B per EMA) and
 * d (e bytes): 3e + 8 (Bloop, Dynamic Barrier), 3e + 16 (PCGrad: m and q), 3e (Mixed). */
static double model_bytes(bloopcl_method method, double e)
{
    switch (method) {
    case BLOOPCL_METHOD_MIXED: return 3 * e;
    case BLOOPCL_METHOD_PCGRAD: return 3 * e + 16;
    default: return 3 * e + 8;
    }
}

/* Bytes per element each backend really moves, from the structure of src/step.c,
 * dots_fused.c and dots_clblast.c (non-finite check on); g, a and d of e bytes, the state
 * fp32. Fused: 5e + 12 (Bloop: 32 B in f32, 22 B in 2-byte types), PCGrad 5e + 24 (44, 34),
 * Mixed 5e (20, 10). */
static double backend_bytes(bloopcl_method method, bloopcl_dot_backend dots, double e)
{
    bool pcgrad = method == BLOOPCL_METHOD_PCGRAD, mixed = method == BLOOPCL_METHOD_MIXED;
    if (mixed)  /* pass 1 reads g, a; pass 2 reads g, a, writes d (both backends) */
        return 2 * e + 3 * e;
    if (dots == BLOOPCL_DOTS_FUSED)  /* pass 1 reads g, a, m (q); pass 2 also writes m (q), d */
        return pcgrad ? (2 * e + 8) + (3 * e + 16) : (2 * e + 4) + (3 * e + 8);
    /* EMA kernel: read g, a, m (q), write m' (q'); Sdot reads both operands (8 B each);
     * projection reads g, a, m' (q'), writes d */
    return pcgrad ? 24 + 5 * 8 + 24 : 16 + 3 * 8 + 16;
}

/* Times steps and triads in alternating blocks of BLOCK runs each: blocks, so that each keeps
 * the caches as a loop of its own kind would (at 1M elements everything lives in L3);
 * alternating, so that all see the same machine (a shared host's bandwidth drifts, and the
 * ratio to P = 1 is only meaningful if both were timed under the same load). Each workload
 * has a combiner of its own, so each keeps the plan of its own segment list. The medians go
 * to step_seconds[w] and *triad_seconds, the kernels of each workload's last step (the
 * library's count) to kernels[w]. */
#define BLOCK 5
typedef struct timing {
    double *samples;             /* rounds x BLOCK per workload, then as many triads */
    bloopcl_combiner **combiners;
} timing;

static int time_steps(bloopcl_context *ctx, const triad *t, bloopcl_method method,
                      bloopcl_dot_backend dots, const workload *w, size_t num_workloads,
                      size_t n, int reps, double *step_seconds, double *triad_seconds,
                      unsigned *kernels)
{
    bloopcl_config config;
    bloopcl_config_default(&config, method);
    config.dots = dots;
    int rounds = (reps + BLOCK - 1) / BLOCK, samples = rounds * BLOCK;
    timing tm = {malloc((num_workloads + 1) * (size_t)samples * sizeof *tm.samples),
                 calloc(num_workloads, sizeof *tm.combiners)};
    int status = tm.samples && tm.combiners ? 0 : -1;
    for (size_t k = 0; k < num_workloads && status == 0; ++k)
        status = bloopcl_combiner_create(ctx, &config, n, &tm.combiners[k]) == BLOOPCL_OK ? 0 : -1;
    double *triads = tm.samples + num_workloads * (size_t)samples;
    for (int round = -1; round < rounds && status == 0; ++round) {  /* round -1 warms up */
        for (size_t k = 0; k < num_workloads && status == 0; ++k)
            for (int i = 0; i < BLOCK && status == 0; ++i) {
                double start = tool_seconds();
                status = bloopcl_step(tm.combiners[k], &w[k].tensor[0], &w[k].tensor[1],
                                      &w[k].tensor[2], 0, NULL, NULL) == BLOOPCL_OK ? 0 : -1;
                bloopcl_context_finish(ctx);
                if (round >= 0)
                    tm.samples[k * (size_t)samples + (size_t)(round * BLOCK + i)] =
                        tool_seconds() - start;
            }
        for (int i = 0; i < BLOCK; ++i) {
            double seconds = run_triad(ctx, t, n);
            if (round >= 0)
                triads[round * BLOCK + i] = seconds;
        }
    }
    for (size_t k = 0; k < num_workloads && status == 0; ++k) {
        bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
        status = bloopcl_get_diagnostics(tm.combiners[k], &diag) == BLOOPCL_OK ? 0 : -1;
        kernels[k] = status == 0 ? diag.kernels : 0;
        step_seconds[k] = tool_median(tm.samples + k * (size_t)samples, (size_t)samples);
    }
    if (status == 0)
        *triad_seconds = tool_median(triads, (size_t)samples);
    for (size_t k = 0; tm.combiners != NULL && k < num_workloads; ++k)
        bloopcl_combiner_destroy(tm.combiners[k]);
    free(tm.samples);
    free(tm.combiners);
    return status;
}

/* ---- output ------------------------------------------------------------------------------- */

static void print_header(bool segmented)
{
    printf("%-16s %-8s %-5s %10s %6s %12s %9s %9s %9s %8s %8s %7s", "method", "backend",
           "dtype", "n", "moved", "step", "model", "moved", "triad", "moved/", "model/",
           "kernels");
    if (segmented)
        printf(" %5s %7s %7s", "P", "bound", "vs P=1");
    printf("\n%-16s %-8s %-5s %10s %6s %12s %9s %9s %9s %8s %8s %7s", "", "", "", "",
           "B/elem", "(median)", "GB/s", "GB/s", "GB/s", "triad", "triad", "/step");
    if (segmented)
        printf(" %5s %7s %7s", "", "/step", "time");
    printf("\n");
}

static void print_row(const measurement *m, bool segmented)
{
    double model_gbs = m->model_bytes * (double)m->n / m->step_seconds / 1e9;
    double moved_gbs = m->moved_bytes * (double)m->n / m->step_seconds / 1e9;
    printf("%-16s %-8s %-5s %10zu %6.0f %9.1f us %9.2f %9.2f %9.2f %8.3f %8.3f %7u",
           m->method, m->backend, m->dtype, m->n, m->moved_bytes, m->step_seconds * 1e6,
           model_gbs, moved_gbs, m->triad_gbs,
           moved_gbs / m->triad_gbs, model_gbs / m->triad_gbs, m->kernels);
    if (segmented)
        printf(" %5zu %7zu %6.2fx", m->segments, kernel_bound(m->segments), m->ratio_to_p1);
    printf("\n");
}

/* The targets, for the fused Bloop, Dynamic Barrier and Mixed steps over P > 1
 * segments: time <= 1.10 x the P = 1 time (at n = 16M on PoCL) and
 * kernels <= 2 ceil(P/16) + 3. */
static void print_targets(const measurement *all, size_t count)
{
    printf("\ntargets (issue 8): fused Bloop / Dynamic Barrier / Mixed over P segments, time "
           "<= 1.10x P = 1 at n = 16M, kernels <= 2 ceil(P/16) + 3\n");
    for (size_t i = 0; i < count; ++i) {
        const measurement *m = &all[i];
        if (m->segments == 1 || strcmp(m->backend, "fused") != 0 ||
            strcmp(m->method, "pcgrad") == 0)
            continue;
        /* The time target is stated at n = 16M: smaller n are launch-bound by nature. */
        const char *time_verdict = m->n != ((size_t)16 << 20) ? "target at n = 16M"
                                 : m->ratio_to_p1 <= 1.10 ? "met" : "missed";
        const char *kernel_verdict = m->kernels == 0 ? "not counted by this library"
                                   : m->kernels <= kernel_bound(m->segments) ? "met" : "missed";
        printf("  %-16s n %9zu P %4zu: %6.2fx P=1 (%s), %4u kernels (bound %zu: %s)\n",
               m->method, m->n, m->segments, m->ratio_to_p1, time_verdict, m->kernels,
               kernel_bound(m->segments), kernel_verdict);
    }
}

static const tool_spec BENCH_TOOL;

/* The JSON document (schema "bloopcl-bench/1"): the device, the settings, one result per
 * measurement. */
static void print_json(const measurement *all, size_t count, const options *opt,
                       const bloopcl_device_info *info)
{
    tool_json json;
    tool_json_init(&json, stdout);
    tool_json_document_begin(&json, &BENCH_TOOL);
    tool_json_device(&json, "device", info);
    tool_json_integer(&json, "reps", opt->reps);
    tool_json_string(&json, "layout", opt->packed ? "packed" : "separate");
    tool_json_string(&json, "dtype", bloopcl_dtype_name(opt->dtype));
    tool_json_array_begin(&json, "results");
    for (size_t i = 0; i < count; ++i) {
        const measurement *m = &all[i];
        tool_json_object_begin(&json, NULL);
        tool_json_string(&json, "method", m->method);
        tool_json_string(&json, "backend", m->backend);
        tool_json_string(&json, "dtype", m->dtype);
        tool_json_unsigned(&json, "n", m->n);
        tool_json_unsigned(&json, "segments", m->segments);
        tool_json_number(&json, "step_seconds", m->step_seconds);
        tool_json_number(&json, "ratio_to_p1", m->ratio_to_p1);
        tool_json_number(&json, "model_bytes_per_element", m->model_bytes);
        tool_json_number(&json, "moved_bytes_per_element", m->moved_bytes);
        tool_json_number(&json, "triad_gbs", m->triad_gbs);
        tool_json_unsigned(&json, "kernels_per_step", m->kernels);
        tool_json_unsigned(&json, "kernels_bound", kernel_bound(m->segments));
        tool_json_object_end(&json);
    }
    tool_json_document_end(&json);
}

/* ---- command line ------------------------------------------------------------------------- */

static void help(FILE *to)
{
    fputs("Times one step of every method with both dot backends on the device that\n"
          "--device (or BLOOPCL_DEVICE) selects, next to a triad measured in the same run.\n"
          "Sizes accept k/M suffixes (65536, 1M, 16M). Defaults: --sizes 4096,65536,1M,16M,64M\n"
          "--reps 20. Progress goes to stderr. 'kernels /step' is the library's own count\n"
          "(bloopcl_diagnostics.kernels).\n"
          "\n"
          "Options:\n"
          "  --sizes N,...     the sizes n (up to 16)\n"
          "  --reps R          timed steps per measurement (default 20)\n"
          "  --segments P,...  also hand each n over as P segments of a model-like mix (P = 1,\n"
          "                    one buffer, is always measured too): a large matrix of min(n/8,\n"
          "                    n/(2 ceil(P/100))) elements every 100 segments, vectors of\n"
          "                    1..min(1024, n/(16P)) elements at odd positions, medium\n"
          "                    matrices sharing the rest; the sizes sum to n. Adds P, the\n"
          "                    launch bound 2 ceil(P/16) + 3 and the time over the P = 1 time\n"
          "                    to each row. Target (issue 8): at n = 16M, P = 300 costs\n"
          "                    <= 1.10x P = 1 on PoCL and launches per step <= 2 ceil(P/16) + 3.\n"
          "  --layout L        separate (default): each segment in a cl_mem of its own;\n"
          "                    packed: the segments end to end in one cl_mem per tensor.\n"
          "  --dtype T         f32 (default), f16 or bf16: the type of g, a and d (the state\n"
          "                    stays f32); the byte counts follow (fused Bloop 32 B/element in\n"
          "                    f32, 22 B in a 2-byte type). clblast takes f32 only: its rows\n"
          "                    are left out for f16 and bf16.\n"
          "  --json            stdout is one JSON document: device, reps, layout, dtype,\n"
          "                    results[] (method, backend, dtype, n, segments, step_seconds, ratio_to_p1, bytes\n"
          "                    per element, triad_gbs, kernels_per_step, kernels_bound)\n"
          "  --optimizer O     adamw or sgd (with momentum 0.9): instead of the above, time\n"
          "                    BLOOP (fused dots, f32, one buffer per tensor) followed by an\n"
          "                    optimizer kernel of the trainer's own (reads d) against the\n"
          "                    step with the optimizer fused into its pass 2\n"
          "                    (update_parameters): time, bytes per element (AdamW 60 vs 52,\n"
          "                    SGD 52 vs 44), launches and the speedup (target, issue 12:\n"
          "                    >= 1.12x at 16M and 64M). With --segments, each of P\n"
          "                    segments in its own cl_mem and one optimizer launch per\n"
          "                    segment on the separate side. Not with --json.\n"
          "Default (no --segments): one buffer per tensor, as a single-buffer trainer does.\n",
          to);
}

/* One size of a list, with an optional k or M suffix (powers of 1024), into out[index]. */
static bool parse_size(const char *text, size_t index, void *out)
{
    char *end = NULL;
    double value = strtod(text, &end);
    if (end == text || !(value >= 1))
        return false;
    if (*end == 'k' || *end == 'K')
        value *= 1024, ++end;
    else if (*end == 'M' || *end == 'm')
        value *= 1024 * 1024, ++end;
    if (*end != '\0' || !(value <= (double)((size_t)1 << 40)))
        return false;
    ((size_t *)out)[index] = (size_t)value;
    return true;
}

/* --segments: P = 1 first (the reference of every ratio), then the others once each. */
static bool parse_segments(const char *list, options *opt)
{
    size_t values[MAX_SEGMENT_COUNTS], count;
    if (!tool_split_list(list, MAX_SEGMENT_COUNTS, &count, parse_size, values))
        return false;
    opt->num_segments = 1;
    opt->segmented = true;
    for (size_t i = 0; i < count; ++i) {
        bool seen = false;
        for (size_t j = 0; j < opt->num_segments; ++j)
            seen = seen || opt->segments[j] == values[i];
        if (!seen && opt->num_segments == MAX_SEGMENT_COUNTS)
            return false;
        if (!seen)
            opt->segments[opt->num_segments++] = values[i];
    }
    return true;
}

static const tool_spec BENCH_TOOL;

/* Every n must hold every P of the mix (one element per segment at least). */
static bool check_fit(void *user)
{
    const options *opt = user;
    if (opt->optimizer != BLOOPCL_OPTIMIZER_NONE && opt->common.json)
        return tool_usage_error(&BENCH_TOOL, "--optimizer does not take --json");
    for (size_t s = 0; s < opt->num_sizes; ++s)
        for (size_t p = 0; p < opt->num_segments; ++p) {
            size_t *count = malloc(opt->segments[p] * sizeof *count);
            bool fits = count && bench_segment_sizes(opt->sizes[s], opt->segments[p], count) == 0;
            free(count);
            if (!fits)
                return tool_usage_error(&BENCH_TOOL, "n = %zu is too small for %zu segments",
                                        opt->sizes[s], opt->segments[p]);
        }
    return true;
}

enum { OPT_SIZES, OPT_REPS, OPT_SEGMENTS, OPT_LAYOUT, OPT_DTYPE, OPT_OPTIMIZER };

static const tool_option BENCH_OPTIONS[] = {
    {"sizes", true, OPT_SIZES},
    {"reps", true, OPT_REPS},
    {"segments", true, OPT_SEGMENTS},
    {"layout", true, OPT_LAYOUT},
    {"dtype", true, OPT_DTYPE},
    {"optimizer", true, OPT_OPTIMIZER},
};

static bool parse_dtype(const char *text, bloopcl_dtype *dtype)
{
    static const bloopcl_dtype ALL[] = {BLOOPCL_DTYPE_F32, BLOOPCL_DTYPE_F16, BLOOPCL_DTYPE_BF16};
    for (size_t k = 0; k < 3; ++k)
        if (strcmp(text, bloopcl_dtype_name(ALL[k])) == 0) {
            *dtype = ALL[k];
            return true;
        }
    return false;
}

static bool apply_option(int id, const char *value, void *user)
{
    options *opt = user;
    unsigned long long reps = 0;
    switch (id) {
    case OPT_SIZES:
        if (!tool_split_list(value, MAX_SIZES, &opt->num_sizes, parse_size, opt->sizes))
            return tool_usage_error(&BENCH_TOOL, "--sizes takes up to %d sizes (k, M "
                                    "suffixes), comma-separated, not \"%s\"", MAX_SIZES, value);
        return true;
    case OPT_SEGMENTS:
        if (!parse_segments(value, opt))
            return tool_usage_error(&BENCH_TOOL, "--segments takes up to %d counts, "
                                    "comma-separated, not \"%s\"", MAX_SEGMENT_COUNTS - 1, value);
        return true;
    case OPT_LAYOUT:
        if (strcmp(value, "packed") != 0 && strcmp(value, "separate") != 0)
            return tool_usage_error(&BENCH_TOOL, "--layout takes separate or packed, not \"%s\"",
                                    value);
        opt->packed = strcmp(value, "packed") == 0;
        return true;
    case OPT_OPTIMIZER:
        if (strcmp(value, "adamw") != 0 && strcmp(value, "sgd") != 0)
            return tool_usage_error(&BENCH_TOOL, "--optimizer takes adamw or sgd, not \"%s\"",
                                    value);
        opt->optimizer = strcmp(value, "adamw") == 0 ? BLOOPCL_OPTIMIZER_ADAMW
                                                     : BLOOPCL_OPTIMIZER_SGD;
        return true;
    case OPT_DTYPE:
        if (!parse_dtype(value, &opt->dtype))
            return tool_usage_error(&BENCH_TOOL, "--dtype takes f32, f16 or bf16, not \"%s\"",
                                    value);
        return true;
    default:   /* OPT_REPS */
        if (!tool_parse_unsigned(value, 1, 1000000, &reps))
            return tool_usage_error(&BENCH_TOOL, "--reps takes 1..1000000, not \"%s\"", value);
        opt->reps = (int)reps;
        return true;
    }
}

static const tool_spec BENCH_TOOL = {
    .name = "bloopcl-bench",
    .usage = "usage: bloopcl-bench [--sizes N,N,...] [--segments P,P,...] [--layout L]\n"
             "                     [--dtype f32|f16|bf16] [--reps R] [--json] [--device SPEC]\n",
    .failure = "a measurement failed",
    .schema = "bloopcl-bench/1",
    .help = help,
    .options = BENCH_OPTIONS,
    .num_options = sizeof BENCH_OPTIONS / sizeof BENCH_OPTIONS[0],
    .apply = apply_option,
    .check = check_fit,
};

static const bloopcl_method methods[] = {BLOOPCL_METHOD_BLOOP, BLOOPCL_METHOD_DYNAMIC_BARRIER,
                                         BLOOPCL_METHOD_PCGRAD, BLOOPCL_METHOD_MIXED};
static const bloopcl_dot_backend backends[] = {BLOOPCL_DOTS_FUSED, BLOOPCL_DOTS_CLBLAST};
#define NUM_METHODS (sizeof methods / sizeof methods[0])
#define NUM_BACKENDS (sizeof backends / sizeof backends[0])

/* CLBlastSdot reads fp32 only: with 2-byte g, a and d its backend is left out. */
static bool backend_runs(bloopcl_dot_backend dots, const options *opt)
{
    return dots == BLOOPCL_DOTS_FUSED || opt->dtype == BLOOPCL_DTYPE_F32;
}

static size_t backends_run(const options *opt)
{
    size_t count = 0;
    for (size_t b = 0; b < NUM_BACKENDS; ++b)
        count += backend_runs(backends[b], opt);
    return count;
}

/* Every method and backend at size n over every workload (one measurement per workload,
 * in the order of the workloads); returns the measurements written. */
static size_t bench_workloads(bloopcl_context *ctx, const triad *t, const options *opt,
                              const workload *w, size_t num_workloads, size_t n,
                              measurement *out)
{
    size_t count = 0;
    double *seconds = malloc(num_workloads * sizeof *seconds);
    unsigned *kernels = malloc(num_workloads * sizeof *kernels);
    for (size_t m = 0; seconds && kernels && m < NUM_METHODS; ++m)
        for (size_t b = 0; b < NUM_BACKENDS; ++b) {
            if (!backend_runs(backends[b], opt))
                continue;
            const char *method = bloopcl_method_name(methods[m]);
            const char *backend = backends[b] == BLOOPCL_DOTS_FUSED ? "fused" : "clblast";
            double triad_seconds = 0.0;
            fprintf(stderr, "bloopcl-bench: %s %s n=%zu\n", method, backend, n);
            if (time_steps(ctx, t, methods[m], backends[b], w, num_workloads, n, opt->reps,
                           seconds, &triad_seconds, kernels) != 0) {
                fprintf(stderr, "bloopcl-bench: failed: %s\n", bloopcl_context_last_error(ctx));
                continue;
            }
            double e = (double)bloopcl_dtype_size(opt->dtype);
            for (size_t k = 0; k < num_workloads; ++k)
                out[count++] = (measurement){
                    .method = method, .backend = backend, .dtype = bloopcl_dtype_name(opt->dtype),
                    .n = n, .segments = w[k].segments, .step_seconds = seconds[k],
                    .model_bytes = model_bytes(methods[m], e),
                    .moved_bytes = backend_bytes(methods[m], backends[b], e),
                    .triad_gbs = 12.0 * (double)n / triad_seconds / 1e9, .kernels = kernels[k]};
        }
    free(seconds);
    free(kernels);
    return count;
}

/* Every P at size n, the triad on buffers of its own; returns the measurements written. */
static size_t bench_size(bloopcl_context *ctx, const triad *t, const options *opt, size_t n,
                         measurement *out)
{
    cl_mem x = random_buffer(ctx, n, 4, 0, BLOOPCL_DTYPE_F32);
    cl_mem y = random_buffer(ctx, n, 5, 0, BLOOPCL_DTYPE_F32);
    cl_mem z = random_buffer(ctx, n, 6, 0, BLOOPCL_DTYPE_F32);
    workload w[MAX_SEGMENT_COUNTS] = {{0}};
    size_t made = 0, count = 0;
    int status = x && y && z ? 0 : -1;
    while (status == 0 && made < opt->num_segments) {
        status = create_workload(ctx, n, opt->segments[made], opt->packed, opt->dtype,
                                 &w[made]);
        if (status == 0 && opt->segmented && !opt->common.json)
            printf("n %zu, P %zu (%s): segments of %zu .. %zu elements\n", n, w[made].segments,
                   opt->packed ? "packed" : "separate", w[made].smallest, w[made].largest);
        made += status == 0;
    }
    if (status == 0) {
        bind_triad(t, x, y, z, n);
        count = bench_workloads(ctx, t, opt, w, made, n, out);
    } else {
        fprintf(stderr, "bloopcl-bench: cannot allocate the buffers for n = %zu\n", n);
    }
    for (size_t k = 0; k < made; ++k)
        destroy_workload(&w[k]);
    cl_mem all[] = {x, y, z};
    for (size_t i = 0; i < 3; ++i)
        if (all[i] != NULL)
            clReleaseMemObject(all[i]);
    return count;
}

/* Each measurement's time over the P = 1 time of the same n, method and backend. */
static void fill_ratios(measurement *all, size_t count)
{
    for (size_t i = 0; i < count; ++i)
        for (size_t j = 0; j < count; ++j)
            if (all[j].segments == 1 && all[j].n == all[i].n &&
                strcmp(all[j].method, all[i].method) == 0 &&
                strcmp(all[j].backend, all[i].backend) == 0 &&
                strcmp(all[j].dtype, all[i].dtype) == 0)
                all[i].ratio_to_p1 = all[i].step_seconds / all[j].step_seconds;
}

static void print_table(const measurement *all, size_t count, const options *opt)
{
    print_header(opt->segmented);
    for (size_t i = 0; i < count; ++i)
        print_row(&all[i], opt->segmented);
    if (opt->segmented)
        print_targets(all, count);
}

/* Every measurement on the context's device; returns the exit status. */
static int bench(bloopcl_context *ctx, const triad *t, const options *opt)
{
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    bloopcl_context_device_info(ctx, &info);
    if (!opt->common.json)
        printf("device %u: %s / %s (%s), %d reps, median per step incl. clFinish; g, a, d %s, "
               "state f32%s\n", info.flat_index, info.platform_name, info.device_name,
               info.driver_version, opt->reps, bloopcl_dtype_name(opt->dtype),
               opt->dtype == BLOOPCL_DTYPE_F32 ? ""
                                               : "; clblast left out (it takes f32 only)");
    size_t expected = opt->num_sizes * opt->num_segments * NUM_METHODS * backends_run(opt);
    size_t count = 0;
    measurement *all = calloc(expected, sizeof *all);
    for (size_t s = 0; all != NULL && s < opt->num_sizes; ++s)
        count += bench_size(ctx, t, opt, opt->sizes[s], all + count);
    fill_ratios(all, count);
    if (opt->common.json)
        print_json(all, count, opt, &info);
    else
        print_table(all, count, opt);
    free(all);
    return count == expected ? TOOL_EXIT_OK : TOOL_EXIT_FAILED;
}

int main(int argc, char **argv)
{
    options opt = {.sizes = {4096, 65536, 1 << 20, 16 << 20, 64 << 20}, .num_sizes = 5,
                   .segments = {1}, .num_segments = 1, .reps = 20};
    bloopcl_context *ctx = NULL;
    int status = tool_setup(&BENCH_TOOL, argc, argv, &opt.common, &opt, &ctx);
    if (status != TOOL_CONTINUE)
        return status;
    triad t = {0};
    if (build_triad(ctx, &t) != 0) {
        fprintf(stderr, "%s: the triad kernel does not build on this device\n", BENCH_TOOL.name);
        status = TOOL_EXIT_FAILED;
    } else if (opt.optimizer != BLOOPCL_OPTIMIZER_NONE) {
        status = bench_optimizer(ctx, opt.optimizer, opt.sizes, opt.num_sizes, opt.segments,
                                 opt.num_segments, opt.reps);
    } else {
        status = bench(ctx, &t, &opt);
    }
    if (t.kernel != NULL)
        clReleaseKernel(t.kernel);
    if (t.program != NULL)
        clReleaseProgram(t.program);
    bloopcl_context_destroy(ctx);
    return status;
}
