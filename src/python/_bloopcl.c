/* _bloopcl.c — the Python C API extension behind the `bloopcl` package.
 *
 * A thin layer over include/bloopcl.h: every struct is the header's own (no layout is copied),
 * every check the library makes stays the library's. What this file adds:
 *   - Python objects that own a bloopcl_context / bloopcl_combiner / reference state and hold a
 *     reference to every Python object whose OpenCL handle they passed down (the caller's
 *     queue, context, buffers), so nothing the library retains can be freed under it by Python;
 *   - the host path's buffer checks (1-D, C-contiguous, the element size and count the call
 *     needs, writable for outputs), made before any library call;
 *   - errors: a failed call raises the bloopcl.Error subclass of its status, whose message is
 *     bloopcl_context_last_error() (the library's own text), built by bloopcl._errors.
 * The GIL is released around every call into the library that may block or compile.
 * Nothing here prints. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <bloopcl.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

PyMODINIT_FUNC PyInit__bloopcl(void);

/* ---------------------------------------------------------------------------------------------
 * Errors: bloopcl._errors.error_for(status, message) gives the exception instance.
 * ------------------------------------------------------------------------------------------- */
static PyObject *errors_module = NULL;

static PyObject *raise_status(bloopcl_status status, const char *message)
{
    if (errors_module == NULL) {
        errors_module = PyImport_ImportModule("bloopcl._errors");
        if (errors_module == NULL)
            return NULL;
    }
    PyObject *exc = PyObject_CallMethod(errors_module, "error_for", "is", (int)status,
                                        message != NULL && message[0] != '\0'
                                            ? message
                                            : bloopcl_status_string(status));
    if (exc == NULL)
        return NULL;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Handles: Python ints <-> OpenCL handles.
 * ------------------------------------------------------------------------------------------- */
static int handle_from_object(PyObject *obj, void **out, const char *what)
{
    if (obj == NULL || obj == Py_None) {
        *out = NULL;
        return 0;
    }
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int handle, not %.100s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    void *p = PyLong_AsVoidPtr(obj);
    if (p == NULL && PyErr_Occurred())
        return -1;
    *out = p;
    return 0;
}

static PyObject *handle_to_object(const void *handle)
{
    return PyLong_FromUnsignedLongLong((unsigned long long)(uintptr_t)handle);
}

/* ---------------------------------------------------------------------------------------------
 * Host buffers
 * ------------------------------------------------------------------------------------------- */
/* Gets a 1-D C-contiguous buffer of `count` elements of `itemsize` bytes from obj; `writable`
 * for outputs. Raises bloopcl.Error (InvalidArgument / SizeMismatch) on anything else. */
static int get_host_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, size_t count,
                           int writable, const char *what)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
        PyErr_Clear();
        char message[256];
        snprintf(message, sizeof message,
                 "%s: not a %sC-contiguous buffer (%.100s)", what, writable ? "writable " : "",
                 Py_TYPE(obj)->tp_name);
        raise_status(BLOOPCL_ERR_INVALID_ARGUMENT, message);
        return -1;
    }
    char message[256] = "";
    bloopcl_status status = BLOOPCL_ERR_INVALID_ARGUMENT;
    if (view->ndim != 1)
        snprintf(message, sizeof message, "%s: %d dimensions, need 1", what, view->ndim);
    else if (view->itemsize != itemsize)
        snprintf(message, sizeof message, "%s: elements of %zd bytes, need %zd", what,
                 view->itemsize, itemsize);
    else if (view->shape != NULL && (size_t)view->shape[0] != count) {
        status = BLOOPCL_ERR_SIZE_MISMATCH;
        snprintf(message, sizeof message, "%s: %zd elements, need %zu", what, view->shape[0],
                 count);
    }
    if (message[0] != '\0') {
        PyBuffer_Release(view);
        raise_status(status, message);
        return -1;
    }
    return 0;
}

/* A float32 buffer: format "f" (any byte-order prefix of native size). */
static int is_float_format(const char *format)
{
    if (format == NULL)
        return 0;
    if (format[0] == '@' || format[0] == '=' || format[0] == '<')
        format++;
    return strcmp(format, "f") == 0;
}

