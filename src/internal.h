/* internal.h — structures and helpers shared by the library's source files (not installed). */
#ifndef BLOOPCL_INTERNAL_H
#define BLOOPCL_INTERNAL_H

#ifndef BLOOPCL_EXPERIMENTAL
#define BLOOPCL_EXPERIMENTAL 1  /* the library implements the experimental surface too */
#endif
#include "bloopcl.h"
#include "environment.h"
#include "layout.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>

#define BLOOPCL_ERROR_CAPACITY 8192

/* The kernels of one built program, one cl_kernel each (cl_kernel is not shareable across
 * threads, and a context is single-threaded, so one set per context is right). Steps launch
 * finalize from here; the multi-range kernels run from the plan's own per-launch cl_kernels
 * (bloopcl_launch_kernels), and these three only answer the per-kernel work-group limits. */
typedef struct bloopcl_kernels {
    cl_program program;
    cl_kernel ema_update;
    cl_kernel fused_dots;
    cl_kernel finalize;
    cl_kernel sum_partials;     /* the split step's halves of finalize (step_split.c) */
    cl_kernel finalize_totals;
    cl_kernel project;
    cl_kernel aux_accumulate;   /* several auxiliary gradients (aux.cl): limits only */
    cl_kernel aux_finalize;
    size_t fused_groups;      /* work-groups of the fused dot kernel (fixed: reproducible) */
    size_t fused_group_size;  /* work-items per group of the fused dot kernel */
    size_t elementwise_groups;        /* EMA and projection kernels: fixed geometry too */
    size_t elementwise_group_size;
    size_t finalize_group_size;
    unsigned slots;           /* ranges per launch of the multi-range kernels: 8, 16 or 32 */
    bool from_cache;          /* the program came from the on-disk binary cache */
} bloopcl_kernels;

struct bloopcl_context {
    cl_context cl_ctx;
    cl_device_id device;
    cl_command_queue queue;
    bloopcl_device_info info;
    bloopcl_kernels kernels;
    bloopcl_environment env;  /* the variables as they were at creation (environment.c) */
    bloopcl_log_fn log_fn;
    void *log_user;
    char cache_folder[4096];          /* "" when the binary cache is off */
    size_t state_chunk_elements;      /* largest state buffer, in floats (max alloc / 2, < 2^30) */
    bloopcl_dot_backend default_dots; /* BLOOPCL_DOTS, or the library's choice for the device */
    bool is_error_only;       /* created only to carry a creation error */
    bool used_clblast;        /* CLBlast compiled programs on this context (see destroy) */
    size_t xdot_wgs[2];       /* WGS1, WGS2 for CLBlast's Xdot; 0: CLBlast's own database */
    bool cpu_shape;           /* kernels in the CPU shape (contiguous float16 chunks) */
    size_t clblast_index_limit; /* largest offset + count CLBlast takes; 0: INT_MAX (tests
                                   lower it to run the sub-buffer path on small buffers) */
    unsigned vector_width;    /* floats per vector in the CPU shape: 1, 2, 4, 8 or 16 */
    bool owns_cl_ctx;         /* bloopcl created cl_ctx (not the caller's): see destroy */
    atomic_int busy;          /* 1 while a public call is inside (bloopcl__enter) */
    atomic_uint references;   /* the caller's (until bloopcl_context_destroy) + one per combiner */
    atomic_uint combiners;    /* live combiners */
    atomic_ullong held_bytes; /* device memory the live combiners hold (bloopcl__reserve_bytes) */
    char last_error[BLOOPCL_ERROR_CAPACITY];
};

/* Pieces never exceed this many elements: CLBlast and some drivers take int sizes/offsets. */
#define BLOOPCL_MAX_PIECE ((size_t)1 << 30)

/* One contiguous run of elements that lies in one segment of g, a and d (or in several that
 * lie end to end in all three, merged) and in one state chunk. */
typedef struct bloopcl_piece {
    cl_mem g, a, d;
    bloopcl_dtype g_dtype, a_dtype, d_dtype;
    size_t g_offset, a_offset, d_offset;  /* elements of each one's own type */
    size_t state_chunk;                   /* index into the combiner's state chunks */
    size_t state_offset;                  /* elements within that chunk */
    size_t count;
    size_t groups;                        /* work-groups serving it (see bloopcl__range_groups) */
} bloopcl_piece;

