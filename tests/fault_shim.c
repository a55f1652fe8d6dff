/* fault_shim.c — OpenCL entry points that count, forward or fail (see fault_shim.h).
 *
 * Besides counting, the shim follows every command it forwards with a sequence number, so the
 * host-memory guard knows which non-blocking writes a later wait has completed: on an in-order
 * queue, waiting for command k (clWaitForEvents on its event, a blocking read or write) or for
 * the whole queue (clFinish) completes every command enqueued before it. */
#define _GNU_SOURCE /* RTLD_NEXT */
#include "fault_shim.h"

#include <criterion/criterion.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    CREATE_BUFFER, CREATE_SUB_BUFFER, SET_KERNEL_ARG, NDRANGE, WRITE, READ, COPY, FILL, MARKER,
    BARRIER, FLUSH, FINISH, WAIT, GET_DEVICE_INFO, GET_MEM_INFO, RETAIN_MEM, NUM_INTERCEPTED
};

typedef struct intercepted {
    const char *name;
    void *real;             /* the next definition in the lookup order (the loader's) */
    unsigned long calls;    /* since fault_reset */
    unsigned long fail_at;  /* the value of `calls` whose call fails; 0: not armed */
    cl_int error;
    bool fired;
} intercepted;

static size_t bytes_created;  /* by clCreateBuffer since fault_reset */
static size_t largest_created;
static cl_ulong fake_global_bytes, fake_max_alloc_bytes;  /* 0: the device's own */

size_t fault_bytes_created(void)
{
    return bytes_created;
}

size_t fault_largest_buffer(void)
{
    return largest_created;
}

void fault_fake_device_memory(cl_ulong global_bytes, cl_ulong max_alloc_bytes)
{
    fake_global_bytes = global_bytes;
    fake_max_alloc_bytes = max_alloc_bytes;
}

static intercepted table[NUM_INTERCEPTED] = {
    [CREATE_BUFFER] = {.name = "clCreateBuffer"},
    [CREATE_SUB_BUFFER] = {.name = "clCreateSubBuffer"},
    [SET_KERNEL_ARG] = {.name = "clSetKernelArg"},
    [NDRANGE] = {.name = "clEnqueueNDRangeKernel"},
    [WRITE] = {.name = "clEnqueueWriteBuffer"},
    [READ] = {.name = "clEnqueueReadBuffer"},
    [COPY] = {.name = "clEnqueueCopyBuffer"},
    [FILL] = {.name = "clEnqueueFillBuffer"},
    [MARKER] = {.name = "clEnqueueMarkerWithWaitList"},
    [BARRIER] = {.name = "clEnqueueBarrierWithWaitList"},
    [FLUSH] = {.name = "clFlush"},
    [FINISH] = {.name = "clFinish"},
    [WAIT] = {.name = "clWaitForEvents"},
    [GET_DEVICE_INFO] = {.name = "clGetDeviceInfo"},
    [GET_MEM_INFO] = {.name = "clGetMemObjectInfo"},
    [RETAIN_MEM] = {.name = "clRetainMemObject"},
};

/* --- arming and counting ------------------------------------------------------------------ */

static intercepted *find(const char *name)
{
    for (int i = 0; i < NUM_INTERCEPTED; ++i)
        if (strcmp(table[i].name, name) == 0)
            return &table[i];
    cr_assert_fail("fault shim: %s is not intercepted", name);
    return NULL;
}

void fault_reset(void)
{
    bytes_created = 0;
    largest_created = 0;
    for (int i = 0; i < NUM_INTERCEPTED; ++i) {
        table[i].calls = 0;
        table[i].fail_at = 0;
        table[i].fired = false;
    }
}

unsigned long fault_calls(const char *name)
{
    return find(name)->calls;
}

void fault_arm(const char *name, unsigned long k, cl_int error)
{
    cr_assert_geq(k, 1, "fault_arm(%s): k counts from 1", name);
    intercepted *entry = find(name);
    entry->fail_at = entry->calls + k;
    entry->error = error;
    entry->fired = false;
}

bool fault_fired(const char *name)
{
    return find(name)->fired;
}

/* Counts a call; true (with the armed error) when this call is the one to fail. */
static bool injected(int index, cl_int *error)
{
    intercepted *entry = &table[index];
    if (++entry->calls != entry->fail_at)
        return false;
    entry->fail_at = 0;
    entry->fired = true;
    *error = entry->error;
    return true;
}

