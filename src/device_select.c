/* device_select.c — the BLOOPCL_DEVICE grammar (see bloopcl.h, "Devices").
 *
 * Parsing and matching are pure functions of the spec and an enumerated list, so the tests can
 * feed synthetic multi-vendor lists; only bloopcl_select_device touches OpenCL and the
 * environment. Every failure is a status plus a message that quotes the spec, says why and
 * lists the devices: a wrong spec must never silently fall back to another device. */
#include "internal.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NO_DEVICE_HINT "no OpenCL device found (is an ICD such as PoCL installed? see OCL_ICD_VENDORS)"
#define SPEC_FORMS "gpu|cpu|acc[:K], P:D or N"
#define WHY_CAPACITY 512

/* A piece of the caller's spec: never NUL-terminated on its own, always printed with %.*s. */
typedef struct text_span {
    const char *start;
    size_t length;
} text_span;

typedef enum spec_kind {
    SPEC_DEFAULT, /* unset or blank */
    SPEC_TYPE,    /* gpu, cpu, acc, with an optional rank */
    SPEC_PAIR,    /* P:D */
    SPEC_FLAT     /* N */
} spec_kind;

typedef struct parsed_spec {
    spec_kind kind;
    cl_device_type type;   /* SPEC_TYPE */
    unsigned rank;         /* SPEC_TYPE */
    text_span platform;    /* SPEC_PAIR; empty matches anything */
    text_span device;      /* SPEC_PAIR; empty matches anything */
    unsigned flat_index;   /* SPEC_FLAT */
} parsed_spec;

/* ASCII-only helpers: the grammar is ASCII and must not depend on the process locale. */
static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static char ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static text_span span_trim(text_span span)
{
    while (span.length > 0 && is_blank(span.start[0])) {
        span.start++;
        span.length--;
    }
    while (span.length > 0 && is_blank(span.start[span.length - 1]))
        span.length--;
    return span;
}

static int span_equals_ci(text_span span, const char *word)
{
    size_t length = strlen(word);
    if (span.length != length)
        return 0;
    for (size_t i = 0; i < length; i++)
        if (ascii_lower(span.start[i]) != ascii_lower(word[i]))
            return 0;
    return 1;
}

static int span_is_digits(text_span span)
{
    if (span.length == 0)
        return 0;
    for (size_t i = 0; i < span.length; i++)
        if (span.start[i] < '0' || span.start[i] > '9')
            return 0;
    return 1;
}

/* Decimal digits to unsigned; returns 0 when the value does not fit (an error, not a wrap). */
static int parse_index(text_span digits, unsigned *value)
{
    unsigned result = 0;
    for (size_t i = 0; i < digits.length; i++) {
        unsigned digit = (unsigned)(digits.start[i] - '0');
        if (result > (UINT_MAX - digit) / 10u)
            return 0;
        result = result * 10u + digit;
    }
    *value = result;
    return 1;
}

/* Case-insensitive substring test; an empty needle is contained in everything. */
static int contains_ci(const char *haystack, text_span needle)
{
    size_t length = strlen(haystack);
    if (needle.length > length)
        return 0;
    for (size_t start = 0; start + needle.length <= length; start++) {
        size_t i = 0;
        while (i < needle.length &&
               ascii_lower(haystack[start + i]) == ascii_lower(needle.start[i]))
            i++;
        if (i == needle.length)
            return 1;
    }
    return 0;
}

/* The type keywords are reserved: "cpu:1" is the second CPU, never platform "cpu". */
static int keyword_type(text_span word, cl_device_type *type)
{
    if (span_equals_ci(word, "gpu"))
        *type = CL_DEVICE_TYPE_GPU;
    else if (span_equals_ci(word, "cpu"))
        *type = CL_DEVICE_TYPE_CPU;
    else if (span_equals_ci(word, "acc") || span_equals_ci(word, "accelerator"))
        *type = CL_DEVICE_TYPE_ACCELERATOR;
    else
        return 0;
    return 1;
}

static bloopcl_status parse_number_field(text_span field, unsigned *value, char *why)
{
    if (!parse_index(field, value)) {
        bloopcl__format(why, WHY_CAPACITY, "index \"%.*s\" is too large", (int)field.length,
                        field.start);
        return BLOOPCL_ERR_DEVICE_SPEC;
    }
    return BLOOPCL_OK;
}

static bloopcl_status parse_type_form(text_span rank, int has_colon, parsed_spec *out, char *why)
{
    out->kind = SPEC_TYPE;
    out->rank = 0;
    /* "gpu:" is accepted as "gpu:0", like an empty P:D field means "the first". */
    if (!has_colon || rank.length == 0)
        return BLOOPCL_OK;
    if (!span_is_digits(rank)) {
        bloopcl__format(why, WHY_CAPACITY,
                        "rank \"%.*s\" after the device type is not a decimal number",
                        (int)rank.length, rank.start);
        return BLOOPCL_ERR_DEVICE_SPEC;
    }
    return parse_number_field(rank, &out->rank, why);
}

