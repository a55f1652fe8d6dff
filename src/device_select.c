/* device_select.c — matching a device spec (device_spec.c parses it) against the devices.
 *
 * Matching is a pure function of the parsed spec and an enumerated list, so the tests can
 * feed synthetic multi-vendor lists; only bloopcl_select_device touches OpenCL (through
 * device_list.c) and the environment. Every failure is a status plus a message that names
 * where the spec came from (device_spec or BLOOPCL_DEVICE), quotes it escaped, says why and
 * lists the devices: a wrong spec must never silently fall back to another device. */
#include "device_spec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NO_DEVICE_HINT "no OpenCL device found (is an ICD such as PoCL installed? see OCL_ICD_VENDORS)"
#define WHY_CAPACITY BLOOPCL_SPEC_WHY_CAPACITY

typedef bloopcl_text_span text_span;
typedef bloopcl_device_spec parsed_spec;

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
    if (bloopcl__span_is_digits(field)) {
        unsigned wanted = 0;
        return bloopcl__span_to_index(field, &wanted) && wanted == index;
    }
    return bloopcl__span_found_in(name, field) ||
           (vendor != NULL && bloopcl__span_found_in(vendor, field));
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

/* A field's description fits twice in a reason, with the words around them. */
#define FIELD_DESCRIPTION ((WHY_CAPACITY - 64) / 2)

/* "\"amd\" (index or part of ...)" for a given field, "(any)" for an empty one. */
static void describe_field(text_span field, const char *what, char *out, size_t size)
{
    char quoted[FIELD_DESCRIPTION - 32];
    bloopcl__quote(quoted, sizeof quoted, field.start, field.length);
    if (field.length == 0)
        bloopcl__format(out, size, "(any)");
    else
        bloopcl__format(out, size, "%s (index or part of %s)", quoted, what);
}

