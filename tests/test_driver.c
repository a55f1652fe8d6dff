/* test_driver.c — driver discipline: contexts from multi-device cl_contexts, broken platforms
 * and devices left out of the listing (by fault injection), CLBlast's cache kept for a
 * caller's cl_context, the default backend rule, refused build options, per-kernel
 * work-group limits and the CPU shape's vector width.
 *
 * Fault injection: the tests link the library statically, so clGetPlatformIDs,
 * clGetDeviceIDs and clGetDeviceInfo defined here replace the loader's for the library's
 * calls; they forward to the loader (dlsym RTLD_NEXT) unless a test switches a fault on. */
#define _GNU_SOURCE
#include "support.h"
#include "internal.h"

#include <clblast_c.h>
#include <criterion/criterion.h>
#include <dlfcn.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N 1031 /* not a multiple of any work-group size or vector width */

/* ---------------------------------------------------------------------------------------------
 * Fault injection
 * ------------------------------------------------------------------------------------------- */

/* A platform handle that no driver knows: listed first when `fake_platform_first` is on, and
 * every query on it fails, as a platform whose driver is broken does. */
static int fake_platform_object;
#define FAKE_PLATFORM ((cl_platform_id)(void *)&fake_platform_object)
static int fake_platform_first;
static cl_device_id broken_device; /* its CL_DEVICE_NAME query fails (NULL: none) */

typedef cl_int (*platform_ids_fn)(cl_uint, cl_platform_id *, cl_uint *);
typedef cl_int (*device_ids_fn)(cl_platform_id, cl_device_type, cl_uint, cl_device_id *,
                                cl_uint *);
typedef cl_int (*device_info_fn)(cl_device_id, cl_device_info, size_t, void *, size_t *);
typedef cl_int (*platform_info_fn)(cl_platform_id, cl_platform_info, size_t, void *, size_t *);

/* The loader's definition of `name` into *function (POSIX: a dlsym result converts to a
 * function pointer by copying its bytes; ISO C has no cast for it). */
static void loader_function(const char *name, void *function, size_t size)
{
    void *symbol = dlsym(RTLD_NEXT, name);
    if (symbol == NULL || size != sizeof symbol)
        abort(); /* the test binary links the loader: this cannot happen */
    memcpy(function, &symbol, size);
}
#define LOADER(type, name, variable) \
    type variable;                   \
    loader_function(name, &variable, sizeof variable)

CL_API_ENTRY cl_int CL_API_CALL clGetPlatformIDs(cl_uint num_entries, cl_platform_id *platforms,
                                                 cl_uint *num_platforms)
{
    LOADER(platform_ids_fn, "clGetPlatformIDs", real);
    if (!fake_platform_first)
        return real(num_entries, platforms, num_platforms);
    cl_uint n = 0;
    cl_int err = real(0, NULL, &n);
    if (err != CL_SUCCESS)
        return err;
    if (num_platforms != NULL)
        *num_platforms = n + 1;
    if (platforms == NULL || num_entries == 0)
        return CL_SUCCESS;
    platforms[0] = FAKE_PLATFORM;
    return num_entries > 1 ? real(num_entries - 1, platforms + 1, NULL) : CL_SUCCESS;
}

CL_API_ENTRY cl_int CL_API_CALL clGetDeviceIDs(cl_platform_id platform, cl_device_type type,
                                               cl_uint num_entries, cl_device_id *devices,
                                               cl_uint *num_devices)
{
    if (platform == FAKE_PLATFORM)
        return CL_INVALID_PLATFORM;
    LOADER(device_ids_fn, "clGetDeviceIDs", real);
    return real(platform, type, num_entries, devices, num_devices);
}

CL_API_ENTRY cl_int CL_API_CALL clGetPlatformInfo(cl_platform_id platform,
                                                  cl_platform_info param, size_t size,
                                                  void *value, size_t *size_ret)
{
    if (platform == FAKE_PLATFORM)
        return CL_INVALID_PLATFORM;
    LOADER(platform_info_fn, "clGetPlatformInfo", real);
    return real(platform, param, size, value, size_ret);
}

