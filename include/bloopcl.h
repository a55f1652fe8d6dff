/*
 * bloopcl.h — the whole public API of bloopcl.
 *
 * bloopcl computes the update direction of Bloop (Hsieh et al., "Careful with that Scalpel:
 * Improving Gradient Surgery with an EMA", ICML 2024) and of the baselines it is compared with
 * (Mixed, Dynamic Barrier, PCGrad) on any OpenCL 1.2 device.
 *
 * Each step the caller hands over a main-loss gradient g and an auxiliary-loss gradient a (flat
 * float vectors of n elements, possibly spread over several buffers) and receives the direction
 *
 *     m <- m + w (g - m)                      (EMA of the main gradient, updated first)
 *     r  = <m, a> / (<m, m> + eps)            (one global scalar over all n elements)
 *     d  = s (g + lambda (a - r m))           (s = 1/(1+lambda) with rescale, else 1)
 *
 * The full table of methods is in the documentation of bloopcl_method below.
 *
 * Objects
 *   bloopcl_context   one OpenCL device, one in-order command queue, the compiled kernels and
 *                     the last error message. One call at a time (see Threads).
 *   bloopcl_combiner  one method, its hyperparameters and its persistent state (the EMA) for
 *                     a parameter vector of n elements; created from a context, which it keeps
 *                     alive (the two may be destroyed in either order).
 *
 * Threads
 *   - Different contexts are independent: each may be used by its own thread at the same time,
 *     on either dot backend (the library serialises its CLBlast calls with a process-wide lock:
 *     CLBlast's first call fills process-wide caches without a lock of its own).
 *   - A context and its combiners take one call at a time. They may move between threads (a
 *     call that returns hands the context's memory on to the thread making the next call), but
 *     a call made while another thread is inside a call on the same context (on it or any of
 *     its combiners) returns BLOOPCL_ERR_BUSY at once and does nothing: no state change, no
 *     command enqueued, and bloopcl_context_last_error() keeps the message of the call in
 *     progress. Calls that do so: bloopcl_combiner_create, bloopcl_combiner_config,
 *     bloopcl_combiner_set_hyperparameters, bloopcl_step, bloopcl_step_buffers,
 *     bloopcl_step_host, bloopcl_get_diagnostics, bloopcl_read_state, bloopcl_write_state,
 *     bloopcl_reset_state, bloopcl_context_finish, and since 0.5.0 bloopcl_step_aux,
 *     bloopcl_get_aux_diagnostics, bloopcl_combiner_set_optimizer,
 *     bloopcl_combiner_set_learning_rate, bloopcl_optimizer_steps and
 *     bloopcl_set_optimizer_steps. BUSY is not a queue: retry, or better, give
 *     each thread its own context.
 *   - The destroy functions cannot report BUSY: a combiner must not be destroyed while a call
 *     on it runs, nor a context handle used after bloopcl_context_destroy. Destroying one
 *     combiner while another thread uses another combiner of the same context is fine.
 *   - The last-error message belongs to the context: it describes the last failed call on it,
 *     by whichever thread; read it before the next call on that context.
 *   - The caller's OpenCL objects (its queue when given to bloopcl_context_create_from_cl) may be
 *     used by the caller's other threads as OpenCL allows; bloopcl's calls on that queue are
 *     then interleaved with theirs in submission order.
 *
 * Conventions
 *   - Every call returns a bloopcl_status: 0 on success, a negative code on failure.
 *     bloopcl_status_string() gives a static text for a code and
 *     bloopcl_context_last_error() the detailed message of the last failure in that context.
 *   - A call that fails was not applied: the EMA state is left exactly as it was. The one
 *     exception is BLOOPCL_ERR_STATE_INVALID: the driver failed in the middle of a step that
 *     had already begun to update the state in place; the combiner then refuses steps until
 *     bloopcl_write_state or bloopcl_reset_state gives it a state again.
 *   - The library never prints and never exits. An optional log callback receives notes.
 *     CLBlast, which the CLBLAST backend calls, does print: CLBlast 1.5.3 to 1.7.0 write one
 *     line "CLBlast: <OpenCL call and error>" to stderr for each OpenCL call that fails inside
 *     one of its routines (its DispatchException; no setting turns it off). The step still
 *     returns the error (BLOOPCL_ERR_CLBLAST or _OUT_OF_MEMORY). With FUSED nothing is printed.
 *     CLBlast also ends the process (std::terminate) when the allocation of the temporary
 *     buffer it makes in every dot product fails; a CLBLAST step therefore first checks that
 *     the device can give that much and returns BLOOPCL_ERR_OUT_OF_MEMORY before enqueueing
 *     anything if not; only memory taken by someone else between that check and CLBlast's own
 *     allocation can still end the process.
 *   - Destroy functions accept NULL.
 *   - ABI: within the soname libbloopcl.so.1 this API only grows. The structs passed in and out
 *     begin with `struct_size`, set by their *_default() function or BLOOPCL_*_INIT macro;
 *     fields are only appended, and the library reads or writes only the prefix the caller's
 *     struct_size covers (a field it does not know, if non-zero, is BLOOPCL_ERR_UNSUPPORTED).
 *     The section under BLOOPCL_EXPERIMENTAL (the CPU reference) is outside this promise.
 *   - Gradients are never modified (unless the caller makes d alias g or a, which is allowed:
 *     each element is read before it is written; exactly only, see "Gradients" below).
 */
#ifndef BLOOPCL_H
#define BLOOPCL_H

/* Only OpenCL 1.2 types are used here. CL_TARGET_OPENCL_VERSION is the including translation
 * unit's choice (the Khronos headers default to 300); this header never sets it. */
#ifdef __APPLE__
#include <OpenCL/opencl.h>
#else
#include <CL/cl.h>
#endif

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(BLOOPCL_BUILDING)
#define BLOOPCL_API __declspec(dllexport)
#elif defined(__GNUC__) && __GNUC__ >= 4
#define BLOOPCL_API __attribute__((visibility("default")))
#else
#define BLOOPCL_API
#endif

/* ---------------------------------------------------------------------------------------------
 * Version
 * ------------------------------------------------------------------------------------------- */
#define BLOOPCL_VERSION_MAJOR 0
#define BLOOPCL_VERSION_MINOR 5
#define BLOOPCL_VERSION_PATCH 0
#define BLOOPCL_VERSION_NUMBER \
    (BLOOPCL_VERSION_MAJOR * 10000 + BLOOPCL_VERSION_MINOR * 100 + BLOOPCL_VERSION_PATCH)
#define BLOOPCL_VERSION_STRING "0.5.0"

/** The version of the library actually linked (compare with BLOOPCL_VERSION_NUMBER). */
BLOOPCL_API unsigned bloopcl_version_number(void);
BLOOPCL_API const char *bloopcl_version_string(void);

/* ---------------------------------------------------------------------------------------------
 * Status codes
 * ------------------------------------------------------------------------------------------- */