static int get_float_buffer(PyObject *obj, Py_buffer *view, size_t count, int writable,
                            const char *what)
{
    if (get_host_buffer(obj, view, (Py_ssize_t)sizeof(float), count, writable, what) != 0)
        return -1;
    if (!is_float_format(view->format)) {
        char message[256];
        snprintf(message, sizeof message, "%s: element format '%.20s', need float32 ('f')",
                 what, view->format != NULL ? view->format : "?");
        PyBuffer_Release(view);
        raise_status(BLOOPCL_ERR_INVALID_ARGUMENT, message);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Devices
 * ------------------------------------------------------------------------------------------- */
static const char *device_type_name(cl_device_type type)
{
    if (type & CL_DEVICE_TYPE_GPU)
        return "gpu";
    if (type & CL_DEVICE_TYPE_ACCELERATOR)
        return "accelerator";
    if (type & CL_DEVICE_TYPE_CPU)
        return "cpu";
    return "other";
}

static PyObject *device_info_dict(const bloopcl_device_info *info)
{
    return Py_BuildValue(
        "{s:I,s:I,s:I,s:N,s:N,s:s,s:K,s:s,s:s,s:s,s:s,s:s,s:O,s:O,s:K,s:K,s:I}",
        "flat_index", info->flat_index, "platform_index", info->platform_index,
        "device_index", info->device_index, "platform", handle_to_object(info->platform),
        "device", handle_to_object(info->device), "type", device_type_name(info->type),
        "type_flags", (unsigned long long)info->type, "platform_name", info->platform_name,
        "platform_vendor", info->platform_vendor, "device_name", info->device_name,
        "driver_version", info->driver_version, "opencl_c_version", info->opencl_c_version,
        "has_fp64", info->has_fp64 ? Py_True : Py_False, "has_fp16",
        info->has_fp16 ? Py_True : Py_False, "global_mem_bytes",
        (unsigned long long)info->global_mem_bytes, "max_alloc_bytes",
        (unsigned long long)info->max_alloc_bytes, "compute_units", info->compute_units);
}

static PyObject *py_list_devices(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    size_t count = 0;
    bloopcl_status status;
    Py_BEGIN_ALLOW_THREADS
    status = bloopcl_list_devices(NULL, 0, &count);
    Py_END_ALLOW_THREADS
    if (status != BLOOPCL_OK)
        return raise_status(status, "bloopcl_list_devices failed");
    bloopcl_device_info *devices = NULL;
    if (count > 0) {
        devices = PyMem_Calloc(count, sizeof *devices);
        if (devices == NULL)
            return PyErr_NoMemory();
        devices[0].struct_size = sizeof devices[0];
        size_t capacity = count;
        Py_BEGIN_ALLOW_THREADS
        status = bloopcl_list_devices(devices, capacity, &count);
        Py_END_ALLOW_THREADS
        if (status != BLOOPCL_OK) {
            PyMem_Free(devices);
            return raise_status(status, "bloopcl_list_devices failed");
        }
        if (count > capacity)
            count = capacity; /* a device appeared between the two calls */
    }
    PyObject *list = PyList_New((Py_ssize_t)count);
    for (size_t i = 0; list != NULL && i < count; i++) {
        PyObject *entry = device_info_dict(&devices[i]);
        if (entry == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, entry);
    }
    PyMem_Free(devices);
    return list;
}

/* ---------------------------------------------------------------------------------------------
 * Context
 * ------------------------------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    bloopcl_context *ctx;
    PyObject *keep; /* the Python objects whose handles the context was made from */
} ContextObject;

static PyTypeObject ContextType;

static void context_dealloc(ContextObject *self)
{
    bloopcl_context *ctx = self->ctx;
    self->ctx = NULL;
    Py_BEGIN_ALLOW_THREADS /* the last reference waits for the queue */
    bloopcl_context_destroy(ctx);
    Py_END_ALLOW_THREADS
    Py_CLEAR(self->keep);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* _Context(device_spec=None, cache_dir=None, build_options=None, cl_context=None,
 *          cl_device=None, cl_queue=None, keep=None) */
static PyObject *context_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"device_spec", "cache_dir", "build_options", "cl_context",
                               "cl_device", "cl_queue", "keep", NULL};
    const char *spec = NULL, *cache_dir = NULL, *build_options = NULL;
    PyObject *cl_ctx_obj = Py_None, *cl_dev_obj = Py_None, *cl_queue_obj = Py_None;
    PyObject *keep = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|zzzOOOO", keywords, &spec, &cache_dir,
                                     &build_options, &cl_ctx_obj, &cl_dev_obj, &cl_queue_obj,
                                     &keep))
        return NULL;
    void *cl_ctx = NULL, *cl_dev = NULL, *cl_queue = NULL;
    if (handle_from_object(cl_ctx_obj, &cl_ctx, "cl_context") != 0 ||
        handle_from_object(cl_dev_obj, &cl_dev, "cl_device") != 0 ||
        handle_from_object(cl_queue_obj, &cl_queue, "cl_queue") != 0)
        return NULL;

    bloopcl_context_params params;
    bloopcl_context_params_default(&params);
    params.device_spec = spec;
    params.cache_dir = cache_dir;
    params.build_options = build_options;

    bloopcl_context *ctx = NULL;
    bloopcl_status status;
    int from_cl = cl_ctx != NULL || cl_dev != NULL || cl_queue != NULL;
    Py_BEGIN_ALLOW_THREADS
    if (from_cl)
        status = bloopcl_context_create_from_cl((cl_context)cl_ctx, (cl_device_id)cl_dev,
                                                (cl_command_queue)cl_queue, &params, &ctx);
    else
        status = bloopcl_context_create(&params, &ctx);
    Py_END_ALLOW_THREADS
    if (status != BLOOPCL_OK) {
        PyObject *none = raise_status(status, ctx != NULL ? bloopcl_context_last_error(ctx)
                                                          : NULL);
        bloopcl_context_destroy(ctx);
        return none;
    }
    ContextObject *self = (ContextObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        bloopcl_context_destroy(ctx);
        return NULL;
    }
    self->ctx = ctx;
    Py_INCREF(keep);
    self->keep = keep;
    return (PyObject *)self;
}

static PyObject *context_last_error(ContextObject *self, PyObject *unused)
{
    (void)unused;
    return PyUnicode_FromString(bloopcl_context_last_error(self->ctx));
}

static PyObject *context_device_info(ContextObject *self, PyObject *unused)
{
    (void)unused;
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    bloopcl_status status = bloopcl_context_device_info(self->ctx, &info);
    if (status != BLOOPCL_OK)
        return raise_status(status, bloopcl_context_last_error(self->ctx));
    return device_info_dict(&info);
}

static PyObject *context_finish(ContextObject *self, PyObject *unused)
{
    (void)unused;
    bloopcl_status status;
    Py_BEGIN_ALLOW_THREADS
    status = bloopcl_context_finish(self->ctx);
    Py_END_ALLOW_THREADS
    if (status != BLOOPCL_OK)
        return raise_status(status, bloopcl_context_last_error(self->ctx));
    Py_RETURN_NONE;
}

static PyObject *context_get_cl_context(ContextObject *self, void *closure)
{
    (void)closure;
    return handle_to_object(bloopcl_context_cl_context(self->ctx));
}

