/* test_cache.c — the on-disk cache of compiled kernels: a first context builds from source and
 * stores a binary, a second loads it, and every cache problem falls back to a source build
 * whose results are still right. The log callback tells which path a context took. */
#include "support.h"
#include "program_cache.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

/* Number of names in the folder, whatever they are (temporary files included). */
static int count_names(const char *folder)
{
    DIR *dir = opendir(folder);
    cr_assert_not_null(dir, "%s", folder);
    int count = 0;
    for (struct dirent *entry; (entry = readdir(dir)) != NULL;)
        count += strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0;
    closedir(dir);
    return count;
}

/* Removes the test's cache folder and everything under it (links are removed, not followed). */
static void remove_folder(const char *folder)
{
    DIR *dir = opendir(folder);
    if (dir != NULL) {
        char path[1024];
        for (struct dirent *entry; (entry = readdir(dir)) != NULL;) {
            if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
                continue;
            struct stat st;
            snprintf(path, sizeof path, "%s/%s", folder, entry->d_name);
            if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
                remove_folder(path);
            else
                unlink(path);
        }
        closedir(dir);
    }
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

/* ---- hostile and broken entries (issue 15, items 7, 8, 12, 13) ----
 * Each test first lets a context store a real entry, then replaces or alters it, creates a
 * second context (whose step run_context checks against the reference) and asserts what the
 * library did with the entry. Every such entry must be refused without harm: built from
 * source, and the refused entry replaced by a good one. */

static off_t file_size(const char *path)
{
    struct stat st;
    cr_assert_eq(lstat(path, &st), 0, "%s", path);
    return st.st_size;
}

/* A folder with one real entry in it; `entry` receives its path, `size` its length. */
static void folder_with_entry(char *folder, size_t folder_size, char *entry, size_t entry_size,
                              off_t *size)
{
    make_temp_folder(folder, folder_size);
    log_record log;
    run_context(folder, &log);
    cr_assert_eq(count_entries(folder, entry, entry_size), 1, "%s", log.text);
    *size = file_size(entry);
}

/* The entry is a regular file again, of the length a good entry has (it was rebuilt). */
static void expect_replaced(const char *entry, off_t good_size)
{
    struct stat st;
    cr_assert_eq(lstat(entry, &st), 0);
    cr_expect(S_ISREG(st.st_mode), "the refused entry was not replaced by a regular file");
    cr_expect_eq(st.st_size, good_size, "entry of %lld bytes, a good one has %lld",
                 (long long)st.st_size, (long long)good_size);
    cr_expect_eq(st.st_uid, geteuid());
    cr_expect_eq(st.st_mode & 0777, 0600, "entry mode %o", (unsigned)(st.st_mode & 0777));
}

static void expect_built_from_source(const log_record *log)
{
    cr_expect(strstr(log->text, "built from source") != NULL, "%s", log->text);
    cr_expect(strstr(log->text, "loaded from the cache") == NULL, "%s", log->text);
}

/* The peak virtual memory of this process, in KiB (Linux: VmPeak in /proc/self/status). A
 * buffer sized by a hostile header shows here even if its pages are never touched. */
static long long peak_virtual_kib(void)
{
    FILE *status = fopen("/proc/self/status", "r");
    cr_assert_not_null(status);
    char line[256];
    long long kib = -1;
    while (fgets(line, sizeof line, status) != NULL)
        if (sscanf(line, "VmPeak: %lld kB", &kib) == 1)
            break;
    fclose(status);
    cr_assert_gt(kib, 0);
    return kib;
}

/* Writes the first 16 bytes of the real entry (magic and key, which the reader checks first),
 * then `claimed` as the payload size field, then extends the file to `length` bytes (a hole:
 * the file occupies no disk). */
static void write_hostile_header(const char *entry, uint64_t claimed, off_t length)
{
    unsigned char head[16];
    FILE *file = fopen(entry, "rb");
    cr_assert_not_null(file);
    cr_assert_eq(fread(head, 1, sizeof head, file), sizeof head);
    fclose(file);
    cr_assert_eq(unlink(entry), 0);
    file = fopen(entry, "wb");
    cr_assert_not_null(file);
    cr_assert_eq(fwrite(head, 1, sizeof head, file), sizeof head);
    cr_assert_eq(fwrite(&claimed, 1, sizeof claimed, file), sizeof claimed);
    cr_assert_eq(fclose(file), 0);
    cr_assert_eq(chmod(entry, 0600), 0);
    cr_assert_eq(truncate(entry, length), 0);
}

Test(cache, truncated_payload_in_valid_container_is_rebuilt)
{
    support_context_skip_without_device();
    char folder[64], entry[512];
    off_t good;
    folder_with_entry(folder, sizeof folder, entry, sizeof entry, &good);
    /* The header is intact; the payload it describes stops half way. */
    cr_assert_eq(truncate(entry, good / 2), 0);
    log_record log;
    run_context(folder, &log);
    expect_built_from_source(&log);
    cr_expect(strstr(log.text, "not used") != NULL, "no refusal logged:\n%s", log.text);
    expect_replaced(entry, good);
    run_context(folder, &log);
    cr_expect(strstr(log.text, "loaded from the cache") != NULL, "%s", log.text);
    remove_folder(folder);
}

Test(cache, wrong_checksum_is_rebuilt)
{
    support_context_skip_without_device();
    char folder[64], entry[512];
    off_t good;
    folder_with_entry(folder, sizeof folder, entry, sizeof entry, &good);
    /* One bit of the entry's last byte: the length is right, the contents are not. */
    int fd = open(entry, O_RDWR);
    cr_assert_geq(fd, 0);
    unsigned char last;
    cr_assert_eq(pread(fd, &last, 1, good - 1), 1);
    last ^= 0x10;
    cr_assert_eq(pwrite(fd, &last, 1, good - 1), 1);
    close(fd);
    log_record log;
    run_context(folder, &log);
    expect_built_from_source(&log);
    cr_expect(strstr(log.text, "checksum") != NULL, "no checksum refusal logged:\n%s", log.text);
    expect_replaced(entry, good);
    remove_folder(folder);
}

Test(cache, huge_size_in_a_24_byte_file_allocates_nothing)
{
    support_context_skip_without_device();
    char folder[64], entry[512];
    off_t good;
    folder_with_entry(folder, sizeof folder, entry, sizeof entry, &good);
    write_hostile_header(entry, 0xFFFFFFF0u, 24);
    long long before = peak_virtual_kib();
    log_record log;
    run_context(folder, &log);
    long long grown = peak_virtual_kib() - before;
    cr_log_info("peak virtual memory grew by %lld KiB", grown);
    /* A source build and a step map far less than 1 GiB; a buffer for the claimed 4 GiB would
     * add 4 GiB to the peak. */
    cr_expect_lt(grown, 1024 * 1024, "peak virtual memory grew by %lld KiB", grown);
    expect_built_from_source(&log);
    cr_expect(strstr(log.text, "not used") != NULL, "no refusal logged:\n%s", log.text);
    expect_replaced(entry, good);
    remove_folder(folder);
}

Test(cache, sparse_gigabyte_entry_is_refused_unread)
{
    support_context_skip_without_device();
    char folder[64], entry[512];
    off_t good;
    folder_with_entry(folder, sizeof folder, entry, sizeof entry, &good);
    const off_t gigabyte = (off_t)1 << 30;
    write_hostile_header(entry, (uint64_t)gigabyte - 32, gigabyte);
    long long before = peak_virtual_kib();
    log_record log;
    run_context(folder, &log);
    long long grown = peak_virtual_kib() - before;
    cr_log_info("peak virtual memory grew by %lld KiB", grown);
    /* Reading it would need a buffer of its size: the peak shows whether one was made. */
    cr_expect_lt(grown, 256 * 1024, "peak virtual memory grew by %lld KiB", grown);
    expect_built_from_source(&log);
    cr_expect(strstr(log.text, "limit") != NULL, "no size refusal logged:\n%s", log.text);
    expect_replaced(entry, good);
    remove_folder(folder);
}

/* With the FIFO's open blocking (no writer ever comes), the timeout fails the test. */
Test(cache, fifo_entry_does_not_block, .timeout = 60)
{
    support_context_skip_without_device();
    char folder[64], entry[512];
    off_t good;
    folder_with_entry(folder, sizeof folder, entry, sizeof entry, &good);
    cr_assert_eq(unlink(entry), 0);
    cr_assert_eq(mkfifo(entry, 0600), 0);
    log_record log;
    run_context(folder, &log);
    expect_built_from_source(&log);
    cr_expect(strstr(log.text, "not a regular file") != NULL, "%s", log.text);
    expect_replaced(entry, good);
    remove_folder(folder);
}

Test(cache, directory_entry_is_ignored)
{
    support_context_skip_without_device();
    char folder[64], entry[512];
    off_t good;
    folder_with_entry(folder, sizeof folder, entry, sizeof entry, &good);
    cr_assert_eq(unlink(entry), 0);
    cr_assert_eq(mkdir(entry, 0700), 0);
    log_record log;
    run_context(folder, &log);
    expect_built_from_source(&log);
    cr_expect(strstr(log.text, "not a regular file") != NULL, "%s", log.text);
    struct stat st;
    cr_assert_eq(lstat(entry, &st), 0);
    cr_expect(S_ISDIR(st.st_mode), "the library removed a directory it did not make");
    cr_expect_eq(count_names(folder), 1, "the failed store left a temporary file behind");
    remove_folder(folder);
}

/* A link to a good entry elsewhere is still not followed: whoever can place a link can
 * point it at a file of their choosing. */
Test(cache, symlink_entry_is_not_followed)
{
    support_context_skip_without_device();
    char folder[64], entry[512], elsewhere[64], target[600];
    off_t good;
    folder_with_entry(folder, sizeof folder, entry, sizeof entry, &good);
    make_temp_folder(elsewhere, sizeof elsewhere);
    snprintf(target, sizeof target, "%s/moved.bin", elsewhere);
    cr_assert_eq(rename(entry, target), 0);
    cr_assert_eq(symlink(target, entry), 0);
    log_record log;
    run_context(folder, &log);
    expect_built_from_source(&log);
    cr_expect(strstr(log.text, "symbolic link") != NULL, "%s", log.text);
    expect_replaced(entry, good);
    cr_expect_eq(file_size(target), good, "the link's target was changed");
    remove_folder(folder);
    remove_folder(elsewhere);
}

Test(cache, folder_writable_by_others_is_not_used)
{
    support_context_skip_without_device();
    char folder[64], entry[512];
    off_t good;
    folder_with_entry(folder, sizeof folder, entry, sizeof entry, &good);
    cr_assert_eq(chmod(folder, 0777), 0);
    cr_assert_eq(unlink(entry), 0);
    log_record log;
    run_context(folder, &log);  /* nothing may be written there ... */
    expect_built_from_source(&log);
    cr_expect(strstr(log.text, "writable by group or others") != NULL, "%s", log.text);
    cr_expect_eq(count_entries(folder, NULL, 0), 0, "an entry was written to a 0777 folder");
    cr_assert_eq(chmod(folder, 0700), 0);
    run_context(folder, &log);
    cr_assert_eq(count_entries(folder, NULL, 0), 1);
    cr_assert_eq(chmod(folder, 0777), 0);
    run_context(folder, &log);  /* ... nor read from it */
    expect_built_from_source(&log);
    remove_folder(folder);
}

Test(cache, entry_writable_by_others_is_not_used)
{
    support_context_skip_without_device();
    char folder[64], entry[512];
    off_t good;
    folder_with_entry(folder, sizeof folder, entry, sizeof entry, &good);
    cr_assert_eq(chmod(entry, 0666), 0);
    log_record log;
    run_context(folder, &log);
    expect_built_from_source(&log);
    cr_expect(strstr(log.text, "writable by group or others") != NULL, "%s", log.text);
    expect_replaced(entry, good);
    remove_folder(folder);
}

/* As root (CI), the entry is given to "nobody"; otherwise a folder owned by root stands in
 * (an entry of someone else's cannot be made without privileges). */
Test(cache, entry_owned_by_someone_else_is_not_used)
{
    support_context_skip_without_device();
    log_record log;
    if (geteuid() != 0) {
        run_context("/", &log);
        expect_built_from_source(&log);
        cr_expect(strstr(log.text, "owned by uid 0") != NULL, "%s", log.text);
        return;
    }
    char folder[64], entry[512];
    off_t good;
    folder_with_entry(folder, sizeof folder, entry, sizeof entry, &good);
    cr_assert_eq(chown(entry, 65534, 65534), 0);
    run_context(folder, &log);
    expect_built_from_source(&log);
    cr_expect(strstr(log.text, "owned by uid 65534") != NULL, "%s", log.text);
    expect_replaced(entry, good);
    remove_folder(folder);
}

Test(cache, created_folders_and_entries_are_private)
{
    support_context_skip_without_device();
    char base[64], folder[128];
    make_temp_folder(base, sizeof base);
    snprintf(folder, sizeof folder, "%s/made/by/bloopcl", base);
    mode_t saved = umask(0);  /* the library's own modes, not the umask's, must hold */
    log_record log;
    run_context(folder, &log);
    umask(saved);
    const char *made[] = {"made", "made/by", "made/by/bloopcl"};
    for (size_t i = 0; i < 3; ++i) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s", base, made[i]);
        struct stat st;
        cr_assert_eq(stat(path, &st), 0, "%s", path);
        cr_expect_eq(st.st_mode & 0777, 0700, "%s has mode %o", path,
                     (unsigned)(st.st_mode & 0777));
    }
    char entry[512];
    cr_assert_eq(count_entries(folder, entry, sizeof entry), 1, "%s", log.text);
    struct stat st;
    cr_assert_eq(stat(entry, &st), 0);
    cr_expect_eq(st.st_mode & 0777, 0600, "entry mode %o", (unsigned)(st.st_mode & 0777));
    remove_folder(base);
}