typedef enum bloopcl_status {
    BLOOPCL_OK = 0,
    BLOOPCL_ERR_NULL_ARGUMENT = -1,     /* a required pointer or handle was NULL */
    BLOOPCL_ERR_INVALID_ARGUMENT = -2,  /* hyperparameter out of range or NaN, bad enum value,
                                           a memory object that is no buffer, d overlapping */
    BLOOPCL_ERR_SIZE_MISMATCH = -3,     /* n = 0, segment counts do not add up, bad alignment */
    BLOOPCL_ERR_BUFFER_TOO_SMALL = -4,  /* a cl_mem is smaller than offset + count elements */
    BLOOPCL_ERR_DEVICE_SPEC = -5,       /* malformed device specification */
    BLOOPCL_ERR_DEVICE_NOT_FOUND = -6,  /* no device matches, or no OpenCL device at all */
    BLOOPCL_ERR_KERNEL_BUILD = -7,      /* an OpenCL program failed to build (log in last error) */
    BLOOPCL_ERR_OPENCL = -8,            /* an OpenCL call failed (name of the call and code kept) */
    BLOOPCL_ERR_CLBLAST = -9,           /* a CLBlast call failed */
    BLOOPCL_ERR_OUT_OF_MEMORY = -10,    /* host or device allocation failed */
    BLOOPCL_ERR_NONFINITE_INPUT = -11,  /* g or a held NaN or Inf; the step was skipped */
    BLOOPCL_ERR_STATE = -12,            /* the call does not fit the combiner's state */
    BLOOPCL_ERR_UNSUPPORTED = -13,      /* valid request this build or device cannot serve */
    BLOOPCL_ERR_WRONG_CONTEXT = -14,    /* a cl_mem belongs to another cl_context */
    BLOOPCL_ERR_STATE_INVALID = -15,    /* the driver failed mid-step after the state began to
                                           change; write or reset the state to go on */
    BLOOPCL_ERR_BUSY = -16,             /* another thread is inside a call on this context (or
                                           one of its combiners); nothing was done */
    BLOOPCL_ERR_OUT_OF_RANGE = -17,     /* finite g and a, but r (or r_q) is beyond what fp32
                                           represents (or, on CLBlast, cannot be trusted); the
                                           step was skipped (bloopcl_skip_reason) */
    BLOOPCL_ERR_SHARD_FAILED = -18,     /* another shard of a sharded step failed its checks;
                                           this shard cancelled its half (bloopcl-mpi) */
    BLOOPCL_ERR_TRANSPORT = -19         /* the transport between shards (MPI) failed */
} bloopcl_status;

/** Static, never NULL text for a status code (also for unknown codes). */
BLOOPCL_API const char *bloopcl_status_string(bloopcl_status status);

/* ---------------------------------------------------------------------------------------------
 * Devices
 *
 * BLOOPCL_DEVICE (or an explicit spec, which takes precedence) selects the device:
 *   unset or ""     first GPU, else first accelerator, else first CPU
 *   gpu|cpu|acc     first device of that type (case-insensitive); gpu:1 is the second GPU
 *   P:D             platform field and device field, each an index or a case-insensitive
 *                   substring (platform: of its name or vendor; device: of its name);
 *                   an empty field matches anything: "portable:", "amd:gfx1100", "0:1"
 *   N               index in the flat list (platforms in loader order, their devices in order)
 * No match and malformed values are errors whose message lists the devices found.
 * ------------------------------------------------------------------------------------------- */
typedef struct bloopcl_device_info {
    size_t struct_size;         /* sizeof(bloopcl_device_info): set by BLOOPCL_DEVICE_INFO_INIT */
    unsigned flat_index;        /* the N of the "N" form, as bloopcl-compare --list prints */
    unsigned platform_index;
    unsigned device_index;      /* within its platform */
    cl_platform_id platform;
    cl_device_id device;
    cl_device_type type;
    char platform_name[128];
    char platform_vendor[128];
    char device_name[128];
    char driver_version[64];
    char opencl_c_version[64];
    int has_fp64;
    int has_fp16;
    cl_ulong global_mem_bytes;
    cl_ulong max_alloc_bytes;
    cl_uint compute_units;
} bloopcl_device_info;

#define BLOOPCL_DEVICE_INFO_INIT { .struct_size = sizeof(bloopcl_device_info) }

/**
 * Lists every device of every platform. Writes up to `capacity` entries to `devices` (which may
 * be NULL when capacity is 0) and the total number found to `*count`. devices[0].struct_size
 * gives the size of every entry (set it, e.g. with BLOOPCL_DEVICE_INFO_INIT); each entry written
 * gets that struct_size.
 */
BLOOPCL_API bloopcl_status bloopcl_list_devices(bloopcl_device_info *devices, size_t capacity,
                                                size_t *count);

/**
 * Resolves a device specification (grammar above; NULL means "read BLOOPCL_DEVICE").
 * On failure writes a message listing the devices into `message` (if not NULL).
 */
BLOOPCL_API bloopcl_status bloopcl_select_device(const char *spec, bloopcl_device_info *selected,
                                                 char *message, size_t message_size);

/* ---------------------------------------------------------------------------------------------
 * Context
 * ------------------------------------------------------------------------------------------- */
typedef struct bloopcl_context bloopcl_context;

typedef enum bloopcl_log_level {
    BLOOPCL_LOG_DEBUG = 0,
    BLOOPCL_LOG_INFO = 1,
    BLOOPCL_LOG_WARNING = 2
} bloopcl_log_level;

typedef void (*bloopcl_log_fn)(void *user, bloopcl_log_level level, const char *message);

typedef struct bloopcl_context_params {
    size_t struct_size;         /* sizeof(bloopcl_context_params): set by *_default */
    const char *device_spec;    /* NULL: read BLOOPCL_DEVICE; otherwise overrides it */
    const char *build_options;  /* appended to the kernel build options; NULL: read
                                   BLOOPCL_BUILD_OPTIONS. Options that break the kernels'
                                   exactness (-cl-fast-relaxed-math, -cl-finite-math-only,
                                   -cl-unsafe-math-optimizations, -cl-mad-enable,
                                   -cl-no-signed-zeros, -cl-denorms-are-zero) or their shape
                                   (-DBLOOPCL_*) are refused: BLOOPCL_ERR_INVALID_ARGUMENT */
    const char *cache_dir;      /* compiled-kernel cache folder; NULL: read BLOOPCL_CACHE_DIR,
                                   else $XDG_CACHE_HOME/bloopcl or ~/.cache/bloopcl;
                                   "" or "off": no cache */
    bloopcl_log_fn log_fn;      /* NULL: no logging */
    void *log_user;
} bloopcl_context_params;

/** Fills `params` with the defaults (struct_size set, everything else NULL: the environment
 * decides). */
BLOOPCL_API void bloopcl_context_params_default(bloopcl_context_params *params);

/**
 * Creates a context on the selected device with its own in-order queue and builds the kernels.
 * `params` may be NULL (defaults). Like sqlite3_open, on failure `*out` is still set to a
 * context that carries only the error message (read it with bloopcl_context_last_error, then
 * destroy it), or to NULL if even that could not be allocated.
 */
BLOOPCL_API bloopcl_status bloopcl_context_create(const bloopcl_context_params *params,
                                                  bloopcl_context **out);

/**
 * Creates a context around the caller's OpenCL objects, which are retained and never owned.
 * `queue` must be an in-order queue of `device` in `cl_ctx`, or NULL to create one.
 * Failure is reported as for bloopcl_context_create.
 */
BLOOPCL_API bloopcl_status bloopcl_context_create_from_cl(cl_context cl_ctx, cl_device_id device,
                                                          cl_command_queue queue,
                                                          const bloopcl_context_params *params,
                                                          bloopcl_context **out);

/**
 * Creates a context from any buffer of the caller (e.g. a tensor's cl_mem): its cl_context is
 * used, with the first device of that context (CL_CONTEXT_DEVICES[0], also when the context
 * holds several devices) and a new in-order queue.
 */
BLOOPCL_API bloopcl_status bloopcl_context_create_from_mem(cl_mem buffer,
                                                           const bloopcl_context_params *params,
                                                           bloopcl_context **out);

/**
 * Releases the caller's reference to the context. Each combiner holds a reference of its own,
 * so a context destroyed before its combiners lives on, usable by them alone, until the last
 * of them is destroyed; the handle itself must not be used again. When the last reference
 * goes, this waits for the queue, then releases everything the context holds. CLBlast caches its compiled programs process-wide, each holding a reference to its
 * cl_context. For a cl_context that bloopcl created and whose combiners used the CLBlast
 * backend, that cache is cleared here (CLBlastClearCache), so the cl_context is freed. For a
 * caller's cl_context (bloopcl_context_create_from_cl, _from_mem) it is left alone: clearing
 * it would evict the trainer's own CLBlast kernels. Such a caller calls CLBlastClearCache
 * itself before it releases its cl_context, if it wants that context freed.
 */
