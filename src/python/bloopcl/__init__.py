"""bloopcl: the Bloop gradient-surgery direction (and Mixed, Dynamic Barrier, PCGrad) on any
OpenCL device, from Python.

    import bloopcl
    ctx = bloopcl.Context()                          # BLOOPCL_DEVICE grammar, or:
    ctx = bloopcl.Context.from_pyopencl(queue)       # a pyopencl in-order queue
    ctx = bloopcl.Context.from_tinygrad("CL")        # tinygrad's CL device
    comb = bloopcl.Combiner(ctx, n, method="bloop", ema=0.01, lbda=0.1)
    d = comb.step(g, a)                              # or comb.step(g, a, out=g): in place
    comb.diagnostics["r"], comb.state_dict()

g, a and out are numpy arrays (host path), pyopencl arrays or buffers, tinygrad tensors on
CL, or lists of these (one segment each, one global projection). Device memory is used in
place on the context's queue, never copied through the host. See the README, "Using it from
Python".
"""
from . import _bloopcl
from ._build_info import FINGERPRINT as _FINGERPRINT  # noqa: F401 (tests/python/run_pytest.py)
from ._build_info import VERSION as __version__
from ._combiner import Combiner
from ._context import Context, list_devices
from ._errors import *  # noqa: F401,F403
from ._errors import __all__ as _error_names
from ._reference import Reference
from ._tensors import Segment, bf16


def library_version():
    """The version of the C library linked into the extension."""
    return _bloopcl.version()


def status_string(status):
    """The library's static text for a status code."""
    return _bloopcl.status_string(status)


__all__ = ["Context", "Combiner", "Reference", "Segment", "bf16", "list_devices",
           "library_version", "status_string", "__version__"] + [
               n for n in _error_names if n != "error_for"]