/* Copies the real function's address into the function pointer at `out` (object and function
 * pointers have one size on every POSIX system; memcpy avoids the cast ISO C does not define). */
static void real_function(int index, void *out, size_t size)
{
    intercepted *entry = &table[index];
    if (entry->real == NULL)
        entry->real = dlsym(RTLD_NEXT, entry->name);
    if (entry->real == NULL || size != sizeof entry->real) {
        fprintf(stderr, "fault shim: no next definition of %s\n", entry->name);
        abort();
    }
    memcpy(out, &entry->real, size);
}

/* --- the host-memory guard ---------------------------------------------------------------- */

#define TRACKED_EVENTS 256

typedef struct pending_write {
    uintptr_t host;
    size_t bytes;
    unsigned long sequence;
} pending_write;

static unsigned long sequence;  /* commands forwarded so far */
static struct { cl_event event; unsigned long sequence; } events[TRACKED_EVENTS];
static size_t next_event;
static pending_write *writes;
static size_t num_writes, write_capacity;

/* A command was enqueued (err == CL_SUCCESS): number it and remember its event. */
static unsigned long enqueued(cl_int err, const cl_event *event)
{
    if (err != CL_SUCCESS)
        return 0;
    ++sequence;
    if (event != NULL) {
        events[next_event % TRACKED_EVENTS].event = *event;
        events[next_event % TRACKED_EVENTS].sequence = sequence;
        ++next_event;
    }
    return sequence;
}

/* The sequence number of an event (newest first: a released handle may be reused); 0 unknown. */
static unsigned long event_sequence(cl_event event)
{
    size_t tracked = next_event < TRACKED_EVENTS ? next_event : TRACKED_EVENTS;
    for (size_t i = 1; i <= tracked; ++i)
        if (events[(next_event - i) % TRACKED_EVENTS].event == event)
            return events[(next_event - i) % TRACKED_EVENTS].sequence;
    return 0;
}

static void remember_write(const void *host, size_t bytes, unsigned long number)
{
    if (num_writes == write_capacity) {
        write_capacity = write_capacity ? 2 * write_capacity : 64;
        writes = realloc(writes, write_capacity * sizeof *writes);
        if (writes == NULL)
            abort();
    }
    writes[num_writes++] = (pending_write){(uintptr_t)host, bytes, number};
}

/* Every command up to `number` has completed (in-order queue): its writes read no more. */
static void completed_up_to(unsigned long number)
{
    size_t kept = 0;
    for (size_t i = 0; i < num_writes; ++i)
        if (writes[i].sequence > number)
            writes[kept++] = writes[i];
    num_writes = kept;
}

size_t fault_unwaited_reads(const void *host, size_t bytes)
{
    uintptr_t begin = (uintptr_t)host, end = begin + bytes;
    size_t count = 0;
    for (size_t i = 0; i < num_writes; ++i)
        count += writes[i].host < end && begin < writes[i].host + writes[i].bytes;
    return count;
}

/* --- the intercepted entry points --------------------------------------------------------- */

CL_API_ENTRY cl_mem CL_API_CALL clCreateBuffer(cl_context context, cl_mem_flags flags,
                                               size_t size, void *host_ptr, cl_int *errcode_ret)
{
    cl_mem (*real)(cl_context, cl_mem_flags, size_t, void *, cl_int *);
    real_function(CREATE_BUFFER, &real, sizeof real);
    cl_int error;
    if (injected(CREATE_BUFFER, &error)) {
        if (errcode_ret != NULL)
            *errcode_ret = error;
        return NULL;
    }
    cl_int status = CL_SUCCESS;
    cl_mem buffer = real(context, flags, size, host_ptr, &status);
    if (errcode_ret != NULL)
        *errcode_ret = status;
    if (status == CL_SUCCESS)
        bytes_created += size;
    if (status == CL_SUCCESS && size > largest_created)
        largest_created = size;
    return buffer;
}