/* A folder path over PATH_MAX - 1 = 4095 bytes is refused: no cache, no folder made for a
 * shortened path. (Its components stay under NAME_MAX so only the total length is at fault.) */
Test(cache, folder_path_over_4095_bytes_is_refused)
{
    support_context_skip_without_device();
    char base[64];
    make_temp_folder(base, sizeof base);
    enum { LENGTH = 4200 };
    char *folder = malloc(LENGTH + 256);
    cr_assert_not_null(folder);
    size_t used = (size_t)snprintf(folder, LENGTH + 256, "%s", base);
    while (used < LENGTH) {
        folder[used++] = '/';
        for (int i = 0; i < 200; ++i)
            folder[used++] = 'd';
    }
    folder[used] = '\0';
    log_record log;
    run_context(folder, &log);
    expect_built_from_source(&log);
    cr_expect(strstr(log.text, "4095") != NULL, "no refusal logged:\n%s", log.text);
    DIR *dir = opendir(base);
    cr_assert_not_null(dir);
    int made = 0;
    for (struct dirent *item; (item = readdir(dir)) != NULL;)
        made += item->d_name[0] != '.';
    closedir(dir);
    cr_expect_eq(made, 0, "a folder was made for the shortened path");
    free(folder);
    remove_folder(base);
}