CL_API_ENTRY cl_int CL_API_CALL clGetDeviceInfo(cl_device_id device, cl_device_info param,
                                                size_t size, void *value, size_t *size_ret)
{
    if (device != NULL && device == broken_device && param == CL_DEVICE_NAME)
        return CL_OUT_OF_RESOURCES;
    LOADER(device_info_fn, "clGetDeviceInfo", real);
    return real(device, param, size, value, size_ret);
}

/* ---------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------- */

typedef struct log_capture {
    char text[8192];
} log_capture;

static void capture_log(void *user, bloopcl_log_level level, const char *message)
{
    log_capture *log = user;
    size_t used = strlen(log->text);
    snprintf(log->text + used, sizeof log->text - used, "[%d] %s\n", (int)level, message);
}

/* PoCL's CPU driver twice: one platform, two devices (read at PoCL's first call). */
static void two_pocl_devices(void)
{
    cr_assert_eq(setenv("POCL_DEVICES", "pthread pthread", 1), 0);
}

/* The devices of the first platform that has at least two (PoCL with two_pocl_devices). */
static cl_platform_id platform_with_two_devices(cl_device_id devices[2])
{
    cl_platform_id platforms[16];
    cl_uint count = 0;
    cr_assert_eq(clGetPlatformIDs(16, platforms, &count), CL_SUCCESS);
    for (cl_uint p = 0; p < count && p < 16; ++p) {
        cl_uint n = 0;
        if (clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, 2, devices, &n) == CL_SUCCESS &&
            n >= 2)
            return platforms[p];
    }
    cr_assert_fail("POCL_DEVICES=\"pthread pthread\" gave no platform with two devices");
    return NULL;
}

static void make_inputs(float *g, float *a, size_t n, uint64_t seed)
{
    support_fill_normal(g, n, seed, 1.0f);
    support_fill_normal(a, n, seed + 7919u, 1.0f);
    for (size_t i = 0; i < n; ++i)
        a[i] -= 0.5f * g[i]; /* conflicting: the projection does something */
}

/* Three host-call steps of Bloop on `ctx`, each checked against the CPU reference. */
static void expect_steps_match_reference(bloopcl_context *ctx, bloopcl_dot_backend dots)
{
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    config.lambda = 0.5;
    config.dots = dots;
    bloopcl_combiner *comb = support_combiner(ctx, &config, N);
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(&config, N, &ref), BLOOPCL_OK);
    float *g = support_alloc(N), *a = support_alloc(N), *d = support_alloc(N);
    float *d_ref = support_alloc(N);
    for (int t = 0; t < 3; ++t) {
        make_inputs(g, a, N, 40 + (uint64_t)t);
        cr_assert_eq(bloopcl_step_host(comb, g, a, d), BLOOPCL_OK, "%s",
                     bloopcl_context_last_error(ctx));
        support_check_step(comb, &config, &ref, g, a, d, d_ref, t);
    }
    support_expect_state(comb, BLOOPCL_STATE_EMA, ref.ema, N);
    bloopcl_combiner_destroy(comb);
    bloopcl_reference_free(&ref);
    free(g), free(a), free(d), free(d_ref);
}

static bloopcl_status create_with_options(const char *options, bloopcl_context **ctx)
{
    bloopcl_context_params params;
    bloopcl_context_params_default(&params);
    params.build_options = options;
    *ctx = NULL;
    return bloopcl_context_create(&params, ctx);
}

static void expect_message_has(const char *message, const char *part, const char *what)
{
    cr_expect(strstr(message, part) != NULL, "%s: \"%s\" not in \"%s\"", what, part, message);
}

/* ---------------------------------------------------------------------------------------------
 * 1. bloopcl_context_create_from_mem on a cl_context with two devices
 * ------------------------------------------------------------------------------------------- */