static bloopcl_status parse_bare_form(text_span word, parsed_spec *out, char *why)
{
    if (span_is_digits(word)) {
        out->kind = SPEC_FLAT;
        return parse_number_field(word, &out->flat_index, why);
    }
    /* A lone word is not in the grammar; guessing whether it names a platform or a device
     * would make typos select something unexpected, so say how to write either. */
    bloopcl__format(why, WHY_CAPACITY,
                    "\"%.*s\" is not one of " SPEC_FORMS
                    " (write \"%.*s:\" for a platform or \":%.*s\" for a device)",
                    (int)word.length, word.start, (int)word.length, word.start,
                    (int)word.length, word.start);
    return BLOOPCL_ERR_DEVICE_SPEC;
}

static bloopcl_status parse_pair_field(text_span field, unsigned *index, char *why)
{
    if (!span_is_digits(field))
        return BLOOPCL_OK; /* a substring (or empty: anything) */
    return parse_number_field(field, index, why);
}

static bloopcl_status parse_spec(text_span spec, parsed_spec *out, char *why)
{
    memset(out, 0, sizeof *out);
    if (spec.length == 0) {
        out->kind = SPEC_DEFAULT;
        return BLOOPCL_OK;
    }
    const char *colon = memchr(spec.start, ':', spec.length);
    size_t head_length = colon != NULL ? (size_t)(colon - spec.start) : spec.length;
    text_span head = span_trim((text_span){spec.start, head_length});
    text_span tail = {spec.start + spec.length, 0};
    if (colon != NULL) {
        tail = span_trim((text_span){colon + 1, spec.length - head_length - 1});
        if (memchr(colon + 1, ':', spec.length - head_length - 1) != NULL) {
            bloopcl__format(why, WHY_CAPACITY, "more than one ':' (expected " SPEC_FORMS ")");
            return BLOOPCL_ERR_DEVICE_SPEC;
        }
    }
    if (keyword_type(head, &out->type))
        return parse_type_form(tail, colon != NULL, out, why);
    if (colon == NULL)
        return parse_bare_form(head, out, why);

    out->kind = SPEC_PAIR;
    out->platform = head;
    out->device = tail;
    unsigned ignored;
    bloopcl_status status = parse_pair_field(head, &ignored, why);
    if (status == BLOOPCL_OK)
        status = parse_pair_field(tail, &ignored, why);
    return status;
}

static int has_type(const bloopcl_device_info *info, cl_device_type type)
{
    return (info->type & type) != 0;
}

static size_t find_first_of_type(const bloopcl_device_info *devices, size_t count,
                                 cl_device_type type, unsigned rank)
{
    unsigned seen = 0;
    for (size_t i = 0; i < count; i++) {
        if (!has_type(&devices[i], type))
            continue;
        if (seen == rank)
            return i;
        seen++;
    }
    return SIZE_MAX;
}

static size_t find_default(const bloopcl_device_info *devices, size_t count)
{
    static const cl_device_type preference[] = {CL_DEVICE_TYPE_GPU, CL_DEVICE_TYPE_ACCELERATOR,
                                                CL_DEVICE_TYPE_CPU};
    for (size_t p = 0; p < sizeof preference / sizeof preference[0]; p++) {
        size_t found = find_first_of_type(devices, count, preference[p], 0);
        if (found != SIZE_MAX)
            return found;
    }
    return count > 0 ? 0 : SIZE_MAX;
}

/* An all-digit field is an index (already checked to fit); anything else a substring. */
static int field_matches(text_span field, unsigned index, const char *name, const char *vendor)
{
    if (field.length == 0)
        return 1;
    if (span_is_digits(field)) {
        unsigned wanted = 0;
        return parse_index(field, &wanted) && wanted == index;
    }
    return contains_ci(name, field) || (vendor != NULL && contains_ci(vendor, field));
}

static size_t find_pair(const bloopcl_device_info *devices, size_t count,
                        const parsed_spec *spec)
{
    for (size_t i = 0; i < count; i++) {
        const bloopcl_device_info *d = &devices[i];
        if (field_matches(spec->platform, d->platform_index, d->platform_name,
                          d->platform_vendor) &&
            field_matches(spec->device, d->device_index, d->device_name, NULL))
            return i;
    }
    return SIZE_MAX;
}