/* Up to `slots` (the kernels' BLOOPCL_SLOTS) consecutive pieces of one state chunk, served by
 * one kernel launch of each multi-range kernel (layout.h). */
typedef struct bloopcl_launch {
    size_t first_piece, num_pieces;
    size_t state_chunk;
    size_t groups;          /* work-groups of the launch: the sum over its pieces */
    size_t first_partial;   /* fused backend: the partial slot of its first work-group */
} bloopcl_launch;

/* The multi-range kernels, one cl_kernel per launch of the plan: each keeps its launch's
 * arguments between steps, so a step sets only the few that can change (the state buffers a
 * double buffer flips, w, lambda, the partials buffer). */
typedef enum bloopcl_launch_kernel {
    BLOOPCL_LAUNCH_EMA = 0,      /* bloopcl_ema_update (CLBlast backend) */
    BLOOPCL_LAUNCH_FUSED = 1,    /* bloopcl_fused_dots (fused backend) */
    BLOOPCL_LAUNCH_PROJECT = 2,  /* bloopcl_project (both) */
    BLOOPCL_LAUNCH_ACCUMULATE = 3, /* bloopcl_aux_accumulate (the plans of step_aux.c) */
    BLOOPCL_LAUNCH_KERNELS = 4
} bloopcl_launch_kernel;

typedef struct bloopcl_launch_kernels {
    cl_kernel kernel[BLOOPCL_LAUNCH_KERNELS];  /* NULL where the backend does not use it */
    bool bound[BLOOPCL_LAUNCH_KERNELS];        /* every argument set once */
} bloopcl_launch_kernels;

/* The checked, cut and packed form of the segment lists of the last step. A step with the same
 * lists reuses it: no validation, no clGetMemObjectInfo. The buffers it names are retained, so
 * no handle can be freed and reused by another buffer while the plan trusts it. */
typedef struct bloopcl_plan {
    bool valid;
    bloopcl_segment *lists;     /* g, a, d lists it was made from, num_segments each */
    size_t num_segments;
    cl_mem *held;               /* the distinct buffers of those lists, retained */
    size_t num_held;
    bloopcl_piece *pieces;
    size_t num_pieces;
    bloopcl_launch *launches;
    size_t num_launches;
    size_t total_groups;        /* fused backend: partial slots per dot */
    size_t slots;               /* rows per launch in the table */
    bloopcl_launch_kernels *kernels;  /* one set per launch */
    cl_mem table;               /* slots x BLOOPCL_SLOT_WORDS ulongs per launch */
    bool for_parameters;        /* checked with d as the parameters (no aliasing of g, a) */
    bool accumulates;           /* a plan of one auxiliary gradient (step_aux.c) */
} bloopcl_plan;

/* Several auxiliary gradients (step_aux.c): the weighted sum A, fp32 in one buffer of n
 * floats, a plan per gradient (g, a_i, A), their dot partials and per-gradient outputs. */
#define BLOOPCL_MAX_AUX_INTERNAL 8
typedef struct bloopcl_aux_state {
    cl_mem sum;                 /* A: n floats (NULL until the first step_aux with k >= 2) */
    bloopcl_segment *sum_segments;  /* A laid out as g's segments (num_sum_segments) */
    size_t num_sum_segments;
    bloopcl_plan plans[BLOOPCL_MAX_AUX_INTERNAL];
    cl_mem partials;            /* BLOOPCL_AUX_ROWS rows per gradient x partial_slots */
    size_t partial_slots;
    cl_mem outputs;             /* BLOOPCL_AUX_OUTPUTS floats per gradient */
    size_t count;               /* k of the last step_aux (0: none yet, 1: a plain step) */
    double lambdas[BLOOPCL_MAX_AUX_INTERNAL];
    cl_ulong reserved_bytes;
    bool active;                /* a step_aux with k >= 2 is being enqueued */
    double lambda_sum;          /* its sum of lambdas (s = 1/(1 + sum) with rescale) */
} bloopcl_aux_state;