BLOOPCL_API void bloopcl_context_destroy(bloopcl_context *ctx);

/** The detailed message of the last failure in this context ("" if none). Never NULL. */
BLOOPCL_API const char *bloopcl_context_last_error(const bloopcl_context *ctx);

/** The device this context runs on (filled as bloopcl_list_devices would). */
BLOOPCL_API bloopcl_status bloopcl_context_device_info(bloopcl_context *ctx,
                                                       bloopcl_device_info *info);

BLOOPCL_API cl_context bloopcl_context_cl_context(const bloopcl_context *ctx);
BLOOPCL_API cl_command_queue bloopcl_context_queue(const bloopcl_context *ctx);

/** Blocks until all work enqueued on the context's queue has completed. */
BLOOPCL_API bloopcl_status bloopcl_context_finish(bloopcl_context *ctx);

/* ---------------------------------------------------------------------------------------------
 * Methods and configuration
 *
 *   method            update (m: EMA of g, q: EMA of a, both updated before they are used)
 *   BLOOP             r = <m,a>/(<m,m>+eps);            d = s (g + lambda (a - r m))
 *   DYNAMIC_BARRIER   as BLOOP with r <- min(r, 1/lambda)  (lambda = 0: no clipping)
 *   PCGRAD            a' = a - min(<m,a>/(<m,m>+eps), 0) m;
 *                     g' = g - min(<q,g>/(<q,q>+eps), 0) q; d = s (g' + lambda a')
 *   MIXED             d = s (g + lambda a)                  (no state)
 *   ratio_only        (BLOOP, DYNAMIC_BARRIER) d = s ((1 - lambda r) g + lambda a)
 *
 * EMA update: m <- m + w (g - m) for w in (0, 1); w = 1 means "no EMA" and sets m <- g exactly.
 * s = 1/(1+lambda) with rescale, else 1. (The reference apple/ml-bloop computes 1+lambda for
 * BLOOP and DYNAMIC_BARRIER through an operator-precedence slip; bloopcl uses 1/(1+lambda).)
 * ------------------------------------------------------------------------------------------- */
typedef enum bloopcl_method {
    BLOOPCL_METHOD_BLOOP = 0,
    BLOOPCL_METHOD_DYNAMIC_BARRIER = 1,
    BLOOPCL_METHOD_PCGRAD = 2,
    BLOOPCL_METHOD_MIXED = 3
} bloopcl_method;

typedef enum bloopcl_init {
    BLOOPCL_INIT_ZEROS = 0,          /* m = 0 */
    BLOOPCL_INIT_FIRST_GRADIENT = 1, /* the first accepted step sets m <- g (and q <- a) */
    BLOOPCL_INIT_RANDOM = 2,         /* i.i.d. N(0,1) from `seed` (reproducible everywhere) */
    BLOOPCL_INIT_BUFFER = 3          /* copied from initial_ema / initial_aux_ema */
} bloopcl_init;

/** What a step does when g or a holds a NaN or an infinity. */
typedef enum bloopcl_nonfinite_policy {
    BLOOPCL_NONFINITE_SKIP = 0,      /* d <- 0, state unchanged, step reported as rejected */
    BLOOPCL_NONFINITE_PROPAGATE = 1  /* IEEE arithmetic as written (as apple/ml-bloop does) */
} bloopcl_nonfinite_policy;

/**
 * How the global dot products are computed. Both agree with the CPU reference.
 *
 * FUSED is the default on every device type: by the library's byte model it moves 32 B per
 * element for BLOOP (44 for PCGRAD) where CLBLAST moves 56 (88), and it enqueues
 * 2 ceil(P/K) + 1 kernels for P ranges (K = 16 or 32, see below) where CLBLAST enqueues
 * CLBlast's two Xdot kernels per dot per piece besides. FUSED keeps its state in place (4 bytes per parameter for BLOOP and
 * DYNAMIC_BARRIER, 8 for PCGRAD); CLBLAST keeps it double-buffered (8 and 16), because the EMA
 * CLBlast takes dots of must be materialised before the step can still be rejected.
 */
typedef enum bloopcl_dot_backend {
    BLOOPCL_DOTS_AUTO = 0,     /* BLOOPCL_DOTS env variable (auto|fused|clblast) if set,
                                  else FUSED, on every device type */
    BLOOPCL_DOTS_CLBLAST = 1,  /* EMA kernel, CLBlastSdot per piece, projection kernel */
    BLOOPCL_DOTS_FUSED = 2     /* pass 1: EMA + all dots in one kernel; pass 2: projection */
} bloopcl_dot_backend;

typedef struct bloopcl_config {
    size_t struct_size;         /* sizeof(bloopcl_config): set by bloopcl_config_default */
    bloopcl_method method;
    double ema_weight;          /* w in (0, 1]: weight of the NEW gradient (decay is 1 - w) */
    double lambda;              /* >= 0 */
    double eps;                 /* >= 0, added to the squared norm */
    int rescale;                /* nonzero: s = 1/(1+lambda) */
    int ratio_only;             /* nonzero: ratio-only variant (BLOOP, DYNAMIC_BARRIER) */
    bloopcl_init init;
    uint64_t seed;              /* for BLOOPCL_INIT_RANDOM */
    const float *initial_ema;     /* n floats, for BLOOPCL_INIT_BUFFER (copied at creation) */
    const float *initial_aux_ema; /* n floats, PCGRAD with BLOOPCL_INIT_BUFFER */
    bloopcl_nonfinite_policy nonfinite;
    bloopcl_dot_backend dots;
    /* Since 0.4.0. BLOOPCL_INIT_RANDOM: the element of the stream that element 0 takes (a
     * shard of a sharded state passes its first global element, so that the shards together
     * start from the one-device state). */
    uint64_t random_offset;
} bloopcl_config;

/**
 * Defaults of apple/ml-bloop: ema_weight 0.1, lambda 0.1, eps 1e-7, no rescale, not ratio-only,
 * init ZEROS, seed 0, nonfinite SKIP, dots AUTO.
 */
BLOOPCL_API void bloopcl_config_default(bloopcl_config *config, bloopcl_method method);

/** Checks a configuration without creating anything; `message` (optional) says what is wrong. */
BLOOPCL_API bloopcl_status bloopcl_config_validate(const bloopcl_config *config, char *message,
                                                   size_t message_size);

BLOOPCL_API const char *bloopcl_method_name(bloopcl_method method);

/* ---------------------------------------------------------------------------------------------
 * Gradients: segment lists
 *
 * A gradient of n elements is a list of segments laid end to end; one model is often hundreds of
 * buffers. g, a and d must have the same number of segments with the same counts. The dot
 * products are global across all segments. A single buffer is the one-segment case.
 *
 * Memory: every segment's cl_mem is a buffer (or sub-buffer) of the context's cl_context; an
 * image is refused (BLOOPCL_ERR_INVALID_ARGUMENT), as is the combiner's own output buffer. d may
 * share memory with g or a only as exactly the same elements segment for segment (d's segment i
 * is g's or a's segment i); any other overlap of d with g, a or another segment of d, judged on
 * the bytes underneath (through sub-buffers and CL_MEM_USE_HOST_PTR host memory too), is
 * refused with BLOOPCL_ERR_INVALID_ARGUMENT naming the two segments. g and a may overlap freely.
 *
 * Cost: consecutive segments that lie end to end in their buffers (in g, a and d alike) are
 * merged into one range; the kernels take K ranges per launch, each with a number of
 * work-groups that follows its size (a fixed function of the layout: results are bitwise
 * repeatable for a given layout). K is 32 where the device's kernel-argument limit
 * (CL_DEVICE_MAX_PARAMETER_SIZE) takes 3 K + 7 buffers, else 16; 8 on Apple's GPUs, whose
 * Metal-based OpenCL takes at most 31 buffer arguments. A step over P ranges on the fused
 * backend enqueues 2 ceil(P/K) + 1 kernels (more only when n exceeds one state buffer of the
 * device).
 * The plan of a segment list is kept: a step with the same lists as the step before is not
 * validated again. To make that safe, the combiner holds a reference (clRetainMemObject) on
 * the buffers of its last segment lists until other lists are used or it is destroyed.
 * ------------------------------------------------------------------------------------------- */
