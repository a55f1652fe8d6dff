"""PyOpenCL: arrays and buffers used in place on the context's queue (zero-copy), views with
byte offsets, explicit segments and sub-buffers, typed (f16/bf16) device memory, other queues
of the same context synchronised by events."""
import threading

import numpy as np
import pytest

import bloopcl
from conftest import gradients

import pyopencl as cl  # noqa: E402
import pyopencl.array as cla  # noqa: E402

mf = cl.mem_flags


def to_buffer(queue, host, flags=mf.READ_WRITE):
    """A buffer holding `host`, filled by a device-to-device copy (so that it may be
    HOST_NO_ACCESS)."""
    staging = cl.Buffer(queue.context, mf.READ_WRITE | mf.COPY_HOST_PTR, hostbuf=host)
    buf = cl.Buffer(queue.context, flags, host.nbytes)
    cl.enqueue_copy(queue, buf, staging)
    return buf


def from_buffer(queue, buf, like):
    """The contents of `buf` through a staging buffer (HOST_NO_ACCESS cannot be read)."""
    staging = cl.Buffer(queue.context, mf.READ_WRITE, like.nbytes)
    cl.enqueue_copy(queue, staging, buf)
    out = np.empty_like(like)
    cl.enqueue_copy(queue, out, staging)
    queue.finish()
    return out


def test_zero_copy_in_place_on_the_queue(ocl_ctx, cl_context, cl_queue, rng):
    """g, a and d in HOST_NO_ACCESS buffers: any host transfer the binding made through them
    would fail. The queue is held back by a user event while the step is called: the call
    returns (nothing waits for the queue), a second queue still reads the old d (the step's
    kernels are behind the gate, on the context's queue), and once the gate opens d is the
    reference's, in the same buffer (out=g: in place)."""
    n = 4099
    g, a = gradients(rng, n, 1)[0]
    flags = mf.READ_WRITE | mf.HOST_NO_ACCESS
    g_buf, a_buf = to_buffer(cl_queue, g, flags), to_buffer(cl_queue, a, flags)
    cl_queue.finish()
    with pytest.raises(cl.Error):  # the premise: host transfers of these buffers fail here
        cl.enqueue_copy(cl_queue, np.empty_like(g), g_buf).wait()
    comb = bloopcl.Combiner(ocl_ctx, n, lbda=0.5, ema=0.1)
    expected = bloopcl.Reference(n, lbda=0.5, ema=0.1).step(g, a)

    gate = cl.UserEvent(cl_context)
    cl.enqueue_marker(cl_queue, wait_for=[gate])  # everything after it waits for the gate
    result = {}
    caller = threading.Thread(target=lambda: result.setdefault("d", comb.step(g_buf, a_buf,
                                                                               out=g_buf)))
    caller.start()
    caller.join(60)
    try:
        assert not caller.is_alive(), "step waited for the gated queue"
        assert result["d"] is g_buf
        other = cl.CommandQueue(cl_context)
        np.testing.assert_array_equal(from_buffer(other, g_buf, g), g)  # not yet run
    finally:
        gate.set_status(cl.command_execution_status.COMPLETE)
        caller.join()
    cl_queue.finish()
    np.testing.assert_allclose(from_buffer(cl_queue, g_buf, g), expected, rtol=0, atol=1e-5)
    assert comb.diagnostics["accepted"]


def test_arrays_in_place_keep_their_identity(ocl_ctx, cl_queue, rng):
    n = 1000
    comb = bloopcl.Combiner(ocl_ctx, n, lbda=0.3, ema=0.1)
    ref = bloopcl.Reference(n, lbda=0.3, ema=0.1)
    for g, a in gradients(rng, n, 3):
        gd, ad = cla.to_device(cl_queue, g), cla.to_device(cl_queue, a)
        handle = gd.base_data.int_ptr
        d = comb.step(gd, ad, out=gd)
        assert d is gd and gd.base_data.int_ptr == handle and gd.offset == 0
        np.testing.assert_allclose(gd.get(), ref.step(g, a), rtol=0, atol=1e-5)
    d = comb.step(cla.to_device(cl_queue, g), cla.to_device(cl_queue, a))  # out=None
    assert isinstance(d, cla.Array) and d.dtype == np.float32 and d.shape == (n,)


