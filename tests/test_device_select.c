/* test_device_select.c — the BLOOPCL_DEVICE grammar on synthetic multi-vendor device lists
 * (pure matching, no OpenCL), then enumeration and selection on the machine's real devices,
 * from several threads at once, and through drivers that answer "no device" for a moment.
 *
 * The tests link the library statically, so clGetDeviceIDs defined here replaces the
 * loader's for the library's calls; it forwards to the loader (dlsym RTLD_NEXT) unless a test
 * asks for empty answers. */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include "internal.h"

#include <ctype.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MESSAGE_SIZE 4096
#define NO_MATCH ((size_t)-1)

/* How many of the next clGetDeviceIDs calls answer CL_DEVICE_NOT_FOUND, as PoCL's does while
 * another thread's first enumeration is setting its devices up. */
static int device_not_found_answers;

typedef cl_int (*device_ids_fn)(cl_platform_id, cl_device_type, cl_uint, cl_device_id *,
                                cl_uint *);

CL_API_ENTRY cl_int CL_API_CALL clGetDeviceIDs(cl_platform_id platform, cl_device_type type,
                                               cl_uint num_entries, cl_device_id *devices,
                                               cl_uint *num_devices)
{
    if (device_not_found_answers > 0) {
        device_not_found_answers--;
        return CL_DEVICE_NOT_FOUND;
    }
    /* POSIX: a dlsym result converts to a function pointer by copying its bytes. */
    void *symbol = dlsym(RTLD_NEXT, "clGetDeviceIDs");
    device_ids_fn real;
    if (symbol == NULL)
        abort(); /* the test binary links the loader: this cannot happen */
    memcpy(&real, &symbol, sizeof real);
    return real(platform, type, num_entries, devices, num_devices);
}

/* ---------------------------------------------------------------------------------------------
 * Synthetic lists
 * ------------------------------------------------------------------------------------------- */
static bloopcl_device_info make_device(unsigned flat, unsigned platform_index,
                                       unsigned device_index, const char *platform,
                                       const char *vendor, const char *device,
                                       cl_device_type type)
{
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    memset(&info, 0, sizeof info);
    info.flat_index = flat;
    info.platform_index = platform_index;
    info.device_index = device_index;
    info.type = type;
    snprintf(info.platform_name, sizeof info.platform_name, "%s", platform);
    snprintf(info.platform_vendor, sizeof info.platform_vendor, "%s", vendor);
    snprintf(info.device_name, sizeof info.device_name, "%s", device);
    return info;
}

#define AMD_PLATFORM "AMD Accelerated Parallel Processing"
#define AMD_VENDOR "Advanced Micro Devices, Inc."
#define POCL_PLATFORM "Portable Computing Language"
#define POCL_VENDOR "The pocl project"
#define INTEL_PLATFORM "Intel(R) OpenCL Graphics"
#define INTEL_VENDOR "Intel(R) Corporation"

/* 0: AMD gfx1100 (GPU)   1: AMD Ryzen (CPU)   2: PoCL pthread Ryzen (CPU)   3: Intel Arc (GPU)
 * Platform indices 0, 1, 2 as the loader would number them. Both CPUs contain "Ryzen", so
 * first-match-wins is observable. */
static const char *const mixed_names[] = {
    "gfx1100", "AMD Ryzen 9 7950X 16-Core Processor", "pthread-znver4-AMD Ryzen 9 7950X",
    "Intel(R) Arc(TM) A770 Graphics"};
#define MIXED_COUNT 4

static void mixed_list(bloopcl_device_info *list)
{
    list[0] = make_device(0, 0, 0, AMD_PLATFORM, AMD_VENDOR, mixed_names[0], CL_DEVICE_TYPE_GPU);
    list[1] = make_device(1, 0, 1, AMD_PLATFORM, AMD_VENDOR, mixed_names[1], CL_DEVICE_TYPE_CPU);
    list[2] = make_device(2, 1, 0, POCL_PLATFORM, POCL_VENDOR, mixed_names[2],
                          CL_DEVICE_TYPE_CPU);
    list[3] = make_device(3, 2, 0, INTEL_PLATFORM, INTEL_VENDOR, mixed_names[3],
                          CL_DEVICE_TYPE_GPU);
}

/* The matcher as bloopcl_select_device calls it for a spec read from BLOOPCL_DEVICE. */
static bloopcl_status match_env(const bloopcl_device_info *devices, size_t count,
                                const char *spec, size_t *selected, char *message, size_t size)
{
    return bloopcl__match_device_spec(devices, count, spec, "BLOOPCL_DEVICE", selected, message,
                                      size);
}

/* Matches `spec` against the mixed list; returns the index, or NO_MATCH with the status kept. */
static size_t match_mixed(const char *spec, bloopcl_status *status, char *message)
{
    bloopcl_device_info list[MIXED_COUNT] = {BLOOPCL_DEVICE_INFO_INIT};
    mixed_list(list);
    size_t selected = NO_MATCH;
    *status = match_env(list, MIXED_COUNT, spec, &selected, message,
                                         MESSAGE_SIZE);
    return *status == BLOOPCL_OK ? selected : NO_MATCH;
}

static void expect_mixed(const char *spec, size_t expected)
{
    char message[MESSAGE_SIZE];
    bloopcl_status status;
    size_t got = match_mixed(spec, &status, message);
    cr_assert_eq(status, BLOOPCL_OK, "spec \"%s\": status %d, message: %s",
                 spec ? spec : "(null)", (int)status, message);
    cr_assert_eq(got, expected, "spec \"%s\": selected %zu, expected %zu", spec ? spec : "(null)",
                 got, expected);
    cr_assert_str_empty(message, "spec \"%s\": success must clear the message", spec);
}

/* Asserts the failure status and that the message quotes the spec and lists every device. */
static void expect_mixed_failure(const char *spec, bloopcl_status expected_status,
                                 const char *reason)
{
    char message[MESSAGE_SIZE];
    bloopcl_status status;
    size_t got = match_mixed(spec, &status, message);
    cr_assert_eq(status, expected_status, "spec \"%s\": status %d (selected %zu), expected %d",
                 spec, (int)status, got, (int)expected_status);
    char quoted[256];
    snprintf(quoted, sizeof quoted, "BLOOPCL_DEVICE=\"%s\"", spec);
    cr_assert(strstr(message, quoted) != NULL, "message lacks %s: %s", quoted, message);
    cr_assert(strstr(message, reason) != NULL, "message lacks \"%s\": %s", reason, message);
    cr_assert(strstr(message, "devices found:") != NULL, "message: %s", message);
    for (size_t i = 0; i < MIXED_COUNT; i++)
        cr_assert(strstr(message, mixed_names[i]) != NULL, "message lacks %s: %s",
                  mixed_names[i], message);
    cr_assert(strstr(message, "\n  3: " INTEL_PLATFORM " / Intel(R) Arc(TM) A770 Graphics (GPU)") !=
                  NULL,
              "message: %s", message);
}

