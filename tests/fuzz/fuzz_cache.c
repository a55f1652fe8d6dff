/* fuzz_cache.c — libFuzzer target for the binary cache's container parser
 * (bloopcl__cache_parse, src/program_cache.c), the code that decides whether bytes read from a
 * cache file may reach the driver.
 *
 * Each input is parsed as a whole entry, with the key the seeds were written for and with the
 * key the input itself names (bytes 8..15), so mutations reach the checksum as well as the key
 * check. What the parser promises, checked here (abort() on a breach, which libFuzzer reports):
 *  - it never reads outside the input (AddressSanitizer);
 *  - accepted: the payload lies inside the input, right after the header, ends where the input
 *    ends, is 1..BLOOPCL_CACHE_MAX_PAYLOAD bytes, and the header is exactly the one the writer
 *    (bloopcl__cache_header) makes for that key and payload;
 *  - refused: a reason is given and the span is empty.
 * Then the input, taken as a payload, is wrapped by the writer and must parse back to itself.
 *
 * Needs only libc: program_cache.c links alone, e.g.
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DCL_TARGET_OPENCL_VERSION=120 \
 *     -Iinclude -Isrc tests/fuzz/fuzz_cache.c src/program_cache.c -o /tmp/fuzz_cache
 *   /tmp/fuzz_cache -max_total_time=60 tests/fuzz/seeds/cache
 *
 * Seeds (tests/fuzz/seeds/cache/), each for FUZZ_KEY and a 64-byte payload: valid.bin, written
 * by bloopcl__cache_store; truncated.bin, its first 80 bytes; wrong_checksum.bin, one payload bit
 * flipped; huge_size.bin, its first 16 bytes and a payload size of 2^32 - 16 (24 bytes in all);
 * format1.bin, valid.bin under the older format's magic "BLOOPCL1". */
#include "program_cache.h"

#include <stdlib.h>
#include <string.h>

#define FUZZ_KEY 0x0123456789ABCDEFull

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static void require(int condition)
{
    if (!condition)
        abort();
}

static uint64_t key_in(const unsigned char *data)
{
    uint64_t key = 0;
    for (int i = 7; i >= 0; --i)
        key = (key << 8) | data[i];
    return key;
}

static void check_parse(const unsigned char *data, size_t size, uint64_t key)
{
    bloopcl_cache_span span = {1, 1};
    const char *why = bloopcl__cache_parse(data, size, key, &span);
    if (why != NULL) {
        require(why[0] != '\0' && span.offset == 0 && span.size == 0);
        return;
    }
    require(span.offset == BLOOPCL_CACHE_HEADER && span.size >= 1 &&
            span.size <= BLOOPCL_CACHE_MAX_PAYLOAD && span.size <= size &&
            span.offset == size - span.size);
    unsigned char header[BLOOPCL_CACHE_HEADER];
    bloopcl__cache_header(key, data + span.offset, span.size, header);
    require(memcmp(header, data, sizeof header) == 0);
}

/* The writer's container for `data` as a payload parses back to exactly `data`. */
static void check_round_trip(const unsigned char *data, size_t size)
{
    if (size == 0 || size > BLOOPCL_CACHE_MAX_PAYLOAD)
        return;
    unsigned char *container = malloc(BLOOPCL_CACHE_HEADER + size);
    require(container != NULL);
    bloopcl__cache_header(FUZZ_KEY, data, size, container);
    memcpy(container + BLOOPCL_CACHE_HEADER, data, size);
    bloopcl_cache_span span;
    require(bloopcl__cache_parse(container, BLOOPCL_CACHE_HEADER + size, FUZZ_KEY, &span) ==
            NULL);
    require(span.offset == BLOOPCL_CACHE_HEADER && span.size == size &&
            memcmp(container + span.offset, data, size) == 0);
    free(container);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    check_parse(data, size, FUZZ_KEY);
    if (size >= 16)
        check_parse(data, size, key_in(data + 8));
    check_round_trip(data, size);
    return 0;
}