static size_t find_flat(const bloopcl_device_info *devices, size_t count, unsigned flat_index)
{
    for (size_t i = 0; i < count; i++)
        if (devices[i].flat_index == flat_index)
            return i;
    return SIZE_MAX;
}

static size_t count_of_type(const bloopcl_device_info *devices, size_t count, cl_device_type type)
{
    size_t n = 0;
    for (size_t i = 0; i < count; i++)
        n += (size_t)has_type(&devices[i], type);
    return n;
}

static void explain_type_miss(const bloopcl_device_info *devices, size_t count,
                              const parsed_spec *spec, char *why)
{
    const char *name = bloopcl__device_type_name(spec->type);
    if (spec->rank == 0)
        bloopcl__format(why, WHY_CAPACITY, "no %s device", name);
    else
        bloopcl__format(why, WHY_CAPACITY, "no %s device of rank %u (%zu found, ranks from 0)",
                        name, spec->rank, count_of_type(devices, count, spec->type));
}

/* "\"amd\" (index or part of ...)" for a given field, "(any)" for an empty one. */
static void describe_field(text_span field, const char *what, char *out, size_t size)
{
    if (field.length == 0)
        bloopcl__format(out, size, "(any)");
    else
        bloopcl__format(out, size, "\"%.*s\" (index or part of %s)", (int)field.length,
                        field.start, what);
}

static void explain_pair_miss(const parsed_spec *spec, char *why)
{
    char platform[WHY_CAPACITY / 2];
    char device[WHY_CAPACITY / 2];
    describe_field(spec->platform, "name/vendor", platform, sizeof platform);
    describe_field(spec->device, "name", device, sizeof device);
    bloopcl__format(why, WHY_CAPACITY, "no device matches platform field %s and device field %s",
                    platform, device);
}

/* Finds the device; on a miss returns SIZE_MAX and writes why into `why`. */
static size_t find_device(const bloopcl_device_info *devices, size_t count,
                          const parsed_spec *spec, char *why)
{
    size_t found = SIZE_MAX;
    switch (spec->kind) {
    case SPEC_DEFAULT:
        found = find_default(devices, count);
        if (found == SIZE_MAX)
            bloopcl__format(why, WHY_CAPACITY, "%s", NO_DEVICE_HINT);
        break;
    case SPEC_TYPE:
        found = find_first_of_type(devices, count, spec->type, spec->rank);
        if (found == SIZE_MAX)
            explain_type_miss(devices, count, spec, why);
        break;
    case SPEC_PAIR:
        found = find_pair(devices, count, spec);
        if (found == SIZE_MAX)
            explain_pair_miss(spec, why);
        break;
    case SPEC_FLAT:
        found = find_flat(devices, count, spec->flat_index);
        if (found == SIZE_MAX)
            bloopcl__format(why, WHY_CAPACITY, "no device with index %u (%zu found)",
                            spec->flat_index, count);
        break;
    }
    return found;
}

static size_t bounded_length(const char *buffer, size_t size)
{
    size_t length = 0;
    while (length < size && buffer[length] != '\0')
        length++;
    return length;
}

void bloopcl__append_device_list(char *buffer, size_t size, const bloopcl_device_info *devices,
                                 size_t count)
{
    if (buffer == NULL || size == 0 || devices == NULL)
        return;
    size_t used = bounded_length(buffer, size);
    for (size_t i = 0; i < count && used + 1 < size; i++) {
        const bloopcl_device_info *d = &devices[i];
        bloopcl__format(buffer + used, size - used, "\n  %u: %s / %s (%s)", d->flat_index,
                        d->platform_name, d->device_name, bloopcl__device_type_name(d->type));
        used += bounded_length(buffer + used, size - used);
    }
}

/* "BLOOPCL_DEVICE="<spec>": <why>; devices found:" and the list. With no device at all the
 * list would be empty, so the hint about installing an ICD replaces it. */
static void write_failure(char *message, size_t size, const char *spec, spec_kind kind,
                          bloopcl_status status, const char *why,
                          const bloopcl_device_info *devices, size_t count)
{
    if (message == NULL || size == 0)
        return;
    if (count == 0 && status == BLOOPCL_ERR_DEVICE_NOT_FOUND && kind == SPEC_DEFAULT)
        bloopcl__format(message, size, "%s", NO_DEVICE_HINT);
    else if (count == 0 && status == BLOOPCL_ERR_DEVICE_NOT_FOUND)
        bloopcl__format(message, size, "BLOOPCL_DEVICE=\"%s\": %s", spec, NO_DEVICE_HINT);
    else if (count == 0)
        bloopcl__format(message, size, "BLOOPCL_DEVICE=\"%s\": %s; %s", spec, why,
                        NO_DEVICE_HINT);
    else {
        bloopcl__format(message, size, "BLOOPCL_DEVICE=\"%s\": %s; devices found:", spec, why);
        bloopcl__append_device_list(message, size, devices, count);
    }
}