/* ---------------------------------------------------------------------------------------------
 * Default selection
 * ------------------------------------------------------------------------------------------- */
Test(device_select, unset_spec_picks_first_gpu)
{
    expect_mixed(NULL, 0);
}

Test(device_select, empty_and_blank_specs_pick_first_gpu)
{
    expect_mixed("", 0);
    expect_mixed("   ", 0);
    expect_mixed(" \t\n", 0);
}

Test(device_select, default_prefers_gpu_over_earlier_cpu)
{
    bloopcl_device_info list[3] = {
        make_device(0, 0, 0, POCL_PLATFORM, POCL_VENDOR, "cpu-a", CL_DEVICE_TYPE_CPU),
        make_device(1, 1, 0, "Acc platform", "Acc vendor", "acc-a", CL_DEVICE_TYPE_ACCELERATOR),
        make_device(2, 2, 0, "Gpu platform", "Gpu vendor", "gpu-a", CL_DEVICE_TYPE_GPU)};
    size_t selected = NO_MATCH;
    cr_assert_eq(match_env(list, 3, NULL, &selected, NULL, 0), BLOOPCL_OK);
    cr_assert_eq(selected, 2u);
}

Test(device_select, default_prefers_accelerator_over_earlier_cpu)
{
    bloopcl_device_info list[3] = {
        make_device(0, 0, 0, POCL_PLATFORM, POCL_VENDOR, "cpu-a", CL_DEVICE_TYPE_CPU),
        make_device(1, 0, 1, POCL_PLATFORM, POCL_VENDOR, "cpu-b", CL_DEVICE_TYPE_CPU),
        make_device(2, 1, 0, "Acc platform", "Acc vendor", "acc-a",
                    CL_DEVICE_TYPE_ACCELERATOR)};
    size_t selected = NO_MATCH;
    cr_assert_eq(match_env(list, 3, "", &selected, NULL, 0), BLOOPCL_OK);
    cr_assert_eq(selected, 2u);
}

Test(device_select, default_with_only_cpus_picks_first_cpu)
{
    bloopcl_device_info list[3] = {
        make_device(0, 0, 0, "Custom platform", "X", "custom-a", CL_DEVICE_TYPE_CUSTOM),
        make_device(1, 1, 0, POCL_PLATFORM, POCL_VENDOR, "cpu-a", CL_DEVICE_TYPE_CPU),
        make_device(2, 1, 1, POCL_PLATFORM, POCL_VENDOR, "cpu-b", CL_DEVICE_TYPE_CPU)};
    size_t selected = NO_MATCH;
    cr_assert_eq(match_env(list, 3, NULL, &selected, NULL, 0), BLOOPCL_OK);
    cr_assert_eq(selected, 1u, "a CPU must win over a device of another type");
}

Test(device_select, default_falls_back_to_first_device_of_any_type)
{
    bloopcl_device_info list[2] = {
        make_device(0, 0, 0, "Custom platform", "X", "custom-a", CL_DEVICE_TYPE_CUSTOM),
        make_device(1, 0, 1, "Custom platform", "X", "custom-b", CL_DEVICE_TYPE_CUSTOM)};
    size_t selected = NO_MATCH;
    cr_assert_eq(match_env(list, 2, NULL, &selected, NULL, 0), BLOOPCL_OK);
    cr_assert_eq(selected, 0u);
}

Test(device_select, gpu_with_default_bit_counts_as_gpu)
{
    bloopcl_device_info list[2] = {
        make_device(0, 0, 0, POCL_PLATFORM, POCL_VENDOR, "cpu-a", CL_DEVICE_TYPE_CPU),
        make_device(1, 1, 0, "G", "G", "gpu-a", CL_DEVICE_TYPE_GPU | CL_DEVICE_TYPE_DEFAULT)};
    size_t selected = NO_MATCH;
    cr_assert_eq(match_env(list, 2, "", &selected, NULL, 0), BLOOPCL_OK);
    cr_assert_eq(selected, 1u);
    cr_assert_eq(match_env(list, 2, "gpu", &selected, NULL, 0), BLOOPCL_OK);
    cr_assert_eq(selected, 1u);
}

Test(device_select, no_devices_at_all_gives_install_hint)
{
    char message[MESSAGE_SIZE];
    size_t selected = 7;
    cr_assert_eq(match_env(NULL, 0, NULL, &selected, message, sizeof message),
                 BLOOPCL_ERR_DEVICE_NOT_FOUND);
    cr_assert_str_eq(message, "no OpenCL device found (is an ICD such as PoCL installed? see "
                              "OCL_ICD_VENDORS)");
    cr_assert_eq(selected, 7u, "selected must be untouched on failure");
    cr_assert_eq(match_env(NULL, 0, "gpu", &selected, message, sizeof message),
                 BLOOPCL_ERR_DEVICE_NOT_FOUND);
    cr_assert(strstr(message, "BLOOPCL_DEVICE=\"gpu\"") != NULL, "message: %s", message);
    cr_assert(strstr(message, "OCL_ICD_VENDORS") != NULL, "message: %s", message);
    cr_assert_eq(match_env(NULL, 0, "a:b:c", &selected, message, sizeof message),
                 BLOOPCL_ERR_DEVICE_SPEC, "syntax is checked even without devices");
    cr_assert(strstr(message, "more than one ':'") != NULL, "message: %s", message);
}

/* ---------------------------------------------------------------------------------------------
 * Type keywords
 * ------------------------------------------------------------------------------------------- */
Test(device_select, gpu_keyword_case_insensitive)
{
    expect_mixed("gpu", 0);
    expect_mixed("GPU", 0);
    expect_mixed("  Gpu  ", 0);
}

Test(device_select, gpu_rank_counts_across_platforms)
{
    expect_mixed("gpu:0", 0);
    expect_mixed("gpu:1", 3);
    expect_mixed("GPU : 1", 3);
    expect_mixed("gpu:", 0);
}

Test(device_select, gpu_rank_out_of_range)
{
    expect_mixed_failure("gpu:2", BLOOPCL_ERR_DEVICE_NOT_FOUND, "no GPU device of rank 2 (2 found");
}

