/* program_cache.c — compiled kernel binaries kept on disk between processes.
 *
 * Key: a 64-bit FNV-1a hash of everything that can change the binary — the library version,
 * every kernel source, the build options, and the platform, device and driver identity.
 * File: <dir>/<key as 16 hex digits>.bin holding a header (magic, key, payload size), the
 * driver's binary, and a checksum. Files are written to a temporary name and renamed into
 * place, so a reader never sees half a file and concurrent writers cannot corrupt one.
 * Every problem (no folder, unreadable, stale, corrupt, rejected by the driver) makes the
 * caller build from source: the cache can only save time, never cost correctness. */
#include "program_cache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CACHE_MAGIC "BLOOPCL1"

uint64_t bloopcl__hash_bytes(uint64_t hash, const void *data, size_t size)
{
    const unsigned char *bytes = data;
    for (size_t i = 0; i < size; ++i) {
        hash ^= bytes[i];
        hash *= 0x100000001B3ull;  /* FNV-1a 64-bit prime */
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
    uint64_t hash = 0xCBF29CE484222325ull;  /* FNV-1a 64-bit offset basis */
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

/* mkdir -p; true if the folder exists afterwards. */
static bool make_folder(const char *path)
{
    char partial[BLOOPCL_CACHE_PATH];
    size_t length = strlen(path);
    if (length == 0 || length >= sizeof partial)
        return false;
    memcpy(partial, path, length + 1);
    for (size_t i = 1; i <= length; ++i) {
        if (partial[i] != '/' && partial[i] != '\0')
            continue;
        char saved = partial[i];
        partial[i] = '\0';
        if (mkdir(partial, 0755) != 0 && errno != EEXIST)
            return false;
        partial[i] = saved;
    }
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

void bloopcl__cache_folder(const char *requested, char *folder, size_t size)
{
    folder[0] = '\0';
    const char *chosen = requested != NULL ? requested : getenv("BLOOPCL_CACHE_DIR");
    if (chosen != NULL) {
        if (chosen[0] == '\0' || strcmp(chosen, "0") == 0 || strcmp(chosen, "off") == 0 ||
            strcmp(chosen, "none") == 0)
            return;  /* explicitly off */
        snprintf(folder, size, "%s", chosen);
        return;
    }
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg != NULL && xdg[0] != '\0')
        snprintf(folder, size, "%s/bloopcl", xdg);
    else if (home != NULL && home[0] != '\0')
        snprintf(folder, size, "%s/.cache/bloopcl", home);
}

static void entry_path(const char *folder, uint64_t key, char *path, size_t size)
{
    snprintf(path, size, "%s/%016llx.bin", folder, (unsigned long long)key);
}

typedef struct cache_header {
    char magic[8];
    uint64_t key;
    uint64_t size;
} cache_header;

unsigned char *bloopcl__cache_load(const char *folder, uint64_t key, size_t *size)
{
    char path[BLOOPCL_CACHE_PATH + 32];
    entry_path(folder, key, path, sizeof path);
    FILE *file = fopen(path, "rb");
    if (file == NULL)
        return NULL;
    cache_header header;
    unsigned char *payload = NULL;
    uint64_t checksum = 0;
    bool ok = fread(&header, sizeof header, 1, file) == 1 &&
              memcmp(header.magic, CACHE_MAGIC, 8) == 0 && header.key == key &&
              header.size > 0 && header.size < ((uint64_t)1 << 32) &&
              (payload = malloc((size_t)header.size)) != NULL &&
              fread(payload, 1, (size_t)header.size, file) == header.size &&
              fread(&checksum, sizeof checksum, 1, file) == 1 &&
              checksum == bloopcl__hash_bytes(key, payload, (size_t)header.size);
    fclose(file);
    if (!ok) {
        free(payload);
        return NULL;
    }
    *size = (size_t)header.size;
    return payload;
}

bool bloopcl__cache_store(const char *folder, uint64_t key, const unsigned char *binary,
                          size_t size)
{
    if (!make_folder(folder))
        return false;
    char path[BLOOPCL_CACHE_PATH + 32], temporary[BLOOPCL_CACHE_PATH + 64];
    entry_path(folder, key, path, sizeof path);
    snprintf(temporary, sizeof temporary, "%s.%ld.tmp", path, (long)getpid());
    FILE *file = fopen(temporary, "wb");
    if (file == NULL)
        return false;
    cache_header header = {.key = key, .size = size};
    memcpy(header.magic, CACHE_MAGIC, 8);
    uint64_t checksum = bloopcl__hash_bytes(key, binary, size);
    bool ok = fwrite(&header, sizeof header, 1, file) == 1 &&
              fwrite(binary, 1, size, file) == size &&
              fwrite(&checksum, sizeof checksum, 1, file) == 1;
    ok = (fclose(file) == 0) && ok;
    if (ok)
        ok = rename(temporary, path) == 0;
    if (!ok)
        remove(temporary);
    return ok;
}
