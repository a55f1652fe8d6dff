/* device_list.c — enumeration of OpenCL platforms and devices into bloopcl_device_info.
 *
 * Enumeration is serialised process-wide. PoCL 3.1 sets its devices up on the process's first
 * clGetPlatformIDs/clGetDeviceIDs without a lock of its own: threads that create their first
 * contexts at once saw no platform, no device (then "no OpenCL device found") or a device still
 * being set up (a crash inside clGetDeviceInfo), 100 of 100 processes with 8 threads. Under
 * one lock the first listing of the process sets the driver up alone and every later listing
 * finds it ready. The lists are not kept between calls: each listing asks the drivers again,
 * so a driver that fails or recovers is seen as it is now (the tests inject both).
 * A listing that finds no device at all is taken again once, a moment later (still under the
 * lock), because the empty answer is what a racing first enumeration elsewhere in the process
 * (code that calls OpenCL without bloopcl) looks like; when it stays empty, the notes say how
 * many platforms answered with no device, so "no device" is never a silent guess. */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The ICD loader's "no platform at all" code (cl_khr_icd); ocl-icd returns it when no vendor
 * file is installed. Defined here so that cl_ext.h is not needed for one constant. */
#ifndef CL_PLATFORM_NOT_FOUND_KHR
#define CL_PLATFORM_NOT_FOUND_KHR -1001
#endif

const char *bloopcl__device_type_name(cl_device_type type)
{
    /* A device may report several bits (e.g. GPU | DEFAULT); the most specific one names it, in
     * the same order the selector prefers them. */
    if (type & CL_DEVICE_TYPE_GPU)
        return "GPU";
    if (type & CL_DEVICE_TYPE_ACCELERATOR)
        return "ACCELERATOR";
    if (type & CL_DEVICE_TYPE_CPU)
        return "CPU";
    if (type & CL_DEVICE_TYPE_CUSTOM)
        return "CUSTOM";
    if (type & CL_DEVICE_TYPE_DEFAULT)
        return "DEFAULT";
    return "OTHER";
}

/* Some drivers pad names with spaces (older Intel CPU runtimes); trimmed names print and match
 * cleanly. */
static void trim_in_place(char *text)
{
    size_t start = 0;
    size_t length = strlen(text);
    while (length > 0 && (text[length - 1] == ' ' || text[length - 1] == '\t' ||
                          text[length - 1] == '\n' || text[length - 1] == '\r'))
        text[--length] = '\0';
    while (text[start] == ' ' || text[start] == '\t')
        start++;
    if (start > 0)
        memmove(text, text + start, length - start + 1);
}

/* Copies a string property into its fixed-size field, truncating if needed. Callers query the
 * size first and read into a heap buffer because clGet*Info fails (rather than truncates) when
 * the destination is too small, and names are not bounded by the spec. */
static void copy_info_string(const char *raw, char *out, size_t out_size)
{
    size_t length = strlen(raw);
    if (length >= out_size)
        length = out_size - 1;
    memcpy(out, raw, length);
    out[length] = '\0';
    trim_in_place(out);
}

/* Which query failed while describing a device, and with which code. */
typedef struct query_failure {
    const char *query;
    cl_int code;
} query_failure;

static bloopcl_status query_failed(query_failure *failure, const char *query, cl_int code)
{
    failure->query = query;
    failure->code = code;
    return BLOOPCL_ERR_OPENCL;
}

static bloopcl_status platform_string(cl_platform_id platform, cl_platform_info param,
                                      const char *query, char *out, size_t out_size,
                                      query_failure *failure)
{
    size_t size = 0;
    cl_int err = clGetPlatformInfo(platform, param, 0, NULL, &size);
    if (err != CL_SUCCESS)
        return query_failed(failure, query, err);
    char *raw = malloc(size + 1);
    if (raw == NULL)
        return BLOOPCL_ERR_OUT_OF_MEMORY;
    raw[size] = '\0';
    err = clGetPlatformInfo(platform, param, size, raw, NULL);
    if (err == CL_SUCCESS)
        copy_info_string(raw, out, out_size);
    free(raw);
    return err == CL_SUCCESS ? BLOOPCL_OK : query_failed(failure, query, err);
}