Test(device_select, cpu_keyword_and_rank)
{
    expect_mixed("cpu", 1);
    expect_mixed("CPU:0", 1);
    /* Read as P:D, "cpu:1" would match nothing: no platform is called "cpu". */
    expect_mixed("cpu:1", 2);
    expect_mixed_failure("cpu:2", BLOOPCL_ERR_DEVICE_NOT_FOUND, "no CPU device of rank 2");
}

Test(device_select, accelerator_absent_lists_devices)
{
    expect_mixed_failure("acc", BLOOPCL_ERR_DEVICE_NOT_FOUND, "no ACCELERATOR device");
    expect_mixed_failure("accelerator", BLOOPCL_ERR_DEVICE_NOT_FOUND, "no ACCELERATOR device");
}

Test(device_select, accelerator_keywords_select_it)
{
    bloopcl_device_info list[3] = {
        make_device(0, 0, 0, POCL_PLATFORM, POCL_VENDOR, "cpu-a", CL_DEVICE_TYPE_CPU),
        make_device(1, 1, 0, "Xilinx", "Xilinx", "fpga-a", CL_DEVICE_TYPE_ACCELERATOR),
        make_device(2, 1, 1, "Xilinx", "Xilinx", "fpga-b", CL_DEVICE_TYPE_ACCELERATOR)};
    const char *specs[] = {"acc", "ACC", "accelerator", "Accelerator:0", "acc:1"};
    const size_t expected[] = {1, 1, 1, 1, 2};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        size_t selected = NO_MATCH;
        cr_assert_eq(match_env(list, 3, specs[i], &selected, NULL, 0),
                     BLOOPCL_OK, "spec %s", specs[i]);
        cr_assert_eq(selected, expected[i], "spec %s: got %zu", specs[i], selected);
    }
}

/* ---------------------------------------------------------------------------------------------
 * P:D
 * ------------------------------------------------------------------------------------------- */
Test(device_select, pair_of_indices)
{
    expect_mixed("0:0", 0);
    expect_mixed("0:1", 1);
    expect_mixed("1:0", 2);
    expect_mixed("2:0", 3);
    expect_mixed(" 0 : 1 ", 1);
}

Test(device_select, pair_of_indices_out_of_range)
{
    expect_mixed_failure("1:1", BLOOPCL_ERR_DEVICE_NOT_FOUND, "no device matches");
    expect_mixed_failure("3:0", BLOOPCL_ERR_DEVICE_NOT_FOUND, "no device matches");
}

Test(device_select, pair_of_substrings)
{
    expect_mixed("amd:gfx1100", 0);
    expect_mixed("AMD:GFX", 0);
    expect_mixed("amd:ryzen", 1);
    expect_mixed("portable:ryzen", 2);
    expect_mixed("intel:arc", 3);
    expect_mixed("Intel(R) OpenCL:A770", 3);
}

Test(device_select, platform_vendor_substring)
{
    expect_mixed("advanced micro:", 0);
    expect_mixed("pocl:", 2);
    expect_mixed("corporation:", 3);
}

Test(device_select, empty_device_field_means_first_of_platform)
{
    expect_mixed("portable:", 2);
    expect_mixed("PORTABLE:", 2);
    expect_mixed("intel:", 3);
    expect_mixed("1:", 2);
}

Test(device_select, empty_platform_field_matches_any_platform)
{
    expect_mixed(":gfx", 0);
    expect_mixed(":arc", 3);
    expect_mixed(":ryzen", 1); /* first match in flat order, not the PoCL one */
    expect_mixed(":0", 0);
    expect_mixed(":1", 1);
    expect_mixed(":", 0);
}

Test(device_select, mixed_index_and_substring_fields)
{
    expect_mixed("portable:0", 2);
    expect_mixed("2:arc", 3);
    expect_mixed_failure("1:gfx", BLOOPCL_ERR_DEVICE_NOT_FOUND, "no device matches");
    expect_mixed_failure("portable:1", BLOOPCL_ERR_DEVICE_NOT_FOUND, "no device matches");
}

Test(device_select, only_all_digit_fields_are_indices)
{
    /* "1100" is a device index (none that high), "x1100" and "7950x" are substrings. */
    expect_mixed_failure(":1100", BLOOPCL_ERR_DEVICE_NOT_FOUND, "device field \"1100\"");
    expect_mixed(":x1100", 0);
    expect_mixed(":7950x", 1);
    expect_mixed("amd:1", 1);
}

Test(device_select, pair_no_match_lists_devices)
{
    expect_mixed_failure("nvidia:", BLOOPCL_ERR_DEVICE_NOT_FOUND, "platform field \"nvidia\"");
    expect_mixed_failure("amd:arc", BLOOPCL_ERR_DEVICE_NOT_FOUND, "device field \"arc\"");
    expect_mixed_failure("1x:", BLOOPCL_ERR_DEVICE_NOT_FOUND, "platform field \"1x\"");
}

/* ---------------------------------------------------------------------------------------------
 * Bare N
 * ------------------------------------------------------------------------------------------- */
Test(device_select, bare_flat_index)
{
    expect_mixed("0", 0);
    expect_mixed("2", 2);
    expect_mixed(" 3 ", 3);
    expect_mixed("03", 3);
}

Test(device_select, bare_flat_index_out_of_range)
{
    expect_mixed_failure("4", BLOOPCL_ERR_DEVICE_NOT_FOUND, "no device with index 4 (4 found)");
    expect_mixed_failure("4294967295", BLOOPCL_ERR_DEVICE_NOT_FOUND, "no device with index");
}

Test(device_select, bare_index_uses_flat_index_field)
{
    /* The N printed by the list is flat_index; selection must agree with it. */
    bloopcl_device_info list[2] = {
        make_device(5, 0, 0, "P", "V", "dev-five", CL_DEVICE_TYPE_CPU),
        make_device(6, 0, 1, "P", "V", "dev-six", CL_DEVICE_TYPE_CPU)};
    size_t selected = NO_MATCH;
    cr_assert_eq(match_env(list, 2, "6", &selected, NULL, 0), BLOOPCL_OK);
    cr_assert_eq(selected, 1u);
}

/* ---------------------------------------------------------------------------------------------
 * Malformed specs
 * ------------------------------------------------------------------------------------------- */
Test(device_select, two_colons_is_malformed)
{
    expect_mixed_failure("a:b:c", BLOOPCL_ERR_DEVICE_SPEC, "more than one ':'");
    expect_mixed_failure("gpu:0:1", BLOOPCL_ERR_DEVICE_SPEC, "more than one ':'");
    expect_mixed_failure("::", BLOOPCL_ERR_DEVICE_SPEC, "more than one ':'");
}