static void explain_pair_miss(const parsed_spec *spec, char *why)
{
    char platform[FIELD_DESCRIPTION];
    char device[FIELD_DESCRIPTION];
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
    case BLOOPCL_SPEC_DEFAULT:
        found = find_default(devices, count);
        if (found == SIZE_MAX)
            bloopcl__format(why, WHY_CAPACITY, "%s", NO_DEVICE_HINT);
        break;
    case BLOOPCL_SPEC_TYPE:
        found = find_first_of_type(devices, count, spec->type, spec->rank);
        if (found == SIZE_MAX)
            explain_type_miss(devices, count, spec, why);
        break;
    case BLOOPCL_SPEC_PAIR:
        found = find_pair(devices, count, spec);
        if (found == SIZE_MAX)
            explain_pair_miss(spec, why);
        break;
    case BLOOPCL_SPEC_FLAT:
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

/* Room for the quoted spec at the head of a message: long specs are cut, and say so. */
#define QUOTED_SPEC 512

/* "<source>="<spec>": <why>; devices found:" and the list, the spec escaped. With no device
 * at all the list would be empty, so the hint about installing an ICD replaces it. */
static void write_failure(char *message, size_t size, const char *spec, const char *source,
                          bloopcl_spec_kind kind, bloopcl_status status, const char *why,
                          const bloopcl_device_info *devices, size_t count)
{
    if (message == NULL || size == 0)
        return;
    char quoted[QUOTED_SPEC];
    bloopcl__quote(quoted, sizeof quoted, spec, strlen(spec));
    if (count == 0 && status == BLOOPCL_ERR_DEVICE_NOT_FOUND && kind == BLOOPCL_SPEC_DEFAULT)
        bloopcl__format(message, size, "%s", NO_DEVICE_HINT);
    else if (count == 0 && status == BLOOPCL_ERR_DEVICE_NOT_FOUND)
        bloopcl__format(message, size, "%s=%s: %s", source, quoted, NO_DEVICE_HINT);
    else if (count == 0)
        bloopcl__format(message, size, "%s=%s: %s; %s", source, quoted, why, NO_DEVICE_HINT);
    else {
        bloopcl__format(message, size, "%s=%s: %s; devices found:", source, quoted, why);
        bloopcl__append_device_list(message, size, devices, count);
    }
}

static void clear_message(char *message, size_t size)
{
    if (message != NULL && size > 0)
        message[0] = '\0';
}

bloopcl_status bloopcl__match_device_spec(const bloopcl_device_info *devices, size_t count,
                                          const char *spec, const char *source,
                                          size_t *selected, char *message, size_t message_size)
{
    clear_message(message, message_size);
    if (selected == NULL || (devices == NULL && count > 0)) {
        bloopcl__format(message, message_size, "%s is NULL",
                        selected == NULL ? "selected" : "devices");
        return BLOOPCL_ERR_NULL_ARGUMENT;
    }
    if (spec == NULL)
        spec = "";
    if (source == NULL)
        source = "device_spec";
    char why[WHY_CAPACITY] = "";
    parsed_spec parsed;
    bloopcl_status status = bloopcl__parse_device_spec(spec, strlen(spec), &parsed, why,
                                                       sizeof why);
    if (status == BLOOPCL_OK) {
        size_t found = find_device(devices, count, &parsed, why);
        if (found != SIZE_MAX) {
            *selected = found;
            return BLOOPCL_OK;
        }
        status = BLOOPCL_ERR_DEVICE_NOT_FOUND;
    }
    write_failure(message, message_size, spec, source, parsed.kind, status, why, devices, count);
    return status;
}

/* "...; left out of the list: <notes>": a device the caller expected may be among them. */
static void append_skipped(char *message, size_t size, const char *skipped)
{
    if (message == NULL || size == 0 || skipped[0] == '\0')
        return;
    size_t used = bounded_length(message, size);
    bloopcl__format(message + used, size - used, "\n  left out of the list: %s", skipped);
}

bloopcl_status bloopcl__select_device_noting(const char *spec, const char *environment_spec,
                                             bloopcl_device_info *selected,
                                             char *message, size_t message_size,
                                             char *skipped, size_t skipped_size)
{
    clear_message(message, message_size);
    clear_message(skipped, skipped_size);
    if (selected == NULL) {
        bloopcl__format(message, message_size, "selected is NULL");
        return BLOOPCL_ERR_NULL_ARGUMENT;
    }
    /* An explicit spec wins over the environment, even an empty one ("" = the default); the
     * message names the one that was used. */
    const char *source = "device_spec";
    if (spec == NULL) {
        spec = environment_spec;
        source = "BLOOPCL_DEVICE";
    }

    bloopcl_device_info *devices = NULL;
    size_t count = 0;
    char notes[WHY_CAPACITY * 4] = "";
    bloopcl_status status = bloopcl__enumerate_devices(&devices, &count, notes, sizeof notes);
    if (status != BLOOPCL_OK) {
        bloopcl__format(message, message_size, "listing the OpenCL devices failed: %s",
                        bloopcl_status_string(status));
        return status;
    }
    bloopcl__format(skipped, skipped_size, "%s", notes);
    size_t index = 0;
    status = bloopcl__match_device_spec(devices, count, spec, source, &index, message,
                                        message_size);
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
    bloopcl_environment env;  /* a NULL spec means BLOOPCL_DEVICE, read now */
    if (!bloopcl__environment_read(&env)) {
        bloopcl__format(message, message_size, "copying the environment: out of memory");
        return BLOOPCL_ERR_OUT_OF_MEMORY;
    }
    bloopcl_device_info ours;
    bloopcl_status status = bloopcl__select_device_noting(spec, env.device, &ours, message,
                                                          message_size, NULL, 0);
    bloopcl__environment_free(&env);
    if (status == BLOOPCL_OK)  /* the caller's struct may be of another version */
        status = bloopcl__write_device_info(selected, &ours, message, message_size);
    return status;
}