Test(driver, create_from_mem_uses_the_first_of_two_devices)
{
    two_pocl_devices();
    cl_device_id devices[2];
    platform_with_two_devices(devices);
    cl_int err;
    cl_context cl_ctx = clCreateContext(NULL, 2, devices, NULL, NULL, &err);
    cr_assert_eq(err, CL_SUCCESS, "clCreateContext with two devices: %d", (int)err);
    cl_mem buffer = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, 64, NULL, &err);
    cr_assert_eq(err, CL_SUCCESS);

    bloopcl_context *ctx = NULL;
    bloopcl_status status = bloopcl_context_create_from_mem(buffer, NULL, &ctx);
    cr_assert_eq(status, BLOOPCL_OK, "%s", bloopcl_context_last_error(ctx));
    cr_expect_eq(bloopcl_context_cl_context(ctx), cl_ctx);
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    cr_assert_eq(bloopcl_context_device_info(ctx, &info), BLOOPCL_OK);
    cr_expect_eq(info.device, devices[0], "CL_CONTEXT_DEVICES[0] is the device");
    cl_device_id queue_device = NULL;
    cr_assert_eq(clGetCommandQueueInfo(bloopcl_context_queue(ctx), CL_QUEUE_DEVICE,
                                       sizeof queue_device, &queue_device, NULL), CL_SUCCESS);
    cr_expect_eq(queue_device, devices[0], "the queue is on device 0");
    expect_steps_match_reference(ctx, BLOOPCL_DOTS_FUSED);
    bloopcl_context_destroy(ctx);
    clReleaseMemObject(buffer);
    clReleaseContext(cl_ctx);
}

/* ---------------------------------------------------------------------------------------------
 * 2. A broken platform or device does not stop the others, and is reported
 * ------------------------------------------------------------------------------------------- */

Test(driver, broken_platform_is_skipped_and_reported)
{
    support_context_skip_without_device();
    size_t healthy = 0;
    cr_assert_eq(bloopcl_list_devices(NULL, 0, &healthy), BLOOPCL_OK);

    fake_platform_first = 1;
    size_t count = 0;
    bloopcl_device_info list[16] = {BLOOPCL_DEVICE_INFO_INIT};
    cr_assert_eq(bloopcl_list_devices(list, 16, &count), BLOOPCL_OK,
                 "a broken platform does not fail the listing");
    cr_expect_eq(count, healthy, "every device of the working platforms is still listed");
    for (size_t i = 0; i < count && i < 16; ++i) {
        cr_expect_geq(list[i].platform_index, 1u, "loader numbering: the broken one is 0");
        cr_expect_eq(list[i].flat_index, i);
    }

    log_capture log = {""};
    bloopcl_context_params params;
    bloopcl_context_params_default(&params);
    params.device_spec = "1:";   /* the first working platform, by its loader index */
    params.log_fn = capture_log;
    params.log_user = &log;
    bloopcl_context *ctx = NULL;
    cr_assert_eq(bloopcl_context_create(&params, &ctx), BLOOPCL_OK, "%s",
                 bloopcl_context_last_error(ctx));
    expect_message_has(log.text, "[2] left out of the device list: platform 0 skipped: "
                       "clGetDeviceIDs failed with CL_INVALID_PLATFORM", "warning in the log");
    expect_steps_match_reference(ctx, BLOOPCL_DOTS_FUSED);
    bloopcl_context_destroy(ctx);

    char message[4096];
    bloopcl_device_info selected = BLOOPCL_DEVICE_INFO_INIT;
    cr_expect_eq(bloopcl_select_device("0:", &selected, message, sizeof message),
                 BLOOPCL_ERR_DEVICE_NOT_FOUND);
    expect_message_has(message, "devices found:\n  0: ", "the working devices are listed");
    expect_message_has(message, "left out of the list: platform 0 skipped: clGetDeviceIDs "
                       "failed with CL_INVALID_PLATFORM", "the broken platform is named");
}

