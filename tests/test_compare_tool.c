/* test_compare_tool.c — bloopcl-compare as CI runs it, and proof that it catches a wrong device:
 * copies of the kernel sources with a slightly perturbed projection or EMA, loaded through
 * BLOOPCL_KERNEL_DIR, must make it fail (and the unperturbed copies must not). Also --list,
 * an unknown --device, --json and a bad option. The tool is run as a user would run it: as a
 * separate program ($BLOOPCL_COMPARE), its stdout, stderr and exit status inspected. */
#include "bloopcl.h"
#include "support.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PATH_SIZE 4096

/* What one run of the tool left behind. */
typedef struct tool_run {
    int status;   /* exit status, or -1 if it did not exit normally */
    char *out;    /* stdout, NUL-terminated */
    char *err;    /* stderr */
} tool_run;

static const char *tool_path(void)
{
    const char *path = getenv("BLOOPCL_COMPARE");
    if (path == NULL || path[0] == '\0')
        cr_skip_test("BLOOPCL_COMPARE is not set (run through meson test)");
    return path;
}

static void require_device(void)
{
    size_t count = 0;
    cr_assert_eq(bloopcl_list_devices(NULL, 0, &count), BLOOPCL_OK);
    if (count == 0)
        cr_skip_test("no OpenCL device on this machine");
}

static void write_text(const char *path, const char *text)
{
    FILE *file = fopen(path, "wb");
    cr_assert_not_null(file, "cannot create %s", path);
    cr_assert_eq(fwrite(text, 1, strlen(text), file), strlen(text));
    fclose(file);
}

static char *make_temp_dir(void)
{
    char *dir = strdup("/tmp/bloopcl-compare-test-XXXXXX");
    cr_assert_not_null(dir);
    cr_assert_not_null(mkdtemp(dir), "mkdtemp failed");
    return dir;
}

/* Removes the plain files in `dir`, then `dir` (best effort: only what the test created). */
static void remove_temp_dir(char *dir)
{
    DIR *handle = opendir(dir);
    struct dirent *entry;
    char path[PATH_SIZE];
    while (handle != NULL && (entry = readdir(handle)) != NULL) {
        if (entry->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, entry->d_name);
        unlink(path);
    }
    if (handle != NULL)
        closedir(handle);
    rmdir(dir);
    free(dir);
}

/* Runs `$BLOOPCL_COMPARE args` (BLOOPCL_KERNEL_DIR=kernel_dir when not NULL). */
static tool_run run_tool(const char *args, const char *kernel_dir)
{
    char *dir = make_temp_dir();
    char command[3 * PATH_SIZE], out[PATH_SIZE], err[PATH_SIZE];
    snprintf(out, sizeof out, "%s/stdout", dir);
    snprintf(err, sizeof err, "%s/stderr", dir);
    snprintf(command, sizeof command, "'%s' %s >'%s' 2>'%s'", tool_path(), args, out, err);
    if (kernel_dir != NULL)
        setenv("BLOOPCL_KERNEL_DIR", kernel_dir, 1);
    else
        unsetenv("BLOOPCL_KERNEL_DIR");
    int raw = system(command);
    unsetenv("BLOOPCL_KERNEL_DIR");
    tool_run run = {WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, support_read_file(out, NULL), support_read_file(err, NULL)};
    remove_temp_dir(dir);
    return run;
}

static void free_run(tool_run *run)
{
    free(run->out);
    free(run->err);
}

/* The last non-empty line of `text` (copied into `line`). */
static void last_line(const char *text, char *line, size_t size)
{
    size_t end = strlen(text);
    while (end > 0 && text[end - 1] == '\n')
        end--;
    size_t begin = end;
    while (begin > 0 && text[begin - 1] != '\n')
        begin--;
    snprintf(line, size, "%.*s", (int)(end - begin), text + begin);
}

/* Parses the tool's closing "N passed, N failed" line; fails the test if it is malformed. */
static void expect_summary(const tool_run *run, long *passed, long *failed)
{
    char line[256], rest[8];
    last_line(run->out, line, sizeof line);
    int fields = sscanf(line, "%ld passed, %ld failed%7s", passed, failed, rest);
    cr_assert_eq(fields, 2, "last line of stdout is \"%s\", not \"N passed, N failed\"", line);
    char expected[256];
    snprintf(expected, sizeof expected, "%ld passed, %ld failed", *passed, *failed);
    cr_assert_str_eq(line, expected, "last line must be exactly \"%s\"", expected);
}

