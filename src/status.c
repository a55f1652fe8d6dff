/* status.c — a static text for every status code (sqlite3_errstr's role). */
#include "bloopcl.h"

const char *bloopcl_status_string(bloopcl_status status)
{
    switch (status) {
    case BLOOPCL_OK: return "ok";
    case BLOOPCL_ERR_NULL_ARGUMENT: return "a required pointer or handle is NULL";
    case BLOOPCL_ERR_INVALID_ARGUMENT: return "invalid argument (hyperparameter out of range or NaN)";
    case BLOOPCL_ERR_SIZE_MISMATCH: return "sizes do not match (n = 0, segments, alignment)";
    case BLOOPCL_ERR_BUFFER_TOO_SMALL: return "an OpenCL buffer is smaller than the data it must hold";
    case BLOOPCL_ERR_DEVICE_SPEC: return "malformed device specification";
    case BLOOPCL_ERR_DEVICE_NOT_FOUND: return "no OpenCL device matches";
    case BLOOPCL_ERR_KERNEL_BUILD: return "an OpenCL kernel failed to build";
    case BLOOPCL_ERR_OPENCL: return "an OpenCL call failed";
    case BLOOPCL_ERR_CLBLAST: return "a CLBlast call failed";
    case BLOOPCL_ERR_OUT_OF_MEMORY: return "out of memory";
    case BLOOPCL_ERR_NONFINITE_INPUT: return "non-finite value (NaN or Inf) in a gradient; step skipped";
    case BLOOPCL_ERR_STATE: return "the request does not fit the combiner's state";
    case BLOOPCL_ERR_UNSUPPORTED: return "not supported by this build or device";
    case BLOOPCL_ERR_WRONG_CONTEXT: return "an OpenCL buffer belongs to another cl_context";
    case BLOOPCL_ERR_STATE_INVALID: return "the state is invalid (a driver failed mid-step); write or reset it";
    case BLOOPCL_ERR_BUSY: return "the context is busy: another thread is inside a call on this context or one of its combiners (one call at a time per context); nothing was done";
    case BLOOPCL_ERR_OUT_OF_RANGE: return "the step's ratio is beyond fp32's range; step skipped";
    case BLOOPCL_ERR_SHARD_FAILED: return "another shard of the step failed; nothing was stepped";
    case BLOOPCL_ERR_TRANSPORT: return "the transport between shards failed";
    }
    return "unknown status code";
}
