"""Every refusal: a bloopcl.Error subclass per status, with the library's message where the
library refused, raised before anything is enqueued, the state unchanged, nothing printed."""
import math

import numpy as np
import pytest

import bloopcl
from conftest import gradients

import pyopencl as cl  # noqa: E402
import pyopencl.array as cla  # noqa: E402

N = 256


@pytest.fixture
def stepped(ctx, rng):
    """A combiner after one accepted step, with its state and step count, and the inputs."""
    comb = bloopcl.Combiner(ctx, N, lbda=0.5, ema=0.1)
    g, a = gradients(rng, N, 1)[0]
    comb.step(g, a)
    return comb, g, a


def unchanged(comb, ema, steps=1):
    assert np.array_equal(comb.state_dict()["ema"], ema)
    assert comb.diagnostics["steps"] == steps


def test_error_classes_carry_status_and_message():
    e = bloopcl.SizeMismatchError("three is not four")
    assert isinstance(e, bloopcl.Error) and isinstance(e, ValueError)
    assert e.status == -3 and e.status_name == "BLOOPCL_ERR_SIZE_MISMATCH"
    assert e.message == "three is not four" and "three is not four" in str(e)
    assert bloopcl.status_string(-3) == bloopcl.status_string(e.status) != ""
    assert bloopcl.Error("x", -14).status_name == "BLOOPCL_ERR_WRONG_CONTEXT"


@pytest.mark.parametrize("bad, error, words", [
    (lambda g: g.astype(np.float64), bloopcl.InvalidArgumentError, "float64"),
    (lambda g: np.repeat(g, 2)[::2], bloopcl.InvalidArgumentError, "not contiguous"),
    (lambda g: g.reshape(16, 16), bloopcl.InvalidArgumentError, "1-D"),
    (lambda g: g[:-1].copy(), bloopcl.SizeMismatchError, "255 elements"),
    (lambda g: g.astype(np.int32), bloopcl.InvalidArgumentError, "int32"),
    (lambda g: g.astype(">f4"), bloopcl.InvalidArgumentError, "byte order"),
    (lambda g: list(g), bloopcl.InvalidArgumentError, "float"),
    (lambda g: [g[:100].copy(), g[100:].copy()], bloopcl.SizeMismatchError, "segment counts"),
    (lambda g: "g", bloopcl.InvalidArgumentError, "str"),
], ids=["float64", "strided", "2-D", "size", "int32", "big-endian", "floats", "segments",
        "str"])
def test_host_inputs_refused(stepped, capfd, bad, error, words):
    comb, g, a = stepped
    ema = comb.state_dict()["ema"]
    with pytest.raises(error) as info:
        comb.step(bad(g), a)
    assert words in info.value.message
    unchanged(comb, ema)
    assert capfd.readouterr() == ("", "")


def test_host_outputs_refused(stepped):
    comb, g, a = stepped
    ema = comb.state_dict()["ema"]
    read_only = np.empty(N, np.float32)
    read_only.flags.writeable = False
    with pytest.raises(bloopcl.InvalidArgumentError, match="read-only"):
        comb.step(g, a, out=read_only)
    with pytest.raises(bloopcl.InvalidArgumentError, match="float64"):
        comb.step(g, a, out=np.empty(N))
    with pytest.raises(bloopcl.SizeMismatchError):
        comb.step(g, a, out=np.empty(N + 1, np.float32))
    unchanged(comb, ema)


def test_configuration_refused(ctx, capfd):
    cases = [dict(ema=0.0), dict(ema=1.5), dict(lbda=-1.0), dict(eps=math.nan),
             dict(eps=-1e-7)]
    for case in cases:
        with pytest.raises(bloopcl.InvalidArgumentError) as info:
            bloopcl.Combiner(ctx, N, **case)
        assert info.value.status == -2 and info.value.message  # the library's own text
    with pytest.raises(bloopcl.InvalidArgumentError, match="method"):
        bloopcl.Combiner(ctx, N, method="adam")
    with pytest.raises(bloopcl.InvalidArgumentError, match="dots"):
        bloopcl.Combiner(ctx, N, dots="cublas")
    with pytest.raises(bloopcl.InvalidArgumentError, match="float64"):
        bloopcl.Combiner(ctx, N, init=np.zeros(N))
    with pytest.raises(bloopcl.SizeMismatchError):
        bloopcl.Combiner(ctx, N, init=np.zeros(N - 1, np.float32))
    with pytest.raises(bloopcl.SizeMismatchError):
        bloopcl.Combiner(ctx, 0)
    with pytest.raises(bloopcl.InvalidArgumentError):
        bloopcl.Combiner("not a context", N)
    comb = bloopcl.Combiner(ctx, N)
    with pytest.raises(bloopcl.InvalidArgumentError):
        comb.set_hyperparameters(ema=0.0)
    assert comb.config["ema"] == 0.01  # unchanged, and the Python default ema=0.01
    assert capfd.readouterr() == ("", "")


def test_devices_refused(capfd):
    with pytest.raises(bloopcl.DeviceNotFoundError) as info:
        bloopcl.Context("nosuchplatform:")
    assert "devices found" in info.value.message  # the library lists them
    with pytest.raises(bloopcl.DeviceSpecError):
        bloopcl.Context("gpu:x:y")
    assert capfd.readouterr() == ("", "")