/* Returns the device string in a fresh allocation (the caller frees it), or NULL with *status
 * set. Used directly for the extension list, whose length is unbounded. */
static char *device_string_alloc(cl_device_id device, cl_device_info param, const char *query,
                                 bloopcl_status *status, query_failure *failure)
{
    size_t size = 0;
    cl_int err = clGetDeviceInfo(device, param, 0, NULL, &size);
    if (err != CL_SUCCESS) {
        *status = query_failed(failure, query, err);
        return NULL;
    }
    char *raw = malloc(size + 1);
    if (raw == NULL) {
        *status = BLOOPCL_ERR_OUT_OF_MEMORY;
        return NULL;
    }
    raw[size] = '\0';
    err = clGetDeviceInfo(device, param, size, raw, NULL);
    if (err != CL_SUCCESS) {
        free(raw);
        *status = query_failed(failure, query, err);
        return NULL;
    }
    *status = BLOOPCL_OK;
    return raw;
}

static bloopcl_status device_string(cl_device_id device, cl_device_info param, const char *query,
                                    char *out, size_t out_size, query_failure *failure)
{
    bloopcl_status status;
    char *raw = device_string_alloc(device, param, query, &status, failure);
    if (raw == NULL)
        return status;
    copy_info_string(raw, out, out_size);
    free(raw);
    return BLOOPCL_OK;
}

/* Exact token match: "cl_khr_fp64" must not be found inside e.g. "cl_khr_fp64_extended". */
static int has_extension(const char *extensions, const char *name)
{
    size_t name_length = strlen(name);
    const char *p = extensions;
    while (*p != '\0') {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *end = p;
        while (*end != '\0' && *end != ' ' && *end != '\t')
            end++;
        if ((size_t)(end - p) == name_length && memcmp(p, name, name_length) == 0)
            return 1;
        p = end;
    }
    return 0;
}

#define PLATFORM_STRING(param, field) \
    platform_string(platform, param, "clGetPlatformInfo(" #param ")", info->field, \
                    sizeof info->field, failure)
#define DEVICE_STRING(param, field) \
    device_string(device, param, "clGetDeviceInfo(" #param ")", info->field, sizeof info->field, \
                  failure)

static bloopcl_status describe_strings(cl_platform_id platform, cl_device_id device,
                                       bloopcl_device_info *info, query_failure *failure)
{
    bloopcl_status status = PLATFORM_STRING(CL_PLATFORM_NAME, platform_name);
    if (status == BLOOPCL_OK)
        status = PLATFORM_STRING(CL_PLATFORM_VENDOR, platform_vendor);
    if (status == BLOOPCL_OK)
        status = DEVICE_STRING(CL_DEVICE_NAME, device_name);
    if (status == BLOOPCL_OK)
        status = DEVICE_STRING(CL_DRIVER_VERSION, driver_version);
    if (status == BLOOPCL_OK)
        status = DEVICE_STRING(CL_DEVICE_OPENCL_C_VERSION, opencl_c_version);
    return status;
}