Test(device_select, non_numeric_rank_is_malformed)
{
    expect_mixed_failure("gpu:x", BLOOPCL_ERR_DEVICE_SPEC, "rank \"x\"");
    expect_mixed_failure("gpu:-1", BLOOPCL_ERR_DEVICE_SPEC, "rank \"-1\"");
    expect_mixed_failure("cpu:1x", BLOOPCL_ERR_DEVICE_SPEC, "rank \"1x\"");
    expect_mixed_failure("acc:+1", BLOOPCL_ERR_DEVICE_SPEC, "rank \"+1\"");
}

Test(device_select, overflowing_numbers_are_malformed)
{
    expect_mixed_failure("99999999999999999999999", BLOOPCL_ERR_DEVICE_SPEC, "too large");
    expect_mixed_failure("4294967296", BLOOPCL_ERR_DEVICE_SPEC, "too large");
    expect_mixed_failure("gpu:99999999999999999999", BLOOPCL_ERR_DEVICE_SPEC, "too large");
    expect_mixed_failure("0:99999999999999999999", BLOOPCL_ERR_DEVICE_SPEC, "too large");
    expect_mixed_failure("99999999999999999999:", BLOOPCL_ERR_DEVICE_SPEC, "too large");
}

Test(device_select, bare_word_is_malformed_with_hint)
{
    expect_mixed_failure("zzz", BLOOPCL_ERR_DEVICE_SPEC, "write \"zzz:\" for a platform");
    expect_mixed_failure("1x", BLOOPCL_ERR_DEVICE_SPEC, "\"1x\" is not one of");
    expect_mixed_failure("-1", BLOOPCL_ERR_DEVICE_SPEC, "\"-1\" is not one of");
}

/* ---------------------------------------------------------------------------------------------
 * Messages and helpers
 * ------------------------------------------------------------------------------------------- */
Test(device_select, message_optional_and_truncated)
{
    bloopcl_device_info list[MIXED_COUNT] = {BLOOPCL_DEVICE_INFO_INIT};
    mixed_list(list);
    size_t selected = NO_MATCH;
    cr_assert_eq(match_env(list, MIXED_COUNT, "acc", &selected, NULL, 0),
                 BLOOPCL_ERR_DEVICE_NOT_FOUND);
    char small[16];
    memset(small, 'x', sizeof small);
    cr_assert_eq(match_env(list, MIXED_COUNT, "acc", &selected, small, 0),
                 BLOOPCL_ERR_DEVICE_NOT_FOUND);
    cr_assert_eq(small[0], 'x', "size 0 must not write");
    cr_assert_eq(match_env(list, MIXED_COUNT, "acc", &selected, small,
                                            sizeof small),
                 BLOOPCL_ERR_DEVICE_NOT_FOUND);
    cr_assert_eq(strlen(small), sizeof small - 1);
    cr_assert_str_eq(small, "BLOOPCL_DEVICE=");
}

Test(device_select, success_clears_message)
{
    bloopcl_device_info list[MIXED_COUNT] = {BLOOPCL_DEVICE_INFO_INIT};
    mixed_list(list);
    char message[64] = "stale text";
    size_t selected = NO_MATCH;
    cr_assert_eq(match_env(list, MIXED_COUNT, "intel:", &selected, message,
                                            sizeof message),
                 BLOOPCL_OK);
    cr_assert_eq(selected, 3u);
    cr_assert_str_empty(message);
}

Test(device_select, null_arguments)
{
    bloopcl_device_info list[MIXED_COUNT] = {BLOOPCL_DEVICE_INFO_INIT};
    mixed_list(list);
    size_t selected = 0;
    cr_assert_eq(match_env(list, MIXED_COUNT, "gpu", NULL, NULL, 0),
                 BLOOPCL_ERR_NULL_ARGUMENT);
    cr_assert_eq(match_env(NULL, 2, "gpu", &selected, NULL, 0),
                 BLOOPCL_ERR_NULL_ARGUMENT);
    cr_assert_eq(bloopcl_select_device("cpu", NULL, NULL, 0), BLOOPCL_ERR_NULL_ARGUMENT);
    size_t count = 99;
    cr_assert_eq(bloopcl_list_devices(NULL, 0, NULL), BLOOPCL_ERR_NULL_ARGUMENT);
    cr_assert_eq(bloopcl_list_devices(NULL, 1, &count), BLOOPCL_ERR_NULL_ARGUMENT);
    cr_assert_eq(count, 0u, "a failed listing reports no devices");
    cr_assert_eq(bloopcl__describe_device(NULL, NULL, NULL), BLOOPCL_ERR_NULL_ARGUMENT);
}

Test(device_select, append_device_list_format)
{
    bloopcl_device_info list[MIXED_COUNT] = {BLOOPCL_DEVICE_INFO_INIT};
    mixed_list(list);
    char buffer[1024] = "head:";
    bloopcl__append_device_list(buffer, sizeof buffer, list, MIXED_COUNT);
    cr_assert_str_eq(buffer, "head:"
                             "\n  0: AMD Accelerated Parallel Processing / gfx1100 (GPU)"
                             "\n  1: AMD Accelerated Parallel Processing / AMD Ryzen 9 7950X "
                             "16-Core Processor (CPU)"
                             "\n  2: Portable Computing Language / pthread-znver4-AMD Ryzen 9 "
                             "7950X (CPU)"
                             "\n  3: Intel(R) OpenCL Graphics / Intel(R) Arc(TM) A770 Graphics "
                             "(GPU)");
    char tiny[12] = "ab";
    bloopcl__append_device_list(tiny, sizeof tiny, list, MIXED_COUNT);
    cr_assert_str_eq(tiny, "ab\n  0: AMD"); /* 11 characters and the terminator */
}

Test(device_select, device_type_names)
{
    cr_assert_str_eq(bloopcl__device_type_name(CL_DEVICE_TYPE_GPU), "GPU");
    cr_assert_str_eq(bloopcl__device_type_name(CL_DEVICE_TYPE_CPU), "CPU");
    cr_assert_str_eq(bloopcl__device_type_name(CL_DEVICE_TYPE_ACCELERATOR), "ACCELERATOR");
    cr_assert_str_eq(bloopcl__device_type_name(CL_DEVICE_TYPE_CUSTOM), "CUSTOM");
    cr_assert_str_eq(bloopcl__device_type_name(CL_DEVICE_TYPE_DEFAULT), "DEFAULT");
    cr_assert_str_eq(bloopcl__device_type_name(0), "OTHER");
    cr_assert_str_eq(bloopcl__device_type_name(CL_DEVICE_TYPE_GPU | CL_DEVICE_TYPE_DEFAULT),
                     "GPU");
}

