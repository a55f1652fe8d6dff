"""What a step takes: numpy arrays (host), PyOpenCL arrays and buffers, tinygrad CL tensors
(device), explicit Segments, and lists of these (one segment each).

Every object is checked here, before any library call: element type, layout (1-D for numpy,
C-contiguous everywhere), size, writability of outputs, the OpenCL context it lives in. A
device object becomes a segment {cl_mem, byte offset, count, dtype} of its own memory (never a
copy); the object itself is kept in the part so that the caller's combiner can hold it.
Neither PyOpenCL nor tinygrad is imported unless an object of theirs is handed over.
"""
import ctypes

import numpy as np

from . import _bloopcl
from ._errors import InvalidArgumentError, SizeMismatchError, WrongContextError

F32 = _bloopcl.DTYPE_F32
F16 = _bloopcl.DTYPE_F16
BF16 = _bloopcl.DTYPE_BF16
DTYPE_NAMES = {F32: "f32", F16: "f16", BF16: "bf16"}
_DTYPE_CODES = {"f32": F32, "float32": F32, "f16": F16, "float16": F16, "half": F16,
                "bf16": BF16, "bfloat16": BF16}
_ITEMSIZE = {F32: 4, F16: 2, BF16: 2}
# numpy types that hold each dtype's bits on the host (bf16: its upper 16 bits of a float)
NUMPY_STORAGE = {F32: np.float32, F16: np.float16, BF16: np.uint16}


def dtype_code(dtype):
    """"f32" / "f16" / "bf16" (or numpy float32 / float16) to the library's bloopcl_dtype."""
    if isinstance(dtype, str):
        code = _DTYPE_CODES.get(dtype.lower())
        if code is not None:
            return code
    else:
        try:
            np_dtype = np.dtype(dtype)
        except TypeError:
            np_dtype = None
        if np_dtype == np.float32:
            return F32
        if np_dtype == np.float16:
            return F16
        if np_dtype is not None and np_dtype.name == "bfloat16":
            return BF16
    raise InvalidArgumentError("unknown dtype %r: bloopcl takes f32, f16 or bf16" % (dtype,))


class Segment:
    """An explicit segment of device memory: `buffer` (a pyopencl.Buffer, a pyopencl Array's
    memory, or a raw cl_mem handle as an int, e.g. from another OpenCL stack), its first
    element at `offset` bytes, `count` elements (default: to the end of the buffer) of
    `dtype` ("f32", "f16" or "bf16"). `keep` is any object that must stay alive while
    bloopcl uses the handle (held by the combiner like the buffer itself)."""

    def __init__(self, buffer, offset=0, count=None, dtype="f32", keep=None):
        self.buffer = buffer
        self.offset = int(offset)
        self.count = None if count is None else int(count)
        self.dtype = dtype_code(dtype)
        self.keep = keep
        if self.offset < 0 or (self.count is not None and self.count < 0):
            raise InvalidArgumentError("Segment: negative offset or count")

    def __repr__(self):
        return "bloopcl.Segment(%r, offset=%d, count=%r, dtype=%r)" % (
            self.buffer, self.offset, self.count, DTYPE_NAMES[self.dtype])


class bf16:
    """Marks an array of bfloat16 bits (numpy or pyopencl, dtype uint16) as bf16:
    `comb.step(bloopcl.bf16(g_bits), ...)`. numpy arrays of ml_dtypes.bfloat16 and tinygrad
    bfloat16 tensors need no marker."""

    def __init__(self, array):
        self.array = array

    def __repr__(self):
        return "bloopcl.bf16(%r)" % (self.array,)


class HostPart:
    """One host array: a 1-D C-contiguous numpy array of a supported type."""
    host = True

    def __init__(self, array, dtype):
        self.array, self.dtype, self.count, self.obj = array, dtype, array.shape[0], array


