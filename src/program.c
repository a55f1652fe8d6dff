/* program.c — builds the kernels at run time for the context's device.
 *
 * The sources are embedded in the library (the files in cl/, see tools/embed_kernels.py) and built as
 * one program with -cl-std=CL1.2 and no fast-math. BLOOPCL_KERNEL_DIR, when set, makes the
 * library read the same files from that folder instead (edit kernels without rebuilding).
 * Built binaries go to the on-disk cache (program_cache.c) and are reused when the key
 * (sources, options, device, driver, library version) matches.
 * A failed build returns BLOOPCL_ERR_KERNEL_BUILD with the device, the options and the
 * compiler's log in the context's last error. */
#include "internal.h"
#include "embedded_kernels.h"
#include "program_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads a whole file; NULL if it cannot be read. */
static char *read_file(const char *path, size_t *length)
{
    FILE *file = fopen(path, "rb");
    if (file == NULL)
        return NULL;
    char *text = NULL;
    if (fseek(file, 0, SEEK_END) == 0) {
        long size = ftell(file);
        if (size >= 0 && fseek(file, 0, SEEK_SET) == 0 && (text = malloc((size_t)size + 1))) {
            *length = fread(text, 1, (size_t)size, file);
            text[*length] = '\0';
        }
    }
    fclose(file);
    return text;
}

/* The program's sources: embedded, or read from BLOOPCL_KERNEL_DIR. `owned` marks copies
 * that must be freed. */
static bloopcl_status load_sources(bloopcl_context *ctx, const char **texts, size_t *lengths,
                                   char **owned)
{
    const char *dir = ctx->env.kernel_dir;
    for (size_t i = 0; i < bloopcl_num_embedded_sources; ++i) {
        texts[i] = bloopcl_embedded_sources[i].text;
        lengths[i] = bloopcl_embedded_sources[i].length;
        owned[i] = NULL;
        if (dir == NULL || dir[0] == '\0')
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, bloopcl_embedded_sources[i].name);
        owned[i] = read_file(path, &lengths[i]);
        if (owned[i] == NULL)
            return bloopcl__fail(ctx, BLOOPCL_ERR_KERNEL_BUILD,
                                 "BLOOPCL_KERNEL_DIR=\"%s\": cannot read %s", dir, path);
        texts[i] = owned[i];
    }
    return BLOOPCL_OK;
}

/* OpenCL allows float division 2.5 ulp of error unless the device can round it correctly and
 * is asked to: ask whenever it can, so that r = <m,a>/(<m,m>+eps) is as exact as the dots. */
static bool rounds_division_correctly(const bloopcl_context *ctx)
{
    cl_device_fp_config config = 0;
    if (clGetDeviceInfo(ctx->device, CL_DEVICE_SINGLE_FP_CONFIG, sizeof config, &config, NULL) !=
        CL_SUCCESS)
        return false;
    return (config & CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT) != 0;
}

/* -cl-std=CL1.2, exact division where possible, the per-device access pattern (CPUs: a
 * contiguous chunk of vectors of the device's float width per work-item; GPUs: one element
 * per work-item, grid stride), then the caller's additions (already checked: never
 * fast-math, since NaN/Inf handling and the EMA's exactness depend on it). The caller's part
 * has no length limit, so the whole is allocated (the caller frees it; NULL: no memory). */
static char *compose_options(const bloopcl_context *ctx, const char *extra)
{
    const char *division = rounds_division_correctly(ctx)
                               ? " -cl-fp32-correctly-rounded-divide-sqrt" : "";
    char pattern[128]; /* at most 62 bytes: two flags and two numbers under 2^32 */
    if (ctx->cpu_shape)
        snprintf(pattern, sizeof pattern, " -DBLOOPCL_CONTIGUOUS -DBLOOPCL_VECTOR=%u",
                 ctx->vector_width);
    else
        snprintf(pattern, sizeof pattern, " -DBLOOPCL_VECTOR=1");
    size_t used = strlen(pattern);
    snprintf(pattern + used, sizeof pattern - used, " -DBLOOPCL_SLOTS=%u", ctx->kernels.slots);
    if (extra == NULL)
        extra = "";
    size_t size = strlen("-cl-std=CL1.2") + strlen(division) + strlen(pattern) + 1 +
                  strlen(extra) + 1;
    char *options = malloc(size);
    if (options != NULL)
        snprintf(options, size, "-cl-std=CL1.2%s%s%s%s", division, pattern,
                 extra[0] ? " " : "", extra);
    return options;
}

/* "layout.h 1-40, common.cl 41-118, ...": compilers number the lines of the concatenated
 * program, so a build log can only be read with this map. */