#define DEVICE_NUMBER(param, field)                                                             \
    do {                                                                                       \
        cl_int err = clGetDeviceInfo(device, param, sizeof info->field, &info->field, NULL);  \
        if (err != CL_SUCCESS)                                                                 \
            return query_failed(failure, "clGetDeviceInfo(" #param ")", err);                  \
    } while (0)

static bloopcl_status describe_numbers(cl_device_id device, bloopcl_device_info *info,
                                       query_failure *failure)
{
    DEVICE_NUMBER(CL_DEVICE_TYPE, type);
    DEVICE_NUMBER(CL_DEVICE_GLOBAL_MEM_SIZE, global_mem_bytes);
    DEVICE_NUMBER(CL_DEVICE_MAX_MEM_ALLOC_SIZE, max_alloc_bytes);
    DEVICE_NUMBER(CL_DEVICE_MAX_COMPUTE_UNITS, compute_units);
    return BLOOPCL_OK;
}

static bloopcl_status describe_precisions(cl_device_id device, bloopcl_device_info *info,
                                          query_failure *failure)
{
    bloopcl_status status;
    char *extensions = device_string_alloc(device, CL_DEVICE_EXTENSIONS,
                                           "clGetDeviceInfo(CL_DEVICE_EXTENSIONS)", &status,
                                           failure);
    if (extensions == NULL)
        return status;
    info->has_fp64 = has_extension(extensions, "cl_khr_fp64");
    info->has_fp16 = has_extension(extensions, "cl_khr_fp16");
    free(extensions);

    /* OpenCL 1.2 made fp64 core-optional: a device may support it without listing the
     * extension. Before 1.2 the query was itself optional, so a failure just means "no". */
    cl_device_fp_config fp64 = 0;
    if (clGetDeviceInfo(device, CL_DEVICE_DOUBLE_FP_CONFIG, sizeof fp64, &fp64, NULL) ==
            CL_SUCCESS &&
        fp64 != 0)
        info->has_fp64 = 1;
    return BLOOPCL_OK;
}

static bloopcl_status describe_device_noting(cl_platform_id platform, cl_device_id device,
                                             bloopcl_device_info *info, query_failure *failure)
{
    memset(info, 0, sizeof *info);
    info->platform = platform;
    info->device = device;
    bloopcl_status status = describe_strings(platform, device, info, failure);
    if (status == BLOOPCL_OK)
        status = describe_numbers(device, info, failure);
    if (status == BLOOPCL_OK)
        status = describe_precisions(device, info, failure);
    return status;
}

bloopcl_status bloopcl__describe_device(cl_platform_id platform, cl_device_id device,
                                        bloopcl_device_info *info)
{
    if (info == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    query_failure ignored;
    return describe_device_noting(platform, device, info, &ignored);
}

/* Fetches the platform list; *platforms is NULL when there are none (not an error). */
static bloopcl_status get_platforms(cl_platform_id **platforms, cl_uint *num_platforms)
{
    *platforms = NULL;
    *num_platforms = 0;
    cl_uint n = 0;
    cl_int err = clGetPlatformIDs(0, NULL, &n);
    if (err == CL_PLATFORM_NOT_FOUND_KHR || (err == CL_SUCCESS && n == 0))
        return BLOOPCL_OK;
    if (err != CL_SUCCESS)
        return BLOOPCL_ERR_OPENCL;
    cl_platform_id *list = malloc(n * sizeof *list);
    if (list == NULL)
        return BLOOPCL_ERR_OUT_OF_MEMORY;
    cl_uint returned = 0;
    err = clGetPlatformIDs(n, list, &returned);
    if (err != CL_SUCCESS) {
        free(list);
        return BLOOPCL_ERR_OPENCL;
    }
    *platforms = list;
    *num_platforms = returned < n ? returned : n;
    return BLOOPCL_OK;
}

/* Appends one note to the skipped-entries text ("; " between notes; NULL: not wanted). A
 * note that does not fit whole is not cut: "; ..." says that more were left out. */
static void note_skipped(char *skipped, size_t size, const char *note)
{
    if (skipped == NULL || size == 0)
        return;
    size_t used = strlen(skipped);
    const char *separator = used > 0 ? "; " : "";
    if (used >= 3 && strcmp(skipped + used - 3, "...") == 0)
        return; /* already full */
    if (used + strlen(separator) + strlen(note) < size)
        bloopcl__format(skipped + used, size - used, "%s%s", separator, note);
    else if (used + strlen(separator) + 3 < size)
        bloopcl__format(skipped + used, size - used, "%s...", separator);
}

/* Fetches one platform's devices; a platform that advertises none (rusticl without
 * RUSTICL_ENABLE, a GPU driver with no GPU) yields *devices NULL and is simply skipped.
 * Any other failure is returned in *err (the caller skips the platform and notes why). */
static bloopcl_status get_devices(cl_platform_id platform, cl_device_id **devices,
                                  cl_uint *num_devices, cl_int *err)
{
    *devices = NULL;
    *num_devices = 0;
    cl_uint n = 0;
    *err = clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 0, NULL, &n);
    if (*err == CL_DEVICE_NOT_FOUND || (*err == CL_SUCCESS && n == 0)) {
        *err = CL_SUCCESS;
        return BLOOPCL_OK;
    }
    if (*err != CL_SUCCESS)
        return BLOOPCL_ERR_OPENCL;
    cl_device_id *list = malloc(n * sizeof *list);
    if (list == NULL)
        return BLOOPCL_ERR_OUT_OF_MEMORY;
    cl_uint returned = 0;
    *err = clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, n, list, &returned);
    if (*err != CL_SUCCESS) {
        free(list);
        if (*err != CL_DEVICE_NOT_FOUND)
            return BLOOPCL_ERR_OPENCL;
        *err = CL_SUCCESS;
        return BLOOPCL_OK;
    }
    *devices = list;
    *num_devices = returned < n ? returned : n;
    return BLOOPCL_OK;
}