/*
 * Element types. Each segment of g, a and d has its own (a model may mix them; d need not
 * match g or a). Whatever they are, the state (the EMAs) is fp32 and every dot product is
 * summed in fp32 with the same compensation: a value is widened as it is read (exactly: every
 * F16 and BF16 value is a float), multiplied by its inverse loss scale (bloopcl_step_options),
 * and d is rounded once into its own type as it is written, to nearest with ties to even;
 * beyond the type's range it becomes an infinity of its sign, and a NaN stays a NaN with its
 * sign and upper payload bits, the quiet bit set (on every driver: the kernels write NaN bits
 * themselves). F16 uses OpenCL's vload_half and vstore_half_rte (core OpenCL 1.2, no
 * cl_khr_fp16 needed). The FUSED backend takes every
 * type; CLBLAST reads g and a with CLBlastSdot, which takes fp32 only (BLOOPCL_ERR_UNSUPPORTED
 * for other types there). bloopcl_convert converts on the host by exactly the same rules.
 * Memory moved per element (FUSED, pass 1 + pass 2, state fp32): BLOOP 4 (g) + 4 (a) + 4 (m)
 * read, then g, a, m read and m, d written: 12 + 12 + 8 = 32 B with everything F32; with g, a
 * and d in 2-byte types 2 + 2 + 4 + (2 + 2 + 4) + 4 + 2 = 22 B. README "Mixed precision" has
 * the table for every method and combination.
 */
typedef enum bloopcl_dtype {
    BLOOPCL_DTYPE_F32 = 0,  /* float (4 bytes) */
    BLOOPCL_DTYPE_F16 = 1,  /* IEEE 754 binary16, half (2 bytes) */
    BLOOPCL_DTYPE_BF16 = 2  /* bfloat16: the upper 16 bits of a float (2 bytes) */
} bloopcl_dtype;

/** Bytes per element of a type (4, 2, 2); 0 for a value that is no bloopcl_dtype. */
BLOOPCL_API size_t bloopcl_dtype_size(bloopcl_dtype dtype);

/** "f32", "f16", "bf16"; "unknown" for any other value. Never NULL. */
BLOOPCL_API const char *bloopcl_dtype_name(bloopcl_dtype dtype);

/**
 * Converts `count` elements on the host, by the kernels' rules (above): widening is exact,
 * narrowing rounds to nearest even. src and dst may be the same array only when the two types
 * have the same size. BLOOPCL_ERR_NULL_ARGUMENT for a NULL array (with count > 0),
 * BLOOPCL_ERR_INVALID_ARGUMENT for an unknown type.
 */
BLOOPCL_API bloopcl_status bloopcl_convert(const void *src, bloopcl_dtype src_dtype, void *dst,
                                           bloopcl_dtype dst_dtype, size_t count);

typedef struct bloopcl_segment {
    cl_mem buffer;          /* in the context's cl_context */
    size_t offset_bytes;    /* a multiple of the element size (bloopcl_dtype_size) */
    size_t count;           /* elements (0 allowed: the segment is skipped) */
    bloopcl_dtype dtype;    /* the element type of this segment (BLOOPCL_DTYPE_F32: 0) */
    uint32_t reserved;      /* must be 0 (memory kind, for later versions) */
} bloopcl_segment;

typedef struct bloopcl_tensor {
    const bloopcl_segment *segments;
    size_t num_segments;
} bloopcl_tensor;

/* ---------------------------------------------------------------------------------------------
 * Combiner: state and steps
 * ------------------------------------------------------------------------------------------- */
typedef struct bloopcl_combiner bloopcl_combiner;

typedef enum bloopcl_state_kind {
    BLOOPCL_STATE_EMA = 0,      /* m, the EMA of the main gradient */
    BLOOPCL_STATE_AUX_EMA = 1,  /* q, the EMA of the auxiliary gradient (PCGRAD only) */
    /* Since 0.5.0: the attached optimizer's moments (bloopcl_combiner_set_optimizer) */
    BLOOPCL_STATE_MOMENT1 = 2,  /* SGD: the momentum buffer b; ADAMW: m (exp_avg) */
    BLOOPCL_STATE_MOMENT2 = 3   /* ADAMW: v (exp_avg_sq) */
} bloopcl_state_kind;

/** Scalars of the last step, read back from the device (see bloopcl_get_diagnostics). */
typedef struct bloopcl_diagnostics {
    size_t struct_size;      /* sizeof(bloopcl_diagnostics): set by BLOOPCL_DIAGNOSTICS_INIT */
    double ratio;            /* r actually used (after the dynamic-barrier clip) */
    double ratio_raw;        /* <m,a>/(<m,m>+eps) before any clip */
    double dot_ema_aux;      /* <m,a> */
    double ema_norm_sq;      /* <m,m> */
    double aux_norm_sq;      /* <a,a> */
    double cosine;           /* <m,a>/(|m| |a|), 0 when either norm is 0 */
    double aux_ratio;        /* PCGRAD: <q,g>/(<q,q>+eps) */
    double dot_aux_ema_main; /* PCGRAD: <q,g> */
    double aux_ema_norm_sq;  /* PCGRAD: <q,q> */
    int accepted;            /* 0 if the step was skipped for a non-finite input */
    uint64_t steps;          /* steps enqueued so far on this combiner */
    double grad_norm_sq;     /* <g,g>, the squared global norm of the main gradient */
    unsigned kernels;        /* kernels the last step enqueued (CLBlastSdot counts 2) */
    int reason;              /* a bloopcl_skip_reason: why the step was skipped (0 if not) */
    /* Since 0.5.0 */
    uint64_t optimizer_steps; /* steps the attached optimizer has applied (t), 0 without */
} bloopcl_diagnostics;

#define BLOOPCL_DIAGNOSTICS_INIT { .struct_size = sizeof(bloopcl_diagnostics) }

/**
 * The step's results on the device, for the trainer's own kernels: a buffer of
 * BLOOPCL_NUM_OUTPUTS floats at the indices below, written by every step (by its finalize
 * kernel, before the direction is written), so an optimizer enqueued after the step on the
 * same queue (or after its `done` event) can, say, skip a rejected step without a host read,
 * or clip by the gradient norm. The buffer belongs to the combiner (do not release it) and
 * lives as long as the combiner; the next step overwrites it.
 */
typedef enum bloopcl_output {
    BLOOPCL_OUTPUT_ACCEPTED = 0,        /* 1.0f: the step was applied; 0.0f: it was skipped */
    BLOOPCL_OUTPUT_RATIO = 1,           /* r used in d (after the dynamic-barrier clip) */
    BLOOPCL_OUTPUT_RATIO_RAW = 2,       /* <m,a>/(<m,m>+eps) */
    BLOOPCL_OUTPUT_AUX_RATIO = 3,       /* PCGRAD: <q,g>/(<q,q>+eps) */
    BLOOPCL_OUTPUT_SCALE = 4,           /* s */
    BLOOPCL_OUTPUT_EMA_WEIGHT = 5,      /* the w this step used (1 for a first-gradient init) */
    BLOOPCL_OUTPUT_DOT_EMA_AUX = 6,     /* <m,a> */
    BLOOPCL_OUTPUT_EMA_NORM_SQ = 7,     /* <m,m> */
    BLOOPCL_OUTPUT_AUX_NORM_SQ = 8,     /* <a,a> */
    BLOOPCL_OUTPUT_DOT_AUX_EMA_MAIN = 9,/* PCGRAD: <q,g> */
    BLOOPCL_OUTPUT_AUX_EMA_NORM_SQ = 10,/* PCGRAD: <q,q> */
    BLOOPCL_OUTPUT_GRAD_NORM_SQ = 11,   /* <g,g> */
    BLOOPCL_OUTPUT_REASON = 12,         /* why the step was skipped: a bloopcl_skip_reason */
    BLOOPCL_NUM_OUTPUTS = 13
} bloopcl_output;

