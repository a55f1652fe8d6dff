/* program_cache.h — the on-disk cache of compiled kernel binaries (see program_cache.c). */
#ifndef BLOOPCL_PROGRAM_CACHE_H
#define BLOOPCL_PROGRAM_CACHE_H

#include "internal.h"

#define BLOOPCL_CACHE_PATH 4096

/* FNV-1a over bytes, continuing from `hash`. */
uint64_t bloopcl__hash_bytes(uint64_t hash, const void *data, size_t size);

/* The key of a program: library version, sources, options, platform/device/driver. */
uint64_t bloopcl__cache_key(const bloopcl_device_info *info, const char *const *texts,
                            const size_t *lengths, size_t count, const char *options);

/* The folder in use: `requested` (the context parameter) if not NULL, else BLOOPCL_CACHE_DIR,
 * else $XDG_CACHE_HOME/bloopcl or ~/.cache/bloopcl. "", "0", "off", "none" turn it off, which
 * leaves `folder` empty. */
void bloopcl__cache_folder(const char *requested, char *folder, size_t size);

/* The cached binary for `key` (malloc'ed), or NULL on any miss or problem. */
unsigned char *bloopcl__cache_load(const char *folder, uint64_t key, size_t *size);

/* Stores a binary (temporary file, then rename); false on any problem (never fatal). */
bool bloopcl__cache_store(const char *folder, uint64_t key, const unsigned char *binary,
                          size_t size);

#endif
