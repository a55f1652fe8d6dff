"""bloopcl.Context: one OpenCL device, one in-order queue and the compiled kernels."""
from . import _bloopcl
from ._errors import InvalidArgumentError
from ._tensors import handle_value


def list_devices():
    """Every OpenCL device of every platform, as `bloopcl-compare --list` shows them: dicts
    with flat_index (the N of BLOOPCL_DEVICE=N), platform_index, device_index, platform_name,
    platform_vendor, device_name, type ("gpu", "cpu", "accelerator"), driver_version,
    opencl_c_version, has_fp64, has_fp16, global_mem_bytes, max_alloc_bytes, compute_units,
    and the platform and device handles as ints."""
    return _bloopcl.list_devices()


class Context:
    """A bloopcl context.

    Context(device=None): a device chosen by the BLOOPCL_DEVICE grammar ("gpu", "cpu",
    "gpu:1", "P:D" with indices or name substrings, "N"); None reads BLOOPCL_DEVICE, and
    unset means the first GPU, else accelerator, else CPU. bloopcl makes its own context and
    queue. Context.from_pyopencl(queue) and Context.from_tinygrad("CL") work on the caller's
    context and in-order queue instead (retained by the library, and the Python objects kept
    here), so their buffers and tensors are used in place.

    cache_dir: the compiled-kernel cache folder (None: BLOOPCL_CACHE_DIR, else the user's
    cache; "off": none). build_options: appended to the kernel build options.
    """

    def __init__(self, device=None, *, cache_dir=None, build_options=None):
        self._init(_bloopcl._Context(device_spec=device, cache_dir=cache_dir,
                                     build_options=build_options), "bloopcl", None, None)

    def _init(self, impl, kind, pyopencl_queue, tinygrad_device):
        self._impl = impl
        self.kind = kind
        self._pyopencl_queue = pyopencl_queue
        self.tinygrad_device = tinygrad_device
        self.cl_context = impl.cl_context
        self.queue = impl.queue

    @classmethod
    def _wrap(cls, impl, kind, pyopencl_queue=None, tinygrad_device=None):
        self = cls.__new__(cls)
        self._init(impl, kind, pyopencl_queue, tinygrad_device)
        return self

    @classmethod
    def from_pyopencl(cls, queue, *, cache_dir=None, build_options=None):
        """A context on a pyopencl.CommandQueue's context, device and queue (in-order: an
        out-of-order queue is refused). pyopencl arrays and buffers of that context are then
        used in place, on that queue."""
        import pyopencl as cl

        if not isinstance(queue, cl.CommandQueue):
            raise InvalidArgumentError("Context.from_pyopencl takes a pyopencl.CommandQueue, "
                                       "not %s" % type(queue).__name__)

        if queue.properties & cl.command_queue_properties.OUT_OF_ORDER_EXEC_MODE_ENABLE:
            raise InvalidArgumentError("the pyopencl queue is out of order; bloopcl needs an "
                                       "in-order queue (create it without "
                                       "OUT_OF_ORDER_EXEC_MODE_ENABLE)")
        keep = (queue, queue.context, queue.device)
        impl = _bloopcl._Context(cl_context=queue.context.int_ptr, cl_device=queue.device.int_ptr,
                                 cl_queue=queue.int_ptr, cache_dir=cache_dir,
                                 build_options=build_options, keep=keep)
        return cls._wrap(impl, "pyopencl", pyopencl_queue=queue)

    @classmethod
    def from_tinygrad(cls, device="CL", *, cache_dir=None, build_options=None):
        """A context on tinygrad's OpenCL device (Device["CL"], or "CL:1"...): its context,
        device and queue, so tinygrad's own tensors (gradients among them) are combined in
        place, in order with tinygrad's kernels."""
        from tinygrad import Device

        name = Device.canonicalize(device)
        dev = Device[name]
        if type(dev).__name__ != "CLDevice" or not all(
                hasattr(dev, a) for a in ("context", "queue", "cl_dev")):
            raise InvalidArgumentError("tinygrad device %s is not its OpenCL device (CL)" % name)
        impl = _bloopcl._Context(cl_context=handle_value(dev.context),
                                 cl_device=handle_value(dev.cl_dev),
                                 cl_queue=handle_value(dev.queue), cache_dir=cache_dir,
                                 build_options=build_options, keep=dev)
        return cls._wrap(impl, "tinygrad", tinygrad_device=name)

    @classmethod
    def from_cl(cls, cl_context, cl_device, cl_queue=None, *, keep=None, cache_dir=None,
                build_options=None):
        """A context on raw OpenCL handles (ints, ctypes pointers or pyopencl objects) of
        another stack; `keep` is held as long as the context lives."""
        impl = _bloopcl._Context(cl_context=handle_value(cl_context),
                                 cl_device=handle_value(cl_device),
                                 cl_queue=handle_value(cl_queue) or None, cache_dir=cache_dir,
                                 build_options=build_options,
                                 keep=(keep, cl_context, cl_device, cl_queue))
        return cls._wrap(impl, "cl")

    @property
    def device(self):
        """The device, as list_devices() describes it."""
        return self._impl.device_info()

    @property
    def last_error(self):
        """The library's message for the last failed call on this context ("" if none)."""
        return self._impl.last_error()

    def finish(self):
        """Blocks until all work enqueued on the context's queue has completed."""
        self._impl.finish()

    def pyopencl_queue(self):
        """The context's queue as a pyopencl.CommandQueue (the caller's own queue for
        from_pyopencl), e.g. to allocate pyopencl arrays in this context."""
        if self._pyopencl_queue is None:
            import pyopencl as cl

            self._pyopencl_queue = cl.CommandQueue.from_int_ptr(self.queue, retain=True)
        return self._pyopencl_queue

    def __repr__(self):
        info = self.device
        return "<bloopcl.Context %s on %s (%s, %s)>" % (self.kind, info["device_name"],
                                                        info["platform_name"], info["type"])