/**
 * Why a step was skipped (BLOOPCL_OUTPUT_REASON, bloopcl_diagnostics.reason).
 *
 * Range: the dots are sums of fp32 products, which overflow once |x| reaches ~1.8e19 and
 * lose precision below ~1e-19 (subnormal products), while r, a ratio of two such sums, may be
 * an ordinary number. The FUSED backend rescues: it also keeps every dot with its products
 * scaled by 2^172 and by 2^-172 (exact, and free of extra memory traffic on normal data) and
 * forms r in an extended exponent range, so r and d are right wherever fp32 represents r; a
 * dot beyond FLT_MAX is reported as an infinity (IEEE overflow) without failing the step.
 * The CLBLAST backend reports: CLBlastSdot cannot rescale, so a step whose r depends on a dot
 * that overflowed or may have underflowed (nonzero and below 2^-100, or <m,m> + eps = 0) is
 * skipped as OUT_OF_RANGE.
 * With eps = 0 and m = 0 exactly, r = 0/0: policy SKIP takes r = 0 (nothing to project out;
 * CLBlast cannot tell m = 0 from underflow and skips the step instead), PROPAGATE keeps NaN.
 * Under PROPAGATE no step is skipped; the reason still says OUT_OF_RANGE where r or r_q (as d
 * uses them) came out infinite or NaN.
 */
typedef enum bloopcl_skip_reason {
    BLOOPCL_SKIP_NONE = 0,              /* accepted (or, PROPAGATE, nothing to report) */
    BLOOPCL_SKIP_NONFINITE_INPUT = 1,   /* g or a held NaN or Inf (policy SKIP) */
    BLOOPCL_SKIP_OUT_OF_RANGE = 2       /* finite inputs, r or r_q beyond fp32 (see above) */
} bloopcl_skip_reason;

/**
 * Creates a combiner for vectors of n elements (n >= 1). The configuration is validated and
 * copied; the state is allocated on the device and initialised as config->init says.
 * n: for every method, n * 4 bytes must not overflow size_t (BLOOPCL_ERR_SIZE_MISMATCH) and one
 * vector of n floats must fit the device's global memory (BLOOPCL_ERR_OUT_OF_MEMORY).
 * Device memory: what the new combiner's state needs (4 or 8 bytes per element on FUSED, 8 or
 * 16 on CLBLAST) plus what the context's live combiners already hold (their states, and the
 * staging buffers of bloopcl_step_host, 12 bytes per element, counted at its first call) must
 * fit in CL_DEVICE_GLOBAL_MEM_SIZE, or the call returns BLOOPCL_ERR_OUT_OF_MEMORY with the
 * figures in the message, before anything is allocated (some drivers, PoCL among them, back
 * buffers lazily and abort when they cannot). No buffer exceeds CL_DEVICE_MAX_MEM_ALLOC_SIZE:
 * the state is cut into chunks. Memory held by other contexts, other processes, the caller's
 * own buffers and the small per-step buffers is not counted.
 */
BLOOPCL_API bloopcl_status bloopcl_combiner_create(bloopcl_context *ctx,
                                                   const bloopcl_config *config, size_t n,
                                                   bloopcl_combiner **out);

BLOOPCL_API void bloopcl_combiner_destroy(bloopcl_combiner *combiner);

/** The configuration in force (with the backend resolved: never BLOOPCL_DOTS_AUTO). */
BLOOPCL_API bloopcl_status bloopcl_combiner_config(const bloopcl_combiner *combiner,
                                                   bloopcl_config *config);

/** Changes w, lambda and eps between steps (schedules). Validated like the configuration. */
BLOOPCL_API bloopcl_status bloopcl_combiner_set_hyperparameters(bloopcl_combiner *combiner,
                                                                double ema_weight, double lambda,
                                                                double eps);

/** The context the combiner was created on (its last error holds the combiner's messages);
 * NULL for NULL. */
BLOOPCL_API bloopcl_context *bloopcl_combiner_context(const bloopcl_combiner *combiner);

/** The number of elements n the combiner was created for; 0 for NULL. */
BLOOPCL_API size_t bloopcl_combiner_size(const bloopcl_combiner *combiner);

/** The combiner's output buffer (see bloopcl_output); never NULL for a valid combiner. */
BLOOPCL_API bloopcl_status bloopcl_combiner_outputs(const bloopcl_combiner *combiner,
                                                    cl_mem *outputs);

/**
 * Enqueues one step on the context's queue and returns without waiting. Reads g and a, writes
 * d, updates the state. Scalars never travel to the host inside a step. If `wait_list` is not
 * NULL the step starts after those events (an event that has already failed is refused:
 * BLOOPCL_ERR_INVALID_ARGUMENT); if `done` is not NULL it receives an event that completes
 * with the step (release it with clReleaseEvent). The queue is flushed before the call
 * returns, so `done` may be waited on from another queue or thread.
 * On success the step was enqueued; on any failure it was not applied, `*done` is NULL and
 * the state is unchanged, except for BLOOPCL_ERR_STATE_INVALID (see the conventions above).
 * A skipped step (policy SKIP: a non-finite input, or a ratio out of fp32's range) is visible
 * through the diagnostics and the output buffer (BLOOPCL_OUTPUT_ACCEPTED = 0, and
 * BLOOPCL_OUTPUT_REASON says why).
 */
BLOOPCL_API bloopcl_status bloopcl_step(bloopcl_combiner *combiner, const bloopcl_tensor *g,
                                        const bloopcl_tensor *a, const bloopcl_tensor *d,
                                        cl_uint num_wait_events, const cl_event *wait_list,
                                        cl_event *done);

/**
 * Options of one step (bloopcl_step_with_options).
 *
 * Loss scaling: mixed-precision trainers multiply the loss by a scale S before the backward
 * pass so that small fp16 gradients do not underflow; the stored gradient is then S times the
 * true one. The step reads g_true = g_stored * inv_scale_g and a_true = a_stored * inv_scale_a
 * (in fp32, after widening, before anything else), so the EMA, the dots (the gradient norm
 * among them: BLOOPCL_OUTPUT_GRAD_NORM_SQ is ||g_true||^2) and d are those of the true
 * gradients, and d is unscaled. Non-finite detection (policy SKIP) looks at the scaled values:
 * an Inf or NaN stored in g or a (an overflow in the backward pass), or a product that
 * overflows, skips the step (state unchanged, BLOOPCL_OUTPUT_ACCEPTED = 0 on the device):
 * what a dynamic loss scaler needs to back off, without a host read.
 * The inverse scales come from the host (inv_scale_g, inv_scale_a: finite and > 0, rounded to
 * float) or, when inv_scale_buffer is not NULL, from that buffer on the device, read by this
 * step after its wait list (floats at the given indices; the caller's scaler kernels keep
 * them there; any value is used as it is, and a non-finite one makes the step non-finite).
 */
typedef struct bloopcl_step_options {
    size_t struct_size;         /* sizeof(bloopcl_step_options): set by *_default or _INIT */
    double inv_scale_g;         /* 1: unscaled */
    double inv_scale_a;
    cl_mem inv_scale_buffer;    /* NULL: the two values above; else a buffer of floats */
    size_t inv_scale_g_index;   /* the float index of g's inverse scale in that buffer */
    size_t inv_scale_a_index;   /* and of a's (may be the same index) */
    /* Since 0.5.0: the fused optimizer (see "Optimizer in the step" below) */
    int update_parameters;      /* nonzero: d is the parameter vector, updated in place by the
                                   attached optimizer; the direction is not written anywhere */
    cl_mem lr_buffer;           /* NULL: the optimizer's lr; else the learning rate is read by
                                   this step, after its wait list, from this buffer of floats */
    size_t lr_index;            /* the float index of the learning rate in lr_buffer */
} bloopcl_step_options;