/* ---- the container parser and the file reader, on their own ---- */

enum { SMALL_PAYLOAD = 100 };

/* A container for a 100-byte payload made by the real writer's header. */
static size_t small_container(unsigned char *bytes, uint64_t key)
{
    unsigned char payload[SMALL_PAYLOAD];
    for (size_t i = 0; i < sizeof payload; ++i)
        payload[i] = (unsigned char)(i * 37 + 11);
    bloopcl__cache_header(key, payload, sizeof payload, bytes);
    memcpy(bytes + BLOOPCL_CACHE_HEADER, payload, sizeof payload);
    return BLOOPCL_CACHE_HEADER + sizeof payload;
}

static void expect_refused(const unsigned char *bytes, size_t size, uint64_t key,
                           const char *what)
{
    bloopcl_cache_span span = {7, 7};
    const char *why = bloopcl__cache_parse(bytes, size, key, &span);
    cr_expect_not_null(why, "%s was accepted", what);
    cr_expect(span.offset == 0 && span.size == 0, "%s: a refusal left a span", what);
}

Test(cache_container, writer_output_parses_with_the_payload_inside)
{
    unsigned char bytes[BLOOPCL_CACHE_HEADER + SMALL_PAYLOAD];
    size_t size = small_container(bytes, 42);
    bloopcl_cache_span span;
    const char *why = bloopcl__cache_parse(bytes, size, 42, &span);
    cr_assert_null(why, "%s", why);
    cr_expect_eq(span.offset, BLOOPCL_CACHE_HEADER);
    cr_expect_eq(span.size, SMALL_PAYLOAD);
    cr_expect_eq(bytes[span.offset + 5], (unsigned char)(5 * 37 + 11));
}