/* ---------------------------------------------------------------------------------------------
 * Kernel copies
 * ------------------------------------------------------------------------------------------- */
/* `text` with the first occurrence of `from` replaced by `to` (the test fails if absent). */
static char *replace_once(const char *text, const char *from, const char *to, const char *file)
{
    const char *at = strstr(text, from);
    cr_assert_not_null(at, "%s no longer contains \"%s\": update this test's perturbation",
                       file, from);
    size_t head = (size_t)(at - text), size = strlen(text) - strlen(from) + strlen(to) + 1;
    char *result = malloc(size);
    cr_assert_not_null(result);
    snprintf(result, size, "%.*s%s%s", (int)head, text, to, at + strlen(from));
    return result;
}

/* A temporary copy of every kernel source in cl/ (layout.h and the *.cl files), with `from`
 * replaced by `to` in `file` (no change when file is NULL). */
static char *kernel_copy(const char *file, const char *from, const char *to)
{
    char source_dir[PATH_SIZE], path[2 * PATH_SIZE];
    snprintf(source_dir, sizeof source_dir, "%s/cl", support_source_root());
    DIR *handle = opendir(source_dir);
    cr_assert_not_null(handle, "cannot read %s", source_dir);
    char *dir = make_temp_dir();
    struct dirent *entry;
    while ((entry = readdir(handle)) != NULL) {
        const char *name = entry->d_name, *dot = strrchr(name, '.');
        if (dot == NULL || (strcmp(dot, ".cl") != 0 && strcmp(dot, ".h") != 0))
            continue;
        snprintf(path, sizeof path, "%s/%s", source_dir, name);
        char *text = support_read_file(path, NULL);
        if (file != NULL && strcmp(name, file) == 0) {
            char *changed = replace_once(text, from, to, name);
            free(text);
            text = changed;
        }
        snprintf(path, sizeof path, "%s/%s", dir, name);
        write_text(path, text);
        free(text);
    }
    closedir(handle);
    return dir;
}

/* Runs the tool on a (possibly perturbed) kernel copy and expects it to fail with `what`
 * among the reported failures. */
static void expect_caught(const char *args, char *dir, const char *what)
{
    tool_run run = run_tool(args, dir);
    long passed = 0, failed = 0;
    cr_assert_eq(run.status, 1, "perturbed kernels: exit status %d, expected 1\nstderr:\n%s",
                 run.status, run.err);
    expect_summary(&run, &passed, &failed);
    cr_assert_gt(failed, 0, "perturbed kernels: no case failed");
    cr_assert_not_null(strstr(run.out, "FAIL("), "no FAIL verdict in the table");
    cr_assert_not_null(strstr(run.out, what), "no \"%s\" among the reported failures:\n%.4000s",
                       what, run.out);
    free_run(&run);
    remove_temp_dir(dir);
}

/* ---------------------------------------------------------------------------------------------
 * Tests
 * ------------------------------------------------------------------------------------------- */
Test(compare_tool, quick_run_passes, .timeout = 600)
{
    require_device();
    tool_run run = run_tool("--quick", NULL);
    long passed = 0, failed = 0;
    expect_summary(&run, &passed, &failed);
    cr_assert_eq(run.status, 0, "bloopcl-compare --quick exited %d; failures:\n%.6000s",
                 run.status, run.out);
    cr_assert_eq(failed, 0);
    cr_assert_gt(passed, 0);
    free_run(&run);
}

/* The same small subset as the perturbation tests, on unmodified copies: the copy mechanism
 * itself must not make the tool fail. */
Test(compare_tool, unperturbed_kernel_copy_passes, .timeout = 300)
{
    require_device();
    char *dir = kernel_copy(NULL, NULL, NULL);
    tool_run run = run_tool("--sizes 1000 --filter parallel --dtypes f32,bf16:f16:bf16", dir);
    long passed = 0, failed = 0;
    expect_summary(&run, &passed, &failed);
    cr_assert_eq(run.status, 0, "exit %d\n%.4000s\n%s", run.status, run.out, run.err);
    cr_assert_gt(passed, 0);
    free_run(&run);
    remove_temp_dir(dir);
}