static PyObject *context_get_queue(ContextObject *self, void *closure)
{
    (void)closure;
    return handle_to_object(bloopcl_context_queue(self->ctx));
}

static PyMethodDef context_methods[] = {
    {"last_error", (PyCFunction)(void (*)(void))context_last_error, METH_NOARGS,
     "The library's message for the last failed call on this context."},
    {"device_info", (PyCFunction)(void (*)(void))context_device_info, METH_NOARGS,
     "The context's device, as list_devices() describes it."},
    {"finish", (PyCFunction)(void (*)(void))context_finish, METH_NOARGS,
     "Blocks until everything enqueued on the context's queue has completed."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef context_getset[] = {
    {"cl_context", (getter)(void (*)(void))context_get_cl_context, NULL,
     "The cl_context handle (int).", NULL},
    {"queue", (getter)(void (*)(void))context_get_queue, NULL,
     "The cl_command_queue handle (int).", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject ContextType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "bloopcl._bloopcl._Context",
    .tp_basicsize = sizeof(ContextObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A bloopcl_context (internal; use bloopcl.Context).",
    .tp_new = context_new,
    .tp_dealloc = (destructor)(void (*)(void))context_dealloc,
    .tp_methods = context_methods,
    .tp_getset = context_getset,
};

/* ---------------------------------------------------------------------------------------------
 * Configuration (shared by _Combiner and _Reference)
 * ------------------------------------------------------------------------------------------- */
typedef struct {
    bloopcl_config config;
    Py_buffer initial_ema, initial_aux_ema;
    int has_initial_ema, has_initial_aux_ema;
} config_args;

static void config_args_release(config_args *c)
{
    if (c->has_initial_ema)
        PyBuffer_Release(&c->initial_ema);
    if (c->has_initial_aux_ema)
        PyBuffer_Release(&c->initial_aux_ema);
    c->has_initial_ema = c->has_initial_aux_ema = 0;
}

/* Fills c->config from keyword arguments (method, ema, lbda, eps, rescale, ratio_only, init,
 * seed, nonfinite, dots, initial_ema, initial_aux_ema), all as ints/floats already mapped by
 * the Python layer; n is the vector size the initial buffers must have. Validation is the
 * library's (bloopcl_config_validate, and the create call itself). */
static int parse_config(PyObject *kwargs, size_t n, config_args *c)
{
    memset(c, 0, sizeof *c);
    static char *keywords[] = {"method", "ema", "lbda", "eps", "rescale", "ratio_only",
                               "init", "seed", "nonfinite", "dots", "initial_ema",
                               "initial_aux_ema", NULL};
    int method = BLOOPCL_METHOD_BLOOP, rescale = 0, ratio_only = 0, init = BLOOPCL_INIT_ZEROS;
    int nonfinite = BLOOPCL_NONFINITE_SKIP, dots = BLOOPCL_DOTS_AUTO;
    double ema = 0.1, lbda = 0.1, eps = 1e-7;
    unsigned long long seed = 0;
    PyObject *initial_ema = Py_None, *initial_aux_ema = Py_None;
    PyObject *empty = PyTuple_New(0);
    if (empty == NULL)
        return -1;
    int ok = PyArg_ParseTupleAndKeywords(empty, kwargs, "|idddppiKiiOO", keywords, &method, &ema,
                                         &lbda, &eps, &rescale, &ratio_only, &init, &seed,
                                         &nonfinite, &dots, &initial_ema, &initial_aux_ema);
    Py_DECREF(empty);
    if (!ok)
        return -1;
    bloopcl_config_default(&c->config, (bloopcl_method)method);
    c->config.method = (bloopcl_method)method;
    c->config.ema_weight = ema;
    c->config.lambda = lbda;
    c->config.eps = eps;
    c->config.rescale = rescale;
    c->config.ratio_only = ratio_only;
    c->config.init = (bloopcl_init)init;
    c->config.seed = (uint64_t)seed;
    c->config.nonfinite = (bloopcl_nonfinite_policy)nonfinite;
    c->config.dots = (bloopcl_dot_backend)dots;
    if (initial_ema != Py_None) {
        if (get_float_buffer(initial_ema, &c->initial_ema, n, 0, "init (initial EMA)") != 0)
            return -1;
        c->has_initial_ema = 1;
        c->config.initial_ema = c->initial_ema.buf;
    }
    if (initial_aux_ema != Py_None) {
        if (get_float_buffer(initial_aux_ema, &c->initial_aux_ema, n, 0,
                             "aux_init (initial auxiliary EMA)") != 0) {
            config_args_release(c);
            return -1;
        }
        c->has_initial_aux_ema = 1;
        c->config.initial_aux_ema = c->initial_aux_ema.buf;
    }
    char message[512] = "";
    bloopcl_status status = bloopcl_config_validate(&c->config, message, sizeof message);
    if (status != BLOOPCL_OK) {
        config_args_release(c);
        raise_status(status, message);
        return -1;
    }
    return 0;
}

static PyObject *config_dict(const bloopcl_config *config)
{
    return Py_BuildValue("{s:i,s:d,s:d,s:d,s:O,s:O,s:i,s:K,s:i,s:i}", "method",
                         (int)config->method, "ema", config->ema_weight, "lbda", config->lambda,
                         "eps", config->eps, "rescale", config->rescale ? Py_True : Py_False,
                         "ratio_only", config->ratio_only ? Py_True : Py_False, "init",
                         (int)config->init, "seed", (unsigned long long)config->seed,
                         "nonfinite", (int)config->nonfinite, "dots", (int)config->dots);
}

static PyObject *diagnostics_dict(const bloopcl_diagnostics *d)
{
    return Py_BuildValue(
        "{s:d,s:d,s:d,s:d,s:d,s:d,s:d,s:d,s:d,s:O,s:K,s:d,s:d,s:I,s:i,s:K}", "r", d->ratio,
        "ratio_raw", d->ratio_raw, "dot_ema_aux", d->dot_ema_aux, "ema_norm_sq", d->ema_norm_sq,
        "aux_norm_sq", d->aux_norm_sq, "cosine", d->cosine, "aux_ratio", d->aux_ratio,
        "dot_aux_ema_main", d->dot_aux_ema_main, "aux_ema_norm_sq", d->aux_ema_norm_sq,
        "accepted", d->accepted ? Py_True : Py_False, "steps", (unsigned long long)d->steps,
        "grad_norm_sq", d->grad_norm_sq, "grad_norm", sqrt(d->grad_norm_sq), "kernels",
        d->kernels, "reason", d->reason, "optimizer_steps",
        (unsigned long long)d->optimizer_steps);
}

/* ---------------------------------------------------------------------------------------------
 * Combiner
 * ------------------------------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    bloopcl_combiner *comb;
    ContextObject *ctx;
    size_t n;
} CombinerObject;

static void combiner_dealloc(CombinerObject *self)
{
    bloopcl_combiner *comb = self->comb;
    self->comb = NULL;
    Py_BEGIN_ALLOW_THREADS /* with the context's last reference, waits for the queue */
    bloopcl_combiner_destroy(comb);
    Py_END_ALLOW_THREADS
    Py_CLEAR(self->ctx);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *combiner_fail(CombinerObject *self, bloopcl_status status)
{
    return raise_status(status, bloopcl_context_last_error(self->ctx->ctx));
}

/* _Combiner(ctx, n, **config) */
static PyObject *combiner_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *ctx_obj = NULL;
    Py_ssize_t n = 0;
    if (!PyArg_ParseTuple(args, "O!n", &ContextType, &ctx_obj, &n))
        return NULL;
    if (n <= 0)
        return raise_status(BLOOPCL_ERR_SIZE_MISMATCH, "n must be at least 1");
    config_args c;
    if (parse_config(kwargs, (size_t)n, &c) != 0)
        return NULL;
    ContextObject *ctx = (ContextObject *)ctx_obj;
    bloopcl_combiner *comb = NULL;
    bloopcl_status status;
    Py_BEGIN_ALLOW_THREADS
    status = bloopcl_combiner_create(ctx->ctx, &c.config, (size_t)n, &comb);
    Py_END_ALLOW_THREADS
    config_args_release(&c);
    if (status != BLOOPCL_OK)
        return raise_status(status, bloopcl_context_last_error(ctx->ctx));
    CombinerObject *self = (CombinerObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        bloopcl_combiner_destroy(comb);
        return NULL;
    }
    self->comb = comb;
    Py_INCREF(ctx);
    self->ctx = ctx;
    self->n = (size_t)n;
    return (PyObject *)self;
}

/* step_host(g, a, d): float32 buffers of n elements; d written. Returns the status (0, or the
 * skipped-step statuses NONFINITE_INPUT / OUT_OF_RANGE, after which d is zeros); raises on
 * every other failure. */
static PyObject *combiner_step_host(CombinerObject *self, PyObject *args)
{
    PyObject *g_obj, *a_obj, *d_obj;
    if (!PyArg_ParseTuple(args, "OOO", &g_obj, &a_obj, &d_obj))
        return NULL;
    Py_buffer g, a, d;
    if (get_float_buffer(g_obj, &g, self->n, 0, "g") != 0)
        return NULL;
    if (get_float_buffer(a_obj, &a, self->n, 0, "a") != 0) {
        PyBuffer_Release(&g);
        return NULL;
    }
    if (get_float_buffer(d_obj, &d, self->n, 1, "out") != 0) {
        PyBuffer_Release(&g);
        PyBuffer_Release(&a);
        return NULL;
    }
    bloopcl_status status;
    Py_BEGIN_ALLOW_THREADS
    status = bloopcl_step_host(self->comb, g.buf, a.buf, d.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&g);
    PyBuffer_Release(&a);
    PyBuffer_Release(&d);
    if (status != BLOOPCL_OK && status != BLOOPCL_ERR_NONFINITE_INPUT &&
        status != BLOOPCL_ERR_OUT_OF_RANGE)
        return combiner_fail(self, status);
    return PyLong_FromLong((long)status);
}

/* A segment list from a sequence of (cl_mem int, offset_bytes, count, dtype) tuples. */
static bloopcl_segment *parse_segments(PyObject *seq_obj, size_t *count, const char *what)
{
    PyObject *seq = PySequence_Fast(seq_obj, "segments must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(seq);
    bloopcl_segment *segments = PyMem_Calloc(len > 0 ? (size_t)len : 1, sizeof *segments);
    if (segments == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *mem_obj;
        unsigned long long offset, elements;
        int dtype;
        if (!PyArg_ParseTuple(item, "OKKi", &mem_obj, &offset, &elements, &dtype)) {
            PyErr_Format(PyExc_TypeError, "%s segment %zd: need (cl_mem, offset, count, dtype)",
                         what, i);
            goto fail;
        }
        void *mem = NULL;
        if (handle_from_object(mem_obj, &mem, "cl_mem") != 0)
            goto fail;
        segments[i].buffer = (cl_mem)mem;
        segments[i].offset_bytes = (size_t)offset;
        segments[i].count = (size_t)elements;
        segments[i].dtype = (bloopcl_dtype)dtype;
        segments[i].reserved = 0;
    }
    Py_DECREF(seq);
    *count = (size_t)len;
    return segments;
fail:
    Py_DECREF(seq);
    PyMem_Free(segments);
    return NULL;
}

/* step(g_segments, a_segments, d_segments, wait_events=(), want_event=False): enqueues one step
 * on the context's queue (bloopcl_step). Returns the completion cl_event as an int (owned by
 * the caller) when want_event, else None. */
static PyObject *combiner_step(CombinerObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"g", "a", "d", "wait_events", "want_event", "update_parameters",
                               NULL};
    PyObject *g_obj, *a_obj, *d_obj, *wait_obj = NULL;
    int want_event = 0, update_parameters = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|Opp", keywords, &g_obj, &a_obj, &d_obj,
                                     &wait_obj, &want_event, &update_parameters))
        return NULL;
    PyObject *result = NULL;
    bloopcl_segment *gs = NULL, *as = NULL, *ds = NULL;
    cl_event *wait = NULL;
    size_t ng = 0, na = 0, nd = 0, nwait = 0;
    if ((gs = parse_segments(g_obj, &ng, "g")) == NULL ||
        (as = parse_segments(a_obj, &na, "a")) == NULL ||
        (ds = parse_segments(d_obj, &nd, "out")) == NULL)
        goto done;
    if (wait_obj != NULL && wait_obj != Py_None) {
        PyObject *seq = PySequence_Fast(wait_obj, "wait_events must be a sequence");
        if (seq == NULL)
            goto done;
        Py_ssize_t len = PySequence_Fast_GET_SIZE(seq);
        wait = PyMem_Calloc(len > 0 ? (size_t)len : 1, sizeof *wait);
        if (wait == NULL) {
            Py_DECREF(seq);
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t i = 0; i < len; i++) {
            void *ev = NULL;
            if (handle_from_object(PySequence_Fast_GET_ITEM(seq, i), &ev, "cl_event") != 0) {
                Py_DECREF(seq);
                goto done;
            }
            wait[i] = (cl_event)ev;
        }
        nwait = (size_t)len;
        Py_DECREF(seq);
    }
    bloopcl_tensor g = {gs, ng}, a = {as, na}, d = {ds, nd};
    cl_event event = NULL;
    bloopcl_status status;
    Py_BEGIN_ALLOW_THREADS
    bloopcl_step_options options = BLOOPCL_STEP_OPTIONS_INIT;
    options.update_parameters = update_parameters;  /* d is the parameters (the optimizer) */
    status = bloopcl_step_with_options(self->comb, &g, &a, &d, &options, (cl_uint)nwait,
                                       nwait > 0 ? wait : NULL, want_event ? &event : NULL);
    Py_END_ALLOW_THREADS
    if (status != BLOOPCL_OK) {
        combiner_fail(self, status);
        goto done;
    }
    if (want_event)
        result = handle_to_object(event);
    else {
        Py_INCREF(Py_None);
        result = Py_None;
    }
done:
    PyMem_Free(gs);
    PyMem_Free(as);
    PyMem_Free(ds);
    PyMem_Free(wait);
    return result;
}

static PyObject *combiner_diagnostics(CombinerObject *self, PyObject *unused)
{
    (void)unused;
    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
    bloopcl_status status;
    Py_BEGIN_ALLOW_THREADS
    status = bloopcl_get_diagnostics(self->comb, &diag);
    Py_END_ALLOW_THREADS
    if (status != BLOOPCL_OK)
        return combiner_fail(self, status);
    return diagnostics_dict(&diag);
}

/* read_state(kind, out): out a writable float32 buffer of n elements. */
static PyObject *combiner_read_state(CombinerObject *self, PyObject *args)
{
    int kind;
    PyObject *out_obj;
    if (!PyArg_ParseTuple(args, "iO", &kind, &out_obj))
        return NULL;
    Py_buffer out;
    if (get_float_buffer(out_obj, &out, self->n, 1, "state") != 0)
        return NULL;
    bloopcl_status status;
    Py_BEGIN_ALLOW_THREADS
    status = bloopcl_read_state(self->comb, (bloopcl_state_kind)kind, out.buf, self->n);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&out);
    if (status != BLOOPCL_OK)
        return combiner_fail(self, status);
    Py_RETURN_NONE;
}