Test(cache_container, every_shorter_or_longer_length_is_refused)
{
    unsigned char bytes[BLOOPCL_CACHE_HEADER + SMALL_PAYLOAD + 1] = {0};
    size_t size = small_container(bytes, 42);
    char what[64];
    for (size_t length = 0; length < size; ++length) {
        snprintf(what, sizeof what, "the first %zu bytes", length);
        expect_refused(bytes, length, 42, what);
    }
    expect_refused(bytes, size + 1, 42, "the container and one byte more");
}

/* Each single-byte change of the running FNV-1a hash is a bijection of it, so no single bit
 * flip anywhere (header or payload) can go unnoticed. */
Test(cache_container, every_single_bit_flip_is_refused)
{
    unsigned char bytes[BLOOPCL_CACHE_HEADER + SMALL_PAYLOAD];
    size_t size = small_container(bytes, 42);
    char what[64];
    for (size_t byte = 0; byte < size; ++byte) {
        for (int bit = 0; bit < 8; ++bit) {
            bytes[byte] ^= (unsigned char)(1u << bit);
            snprintf(what, sizeof what, "bit %d of byte %zu flipped", bit, byte);
            expect_refused(bytes, size, 42, what);
            bytes[byte] ^= (unsigned char)(1u << bit);
        }
    }
}

