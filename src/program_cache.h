/* program_cache.h — the on-disk cache of compiled kernel binaries (see program_cache.c).
 * Needs only libc and the public header (for bloopcl_device_info), so that the container
 * parser can be linked alone into a fuzz target (tests/fuzz/fuzz_cache.c). */
#ifndef BLOOPCL_PROGRAM_CACHE_H
#define BLOOPCL_PROGRAM_CACHE_H

#include "bloopcl.h"
#include "environment.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Room for a folder path: up to 4095 bytes and its terminator (Linux's PATH_MAX). Longer
 * paths are refused, never shortened. */
#define BLOOPCL_CACHE_PATH 4096

/* A container: 32 bytes of header, then the driver's binary (the payload). */
#define BLOOPCL_CACHE_HEADER 32

/* The largest payload written or read: 256 MiB, far above any kernel binary (PoCL's are about
 * 300 KB), so that a hostile header or file size can never make the library allocate more. */
#define BLOOPCL_CACHE_MAX_PAYLOAD ((size_t)256 << 20)

/* FNV-1a over bytes, continuing from `hash`. */
uint64_t bloopcl__hash_bytes(uint64_t hash, const void *data, size_t size);

/* The key of a program: library version, sources, options, platform/device/driver. */
uint64_t bloopcl__cache_key(const bloopcl_device_info *info, const char *const *texts,
                            const size_t *lengths, size_t count, const char *options);

/* The folder in use: `requested` (the context parameter) if not NULL, else BLOOPCL_CACHE_DIR,
 * else $XDG_CACHE_HOME/bloopcl or ~/.cache/bloopcl (the variables as `env` holds them). "", "0", "off", "none" turn it off, which
 * leaves `folder` empty. False (and `folder` empty: no cache) when the path does not fit in
 * `size` bytes with its terminator. */
bool bloopcl__cache_folder(const char *requested, const bloopcl_environment *env, char *folder,
                           size_t size);

/* Where a container's payload lies within it. */
typedef struct bloopcl_cache_span {
    size_t offset;
    size_t size;
} bloopcl_cache_span;

/* Checks a whole container held in memory: magic, key, payload size (1 to
 * BLOOPCL_CACHE_MAX_PAYLOAD bytes, and exactly what follows the header), checksum. NULL when
 * it is good, with `payload` inside `bytes` (offset + size == size of the input); otherwise a
 * static text saying why not, and `payload` is {0, 0}. Reads nothing outside `bytes`. */
const char *bloopcl__cache_parse(const unsigned char *bytes, size_t size, uint64_t key,
                                 bloopcl_cache_span *payload);

/* The header of the container for `payload` (1 to BLOOPCL_CACHE_MAX_PAYLOAD bytes). */
void bloopcl__cache_header(uint64_t key, const unsigned char *payload, size_t size,
                           unsigned char header[BLOOPCL_CACHE_HEADER]);

/* The cached binary for `key` (malloc'ed), or NULL. On NULL, `problem` says why the entry or
 * the folder was refused, or is "" for a plain miss (no folder or no entry yet). */
unsigned char *bloopcl__cache_load(const char *folder, uint64_t key, size_t *size,
                                   char *problem, size_t problem_size);

/* Stores a binary (temporary file, then rename); false on any problem (never fatal), which
 * `problem` then describes. */
bool bloopcl__cache_store(const char *folder, uint64_t key, const unsigned char *binary,
                          size_t size, char *problem, size_t problem_size);

#endif
