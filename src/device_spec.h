/* device_spec.h — the device-spec grammar (bloopcl.h, "Devices") as a pure parser: text in,
 * a parsed spec or a reason out. No OpenCL, no environment, no allocation, so that matching,
 * the unit tests and the fuzz target (tests/fuzz/fuzz_device_spec.c) share one parser. */
#ifndef BLOOPCL_DEVICE_SPEC_H
#define BLOOPCL_DEVICE_SPEC_H

#include "internal.h"

#include <stddef.h>

/* The forms, as messages name them. */
#define BLOOPCL_SPEC_FORMS "gpu|cpu|acc[:K], P:D or N"
/* Room a caller gives the parser's reason (longer reasons are cut, never overrun). */
#define BLOOPCL_SPEC_WHY_CAPACITY 512

/* A piece of the caller's spec: not NUL-terminated on its own, always printed with %.*s or
 * through bloopcl__quote. */
typedef struct bloopcl_text_span {
    const char *start;
    size_t length;
} bloopcl_text_span;

typedef enum bloopcl_spec_kind {
    BLOOPCL_SPEC_DEFAULT, /* unset or blank */
    BLOOPCL_SPEC_TYPE,    /* gpu, cpu, acc, with an optional rank */
    BLOOPCL_SPEC_PAIR,    /* P:D */
    BLOOPCL_SPEC_FLAT     /* N */
} bloopcl_spec_kind;

typedef struct bloopcl_device_spec {
    bloopcl_spec_kind kind;
    cl_device_type type;        /* TYPE: GPU, CPU or ACCELERATOR */
    unsigned rank;              /* TYPE: 0 for "gpu" and "gpu:" */
    bloopcl_text_span platform; /* PAIR: trimmed, inside the text; empty matches anything */
    bloopcl_text_span device;   /* PAIR: trimmed, inside the text; empty matches anything */
    unsigned flat_index;        /* FLAT */
} bloopcl_device_spec;

/* Parses `length` bytes of `text` (blanks around the spec and its fields are ignored; a NUL
 * byte is an ordinary, non-matching character). BLOOPCL_OK, or BLOOPCL_ERR_DEVICE_SPEC with
 * the reason in `why` (escaped: no control characters). `out->kind` is set either way (to the
 * form the text was read as). */
bloopcl_status bloopcl__parse_device_spec(const char *text, size_t length,
                                          bloopcl_device_spec *out, char *why, size_t why_size);

/* 1 when the span is one or more ASCII digits (an index rather than a substring). */
int bloopcl__span_is_digits(bloopcl_text_span span);
/* The span's decimal value; 0 when it does not fit an unsigned (an error, never a wrap). */
int bloopcl__span_to_index(bloopcl_text_span digits, unsigned *value);

/* 1 when `needle` is an ASCII case-insensitive substring of `haystack` (a field's match
 * against a platform or device name); an empty needle is found in everything. */
int bloopcl__span_found_in(const char *haystack, bloopcl_text_span needle);

#endif /* BLOOPCL_DEVICE_SPEC_H */