/* What the layout planner needs to know of the device and the combiner (pure: tests feed it). */
typedef struct bloopcl_plan_limits {
    size_t chunk_capacity;      /* elements per state chunk */
    size_t group_budget;        /* work-groups a one-buffer step is spread over */
    size_t min_group_elements;  /* below this many elements per group, fewer groups */
    size_t slots;               /* ranges per launch (the kernels' BLOOPCL_SLOTS) */
} bloopcl_plan_limits;

/* Work-groups per range: its share (of its launch's elements) of the budget, but no group with
 * fewer than BLOOPCL_MIN_GROUP_ELEMENTS elements (a bias gets one); always at least one. */
#define BLOOPCL_MIN_GROUP_ELEMENTS ((size_t)4096)

/* The EMA state lives in chunks no larger than the device's largest allocation. The fused
 * backend keeps one buffer per chunk and updates it in place; the CLBlast backend keeps two:
 * a step reads `current`, writes the other one, then the host flips. */
typedef struct bloopcl_state_chunk {
    cl_mem ema[2];
    cl_mem aux_ema[2];
    size_t count;
} bloopcl_state_chunk;

/* The optimizer attached to a combiner (optimizer.c): its validated settings, the learning
 * rate as the kernels see it, and its moments, one buffer per state chunk holding `kinds`
 * vectors of the chunk's count floats end to end (m, then v), updated in place. */
typedef struct bloopcl_attached_optimizer {
    bloopcl_optimizer settings;  /* kind BLOOPCL_OPTIMIZER_NONE: none attached */
    float lr;
    unsigned kinds;              /* moment vectors: 0 (SGD without momentum), 1 or 2 */
    size_t num_chunks;
    cl_mem *moments;             /* num_chunks buffers (NULL when kinds is 0) */
    cl_ulong reserved_bytes;     /* of the combiner's share of ctx->held_bytes */
} bloopcl_attached_optimizer;

struct bloopcl_combiner {
    bloopcl_context *ctx;
    bloopcl_config config;     /* validated; initial_* pointers cleared after creation */
    float w, lambda, eps;      /* hyperparameters as the kernels see them */
    size_t n;
    size_t chunk_capacity;     /* elements per state chunk */
    size_t num_chunks;
    bloopcl_state_chunk *chunks;
    bool double_buffered;      /* CLBlast backend: ema[1 - current] is the spare buffer */
    int current;               /* which of the double buffers holds the state (0 in place) */
    unsigned invalid_kinds;    /* bit (1 << bloopcl_state_kind): that state is not valid */
    cl_mem scalars;            /* BLOOPCL_SCALAR_* floats: the public output buffer */
    cl_mem flags;              /* BLOOPCL_FLAG_* ints */
    cl_mem partials;           /* dot-product partial sums, BLOOPCL_PARTIAL_ROWS x slots */
    size_t partial_slots;
    bloopcl_plan plan;         /* of the last segment lists */
    cl_mem *staging[3];        /* bloopcl_step_host's device copies of g, a, d, per segment */
    size_t staging_segments;
    uint64_t steps;
    bloopcl_step_options options;  /* of the step being enqueued (validated) */
    unsigned kernels_last_step;  /* kernels the last step enqueued (diagnostics) */
    cl_ulong reserved_bytes;     /* of ctx->held_bytes, this combiner's share */
    bool live;                   /* created: counted in ctx->combiners */
    bool split_pending;          /* bloopcl_step_begin returned OK; bloopcl_step_end is due */
    cl_mem totals;               /* BLOOPCL_TOTALS floats of a split step (step_split.c) */
    unsigned split_kernels;      /* kernels bloopcl_step_begin enqueued */
    bloopcl_attached_optimizer optimizer;
    bloopcl_aux_state aux;
};

/* --- one step's phases (step.c; step_split.c runs them apart) ------------------------------ */
/* How far a step got: that decides what a failure has to undo, and whether it can. */
typedef struct bloopcl_step_progress {
    bool finalized;         /* a finalize kernel is enqueued: device flags changed */
    size_t projected;       /* pass-2 launches enqueued */
    unsigned kernels;
} bloopcl_step_progress;
/* Everything a step can refuse, refused before anything is enqueued (then the wait list). */
bloopcl_status bloopcl__prepare_step(bloopcl_combiner *comb, const bloopcl_tensor *g,
                                     const bloopcl_tensor *a, const bloopcl_tensor *d,
                                     const bloopcl_step_options *options, cl_uint num_wait,
                                     const cl_event *wait_list);