static PyObject *combiner_write_state(CombinerObject *self, PyObject *args)
{
    int kind;
    PyObject *in_obj;
    if (!PyArg_ParseTuple(args, "iO", &kind, &in_obj))
        return NULL;
    Py_buffer in;
    if (get_float_buffer(in_obj, &in, self->n, 0, "state") != 0)
        return NULL;
    bloopcl_status status;
    Py_BEGIN_ALLOW_THREADS
    status = bloopcl_write_state(self->comb, (bloopcl_state_kind)kind, in.buf, self->n);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&in);
    if (status != BLOOPCL_OK)
        return combiner_fail(self, status);
    Py_RETURN_NONE;
}

static PyObject *combiner_reset_state(CombinerObject *self, PyObject *unused)
{
    (void)unused;
    bloopcl_status status;
    Py_BEGIN_ALLOW_THREADS
    status = bloopcl_reset_state(self->comb);
    Py_END_ALLOW_THREADS
    if (status != BLOOPCL_OK)
        return combiner_fail(self, status);
    Py_RETURN_NONE;
}

static PyObject *combiner_set_hyperparameters(CombinerObject *self, PyObject *args)
{
    double ema, lbda, eps;
    if (!PyArg_ParseTuple(args, "ddd", &ema, &lbda, &eps))
        return NULL;
    bloopcl_status status = bloopcl_combiner_set_hyperparameters(self->comb, ema, lbda, eps);
    if (status != BLOOPCL_OK)
        return combiner_fail(self, status);
    Py_RETURN_NONE;
}

