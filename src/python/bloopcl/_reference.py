"""bloopcl.Reference: the library's CPU reference (plain loops, double accumulation), the
oracle bloopcl's own tests and bloopcl-compare check the device against. Experimental API of
the C library (BLOOPCL_EXPERIMENTAL): it may change in any release."""
import operator

import numpy as np

from . import _bloopcl
from ._combiner import REASONS, STATE_AUX_EMA, STATE_EMA, config_kwargs
from ._errors import InvalidArgumentError, SizeMismatchError
from ._tensors import BF16, F16, F32, bf16


def _host(x, what, n, writable=False):
    if isinstance(x, bf16):
        x = x.array
        if not (isinstance(x, np.ndarray) and x.dtype.itemsize == 2 and x.dtype.kind in "ui"):
            raise InvalidArgumentError("%s: bloopcl.bf16 needs a numpy array of 16-bit "
                                       "integers" % what)
        dtype = BF16
    elif isinstance(x, np.ndarray) and x.dtype == np.float32:
        dtype = F32
    elif isinstance(x, np.ndarray) and x.dtype == np.float16:
        dtype = F16
    elif isinstance(x, np.ndarray) and x.dtype.name == "bfloat16":
        dtype = BF16
    else:
        raise InvalidArgumentError("%s: a 1-D numpy float32, float16 or bfloat16 array" % what)
    if x.ndim != 1 or not x.flags.c_contiguous or (writable and not x.flags.writeable):
        raise InvalidArgumentError("%s: need a 1-D contiguous%s array" % (
            what, " writable" if writable else ""))
    if x.shape[0] != n:
        raise SizeMismatchError("%s: %d elements, need %d" % (what, x.shape[0], n))
    return x.view(np.uint16) if dtype != F32 else x, dtype


class Reference:
    """Reference(n, method="bloop", ema=0.01, lbda=0.1, eps=1e-7, rescale=False,
    ratio_only=False, init="zeros", dots="auto", *, seed=0, nonfinite="skip", aux_init=None):
    the same configuration as Combiner, stepped on the host by the library's reference."""

    def __init__(self, n, method="bloop", ema=0.01, lbda=0.1, eps=1e-7, rescale=False,
                 ratio_only=False, init="zeros", dots="auto", *, seed=0, nonfinite="skip",
                 aux_init=None):
        n = operator.index(n)
        kw = config_kwargs(n, method, ema, lbda, eps, rescale, ratio_only, init, dots, seed,
                           nonfinite, aux_init)
        self._impl = _bloopcl._Reference(n, **kw)
        self.n = n
        self.diagnostics = None
        self.status = 0

    def step(self, g, a, out=None, out_dtype=None):
        """One step over host arrays (float32, float16, ml_dtypes bfloat16, or bfloat16 bits
        marked bloopcl.bf16(uint16 array)); returns d (float32 unless out or out_dtype says
        otherwise). A skipped step gives d = 0 and
        diagnostics["accepted"] False."""
        g_bits, g_dtype = _host(g, "g", self.n)
        a_bits, a_dtype = _host(a, "a", self.n)
        if out is None:
            out = np.empty(self.n, out_dtype or np.float32)
        d_bits, d_dtype = _host(out, "out", self.n, writable=True)
        if isinstance(out, bf16):
            out = out.array
        self.status, diag = self._impl.step(g_bits, a_bits, d_bits, g_dtype, a_dtype, d_dtype)
        diag["reason"] = REASONS.get(diag["reason"], str(diag["reason"]))
        self.diagnostics = diag
        return out

    def state(self, kind="ema"):
        """A copy of the reference's EMA ("ema") or PCGrad's auxiliary EMA ("aux_ema")."""
        values = np.empty(self.n, np.float32)
        self._impl.read_state({"ema": STATE_EMA, "aux_ema": STATE_AUX_EMA}[kind], values)
        return values