Test(driver, broken_device_is_skipped_and_reported)
{
    two_pocl_devices();
    cl_device_id devices[2];
    platform_with_two_devices(devices);
    size_t before = 0;
    cr_assert_eq(bloopcl_list_devices(NULL, 0, &before), BLOOPCL_OK);

    broken_device = devices[1];
    size_t count = 0;
    bloopcl_device_info list[16] = {BLOOPCL_DEVICE_INFO_INIT};
    cr_assert_eq(bloopcl_list_devices(list, 16, &count), BLOOPCL_OK,
                 "a broken device does not fail the listing");
    cr_expect_eq(count, before - 1, "only the broken device is left out");
    for (size_t i = 0; i < count && i < 16; ++i)
        cr_expect_neq(list[i].device, devices[1], "entry %zu is not the broken device", i);
    size_t counted = 0;
    cr_assert_eq(bloopcl_list_devices(NULL, 0, &counted), BLOOPCL_OK);
    cr_expect_eq(counted, count, "counting and filling agree on the usable devices");

    char message[4096];
    bloopcl_device_info selected = BLOOPCL_DEVICE_INFO_INIT;
    cr_expect_eq(bloopcl_select_device("cpu:1", &selected, message, sizeof message),
                 BLOOPCL_ERR_DEVICE_NOT_FOUND, "%s", message);
    expect_message_has(message, "device 1 skipped: clGetDeviceInfo(CL_DEVICE_NAME) failed "
                       "with CL_OUT_OF_RESOURCES", "the broken device is named");
    cr_assert_eq(bloopcl_select_device("cpu", &selected, message, sizeof message), BLOOPCL_OK,
                 "%s", message);
    cr_expect_eq(selected.device, devices[0]);
}

/* ---------------------------------------------------------------------------------------------
 * 3. CLBlast's program cache survives a bloopcl context on the caller's cl_context
 * ------------------------------------------------------------------------------------------- */

static cl_uint context_refs(cl_context ctx)
{
    cl_uint refs = 0;
    cr_assert_eq(clGetContextInfo(ctx, CL_CONTEXT_REFERENCE_COUNT, sizeof refs, &refs, NULL),
                 CL_SUCCESS);
    return refs;
}

/* PoCL drops references from its own threads: a count may take a moment to settle. */
static cl_uint settled_refs(cl_context ctx, cl_uint expected)
{
    cl_uint now = context_refs(ctx);
    for (int tries = 0; now != expected && tries < 200; ++tries) {
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
        now = context_refs(ctx);
    }
    return now;
}

/* <x, y> of the caller's own CLBlast call on its queue, read back. */
static float caller_sdot(cl_command_queue queue, cl_mem x, cl_mem y, cl_mem result, size_t n)
{
    cr_assert_eq(CLBlastSdot(n, result, 0, x, 0, 1, y, 0, 1, &queue, NULL), CLBlastSuccess);
    float value = 0.0f;
    cr_assert_eq(clEnqueueReadBuffer(queue, result, CL_TRUE, 0, sizeof value, &value, 0, NULL,
                                     NULL), CL_SUCCESS);
    return value;
}