/* Where a listing is being written, and what was left out of it. A growable listing
 * (bloopcl__enumerate_devices) owns `out` and enlarges it as devices are found. */
typedef struct listing {
    bloopcl_device_info *out;
    size_t capacity;
    size_t total;
    bool growable;
    cl_uint empty_platforms; /* platforms that answered with no device */
    char *skipped;
    size_t skipped_size;
} listing;

/* Keeps one described device: in place while the caller's capacity lasts (the total still
 * counts the rest); a growable listing doubles its array instead. */
static bloopcl_status store_device(listing *list, const bloopcl_device_info *info)
{
    if (list->growable && list->total == list->capacity) {
        size_t capacity = list->capacity > 0 ? 2 * list->capacity : 8;
        bloopcl_device_info *grown = realloc(list->out, capacity * sizeof *grown);
        if (grown == NULL)
            return BLOOPCL_ERR_OUT_OF_MEMORY;
        list->out = grown;
        list->capacity = capacity;
    }
    if (list->total < list->capacity)
        list->out[list->total] = *info;
    list->total++;
    return BLOOPCL_OK;
}

/* Describes one device (always, so that counting and filling agree on which devices are
 * usable); one that cannot be described is noted and left out, keeping the others. */
static bloopcl_status list_device(listing *list, cl_platform_id platform,
                                  cl_uint platform_index, cl_device_id device, cl_uint index)
{
    bloopcl_device_info info;
    query_failure failure = {NULL, CL_SUCCESS};
    bloopcl_status status = describe_device_noting(platform, device, &info, &failure);
    if (status == BLOOPCL_ERR_OUT_OF_MEMORY)
        return status;
    if (status != BLOOPCL_OK) {
        char note[256];
        bloopcl__format(note, sizeof note, "platform %u device %u skipped: %s failed with %s",
                        (unsigned)platform_index, (unsigned)index, failure.query,
                        bloopcl__cl_error_name(failure.code));
        note_skipped(list->skipped, list->skipped_size, note);
        return BLOOPCL_OK;
    }
    info.flat_index = (unsigned)list->total;
    info.platform_index = platform_index;
    info.device_index = index;
    return store_device(list, &info);
}

/* Lists the usable devices of one platform; a platform whose devices cannot be listed is
 * noted and skipped, so that one broken driver does not hide the others. */
static bloopcl_status list_platform(listing *list, cl_platform_id platform,
                                    cl_uint platform_index)
{
    cl_device_id *devices = NULL;
    cl_uint num_devices = 0;
    cl_int err = CL_SUCCESS;
    bloopcl_status status = get_devices(platform, &devices, &num_devices, &err);
    if (status == BLOOPCL_ERR_OPENCL) {
        char name[128] = "", note[256];
        query_failure ignored;
        platform_string(platform, CL_PLATFORM_NAME, "", name, sizeof name, &ignored);
        char quoted[160] = "";
        if (name[0] != '\0')
            bloopcl__format(quoted, sizeof quoted, " (\"%s\")", name);
        bloopcl__format(note, sizeof note, "platform %u%s skipped: clGetDeviceIDs failed with %s",
                        (unsigned)platform_index, quoted, bloopcl__cl_error_name(err));
        note_skipped(list->skipped, list->skipped_size, note);
        return BLOOPCL_OK;
    }
    list->empty_platforms += num_devices == 0;
    for (cl_uint d = 0; status == BLOOPCL_OK && d < num_devices; d++)
        status = list_device(list, platform, platform_index, devices[d], d);
    free(devices);
    return status;
}