Test(cache_container, another_key_and_oversized_claims_are_refused)
{
    unsigned char bytes[BLOOPCL_CACHE_HEADER + SMALL_PAYLOAD];
    size_t size = small_container(bytes, 42);
    expect_refused(bytes, size, 43, "a container for another key");
    /* The header says 4 GiB: refused from the numbers alone (nothing past the input read). */
    unsigned char header[BLOOPCL_CACHE_HEADER];
    memcpy(header, bytes, sizeof header);
    uint64_t claimed = (uint64_t)1 << 32;
    for (int i = 0; i < 8; ++i)
        header[16 + i] = (unsigned char)(claimed >> (8 * i));
    expect_refused(header, sizeof header, 42, "a bare header claiming 4 GiB");
}

static const bloopcl_environment no_environment = {0};

Test(cache_container, folder_comes_from_the_parameter_then_the_environment_copy)
{
    char folder[BLOOPCL_CACHE_PATH];
    char cache_dir[] = "/tmp/from-env", xdg[] = "/tmp/xdg", home[] = "/tmp/home";
    bloopcl_environment env = {.cache_dir = cache_dir, .xdg_cache_home = xdg, .home = home};
    cr_expect(bloopcl__cache_folder("/tmp/param", &env, folder, sizeof folder));
    cr_expect_str_eq(folder, "/tmp/param", "the parameter wins");
    cr_expect(bloopcl__cache_folder(NULL, &env, folder, sizeof folder));
    cr_expect_str_eq(folder, "/tmp/from-env", "then BLOOPCL_CACHE_DIR");
    env.cache_dir = NULL;
    cr_expect(bloopcl__cache_folder(NULL, &env, folder, sizeof folder));
    cr_expect_str_eq(folder, "/tmp/xdg/bloopcl", "then XDG_CACHE_HOME");
    env.xdg_cache_home = NULL;
    cr_expect(bloopcl__cache_folder(NULL, &env, folder, sizeof folder));
    cr_expect_str_eq(folder, "/tmp/home/.cache/bloopcl", "then HOME");
    cr_expect(bloopcl__cache_folder(NULL, &no_environment, folder, sizeof folder));
    cr_expect_str_empty(folder, "nothing set: no cache");
}