#define BLOOPCL_STEP_OPTIONS_INIT \
    { .struct_size = sizeof(bloopcl_step_options), .inv_scale_g = 1.0, .inv_scale_a = 1.0 }

/** Fills `options` with the defaults: struct_size set, scales 1, no buffer. */
BLOOPCL_API void bloopcl_step_options_default(bloopcl_step_options *options);

/**
 * bloopcl_step with options (NULL: the defaults, which make it bloopcl_step). Bad options are
 * refused before anything is enqueued: a host scale that is not finite and > 0 (as a float),
 * BLOOPCL_ERR_INVALID_ARGUMENT; a buffer of another cl_context, BLOOPCL_ERR_WRONG_CONTEXT;
 * one smaller than its indices need, BLOOPCL_ERR_BUFFER_TOO_SMALL.
 */
BLOOPCL_API bloopcl_status bloopcl_step_with_options(bloopcl_combiner *combiner,
                                                     const bloopcl_tensor *g,
                                                     const bloopcl_tensor *a,
                                                     const bloopcl_tensor *d,
                                                     const bloopcl_step_options *options,
                                                     cl_uint num_wait_events,
                                                     const cl_event *wait_list, cl_event *done);

/** bloopcl_step for three single buffers holding n floats each at offset 0. A NULL segment
 * list with num_segments > 0 is BLOOPCL_ERR_NULL_ARGUMENT; num_segments = 0 is
 * BLOOPCL_ERR_SIZE_MISMATCH. */
BLOOPCL_API bloopcl_status bloopcl_step_buffers(bloopcl_combiner *combiner, cl_mem g, cl_mem a,
                                                cl_mem d);

/**
 * Blocking convenience for host arrays of n floats: copies in, steps, copies d out.
 * Returns BLOOPCL_ERR_NONFINITE_INPUT (or BLOOPCL_ERR_OUT_OF_RANGE: bloopcl_skip_reason) if
 * the step was skipped (d is then all zeros).
 * The first call allocates staging buffers for g, a and d (12 bytes per element), counted
 * against the device's memory as bloopcl_combiner_create says (BLOOPCL_ERR_OUT_OF_MEMORY,
 * before reading anything).
 */
BLOOPCL_API bloopcl_status bloopcl_step_host(bloopcl_combiner *combiner, const float *g,
                                             const float *a, float *d);

/* ---------------------------------------------------------------------------------------------
 * Optimizer in the step (since 0.5.0)
 *
 * A trainer that runs its own optimizer after bloopcl reads d back and writes the parameters:
 * for AdamW, 32 bytes per element for bloopcl (BLOOP, FUSED, fp32) and 28 more. Attached to
 * a combiner, the optimizer runs inside pass 2 instead: each element's direction goes straight
 * into the update, d is never written, and the step moves 52 bytes per element (BLOOP +
 * AdamW; 44 for SGD with momentum, 36 without) in the same number of launches as a plain step.
 *
 * A step with options->update_parameters set takes the parameters in d's place (a segment
 * list with g's layout, of any element type; they may share no memory with g or a) and
 * updates them in place; with t the number of optimizer steps applied, this one included,
 * lr the learning rate and wd the weight decay (as PyTorch's documentation writes them):
 *
 *   weight decay  decoupled: p <- p (1 - lr wd);  L2: d <- d + wd p
 *   SGD           momentum mu: b <- d if t = 1, else mu b + (1 - dampening) d;
 *                 d <- d + mu b (Nesterov) or b;   p <- p - lr d
 *   ADAMW         m <- m + (1 - beta1) (d - m);    v <- beta2 v + (1 - beta2) d^2
 *                 p <- p - (lr / c1) m / (sqrt(v) / sqrt(c2) + eps),
 *                 c1 = 1 - beta1^t, c2 = 1 - beta2^t (1 without bias correction)
 *
 * Everything is fp32 (a 2-byte parameter is widened, updated and rounded once). The moments
 * live in the combiner, fp32, one vector each, updated in place; t is counted on the device
 * (a skipped step does not count), so bias correction needs no host round trip.
 * A skipped step (policy SKIP: non-finite input, ratio out of range) leaves the parameters,
 * the moments and t untouched. Checkpoints: bloopcl_read_state / bloopcl_write_state with
 * BLOOPCL_STATE_MOMENT1 and _MOMENT2, and bloopcl_optimizer_steps /
 * bloopcl_set_optimizer_steps; resuming from them continues bit for bit. Split steps take the
 * option too (each shard updates its slice). A driver failure part-way through pass 2 leaves
 * the parameters and moments partly updated: BLOOPCL_ERR_STATE_INVALID, as for the EMA.
 * ------------------------------------------------------------------------------------------- */
typedef enum bloopcl_optimizer_kind {
    BLOOPCL_OPTIMIZER_NONE = 0,     /* no optimizer: update_parameters is refused */
    BLOOPCL_OPTIMIZER_SGD = 1,      /* SGD with momentum, dampening, Nesterov */
    BLOOPCL_OPTIMIZER_ADAMW = 2     /* Adam(W) with bias correction */
} bloopcl_optimizer_kind;

typedef struct bloopcl_optimizer {
    size_t struct_size;         /* sizeof(bloopcl_optimizer): set by bloopcl_optimizer_default */
    bloopcl_optimizer_kind kind;
    double lr;                  /* >= 0, finite (a step's lr_buffer overrides it) */
    double weight_decay;        /* >= 0, finite */
    int decoupled_weight_decay; /* nonzero: p <- p (1 - lr wd) (AdamW, SGDW); 0: L2 */
    double momentum;            /* SGD: >= 0, finite; 0: no momentum buffer */
    double dampening;           /* SGD: in [0, 1] */
    int nesterov;               /* SGD: needs momentum > 0 and dampening 0 */
    double beta1, beta2;        /* ADAMW: in [0, 1) */
    double eps;                 /* ADAMW: >= 0, finite */
    int bias_correction;        /* ADAMW: nonzero: divide by 1 - beta^t */
} bloopcl_optimizer;

/** Defaults of PyTorch: SGD lr 1e-3, no momentum, no weight decay (L2); ADAMW (torch.optim.AdamW)
 * lr 1e-3, betas 0.9 and 0.999, eps 1e-8, weight decay 1e-2 decoupled, bias correction. */
BLOOPCL_API void bloopcl_optimizer_default(bloopcl_optimizer *optimizer,
                                           bloopcl_optimizer_kind kind);

/** Checks an optimizer without attaching it; `message` (optional) says what is wrong. */
BLOOPCL_API bloopcl_status bloopcl_optimizer_validate(const bloopcl_optimizer *optimizer,
                                                      char *message, size_t message_size);

/**
 * Attaches an optimizer to the combiner (NULL or kind NONE: detaches it and frees its
 * moments). A different kind than the one attached allocates its moments (4 bytes per element
 * each, counted against the device's memory as bloopcl_combiner_create says), zeroed, with
 * t = 0; the same kind with the same moments (SGD's momentum staying zero or non-zero) only
 * changes the hyperparameters (schedules of weight decay, say) and keeps the moments and t. Refused while a split step is pending. If the new moments cannot
 * be allocated, the call fails with no optimizer attached (the old one is gone).
 */
BLOOPCL_API bloopcl_status bloopcl_combiner_set_optimizer(bloopcl_combiner *combiner,
                                                          const bloopcl_optimizer *optimizer);

/** The attached optimizer (kind NONE if none). */
BLOOPCL_API bloopcl_status bloopcl_combiner_optimizer(const bloopcl_combiner *combiner,
                                                      bloopcl_optimizer *optimizer);

