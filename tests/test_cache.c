/* test_cache.c — the on-disk cache of compiled kernels: a first context builds from source and
 * stores a binary, a second loads it, and every cache problem falls back to a source build
 * whose results are still right. The log callback tells which path a context took. */
#include "support.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct log_record {
    char text[8192];
} log_record;

static void record(void *user, bloopcl_log_level level, const char *message)
{
    (void)level;
    log_record *log = user;
    strncat(log->text, message, sizeof log->text - strlen(log->text) - 2);
    strcat(log->text, "\n");
}

static void make_temp_folder(char *path, size_t size)
{
    snprintf(path, size, "/tmp/bloopcl-cache-test-XXXXXX");
    cr_assert_not_null(mkdtemp(path));
}

/* Number of "*.bin" entries in the folder, and the path of the last one. */
static int count_entries(const char *folder, char *last, size_t size)
{
    DIR *dir = opendir(folder);
    if (dir == NULL)
        return 0;
    int count = 0;
    for (struct dirent *entry; (entry = readdir(dir)) != NULL;) {
        size_t length = strlen(entry->d_name);
        if (length > 4 && strcmp(entry->d_name + length - 4, ".bin") == 0) {
            ++count;
            if (last != NULL)
                snprintf(last, size, "%s/%s", folder, entry->d_name);
        }
    }
    closedir(dir);
    return count;
}

/* Removes the test's cache folder and its entries. */
static void remove_folder(const char *folder)
{
    DIR *dir = opendir(folder);
    if (dir == NULL)
        return;
    char path[512];
    for (struct dirent *entry; (entry = readdir(dir)) != NULL;) {
        if (entry->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", folder, entry->d_name);
        unlink(path);
    }
    closedir(dir);
    rmdir(folder);
}

/* Creates a context with the given cache folder, checks one step against the reference, and
 * returns what the library logged. */
static void run_context(const char *cache_dir, log_record *log)
{
    memset(log, 0, sizeof *log);
    bloopcl_context_params params;
    bloopcl_context_params_default(&params);
    params.cache_dir = cache_dir;
    params.log_fn = record;
    params.log_user = log;
    bloopcl_context *ctx = NULL;
    cr_assert_eq(bloopcl_context_create(&params, &ctx), BLOOPCL_OK, "%s",
                 bloopcl_context_last_error(ctx));
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    config.dots = BLOOPCL_DOTS_FUSED;
    enum { N = 1000 };
    bloopcl_combiner *comb = NULL;
    cr_assert_eq(bloopcl_combiner_create(ctx, &config, N, &comb), BLOOPCL_OK);
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(&config, N, &ref), BLOOPCL_OK);
    float *g = support_alloc(N), *a = support_alloc(N), *d = support_alloc(N);
    float *d_ref = support_alloc(N);
    support_fill_normal(g, N, 1, 1.0f);
    support_fill_normal(a, N, 2, 1.0f);
    cr_assert_eq(bloopcl_step_host(comb, g, a, d), BLOOPCL_OK);
    support_check_step(comb, &config, &ref, g, a, d, d_ref, 0);
    free(g), free(a), free(d), free(d_ref);
    bloopcl_reference_free(&ref);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

Test(cache, second_context_loads_what_the_first_stored)
{
    support_context_skip_without_device();
    char folder[64];
    make_temp_folder(folder, sizeof folder);
    log_record log;
    run_context(folder, &log);
    cr_expect(strstr(log.text, "built from source") != NULL, "%s", log.text);
    cr_expect(strstr(log.text, "cached compiled kernels") != NULL, "%s", log.text);
    cr_expect_eq(count_entries(folder, NULL, 0), 1);
    run_context(folder, &log);
    cr_expect(strstr(log.text, "loaded from the cache") != NULL, "%s", log.text);
    cr_expect_eq(count_entries(folder, NULL, 0), 1, "no second entry for the same key");
    remove_folder(folder);
}

Test(cache, corrupt_entry_falls_back_to_source)
{
    support_context_skip_without_device();
    char folder[64], entry[512];
    make_temp_folder(folder, sizeof folder);
    log_record log;
    run_context(folder, &log);
    cr_assert_eq(count_entries(folder, entry, sizeof entry), 1);
    /* Flip bytes in the middle of the payload: the checksum must catch it. */
    FILE *file = fopen(entry, "r+b");
    cr_assert_not_null(file);
    fseek(file, 200, SEEK_SET);
    fputs("garbage garbage garbage", file);
    fclose(file);
    run_context(folder, &log);
    cr_expect(strstr(log.text, "built from source") != NULL, "%s", log.text);
    /* ... and the rebuilt binary replaced the corrupt one. */
    run_context(folder, &log);
    cr_expect(strstr(log.text, "loaded from the cache") != NULL, "%s", log.text);
    remove_folder(folder);
}

Test(cache, truncated_entry_falls_back_to_source)
{
    support_context_skip_without_device();
    char folder[64], entry[512];
    make_temp_folder(folder, sizeof folder);
    log_record log;
    run_context(folder, &log);
    cr_assert_eq(count_entries(folder, entry, sizeof entry), 1);
    cr_assert_eq(truncate(entry, 10), 0);
    run_context(folder, &log);
    cr_expect(strstr(log.text, "built from source") != NULL, "%s", log.text);
    remove_folder(folder);
}

Test(cache, off_switch_writes_nothing)
{
    support_context_skip_without_device();
    char folder[64];
    make_temp_folder(folder, sizeof folder);
    cr_assert_eq(setenv("BLOOPCL_CACHE_DIR", folder, 1), 0);
    log_record log;
    run_context("off", &log);  /* the parameter overrides the variable */
    cr_expect(strstr(log.text, "built from source") != NULL, "%s", log.text);
    cr_expect_eq(count_entries(folder, NULL, 0), 0);
    run_context(NULL, &log);   /* now the variable is in force */
    cr_expect_eq(count_entries(folder, NULL, 0), 1);
    remove_folder(folder);
}

Test(cache, unusable_folder_still_builds)
{
    support_context_skip_without_device();
    /* A path under a regular file can never be created. */
    log_record log;
    run_context("/dev/null/bloopcl", &log);
    cr_expect(strstr(log.text, "built from source") != NULL, "%s", log.text);
    cr_expect(strstr(log.text, "could not cache") != NULL, "%s", log.text);
}