static PyObject *combiner_config(CombinerObject *self, PyObject *unused)
{
    (void)unused;
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    bloopcl_status status = bloopcl_combiner_config(self->comb, &config);
    if (status != BLOOPCL_OK)
        return combiner_fail(self, status);
    return config_dict(&config);
}

static PyObject *combiner_outputs(CombinerObject *self, PyObject *unused)
{
    (void)unused;
    cl_mem outputs = NULL;
    bloopcl_status status = bloopcl_combiner_outputs(self->comb, &outputs);
    if (status != BLOOPCL_OK)
        return combiner_fail(self, status);
    return handle_to_object(outputs);
}

/* set_optimizer(kind, lr, weight_decay, decoupled, momentum, dampening, nesterov, beta1,
 * beta2, eps, bias_correction): kind 0 detaches (bloopcl_combiner_set_optimizer). */
static PyObject *combiner_set_optimizer(CombinerObject *self, PyObject *args)
{
    int kind, decoupled, nesterov, bias_correction;
    double lr, weight_decay, momentum, dampening, beta1, beta2, eps;
    if (!PyArg_ParseTuple(args, "iddpddpdddp", &kind, &lr, &weight_decay, &decoupled,
                          &momentum, &dampening, &nesterov, &beta1, &beta2, &eps,
                          &bias_correction))
        return NULL;
    bloopcl_optimizer o;
    bloopcl_optimizer_default(&o, (bloopcl_optimizer_kind)kind);
    o.lr = lr;
    o.weight_decay = weight_decay;
    o.decoupled_weight_decay = decoupled;
    o.momentum = momentum;
    o.dampening = dampening;
    o.nesterov = nesterov;
    o.beta1 = beta1;
    o.beta2 = beta2;
    o.eps = eps;
    o.bias_correction = bias_correction;
    bloopcl_status status;
    Py_BEGIN_ALLOW_THREADS
    status = bloopcl_combiner_set_optimizer(self->comb, kind == 0 ? NULL : &o);
    Py_END_ALLOW_THREADS
    if (status != BLOOPCL_OK)
        return combiner_fail(self, status);
    Py_RETURN_NONE;
}