static void describe_line_map(const char *const *texts, const size_t *lengths, char *map,
                              size_t size)
{
    size_t line = 1, used = 0;
    map[0] = '\0';
    for (size_t i = 0; i < bloopcl_num_embedded_sources && used < size; ++i) {
        size_t lines = 0;
        for (size_t c = 0; c < lengths[i]; ++c)
            lines += texts[i][c] == '\n';
        int written = snprintf(map + used, size - used, "%s%s lines %zu-%zu", i ? ", " : "",
                               bloopcl_embedded_sources[i].name, line, line + lines - (lines > 0));
        used += written > 0 ? (size_t)written : 0;
        line += lines;
    }
}

static bloopcl_status report_build_failure(bloopcl_context *ctx, cl_program program,
                                           const char *options, cl_int code, const char *map)
{
    size_t size = 0;
    clGetProgramBuildInfo(program, ctx->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &size);
    char *log = malloc(size + 1);
    if (log != NULL) {
        log[0] = '\0';
        clGetProgramBuildInfo(program, ctx->device, CL_PROGRAM_BUILD_LOG, size, log, NULL);
        log[size] = '\0';
    }
    bloopcl__log(ctx, BLOOPCL_LOG_WARNING, "kernel build log:\n%s", log ? log : "");
    bloopcl__fail(ctx, BLOOPCL_ERR_KERNEL_BUILD,
                  "building the bloopcl kernels (one program: %s) failed with %s on device "
                  "\"%s\" (driver %s), options \"%s\"; build log:\n%s", map,
                  bloopcl__cl_error_name(code), ctx->info.device_name, ctx->info.driver_version,
                  options, log ? log : "(no log)");
    free(log);
    return BLOOPCL_ERR_KERNEL_BUILD;
}

/* The program's sources (embedded or from BLOOPCL_KERNEL_DIR) and their line map. */
typedef struct program_sources {
    size_t count;
    const char *texts[16];
    size_t lengths[16];
    char *owned[16];
    char map[512];
} program_sources;

static bloopcl_status gather_sources(bloopcl_context *ctx, program_sources *src)
{
    *src = (program_sources){.count = bloopcl_num_embedded_sources};
    if (src->count > 16)
        return bloopcl__fail(ctx, BLOOPCL_ERR_KERNEL_BUILD, "too many kernel sources");
    bloopcl_status status = load_sources(ctx, src->texts, src->lengths, src->owned);
    if (status == BLOOPCL_OK)
        describe_line_map(src->texts, src->lengths, src->map, sizeof src->map);
    return status;
}

static void release_sources(program_sources *src)
{
    for (size_t i = 0; i < src->count; ++i)
        free(src->owned[i]);
}

_Static_assert(sizeof ((bloopcl_context *)NULL)->cache_folder == BLOOPCL_CACHE_PATH,
               "the context holds every folder path the cache accepts");

/* Room for a cache problem: a reason and a folder path. */
#define CACHE_PROBLEM_CAPACITY (BLOOPCL_CACHE_PATH + 256)

/* A program from a cached binary, built; NULL on a miss, a refused entry (the reason goes to
 * the log) or if the driver refuses it. */
static cl_program program_from_cache(bloopcl_context *ctx, uint64_t key, const char *options)
{
    size_t size = 0;
    char problem[CACHE_PROBLEM_CAPACITY];
    unsigned char *binary = bloopcl__cache_load(ctx->cache_folder, key, &size, problem,
                                                sizeof problem);
    if (binary == NULL) {
        if (problem[0] != '\0')
            bloopcl__log(ctx, BLOOPCL_LOG_WARNING, "cached kernels %016llx not used: %s; "
                         "building from source", (unsigned long long)key, problem);
        return NULL;
    }
    const unsigned char *binaries[1] = {binary};
    cl_int err, binary_status;
    cl_program program = clCreateProgramWithBinary(ctx->cl_ctx, 1, &ctx->device, &size, binaries,
                                                   &binary_status, &err);
    free(binary);
    if (err == CL_SUCCESS && binary_status == CL_SUCCESS &&
        clBuildProgram(program, 1, &ctx->device, options, NULL, NULL) == CL_SUCCESS)
        return program;
    if (err == CL_SUCCESS)
        clReleaseProgram(program);
    bloopcl__log(ctx, BLOOPCL_LOG_WARNING, "cached kernels %016llx refused by the driver; "
                 "building from source", (unsigned long long)key);
    return NULL;
}