bloopcl_status bloopcl__enqueue_first_pass(bloopcl_combiner *comb,
                                           bloopcl_step_progress *progress);
/* The finalize kernels' arguments from `first` on (BLOOPCL_DECISION_PARAMS, finalize.cl). */
bloopcl_status bloopcl__set_decision_args(bloopcl_combiner *comb, cl_kernel kernel,
                                          const char *name, cl_uint first);
/* The finalize kernel of a one-device step (partials -> decision). */
bloopcl_status bloopcl__enqueue_finalize(bloopcl_combiner *comb);
bloopcl_status bloopcl__enqueue_second_pass(bloopcl_combiner *comb,
                                            bloopcl_step_progress *progress, cl_event *done);
bloopcl_status bloopcl__fail_step(bloopcl_combiner *comb, const bloopcl_step_progress *progress,
                                  bloopcl_status status);
/* The end of a step whose kernels were enqueued (status OK: flush and commit it, `event`
 * into *done) or failed part-way (status: release `event`, undo what can be undone). */
bloopcl_status bloopcl__settle_step(bloopcl_combiner *comb,
                                    const bloopcl_step_progress *progress,
                                    bloopcl_status status, cl_event event, cl_event *done);
/* CL_SUCCESS, or the first error (the flags may then be left as the failed step set them). */
cl_int bloopcl__undo_flags(bloopcl_combiner *comb, bool finalized);
bloopcl_status bloopcl__enqueue_kernel(bloopcl_context *ctx, cl_kernel kernel, const char *name,
                                      size_t global, size_t local, cl_event *event);
/* BLOOPCL_ERR_STATE (message naming `call`) while a split step is between begin and end. */
bloopcl_status bloopcl__check_no_split_step(bloopcl_combiner *comb, const char *call);

/* --- threads and lifetime (context.c) ------------------------------------------------------ */
/* A public call that uses the context's queue, kernels or a combiner's state enters first:
 * false (the caller returns BLOOPCL_ERR_BUSY, touching nothing, not even last_error) while
 * another thread is inside. Enter and leave order the context's memory between the threads
 * that take turns (acquire, release). Internal calls never enter twice. */
bool bloopcl__enter(bloopcl_context *ctx);
void bloopcl__leave(bloopcl_context *ctx);
/* A combiner holds a reference on its context; the last release frees it. */
void bloopcl__context_retain(bloopcl_context *ctx);
void bloopcl__context_release(bloopcl_context *ctx);
/* Device memory accounting of a context: BLOOPCL_ERR_OUT_OF_MEMORY (figures in the message,
 * nothing recorded) when what the context's combiners already hold plus `bytes` passes the
 * device's global memory; else adds `bytes` to the combiner's share. `what` names the use. */
bloopcl_status bloopcl__reserve_bytes(bloopcl_combiner *comb, cl_ulong bytes, const char *what);
void bloopcl__unreserve_bytes(bloopcl_combiner *comb, cl_ulong bytes);
/* The process-wide lock around every CLBlast call (dots_clblast.c): CLBlast's first call
 * initialises process-wide caches without a lock of its own. */
void bloopcl__clblast_lock(void);
void bloopcl__clblast_unlock(void);

/* --- element types on the host (dtype.c: bit for bit as cl/dtype.cl) ----------------------- */
float bloopcl__f16_to_float(uint16_t bits);
uint16_t bloopcl__float_to_f16(float x);
float bloopcl__bf16_to_float(uint16_t bits);
uint16_t bloopcl__float_to_bf16(float x);
/* Element i of an array of `dtype` (a known type), widened; and narrowed into it. */
float bloopcl__load_element(const void *array, bloopcl_dtype dtype, size_t i);
void bloopcl__store_element(void *array, bloopcl_dtype dtype, size_t i, float x);