class DevicePart:
    """One device segment: cl_mem handle, byte offset, count, dtype; `obj` the Python object
    it came from (kept alive by the combiner), `queue` its pyopencl queue (or None), `events`
    pyopencl events that must complete before the step reads or writes it."""
    host = False

    def __init__(self, mem, offset, count, dtype, obj, cl_context=None, queue=None, events=(),
                 array=None):
        self.mem, self.offset, self.count, self.dtype, self.obj = mem, offset, count, dtype, obj
        self.cl_context, self.queue, self.events, self.array = cl_context, queue, events, array

    def segment(self):
        return (self.mem, self.offset, self.count, self.dtype)


class TinygradPart:
    """A tinygrad tensor before its realization (then it becomes a DevicePart)."""
    host = False

    def __init__(self, tensor, dtype, cl_context):
        self.tensor, self.dtype, self.cl_context = tensor, dtype, cl_context
        self.count = tensor.numel()


def _module_of(x):
    return type(x).__module__.split(".", 1)[0]


def _is_tinygrad_tensor(x):
    return _module_of(x) == "tinygrad" and type(x).__name__ == "Tensor"


def handle_value(handle):
    """An OpenCL handle as an int: pyopencl objects (.int_ptr), ctypes pointers (tinygrad),
    ints."""
    if handle is None:
        return 0
    if isinstance(handle, int):
        return handle
    if hasattr(handle, "int_ptr"):
        return int(handle.int_ptr)
    if isinstance(handle, (ctypes._Pointer, ctypes.c_void_p)) or hasattr(handle, "_type_"):
        return ctypes.cast(handle, ctypes.c_void_p).value or 0
    raise InvalidArgumentError("not an OpenCL handle: %r" % (handle,))


def _numpy_part(x, role, writable, dtype=None):
    if not x.dtype.isnative:
        raise InvalidArgumentError("%s: the host array (%s) is not in native byte order"
                                   % (role, x.dtype.str))
    if dtype is None:
        if x.dtype == np.float32:
            dtype = F32
        elif x.dtype == np.float16:
            dtype = F16
        elif x.dtype.name == "bfloat16" and x.dtype.itemsize == 2:
            dtype = BF16
        else:
            raise InvalidArgumentError(
                "%s: numpy dtype %s; bloopcl takes float32, float16 or bfloat16 (never "
                "converted: cast it yourself, e.g. x.astype(np.float32))" % (role, x.dtype))
    elif x.dtype.itemsize != 2 or x.dtype.kind not in "ui":
        raise InvalidArgumentError("%s: bloopcl.bf16 needs an array of 16-bit integers (the "
                                   "bfloat16 bits), not %s" % (role, x.dtype))
    if x.ndim != 1:
        raise InvalidArgumentError(
            "%s: a host array must be 1-D, this one has shape %s (a contiguous array's "
            "x.reshape(-1) is a 1-D view)" % (role, x.shape))
    if not x.flags.c_contiguous:
        raise InvalidArgumentError(
            "%s: the host array is not contiguous (strides %s, itemsize %d); bloopcl never "
            "copies it silently: pass np.ascontiguousarray(x)" % (role, x.strides, x.itemsize))
    if writable and not x.flags.writeable:
        raise InvalidArgumentError("%s: the host array is read-only" % role)
    return HostPart(x, dtype)


