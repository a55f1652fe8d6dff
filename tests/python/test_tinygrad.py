"""tinygrad: tensors on its CL device combined in place on tinygrad's own queue
(Context.from_tinygrad), realized lazily by the binding, real gradients of a small model as
one segment per parameter tensor, 2-byte dtypes, and what is refused."""
import ctypes

import numpy as np
import pytest

import bloopcl
from conftest import gradients

from tinygrad import Device, Tensor, dtypes  # noqa: E402


def cl_mem_of(t):
    return ctypes.cast(t.uop.buffer.base._buf, ctypes.c_void_p).value


def test_context_is_tinygrads_own(tg_ctx):
    dev = Device["CL"]
    assert tg_ctx.kind == "tinygrad"
    assert tg_ctx.cl_context == ctypes.cast(dev.context, ctypes.c_void_p).value
    assert tg_ctx.queue == ctypes.cast(dev.queue, ctypes.c_void_p).value
    assert tg_ctx.device["device"] == ctypes.cast(dev.cl_dev, ctypes.c_void_p).value


def test_in_place_on_tinygrads_queue(tg_ctx, rng):
    """out=g writes d into g's own cl_mem (same handle before and after), and tinygrad's next
    kernel on its queue reads d (queue order, no synchronisation by the caller)."""
    n = 3001
    comb = bloopcl.Combiner(tg_ctx, n, lbda=0.5, ema=0.1)
    ref = bloopcl.Reference(n, lbda=0.5, ema=0.1)
    for g, a in gradients(rng, n, 3):
        tg = Tensor(g).realize()
        ta = Tensor(a).realize()
        handle = cl_mem_of(tg)
        assert comb.step(tg, ta, out=tg) is tg
        assert cl_mem_of(tg) == handle
        doubled = (tg * 2).numpy()  # a tinygrad kernel after the step, on the same queue
        expected = ref.step(g, a)
        np.testing.assert_allclose(doubled / 2, expected, rtol=0, atol=1e-5)
        np.testing.assert_allclose(tg.numpy(), expected, rtol=0, atol=1e-5)
    assert comb.diagnostics["steps"] == 3


def test_lazy_tensors_are_realized_first(tg_ctx, rng):
    n = 500
    g, a = gradients(rng, n, 1)[0]
    lazy_g = Tensor(g * 0.5) * 2  # not realized: the binding realizes it
    lazy_a = Tensor(a) + 0
    comb = bloopcl.Combiner(tg_ctx, n, lbda=0.25, ema=0.2)
    d = comb.step(lazy_g, lazy_a)
    assert isinstance(d, Tensor) and d.shape == (n,) and d.dtype == dtypes.float32
    expected = bloopcl.Reference(n, lbda=0.25, ema=0.2).step(g, a)
    np.testing.assert_allclose(d.numpy(), expected, rtol=0, atol=1e-5)


def test_model_gradients_as_segments(tg_ctx, rng):
    """A small two-layer model: tinygrad's gradients of a main and an auxiliary loss, one
    segment per parameter tensor (2-D weights included), combined in place; the same as the
    reference over the flattened gradients."""
    w1 = Tensor(rng.standard_normal((16, 8)).astype(np.float32)).realize()
    b1 = Tensor(rng.standard_normal(16).astype(np.float32)).realize()
    w2 = Tensor(rng.standard_normal((3, 16)).astype(np.float32)).realize()
    x = Tensor(rng.standard_normal((32, 8)).astype(np.float32))
    y = Tensor(rng.integers(0, 3, 32).astype(np.int32))
    params = [w1, b1, w2]
    main = (x @ w1.T + b1).relu().matmul(w2.T).sparse_categorical_crossentropy(y)
    aux = sum((p * p).sum() for p in params)
    g = [t.contiguous() for t in main.gradient(*params)]
    a = [t.contiguous() for t in aux.gradient(*params)]
    Tensor.realize(*g, *a)
    g_host = np.concatenate([t.numpy().reshape(-1) for t in g])
    a_host = np.concatenate([t.numpy().reshape(-1) for t in a])
    n = g_host.size
    comb = bloopcl.Combiner(tg_ctx, n, lbda=0.5, ema=1.0)
    handles = [cl_mem_of(t) for t in g]
    assert comb.step(g, a, out=g) is g
    assert [cl_mem_of(t) for t in g] == handles
    got = np.concatenate([t.numpy().reshape(-1) for t in g])
    expected = bloopcl.Reference(n, lbda=0.5, ema=1.0).step(g_host, a_host)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert [t.shape for t in g] == [(16, 8), (16,), (3, 16)]


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_two_byte_tensors(tg_ctx, rng, dtype):
    n = 640
    g, a = gradients(rng, n, 1)[0]
    tdtype = dtypes.float16 if dtype == "f16" else dtypes.bfloat16
    tg = Tensor(g).cast(tdtype).realize()
    ta = Tensor(a).cast(tdtype).realize()
    g_used = tg.cast(dtypes.float32).numpy()
    a_used = ta.cast(dtypes.float32).numpy()
    comb = bloopcl.Combiner(tg_ctx, n, lbda=0.5, ema=0.1)
    d = comb.step(tg, ta)
    assert d.dtype == tdtype
    expected = bloopcl.Reference(n, lbda=0.5, ema=0.1).step(g_used, a_used)
    rel = 2.0 ** -10 if dtype == "f16" else 2.0 ** -7
    np.testing.assert_allclose(d.cast(dtypes.float32).numpy(), expected, rtol=rel, atol=1e-2)


def test_refused_tensors(tg_ctx, ctx, rng):
    n = 64
    g, a = gradients(rng, n, 1)[0]
    comb = bloopcl.Combiner(tg_ctx, n, lbda=0.5, ema=0.1)
    tg, ta = Tensor(g).realize(), Tensor(a).realize()
    comb.step(tg, ta)
    before = comb.state_dict()["ema"]
    with pytest.raises(bloopcl.WrongContextError):  # a tensor on tinygrad's CPU device
        comb.step(Tensor(g, device="CPU").realize(), ta)
    with pytest.raises(bloopcl.InvalidArgumentError):  # float64... as int32 tensor
        comb.step(Tensor(np.arange(n, dtype=np.int32)).realize(), ta)
    with pytest.raises(bloopcl.InvalidArgumentError):  # a strided view has no buffer
        comb.step(Tensor(np.repeat(g, 2)).realize()[::2], ta)
    with pytest.raises(bloopcl.InvalidArgumentError):  # host and device mixed
        comb.step(g, ta)
    with pytest.raises(bloopcl.SizeMismatchError):
        comb.step(Tensor(g[:-1]).realize(), Tensor(a[:-1]).realize())
    dev = Device["CL"]
    own_queue = bloopcl.Context.from_cl(dev.context, dev.cl_dev)  # tinygrad's context, a new queue
    with pytest.raises(bloopcl.InvalidArgumentError, match="own queue"):
        bloopcl.Combiner(own_queue, n).step(tg, ta)
    other = bloopcl.Combiner(ctx, n)  # bloopcl's own cl_context: tinygrad's is another
    with pytest.raises(bloopcl.WrongContextError):
        other.step(tg, ta)
    assert np.array_equal(comb.state_dict()["ema"], before)
    assert comb.diagnostics["steps"] == 1
