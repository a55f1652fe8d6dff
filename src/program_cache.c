/* program_cache.c — compiled kernel binaries kept on disk between processes.
 *
 * Key: a 64-bit FNV-1a hash of everything that can change the binary — the library version,
 * every kernel source, the build options, and the platform, device and driver identity.
 * Entry: <folder>/<key as 16 hex digits>.bin, a container around the driver's binary:
 *
 *   offset  0  "BLOOPCL2"                     magic (format 2; format 1 entries are rebuilt)
 *   offset  8  key                            u64, little-endian, as every field
 *   offset 16  payload size P                 1 <= P <= BLOOPCL_CACHE_MAX_PAYLOAD
 *   offset 24  checksum                       FNV-1a 64 of bytes 0..23, then of the payload
 *   offset 32  payload                        the file ends right after it: length 32 + P
 *
 * The payload is code that the driver loads, and drivers trust it: PoCL overflows its heap
 * on a truncated binary. So it reaches the driver only when
 *  - the folder and the entry belong to this user and no one else may write them (another
 *    user who could would inject code);
 *  - the entry is a regular file, looked at without following a link and opened without
 *    blocking (a FIFO named like an entry would block its open forever);
 *  - its length, taken from fstat before any buffer exists, is within the cap and equals the
 *    header's, and the checksum holds (truncated, extended or corrupted files).
 * A container written consistently around a broken binary, by this user's own account, cannot
 * be told from a good one; the ownership checks are what keep everyone else from making one.
 *
 * Writing: folders the library makes are 0700; an entry is written 0600 under a temporary
 * name (O_EXCL) in the same folder, then renamed over the old one, so a reader sees the old
 * entry or the new one, never a part of one, and concurrent writers cannot corrupt each other.
 * Every problem makes the caller build from source (and say why in its log): the cache can
 * only save time, never cost correctness. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L  /* openat and friends, also where the build sets no feature */
#endif

#include "program_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char cache_magic[8] = {'B', 'L', 'O', 'O', 'P', 'C', 'L', '2'};

#define FNV_OFFSET_BASIS 0xCBF29CE484222325ull
#define FNV_PRIME 0x100000001B3ull

uint64_t bloopcl__hash_bytes(uint64_t hash, const void *data, size_t size)
{
    const unsigned char *bytes = data;
    for (size_t i = 0; i < size; ++i) {
        hash ^= bytes[i];
        hash *= FNV_PRIME;
    }
    return hash;
}

static uint64_t hash_string(uint64_t hash, const char *text)
{
    /* include the terminator so that ("ab","c") and ("a","bc") differ */
    return bloopcl__hash_bytes(hash, text, strlen(text) + 1);
}

uint64_t bloopcl__cache_key(const bloopcl_device_info *info, const char *const *texts,
                            const size_t *lengths, size_t count, const char *options)
{
    uint64_t hash = FNV_OFFSET_BASIS;
    hash = hash_string(hash, BLOOPCL_VERSION_STRING);
    for (size_t i = 0; i < count; ++i)
        hash = bloopcl__hash_bytes(hash, texts[i], lengths[i]);
    hash = hash_string(hash, options);
    hash = hash_string(hash, info->platform_name);
    hash = hash_string(hash, info->platform_vendor);
    hash = hash_string(hash, info->device_name);
    hash = hash_string(hash, info->driver_version);
    hash = hash_string(hash, info->opencl_c_version);
    return hash;
}

/* ---- the container, in memory ---- */

static uint64_t get_u64(const unsigned char *bytes)
{
    uint64_t value = 0;
    for (int i = 7; i >= 0; --i)
        value = (value << 8) | bytes[i];
    return value;
}

static void put_u64(unsigned char *bytes, uint64_t value)
{
    for (int i = 0; i < 8; ++i)
        bytes[i] = (unsigned char)(value >> (8 * i));
}

/* Over the header's first 24 bytes (magic, key, size) and the payload: a single changed byte
 * anywhere always changes it (each FNV-1a step is a bijection of the running hash). */
static uint64_t container_checksum(const unsigned char *header, const unsigned char *payload,
                                   size_t size)
{
    return bloopcl__hash_bytes(bloopcl__hash_bytes(FNV_OFFSET_BASIS, header, 24), payload, size);
}