def _pyopencl_array_part(x, role, dtype=None):
    if dtype is None:
        if x.dtype == np.float32:
            dtype = F32
        elif x.dtype == np.float16:
            dtype = F16
        else:
            raise InvalidArgumentError(
                "%s: pyopencl array of dtype %s; bloopcl takes float32, float16, or uint16 "
                "bfloat16 bits marked with bloopcl.bf16(x)" % (role, x.dtype))
    elif x.dtype.itemsize != 2 or x.dtype.kind not in "ui":
        raise InvalidArgumentError("%s: bloopcl.bf16 needs an array of 16-bit integers, not %s"
                                   % (role, x.dtype))
    if not x.flags.c_contiguous:
        raise InvalidArgumentError(
            "%s: the pyopencl array is not contiguous (shape %s, strides %s)"
            % (role, x.shape, x.strides))
    base = x.base_data
    if base is None or not hasattr(base, "int_ptr"):
        raise InvalidArgumentError("%s: the pyopencl array is not backed by a cl_mem buffer "
                                   "(SVM arrays are not supported)" % role)
    try:
        cl_context = int(base.context.int_ptr)
    except Exception:  # a memory-pool buffer may not say; the library checks it anyway
        cl_context = None
    return DevicePart(int(base.int_ptr), int(x.offset), int(x.size), dtype, x,
                      cl_context=cl_context, queue=x.queue, events=list(x.events), array=x)


def _pyopencl_buffer_part(buf, role, offset=0, count=None, dtype=F32, keep=None):
    size = int(buf.size)
    itemsize = _ITEMSIZE[dtype]
    if count is None:
        if offset > size or (size - offset) % itemsize != 0:
            raise SizeMismatchError(
                "%s: a buffer of %d bytes from offset %d is no whole number of %s elements; "
                "give the count with bloopcl.Segment" % (role, size, offset, DTYPE_NAMES[dtype]))
        count = (size - offset) // itemsize
    try:
        cl_context = int(buf.context.int_ptr)
    except Exception:
        cl_context = None
    return DevicePart(int(buf.int_ptr), offset, count, dtype, keep if keep is not None else buf,
                      cl_context=cl_context)


def _tinygrad_part(t, role, ctx):
    from tinygrad import Device, dtypes

    device = t.device
    if not isinstance(device, str) or not device.split(":", 1)[0] == "CL":
        raise WrongContextError("%s: a tinygrad tensor on %r; bloopcl takes tensors on an "
                                "OpenCL device (CL)" % (role, device))
    codes = {dtypes.float32: F32, dtypes.float16: F16, dtypes.bfloat16: BF16}
    dtype = codes.get(t.dtype)
    if dtype is None:
        raise InvalidArgumentError("%s: tinygrad dtype %s; bloopcl takes float32, float16 or "
                                   "bfloat16" % (role, t.dtype))
    canonical = Device.canonicalize(device)
    if ctx.tinygrad_device is not None and canonical != ctx.tinygrad_device:
        raise WrongContextError("%s: a tinygrad tensor on %s, the context is on %s"
                                % (role, canonical, ctx.tinygrad_device))
    dev = Device[canonical]
    cl_context = handle_value(dev.context)
    if cl_context == ctx.cl_context and handle_value(dev.queue) != ctx.queue:
        raise InvalidArgumentError(
            "%s: tinygrad tensors are combined on tinygrad's own queue, in order with its "
            "kernels; make the context with bloopcl.Context.from_tinygrad(%r)" % (role,
                                                                                canonical))
    return TinygradPart(t, dtype, cl_context)


def _tinygrad_finish(part, role):
    """The segment of a tinygrad tensor once it is realized."""
    t, dtype, cl_context = part.tensor, part.dtype, part.cl_context
    try:
        buf = t.uop.buffer
    except (RuntimeError, AssertionError) as e:
        raise InvalidArgumentError(
            "%s: this tinygrad tensor is a view without a contiguous buffer of its own (%s); "
            "pass t.contiguous().realize()" % (role, e)) from None
    if not hasattr(buf, "base") or not hasattr(buf, "offset"):
        raise InvalidArgumentError("%s: a multi-device tinygrad tensor is not supported" % role)
    if buf.size != t.numel() or buf.dtype != t.dtype:
        raise InvalidArgumentError("%s: the tinygrad tensor's buffer (%d x %s) is not the "
                                   "tensor (%d x %s)" % (role, buf.size, buf.dtype, t.numel(),
                                                         t.dtype))
    base = buf.base.ensure_allocated()
    return DevicePart(handle_value(base._buf), int(buf.offset), int(buf.size), dtype, t,
                      cl_context=cl_context)