/* ---------------------------------------------------------------------------------------------
 * The real machine (PoCL in CI). Criterion runs each test in its own process, so setenv does
 * not leak from one test into another.
 * ------------------------------------------------------------------------------------------- */
typedef struct real_devices {
    bloopcl_device_info *list;
    size_t count;
} real_devices;

static real_devices list_real_devices(void)
{
    real_devices real = {NULL, 0};
    cr_assert_eq(bloopcl_list_devices(NULL, 0, &real.count), BLOOPCL_OK);
    if (real.count == 0)
        cr_skip_test("no OpenCL device");
    real.list = calloc(real.count, sizeof *real.list);
    cr_assert_not_null(real.list);
    real.list[0].struct_size = sizeof *real.list;
    size_t again = 0;
    cr_assert_eq(bloopcl_list_devices(real.list, real.count, &again), BLOOPCL_OK);
    cr_assert_eq(again, real.count);
    return real;
}

static bool contains_ci_test(const char *haystack, const char *needle)
{
    size_t n = strlen(needle);
    for (const char *p = haystack; *p != '\0'; p++) {
        size_t i = 0;
        while (i < n && p[i] != '\0' &&
               tolower((unsigned char)p[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n)
            return true;
    }
    return false;
}

/* First device of `type` in the list, or NO_MATCH: an independent oracle for the default. */
static size_t first_of_type(const real_devices *real, cl_device_type type)
{
    for (size_t i = 0; i < real->count; i++)
        if (real->list[i].type & type)
            return i;
    return NO_MATCH;
}

static void select_with_env(const char *value, bloopcl_device_info *selected, char *message,
                            bloopcl_status expected)
{
    cr_assert_eq(setenv("BLOOPCL_DEVICE", value, 1), 0);
    bloopcl_status status = bloopcl_select_device(NULL, selected, message, MESSAGE_SIZE);
    cr_assert_eq(status, expected, "BLOOPCL_DEVICE=%s: status %d, message: %s", value,
                 (int)status, message);
}

Test(device_select, real_list_is_consistent)
{
    real_devices real = list_real_devices();
    cr_assert_geq(real.count, 1u);
    for (size_t i = 0; i < real.count; i++) {
        const bloopcl_device_info *d = &real.list[i];
        cr_assert_eq(d->flat_index, i);
        cr_assert_not_null(d->device);
        cr_assert_not_null(d->platform);
        cr_assert_str_not_empty(d->platform_name);
        cr_assert_str_not_empty(d->device_name);
        if (i > 0) {
            const bloopcl_device_info *prev = &real.list[i - 1];
            bool same_platform = prev->platform_index == d->platform_index;
            cr_assert(d->platform_index >= prev->platform_index);
            cr_assert_eq(d->device_index, same_platform ? prev->device_index + 1 : 0u);
        } else {
            cr_assert_eq(d->device_index, 0u);
        }
    }
    free(real.list);
}

Test(device_select, real_count_query_and_small_capacity)
{
    real_devices real = list_real_devices();
    size_t count = 12345;
    cr_assert_eq(bloopcl_list_devices(NULL, 0, &count), BLOOPCL_OK);
    cr_assert_eq(count, real.count);
    bloopcl_device_info one[2] = {BLOOPCL_DEVICE_INFO_INIT};
    memset(one, 0xAB, sizeof one);
    one[0].struct_size = sizeof one[0];
    count = 0;
    cr_assert_eq(bloopcl_list_devices(one, 1, &count), BLOOPCL_OK);
    cr_assert_eq(count, real.count, "count must be the total even when capacity is smaller");
    cr_assert_eq(one[0].device, real.list[0].device);
    cr_assert_eq((unsigned char)one[1].device_name[0], 0xABu, "capacity must not be exceeded");
    free(real.list);
}

Test(device_select, real_describe_fields)
{
    real_devices real = list_real_devices();
    for (size_t i = 0; i < real.count; i++) {
        const bloopcl_device_info *listed = &real.list[i];
        bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
        cr_assert_eq(bloopcl__describe_device(listed->platform, listed->device, &info),
                     BLOOPCL_OK);
        cr_assert_str_eq(info.platform_name, listed->platform_name);
        cr_assert_str_eq(info.device_name, listed->device_name);
        cr_assert_str_not_empty(info.platform_vendor);
        cr_assert_str_not_empty(info.driver_version);
        cr_assert(strncmp(info.opencl_c_version, "OpenCL C ", 9) == 0, "version: %s",
                  info.opencl_c_version);
        cr_assert_neq(info.type, 0u);
        cr_assert_gt(info.global_mem_bytes, 0u);
        cr_assert_gt(info.max_alloc_bytes, 0u);
        cr_assert_leq(info.max_alloc_bytes, info.global_mem_bytes);
        cr_assert_geq(info.compute_units, 1u);

        /* Extensions straight from OpenCL, tokenised independently of the library. */
        size_t size = 0;
        cr_assert_eq(clGetDeviceInfo(info.device, CL_DEVICE_EXTENSIONS, 0, NULL, &size),
                     CL_SUCCESS);
        char *extensions = calloc(size + 2, 1);
        cr_assert_not_null(extensions);
        extensions[0] = ' ';
        cr_assert_eq(clGetDeviceInfo(info.device, CL_DEVICE_EXTENSIONS, size, extensions + 1,
                                     NULL),
                     CL_SUCCESS);
        strcat(extensions, " ");
        bool fp64_listed = strstr(extensions, " cl_khr_fp64 ") != NULL;
        bool fp16_listed = strstr(extensions, " cl_khr_fp16 ") != NULL;
        cl_device_fp_config fp64_config = 0;
        clGetDeviceInfo(info.device, CL_DEVICE_DOUBLE_FP_CONFIG, sizeof fp64_config,
                        &fp64_config, NULL);
        cr_assert_eq(info.has_fp64, (fp64_listed || fp64_config != 0) ? 1 : 0);
        cr_assert_eq(info.has_fp16, fp16_listed ? 1 : 0);
        free(extensions);
    }
    free(real.list);
}

Test(device_select, real_default_follows_preference)
{
    real_devices real = list_real_devices();
    size_t expected = first_of_type(&real, CL_DEVICE_TYPE_GPU);
    if (expected == NO_MATCH)
        expected = first_of_type(&real, CL_DEVICE_TYPE_ACCELERATOR);
    if (expected == NO_MATCH)
        expected = first_of_type(&real, CL_DEVICE_TYPE_CPU);
    if (expected == NO_MATCH)
        expected = 0;
    cr_assert_eq(unsetenv("BLOOPCL_DEVICE"), 0);
    bloopcl_device_info selected = BLOOPCL_DEVICE_INFO_INIT;
    char message[MESSAGE_SIZE] = "stale";
    cr_assert_eq(bloopcl_select_device(NULL, &selected, message, sizeof message), BLOOPCL_OK,
                 "%s", message);
    cr_assert_eq(selected.device, real.list[expected].device);
    cr_assert_eq(selected.flat_index, expected);
    cr_assert_str_empty(message);
    free(real.list);
}

Test(device_select, real_env_cpu)
{
    real_devices real = list_real_devices();
    size_t cpu = first_of_type(&real, CL_DEVICE_TYPE_CPU);
    if (cpu == NO_MATCH)
        cr_skip_test("no OpenCL CPU device");
    bloopcl_device_info selected = BLOOPCL_DEVICE_INFO_INIT;
    char message[MESSAGE_SIZE];
    select_with_env("cpu", &selected, message, BLOOPCL_OK);
    cr_assert_eq(selected.device, real.list[cpu].device);
    cr_assert(selected.type & CL_DEVICE_TYPE_CPU);
    free(real.list);
}

Test(device_select, real_env_portable_platform)
{
    real_devices real = list_real_devices();
    size_t expected = NO_MATCH;
    for (size_t i = 0; i < real.count && expected == NO_MATCH; i++)
        if (contains_ci_test(real.list[i].platform_name, "portable") ||
            contains_ci_test(real.list[i].platform_vendor, "portable"))
            expected = i;
    if (expected == NO_MATCH)
        cr_skip_test("no PoCL platform");
    bloopcl_device_info selected = BLOOPCL_DEVICE_INFO_INIT;
    char message[MESSAGE_SIZE];
    select_with_env("portable:", &selected, message, BLOOPCL_OK);
    cr_assert_eq(selected.device, real.list[expected].device);
    cr_assert_str_eq(selected.platform_name, "Portable Computing Language");
    cr_assert_eq(selected.device_index, 0u);
    free(real.list);
}

Test(device_select, real_env_flat_and_pair_indices)
{
    real_devices real = list_real_devices();
    bloopcl_device_info selected = BLOOPCL_DEVICE_INFO_INIT;
    char message[MESSAGE_SIZE];
    select_with_env("0", &selected, message, BLOOPCL_OK);
    cr_assert_eq(selected.device, real.list[0].device);
    cr_assert_eq(selected.flat_index, 0u);

    /* "0:0" is device 0 of loader platform 0, which is list[0] unless platform 0 is empty. */
    bloopcl_status expected = real.list[0].platform_index == 0 ? BLOOPCL_OK
                                                               : BLOOPCL_ERR_DEVICE_NOT_FOUND;
    select_with_env("0:0", &selected, message, expected);
    if (expected == BLOOPCL_OK)
        cr_assert_eq(selected.device, real.list[0].device);
    free(real.list);
}

Test(device_select, real_env_no_match_lists_devices)
{
    real_devices real = list_real_devices();
    bloopcl_device_info selected = BLOOPCL_DEVICE_INFO_INIT;
    char message[MESSAGE_SIZE];
    bool has_nvidia = false;
    for (size_t i = 0; i < real.count; i++)
        has_nvidia = has_nvidia || contains_ci_test(real.list[i].platform_name, "nvidia") ||
                     contains_ci_test(real.list[i].platform_vendor, "nvidia");
    if (has_nvidia) {
        select_with_env("nvidia:", &selected, message, BLOOPCL_OK);
        cr_assert(contains_ci_test(selected.platform_name, "nvidia") ||
                  contains_ci_test(selected.platform_vendor, "nvidia"));
    } else {
        select_with_env("nvidia:", &selected, message, BLOOPCL_ERR_DEVICE_NOT_FOUND);
        cr_assert(strstr(message, "BLOOPCL_DEVICE=\"nvidia:\"") != NULL, "%s", message);
    }
    select_with_env("zz-no-such-platform:", &selected, message,
                    BLOOPCL_ERR_DEVICE_NOT_FOUND);
    cr_assert(strstr(message, "BLOOPCL_DEVICE=\"zz-no-such-platform:\"") != NULL, "%s",
              message);
    for (size_t i = 0; i < real.count; i++) {
        char line[512];
        snprintf(line, sizeof line, "\n  %zu: %s / %s (%s)", i, real.list[i].platform_name,
                 real.list[i].device_name, bloopcl__device_type_name(real.list[i].type));
        cr_assert(strstr(message, line) != NULL, "message lacks %s: %s", line, message);
    }
    free(real.list);
}

Test(device_select, real_explicit_spec_overrides_env)
{
    real_devices real = list_real_devices();
    size_t cpu = first_of_type(&real, CL_DEVICE_TYPE_CPU);
    if (cpu == NO_MATCH)
        cr_skip_test("no OpenCL CPU device");
    cr_assert_eq(setenv("BLOOPCL_DEVICE", "zzz:", 1), 0);
    bloopcl_device_info selected = BLOOPCL_DEVICE_INFO_INIT;
    char message[MESSAGE_SIZE] = "stale";
    cr_assert_eq(bloopcl_select_device("cpu", &selected, message, sizeof message), BLOOPCL_OK,
                 "%s", message);
    cr_assert_eq(selected.device, real.list[cpu].device);
    cr_assert_str_empty(message);
    /* And the garbage in the environment really is rejected when no spec is given. */
    cr_assert_eq(bloopcl_select_device(NULL, &selected, message, sizeof message),
                 BLOOPCL_ERR_DEVICE_NOT_FOUND);
    cr_assert(strstr(message, "BLOOPCL_DEVICE=\"zzz:\"") != NULL, "%s", message);
    free(real.list);
}

/* ---------------------------------------------------------------------------------------------
 * Threads: a process's first enumeration, from several threads at once. Each round is a fresh
 * child process (forked before this process touches OpenCL), whose threads wait at a barrier
 * and then select a device or create a context at the same moment. Before enumeration was
 * serialised (device_list.c), 100 of 100 such processes failed: "no OpenCL device found" in
 * some threads, a crash inside PoCL's clGetDeviceInfo in most.
 * ------------------------------------------------------------------------------------------- */
#define RACE_THREADS 8

typedef enum race_work { RACE_SELECT, RACE_CONTEXT } race_work;

typedef struct race_thread {
    pthread_barrier_t *barrier;
    race_work work;
    bloopcl_status status;
    char message[512];
} race_thread;

static void *race_body(void *argument)
{
    race_thread *t = argument;
    pthread_barrier_wait(t->barrier);
    if (t->work == RACE_SELECT) {
        bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
        t->status = bloopcl_select_device("", &info, t->message, sizeof t->message);
        return NULL;
    }
    bloopcl_context *ctx = NULL;
    t->status = bloopcl_context_create(NULL, &ctx);
    snprintf(t->message, sizeof t->message, "%s", bloopcl_context_last_error(ctx));
    bloopcl_context_destroy(ctx);
    return NULL;
}

/* The child: RACE_THREADS threads at once; exits with how many failed, and writes the first
 * failure's message to `report`. */
static _Noreturn void race_child(race_work work, int report)
{
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, RACE_THREADS);
    race_thread threads[RACE_THREADS];
    pthread_t ids[RACE_THREADS];
    for (int i = 0; i < RACE_THREADS; i++) {
        threads[i] = (race_thread){&barrier, work, BLOOPCL_OK, ""};
        if (pthread_create(&ids[i], NULL, race_body, &threads[i]) != 0)
            _exit(100);
    }
    int failed = 0;
    for (int i = 0; i < RACE_THREADS; i++) {
        pthread_join(ids[i], NULL);
        if (threads[i].status != BLOOPCL_OK && failed++ == 0) {
            char line[600];
            int length = snprintf(line, sizeof line, "status %d: %s", (int)threads[i].status,
                                  threads[i].message);
            if (write(report, line, (size_t)length) < 0)
                _exit(101);
        }
    }
    _exit(failed);
}

/* Runs `rounds` fresh processes; asserts every thread of every one succeeded. */
static void expect_first_enumerations_succeed(race_work work, int rounds)
{
    int failed_rounds = 0;
    char first_failure[700] = "";
    for (int round = 0; round < rounds; round++) {
        int report[2];
        cr_assert_eq(pipe(report), 0);
        pid_t child = fork();
        cr_assert_neq(child, -1);
        if (child == 0) {
            close(report[0]);
            race_child(work, report[1]);
        }
        close(report[1]);
        char text[600] = "";
        ssize_t got = read(report[0], text, sizeof text - 1);
        text[got > 0 ? got : 0] = '\0';
        close(report[0]);
        int wait_status = 0;
        cr_assert_eq(waitpid(child, &wait_status, 0), child);
        bool ok = WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0;
        if (!ok && failed_rounds++ == 0)
            snprintf(first_failure, sizeof first_failure, "%s%s",
                     WIFSIGNALED(wait_status) ? "killed by signal " : "",
                     WIFSIGNALED(wait_status) ? strsignal(WTERMSIG(wait_status)) : text);
    }
    cr_expect_eq(failed_rounds, 0, "%d of %d processes had a failing thread; first: %s",
                 failed_rounds, rounds, first_failure);
}

Test(device_select, first_selections_in_threads_all_find_the_device, .timeout = 300)
{
    expect_first_enumerations_succeed(RACE_SELECT, 40);
}

Test(device_select, first_contexts_in_threads_all_succeed, .timeout = 600)
{
    expect_first_enumerations_succeed(RACE_CONTEXT, 4);
}

/* ---------------------------------------------------------------------------------------------
 * Where the spec came from, and caller text in messages
 * ------------------------------------------------------------------------------------------- */

/* Asserts that the message carries no control character of its own: its only ones are the
 * newlines that start the device-list lines ("\n  "). */
static void expect_no_raw_control_characters(const char *message)
{
    for (const char *p = message; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '\n')
            cr_expect(strncmp(p, "\n  ", 3) == 0, "a newline that starts no list line at %zu "
                      "of: %s", (size_t)(p - message), message);
        else
            cr_expect(c >= 0x20 && c != 0x7f, "raw byte 0x%02x at %zu of: %s", c,
                      (size_t)(p - message), message);
    }
}