void bloopcl__cache_header(uint64_t key, const unsigned char *payload, size_t size,
                           unsigned char header[BLOOPCL_CACHE_HEADER])
{
    memcpy(header, cache_magic, sizeof cache_magic);
    put_u64(header + 8, key);
    put_u64(header + 16, (uint64_t)size);
    put_u64(header + 24, container_checksum(header, payload, size));
}

const char *bloopcl__cache_parse(const unsigned char *bytes, size_t size, uint64_t key,
                                 bloopcl_cache_span *payload)
{
    *payload = (bloopcl_cache_span){0, 0};
    if (size < BLOOPCL_CACHE_HEADER)
        return "shorter than a container's header";
    if (memcmp(bytes, cache_magic, sizeof cache_magic) != 0)
        return "not a container of this format";
    if (get_u64(bytes + 8) != key)
        return "the container is for another key";
    uint64_t claimed = get_u64(bytes + 16);
    if (claimed == 0 || claimed > BLOOPCL_CACHE_MAX_PAYLOAD)
        return "the header's payload size is 0 or over the limit of an entry";
    if (claimed != size - BLOOPCL_CACHE_HEADER)
        return "the length differs from the header's (truncated or extended)";
    const unsigned char *start = bytes + BLOOPCL_CACHE_HEADER;
    if (get_u64(bytes + 24) != container_checksum(bytes, start, (size_t)claimed))
        return "checksum mismatch (corrupted)";
    *payload = (bloopcl_cache_span){BLOOPCL_CACHE_HEADER, (size_t)claimed};
    return NULL;
}

/* ---- the folder ---- */

bool bloopcl__cache_folder(const char *requested, const bloopcl_environment *env, char *folder,
                           size_t size)
{
    folder[0] = '\0';
    const char *chosen = requested != NULL ? requested : env->cache_dir;
    int written = 0;
    if (chosen != NULL) {
        if (chosen[0] == '\0' || strcmp(chosen, "0") == 0 || strcmp(chosen, "off") == 0 ||
            strcmp(chosen, "none") == 0)
            return true;  /* explicitly off */
        written = snprintf(folder, size, "%s", chosen);
    } else {
        const char *xdg = env->xdg_cache_home, *home = env->home;
        if (xdg != NULL && xdg[0] != '\0')
            written = snprintf(folder, size, "%s/bloopcl", xdg);
        else if (home != NULL && home[0] != '\0')
            written = snprintf(folder, size, "%s/.cache/bloopcl", home);
    }
    if (written < 0 || (size_t)written >= size) {
        folder[0] = '\0';  /* a shortened path would be some other folder */
        return false;
    }
    return true;
}

/* Formats into `problem` (always terminated; a long path is what gets cut). */
static void describe(char *problem, size_t size, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static void describe(char *problem, size_t size, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(problem, size, format, args);
    va_end(args);
}

static const char *errno_text(int code, char *text, size_t size)
{
    if (strerror_r(code, text, size) != 0)
        snprintf(text, size, "errno %d", code);
    return text;
}

/* Why a folder or an entry must not be trusted, or NULL: only this user may change it. */
static const char *untrusted(const struct stat *st, char *text, size_t size)
{
    if (st->st_uid != geteuid()) {
        snprintf(text, size, "owned by uid %lu, not by this user (uid %lu)",
                 (unsigned long)st->st_uid, (unsigned long)geteuid());
        return text;
    }
    if ((st->st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        snprintf(text, size, "writable by group or others (mode %03o)",
                 (unsigned)(st->st_mode & 0777));
        return text;
    }
    return NULL;
}

/* mkdir -p, each folder made 0700; true if the folder exists afterwards. */
static bool make_folder(const char *path, char *problem, size_t problem_size)
{
    char partial[BLOOPCL_CACHE_PATH], why[128];
    size_t length = strlen(path);
    if (length == 0 || length >= sizeof partial) {
        describe(problem, problem_size, "the folder path is empty or over %d bytes",
                 BLOOPCL_CACHE_PATH - 1);
        return false;
    }
    memcpy(partial, path, length + 1);
    for (size_t i = 1; i <= length; ++i) {
        if (partial[i] != '/' && partial[i] != '\0')
            continue;
        char saved = partial[i];
        partial[i] = '\0';
        if (mkdir(partial, 0700) != 0 && errno != EEXIST) {
            describe(problem, problem_size, "cannot make the folder (%s): %s",
                     errno_text(errno, why, sizeof why), partial);
            return false;
        }
        partial[i] = saved;
    }
    return true;
}

/* The folder, opened and checked: a descriptor, or -1 with `problem` set ("" when the folder
 * does not exist: a plain miss). Entries are then reached relative to this descriptor, so
 * the folder checked is the folder used. The path may lead through links (~/.cache on another
 * disk is common): what must be this user's alone is the folder it leads to, whose entries
 * only its owner can add, replace or remove. */
static int open_folder(const char *folder, char *problem, size_t problem_size)
{
    char why[128];
    int fd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno != ENOENT)
            describe(problem, problem_size, "the folder cannot be opened (%s): %s",
                     errno_text(errno, why, sizeof why), folder);
        return -1;
    }
    struct stat st;
    const char *refusal = fstat(fd, &st) != 0 ? errno_text(errno, why, sizeof why)
                                              : untrusted(&st, why, sizeof why);
    if (refusal == NULL)
        return fd;
    describe(problem, problem_size, "the folder is %s: %s", refusal, folder);
    close(fd);
    return -1;
}

