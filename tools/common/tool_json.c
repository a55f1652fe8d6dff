/* tool_json.c — see tool_json.h. */
#include "tool_json.h"
#include "tool_device.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef BLOOPCL_TOOLS_VERSION
#error "BLOOPCL_TOOLS_VERSION must be defined by the build (tools/meson.build)"
#endif

void tool_json_init(tool_json *json, FILE *out)
{
    memset(json, 0, sizeof *json);
    json->out = out;
}

/* The bytes of a valid UTF-8 sequence at p (1 to 4), or 0 if p does not start one. */
static size_t utf8_length(const unsigned char *p)
{
    size_t length = p[0] < 0x80 ? 1 : p[0] >= 0xC2 && p[0] <= 0xDF ? 2
                  : p[0] >= 0xE0 && p[0] <= 0xEF ? 3 : p[0] >= 0xF0 && p[0] <= 0xF4 ? 4 : 0;
    for (size_t i = 1; i < length; ++i)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    /* Overlong forms, surrogates and code points above U+10FFFF are not UTF-8. */
    if ((length == 3 && p[0] == 0xE0 && p[1] < 0xA0) ||
        (length == 3 && p[0] == 0xED && p[1] >= 0xA0) ||
        (length == 4 && p[0] == 0xF0 && p[1] < 0x90) ||
        (length == 4 && p[0] == 0xF4 && p[1] >= 0x90))
        return 0;
    return length;
}

static void write_string(FILE *out, const char *text)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)text; *p != '\0';) {
        size_t length = utf8_length(p);
        if (length == 0) {
            fputs("\\ufffd", out);
            ++p;
        } else if (*p == '"' || *p == '\\') {
            fprintf(out, "\\%c", *p++);
        } else if (*p < 0x20) {
            fprintf(out, "\\u%04x", *p++);
        } else {
            fwrite(p, 1, length, out);
            p += length;
        }
    }
    fputc('"', out);
}

/* The comma, the line break of an array item or of a member of the document object, and the
 * key. */
static void begin_item(tool_json *json, const char *key)
{
    unsigned depth = json->depth;
    if (depth > 0) {
        if (json->has_items[depth - 1])
            fputc(',', json->out);
        json->has_items[depth - 1] = true;
        if (json->in_array[depth - 1] || depth == 1)
            fprintf(json->out, "\n%*s", (int)(2 * depth), "");
    }
    if (key != NULL && depth > 0 && !json->in_array[depth - 1]) {
        write_string(json->out, key);
        fputc(':', json->out);
    }
}

static void open_container(tool_json *json, const char *key, bool array)
{
    begin_item(json, key);
    fputc(array ? '[' : '{', json->out);
    if (json->depth < TOOL_JSON_MAX_DEPTH) {
        json->in_array[json->depth] = array;
        json->has_items[json->depth] = false;
    }
    json->depth++;
}

static void close_container(tool_json *json, bool array)
{
    if (json->depth == 0)
        return;
    json->depth--;
    bool broke = json->depth < TOOL_JSON_MAX_DEPTH && json->has_items[json->depth] &&
                 (json->in_array[json->depth] || json->depth == 0);
    if (broke)
        fprintf(json->out, "\n%*s", (int)(2 * json->depth), "");
    fputc(array ? ']' : '}', json->out);
}

void tool_json_object_begin(tool_json *json, const char *key)
{
    open_container(json, key, false);
}

void tool_json_object_end(tool_json *json)
{
    close_container(json, false);
}

void tool_json_array_begin(tool_json *json, const char *key)
{
    open_container(json, key, true);
}

void tool_json_array_end(tool_json *json)
{
    close_container(json, true);
}

void tool_json_string(tool_json *json, const char *key, const char *value)
{
    begin_item(json, key);
    if (value == NULL)
        fputs("null", json->out);
    else
        write_string(json->out, value);
}

/* The shortest of %.15g and %.17g that reads back as the same double. */
void tool_json_number(tool_json *json, const char *key, double value)
{
    begin_item(json, key);
    if (!isfinite(value)) {
        fputs("null", json->out);
        return;
    }
    char text[32];
    snprintf(text, sizeof text, "%.15g", value);
    if (strtod(text, NULL) != value)
        snprintf(text, sizeof text, "%.17g", value);
    fputs(text, json->out);
}

void tool_json_integer(tool_json *json, const char *key, long long value)
{
    begin_item(json, key);
    fprintf(json->out, "%lld", value);
}

void tool_json_unsigned(tool_json *json, const char *key, uint64_t value)
{
    begin_item(json, key);
    fprintf(json->out, "%" PRIu64, value);
}

void tool_json_bool(tool_json *json, const char *key, bool value)
{
    begin_item(json, key);
    fputs(value ? "true" : "false", json->out);
}

void tool_json_null(tool_json *json, const char *key)
{
    begin_item(json, key);
    fputs("null", json->out);
}

void tool_json_document_begin(tool_json *json, const tool_spec *spec)
{
    tool_json_object_begin(json, NULL);
    tool_json_string(json, "schema", spec->schema);
    tool_json_object_begin(json, "tool");
    tool_json_string(json, "name", spec->name);
    tool_json_string(json, "version", BLOOPCL_TOOLS_VERSION);
    tool_json_object_end(json);
    tool_json_object_begin(json, "library");
    tool_json_string(json, "version", bloopcl_version_string());
    tool_json_unsigned(json, "version_number", bloopcl_version_number());
    tool_json_string(json, "header_version", BLOOPCL_VERSION_STRING);
    tool_json_object_end(json);
}

void tool_json_document_end(tool_json *json)
{
    while (json->depth > 0)
        close_container(json, json->depth <= TOOL_JSON_MAX_DEPTH && json->in_array[json->depth - 1]);
    fputc('\n', json->out);
    fflush(json->out);
}

void tool_json_device(tool_json *json, const char *key, const bloopcl_device_info *info)
{
    tool_json_object_begin(json, key);
    tool_json_unsigned(json, "index", info->flat_index);
    tool_json_string(json, "platform", info->platform_name);
    tool_json_string(json, "vendor", info->platform_vendor);
    tool_json_string(json, "name", info->device_name);
    tool_json_string(json, "type", tool_device_type_name(info->type));
    tool_json_string(json, "driver", info->driver_version);
    tool_json_string(json, "opencl_c", info->opencl_c_version);
    tool_json_bool(json, "fp64", info->has_fp64 != 0);
    tool_json_bool(json, "fp16", info->has_fp16 != 0);
    tool_json_unsigned(json, "global_mem_bytes", info->global_mem_bytes);
    tool_json_unsigned(json, "compute_units", info->compute_units);
    tool_json_object_end(json);
}