/* Saves the built program's binary for the next process; failures only cost a log line. */
static void store_in_cache(bloopcl_context *ctx, cl_program program, uint64_t key)
{
    size_t size = 0;
    char problem[CACHE_PROBLEM_CAPACITY] = "";
    if (clGetProgramInfo(program, CL_PROGRAM_BINARY_SIZES, sizeof size, &size, NULL) !=
            CL_SUCCESS || size == 0)
        return;
    unsigned char *binary = malloc(size);
    unsigned char *binaries[1] = {binary};
    bool stored = binary != NULL &&
                  clGetProgramInfo(program, CL_PROGRAM_BINARIES, sizeof binaries, binaries,
                                   NULL) == CL_SUCCESS &&
                  bloopcl__cache_store(ctx->cache_folder, key, binary, size, problem,
                                       sizeof problem);
    free(binary);
    if (stored)
        bloopcl__log(ctx, BLOOPCL_LOG_INFO, "cached compiled kernels %016llx in %s",
                     (unsigned long long)key, ctx->cache_folder);
    else
        bloopcl__log(ctx, BLOOPCL_LOG_WARNING, "could not cache compiled kernels %016llx: %s",
                     (unsigned long long)key,
                     problem[0] ? problem : "no binary from the driver, or no memory for it");
}

static bloopcl_status program_from_source(bloopcl_context *ctx, program_sources *src,
                                          const char *options, cl_program *program)
{
    cl_int err;
    *program = clCreateProgramWithSource(ctx->cl_ctx, (cl_uint)src->count, src->texts,
                                         src->lengths, &err);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(ctx, err, "clCreateProgramWithSource", "loading kernels");
    err = clBuildProgram(*program, 1, &ctx->device, options, NULL, NULL);
    if (err != CL_SUCCESS)
        return report_build_failure(ctx, *program, options, err, src->map);
    return BLOOPCL_OK;
}

/* Cached binary if there is a good one, else a source build (then cached). */
static bloopcl_status create_program(bloopcl_context *ctx, const char *options,
                                     cl_program *program)
{
    program_sources src;
    bloopcl_status status = gather_sources(ctx, &src);
    uint64_t key = bloopcl__cache_key(&ctx->info, src.texts, src.lengths, src.count, options);
    bool caching = status == BLOOPCL_OK && ctx->cache_folder[0] != '\0';
    *program = caching ? program_from_cache(ctx, key, options) : NULL;
    ctx->kernels.from_cache = *program != NULL;
    if (status == BLOOPCL_OK && *program == NULL) {
        status = program_from_source(ctx, &src, options, program);
        if (status == BLOOPCL_OK && caching)
            store_in_cache(ctx, *program, key);
    }
    release_sources(&src);
    return status;
}

static bloopcl_status create_kernel(bloopcl_context *ctx, const char *name, cl_kernel *kernel)
{
    cl_int err;
    *kernel = clCreateKernel(ctx->kernels.program, name, &err);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(ctx, err, "clCreateKernel", name);
    return BLOOPCL_OK;
}

static size_t largest_power_of_two_at_most(size_t limit)
{
    size_t p = 1;
    while (p * 2 <= limit)
        p *= 2;
    return p;
}

/* The largest power of two <= want that a kernel with limit `kernel_max` may use on this
 * device (a limit of 0, not reported, is taken as no limit; the result is at least 1). */
static size_t fit_group(size_t want, size_t kernel_max, const bloopcl_group_limits *limits)
{
    size_t limit = want;
    const size_t bounds[] = {kernel_max, limits->device_max, limits->item_max};
    for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; ++i)
        if (bounds[i] != 0 && bounds[i] < limit)
            limit = bounds[i];
    return largest_power_of_two_at_most(limit);
}

/* CPUs: work-items are independent streams over contiguous chunks (groups of one); GPUs:
 * groups of 256 to hide memory latency. Each kernel is bounded by its own
 * CL_KERNEL_WORK_GROUP_SIZE (below the device's on Apple, Mali and Intel GPUs when registers
 * or local memory run short); the EMA and projection kernels share one size. */
void bloopcl__choose_group_sizes(const bloopcl_group_limits *limits, bool cpu_shape,
                                 bloopcl_kernels *kernels)
{
    size_t want = cpu_shape ? 1 : 256;
    kernels->fused_group_size = fit_group(want, limits->fused_dots, limits);
    size_t ema = fit_group(want, limits->ema_update, limits);
    size_t project = fit_group(want, limits->project, limits);
    kernels->elementwise_group_size = ema < project ? ema : project;
    kernels->finalize_group_size = fit_group(64, limits->finalize, limits);
}

static size_t kernel_limit(const bloopcl_context *ctx, cl_kernel kernel)
{
    size_t limit = 0;
    if (clGetKernelWorkGroupInfo(kernel, ctx->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof limit,
                                 &limit, NULL) != CL_SUCCESS)
        return 1;   /* the one size every kernel can run with */
    return limit;
}