static PyObject *combiner_set_learning_rate(CombinerObject *self, PyObject *args)
{
    double lr;
    if (!PyArg_ParseTuple(args, "d", &lr))
        return NULL;
    bloopcl_status status = bloopcl_combiner_set_learning_rate(self->comb, lr);
    if (status != BLOOPCL_OK)
        return combiner_fail(self, status);
    Py_RETURN_NONE;
}

/* optimizer_steps() -> t (blocking); optimizer_steps(t) sets it. */
static PyObject *combiner_optimizer_steps(CombinerObject *self, PyObject *args)
{
    unsigned long long steps = 0;
    int set = PyTuple_GET_SIZE(args) > 0;
    if (!PyArg_ParseTuple(args, "|K", &steps))
        return NULL;
    bloopcl_status status;
    uint64_t t = steps;
    Py_BEGIN_ALLOW_THREADS
    status = set ? bloopcl_set_optimizer_steps(self->comb, t)
                 : bloopcl_optimizer_steps(self->comb, &t);
    Py_END_ALLOW_THREADS
    if (status != BLOOPCL_OK)
        return combiner_fail(self, status);
    return PyLong_FromUnsignedLongLong((unsigned long long)t);
}

static PyObject *combiner_optimizer(CombinerObject *self, PyObject *unused)
{
    (void)unused;
    bloopcl_optimizer o = {.struct_size = sizeof o};
    bloopcl_status status = bloopcl_combiner_optimizer(self->comb, &o);
    if (status != BLOOPCL_OK)
        return combiner_fail(self, status);
    return Py_BuildValue("{s:i,s:d,s:d,s:O,s:d,s:d,s:O,s:d,s:d,s:d,s:O}", "kind", (int)o.kind,
                         "lr", o.lr, "weight_decay", o.weight_decay, "decoupled",
                         o.decoupled_weight_decay ? Py_True : Py_False, "momentum", o.momentum,
                         "dampening", o.dampening, "nesterov", o.nesterov ? Py_True : Py_False,
                         "beta1", o.beta1, "beta2", o.beta2, "eps", o.eps, "bias_correction",
                         o.bias_correction ? Py_True : Py_False);
}

static PyObject *combiner_get_n(CombinerObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromSize_t(self->n);
}