/* r * 1.0001 in the projection (not in the reported r): d must be flagged. */
Test(compare_tool, catches_perturbed_projection, .timeout = 300)
{
    require_device();
    char *dir = kernel_copy("project.cl", "(ai - k->r * mi)", "(ai - k->r * 1.0001f * mi)");
    expect_caught("--sizes 1000 --filter parallel --dtypes f32,bf16:f16:bf16", dir, "d differs");
}

/* w * 1.0001 in the EMA: a state mismatch, found bit for bit. */
Test(compare_tool, catches_perturbed_ema, .timeout = 300)
{
    require_device();
    char *dir = kernel_copy("common.cl", "m + w * (g - m)", "m + w * 1.0001f * (g - m)");
    expect_caught("--sizes 1000 --filter normal --dtypes f32,bf16:f16:bf16", dir, "state m differs");
}

Test(compare_tool, list_numbers_devices_as_bloopcl_device_does, .timeout = 120)
{
    require_device();
    size_t count = 0;
    cr_assert_eq(bloopcl_list_devices(NULL, 0, &count), BLOOPCL_OK);
    bloopcl_device_info *devices = calloc(count, sizeof *devices);
    cr_assert_not_null(devices);
    devices[0].struct_size = sizeof *devices;
    cr_assert_eq(bloopcl_list_devices(devices, count, &count), BLOOPCL_OK);
    tool_run run = run_tool("--list", NULL);
    cr_assert_eq(run.status, 0);
    for (size_t i = 0; i < count; ++i) {
        char prefix[64], name[24];
        snprintf(prefix, sizeof prefix, "\n%u ", devices[i].flat_index);
        snprintf(name, sizeof name, "%s", devices[i].device_name);
        const char *line = strstr(run.out, prefix);
        cr_assert_not_null(line, "device %zu missing from --list:\n%s", i, run.out);
        const char *end = strchr(line + 1, '\n');
        cr_assert(strstr(line, name) != NULL && (end == NULL || strstr(line, name) < end),
                  "line of device %zu does not name \"%s\":\n%s", i, name, run.out);
    }
    if (strstr(devices[0].platform_name, "Portable Computing Language") != NULL)
        cr_assert_not_null(strstr(run.out, "\n0     Portable Computing Language"),
                           "the PoCL device is not listed as index 0:\n%s", run.out);
    free(devices);
    free_run(&run);
}

Test(compare_tool, unknown_device_lists_devices, .timeout = 120)
{
    require_device();
    bloopcl_device_info first = BLOOPCL_DEVICE_INFO_INIT;
    char message[256];
    cr_assert_eq(bloopcl_select_device("0", &first, message, sizeof message), BLOOPCL_OK);
    tool_run run = run_tool("--device nonexistent:", NULL);
    cr_assert_eq(run.status, 2, "an unknown device is an environment error: exit %d", run.status);
    cr_assert_not_null(strstr(run.err, "--device \"nonexistent:\": "),
                       "stderr does not name --device as the source:\n%s", run.err);
    cr_assert_not_null(strstr(run.err, first.device_name),
                       "the message does not list the devices:\n%s", run.err);
    free_run(&run);
}

Test(compare_tool, json_output, .timeout = 300)
{
    require_device();
    tool_run run = run_tool("--json --quick --sizes 1,257", NULL);
    cr_assert_eq(run.status, 0, "exit %d\n%s", run.status, run.err);
    cr_assert(run.out[0] == '{' || run.out[0] == '[', "JSON must start with { or [: %.80s",
              run.out);
    cr_assert_not_null(strstr(run.out, "\"passed\""));
    cr_assert_not_null(strstr(run.out, "\"summary\""));
    cr_assert_not_null(strstr(run.out, "\"failed\":0"), "%.2000s", run.out);
    free_run(&run);
}

Test(compare_tool, bad_option_is_a_usage_error, .timeout = 60)
{
    tool_run run = run_tool("--no-such-option", NULL);
    cr_assert_eq(run.status, 2);
    cr_assert_not_null(strstr(run.err, "usage:"), "stderr:\n%s", run.err);
    free_run(&run);
    run = run_tool("--sizes 1 --steps", NULL);
    cr_assert_eq(run.status, 2);
    cr_assert_not_null(strstr(run.err, "option '--steps' requires an argument"),
                       "a missing value must say so:\n%s", run.err);
    free_run(&run);
    run = run_tool("--steps 0", NULL);
    cr_assert_eq(run.status, 2);
    free_run(&run);
    run = run_tool("--sizes 1,x", NULL);
    cr_assert_eq(run.status, 2);
    free_run(&run);
}
