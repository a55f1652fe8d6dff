/* fault_shim.h — fault injection for OpenCL calls, for tests.
 *
 * The tests link the library statically, so the OpenCL entry points that fault_shim.c defines
 * in the test executable take the place of the loader's for every caller in the process: the
 * library, CLBlast (its references bind to the executable's exported definitions) and the test
 * itself. Each forwards to the real function (dlsym(RTLD_NEXT, name)) and counts its calls;
 * a test may arm one call to fail instead, without reaching the driver.
 *
 * Intercepted: clCreateBuffer, clCreateSubBuffer, clSetKernelArg, clEnqueueNDRangeKernel,
 * clEnqueueWriteBuffer, clEnqueueReadBuffer, clEnqueueCopyBuffer, clEnqueueFillBuffer,
 * clEnqueueMarkerWithWaitList, clEnqueueBarrierWithWaitList, clFlush, clFinish,
 * clWaitForEvents, clGetMemObjectInfo, clRetainMemObject, clGetDeviceInfo (which can report
 * fake memory sizes, see below).
 *
 * Not thread-safe: a test drives one context from one thread (the library's own rule).
 */
#ifndef BLOOPCL_TEST_FAULT_SHIM_H
#define BLOOPCL_TEST_FAULT_SHIM_H

#include "bloopcl.h"

#include <stdbool.h>
#include <stddef.h>

/* Disarms every call and sets every counter to 0. */
void fault_reset(void);

/* Calls of the named OpenCL function since the last fault_reset (failed ones included).
 * An unknown name fails the test. */
unsigned long fault_calls(const char *name);

/* Bytes of the buffers clCreateBuffer created (successfully) since the last fault_reset. */
size_t fault_bytes_created(void);

/* Makes the k-th call (k >= 1) of the named function from now on return `error` (or NULL with
 * *errcode_ret = error for clCreate*) without reaching the driver; later calls forward again.
 * Arming again replaces the previous arming of that name. */
void fault_arm(const char *name, unsigned long k, cl_int error);

/* Whether the armed failure of that name has been delivered since it was armed. */
bool fault_fired(const char *name);

/* The guard for host memory: how many non-blocking clEnqueueWriteBuffer calls that read from
 * [host, host + bytes) were enqueued since the queue was last waited for (clFinish,
 * clWaitForEvents, or a blocking read or write). With the library's in-order queues, a write
 * counted here may still be reading that memory. */
size_t fault_unwaited_reads(const void *host, size_t bytes);

/* Makes clGetDeviceInfo report `global_bytes` as CL_DEVICE_GLOBAL_MEM_SIZE and
 * `max_alloc_bytes` as CL_DEVICE_MAX_MEM_ALLOC_SIZE (0: the device's own answer), until called
 * again; fault_reset leaves it. Contexts read them at creation: memory limits can be tested
 * without allocating gigabytes. */
void fault_fake_device_memory(cl_ulong global_bytes, cl_ulong max_alloc_bytes);

/* The largest buffer clCreateBuffer created (successfully) since the last fault_reset. */
size_t fault_largest_buffer(void);

#endif