def test_pyopencl_inputs_refused(ocl_ctx, cl_queue, cl_device, rng, capfd):
    comb = bloopcl.Combiner(ocl_ctx, N, lbda=0.5, ema=0.1)
    g, a = gradients(rng, N, 1)[0]
    gd, ad = cla.to_device(cl_queue, g), cla.to_device(cl_queue, a)
    comb.step(gd, ad)
    ema = comb.state_dict()["ema"]
    with pytest.raises(bloopcl.InvalidArgumentError, match="float64"):
        comb.step(cla.to_device(cl_queue, g.astype(np.float64)), ad)
    with pytest.raises(bloopcl.InvalidArgumentError, match="not contiguous"):
        comb.step(cla.to_device(cl_queue, np.repeat(g, 2))[::2], ad)
    with pytest.raises(bloopcl.SizeMismatchError):
        comb.step(gd[1:], ad[1:])
    with pytest.raises(bloopcl.SizeMismatchError):  # a Buffer of 1 KiB + 2 bytes
        comb.step(cl.Buffer(cl_queue.context, cl.mem_flags.READ_WRITE, 4 * N + 2), ad)
    other_ctx = cl.Context([cl_device])  # another cl_context on the same device
    other = cla.to_device(cl.CommandQueue(other_ctx), g)
    with pytest.raises(bloopcl.WrongContextError, match="another OpenCL context"):
        comb.step(other, ad)
    # the same through a raw handle, which only the library can check: its message
    with pytest.raises(bloopcl.WrongContextError) as info:
        comb.step(bloopcl.Segment(other.base_data.int_ptr, 0, N, keep=other), ad)
    assert info.value.message == ocl_ctx.last_error != ""
    # out overlapping g by one element: refused by the library, naming the two segments
    big = cla.to_device(cl_queue, np.concatenate([g, g]))
    with pytest.raises(bloopcl.InvalidArgumentError) as info:
        comb.step(big[:N], ad, out=big[1:N + 1])
    assert "overlap" in info.value.message
    with pytest.raises(bloopcl.BufferTooSmallError):  # a segment past the buffer's end
        comb.step(bloopcl.Segment(gd.base_data, offset=8, count=N), ad)
    ro = cl.Buffer(cl_queue.context, cl.mem_flags.READ_ONLY, 4 * N)
    with pytest.raises(bloopcl.InvalidArgumentError, match="READ_ONLY"):
        comb.step(gd, ad, out=ro)
    with pytest.raises(bloopcl.InvalidArgumentError):  # host and device mixed
        comb.step(gd, a)
    with pytest.raises(bloopcl.InvalidArgumentError):  # bf16 marks 16-bit arrays only
        comb.step(bloopcl.bf16(gd), ad)
    unchanged(comb, ema)
    assert capfd.readouterr() == ("", "")


def test_clblast_refuses_two_byte_types(ocl_ctx, cl_queue, rng):
    comb = bloopcl.Combiner(ocl_ctx, N, dots="clblast")
    assert comb.config["dots"] == "clblast"
    g, a = gradients(rng, N, 1)[0]
    with pytest.raises(bloopcl.UnsupportedError):
        comb.step(cla.to_device(cl_queue, g.astype(np.float16)),
                  cla.to_device(cl_queue, a.astype(np.float16)))
    assert comb.diagnostics["steps"] == 0


def test_out_of_order_queue_refused(cl_context, cl_device):
    props = cl.command_queue_properties.OUT_OF_ORDER_EXEC_MODE_ENABLE
    if not cl_device.queue_properties & props:
        raise AssertionError("the test device takes no out-of-order queue; pick another")
    queue = cl.CommandQueue(cl_context, properties=props)
    with pytest.raises(bloopcl.InvalidArgumentError, match="out of order"):
        bloopcl.Context.from_pyopencl(queue)
    # past the Python check, the library refuses it too, with its own message
    with pytest.raises(bloopcl.InvalidArgumentError, match="out of order"):
        bloopcl.Context.from_cl(cl_context, cl_device, queue)
    with pytest.raises(bloopcl.InvalidArgumentError):
        bloopcl.Context.from_pyopencl(cl_context)  # not a queue


def test_state_dict_refused(ctx, stepped):
    comb, g, a = stepped
    sd = comb.state_dict()
    ema = sd["ema"]
    with pytest.raises(bloopcl.StateError):
        comb.load_state_dict(dict(sd, method="pcgrad"))
    with pytest.raises(bloopcl.StateError):
        comb.load_state_dict(dict(sd, n=N + 1))
    with pytest.raises(bloopcl.InvalidArgumentError):
        comb.load_state_dict(dict(sd, ema=sd["ema"].astype(np.float64), lbda=0.9))
    with pytest.raises(bloopcl.InvalidArgumentError):
        comb.load_state_dict(dict(sd, ema_weight=0.0, ema=np.zeros(N, np.float32)))
    with pytest.raises(bloopcl.InvalidArgumentError):
        comb.load_state_dict({"ema": ema})
    unchanged(comb, ema)
    assert comb.config["lbda"] == 0.5
