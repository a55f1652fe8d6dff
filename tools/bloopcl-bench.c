/*
 * bloopcl-bench — how close a bloopcl step comes to the device's own memory bandwidth.
 *
 * For each size n it first measures, in the same process and on the same device, a STREAM-like
 * triad x = y + s z (12 bytes per element), then times steps of each method and dot backend.
 * A step is judged by its effective bandwidth, bytes it must move / median step time, against
 * the triad's. Two byte counts are printed:
 *   model bytes   what an exact step must move: read g, a, m, write m, d = 20 B per element
 *                 (plus q for PCGrad: 28 B, and nothing of m for Mixed: 12 B), the lower bound;
 *   moved bytes   what the backend really reads and writes (fused: two passes, 32 B for Bloop;
 *                 CLBlast: EMA kernel, three Sdot calls, projection: 56 B for Bloop).
 * Each step is followed by clFinish, so small sizes show the per-step latency (launches).
 * Steps and triads run in alternating blocks (see time_steps).
 */
#include "bloopcl.h"
#include "tool_context.h"

#include <getopt.h>
#include <stdbool.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SIZES 16

typedef struct options {
    size_t sizes[MAX_SIZES];
    size_t num_sizes;
    int reps;
    int json;
    const char *device;
} options;

typedef struct measurement {
    const char *method;
    const char *backend;
    size_t n;
    double step_seconds;     /* median */
    double model_bytes;      /* per element */
    double moved_bytes;      /* per element */
    int launches;
    double triad_gbs;
} measurement;

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int compare_doubles(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static double median(double *values, int count)
{
    qsort(values, (size_t)count, sizeof *values, compare_doubles);
    return count % 2 ? values[count / 2] : 0.5 * (values[count / 2 - 1] + values[count / 2]);
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
    bloopcl_device_info info;
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
    double start = now_seconds();
    clEnqueueNDRangeKernel(queue, t->kernel, 1, NULL, &global, &local, 0, NULL, NULL);
    clFinish(queue);
    return now_seconds() - start;
}

/* ---- steps -------------------------------------------------------------------------------- */

static double model_bytes(bloopcl_method method)
{
    switch (method) {
    case BLOOPCL_METHOD_MIXED: return 12.0;
    case BLOOPCL_METHOD_PCGRAD: return 28.0;
    default: return 20.0;
    }
}

/* Bytes per element each backend really moves, and its kernel launches per step, from the
 * structure of src/step.c, dots_fused.c and dots_clblast.c (non-finite check on). */
static void backend_traffic(bloopcl_method method, bloopcl_dot_backend dots, double *bytes,
                            int *launches)
{
    bool pcgrad = method == BLOOPCL_METHOD_PCGRAD, mixed = method == BLOOPCL_METHOD_MIXED;
    if (dots == BLOOPCL_DOTS_FUSED) {
        /* pass 1 reads g, a, m (q); pass 2 reads g, a, m (q), writes m (q), d */
        *bytes = mixed ? 8 + 12 : pcgrad ? 16 + 28 : 12 + 20;
        *launches = 3;
        return;
    }
    /* EMA kernel: read g, a, m (q), write m' (q'); Sdot reads both operands (8 B each);
     * projection reads g, a, m' (q'), writes d */
    if (mixed) {
        *bytes = 8 + 12;
        *launches = 3;
    } else if (pcgrad) {
        *bytes = 24 + 5 * 8 + 24;
        *launches = 1 + 10 + 2;
    } else {
        *bytes = 16 + 3 * 8 + 16;
        *launches = 1 + 6 + 2;
    }
}

/* Times steps and triads in alternating blocks of BLOCK runs each: blocks, so that each keeps
 * the caches as a loop of its own kind would (at 1M elements everything lives in L3);
 * alternating, so that both see the same machine (a shared host's bandwidth drifts). The
 * medians of each go to *step_seconds and *triad_seconds. */
#define BLOCK 5
static int time_steps(bloopcl_context *ctx, const triad *t, bloopcl_method method,
                      bloopcl_dot_backend dots, cl_mem g, cl_mem a, cl_mem d, cl_mem scratch,
                      size_t n, int reps, double *step_seconds, double *triad_seconds)
{
    bloopcl_config config;
    bloopcl_config_default(&config, method);
    config.dots = dots;
    bloopcl_combiner *comb = NULL;
    if (bloopcl_combiner_create(ctx, &config, n, &comb) != BLOOPCL_OK)
        return -1;
    bind_triad(t, scratch, g, a, n);
    int rounds = (reps + BLOCK - 1) / BLOCK, samples = rounds * BLOCK;
    double *steps = malloc((size_t)samples * sizeof *steps);
    double *triads = malloc((size_t)samples * sizeof *triads);
    int status = steps && triads ? 0 : -1;
    for (int round = -1; round < rounds && status == 0; ++round) {  /* round -1 warms up */
        for (int k = 0; k < BLOCK && status == 0; ++k) {
            double start = now_seconds();
            status = bloopcl_step_buffers(comb, g, a, d) == BLOOPCL_OK ? 0 : -1;
            bloopcl_context_finish(ctx);
            if (round >= 0)
                steps[round * BLOCK + k] = now_seconds() - start;
        }
        for (int k = 0; k < BLOCK; ++k) {
            double seconds = run_triad(ctx, t, n);
            if (round >= 0)
                triads[round * BLOCK + k] = seconds;
        }
    }
    if (status == 0) {
        *step_seconds = median(steps, samples);
        *triad_seconds = median(triads, samples);
    }
    free(steps);
    free(triads);
    bloopcl_combiner_destroy(comb);
    return status;
}

static cl_mem random_buffer(bloopcl_context *ctx, size_t n, uint64_t seed)
{
    cl_int err;
    cl_mem buffer = clCreateBuffer(bloopcl_context_cl_context(ctx), CL_MEM_READ_WRITE,
                                   n * sizeof(float), NULL, &err);
    if (err != CL_SUCCESS)
        return NULL;
    size_t block = (size_t)1 << 20;
    float *host = malloc(block * sizeof *host);
    for (size_t first = 0; host != NULL && first < n; first += block) {
        size_t count = n - first < block ? n - first : block;
        bloopcl_reference_normal(seed, first, count, host);
        clEnqueueWriteBuffer(bloopcl_context_queue(ctx), buffer, CL_TRUE, first * sizeof(float),
                             count * sizeof(float), host, 0, NULL, NULL);
    }
    free(host);
    return buffer;
}

/* ---- output ------------------------------------------------------------------------------- */

static void print_header(void)
{
    printf("%-16s %-8s %10s %12s %9s %9s %9s %8s %8s %7s\n", "method", "backend", "n", "step",
           "model", "moved", "triad", "moved/", "model/", "kernels");
    printf("%-16s %-8s %10s %12s %9s %9s %9s %8s %8s %7s\n", "", "", "", "(median)", "GB/s",
           "GB/s", "GB/s", "triad", "triad", "/step");
}

static void print_row(const measurement *m)
{
    double model_gbs = m->model_bytes * (double)m->n / m->step_seconds / 1e9;
    double moved_gbs = m->moved_bytes * (double)m->n / m->step_seconds / 1e9;
    printf("%-16s %-8s %10zu %9.1f us %9.2f %9.2f %9.2f %8.3f %8.3f %7d\n", m->method,
           m->backend, m->n, m->step_seconds * 1e6, model_gbs, moved_gbs, m->triad_gbs,
           moved_gbs / m->triad_gbs, model_gbs / m->triad_gbs, m->launches);
}

static void print_json(const measurement *all, size_t count)
{
    printf("[\n");
    for (size_t i = 0; i < count; ++i) {
        const measurement *m = &all[i];
        printf("  {\"method\": \"%s\", \"backend\": \"%s\", \"n\": %zu, \"step_seconds\": %.9g, "
               "\"model_bytes_per_element\": %g, \"moved_bytes_per_element\": %g, "
               "\"triad_gbs\": %.6g, \"launches_per_step\": %d}%s\n", m->method, m->backend, m->n,
               m->step_seconds, m->model_bytes, m->moved_bytes, m->triad_gbs, m->launches,
               i + 1 < count ? "," : "");
    }
    printf("]\n");
}

/* ---- command line ------------------------------------------------------------------------- */

static void usage(FILE *to)
{
    fprintf(to,
            "usage: bloopcl-bench [--sizes N,N,...] [--reps R] [--json] [--device SPEC]\n"
            "\n"
            "Times one step of every method with both dot backends on the device that\n"
            "BLOOPCL_DEVICE (or --device) selects, next to a triad measured in the same run.\n"
            "Sizes accept k/M suffixes (65536, 1M, 16M). Defaults: --sizes 4096,65536,1M,16M,64M\n"
            "--reps 20. Progress goes to stderr; --json prints the measurements as JSON.\n");
}

static int parse_size(const char *text, size_t *out)
{
    char *end = NULL;
    double value = strtod(text, &end);
    if (end == text || !(value >= 1))
        return -1;
    if (*end == 'k' || *end == 'K')
        value *= 1024, ++end;
    else if (*end == 'M' || *end == 'm')
        value *= 1024 * 1024, ++end;
    if (*end != '\0')
        return -1;
    *out = (size_t)value;
    return 0;
}

static int parse_sizes(char *list, options *opt)
{
    opt->num_sizes = 0;
    for (char *item = strtok(list, ","); item != NULL; item = strtok(NULL, ",")) {
        if (opt->num_sizes == MAX_SIZES || parse_size(item, &opt->sizes[opt->num_sizes]) != 0)
            return -1;
        opt->num_sizes++;
    }
    return opt->num_sizes ? 0 : -1;
}

static int parse_options(int argc, char **argv, options *opt)
{
    static const struct option long_options[] = {
        {"sizes", required_argument, NULL, 's'}, {"reps", required_argument, NULL, 'r'},
        {"json", no_argument, NULL, 'j'},        {"device", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0}};
    char defaults[] = "4096,65536,1M,16M,64M";
    *opt = (options){.reps = 20};
    parse_sizes(defaults, opt);
    int c;
    while ((c = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
        switch (c) {
        case 's': if (parse_sizes(optarg, opt) != 0) { usage(stderr); return -1; } break;
        case 'r': opt->reps = atoi(optarg); break;
        case 'j': opt->json = 1; break;
        case 'd': opt->device = optarg; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
    }
    if (optind != argc || opt->reps < 1) {
        usage(stderr);
        return -1;
    }
    return 0;
}

static const bloopcl_method methods[] = {BLOOPCL_METHOD_BLOOP, BLOOPCL_METHOD_DYNAMIC_BARRIER,
                                         BLOOPCL_METHOD_PCGRAD, BLOOPCL_METHOD_MIXED};
static const bloopcl_dot_backend backends[] = {BLOOPCL_DOTS_FUSED, BLOOPCL_DOTS_CLBLAST};
#define NUM_METHODS (sizeof methods / sizeof methods[0])
#define NUM_BACKENDS (sizeof backends / sizeof backends[0])

/* Every method and backend at size n; returns the number of measurements written. */
static size_t bench_size(bloopcl_context *ctx, const triad *t, const options *opt, size_t n,
                         measurement *out)
{
    cl_mem g = random_buffer(ctx, n, 1), a = random_buffer(ctx, n, 2), d = random_buffer(ctx, n, 3);
    cl_mem scratch = random_buffer(ctx, n, 4);
    size_t count = 0;
    if (g && a && d && scratch) {
        for (size_t m = 0; m < NUM_METHODS; ++m)
            for (size_t b = 0; b < NUM_BACKENDS; ++b) {
                measurement *r = &out[count];
                *r = (measurement){.method = bloopcl_method_name(methods[m]),
                                   .backend = backends[b] == BLOOPCL_DOTS_FUSED ? "fused" : "clblast",
                                   .n = n, .model_bytes = model_bytes(methods[m])};
                backend_traffic(methods[m], backends[b], &r->moved_bytes, &r->launches);
                fprintf(stderr, "bloopcl-bench: %s %s n=%zu\n", r->method, r->backend, n);
                double triad_seconds = 0.0;
                if (time_steps(ctx, t, methods[m], backends[b], g, a, d, scratch, n, opt->reps,
                               &r->step_seconds, &triad_seconds) == 0) {
                    r->triad_gbs = 12.0 * (double)n / triad_seconds / 1e9;
                    ++count;
                } else {
                    fprintf(stderr, "bloopcl-bench: failed: %s\n", bloopcl_context_last_error(ctx));
                }
            }
    } else {
        fprintf(stderr, "bloopcl-bench: cannot allocate 4 x %zu floats\n", n);
    }
    if (scratch) clReleaseMemObject(scratch);
    if (g) clReleaseMemObject(g);
    if (a) clReleaseMemObject(a);
    if (d) clReleaseMemObject(d);
    return count;
}

int main(int argc, char **argv)
{
    options opt;
    if (parse_options(argc, argv, &opt) != 0)
        return 2;
    bloopcl_context *ctx = tool_open_context("bloopcl-bench", opt.device);
    if (ctx == NULL)
        return 1;
    triad t = {0};
    if (build_triad(ctx, &t) != 0) {
        fprintf(stderr, "bloopcl-bench: the triad kernel does not build on this device\n");
        bloopcl_context_destroy(ctx);
        return 1;
    }
    bloopcl_device_info info;
    bloopcl_context_device_info(ctx, &info);
    measurement *all = calloc(opt.num_sizes * NUM_METHODS * NUM_BACKENDS, sizeof *all);
    size_t count = 0;
    for (size_t s = 0; all != NULL && s < opt.num_sizes; ++s)
        count += bench_size(ctx, &t, &opt, opt.sizes[s], all + count);
    if (opt.json) {
        print_json(all, count);
    } else {
        printf("device %u: %s / %s (%s), %d reps, median per step incl. clFinish\n",
               info.flat_index, info.platform_name, info.device_name, info.driver_version, opt.reps);
        print_header();
        for (size_t i = 0; i < count; ++i)
            print_row(&all[i]);
    }
    free(all);
    clReleaseKernel(t.kernel);
    clReleaseProgram(t.program);
    bloopcl_context_destroy(ctx);
    return count == opt.num_sizes * NUM_METHODS * NUM_BACKENDS ? 0 : 1;
}
