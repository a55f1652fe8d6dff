/* tool_json.h — the one JSON writer of the tools. Values are written as they come (a long
 * check streams its cases); the writer puts the commas, escapes strings (control characters,
 * quotes, backslashes; bytes that are not UTF-8 become U+FFFD) and writes NaN and Inf as null,
 * so every document is strict JSON (RFC 8259). A document begins with its "schema" (the tool's
 * name and schema version, "bloopcl-bench/1": the number grows when a field changes meaning or
 * goes), the tool and the library that made it; the tool adds the device and its results. */
#ifndef BLOOPCL_TOOL_JSON_H
#define BLOOPCL_TOOL_JSON_H

#include "bloopcl.h"
#include "tool_cli.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define TOOL_JSON_MAX_DEPTH 16

typedef struct tool_json {
    FILE *out;
    unsigned depth;                        /* open objects and arrays */
    bool in_array[TOOL_JSON_MAX_DEPTH];    /* the container at each depth */
    bool has_items[TOOL_JSON_MAX_DEPTH];   /* a comma goes before the next item */
} tool_json;

void tool_json_init(tool_json *json, FILE *out);

/* Every writer takes the member's key inside an object and NULL inside an array. */
void tool_json_object_begin(tool_json *json, const char *key);
void tool_json_object_end(tool_json *json);
void tool_json_array_begin(tool_json *json, const char *key);
void tool_json_array_end(tool_json *json);
void tool_json_string(tool_json *json, const char *key, const char *value);  /* NULL: null */
void tool_json_number(tool_json *json, const char *key, double value);       /* NaN, Inf: null */
void tool_json_integer(tool_json *json, const char *key, long long value);
void tool_json_unsigned(tool_json *json, const char *key, uint64_t value);
void tool_json_bool(tool_json *json, const char *key, bool value);
void tool_json_null(tool_json *json, const char *key);

/* Opens the document's object and writes "schema", "tool" {name, version} and "library"
 * {version, version_number, header_version}; the caller adds the rest. */
void tool_json_document_begin(tool_json *json, const tool_spec *spec);
/* Closes every open container, ends the line and flushes. */
void tool_json_document_end(tool_json *json);

/* A device's identity: index (as --device N takes it), platform, vendor, name, type, driver,
 * OpenCL C version, fp64, fp16, memory and compute units. */
void tool_json_device(tool_json *json, const char *key, const bloopcl_device_info *info);

#endif