Test(device_select, explicit_spec_is_named_device_spec)
{
    cr_assert_eq(setenv("BLOOPCL_DEVICE", "cpu", 1), 0);
    bloopcl_device_info selected = BLOOPCL_DEVICE_INFO_INIT;
    char message[MESSAGE_SIZE];
    cr_assert_eq(bloopcl_select_device("zz-no-such-platform:", &selected, message,
                                       sizeof message), BLOOPCL_ERR_DEVICE_NOT_FOUND);
    cr_expect(strncmp(message, "device_spec=\"zz-no-such-platform:\": ", 36) == 0, "%s",
              message);
    cr_expect(strstr(message, "BLOOPCL_DEVICE") == NULL, "the variable was not used: %s",
              message);

    /* The same through the context parameters. */
    bloopcl_context_params params;
    bloopcl_context_params_default(&params);
    params.device_spec = "gpu:zz";
    bloopcl_context *ctx = NULL;
    cr_assert_eq(bloopcl_context_create(&params, &ctx), BLOOPCL_ERR_DEVICE_SPEC);
    const char *error = bloopcl_context_last_error(ctx);
    cr_expect(strncmp(error, "device_spec=\"gpu:zz\": rank \"zz\" after the device type", 52) ==
                  0, "%s", error);
    bloopcl_context_destroy(ctx);
}