/* One listing of every platform into `list` (its total and notes start afresh). Platform
 * indices follow the loader's list, empty and skipped platforms included, so that "P:D"
 * agrees with clinfo's numbering; flat indices count the listed devices. */
static bloopcl_status list_once(listing *list)
{
    list->total = 0;
    list->empty_platforms = 0;
    if (list->skipped != NULL && list->skipped_size > 0)
        list->skipped[0] = '\0';
    cl_platform_id *platforms = NULL;
    cl_uint num_platforms = 0;
    bloopcl_status status = get_platforms(&platforms, &num_platforms);
    for (cl_uint p = 0; status == BLOOPCL_OK && p < num_platforms; p++)
        status = list_platform(list, platforms[p], p);
    free(platforms);
    return status;
}

static pthread_mutex_t enumeration_lock = PTHREAD_MUTEX_INITIALIZER;

/* How long a listing that found nothing waits before its one retry. */
#define EMPTY_RETRY_NANOSECONDS 20000000L

/* list_once under the process-wide lock, once more after a pause if it found no device. */
static bloopcl_status list_serialised(listing *list)
{
    pthread_mutex_lock(&enumeration_lock);
    bloopcl_status status = list_once(list);
    if (status == BLOOPCL_OK && list->total == 0) {
        struct timespec pause = {0, EMPTY_RETRY_NANOSECONDS};
        nanosleep(&pause, NULL);
        status = list_once(list);
    }
    pthread_mutex_unlock(&enumeration_lock);
    if (status == BLOOPCL_OK && list->total == 0 && list->empty_platforms > 0) {
        char note[160];
        bloopcl__format(note, sizeof note, "%u platform(s) answered with no device, twice, "
                        "20 ms apart", (unsigned)list->empty_platforms);
        note_skipped(list->skipped, list->skipped_size, note);
    }
    return status;
}

bloopcl_status bloopcl__list_devices_noting(bloopcl_device_info *devices, size_t capacity,
                                            size_t *count, char *skipped, size_t skipped_size)
{
    if (skipped != NULL && skipped_size > 0)
        skipped[0] = '\0';
    if (count == NULL)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    *count = 0;
    if (devices == NULL && capacity > 0)
        return BLOOPCL_ERR_NULL_ARGUMENT;
    listing list = {devices, capacity, 0, false, 0, skipped, skipped_size};
    bloopcl_status status = list_serialised(&list);
    if (status == BLOOPCL_OK)
        *count = list.total;
    return status;
}

bloopcl_status bloopcl__enumerate_devices(bloopcl_device_info **devices, size_t *count,
                                          char *skipped, size_t skipped_size)
{
    *devices = NULL;
    *count = 0;
    listing list = {NULL, 0, 0, true, 0, skipped, skipped_size};
    bloopcl_status status = list_serialised(&list);
    if (status != BLOOPCL_OK || list.total == 0) {
        free(list.out);
        return status;
    }
    *devices = list.out;
    *count = list.total;
    return BLOOPCL_OK;
}

/* The caller's entries may be of another struct version: list into ours, then copy out. */
bloopcl_status bloopcl_list_devices(bloopcl_device_info *devices, size_t capacity, size_t *count)
{
    if (count != NULL)
        *count = 0;
    if (count == NULL || (devices == NULL && capacity > 0))
        return BLOOPCL_ERR_NULL_ARGUMENT;
    size_t total = 0;
    bloopcl_status status = bloopcl__list_devices_noting(NULL, 0, &total, NULL, 0);
    size_t wanted = total < capacity ? total : capacity;
    bloopcl_device_info *ours = NULL;
    if (status == BLOOPCL_OK && wanted > 0) {
        ours = calloc(wanted, sizeof *ours);
        status = ours != NULL ? bloopcl__list_devices_noting(ours, wanted, &total, NULL, 0)
                              : BLOOPCL_ERR_OUT_OF_MEMORY;
    }
    if (status == BLOOPCL_OK)
        status = bloopcl__write_device_infos(devices, capacity, ours, wanted, NULL, 0);
    free(ours);
    if (status == BLOOPCL_OK)
        *count = total;
    return status;
}