static void entry_name(uint64_t key, char name[32])
{
    snprintf(name, 32, "%016llx.bin", (unsigned long long)key);
}

/* ---- reading an entry ---- */

/* Why this file may not be read as an entry, or NULL (its length is checked later). */
static const char *unreadable_kind(const struct stat *st, char *text, size_t size)
{
    if (S_ISLNK(st->st_mode))
        return "a symbolic link (not followed)";
    if (!S_ISREG(st->st_mode))
        return "not a regular file";
    return untrusted(st, text, size);
}

/* The entry's length if it may be a container; else `problem` is set. Decided from fstat
 * alone, before any buffer exists: a sparse file of any size is refused without a read. */
static bool acceptable_length(const struct stat *st, size_t *length, char *problem,
                              size_t problem_size, const char *name)
{
    long long bytes = (long long)st->st_size;
    if (bytes < BLOOPCL_CACHE_HEADER) {
        describe(problem, problem_size, "entry %s is %lld bytes, shorter than a container's "
                 "%d-byte header", name, bytes, BLOOPCL_CACHE_HEADER);
        return false;
    }
    if ((unsigned long long)bytes - BLOOPCL_CACHE_HEADER > BLOOPCL_CACHE_MAX_PAYLOAD) {
        describe(problem, problem_size, "entry %s is %lld bytes, over the limit of an entry "
                 "(%d-byte header and %zu MiB)", name, bytes, BLOOPCL_CACHE_HEADER,
                 BLOOPCL_CACHE_MAX_PAYLOAD >> 20);
        return false;
    }
    *length = (size_t)bytes;
    return true;
}

/* Reads exactly `size` bytes; false on an error or an early end (the file shrank). */
static bool read_all(int fd, unsigned char *buffer, size_t size)
{
    size_t done = 0;
    while (done < size) {
        ssize_t got = read(fd, buffer + done, size - done);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return false;
        done += (size_t)got;
    }
    return true;
}

/* Opens without following a link and without blocking, then checks the file opened. */
static unsigned char *read_open_entry(int folder_fd, const char *name, size_t *length,
                                      char *problem, size_t problem_size)
{
    char why[128];
    int fd = openat(folder_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno != ENOENT)  /* ENOENT: removed since it was looked at, a miss */
            describe(problem, problem_size, "entry %s cannot be opened (%s)", name,
                     errno == ELOOP ? "a symbolic link (not followed)"
                                    : errno_text(errno, why, sizeof why));
        return NULL;
    }
    struct stat st;
    const char *refusal = fstat(fd, &st) != 0 ? errno_text(errno, why, sizeof why)
                                              : unreadable_kind(&st, why, sizeof why);
    unsigned char *bytes = NULL;
    if (refusal != NULL)
        describe(problem, problem_size, "entry %s is %s", name, refusal);
    else if (acceptable_length(&st, length, problem, problem_size, name)) {
        bytes = malloc(*length);
        if (bytes == NULL)
            describe(problem, problem_size, "no memory for entry %s", name);
        else if (!read_all(fd, bytes, *length)) {
            describe(problem, problem_size, "entry %s could not be read whole", name);
            free(bytes);
            bytes = NULL;
        }
    }
    close(fd);
    return bytes;
}

/* The entry's bytes, or NULL (problem "" when there is none). A first look without opening
 * it keeps the library from ever opening a device or a FIFO; the checks after the open are
 * the ones that count, since the name may change hands in between. */