Test(device_select, environment_spec_is_named_bloopcl_device)
{
    cr_assert_eq(setenv("BLOOPCL_DEVICE", "gpu:zz", 1), 0);
    bloopcl_context *ctx = NULL;
    cr_assert_eq(bloopcl_context_create(NULL, &ctx), BLOOPCL_ERR_DEVICE_SPEC);
    const char *error = bloopcl_context_last_error(ctx);
    cr_expect(strncmp(error, "BLOOPCL_DEVICE=\"gpu:zz\": rank \"zz\"", 34) == 0, "%s", error);
    cr_expect(strstr(error, "device_spec") == NULL, "%s", error);
    bloopcl_context_destroy(ctx);
}

/* ESC (a terminal escape: clear the screen) and a newline (a forged log line) in the spec. */
#define HOSTILE_SPEC "\x1b[2J\nforged line"
#define HOSTILE_ESCAPED "\\x1b[2J\\nforged"

Test(device_select, control_characters_in_the_spec_are_escaped)
{
    bloopcl_device_info selected = BLOOPCL_DEVICE_INFO_INIT;
    char message[MESSAGE_SIZE];
    cr_assert_eq(bloopcl_select_device(HOSTILE_SPEC ":", &selected, message, sizeof message),
                 BLOOPCL_ERR_DEVICE_NOT_FOUND);
    expect_no_raw_control_characters(message);
    cr_expect(strstr(message, "=\"" HOSTILE_ESCAPED " line:\"") != NULL, "%s", message);

    cr_assert_eq(setenv("BLOOPCL_DEVICE", "gpu:" HOSTILE_SPEC, 1), 0);
    cr_assert_eq(bloopcl_select_device(NULL, &selected, message, sizeof message),
                 BLOOPCL_ERR_DEVICE_SPEC);
    expect_no_raw_control_characters(message);
    cr_expect(strstr(message, "rank \"" HOSTILE_ESCAPED) != NULL, "%s", message);

    /* Every reason that quotes a piece of the spec. */
    const char *forms[] = {HOSTILE_SPEC, HOSTILE_SPEC "::", "cpu:" HOSTILE_SPEC,
                           ":" HOSTILE_SPEC, "99999999999\x1b:"};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        bloopcl_status status = bloopcl_select_device(forms[i], &selected, message,
                                                      sizeof message);
        cr_expect_neq(status, BLOOPCL_OK, "form %zu", i);
        expect_no_raw_control_characters(message);
        cr_expect(strstr(message, "\\x1b") != NULL, "form %zu: %s", i, message);
    }
}

