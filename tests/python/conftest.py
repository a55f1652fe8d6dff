"""Shared fixtures of the bloopcl pytest suite (tests/python), and its one rule: no test is
skipped. The suite runs through `meson test -C build -v` (the `python` test,
tests/python/run_pytest.py) against the package installed in the quickstart's venv; every
test really runs on the default OpenCL device (PoCL in CI), and a skipped or xfailed test
fails the session."""
import os

import numpy as np
import pytest

import bloopcl


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = reporter.stats.get("skipped", []) + reporter.stats.get("xfailed", [])
    if skipped and session.exitstatus == 0:
        reporter.write_line("conftest: FAIL: %d test(s) skipped or xfailed; the suite allows "
                            "none" % len(skipped), red=True)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def ctx():
    """A context of bloopcl's own (BLOOPCL_DEVICE, else the default rule)."""
    return bloopcl.Context()


@pytest.fixture(scope="session")
def cl_device(ctx):
    """The pyopencl device that is bloopcl's default device."""
    import pyopencl as cl

    wanted = ctx.device["device"]
    for platform in cl.get_platforms():
        for device in platform.get_devices():
            if device.int_ptr == wanted:
                return device
    raise AssertionError("pyopencl does not list bloopcl's device %r" % ctx.device)


@pytest.fixture(scope="session")
def cl_context(cl_device):
    import pyopencl as cl

    return cl.Context([cl_device])


@pytest.fixture(scope="session")
def cl_queue(cl_context):
    import pyopencl as cl

    return cl.CommandQueue(cl_context)


@pytest.fixture(scope="session")
def ocl_ctx(cl_queue):
    """A bloopcl context on pyopencl's context and queue."""
    return bloopcl.Context.from_pyopencl(cl_queue)


@pytest.fixture(scope="session")
def tg_ctx():
    """A bloopcl context on tinygrad's CL device (DEV=CL in the meson test's environment)."""
    assert os.environ.get("DEV") == "CL", "the suite runs tinygrad with DEV=CL"
    return bloopcl.Context.from_tinygrad("CL")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def gradients(rng, n, steps, scale=1.0):
    """`steps` pairs (g, a) of float32 vectors, a correlated with g so r is not ~0."""
    pairs = []
    for _ in range(steps):
        g = (rng.standard_normal(n) * scale).astype(np.float32)
        a = (0.6 * g + rng.standard_normal(n) * scale).astype(np.float32)
        pairs.append((g, a))
    return pairs


def d_tolerance(g, a, m, r, lbda):
    """A bound on |d_device - d_reference| for Bloop-like steps: both compute d from the same
    EMA m (bit-identical) and r from dot products summed in different orders (r agrees to a
    few ulps, README "CPU reference"), then d = g + lambda (a - r m) in fp32: 16 ulps of the
    largest term."""
    scale = float(np.max(np.abs(g)) + lbda * (np.max(np.abs(a)) + abs(r) * np.max(np.abs(m))))
    return 16 * float(np.finfo(np.float32).eps) * scale + 1e-30


def oracle_step(method, state, g, a, ema, lbda, eps, rescale=False, ratio_only=False):
    """The README's "Methods" table in float64 numpy, independent of the library: updates
    state["m"] (and PCGrad's state["q"]) and returns d."""
    g = g.astype(np.float64)
    a = a.astype(np.float64)
    s = 1.0 / (1.0 + lbda) if rescale else 1.0
    if method == "mixed":
        return s * (g + lbda * a)
    m = g.copy() if ema == 1 else state["m"] + ema * (g - state["m"])
    state["m"] = m
    if method == "pcgrad":
        q = a.copy() if ema == 1 else state["q"] + ema * (a - state["q"])
        state["q"] = q
        a2 = a - min(m @ a / (m @ m + eps), 0.0) * m
        g2 = g - min(q @ g / (q @ q + eps), 0.0) * q
        return s * (g2 + lbda * a2)
    r = m @ a / (m @ m + eps)
    if method == "dynamic_barrier" and lbda > 0:
        r = min(r, 1.0 / lbda)
    if ratio_only:
        return s * ((1.0 - lbda * r) * g + lbda * a)
    return s * (g + lbda * (a - r * m))