Test(driver, caller_clblast_cache_survives_destroy)
{
    support_context_skip_without_device();
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    char message[4096];
    cr_assert_eq(bloopcl_select_device(NULL, &info, message, sizeof message), BLOOPCL_OK, "%s",
                 message);
    cl_int err;
    cl_context cl_ctx = clCreateContext(NULL, 1, &info.device, NULL, NULL, &err);
    cr_assert_eq(err, CL_SUCCESS);
    cl_command_queue queue = clCreateCommandQueue(cl_ctx, info.device, 0, &err);
    cr_assert_eq(err, CL_SUCCESS);
    enum { n = 100 };
    float ones[n];
    for (int i = 0; i < n; ++i)
        ones[i] = 1.0f;
    cl_mem x = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizeof ones,
                              ones, &err);
    cr_assert_eq(err, CL_SUCCESS);
    cl_mem result = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, sizeof(float), NULL, &err);
    cr_assert_eq(err, CL_SUCCESS);
    cl_uint bare = context_refs(cl_ctx);
    cr_expect_eq(caller_sdot(queue, x, x, result, n), (float)n);
    cl_uint cached = settled_refs(cl_ctx, bare + 1);
    cr_assert_gt(cached, bare, "CLBlast's cache holds the caller's compiled Xdot");

    bloopcl_context *ctx = NULL;
    cr_assert_eq(bloopcl_context_create_from_cl(cl_ctx, info.device, queue, NULL, &ctx),
                 BLOOPCL_OK, "%s", bloopcl_context_last_error(ctx));
    expect_steps_match_reference(ctx, BLOOPCL_DOTS_CLBLAST);
    bloopcl_context_destroy(ctx);
    cr_expect_eq(settled_refs(cl_ctx, cached), cached,
                 "destroying a context on the caller's cl_context keeps CLBlast's cache (and "
                 "the references its programs hold); the bloopcl context's own are gone");
    cr_expect_eq(caller_sdot(queue, x, x, result, n), (float)n, "the caller's CLBlast works");

    /* The documented way for the caller to free its context: clear the cache itself. */
    CLBlastClearCache();
    cr_expect_eq(settled_refs(cl_ctx, bare), bare, "then only the caller's references remain");
    clReleaseMemObject(x);
    clReleaseMemObject(result);
    clReleaseCommandQueue(queue);
    clReleaseContext(cl_ctx);
}

/* ---------------------------------------------------------------------------------------------
 * 4. The default backend
 * ------------------------------------------------------------------------------------------- */

Test(driver, default_backend_is_fused_on_every_device_type)
{
    const cl_device_type types[] = {CL_DEVICE_TYPE_GPU, CL_DEVICE_TYPE_CPU,
                                    CL_DEVICE_TYPE_ACCELERATOR,
                                    CL_DEVICE_TYPE_GPU | CL_DEVICE_TYPE_DEFAULT};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; ++i) {
        const char *unset[] = {NULL, "", "auto"};
        for (size_t u = 0; u < 3; ++u) {
            bloopcl_dot_backend dots = BLOOPCL_DOTS_AUTO;
            cr_expect_eq(bloopcl__default_dots(types[i], unset[u], &dots), BLOOPCL_OK);
            cr_expect_eq(dots, BLOOPCL_DOTS_FUSED, "type %#lx, BLOOPCL_DOTS %s",
                         (unsigned long)types[i], unset[u] ? unset[u] : "unset");
        }
        bloopcl_dot_backend dots = BLOOPCL_DOTS_AUTO;
        cr_expect_eq(bloopcl__default_dots(types[i], "clblast", &dots), BLOOPCL_OK);
        cr_expect_eq(dots, BLOOPCL_DOTS_CLBLAST, "BLOOPCL_DOTS=clblast forces CLBlast");
        cr_expect_eq(bloopcl__default_dots(types[i], "fused", &dots), BLOOPCL_OK);
        cr_expect_eq(dots, BLOOPCL_DOTS_FUSED);
        cr_expect_eq(bloopcl__default_dots(types[i], "CLBlast ", &dots),
                     BLOOPCL_ERR_INVALID_ARGUMENT, "values are exact");
    }
}

/* ---------------------------------------------------------------------------------------------
 * 5. Build options
 * ------------------------------------------------------------------------------------------- */

/* Every word of `text`, joined by '|'; "!" after a word with an unterminated quote. */
static void split_words(const char *text, char *out, size_t size)
{
    char word[64];
    size_t position = 0, used = 0;
    int found;
    out[0] = '\0';
    while ((found = bloopcl__next_build_option(text, &position, word, sizeof word)) != 0) {
        used += (size_t)snprintf(out + used, size - used, "%s%s%s", used ? "|" : "", word,
                                 found < 0 ? "|!" : "");
        if (found < 0)
            break;
    }
}