CL_API_ENTRY cl_mem CL_API_CALL clCreateSubBuffer(cl_mem buffer, cl_mem_flags flags,
                                                  cl_buffer_create_type type, const void *info,
                                                  cl_int *errcode_ret)
{
    cl_mem (*real)(cl_mem, cl_mem_flags, cl_buffer_create_type, const void *, cl_int *);
    real_function(CREATE_SUB_BUFFER, &real, sizeof real);
    cl_int error;
    if (injected(CREATE_SUB_BUFFER, &error)) {
        if (errcode_ret != NULL)
            *errcode_ret = error;
        return NULL;
    }
    return real(buffer, flags, type, info, errcode_ret);
}

CL_API_ENTRY cl_int CL_API_CALL clSetKernelArg(cl_kernel kernel, cl_uint index, size_t size,
                                               const void *value)
{
    cl_int (*real)(cl_kernel, cl_uint, size_t, const void *);
    real_function(SET_KERNEL_ARG, &real, sizeof real);
    cl_int error;
    if (injected(SET_KERNEL_ARG, &error))
        return error;
    return real(kernel, index, size, value);
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueNDRangeKernel(cl_command_queue queue, cl_kernel kernel,
                                                       cl_uint dims, const size_t *offset,
                                                       const size_t *global, const size_t *local,
                                                       cl_uint num_wait, const cl_event *wait,
                                                       cl_event *event)
{
    cl_int (*real)(cl_command_queue, cl_kernel, cl_uint, const size_t *, const size_t *,
                   const size_t *, cl_uint, const cl_event *, cl_event *);
    real_function(NDRANGE, &real, sizeof real);
    cl_int error;
    if (injected(NDRANGE, &error))
        return error;
    error = real(queue, kernel, dims, offset, global, local, num_wait, wait, event);
    enqueued(error, event);
    return error;
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueWriteBuffer(cl_command_queue queue, cl_mem buffer,
                                                     cl_bool blocking, size_t offset, size_t size,
                                                     const void *ptr, cl_uint num_wait,
                                                     const cl_event *wait, cl_event *event)
{
    cl_int (*real)(cl_command_queue, cl_mem, cl_bool, size_t, size_t, const void *, cl_uint,
                   const cl_event *, cl_event *);
    real_function(WRITE, &real, sizeof real);
    cl_int error;
    if (injected(WRITE, &error))
        return error;
    error = real(queue, buffer, blocking, offset, size, ptr, num_wait, wait, event);
    unsigned long number = enqueued(error, event);
    if (number != 0 && blocking)
        completed_up_to(number);
    else if (number != 0)
        remember_write(ptr, size, number);
    return error;
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueReadBuffer(cl_command_queue queue, cl_mem buffer,
                                                    cl_bool blocking, size_t offset, size_t size,
                                                    void *ptr, cl_uint num_wait,
                                                    const cl_event *wait, cl_event *event)
{
    cl_int (*real)(cl_command_queue, cl_mem, cl_bool, size_t, size_t, void *, cl_uint,
                   const cl_event *, cl_event *);
    real_function(READ, &real, sizeof real);
    cl_int error;
    if (injected(READ, &error))
        return error;
    error = real(queue, buffer, blocking, offset, size, ptr, num_wait, wait, event);
    unsigned long number = enqueued(error, event);
    if (number != 0 && blocking)
        completed_up_to(number);
    return error;
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueCopyBuffer(cl_command_queue queue, cl_mem src, cl_mem dst,
                                                    size_t src_offset, size_t dst_offset,
                                                    size_t size, cl_uint num_wait,
                                                    const cl_event *wait, cl_event *event)
{
    cl_int (*real)(cl_command_queue, cl_mem, cl_mem, size_t, size_t, size_t, cl_uint,
                   const cl_event *, cl_event *);
    real_function(COPY, &real, sizeof real);
    cl_int error;
    if (injected(COPY, &error))
        return error;
    error = real(queue, src, dst, src_offset, dst_offset, size, num_wait, wait, event);
    enqueued(error, event);
    return error;
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueFillBuffer(cl_command_queue queue, cl_mem buffer,
                                                    const void *pattern, size_t pattern_size,
                                                    size_t offset, size_t size, cl_uint num_wait,
                                                    const cl_event *wait, cl_event *event)
{
    cl_int (*real)(cl_command_queue, cl_mem, const void *, size_t, size_t, size_t, cl_uint,
                   const cl_event *, cl_event *);
    real_function(FILL, &real, sizeof real);
    cl_int error;
    if (injected(FILL, &error))
        return error;
    error = real(queue, buffer, pattern, pattern_size, offset, size, num_wait, wait, event);
    enqueued(error, event);
    return error;
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueMarkerWithWaitList(cl_command_queue queue,
                                                            cl_uint num_wait,
                                                            const cl_event *wait,
                                                            cl_event *event)
{
    cl_int (*real)(cl_command_queue, cl_uint, const cl_event *, cl_event *);
    real_function(MARKER, &real, sizeof real);
    cl_int error;
    if (injected(MARKER, &error))
        return error;
    error = real(queue, num_wait, wait, event);
    enqueued(error, event);
    return error;
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueBarrierWithWaitList(cl_command_queue queue,
                                                             cl_uint num_wait,
                                                             const cl_event *wait,
                                                             cl_event *event)
{
    cl_int (*real)(cl_command_queue, cl_uint, const cl_event *, cl_event *);
    real_function(BARRIER, &real, sizeof real);
    cl_int error;
    if (injected(BARRIER, &error))
        return error;
    error = real(queue, num_wait, wait, event);
    enqueued(error, event);
    return error;
}

CL_API_ENTRY cl_int CL_API_CALL clFlush(cl_command_queue queue)
{
    cl_int (*real)(cl_command_queue);
    real_function(FLUSH, &real, sizeof real);
    cl_int error;
    if (injected(FLUSH, &error))
        return error;
    return real(queue);
}

CL_API_ENTRY cl_int CL_API_CALL clFinish(cl_command_queue queue)
{
    cl_int (*real)(cl_command_queue);
    real_function(FINISH, &real, sizeof real);
    cl_int error;
    if (injected(FINISH, &error))
        return error;
    error = real(queue);
    if (error == CL_SUCCESS)
        completed_up_to(sequence);
    return error;
}

/* A wait that reports a terminated command (CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST) has
 * still waited: those commands run no more. */
CL_API_ENTRY cl_int CL_API_CALL clWaitForEvents(cl_uint num_events, const cl_event *list)
{
    cl_int (*real)(cl_uint, const cl_event *);
    real_function(WAIT, &real, sizeof real);
    cl_int error;
    if (injected(WAIT, &error))
        return error;
    error = real(num_events, list);
    if (error == CL_SUCCESS || error == CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST) {
        unsigned long newest = 0;
        for (cl_uint i = 0; i < num_events; ++i)
            if (event_sequence(list[i]) > newest)
                newest = event_sequence(list[i]);
        completed_up_to(newest);
    }
    return error;
}

/* A faked memory size replaces the device's answer (the size query is answered as usual). */
CL_API_ENTRY cl_int CL_API_CALL clGetDeviceInfo(cl_device_id device, cl_device_info name,
                                                size_t size, void *value, size_t *size_ret)
{
    cl_int (*real)(cl_device_id, cl_device_info, size_t, void *, size_t *);
    real_function(GET_DEVICE_INFO, &real, sizeof real);
    cl_int error;
    if (injected(GET_DEVICE_INFO, &error))
        return error;
    error = real(device, name, size, value, size_ret);
    cl_ulong fake = name == CL_DEVICE_GLOBAL_MEM_SIZE      ? fake_global_bytes
                    : name == CL_DEVICE_MAX_MEM_ALLOC_SIZE ? fake_max_alloc_bytes
                                                           : 0;
    if (error == CL_SUCCESS && fake != 0 && value != NULL && size >= sizeof fake)
        memcpy(value, &fake, sizeof fake);
    return error;
}

CL_API_ENTRY cl_int CL_API_CALL clGetMemObjectInfo(cl_mem memobj, cl_mem_info name, size_t size,
                                                   void *value, size_t *size_ret)
{
    cl_int (*real)(cl_mem, cl_mem_info, size_t, void *, size_t *);
    real_function(GET_MEM_INFO, &real, sizeof real);
    cl_int error;
    if (injected(GET_MEM_INFO, &error))
        return error;
    return real(memobj, name, size, value, size_ret);
}

/* A failed retain takes no reference. */
CL_API_ENTRY cl_int CL_API_CALL clRetainMemObject(cl_mem memobj)
{
    cl_int (*real)(cl_mem);
    real_function(RETAIN_MEM, &real, sizeof real);
    cl_int error;
    if (injected(RETAIN_MEM, &error))
        return error;
    return real(memobj);
}
