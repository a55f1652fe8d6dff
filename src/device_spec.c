/* device_spec.c — the device-spec grammar (bloopcl.h, "Devices"), parsed without OpenCL.
 *
 *   spec    = blank* [ type [":" rank?] | field ":" field | digits ] blank*
 *   type    = "gpu" | "cpu" | "acc" | "accelerator"        (ASCII, case-insensitive)
 *   field   = digits (an index) | any text without ':' (a substring) | empty (anything)
 * Every reason quotes the caller's text through bloopcl__quote, so it carries no control
 * characters whatever the spec holds. */
#include "device_spec.h"

#include <limits.h>
#include <string.h>

/* ASCII-only helpers: the grammar is ASCII and must not depend on the process locale. */
static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static char ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static bloopcl_text_span span_trim(bloopcl_text_span span)
{
    while (span.length > 0 && is_blank(span.start[0])) {
        span.start++;
        span.length--;
    }
    while (span.length > 0 && is_blank(span.start[span.length - 1]))
        span.length--;
    return span;
}

static int span_equals_ci(bloopcl_text_span span, const char *word)
{
    size_t length = strlen(word);
    if (span.length != length)
        return 0;
    for (size_t i = 0; i < length; i++)
        if (ascii_lower(span.start[i]) != ascii_lower(word[i]))
            return 0;
    return 1;
}

int bloopcl__span_is_digits(bloopcl_text_span span)
{
    if (span.length == 0)
        return 0;
    for (size_t i = 0; i < span.length; i++)
        if (span.start[i] < '0' || span.start[i] > '9')
            return 0;
    return 1;
}

int bloopcl__span_to_index(bloopcl_text_span digits, unsigned *value)
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

int bloopcl__span_found_in(const char *haystack, bloopcl_text_span needle)
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
static int keyword_type(bloopcl_text_span word, cl_device_type *type)
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

/* Where the reason goes. */
typedef struct reason {
    char *text;
    size_t size;
} reason;

/* A quoted field fits a reason with its explanation around it. */
#define QUOTED_FIELD 160

static bloopcl_status parse_number_field(bloopcl_text_span field, unsigned *value, reason why)
{
    if (!bloopcl__span_to_index(field, value)) {
        char quoted[QUOTED_FIELD];
        bloopcl__quote(quoted, sizeof quoted, field.start, field.length);
        bloopcl__format(why.text, why.size, "index %s is too large", quoted);
        return BLOOPCL_ERR_DEVICE_SPEC;
    }
    return BLOOPCL_OK;
}

static bloopcl_status parse_type_form(bloopcl_text_span rank, int has_colon,
                                      bloopcl_device_spec *out, reason why)
{
    out->kind = BLOOPCL_SPEC_TYPE;
    out->rank = 0;
    /* "gpu:" is accepted as "gpu:0", like an empty P:D field means "the first". */
    if (!has_colon || rank.length == 0)
        return BLOOPCL_OK;
    if (!bloopcl__span_is_digits(rank)) {
        char quoted[QUOTED_FIELD];
        bloopcl__quote(quoted, sizeof quoted, rank.start, rank.length);
        bloopcl__format(why.text, why.size,
                        "rank %s after the device type is not a decimal number", quoted);
        return BLOOPCL_ERR_DEVICE_SPEC;
    }
    return parse_number_field(rank, &out->rank, why);
}

static bloopcl_status parse_bare_form(bloopcl_text_span word, bloopcl_device_spec *out,
                                      reason why)
{
    if (bloopcl__span_is_digits(word)) {
        out->kind = BLOOPCL_SPEC_FLAT;
        return parse_number_field(word, &out->flat_index, why);
    }
    /* A lone word is not in the grammar; guessing whether it names a platform or a device
     * would make typos select something unexpected, so say how to write either (repeating
     * the escaped word, unless it was too long to quote whole). */
    char quoted[QUOTED_FIELD];
    bloopcl__quote(quoted, sizeof quoted, word.start, word.length);
    size_t quoted_length = strlen(quoted);
    if (quoted_length >= 2 && quoted[quoted_length - 1] == '"')
        bloopcl__format(why.text, why.size,
                        "%s is not one of " BLOOPCL_SPEC_FORMS
                        " (write \"%.*s:\" for a platform or \":%.*s\" for a device)",
                        quoted, (int)(quoted_length - 2), quoted + 1, (int)(quoted_length - 2),
                        quoted + 1);
    else
        bloopcl__format(why.text, why.size,
                        "%s is not one of " BLOOPCL_SPEC_FORMS
                        " (a ':' after a platform's name, or before a device's)", quoted);
    return BLOOPCL_ERR_DEVICE_SPEC;
}

static bloopcl_status parse_pair_field(bloopcl_text_span field, reason why)
{
    unsigned ignored;
    if (!bloopcl__span_is_digits(field))
        return BLOOPCL_OK; /* a substring (or empty: anything) */
    return parse_number_field(field, &ignored, why);
}

bloopcl_status bloopcl__parse_device_spec(const char *text, size_t length,
                                          bloopcl_device_spec *out, char *why_text,
                                          size_t why_size)
{
    reason why = {why_text, why_size};
    if (why_text != NULL && why_size > 0)
        why_text[0] = '\0';
    memset(out, 0, sizeof *out);
    bloopcl_text_span spec = span_trim((bloopcl_text_span){text, length});
    if (spec.length == 0) {
        out->kind = BLOOPCL_SPEC_DEFAULT;
        return BLOOPCL_OK;
    }
    const char *colon = memchr(spec.start, ':', spec.length);
    size_t head_length = colon != NULL ? (size_t)(colon - spec.start) : spec.length;
    bloopcl_text_span head = span_trim((bloopcl_text_span){spec.start, head_length});
    bloopcl_text_span tail = {spec.start + spec.length, 0};
    if (colon != NULL) {
        size_t rest = spec.length - head_length - 1;
        tail = span_trim((bloopcl_text_span){colon + 1, rest});
        if (memchr(colon + 1, ':', rest) != NULL) {
            out->kind = BLOOPCL_SPEC_PAIR;
            bloopcl__format(why.text, why.size,
                            "more than one ':' (expected " BLOOPCL_SPEC_FORMS ")");
            return BLOOPCL_ERR_DEVICE_SPEC;
        }
    }
    if (keyword_type(head, &out->type))
        return parse_type_form(tail, colon != NULL, out, why);
    if (colon == NULL)
        return parse_bare_form(head, out, why);

    out->kind = BLOOPCL_SPEC_PAIR;
    out->platform = head;
    out->device = tail;
    bloopcl_status status = parse_pair_field(head, why);
    if (status == BLOOPCL_OK)
        status = parse_pair_field(tail, why);
    return status;
}