def test_views_with_offsets(ocl_ctx, cl_queue, rng):
    """Array views (sub-arrays with a byte offset) of larger arrays become segments at that
    offset; nothing outside the views is read or written."""
    n = 513
    g, a = gradients(rng, n, 1)[0]
    canary = np.float32(-12345.0)
    host_g = np.full(n + 11, canary, np.float32)
    host_g[5:5 + n] = g
    host_a = np.full(2 * n, canary, np.float32)
    host_a[n:] = a
    host_d = np.full(n + 100, canary, np.float32)
    big_g, big_a, big_d = (cla.to_device(cl_queue, x) for x in (host_g, host_a, host_d))
    gv, av, dv = big_g[5:5 + n], big_a[n:], big_d[37:37 + n]
    assert (gv.offset, av.offset, dv.offset) == (20, 4 * n, 148)
    comb = bloopcl.Combiner(ocl_ctx, n, lbda=0.5, ema=0.1)
    assert comb.step(gv, av, out=dv) is dv
    expected = bloopcl.Reference(n, lbda=0.5, ema=0.1).step(g, a)
    got = big_d.get()
    np.testing.assert_allclose(got[37:37 + n], expected, rtol=0, atol=1e-5)
    assert (got[:37] == canary).all() and (got[37 + n:] == canary).all()
    np.testing.assert_array_equal(big_g.get(), host_g)
    np.testing.assert_array_equal(big_a.get(), host_a)


