/* fuzz_device_spec.c — libFuzzer target for the device-spec grammar (src/device_spec.c) and
 * the matcher's messages (src/device_select.c). Build and run: tools/fuzz.sh.
 *
 * For every input, beyond "no crash, no overrun, no leak" (ASan and UBSan):
 *   - the parser answers OK or BLOOPCL_ERR_DEVICE_SPEC, with a reason exactly when it fails,
 *     NUL-terminated inside its buffer and free of control characters;
 *   - a parsed spec is consistent: a known kind; a TYPE of GPU, CPU or ACCELERATOR whose rank
 *     is the value of the digits after ':' (0 without); PAIR fields inside the input, trimmed,
 *     without ':'; a FLAT index equal to the digits' value (both read here independently);
 *   - it round-trips: its canonical text ("gpu:K", "P:D", "N", "") parses to the same spec;
 *   - blanks around the input and ASCII case change nothing but the fields' letters;
 *   - matching it against a synthetic list agrees with the parse (DEVICE_SPEC exactly when the
 *     parse failed), selects a device of the asked type or index, and its message, in a
 *     buffer of any size, quotes the input escaped: its only control characters are the
 *     newlines that open the device-list lines. */
#include "device_spec.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(condition)                                                                      \
    do {                                                                                      \
        if (!(condition)) {                                                                   \
            fprintf(stderr, "fuzz_device_spec: %s:%d: %s\n", __FILE__, __LINE__, #condition); \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static char upper(char c)
{
    return (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
}

static int spans_equal(bloopcl_text_span a, bloopcl_text_span b, int ignore_case)
{
    if (a.length != b.length)
        return 0;
    for (size_t i = 0; i < a.length; i++)
        if (ignore_case ? upper(a.start[i]) != upper(b.start[i]) : a.start[i] != b.start[i])
            return 0;
    return 1;
}

static int specs_equal(const bloopcl_device_spec *a, const bloopcl_device_spec *b,
                       int ignore_case)
{
    return a->kind == b->kind && a->type == b->type && a->rank == b->rank &&
           a->flat_index == b->flat_index && spans_equal(a->platform, b->platform, ignore_case) &&
           spans_equal(a->device, b->device, ignore_case);
}

/* Text a message may show: printable ASCII, and '\n' only where a device-list line starts
 * ("\n  "; a message cut by its buffer may end inside that prefix). */
static void check_message(const char *message, size_t size)
{
    CHECK(memchr(message, '\0', size) != NULL);
    for (const char *p = message; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '\n')
            CHECK(p[1] == '\0' || (p[1] == ' ' && (p[2] == '\0' || p[2] == ' ')));
        else
            CHECK(c >= 0x20 && c < 0x7f);
    }
}

static void check_span(bloopcl_text_span span, const char *text, size_t length)
{
    if (span.length == 0)
        return;
    CHECK(span.start >= text && span.start + span.length <= text + length);
    CHECK(!is_blank(span.start[0]) && !is_blank(span.start[span.length - 1]));
    CHECK(memchr(span.start, ':', span.length) == NULL);
}

/* The digits of the trimmed input, read independently of the parser (1: they fit). */
static int trimmed_value(const char *text, size_t length, unsigned long long *value)
{
    size_t start = 0;
    while (start < length && is_blank(text[start]))
        start++;
    while (length > start && is_blank(text[length - 1]))
        length--;
    *value = 0;
    for (size_t i = start; i < length; i++) {
        *value = *value * 10 + (unsigned)(text[i] - '0');
        if (*value > UINT32_MAX)
            return 0;
    }
    return 1;
}

static void check_consistent(const bloopcl_device_spec *spec, const char *text, size_t length)
{
    switch (spec->kind) {
    case BLOOPCL_SPEC_DEFAULT:
        for (size_t i = 0; i < length; i++)
            CHECK(is_blank(text[i]));
        break;
    case BLOOPCL_SPEC_TYPE: {
        CHECK(spec->type == CL_DEVICE_TYPE_GPU || spec->type == CL_DEVICE_TYPE_CPU ||
              spec->type == CL_DEVICE_TYPE_ACCELERATOR);
        const char *colon = memchr(text, ':', length);
        unsigned long long rank = 0;
        if (colon != NULL)
            CHECK(trimmed_value(colon + 1, length - (size_t)(colon + 1 - text), &rank));
        CHECK(rank == spec->rank);
        break;
    }
    case BLOOPCL_SPEC_PAIR:
        check_span(spec->platform, text, length);
        check_span(spec->device, text, length);
        CHECK(memchr(text, ':', length) != NULL);
        break;
    case BLOOPCL_SPEC_FLAT: {
        unsigned long long value = 0;
        CHECK(trimmed_value(text, length, &value) && value == spec->flat_index);
        break;
    }
    default:
        CHECK(0);
    }
}

/* The canonical text of a parsed spec (malloc'd; *length set). */
static char *canonical(const bloopcl_device_spec *spec, size_t *length)
{
    size_t size = spec->platform.length + spec->device.length + 32;
    char *text = malloc(size);
    CHECK(text != NULL);
    int n = 0;
    const char *type = spec->type == CL_DEVICE_TYPE_GPU   ? "gpu"
                       : spec->type == CL_DEVICE_TYPE_CPU ? "cpu" : "acc";
    switch (spec->kind) {
    case BLOOPCL_SPEC_DEFAULT:
        text[0] = '\0';
        break;
    case BLOOPCL_SPEC_TYPE:
        n = snprintf(text, size, "%s:%u", type, spec->rank);
        break;
    case BLOOPCL_SPEC_FLAT:
        n = snprintf(text, size, "%u", spec->flat_index);
        break;
    case BLOOPCL_SPEC_PAIR: /* memcpy: the fields may hold NUL bytes */
        memcpy(text, spec->platform.start, spec->platform.length);
        text[spec->platform.length] = ':';
        memcpy(text + spec->platform.length + 1, spec->device.start, spec->device.length);
        n = (int)(spec->platform.length + 1 + spec->device.length);
        break;
    }
    *length = (size_t)n;
    return text;
}

static bloopcl_status parse(const char *text, size_t length, bloopcl_device_spec *spec)
{
    char why[BLOOPCL_SPEC_WHY_CAPACITY];
    memset(why, 'x', sizeof why);
    bloopcl_status status = bloopcl__parse_device_spec(text, length, spec, why, sizeof why);
    CHECK(status == BLOOPCL_OK || status == BLOOPCL_ERR_DEVICE_SPEC);
    check_message(why, sizeof why);
    CHECK((status == BLOOPCL_OK) == (why[0] == '\0'));
    return status;
}

/* Parses variants of the input that must agree with it. */
static void check_variants(const char *text, size_t length, const bloopcl_device_spec *spec,
                           bloopcl_status status)
{
    char *variant = malloc(length + 2);
    CHECK(variant != NULL);
    variant[0] = ' ';
    memcpy(variant + 1, text, length);
    variant[length + 1] = '\t';
    bloopcl_device_spec other;
    CHECK(parse(variant, length + 2, &other) == status);
    if (status == BLOOPCL_OK)
        CHECK(specs_equal(spec, &other, 0));
    for (size_t i = 0; i < length; i++)
        variant[i] = upper(text[i]);
    CHECK(parse(variant, length, &other) == status);
    if (status == BLOOPCL_OK)
        CHECK(specs_equal(spec, &other, 1));
    free(variant);

    if (status != BLOOPCL_OK)
        return;
    size_t canonical_length = 0;
    char *again = canonical(spec, &canonical_length);
    CHECK(parse(again, canonical_length, &other) == BLOOPCL_OK);
    CHECK(specs_equal(spec, &other, 0));
    free(again);
}

static bloopcl_device_info device(unsigned flat, unsigned platform, unsigned index,
                                  const char *platform_name, const char *name,
                                  cl_device_type type)
{
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    memset(&info, 0, sizeof info);
    info.flat_index = flat;
    info.platform_index = platform;
    info.device_index = index;
    info.type = type;
    snprintf(info.platform_name, sizeof info.platform_name, "%s", platform_name);
    snprintf(info.platform_vendor, sizeof info.platform_vendor, "%s vendor", platform_name);
    snprintf(info.device_name, sizeof info.device_name, "%s", name);
    return info;
}

/* The matcher on the input as a C string (to its first NUL), into a message buffer of a
 * size the input chooses (exactly that size, so ASan sees any overrun). */
static void check_match(const uint8_t *data, size_t size)
{
    bloopcl_device_info list[4] = {
        device(0, 0, 0, "AMD Accelerated Parallel Processing", "gfx1100", CL_DEVICE_TYPE_GPU),
        device(1, 0, 1, "AMD Accelerated Parallel Processing", "Ryzen", CL_DEVICE_TYPE_CPU),
        device(2, 1, 0, "Portable Computing Language", "pthread-Ryzen", CL_DEVICE_TYPE_CPU),
        device(3, 2, 0, "Intel(R) OpenCL Graphics", "Arc A770", CL_DEVICE_TYPE_GPU),
    };
    char *text = malloc(size + 1);
    CHECK(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';
    size_t length = strlen(text);
    bloopcl_device_spec spec;
    bloopcl_status parsed = parse(text, length, &spec);

    size_t message_size = size > 0 ? 1 + (size_t)data[0] * 17 : 4096;
    char *message = malloc(message_size);
    CHECK(message != NULL);
    size_t selected = SIZE_MAX;
    size_t count = size > 1 ? data[1] % 5 : 4; /* 0 to 4 devices */
    bloopcl_status status = bloopcl__match_device_spec(list, count, text, "BLOOPCL_DEVICE",
                                                       &selected, message, message_size);
    CHECK((parsed != BLOOPCL_OK) == (status == BLOOPCL_ERR_DEVICE_SPEC));
    if (status == BLOOPCL_OK) {
        CHECK(selected < count && message[0] == '\0');
        if (spec.kind == BLOOPCL_SPEC_TYPE)
            CHECK((list[selected].type & spec.type) != 0);
        if (spec.kind == BLOOPCL_SPEC_FLAT)
            CHECK(list[selected].flat_index == spec.flat_index);
    } else {
        CHECK(status == BLOOPCL_ERR_DEVICE_SPEC || status == BLOOPCL_ERR_DEVICE_NOT_FOUND);
        check_message(message, message_size);
    }
    free(message);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    bloopcl_device_spec spec;
    bloopcl_status status = parse(text, size, &spec);
    if (status == BLOOPCL_OK)
        check_consistent(&spec, text, size);
    check_variants(text, size, &spec, status);
    check_match(data, size);
    return 0;
}
