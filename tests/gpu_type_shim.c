/* gpu_type_shim.c — preloaded (LD_PRELOAD) by the gpu_policy test so that every OpenCL device
 * reports CL_DEVICE_TYPE_GPU and nothing else. Oclgrind 21.10 reports CPU | GPU | ACCELERATOR |
 * DEFAULT (0xf), which bloopcl's device rules, like any library's, read as a CPU (the CPU bit
 * decides the kernel shape and used to decide the backend); the policy test needs a device that
 * is a GPU alone. Every other query goes to the real clGetDeviceInfo (the ICD loader's). */
#define _GNU_SOURCE
#include <CL/cl.h>
#include <dlfcn.h>
#include <string.h>

typedef cl_int (*device_info_fn)(cl_device_id, cl_device_info, size_t, void *, size_t *);

CL_API_ENTRY cl_int CL_API_CALL clGetDeviceInfo(cl_device_id device, cl_device_info name,
                                                size_t size, void *value, size_t *size_ret)
{
    static device_info_fn next;
    if (next == NULL) {
        void *symbol = dlsym(RTLD_NEXT, "clGetDeviceInfo");
        if (symbol == NULL)
            return CL_INVALID_OPERATION;
        memcpy(&next, &symbol, sizeof next);   /* ISO C: no cast from void * to a function */
    }
    cl_int err = next(device, name, size, value, size_ret);
    if (err == CL_SUCCESS && name == CL_DEVICE_TYPE && value != NULL &&
        size >= sizeof(cl_device_type)) {
        cl_device_type gpu = CL_DEVICE_TYPE_GPU;
        memcpy(value, &gpu, sizeof gpu);
    }
    return err;
}