/** The learning rate of the next steps (schedules): >= 0 and finite. */
BLOOPCL_API bloopcl_status bloopcl_combiner_set_learning_rate(bloopcl_combiner *combiner,
                                                              double lr);

/** Blocking: the optimizer steps applied so far (t), for checkpoints. */
BLOOPCL_API bloopcl_status bloopcl_optimizer_steps(bloopcl_combiner *combiner, uint64_t *steps);

/** Sets t (resuming a checkpoint; at most 2^31 - 1). */
BLOOPCL_API bloopcl_status bloopcl_set_optimizer_steps(bloopcl_combiner *combiner,
                                                       uint64_t steps);

/* ---------------------------------------------------------------------------------------------
 * Several auxiliary gradients (since 0.5.0)
 *
 * Multi-task trainers have k auxiliary losses, each with its own weight lambda_i. With m the
 * EMA of g, updated first as always:
 *
 *   BLOOP             r_i = <m,a_i>/(<m,m>+eps);   d = s (g + sum_i lambda_i (a_i - r_i m))
 *   DYNAMIC_BARRIER   as BLOOP with each r_i <- min(r_i, 1/lambda_i)
 *   MIXED             d = s (g + sum_i lambda_i a_i)
 *   ratio_only        d = s ((1 - sum_i lambda_i r_i) g + sum_i lambda_i a_i)
 *   PCGRAD            the two-task method: k = 1 only (BLOOPCL_ERR_UNSUPPORTED otherwise)
 *
 * with s = 1/(1 + sum_i lambda_i) under rescale, else 1. The combiner's own lambda is not
 * used: the weights come with each step. k = 1 is bloopcl_step_with_options with lambda =
 * lambda_1, bit for bit.
 * For k >= 2 the step runs one accumulate launch per gradient (per 8-32 ranges), which adds
 * lambda_i a_i into a sum A the combiner keeps (fp32, n floats, allocated at the first such
 * step and counted against the device's memory) and takes <m,a_i>, <g,a_i> and <a_i,a_i>;
 * then the one-gradient step on A, whose finalize forms every r_i (one more kernel). Each
 * gradient costs 20 bytes per element more (fp32: it reads g, m, a_i and A, writes A), and
 * the sum A needs one buffer of n floats (BLOOPCL_ERR_UNSUPPORTED where n floats pass the
 * device's largest allocation). For k >= 2 the auxiliary gradients' dots are plain
 * compensated fp32 sums (the single-gradient step's rescue from fp32's range does not
 * apply: a ratio beyond it skips the step as BLOOPCL_SKIP_OUT_OF_RANGE), the inverse loss
 * scale of a must be 1 and on the host, and there is no split-step form.
 * Everything else is bloopcl_step_with_options': g, d (or the parameters) and options.
 * ------------------------------------------------------------------------------------------- */
#define BLOOPCL_MAX_AUX 8

/**
 * One step with `count` (1..BLOOPCL_MAX_AUX) auxiliary gradients aux[0..count-1], each a
 * segment list with g's layout, weighted by lambdas[i] (finite, >= 0). Bad arguments are
 * refused before anything is enqueued, as bloopcl_step refuses them; a non-finite value in g
 * or any a_i skips the step (policy SKIP).
 */
BLOOPCL_API bloopcl_status bloopcl_step_aux(bloopcl_combiner *combiner, const bloopcl_tensor *g,
                                            const bloopcl_tensor *aux, const double *lambdas,
                                            size_t count, const bloopcl_tensor *d,
                                            const bloopcl_step_options *options,
                                            cl_uint num_wait_events, const cl_event *wait_list,
                                            cl_event *done);

/** The scalars of one auxiliary gradient in the last step (bloopcl_get_aux_diagnostics). */
typedef struct bloopcl_aux_diagnostics {
    size_t struct_size;      /* sizeof(bloopcl_aux_diagnostics): BLOOPCL_AUX_DIAGNOSTICS_INIT */
    double lambda;           /* its weight, as the kernels saw it (rounded to float) */
    double ratio;            /* r_i used (after the dynamic barrier's clip) */
    double ratio_raw;        /* <m,a_i>/(<m,m>+eps) */
    double dot_ema_aux;      /* <m,a_i> (0 for MIXED) */
    double aux_norm_sq;      /* <a_i,a_i> */
    double cosine;           /* <m,a_i>/(|m| |a_i|), 0 when either norm is 0 */
} bloopcl_aux_diagnostics;

#define BLOOPCL_AUX_DIAGNOSTICS_INIT { .struct_size = sizeof(bloopcl_aux_diagnostics) }

/** Waits for the last step and reads the scalars of its first `count` auxiliary gradients
 * into out[0..count-1] (each entry's struct_size set). A step other than bloopcl_step_aux
 * counts as one gradient with the combiner's lambda. BLOOPCL_ERR_STATE for more than it had. */
BLOOPCL_API bloopcl_status bloopcl_get_aux_diagnostics(bloopcl_combiner *combiner,
                                                       bloopcl_aux_diagnostics *out,
                                                       size_t count);

/** Waits for the last step and reads its scalars. */
BLOOPCL_API bloopcl_status bloopcl_get_diagnostics(bloopcl_combiner *combiner,
                                                   bloopcl_diagnostics *diagnostics);

/**
 * Copies the state (n floats) to the host, for checkpoints; blocking. BLOOPCL_ERR_STATE if the
 * method keeps no such state, or if the EMA is not initialised yet (INIT_FIRST_GRADIENT before
 * the first accepted step).
 */
BLOOPCL_API bloopcl_status bloopcl_read_state(bloopcl_combiner *combiner, bloopcl_state_kind kind,
                                              float *host, size_t n);

/** Overwrites the state from the host (resuming a checkpoint); marks it initialised. After
 * BLOOPCL_ERR_STATE_INVALID, writing every state kind of the method makes it valid again.
 * On the fused backend the state is single-buffered, so a driver failure during this call
 * leaves that kind invalid (BLOOPCL_ERR_STATE_INVALID) rather than as it was. */
BLOOPCL_API bloopcl_status bloopcl_write_state(bloopcl_combiner *combiner, bloopcl_state_kind kind,
                                               const float *host, size_t n);

/** Puts the state back as config->init made it at creation (also after
 * BLOOPCL_ERR_STATE_INVALID). */
BLOOPCL_API bloopcl_status bloopcl_reset_state(bloopcl_combiner *combiner);

/* ---------------------------------------------------------------------------------------------
 * Split steps: one step over a gradient sharded across devices or processes (ZeRO-1/2,
 * FSDP), each shard with its own combiner over its slice of g, a, d and the state.
 *
 * Bloop's projection is global: r needs the dot products over every shard. A split step runs
 * pass 1 on the local shard (bloopcl_step_begin), hands out the shard's totals, and, once the
 * caller has added the totals of all shards entrywise (in any transport: MPI, NCCL, sockets;
 * bloopcl_sum_totals does it deterministically on the host; bloopcl-mpi does all of it over an
 * MPI communicator), finishes with the global totals (bloopcl_step_end): the finalize and
 * pass 2, on the shard. Every shard given the same global totals computes the same scalars, so
 * the shards step as one: the state elementwise exactly as one device would, d within the
 * rounding of the dot products' order. With one shard, begin + end is bloopcl_step bit for
 * bit (d, state, diagnostics; diagnostics.kernels counts one kernel more, the totals' sum).
 * g and a are read again by bloopcl_step_end (pass 2): they must not change between begin
 * and end (a trainer that overlaps the exchange with the next backward pass needs other
 * buffers for it).
 *
 * bloopcl_step_begin does every check bloopcl_step does, so a shard that fails there has
 * enqueued nothing and can tell the others before the reduction; after it returns OK the
 * combiner takes only bloopcl_step_read_totals, bloopcl_step_copy_totals, bloopcl_step_end,
 * bloopcl_step_end_buffer and bloopcl_step_cancel (anything else: BLOOPCL_ERR_STATE) until
 * the step is ended or cancelled. A cancelled step changes nothing (state, flags, step count).
 *
 * The totals are BLOOPCL_NUM_TOTALS numbers whose only contract is that the global totals are
 * the entrywise sums of the shards' (an empty shard contributes zeros). Policy SKIP then skips
 * the step on every shard if any shard saw a non-finite input.
 * ------------------------------------------------------------------------------------------- */