static void clear_message(char *message, size_t size)
{
    if (message != NULL && size > 0)
        message[0] = '\0';
}

bloopcl_status bloopcl__match_device_spec(const bloopcl_device_info *devices, size_t count,
                                          const char *spec, size_t *selected, char *message,
                                          size_t message_size)
{
    clear_message(message, message_size);
    if (selected == NULL || (devices == NULL && count > 0)) {
        bloopcl__format(message, message_size, "%s is NULL",
                        selected == NULL ? "selected" : "devices");
        return BLOOPCL_ERR_NULL_ARGUMENT;
    }
    if (spec == NULL)
        spec = "";
    char why[WHY_CAPACITY] = "";
    parsed_spec parsed;
    bloopcl_status status = parse_spec(span_trim((text_span){spec, strlen(spec)}), &parsed, why);
    if (status == BLOOPCL_OK) {
        size_t found = find_device(devices, count, &parsed, why);
        if (found != SIZE_MAX) {
            *selected = found;
            return BLOOPCL_OK;
        }
        status = BLOOPCL_ERR_DEVICE_NOT_FOUND;
    }
    write_failure(message, message_size, spec, parsed.kind, status, why, devices, count);
    return status;
}

/* Enumerates into a fresh array (NULL when there are no devices); `skipped` receives the
 * notes on entries left out (broken platforms or devices). */
static bloopcl_status enumerate(bloopcl_device_info **devices, size_t *count, char *skipped,
                                size_t skipped_size)
{
    *devices = NULL;
    *count = 0;
    size_t total = 0;
    bloopcl_status status = bloopcl__list_devices_noting(NULL, 0, &total, skipped, skipped_size);
    if (status != BLOOPCL_OK || total == 0)
        return status;
    bloopcl_device_info *list = calloc(total, sizeof *list);
    if (list == NULL)
        return BLOOPCL_ERR_OUT_OF_MEMORY;
    size_t again = 0;
    status = bloopcl__list_devices_noting(list, total, &again, skipped, skipped_size);
    if (status != BLOOPCL_OK) {
        free(list);
        return status;
    }
    *devices = list;
    /* A device that appeared between the two calls is not described; one that vanished is. */
    *count = again < total ? again : total;
    return BLOOPCL_OK;
}

/* "...; left out of the list: <notes>": a device the caller expected may be among them. */
static void append_skipped(char *message, size_t size, const char *skipped)
{
    if (message == NULL || size == 0 || skipped[0] == '\0')
        return;
    size_t used = bounded_length(message, size);
    bloopcl__format(message + used, size - used, "\n  left out of the list: %s", skipped);
}

bloopcl_status bloopcl__select_device_noting(const char *spec, bloopcl_device_info *selected,
                                             char *message, size_t message_size,
                                             char *skipped, size_t skipped_size)
{
    clear_message(message, message_size);
    clear_message(skipped, skipped_size);
    if (selected == NULL) {
        bloopcl__format(message, message_size, "selected is NULL");
        return BLOOPCL_ERR_NULL_ARGUMENT;
    }
    /* An explicit spec wins over the environment, even an empty one ("" = the default). */
    if (spec == NULL)
        spec = getenv("BLOOPCL_DEVICE");

    bloopcl_device_info *devices = NULL;
    size_t count = 0;
    char notes[WHY_CAPACITY * 4] = "";
    bloopcl_status status = enumerate(&devices, &count, notes, sizeof notes);
    if (status != BLOOPCL_OK) {
        bloopcl__format(message, message_size, "listing the OpenCL devices failed: %s",
                        bloopcl_status_string(status));
        return status;
    }
    bloopcl__format(skipped, skipped_size, "%s", notes);
    size_t index = 0;
    status = bloopcl__match_device_spec(devices, count, spec, &index, message, message_size);
    if (status == BLOOPCL_OK)
        *selected = devices[index];
    else
        append_skipped(message, message_size, notes);
    free(devices);
    return status;
}

bloopcl_status bloopcl_select_device(const char *spec, bloopcl_device_info *selected,
                                     char *message, size_t message_size)
{
    if (selected == NULL) {
        bloopcl__format(message, message_size, "selected is NULL");
        return BLOOPCL_ERR_NULL_ARGUMENT;
    }
    bloopcl_device_info ours;
    bloopcl_status status = bloopcl__select_device_noting(spec, &ours, message, message_size,
                                                          NULL, 0);
    if (status == BLOOPCL_OK)  /* the caller's struct may be of another version */
        status = bloopcl__write_device_info(selected, &ours, message, message_size);
    return status;
}