static unsigned char *read_entry(int folder_fd, const char *name, size_t *length, char *problem,
                                 size_t problem_size)
{
    char why[128];
    struct stat st;
    if (fstatat(folder_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno != ENOENT)
            describe(problem, problem_size, "entry %s cannot be looked at (%s)", name,
                     errno_text(errno, why, sizeof why));
        return NULL;
    }
    const char *refusal = unreadable_kind(&st, why, sizeof why);
    if (refusal != NULL) {
        describe(problem, problem_size, "entry %s is %s", name, refusal);
        return NULL;
    }
    size_t unused;
    if (!acceptable_length(&st, &unused, problem, problem_size, name))
        return NULL;
    return read_open_entry(folder_fd, name, length, problem, problem_size);
}

unsigned char *bloopcl__cache_load(const char *folder, uint64_t key, size_t *size,
                                   char *problem, size_t problem_size)
{
    problem[0] = '\0';
    int folder_fd = open_folder(folder, problem, problem_size);
    if (folder_fd < 0)
        return NULL;
    char name[32];
    entry_name(key, name);
    size_t length = 0;
    unsigned char *bytes = read_entry(folder_fd, name, &length, problem, problem_size);
    close(folder_fd);
    if (bytes == NULL)
        return NULL;
    bloopcl_cache_span payload;
    const char *refusal = bloopcl__cache_parse(bytes, length, key, &payload);
    if (refusal != NULL) {
        describe(problem, problem_size, "entry %s: %s", name, refusal);
        free(bytes);
        return NULL;
    }
    memmove(bytes, bytes + payload.offset, payload.size);
    *size = payload.size;
    return bytes;
}

/* ---- writing an entry ---- */

static bool write_all(int fd, const unsigned char *bytes, size_t size)
{
    size_t done = 0;
    while (done < size) {
        ssize_t put = write(fd, bytes + done, size - done);
        if (put < 0 && errno == EINTR)
            continue;
        if (put <= 0)
            return false;
        done += (size_t)put;
    }
    return true;
}

/* A new file 0600 under a name no other writer uses (process id, and a counter for the
 * threads of one process); -1 if none could be made. */
static int create_temporary(int folder_fd, const char *name, char *temporary, size_t size)
{
    static atomic_uint counter;
    for (int attempt = 0; attempt < 8; ++attempt) {
        snprintf(temporary, size, "%s.%ld-%u.tmp", name, (long)getpid(),
                 atomic_fetch_add(&counter, 1u));
        int fd = openat(folder_fd, temporary,
                        O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    return -1;
}

static bool write_entry(int folder_fd, uint64_t key, const unsigned char *binary, size_t size,
                        char *problem, size_t problem_size)
{
    char name[32], temporary[96], why[128];
    entry_name(key, name);
    int fd = create_temporary(folder_fd, name, temporary, sizeof temporary);
    if (fd < 0) {
        describe(problem, problem_size, "no temporary file for entry %s (%s)", name,
                 errno_text(errno, why, sizeof why));
        return false;
    }
    unsigned char header[BLOOPCL_CACHE_HEADER];
    bloopcl__cache_header(key, binary, size, header);
    bool ok = write_all(fd, header, sizeof header) && write_all(fd, binary, size);
    ok = close(fd) == 0 && ok;
    if (ok)
        ok = renameat(folder_fd, temporary, folder_fd, name) == 0;
    if (!ok) {
        describe(problem, problem_size, "entry %s could not be written (%s)", name,
                 errno_text(errno, why, sizeof why));
        unlinkat(folder_fd, temporary, 0);
    }
    return ok;
}

bool bloopcl__cache_store(const char *folder, uint64_t key, const unsigned char *binary,
                          size_t size, char *problem, size_t problem_size)
{
    problem[0] = '\0';
    if (size == 0 || size > BLOOPCL_CACHE_MAX_PAYLOAD) {
        describe(problem, problem_size, "a binary of %zu bytes is empty or over the limit of "
                 "an entry (%zu MiB)", size, BLOOPCL_CACHE_MAX_PAYLOAD >> 20);
        return false;
    }
    if (!make_folder(folder, problem, problem_size))
        return false;
    int folder_fd = open_folder(folder, problem, problem_size);
    if (folder_fd < 0) {
        if (problem[0] == '\0')
            describe(problem, problem_size, "the folder vanished: %s", folder);
        return false;
    }
    bool ok = write_entry(folder_fd, key, binary, size, problem, problem_size);
    close(folder_fd);
    return ok;
}