static PyMethodDef combiner_methods[] = {
    {"step_host", (PyCFunction)(void (*)(void))combiner_step_host, METH_VARARGS,
     "bloopcl_step_host over three float32 buffers of n elements."},
    {"step", (PyCFunction)(void (*)(void))combiner_step, METH_VARARGS | METH_KEYWORDS,
     "bloopcl_step over segment lists of (cl_mem, offset_bytes, count, dtype)."},
    {"set_optimizer", (PyCFunction)(void (*)(void))combiner_set_optimizer, METH_VARARGS,
     "bloopcl_combiner_set_optimizer (kind 0: detach)."},
    {"set_learning_rate", (PyCFunction)(void (*)(void))combiner_set_learning_rate,
     METH_VARARGS, "bloopcl_combiner_set_learning_rate."},
    {"optimizer_steps", (PyCFunction)(void (*)(void))combiner_optimizer_steps, METH_VARARGS,
     "bloopcl_optimizer_steps() or bloopcl_set_optimizer_steps(t)."},
    {"optimizer", (PyCFunction)(void (*)(void))combiner_optimizer, METH_NOARGS,
     "bloopcl_combiner_optimizer as a dict."},
    {"diagnostics", (PyCFunction)(void (*)(void))combiner_diagnostics, METH_NOARGS,
     "bloopcl_get_diagnostics (waits for the last step)."},
    {"read_state", (PyCFunction)(void (*)(void))combiner_read_state, METH_VARARGS,
     "bloopcl_read_state(kind, out)."},
    {"write_state", (PyCFunction)(void (*)(void))combiner_write_state, METH_VARARGS,
     "bloopcl_write_state(kind, values)."},
    {"reset_state", (PyCFunction)(void (*)(void))combiner_reset_state, METH_NOARGS,
     "bloopcl_reset_state."},
    {"set_hyperparameters", (PyCFunction)(void (*)(void))combiner_set_hyperparameters,
     METH_VARARGS, "bloopcl_combiner_set_hyperparameters(ema, lbda, eps)."},
    {"config", (PyCFunction)(void (*)(void))combiner_config, METH_NOARGS,
     "bloopcl_combiner_config as a dict."},
    {"outputs", (PyCFunction)(void (*)(void))combiner_outputs, METH_NOARGS,
     "The cl_mem of the combiner's output buffer (int)."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef combiner_getset[] = {
    {"n", (getter)(void (*)(void))combiner_get_n, NULL, "Elements per gradient.", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject CombinerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "bloopcl._bloopcl._Combiner",
    .tp_basicsize = sizeof(CombinerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A bloopcl_combiner (internal; use bloopcl.Combiner).",
    .tp_new = combiner_new,
    .tp_dealloc = (destructor)(void (*)(void))combiner_dealloc,
    .tp_methods = combiner_methods,
    .tp_getset = combiner_getset,
};

/* ---------------------------------------------------------------------------------------------
 * CPU reference (experimental API): the oracle the tests compare the device against.
 * ------------------------------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    bloopcl_config config;
    bloopcl_reference_state state;
    int has_state;
} ReferenceObject;

static void reference_dealloc(ReferenceObject *self)
{
    if (self->has_state)
        bloopcl_reference_free(&self->state);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *reference_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    Py_ssize_t n = 0;
    if (!PyArg_ParseTuple(args, "n", &n))
        return NULL;
    if (n <= 0)
        return raise_status(BLOOPCL_ERR_SIZE_MISMATCH, "n must be at least 1");
    config_args c;
    if (parse_config(kwargs, (size_t)n, &c) != 0)
        return NULL;
    ReferenceObject *self = (ReferenceObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        config_args_release(&c);
        return NULL;
    }
    bloopcl_status status = bloopcl_reference_init(&c.config, (size_t)n, &self->state);
    config_args_release(&c);
    c.config.initial_ema = c.config.initial_aux_ema = NULL; /* copied by the init */
    self->config = c.config;
    if (status != BLOOPCL_OK) {
        Py_DECREF(self);
        return raise_status(status, "bloopcl_reference_init failed");
    }
    self->has_state = 1;
    return (PyObject *)self;
}

/* step(g, a, d, g_dtype=0, a_dtype=0, d_dtype=0) -> (status, diagnostics): typed buffers
 * (4-byte f32 or 2-byte f16/bf16 by the given dtype); the skipped-step statuses are returned,
 * other failures raised. */
static PyObject *reference_step(ReferenceObject *self, PyObject *args)
{
    PyObject *g_obj, *a_obj, *d_obj;
    int g_dtype = 0, a_dtype = 0, d_dtype = 0;
    if (!PyArg_ParseTuple(args, "OOO|iii", &g_obj, &a_obj, &d_obj, &g_dtype, &a_dtype,
                          &d_dtype))
        return NULL;
    size_t n = self->state.n;
    size_t gsize = bloopcl_dtype_size((bloopcl_dtype)g_dtype);
    size_t asize = bloopcl_dtype_size((bloopcl_dtype)a_dtype);
    size_t dsize = bloopcl_dtype_size((bloopcl_dtype)d_dtype);
    if (gsize == 0 || asize == 0 || dsize == 0)
        return raise_status(BLOOPCL_ERR_INVALID_ARGUMENT, "unknown dtype");
    Py_buffer g, a, d;
    if (get_host_buffer(g_obj, &g, (Py_ssize_t)gsize, n, 0, "g") != 0)
        return NULL;
    if (get_host_buffer(a_obj, &a, (Py_ssize_t)asize, n, 0, "a") != 0) {
        PyBuffer_Release(&g);
        return NULL;
    }
    if (get_host_buffer(d_obj, &d, (Py_ssize_t)dsize, n, 1, "out") != 0) {
        PyBuffer_Release(&g);
        PyBuffer_Release(&a);
        return NULL;
    }
    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
    bloopcl_status status;
    Py_BEGIN_ALLOW_THREADS
    status = bloopcl_reference_step_typed(&self->config, &self->state, g.buf,
                                          (bloopcl_dtype)g_dtype, a.buf, (bloopcl_dtype)a_dtype,
                                          d.buf, (bloopcl_dtype)d_dtype, 1.0, 1.0, &diag);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&g);
    PyBuffer_Release(&a);
    PyBuffer_Release(&d);
    if (status != BLOOPCL_OK && status != BLOOPCL_ERR_NONFINITE_INPUT &&
        status != BLOOPCL_ERR_OUT_OF_RANGE)
        return raise_status(status, "bloopcl_reference_step_typed failed");
    PyObject *diag_obj = diagnostics_dict(&diag);
    if (diag_obj == NULL)
        return NULL;
    return Py_BuildValue("iN", (int)status, diag_obj);
}

/* read_state(kind, out): copies the reference's EMA (kind 0) or auxiliary EMA (1). */
static PyObject *reference_read_state(ReferenceObject *self, PyObject *args)
{
    int kind;
    PyObject *out_obj;
    if (!PyArg_ParseTuple(args, "iO", &kind, &out_obj))
        return NULL;
    const float *src = kind == BLOOPCL_STATE_EMA       ? self->state.ema
                       : kind == BLOOPCL_STATE_AUX_EMA ? self->state.aux_ema
                                                       : NULL;
    if (src == NULL || !self->state.initialized)
        return raise_status(BLOOPCL_ERR_STATE, "the reference keeps no such state (yet)");
    Py_buffer out;
    if (get_float_buffer(out_obj, &out, self->state.n, 1, "state") != 0)
        return NULL;
    memcpy(out.buf, src, self->state.n * sizeof(float));
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

static PyMethodDef reference_methods[] = {
    {"step", (PyCFunction)(void (*)(void))reference_step, METH_VARARGS,
     "bloopcl_reference_step_typed(g, a, d[, g_dtype, a_dtype, d_dtype])."},
    {"read_state", (PyCFunction)(void (*)(void))reference_read_state, METH_VARARGS,
     "Copies the reference's state of the given kind into a float32 buffer."},
    {NULL, NULL, 0, NULL}};

static PyTypeObject ReferenceType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "bloopcl._bloopcl._Reference",
    .tp_basicsize = sizeof(ReferenceObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The CPU reference (experimental API; use bloopcl.Reference).",
    .tp_new = reference_new,
    .tp_dealloc = (destructor)(void (*)(void))reference_dealloc,
    .tp_methods = reference_methods,
};

/* ---------------------------------------------------------------------------------------------
 * Module functions
 * ------------------------------------------------------------------------------------------- */
static PyObject *py_status_string(PyObject *module, PyObject *arg)
{
    (void)module;
    long code = PyLong_AsLong(arg);
    if (code == -1 && PyErr_Occurred())
        return NULL;
    return PyUnicode_FromString(bloopcl_status_string((bloopcl_status)code));
}

static PyObject *py_version(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyUnicode_FromString(bloopcl_version_string());
}

/* convert(src, src_dtype, dst, dst_dtype): host conversion by the kernels' rules, over
 * 1-D C-contiguous buffers of the same length. */
static PyObject *py_convert(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *src_obj, *dst_obj;
    int src_dtype, dst_dtype;
    if (!PyArg_ParseTuple(args, "OiOi", &src_obj, &src_dtype, &dst_obj, &dst_dtype))
        return NULL;
    size_t ssize = bloopcl_dtype_size((bloopcl_dtype)src_dtype);
    size_t dsize = bloopcl_dtype_size((bloopcl_dtype)dst_dtype);
    if (ssize == 0 || dsize == 0)
        return raise_status(BLOOPCL_ERR_INVALID_ARGUMENT, "unknown dtype");
    Py_buffer src;
    if (PyObject_GetBuffer(src_obj, &src, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0)
        return NULL;
    if (src.ndim != 1 || src.itemsize != (Py_ssize_t)ssize) {
        PyBuffer_Release(&src);
        return raise_status(BLOOPCL_ERR_INVALID_ARGUMENT,
                            "convert: source must be 1-D with elements of its dtype's size");
    }
    size_t count = (size_t)(src.len / src.itemsize);
    Py_buffer dst;
    if (get_host_buffer(dst_obj, &dst, (Py_ssize_t)dsize, count, 1, "convert destination") !=
        0) {
        PyBuffer_Release(&src);
        return NULL;
    }
    bloopcl_status status = bloopcl_convert(src.buf, (bloopcl_dtype)src_dtype, dst.buf,
                                            (bloopcl_dtype)dst_dtype, count);
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    if (status != BLOOPCL_OK)
        return raise_status(status, "bloopcl_convert failed");
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"list_devices", (PyCFunction)(void (*)(void))py_list_devices, METH_NOARGS,
     "Every OpenCL device (bloopcl_list_devices), as dicts."},
    {"status_string", (PyCFunction)(void (*)(void))py_status_string, METH_O,
     "bloopcl_status_string(code)."},
    {"version", (PyCFunction)(void (*)(void))py_version, METH_NOARGS,
     "The linked library's version string."},
    {"convert", (PyCFunction)(void (*)(void))py_convert, METH_VARARGS,
     "bloopcl_convert(src, src_dtype, dst, dst_dtype) over host buffers."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "bloopcl._bloopcl",
    .m_doc = "The C extension of bloopcl (internal: import bloopcl).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__bloopcl(void)
{
    if (PyType_Ready(&ContextType) < 0 || PyType_Ready(&CombinerType) < 0 ||
        PyType_Ready(&ReferenceType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    Py_INCREF(&ContextType);
    Py_INCREF(&CombinerType);
    Py_INCREF(&ReferenceType);
    if (PyModule_AddObject(module, "_Context", (PyObject *)&ContextType) < 0 ||
        PyModule_AddObject(module, "_Combiner", (PyObject *)&CombinerType) < 0 ||
        PyModule_AddObject(module, "_Reference", (PyObject *)&ReferenceType) < 0 ||
        PyModule_AddIntConstant(module, "DTYPE_F32", BLOOPCL_DTYPE_F32) < 0 ||
        PyModule_AddIntConstant(module, "DTYPE_F16", BLOOPCL_DTYPE_F16) < 0 ||
        PyModule_AddIntConstant(module, "DTYPE_BF16", BLOOPCL_DTYPE_BF16) < 0 ||
        PyModule_AddIntConstant(module, "VERSION_NUMBER", BLOOPCL_VERSION_NUMBER) < 0 ||
        PyModule_AddIntConstant(module, "STATE_EMA", BLOOPCL_STATE_EMA) < 0 ||
        PyModule_AddIntConstant(module, "STATE_AUX_EMA", BLOOPCL_STATE_AUX_EMA) < 0 ||
        PyModule_AddIntConstant(module, "STATE_MOMENT1", BLOOPCL_STATE_MOMENT1) < 0 ||
        PyModule_AddIntConstant(module, "STATE_MOMENT2", BLOOPCL_STATE_MOMENT2) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