def test_segment_lists_buffers_and_sub_buffers(ocl_ctx, cl_context, cl_queue, rng):
    """A list of pyopencl Arrays, Buffers, explicit Segments (offset and count in a larger
    buffer) and a sub-buffer: one segment each, one global projection."""
    sizes = [300, 1, 257, 64]
    n = sum(sizes)
    g, a = gradients(rng, n, 1)[0]
    cuts = np.cumsum([0] + sizes)
    pieces = [(g[cuts[i]:cuts[i + 1]].copy(), a[cuts[i]:cuts[i + 1]].copy())
              for i in range(len(sizes))]
    # piece 0: Arrays; 1: Buffers; 2: Segments in a shared buffer; 3: sub-buffers
    g0, a0 = cla.to_device(cl_queue, pieces[0][0]), cla.to_device(cl_queue, pieces[0][1])
    g1, a1 = to_buffer(cl_queue, pieces[1][0]), to_buffer(cl_queue, pieces[1][1])
    shared = np.zeros(1024, np.float32)
    shared[100:357] = pieces[2][0]
    shared[500:757] = pieces[2][1]
    shared_buf = to_buffer(cl_queue, shared)
    g2 = bloopcl.Segment(shared_buf, offset=400, count=257)
    a2 = bloopcl.Segment(shared_buf, offset=2000, count=257)
    align = cl_queue.device.mem_base_addr_align // 8
    parent = np.zeros(2 * align // 4 + 64, np.float32)
    parent[align // 4:align // 4 + 64] = pieces[3][0]
    parent_buf = to_buffer(cl_queue, parent)
    g3 = parent_buf.get_sub_region(align, 64 * 4)
    a3 = cla.to_device(cl_queue, pieces[3][1])
    out = [cla.empty(cl_queue, 300, np.float32), cl.Buffer(cl_context, mf.READ_WRITE, 4),
           bloopcl.Segment(cl.Buffer(cl_context, mf.READ_WRITE, 4096), offset=1024, count=257),
           cla.empty(cl_queue, 64, np.float32)]
    comb = bloopcl.Combiner(ocl_ctx, n, lbda=0.5, ema=0.1)
    assert comb.step([g0, g1, g2, g3], [a0, a1, a2, a3], out=out) is out
    cl_queue.finish()
    got = np.concatenate([out[0].get(), from_buffer(cl_queue, out[1], np.empty(1, np.float32)),
                          from_buffer(cl_queue, out[2].buffer, np.empty(1024, np.float32))[
                              256:256 + 257], out[3].get()])
    ref = bloopcl.Reference(n, lbda=0.5, ema=0.1)
    np.testing.assert_allclose(got, ref.step(g, a), rtol=0, atol=1e-5)
    assert comb.diagnostics["r"] == pytest.approx(ref.diagnostics["r"], rel=1e-5)


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_two_byte_device_dtypes(ocl_ctx, cl_queue, rng, dtype):
    n = 999
    g, a = gradients(rng, n, 1)[0]
    ref = bloopcl.Reference(n, lbda=0.5, ema=0.1)
    comb = bloopcl.Combiner(ocl_ctx, n, lbda=0.5, ema=0.1)
    if dtype == "f16":
        gh, ah = g.astype(np.float16), a.astype(np.float16)
        d = comb.step(cla.to_device(cl_queue, gh), cla.to_device(cl_queue, ah))
        assert d.dtype == np.float16
        want = ref.step(gh, ah, out=np.empty(n, np.float16))
        np.testing.assert_allclose(d.get().astype(np.float32), want.astype(np.float32),
                                   rtol=2 ** -10, atol=1e-3)
    else:
        gb = (g.view(np.uint32) >> 16).astype(np.uint16)
        ab = (a.view(np.uint32) >> 16).astype(np.uint16)
        out = cla.empty(cl_queue, n, np.uint16)
        comb.step(bloopcl.bf16(cla.to_device(cl_queue, gb)),
                  bloopcl.bf16(cla.to_device(cl_queue, ab)), out=bloopcl.bf16(out))
        want = ref.step(bloopcl.bf16(gb), bloopcl.bf16(ab), out=bloopcl.bf16(
            np.empty(n, np.uint16)))
        got32 = (out.get().astype(np.uint32) << 16).view(np.float32)
        want32 = (want.astype(np.uint32) << 16).view(np.float32)
        np.testing.assert_allclose(got32, want32, rtol=2 ** -7, atol=1e-2)
    assert comb.diagnostics["accepted"]


def test_arrays_of_another_queue_are_ordered_by_events(ocl_ctx, cl_context, cl_queue, rng):
    """g is written on a second queue of the same context, held back by a user event: the
    step (on the context's queue) waits for that queue, and what the second queue does after
    the step waits for the step."""
    n = 2048
    g, a = gradients(rng, n, 1)[0]
    other = cl.CommandQueue(cl_context)
    gd = cla.zeros(other, n, np.float32)
    ad = cla.to_device(other, a)
    other.finish()
    gate = cl.UserEvent(cl_context)
    staging = cl.Buffer(cl_context, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=g)
    cl.enqueue_marker(other, wait_for=[gate])
    gd.add_event(cl.enqueue_copy(other, gd.base_data, staging))  # g arrives after the gate
    comb = bloopcl.Combiner(ocl_ctx, n, lbda=0.5, ema=0.1)
    d = comb.step(gd, ad)
    gate.set_status(cl.command_execution_status.COMPLETE)
    expected = bloopcl.Reference(n, lbda=0.5, ema=0.1).step(g, a)
    np.testing.assert_allclose(d.get(), expected, rtol=0, atol=1e-5)
    gd2 = gd * 1  # on the other queue, after the step's barrier there
    np.testing.assert_array_equal(gd2.get(), g)


def test_segments_of_arrays_and_new_outputs(ocl_ctx, cl_queue, rng):
    """Segments over parts of pyopencl Arrays; out=None makes a new buffer of the segment's
    size (a Buffer for f32), returned in g's structure."""
    n = 200
    g, a = gradients(rng, n, 1)[0]
    big_g = cla.to_device(cl_queue, np.concatenate([g, np.ones(50, np.float32)]))
    big_a = cla.to_device(cl_queue, np.concatenate([np.ones(30, np.float32), a]))
    comb = bloopcl.Combiner(ocl_ctx, n, lbda=0.5, ema=0.1)
    d = comb.step(bloopcl.Segment(big_g, 0, n), bloopcl.Segment(big_a, 120, n))
    assert isinstance(d, cl.Buffer) and d.size == 4 * n
    got = np.empty(n, np.float32)
    cl.enqueue_copy(cl_queue, got, d)
    expected = bloopcl.Reference(n, lbda=0.5, ema=0.1).step(g, a)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