Test(device_select, pure_matcher_names_the_given_source)
{
    bloopcl_device_info list[MIXED_COUNT] = {BLOOPCL_DEVICE_INFO_INIT};
    mixed_list(list);
    size_t selected = NO_MATCH;
    char message[MESSAGE_SIZE];
    cr_assert_eq(bloopcl__match_device_spec(list, MIXED_COUNT, "a\"b\\c:", NULL, &selected,
                                            message, sizeof message),
                 BLOOPCL_ERR_DEVICE_NOT_FOUND);
    cr_expect(strncmp(message, "device_spec=\"a\\\"b\\\\c:\": ", 24) == 0,
              "NULL names device_spec; quote and backslash escaped: %s", message);
    cr_assert_eq(bloopcl__match_device_spec(list, MIXED_COUNT, "acc", "--device", &selected,
                                            message, sizeof message),
                 BLOOPCL_ERR_DEVICE_NOT_FOUND);
    cr_expect(strncmp(message, "--device=\"acc\": no ACCELERATOR device", 37) == 0, "%s",
              message);
}

/* A 2000-byte spec is cut in the message, which says so; the reason and the list follow. */
Test(device_select, long_spec_is_cut_in_the_message_and_says_so)
{
    bloopcl_device_info list[MIXED_COUNT] = {BLOOPCL_DEVICE_INFO_INIT};
    mixed_list(list);
    char spec[2001];
    memset(spec, 'q', 2000);
    spec[1999] = ':';
    spec[2000] = '\0';
    size_t selected = NO_MATCH;
    char message[MESSAGE_SIZE];
    cr_assert_eq(match_env(list, MIXED_COUNT, spec, &selected, message, sizeof message),
                 BLOOPCL_ERR_DEVICE_NOT_FOUND);
    cr_expect(strstr(message, "qq\"... (2000 bytes): no device matches platform field \"qq") !=
                  NULL, "%s", message);
    cr_expect(strstr(message, "... (1999 bytes) (index or part of name/vendor)") != NULL, "%s",
              message);
    cr_expect(strstr(message, "\n  3: " INTEL_PLATFORM) != NULL, "the list follows: %s",
              message);
}

Test(device_select, quote_escapes_and_cuts)
{
    char out[64];
    bloopcl__quote(out, sizeof out, "a\x01\x7f\xff\t\r\n\"\\z", 10);
    cr_expect_str_eq(out, "\"a\\x01\\x7f\\xff\\t\\r\\n\\\"\\\\z\"");
    bloopcl__quote(out, sizeof out, "nul\0in", 6);
    cr_expect_str_eq(out, "\"nul\\x00in\"", "a NUL byte inside the text is escaped too");
    /* 61 bytes fit whole in 64 (with the quotes and the NUL); 62 do not: cut, and say so. */
    char text[62];
    memset(text, 'w', sizeof text);
    bloopcl__quote(out, sizeof out, text, 61);
    cr_expect_eq(strlen(out), 63u, "%s", out);
    cr_expect_eq(out[62], '"');
    bloopcl__quote(out, sizeof out, text, 62);
    cr_expect(strstr(out, "w\"... (62 bytes)") != NULL, "%s", out);
    cr_expect_lt(strlen(out), sizeof out);
    /* Too small a buffer to say anything truthful: empty, never an unterminated quote. */
    char tiny[8] = "stale";
    bloopcl__quote(tiny, sizeof tiny, "abc", 3);
    cr_expect_str_empty(tiny);
}

/* ---------------------------------------------------------------------------------------------
 * A moment of "no device": retried once, and said when it lasts
 * ------------------------------------------------------------------------------------------- */
Test(device_select, one_empty_answer_is_retried)
{
    real_devices real = list_real_devices();
    cr_assert_eq(unsetenv("BLOOPCL_DEVICE"), 0);
    /* Every platform's first answer: no device (the listing was "no OpenCL device found"). */
    cl_uint platforms = 0;
    cr_assert_eq(clGetPlatformIDs(0, NULL, &platforms), CL_SUCCESS);
    device_not_found_answers = (int)platforms;
    bloopcl_device_info selected = BLOOPCL_DEVICE_INFO_INIT;
    char message[MESSAGE_SIZE] = "";
    cr_expect_eq(bloopcl_select_device(NULL, &selected, message, sizeof message), BLOOPCL_OK,
                 "%s", message);
    cr_expect_eq(device_not_found_answers, 0, "the empty answers were all taken");
    cr_expect_eq(selected.device, real.list[first_of_type(&real, CL_DEVICE_TYPE_CPU)].device);
    size_t count = 0;
    device_not_found_answers = (int)platforms;
    cr_expect_eq(bloopcl_list_devices(NULL, 0, &count), BLOOPCL_OK);
    cr_expect_eq(count, real.count, "the count is retried too");
    free(real.list);
}

Test(device_select, lasting_empty_answers_are_reported)
{
    real_devices real = list_real_devices();
    cl_uint platforms = 0;
    cr_assert_eq(clGetPlatformIDs(0, NULL, &platforms), CL_SUCCESS);
    device_not_found_answers = 2 * (int)platforms;
    bloopcl_device_info selected = BLOOPCL_DEVICE_INFO_INIT;
    char message[MESSAGE_SIZE] = "";
    cr_expect_eq(bloopcl_select_device("cpu", &selected, message, sizeof message),
                 BLOOPCL_ERR_DEVICE_NOT_FOUND);
    char note[128];
    snprintf(note, sizeof note, "left out of the list: %u platform(s) answered with no device, "
             "twice, 20 ms apart", (unsigned)platforms);
    cr_expect(strstr(message, note) != NULL, "%s", message);
    cr_expect_eq(device_not_found_answers, 0);
    free(real.list);
}