def _one(x, role, writable, ctx):
    marker_dtype = None
    if isinstance(x, bf16):
        marker_dtype, x = BF16, x.array
    if isinstance(x, np.ndarray):
        return _numpy_part(x, role, writable, marker_dtype)
    if isinstance(x, Segment):
        buffer = x.buffer
        if isinstance(buffer, int):
            if x.count is None:
                raise SizeMismatchError("%s: a Segment of a raw handle needs its count" % role)
            return DevicePart(buffer, x.offset, x.count, x.dtype,
                              x.keep if x.keep is not None else x)
        if _module_of(buffer) == "pyopencl" and hasattr(buffer, "base_data"):
            if not buffer.flags.c_contiguous:
                raise InvalidArgumentError("%s: the Segment's pyopencl array is not "
                                           "contiguous" % role)
            part = _pyopencl_buffer_part(buffer.base_data, role, buffer.offset + x.offset,
                                         x.count, x.dtype, keep=x.keep or buffer)
            part.queue, part.events, part.array = buffer.queue, list(buffer.events), buffer
            return part
        if _module_of(buffer) == "pyopencl" and hasattr(buffer, "int_ptr"):
            return _pyopencl_buffer_part(buffer, role, x.offset, x.count, x.dtype,
                                         keep=x.keep or buffer)
        raise InvalidArgumentError("%s: a Segment takes a pyopencl Buffer or Array or an int "
                                   "handle, not %s" % (role, type(buffer).__name__))
    module = _module_of(x)
    if module == "pyopencl":
        if hasattr(x, "base_data") and hasattr(x, "flags"):
            return _pyopencl_array_part(x, role, marker_dtype)
        if hasattr(x, "int_ptr") and hasattr(x, "size") and marker_dtype is None:
            return _pyopencl_buffer_part(x, role)
        if hasattr(x, "int_ptr") and hasattr(x, "size"):
            return _pyopencl_buffer_part(x, role, dtype=BF16)
    if _is_tinygrad_tensor(x):
        if marker_dtype is not None:
            raise InvalidArgumentError("%s: a tinygrad tensor carries its own dtype; no "
                                       "bloopcl.bf16 marker" % role)
        return _tinygrad_part(x, role, ctx)
    raise InvalidArgumentError(
        "%s: %s is not something bloopcl takes (a 1-D numpy float32/float16 array, a "
        "pyopencl Array or Buffer, a tinygrad Tensor on CL, a bloopcl.Segment, or a list of "
        "these)" % (role, type(x).__module__ + "." + type(x).__name__))


def resolve(x, role, writable, ctx):
    """The parts of one operand (g, a or out): a list, one part per segment, and whether the
    operand was given as a list."""
    is_list = isinstance(x, (list, tuple))
    items = list(x) if is_list else [x]
    if is_list and not items:
        raise SizeMismatchError("%s: an empty list" % role)
    parts = []
    for i, item in enumerate(items):
        name = "%s[%d]" % (role, i) if is_list else role
        if isinstance(item, (list, tuple)):
            raise InvalidArgumentError("%s: lists do not nest" % name)
        parts.append(_one(item, name, writable, ctx))
    return parts, is_list


def realize_tinygrad(operands, roles):
    """Realizes the tinygrad tensors among the parts (one tinygrad schedule) and turns them
    into device segments. Every check that needs no realization has passed before."""
    tensors = [p.tensor for parts in operands for p in parts if isinstance(p, TinygradPart)]
    if not tensors:
        return operands
    from tinygrad import Tensor

    Tensor.realize(*tensors)
    result = []
    for parts, role in zip(operands, roles):
        done = []
        for i, p in enumerate(parts):
            name = role if len(parts) == 1 else "%s[%d]" % (role, i)
            done.append(_tinygrad_finish(p, name) if isinstance(p, TinygradPart) else p)
        result.append(done)
    return result

