"""The optimizer in the step from Python: set_optimizer, step(g, a, params=p) updating
pyopencl arrays in place, against "the same step writing d, then AdamW or SGD in numpy",
learning-rate schedules, skipped steps, checkpoints (state_dict holds the moments and t), and
the refusals."""
import numpy as np
import pytest

import bloopcl
from conftest import gradients

import pyopencl.array as cla  # noqa: E402


def adamw_numpy(p, d, m, v, t, lr, wd=1e-2, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.AdamW's update in float32, written from its documentation."""
    f = np.float32
    p = p * (f(1) - f(lr) * f(wd))
    m[:] = m + (f(1) - f(b1)) * (d - m)
    v[:] = f(b2) * v + (f(1) - f(b2)) * (d * d)
    c1, c2 = f(1) - f(b1) ** t, f(1) - f(b2) ** t
    return p - (f(lr) / c1) * (m / (np.sqrt(v) / np.sqrt(c2) + f(eps)))


def test_adamw_in_the_step_equals_step_then_adamw(ocl_ctx, cl_queue, rng):
    n = 3001
    fused = bloopcl.Combiner(ocl_ctx, n, lbda=0.4, ema=0.1)
    plain = bloopcl.Combiner(ocl_ctx, n, lbda=0.4, ema=0.1)
    fused.set_optimizer("adamw", lr=1e-2)
    p_host = rng.standard_normal(n).astype(np.float32)
    params = cla.to_device(cl_queue, p_host)
    m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    lr = 1e-2
    for t, (g, a) in enumerate(gradients(rng, n, 6), start=1):
        if t == 4:
            lr = 5e-3
            fused.set_lr(lr)
        gd, ad = cla.to_device(cl_queue, g), cla.to_device(cl_queue, a)
        assert fused.step(gd, ad, params=params) is params
        d = plain.step(gd, ad, out=cla.empty_like(gd)).get()
        p_host = adamw_numpy(p_host, d, m, v, t, lr)
        np.testing.assert_allclose(params.get(), p_host, rtol=2e-6, atol=2e-7)
    assert fused.optimizer["steps"] == 6 and fused.diagnostics["optimizer_steps"] == 6
    sd = fused.state_dict()
    np.testing.assert_allclose(sd["moment1"], m, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sd["moment2"], v, rtol=1e-5, atol=1e-9)


def test_sgd_momentum_and_skipped_step(ocl_ctx, cl_queue, rng):
    """Nesterov SGD; a NaN in g skips the step: the parameters and t stay as they were."""
    n = 517
    comb = bloopcl.Combiner(ocl_ctx, n, method="mixed", lbda=0.0)
    comb.set_optimizer("sgd", lr=0.1, momentum=0.9, nesterov=True)
    g = rng.standard_normal(n).astype(np.float32)
    params = cla.zeros(cl_queue, n, np.float32)
    gd, ad = cla.to_device(cl_queue, g), cla.zeros(cl_queue, n, np.float32)
    b = np.zeros(n, np.float32)
    expected = np.zeros(n, np.float32)
    for t in range(1, 4):  # Mixed with lambda 0: d = g
        comb.step(gd, ad, params=params)
        b = g.copy() if t == 1 else np.float32(0.9) * b + g
        expected = expected - np.float32(0.1) * (g + np.float32(0.9) * b)
    np.testing.assert_allclose(params.get(), expected, rtol=1e-5, atol=1e-6)
    before = params.get()
    bad = g.copy()
    bad[3] = np.nan
    comb.step(cla.to_device(cl_queue, bad), ad, params=params)
    assert not comb.diagnostics["accepted"]
    np.testing.assert_array_equal(params.get(), before)
    assert comb.optimizer["steps"] == 3


def test_checkpoint_resumes_bit_for_bit(ocl_ctx, cl_queue, rng):
    n = 2000
    data = gradients(rng, n, 6)
    p0 = rng.standard_normal(n).astype(np.float32)

    def run(comb, params, steps):
        for g, a in steps:
            comb.step(cla.to_device(cl_queue, g), cla.to_device(cl_queue, a), params=params)

    straight = bloopcl.Combiner(ocl_ctx, n, method="pcgrad")
    straight.set_optimizer("adamw", lr=3e-3)
    p_straight = cla.to_device(cl_queue, p0)
    run(straight, p_straight, data)

    first = bloopcl.Combiner(ocl_ctx, n, method="pcgrad")
    first.set_optimizer("adamw", lr=3e-3)
    p_resumed = cla.to_device(cl_queue, p0)
    run(first, p_resumed, data[:3])
    sd = first.state_dict()
    assert sd["optimizer"]["kind"] == "adamw" and sd["optimizer_steps"] == 3
    second = bloopcl.Combiner(ocl_ctx, n, method="pcgrad")
    second.load_state_dict(sd)
    run(second, p_resumed, data[3:])
    np.testing.assert_array_equal(p_resumed.get(), p_straight.get())


def test_refusals(ocl_ctx, cl_queue, rng):
    n = 64
    comb = bloopcl.Combiner(ocl_ctx, n)
    g = cla.to_device(cl_queue, rng.standard_normal(n).astype(np.float32))
    p = cla.zeros(cl_queue, n, np.float32)
    with pytest.raises(bloopcl.StateError, match="no optimizer is attached"):
        comb.step(g, g, params=p)
    with pytest.raises(bloopcl.StateError):
        comb.set_lr(0.1)
    with pytest.raises(bloopcl.InvalidArgumentError, match="beta1 and beta2"):
        comb.set_optimizer("adamw", betas=(1.0, 0.999))
    with pytest.raises(bloopcl.InvalidArgumentError, match="optimizer"):
        comb.set_optimizer("lion")
    comb.set_optimizer("sgd", lr=0.1)
    with pytest.raises(bloopcl.InvalidArgumentError, match="device buffers"):
        comb.step(np.zeros(n, np.float32), np.zeros(n, np.float32),
                  params=np.zeros(n, np.float32))
    with pytest.raises(bloopcl.InvalidArgumentError, match="may share no memory"):
        comb.step(g, g, params=g)
    assert comb.optimizer["steps"] == 0
    comb.set_optimizer(None)
    assert comb.optimizer["kind"] is None