Test(driver, build_option_tokeniser)
{
    char words[512];
    split_words("", words, sizeof words);
    cr_expect_str_eq(words, "");
    split_words("   \t ", words, sizeof words);
    cr_expect_str_eq(words, "");
    split_words("  -w    -cl-opt-disable\t-DA=1  ", words, sizeof words);
    cr_expect_str_eq(words, "-w|-cl-opt-disable|-DA=1");
    split_words("-DNAME=\"a  b\" '-cl-mad-enable' -D\"BLOOPCL_X\"", words, sizeof words);
    cr_expect_str_eq(words, "-DNAME=a  b|-cl-mad-enable|-DBLOOPCL_X");
    split_words("-Dx='it\"s' \"\"", words, sizeof words);
    cr_expect_str_eq(words, "-Dx=it\"s|", "a quote of the other kind is plain; \"\" is a word");
    split_words("-w \"-cl-opt", words, sizeof words);
    cr_expect_str_eq(words, "-w|-cl-opt|!");
    /* A long word is truncated, never split into two. */
    char long_text[200];
    memset(long_text, 'x', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = '\0';
    long_text[0] = '-';
    char word[16];
    size_t position = 0;
    cr_expect_eq(bloopcl__next_build_option(long_text, &position, word, sizeof word), 1);
    cr_expect_eq(strlen(word), sizeof word - 1);
    cr_expect_eq(position, sizeof long_text - 1);
    cr_expect_eq(bloopcl__next_build_option(long_text, &position, word, sizeof word), 0);
}

Test(driver, build_option_checker)
{
    const char *refused[] = {"-cl-fast-relaxed-math", "-cl-finite-math-only",
                             "-cl-unsafe-math-optimizations", "-cl-mad-enable",
                             "-cl-no-signed-zeros", "-cl-denorms-are-zero"};
    char message[512], options[256];
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; ++i) {
        snprintf(options, sizeof options, "-w   \"%s\" -cl-opt-disable", refused[i]);
        cr_expect_eq(bloopcl__check_build_options(options, message, sizeof message),
                     BLOOPCL_ERR_INVALID_ARGUMENT, "%s", options);
        char named[128];
        snprintf(named, sizeof named, "\"%s\" is refused", refused[i]);
        expect_message_has(message, named, options);
    }
    cr_expect_eq(bloopcl__check_build_options("-DBLOOPCL_VECTOR=4", message, sizeof message),
                 BLOOPCL_ERR_INVALID_ARGUMENT);
    expect_message_has(message, "\"-DBLOOPCL_VECTOR=4\" is refused", "-D form");
    cr_expect_eq(bloopcl__check_build_options("-w -D   BLOOPCL_CONTIGUOUS", message,
                                              sizeof message), BLOOPCL_ERR_INVALID_ARGUMENT);
    expect_message_has(message, "\"-D BLOOPCL_CONTIGUOUS\" is refused", "-D NAME form");
    cr_expect_eq(bloopcl__check_build_options("-w \"-cl-opt-disable", message, sizeof message),
                 BLOOPCL_ERR_INVALID_ARGUMENT);
    expect_message_has(message, "unterminated quote", "quote");

    const char *harmless[] = {NULL, "", "-w", "-cl-opt-disable  -w",
                              "-DNOT_BLOOPCL_X=1 -D FOO -DBLOOPCLX", "-cl-mad-enable-not",
                              "-I /tmp/BLOOPCL_x"};
    for (size_t i = 0; i < sizeof harmless / sizeof harmless[0]; ++i)
        cr_expect_eq(bloopcl__check_build_options(harmless[i], message, sizeof message),
                     BLOOPCL_OK, "\"%s\": %s", harmless[i] ? harmless[i] : "(null)", message);
}

Test(driver, refused_build_options_at_context_creation)
{
    support_context_skip_without_device();
    bloopcl_context *ctx = NULL;
    bloopcl_status status = create_with_options("-w  -cl-fast-relaxed-math", &ctx);
    cr_expect_eq(status, BLOOPCL_ERR_INVALID_ARGUMENT);
    expect_message_has(bloopcl_context_last_error(ctx),
                       "params->build_options=\"-w  -cl-fast-relaxed-math\": build option "
                       "\"-cl-fast-relaxed-math\" is refused", "parameter");
    cr_expect_null(bloopcl_context_cl_context(ctx), "an error-only context");
    bloopcl_context_destroy(ctx);

    cr_assert_eq(setenv("BLOOPCL_BUILD_OPTIONS", "-D BLOOPCL_VECTOR=2", 1), 0);
    status = create_with_options(NULL, &ctx);
    cr_expect_eq(status, BLOOPCL_ERR_INVALID_ARGUMENT);
    expect_message_has(bloopcl_context_last_error(ctx),
                       "BLOOPCL_BUILD_OPTIONS=\"-D BLOOPCL_VECTOR=2\": build option "
                       "\"-D BLOOPCL_VECTOR=2\" is refused", "environment");
    bloopcl_context_destroy(ctx);
}