/* CL_DEVICE_MAX_WORK_ITEM_SIZES has one entry per dimension: asked with room for all. */
static size_t first_item_size(const bloopcl_context *ctx)
{
    size_t sizes[16] = {0}, bytes = 0;
    if (clGetDeviceInfo(ctx->device, CL_DEVICE_MAX_WORK_ITEM_SIZES, 0, NULL, &bytes) !=
            CL_SUCCESS || bytes == 0 || bytes > sizeof sizes ||
        clGetDeviceInfo(ctx->device, CL_DEVICE_MAX_WORK_ITEM_SIZES, bytes, sizes, NULL) !=
            CL_SUCCESS)
        return 1;
    return sizes[0];
}

/* Launch geometry, fixed per device (never per n) so that reductions are repeatable. */
static void choose_geometry(bloopcl_context *ctx)
{
    bloopcl_kernels *k = &ctx->kernels;
    bloopcl_group_limits limits = {.device_max = 1};
    if (clGetDeviceInfo(ctx->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof limits.device_max,
                        &limits.device_max, NULL) != CL_SUCCESS)
        limits.device_max = 1;
    limits.item_max = first_item_size(ctx);
    limits.ema_update = kernel_limit(ctx, k->ema_update);
    /* bloopcl_aux_accumulate runs on the fused dots' geometry (the plan's work-groups) */
    size_t fused = kernel_limit(ctx, k->fused_dots), accumulate = kernel_limit(ctx, k->aux_accumulate);
    limits.fused_dots = fused < accumulate ? fused : accumulate;
    /* bloopcl_sum_partials must sum exactly as bloopcl_finalize does: one size for both (and
     * for bloopcl_aux_finalize, which runs with it) */
    size_t finalize = kernel_limit(ctx, k->finalize), sum = kernel_limit(ctx, k->sum_partials);
    size_t aux = kernel_limit(ctx, k->aux_finalize);
    limits.finalize = finalize < sum ? finalize : sum;
    limits.finalize = limits.finalize < aux ? limits.finalize : aux;
    limits.project = kernel_limit(ctx, k->project);
    bloopcl__choose_group_sizes(&limits, ctx->cpu_shape, k);
    size_t units = ctx->info.compute_units ? ctx->info.compute_units : 1;
    k->fused_groups = units * 8;
    k->elementwise_groups = k->fused_groups;
}

bloopcl_status bloopcl__build_kernels(bloopcl_context *ctx, const char *extra_options)
{
    char *options = compose_options(ctx, extra_options);
    if (options == NULL)
        return bloopcl__fail(ctx, BLOOPCL_ERR_OUT_OF_MEMORY, "no memory for the build options");
    bloopcl_status status = create_program(ctx, options, &ctx->kernels.program);
    if (status == BLOOPCL_OK)
        status = create_kernel(ctx, "bloopcl_ema_update", &ctx->kernels.ema_update);
    if (status == BLOOPCL_OK)
        status = create_kernel(ctx, "bloopcl_fused_dots", &ctx->kernels.fused_dots);
    if (status == BLOOPCL_OK)
        status = create_kernel(ctx, "bloopcl_finalize", &ctx->kernels.finalize);
    if (status == BLOOPCL_OK)
        status = create_kernel(ctx, "bloopcl_sum_partials", &ctx->kernels.sum_partials);
    if (status == BLOOPCL_OK)
        status = create_kernel(ctx, "bloopcl_finalize_totals", &ctx->kernels.finalize_totals);
    if (status == BLOOPCL_OK)
        status = create_kernel(ctx, "bloopcl_project", &ctx->kernels.project);
    if (status == BLOOPCL_OK)
        status = create_kernel(ctx, "bloopcl_aux_accumulate", &ctx->kernels.aux_accumulate);
    if (status == BLOOPCL_OK)
        status = create_kernel(ctx, "bloopcl_aux_finalize", &ctx->kernels.aux_finalize);
    if (status == BLOOPCL_OK) {
        choose_geometry(ctx);
        bloopcl__log(ctx, BLOOPCL_LOG_INFO, "kernels %s for \"%s\" with \"%s\"",
                     ctx->kernels.from_cache ? "loaded from the cache" : "built from source",
                     ctx->info.device_name, options);
    }
    free(options);
    return status;
}

void bloopcl__release_kernels(bloopcl_kernels *kernels)
{
    cl_kernel *all[] = {&kernels->ema_update, &kernels->fused_dots, &kernels->finalize,
                        &kernels->sum_partials, &kernels->finalize_totals, &kernels->project,
                        &kernels->aux_accumulate, &kernels->aux_finalize};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i) {
        if (*all[i] != NULL)
            clReleaseKernel(*all[i]);
        *all[i] = NULL;
    }
    if (kernels->program != NULL)
        clReleaseProgram(kernels->program);
    kernels->program = NULL;
}