#define BLOOPCL_NUM_TOTALS 20

/** Checks and enqueues pass 1 of a split step on this shard (arguments as
 * bloopcl_step_with_options). `totals` not NULL: waits for it and writes the shard's
 * BLOOPCL_NUM_TOTALS totals there (as bloopcl_step_read_totals); NULL: nothing is read (see
 * bloopcl_step_copy_totals). On an error nothing is pending and the state is unchanged. */
BLOOPCL_API bloopcl_status bloopcl_step_begin(bloopcl_combiner *combiner, const bloopcl_tensor *g,
                                              const bloopcl_tensor *a, const bloopcl_tensor *d,
                                              const bloopcl_step_options *options,
                                              cl_uint num_wait_events, const cl_event *wait_list,
                                              double *totals);

/** Blocking: the pending split step's local totals, BLOOPCL_NUM_TOTALS doubles (the fp32
 * totals widened). */
BLOOPCL_API bloopcl_status bloopcl_step_read_totals(bloopcl_combiner *combiner, double *totals);

/** Enqueues a copy of the local totals, BLOOPCL_NUM_TOTALS floats, into `buffer` at byte
 * `offset` (a buffer of the combiner's cl_context), for a device-side reduction. */
BLOOPCL_API bloopcl_status bloopcl_step_copy_totals(bloopcl_combiner *combiner, cl_mem buffer,
                                                    size_t offset);

/** Ends the pending split step with the global totals (BLOOPCL_NUM_TOTALS doubles, each
 * rounded once to fp32): finalize and pass 2, as bloopcl_step (`done` likewise). Afterwards,
 * OK or not, nothing is pending; a driver failure is reported as bloopcl_step reports it. */
BLOOPCL_API bloopcl_status bloopcl_step_end(bloopcl_combiner *combiner, const double *totals,
                                            cl_event *done);

/** bloopcl_step_end with the global totals on the device: BLOOPCL_NUM_TOTALS floats at byte
 * `offset` of `buffer`, read in queue order (after whatever the caller enqueued there). */
BLOOPCL_API bloopcl_status bloopcl_step_end_buffer(bloopcl_combiner *combiner, cl_mem buffer,
                                                   size_t offset, cl_event *done);

/** Abandons the pending split step (for example because another shard failed): the state,
 * the device flags and the step count stay as they were before bloopcl_step_begin. */
BLOOPCL_API bloopcl_status bloopcl_step_cancel(bloopcl_combiner *combiner);

/** Adds `shards` rows of BLOOPCL_NUM_TOTALS totals (row-major, in the order given) into `out`,
 * entrywise, with a compensated sum (exact for one row; the same bits for the same rows in
 * the same order on any machine). */
BLOOPCL_API bloopcl_status bloopcl_sum_totals(const double *rows, size_t shards, double *out);

#ifdef BLOOPCL_EXPERIMENTAL
/* =============================================================================================
 * Experimental API: defined only when BLOOPCL_EXPERIMENTAL is defined before this header is
 * included. It may change in any release, minor ones included (it is outside the ABI promise
 * above); a program that uses it should link the exact version it was built with.
 * ============================================================================================= */

/* ---------------------------------------------------------------------------------------------
 * CPU reference: plain loops, double accumulation — the oracle for tests and bloopcl-compare.
 * ------------------------------------------------------------------------------------------- */
typedef struct bloopcl_reference_state {
    size_t n;
    float *ema;         /* n floats, owned */
    float *aux_ema;     /* n floats for PCGRAD, else NULL */
    int initialized;    /* 0 only for INIT_FIRST_GRADIENT before the first accepted step */
} bloopcl_reference_state;

/** Allocates and initialises the state as the device combiner would (same random stream). */
BLOOPCL_API bloopcl_status bloopcl_reference_init(const bloopcl_config *config, size_t n,
                                                  bloopcl_reference_state *state);
BLOOPCL_API void bloopcl_reference_free(bloopcl_reference_state *state);

/** One step on the host. Same contract as bloopcl_step_host; `diagnostics` may be NULL. */
BLOOPCL_API bloopcl_status bloopcl_reference_step(const bloopcl_config *config,
                                                  bloopcl_reference_state *state, const float *g,
                                                  const float *a, float *d,
                                                  bloopcl_diagnostics *diagnostics);

/**
 * One step on the host over gradients of any type, with inverse loss scales, as the device
 * step takes them: g and a are widened and scaled exactly as the kernels do (bloopcl_convert,
 * then one fp32 multiplication by the scale rounded to float), the step is
 * bloopcl_reference_step's, and d is rounded into d_dtype. Scales must be finite and > 0.
 */
BLOOPCL_API bloopcl_status bloopcl_reference_step_typed(
    const bloopcl_config *config, bloopcl_reference_state *state, const void *g,
    bloopcl_dtype g_dtype, const void *a, bloopcl_dtype a_dtype, void *d, bloopcl_dtype d_dtype,
    double inv_scale_g, double inv_scale_a, bloopcl_diagnostics *diagnostics);

/** The optimizer's moments on the host (bloopcl_reference_optimizer_init allocates them). */
typedef struct bloopcl_reference_optimizer_state {
    size_t n;
    float *moment1;     /* n floats (SGD with momentum, ADAMW), else NULL; owned */
    float *moment2;     /* n floats (ADAMW), else NULL; owned */
    uint64_t steps;     /* t: optimizer steps applied */
} bloopcl_reference_optimizer_state;

BLOOPCL_API bloopcl_status bloopcl_reference_optimizer_init(const bloopcl_optimizer *optimizer,
                                                            size_t n,
                                                            bloopcl_reference_optimizer_state *state);
BLOOPCL_API void bloopcl_reference_optimizer_free(bloopcl_reference_optimizer_state *state);

/**
 * One optimizer step on the host, the equations of "Optimizer in the step" written out
 * element by element in fp32 (the operations the kernel does, in its order): the parameters
 * (n elements of `params_dtype`) are updated in place from the direction d at learning rate
 * lr. `accepted` 0 (a skipped step) changes nothing.
 */
BLOOPCL_API bloopcl_status bloopcl_reference_optimizer_step(
    const bloopcl_optimizer *optimizer, bloopcl_reference_optimizer_state *state, double lr,
    const float *d, int accepted, void *params, bloopcl_dtype params_dtype);

/**
 * One step with `count` auxiliary gradients on the host, from the definition (see "Several
 * auxiliary gradients"), dots in double; diagnostics[0..count-1] receive each gradient's
 * scalars (struct_size set by the function). Returns BLOOPCL_ERR_NONFINITE_INPUT (d zeros,
 * state unchanged) for a non-finite input under policy SKIP.
 */
BLOOPCL_API bloopcl_status bloopcl_reference_step_aux(const bloopcl_config *config,
                                                      bloopcl_reference_state *state,
                                                      const float *g, const float *const *aux,
                                                      const double *lambdas, size_t count,
                                                      float *d,
                                                      bloopcl_aux_diagnostics *diagnostics);

/** The N(0,1) stream used by BLOOPCL_INIT_RANDOM: element i of stream `seed`. */
BLOOPCL_API void bloopcl_reference_normal(uint64_t seed, size_t first, size_t count, float *out);
#endif /* BLOOPCL_EXPERIMENTAL */

#ifdef __cplusplus
}
#endif
#endif /* BLOOPCL_H */