/* Harmless options still build kernels that agree with the reference. */
Test(driver, harmless_build_options_work)
{
    support_context_skip_without_device();
    bloopcl_context *ctx = NULL;
    bloopcl_status status = create_with_options("  -w   -cl-opt-disable ", &ctx);
    cr_assert_eq(status, BLOOPCL_OK, "%s", bloopcl_context_last_error(ctx));
    expect_steps_match_reference(ctx, BLOOPCL_DOTS_FUSED);
    bloopcl_context_destroy(ctx);
}

/* ---------------------------------------------------------------------------------------------
 * 6. Work-group sizes within every limit
 * ------------------------------------------------------------------------------------------- */

static bloopcl_kernels sizes_for(bloopcl_group_limits limits, bool cpu_shape)
{
    bloopcl_kernels k = {0};
    bloopcl__choose_group_sizes(&limits, cpu_shape, &k);
    return k;
}

Test(driver, group_sizes_respect_kernel_and_item_limits)
{
    /* A GPU allowing 1024 per group: each kernel at its target (256, finalize 64). */
    bloopcl_group_limits roomy = {1024, 1024, 1024, 1024, 1024, 1024};
    bloopcl_kernels k = sizes_for(roomy, false);
    cr_expect_eq(k.fused_group_size, 256);
    cr_expect_eq(k.elementwise_group_size, 256);
    cr_expect_eq(k.finalize_group_size, 64);

    /* Per-kernel limits of 64 on a device allowing 1024, max item size 32: 32 everywhere. */
    bloopcl_group_limits tight = {1024, 32, 64, 64, 64, 64};
    k = sizes_for(tight, false);
    cr_expect_eq(k.fused_group_size, 32);
    cr_expect_eq(k.elementwise_group_size, 32);
    cr_expect_eq(k.finalize_group_size, 32);

    /* Each kernel its own limit; EMA and projection share the smaller; not powers of two. */
    bloopcl_group_limits mixed = {1024, 1024, 200, 96, 48, 1024};
    k = sizes_for(mixed, false);
    cr_expect_eq(k.fused_group_size, 64, "96 -> 64");
    cr_expect_eq(k.elementwise_group_size, 128, "min(EMA 200 -> 128, projection 1024 -> 256)");
    cr_expect_eq(k.finalize_group_size, 32, "48 -> 32");

    /* The device limit and a per-kernel limit of 1 (the fallback when a query fails). */
    bloopcl_group_limits small = {16, 1024, 1024, 1, 1024, 1024};
    k = sizes_for(small, false);
    cr_expect_eq(k.fused_group_size, 1);
    cr_expect_eq(k.elementwise_group_size, 16);
    cr_expect_eq(k.finalize_group_size, 16);

    /* The CPU shape: groups of one work-item, finalize still a reduction tree. */
    k = sizes_for(roomy, true);
    cr_expect_eq(k.fused_group_size, 1);
    cr_expect_eq(k.elementwise_group_size, 1);
    cr_expect_eq(k.finalize_group_size, 64);
}

/* ---------------------------------------------------------------------------------------------
 * 7. The CPU shape's vector width
 * ------------------------------------------------------------------------------------------- */