/* --- errors (error.c) ---------------------------------------------------------------------- */
bloopcl_status bloopcl__fail(bloopcl_context *ctx, bloopcl_status status, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
bloopcl_status bloopcl__fail_cl(bloopcl_context *ctx, cl_int code, const char *call,
                                const char *what);
const char *bloopcl__cl_error_name(cl_int code);
void bloopcl__clear_error(bloopcl_context *ctx);
void bloopcl__log(bloopcl_context *ctx, bloopcl_log_level level, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Bounded, always terminated formatting into caller buffers (NULL buffer allowed). */
void bloopcl__format(char *buffer, size_t size, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* --- devices (device_list.c, device_select.c) ---------------------------------------------- */
bloopcl_status bloopcl__describe_device(cl_platform_id platform, cl_device_id device,
                                        bloopcl_device_info *info);
/* Pure matching of a spec against an enumerated list; no OpenCL calls, so tests can feed
 * synthetic lists. On failure `message` explains and lists the devices, naming the spec's
 * `source` ("device_spec", "BLOOPCL_DEVICE"; NULL: "device_spec") and quoting it escaped. */
bloopcl_status bloopcl__match_device_spec(const bloopcl_device_info *devices, size_t count,
                                          const char *spec, const char *source,
                                          size_t *selected, char *message, size_t message_size);
/* Appends "  N: platform / device (type)" lines for every device to `buffer`. */
void bloopcl__append_device_list(char *buffer, size_t size, const bloopcl_device_info *devices,
                                 size_t count);
const char *bloopcl__device_type_name(cl_device_type type);
/* bloopcl_list_devices that also says what it skipped: platforms whose devices cannot be
 * listed and devices that cannot be described are left out (the others still work), and
 * `skipped` (may be NULL) receives "" or one "; "-separated reason per skipped entry. */
bloopcl_status bloopcl__list_devices_noting(bloopcl_device_info *devices, size_t capacity,
                                            size_t *count, char *skipped, size_t skipped_size);
/* Every usable device in a fresh array (*devices NULL when there is none; the caller frees
 * it), listed in one pass under the process-wide enumeration lock (see device_list.c). */
bloopcl_status bloopcl__enumerate_devices(bloopcl_device_info **devices, size_t *count,
                                          char *skipped, size_t skipped_size);
/* bloopcl_select_device that also returns the skipped-entry notes (see above); a NULL spec
 * takes environment_spec (the context's copy of BLOOPCL_DEVICE), named as BLOOPCL_DEVICE. */
bloopcl_status bloopcl__select_device_noting(const char *spec, const char *environment_spec,
                                             bloopcl_device_info *selected,
                                             char *message, size_t message_size,
                                             char *skipped, size_t skipped_size);

/* --- public structs across versions (abi.c) ------------------------------------------------ */
/* Inputs: the caller's struct (any version) read over the defaults; params may be NULL. */
bloopcl_status bloopcl__read_config(const bloopcl_config *given, bloopcl_config *config,
                                    char *message, size_t message_size);
bloopcl_status bloopcl__read_context_params(const bloopcl_context_params *given,
                                            bloopcl_context_params *params, char *message,
                                            size_t message_size);
bloopcl_status bloopcl__read_step_options(const bloopcl_step_options *given,
                                          bloopcl_step_options *options, char *message,
                                          size_t message_size);
bloopcl_status bloopcl__read_optimizer(const bloopcl_optimizer *given,
                                      bloopcl_optimizer *optimizer, char *message,
                                      size_t message_size);
bloopcl_status bloopcl__write_optimizer(bloopcl_optimizer *out, const bloopcl_optimizer *ours,
                                       char *message, size_t message_size);
/* Outputs: the prefix of the library's struct that the caller's struct_size holds. */
bloopcl_status bloopcl__write_config(bloopcl_config *out, const bloopcl_config *config,
                                     char *message, size_t message_size);
bloopcl_status bloopcl__write_device_info(bloopcl_device_info *out,
                                          const bloopcl_device_info *info, char *message,
                                          size_t message_size);
bloopcl_status bloopcl__write_device_infos(bloopcl_device_info *out, size_t capacity,
                                           const bloopcl_device_info *infos, size_t count,
                                           char *message, size_t message_size);
bloopcl_status bloopcl__write_diagnostics(bloopcl_diagnostics *out,
                                          const bloopcl_diagnostics *diagnostics, char *message,
                                          size_t message_size);

/* --- messages (text_quote.c) ---------------------------------------------------------------- */
/* `length` bytes of caller or environment text as "..." with every byte outside printable
 * ASCII escaped (\n, \r, \t, \xNN) and '"', '\' backslashed; cut to fit `size` (then
 * followed by "... (N bytes)"). Writes "" when size < 35. */
void bloopcl__quote(char *out, size_t size, const char *text, size_t length);

/* --- context policy (context.c): pure rules, unit-tested ------------------------------------ */
/* The backend of BLOOPCL_DOTS_AUTO combiners on a device of `type`, with `forced` the value of
 * BLOOPCL_DOTS (NULL/""/"auto": the library's rule, FUSED on every type). */
bloopcl_status bloopcl__default_dots(cl_device_type type, const char *forced,
                                     bloopcl_dot_backend *dots);
/* The CPU shape's vector width from the device's preferred and native float widths (0: not
 * reported): the preferred one, else the native one, else 1, rounded down to 1, 2, 4, 8, 16. */
unsigned bloopcl__vector_width(cl_uint preferred, cl_uint native);

/* --- build options (build_options.c) ------------------------------------------------------- */
/* The next shell-like word of `text` from *position (blanks separate, '...' and "..." group
 * and are removed) into `word` (truncated to word_size - 1): 1 a word, 0 none left, -1 the
 * word has an unterminated quote. */
int bloopcl__next_build_option(const char *text, size_t *position, char *word, size_t word_size);
/* BLOOPCL_ERR_INVALID_ARGUMENT, naming the option in `message`, for options that break the
 * kernels' invariants (fast/relaxed math family, -DBLOOPCL_*, -D BLOOPCL_*). NULL is fine. */
bloopcl_status bloopcl__check_build_options(const char *options, char *message,
                                            size_t message_size);

/* --- CLBlast (dots_clblast.c) ------------------------------------------------------------ */
/* Reads BLOOPCL_CLBLAST_XDOT ("WGS1,WGS2" or "default"): Xdot parameters for CLBlast. */
bloopcl_status bloopcl__choose_xdot_parameters(bloopcl_context *ctx);

/* --- programs (program.c) ------------------------------------------------------------------ */
bloopcl_status bloopcl__build_kernels(bloopcl_context *ctx, const char *extra_options);
void bloopcl__release_kernels(bloopcl_kernels *kernels);
/* Work-group limits of the device and of each kernel (CL_KERNEL_WORK_GROUP_SIZE). */
typedef struct bloopcl_group_limits {
    size_t device_max;    /* CL_DEVICE_MAX_WORK_GROUP_SIZE */
    size_t item_max;      /* CL_DEVICE_MAX_WORK_ITEM_SIZES[0] */
    size_t ema_update, fused_dots, finalize, project;
} bloopcl_group_limits;
/* Sets the kernels' group sizes (powers of two within every limit that applies). */
void bloopcl__choose_group_sizes(const bloopcl_group_limits *limits, bool cpu_shape,
                                 bloopcl_kernels *kernels);

/* --- configuration (config.c) -------------------------------------------------------------- */
bool bloopcl__method_has_ema(bloopcl_method method);
bool bloopcl__method_has_aux_ema(bloopcl_method method);
bloopcl_status bloopcl__validate_hyperparameters(double ema_weight, double lambda, double eps,
                                                 char *message, size_t message_size);

/* One kernel argument; bloopcl__set_arg_list sets a run of them from index `first`. */
typedef struct bloopcl_arg {
    size_t size;
    const void *value;
} bloopcl_arg;

/* --- steps (tensor_plan.c, step.c, dots_*.c) ----------------------------------------------- */
/* bloopcl_step and bloopcl_get_diagnostics inside a call that has already entered. */
bloopcl_status bloopcl__step(bloopcl_combiner *comb, const bloopcl_tensor *g,
                             const bloopcl_tensor *a, const bloopcl_tensor *d,
                             const bloopcl_step_options *options, cl_uint num_wait_events,
                             const cl_event *wait_list, cl_event *done);
/* The inverse loss scales of the step being enqueued, as the kernels take them (three
 * arguments each: host values, and whether to read the device copies in the flags instead). */
typedef struct bloopcl_kernel_scales {
    cl_float g, a;
    cl_int on_device;
} bloopcl_kernel_scales;
bloopcl_kernel_scales bloopcl__kernel_scales(const bloopcl_combiner *comb);
bloopcl_status bloopcl__get_diagnostics(bloopcl_combiner *comb, bloopcl_diagnostics *diagnostics);
/* Checks the lists (or finds them unchanged since the last step) and leaves their plan in
 * comb->plan. On failure the previous plan is kept and nothing was enqueued. */
bloopcl_status bloopcl__plan_step(bloopcl_combiner *comb, const bloopcl_tensor *g,
                                  const bloopcl_tensor *a, const bloopcl_tensor *d);
void bloopcl__plan_release(bloopcl_plan *plan);
/* Checks g, a and d (tensor_check.c): each segment, the counts against n, and the memory d
 * shares with g, a or itself. Nothing is enqueued. */
bloopcl_status bloopcl__check_tensors(bloopcl_combiner *comb, const bloopcl_tensor *const t[3]);
/* Pure layout planning (no OpenCL calls): merges, cuts and packs already-checked lists. Fills
 * pieces, launches and total_groups of `plan`; false only when memory runs out. */
bool bloopcl__plan_layout(const bloopcl_tensor *const t[3], const bloopcl_plan_limits *limits,
                          bloopcl_plan *plan);
size_t bloopcl__range_groups(size_t count, size_t launch_count,
                             const bloopcl_plan_limits *limits);
bloopcl_status bloopcl__ensure_partials(bloopcl_combiner *comb, size_t slots);
/* Pass 1 of each backend: EMA, non-finite check and partial dot products. */
size_t bloopcl__partial_slots(const bloopcl_combiner *comb);
bloopcl_status bloopcl__enqueue_clblast_pass(bloopcl_combiner *comb, unsigned *kernels);
bloopcl_status bloopcl__enqueue_fused_pass(bloopcl_combiner *comb, unsigned *kernels);
int bloopcl__dots_mask(const bloopcl_combiner *comb);
/* Sets the arguments of launch `index`'s kernel of that kind: the first time, the g (then a,
 * then d: `tensors` of them) buffers of the launch's pieces in slots x tensors arguments
 * (unused slots repeat the first piece's buffer) and every one of `rest`, which follow; after
 * that only the entries of `rest` marked in `changes` (they may differ between steps). */
bloopcl_status bloopcl__set_launch_args(bloopcl_combiner *comb, bloopcl_launch_kernel kind,
                                        size_t index, const char *name, int tensors,
                                        const bloopcl_arg *rest, const bool *changes,
                                        size_t count);
/* The same for a launch of any plan (the auxiliary gradients' own). */
bloopcl_status bloopcl__set_plan_launch_args(bloopcl_combiner *comb, bloopcl_plan *plan,
                                             bloopcl_launch_kernel kind, size_t index,
                                             const char *name, int tensors,
                                             const bloopcl_arg *rest, const bool *changes,
                                             size_t count);
/* bloopcl__plan_step for any plan: `accumulates` selects the kernels its launches get. */
bloopcl_status bloopcl__plan_tensors(bloopcl_combiner *comb, bloopcl_plan *target,
                                     const bloopcl_tensor *const tensors[3], bool accumulates);
/* The state buffers a launch reads (cur) and writes (next): the same buffer in place. */
typedef struct bloopcl_launch_state {
    cl_mem m_cur, m_next, q_cur, q_next;
} bloopcl_launch_state;
bloopcl_launch_state bloopcl__launch_state(const bloopcl_combiner *comb,
                                           const bloopcl_launch *launch);
/* The launch geometry: launch->groups work-groups of `local` work-items. `event` may be NULL. */
bloopcl_status bloopcl__enqueue_launch(bloopcl_context *ctx, cl_kernel kernel, const char *name,
                                       const bloopcl_launch *launch, size_t local,
                                       cl_event *event);
/* A state buffer of a launch's chunk, or a stand-in the kernels never read (methods without
 * that state): `spare` selects the buffer a double-buffered step writes. */
/* The double buffer's halves (combiner.c): the one read (spare = false) or written before a
 * commit (spare = true); commit makes the written one the state (a flip, or nothing in place). */
int bloopcl__state_half(const bloopcl_combiner *comb, bool spare);
void bloopcl__commit_state(bloopcl_combiner *comb);
cl_mem bloopcl__state_buffer(const bloopcl_combiner *comb, size_t chunk, bloopcl_state_kind kind,
                             bool spare);
/* Ranges per multi-range launch for a device: 8 on Apple (Metal's 31 buffer arguments), else
 * the most of 32, 16 whose arguments fit max_parameter_bytes (pure: tests feed it). */
unsigned bloopcl__slots_for(const char *platform_vendor, size_t max_parameter_bytes,
                            unsigned address_bits);
/* Bits (1 << bloopcl_state_kind) of the state kinds the combiner's method keeps. */
unsigned bloopcl__state_kinds(const bloopcl_combiner *comb);
/* CLBlast's level-1 routines take int offsets: if offset + count passes `limit` (INT_MAX), the
 * piece is read through a sub-buffer starting at an origin aligned to `align_bytes` at or below
 * the offset. Returns true and the origin (bytes) and the rebased offset (elements) when
 * needed. */
bool bloopcl__clblast_rebase(size_t offset, size_t count, size_t limit, size_t align_bytes,
                             size_t *origin_bytes, size_t *rebased_offset);

bloopcl_status bloopcl__set_arg_list(bloopcl_context *ctx, cl_kernel kernel, const char *name,
                                     cl_uint first, const bloopcl_arg *args, size_t count);

/* A bloopcl_arg's (size, pointer) pair: {BLOOPCL_ARG(x)}. */
#define BLOOPCL_ARG(value) sizeof(value), (const void *)&(value)

/* --- the optimizer in the step (optimizer.c) ------------------------------------------------ */
/* The step applies the attached optimizer (options->update_parameters). */
bool bloopcl__step_optimizes(const bloopcl_combiner *comb);
/* Refuses update_parameters without an optimizer and a bad lr_buffer; nothing enqueued. */
bloopcl_status bloopcl__check_optimizer_options(bloopcl_combiner *comb,
                                                const bloopcl_step_options *options);
/* A caller's buffer of floats named in the step options (step.c): of the context, a buffer;
 * its size in bytes. */
bloopcl_status bloopcl__check_float_buffer(bloopcl_context *ctx, cl_mem buffer, const char *what,
                                           size_t *bytes);
/* Enqueues the copy of a device learning rate into the flags (after the wait list). */
bloopcl_status bloopcl__copy_device_lr(bloopcl_combiner *comb);
/* The optimizer's arguments of the projection kernel for a launch on state chunk `chunk`
 * (BLOOPCL_OPTIMIZER_ARGS of them, from the moments buffer on), into `args` whose values
 * live in *storage. */
#define BLOOPCL_OPTIMIZER_ARGS 14
typedef struct bloopcl_optimizer_kernel_args {
    cl_mem moments;
    cl_ulong moment2_offset;
    cl_int kind, decoupled, nesterov, lr_on_device, bias_correction;
    cl_float lr, weight_decay, momentum, dampening, beta1, beta2, eps;
} bloopcl_optimizer_kernel_args;
void bloopcl__optimizer_kernel_args(const bloopcl_combiner *comb, size_t chunk,
                                    bloopcl_optimizer_kernel_args *storage, bloopcl_arg *args);
/* Moments as a state kind (bloopcl_read_state / _write_state; checked by the caller). */
bool bloopcl__has_moment(const bloopcl_combiner *comb, bloopcl_state_kind kind);
bloopcl_status bloopcl__read_moment(bloopcl_combiner *comb, bloopcl_state_kind kind, float *host);
bloopcl_status bloopcl__write_moment(bloopcl_combiner *comb, bloopcl_state_kind kind,
                                     const float *host);
/* Several auxiliary gradients (step_aux.c): releases what the combiner holds for them. */
void bloopcl__release_aux(bloopcl_combiner *comb);
/* Zeroes the moments and t (bloopcl_reset_state). */
bloopcl_status bloopcl__reset_optimizer(bloopcl_combiner *comb);
void bloopcl__release_optimizer(bloopcl_combiner *comb);

#endif /* BLOOPCL_INTERNAL_H */