Test(cache_container, folder_paths_fit_or_are_refused)
{
    char folder[BLOOPCL_CACHE_PATH];
    char *path = malloc(BLOOPCL_CACHE_PATH + 1);
    cr_assert_not_null(path);
    memset(path, 'p', BLOOPCL_CACHE_PATH);
    path[BLOOPCL_CACHE_PATH - 1] = '\0';  /* 4095 bytes: fits */
    cr_expect(bloopcl__cache_folder(path, &no_environment, folder, sizeof folder));
    cr_expect_eq(strlen(folder), BLOOPCL_CACHE_PATH - 1);
    path[BLOOPCL_CACHE_PATH - 1] = 'p';
    path[BLOOPCL_CACHE_PATH] = '\0';      /* 4096 bytes: refused, not shortened */
    cr_expect_not(bloopcl__cache_folder(path, &no_environment, folder, sizeof folder));
    cr_expect_str_empty(folder);
    cr_expect(bloopcl__cache_folder("off", &no_environment, folder, sizeof folder));
    cr_expect_str_empty(folder);
    free(path);
}

/* The file written is exactly the container the parser accepts; the reader returns the
 * payload; an entry of the old format (1) or one too short is refused with a reason. */
Test(cache_container, store_then_load_round_trip)
{
    char folder[64], entry[512], problem[BLOOPCL_CACHE_PATH + 256];
    make_temp_folder(folder, sizeof folder);
    unsigned char expected[BLOOPCL_CACHE_HEADER + SMALL_PAYLOAD];
    size_t size = small_container(expected, 0x1234);
    cr_assert(bloopcl__cache_store(folder, 0x1234, expected + BLOOPCL_CACHE_HEADER,
                                   SMALL_PAYLOAD, problem, sizeof problem), "%s", problem);
    cr_assert_eq(count_entries(folder, entry, sizeof entry), 1);
    cr_expect(strstr(entry, "0000000000001234.bin") != NULL, "%s", entry);
    cr_expect_eq(count_names(folder), 1, "a temporary file was left behind");
    unsigned char written[sizeof expected + 1];
    FILE *file = fopen(entry, "rb");
    cr_assert_not_null(file);
    cr_expect_eq(fread(written, 1, sizeof written, file), size);
    fclose(file);
    cr_expect_arr_eq(written, expected, size);
    size_t loaded_size = 0;
    unsigned char *loaded = bloopcl__cache_load(folder, 0x1234, &loaded_size, problem,
                                                sizeof problem);
    cr_assert_not_null(loaded, "%s", problem);
    cr_expect_eq(loaded_size, SMALL_PAYLOAD);
    cr_expect_arr_eq(loaded, expected + BLOOPCL_CACHE_HEADER, SMALL_PAYLOAD);
    free(loaded);
    cr_expect_null(bloopcl__cache_load(folder, 0x9999, &loaded_size, problem, sizeof problem));
    cr_expect_str_empty(problem, "a missing entry is a plain miss: %s", problem);

    memcpy(written, "BLOOPCL1", 8);  /* format 1's magic: refused, then rebuilt by callers */
    file = fopen(entry, "wb");
    cr_assert_not_null(file);
    cr_assert_eq(fwrite(written, 1, size, file), size);
    fclose(file);
    cr_expect_null(bloopcl__cache_load(folder, 0x1234, &loaded_size, problem, sizeof problem));
    cr_expect(strstr(problem, "not a container of this format") != NULL, "%s", problem);
    cr_assert_eq(truncate(entry, 24), 0);
    cr_expect_null(bloopcl__cache_load(folder, 0x1234, &loaded_size, problem, sizeof problem));
    cr_expect(strstr(problem, "24 bytes, shorter") != NULL, "%s", problem);
    remove_folder(folder);
}

Test(cache_container, empty_or_oversized_binaries_are_not_stored)
{
    char folder[64], problem[BLOOPCL_CACHE_PATH + 256];
    make_temp_folder(folder, sizeof folder);
    unsigned char byte = 1;
    cr_expect_not(bloopcl__cache_store(folder, 1, &byte, 0, problem, sizeof problem));
    /* The size alone decides: the buffer is never read past its first byte. */
    cr_expect_not(bloopcl__cache_store(folder, 1, &byte, BLOOPCL_CACHE_MAX_PAYLOAD + 1, problem,
                                       sizeof problem));
    cr_expect(strstr(problem, "over the limit") != NULL, "%s", problem);
    cr_expect_eq(count_entries(folder, NULL, 0), 0);
    remove_folder(folder);
}