Test(driver, vector_width_from_the_device)
{
    cr_expect_eq(bloopcl__vector_width(8, 8), 8u, "AVX2");
    cr_expect_eq(bloopcl__vector_width(16, 16), 16u, "AVX-512");
    cr_expect_eq(bloopcl__vector_width(4, 8), 4u, "preferred wins over native");
    cr_expect_eq(bloopcl__vector_width(0, 4), 4u, "native when preferred is not reported");
    cr_expect_eq(bloopcl__vector_width(0, 0), 1u, "1 when neither is");
    cr_expect_eq(bloopcl__vector_width(3, 0), 2u, "rounded down to a supported width");
    cr_expect_eq(bloopcl__vector_width(12, 0), 8u);
    cr_expect_eq(bloopcl__vector_width(64, 0), 16u, "at most 16");
    cr_expect_eq(bloopcl__vector_width(1, 16), 1u);
}

static cl_uint device_uint(cl_device_id device, cl_device_info param)
{
    cl_uint value = 0;
    cr_assert_eq(clGetDeviceInfo(device, param, sizeof value, &value, NULL), CL_SUCCESS);
    return value;
}

/* The build options in the log name the width the device prefers (CPU shape), and the kernels
 * work at it. */
Test(driver, cpu_shape_uses_the_device_width)
{
    support_context_skip_without_device();
    cr_assert_eq(setenv("BLOOPCL_KERNEL_SHAPE", "cpu", 1), 0);
    log_capture log = {""};
    bloopcl_context_params params;
    bloopcl_context_params_default(&params);
    params.log_fn = capture_log;
    params.log_user = &log;
    bloopcl_context *ctx = NULL;
    cr_assert_eq(bloopcl_context_create(&params, &ctx), BLOOPCL_OK, "%s",
                 bloopcl_context_last_error(ctx));
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    cr_assert_eq(bloopcl_context_device_info(ctx, &info), BLOOPCL_OK);
    unsigned width =
        bloopcl__vector_width(device_uint(info.device, CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT),
                              device_uint(info.device, CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT));
    char expected[64];
    snprintf(expected, sizeof expected, "-DBLOOPCL_CONTIGUOUS -DBLOOPCL_VECTOR=%u ", width);
    expect_message_has(log.text, expected, "build options in the log");
    expect_steps_match_reference(ctx, BLOOPCL_DOTS_FUSED);
    bloopcl_context_destroy(ctx);
}

Test(driver, forced_vector_width_two)
{
    cr_assert_eq(setenv("BLOOPCL_KERNEL_SHAPE", "cpu", 1), 0);
    cr_assert_eq(setenv("BLOOPCL_KERNEL_VECTOR", "2", 1), 0);
    bloopcl_context *ctx = support_context();
    expect_steps_match_reference(ctx, BLOOPCL_DOTS_FUSED);
    expect_steps_match_reference(ctx, BLOOPCL_DOTS_CLBLAST);
    bloopcl_context_destroy(ctx);
}

Test(driver, bad_vector_width_is_refused)
{
    support_context_skip_without_device();
    const char *bad[] = {"3", "32", "0", "four", " 4"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        cr_assert_eq(setenv("BLOOPCL_KERNEL_VECTOR", bad[i], 1), 0);
        bloopcl_context *ctx = NULL;
        cr_expect_eq(bloopcl_context_create(NULL, &ctx), BLOOPCL_ERR_INVALID_ARGUMENT, "%s",
                     bad[i]);
        expect_message_has(bloopcl_context_last_error(ctx), "is not one of 1, 2, 4, 8, 16",
                           bad[i]);
        bloopcl_context_destroy(ctx);
    }
    /* The GPU shape walks single floats: a wider vector there is refused, not ignored. */
    cr_assert_eq(setenv("BLOOPCL_KERNEL_SHAPE", "gpu", 1), 0);
    cr_assert_eq(setenv("BLOOPCL_KERNEL_VECTOR", "4", 1), 0);
    bloopcl_context *ctx = NULL;
    cr_expect_eq(bloopcl_context_create(NULL, &ctx), BLOOPCL_ERR_INVALID_ARGUMENT);
    expect_message_has(bloopcl_context_last_error(ctx), "needs the CPU kernel shape", "gpu");
    bloopcl_context_destroy(ctx);
}
