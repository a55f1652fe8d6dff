"""Lifetimes: the package holds every Python object whose OpenCL handle it passed down and
the library retains what it uses, so objects deleted in any order, under gc.collect(), never
crash. Each scenario runs in a child process, so that a crash fails its test instead of
ending the suite."""
import subprocess
import sys
import textwrap

PRELUDE = textwrap.dedent("""
    import gc, itertools, sys
    import numpy as np
    import bloopcl
    n = 4096
    rng = np.random.default_rng(5)
    g0 = rng.standard_normal(n).astype(np.float32)
    a0 = rng.standard_normal(n).astype(np.float32)
    expected = bloopcl.Reference(n, lbda=0.5, ema=0.1).step(g0, a0)
    def check(d):
        assert np.max(np.abs(d - expected)) < 1e-5, np.max(np.abs(d - expected))
""")


def run(body):
    script = PRELUDE + textwrap.dedent(body) + "\nprint('lifetime: ok')\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("lifetime: ok"), (
        "exit %d\n%s\n%s" % (result.returncode, result.stdout[-3000:], result.stderr[-3000:]))
    return result


def test_pyopencl_objects_deleted_in_every_order():
    run("""
    import pyopencl as cl, pyopencl.array as cla
    # every order of the five objects whose handles meet in bloopcl (5! = 120); g and a
    # go at a fixed point among them (first, middle, last in turn)
    names = ["queue", "clctx", "ctx", "comb", "d"]
    for k, order in enumerate(itertools.permutations(names)):
        order = list(order)
        order[k % 3 * 2:k % 3 * 2] = ["g", "a"]
        objs = {}
        objs["clctx"] = cl.Context([cl.get_platforms()[0].get_devices()[0]])
        objs["queue"] = cl.CommandQueue(objs["clctx"])
        objs["ctx"] = bloopcl.Context.from_pyopencl(objs["queue"])
        objs["comb"] = bloopcl.Combiner(objs["ctx"], n, lbda=0.5, ema=0.1)
        objs["g"] = cla.to_device(objs["queue"], g0)
        objs["a"] = cla.to_device(objs["queue"], a0)
        objs["d"] = objs["comb"].step(objs["g"], objs["a"])   # enqueued, not waited for
        if k % 10 == 0:  # the results are right (not only "no crash") now and then
            check(objs["d"].get())
        # a second step whose inputs are dropped at once, before it ran
        objs["comb"].step(cla.to_device(objs["queue"], g0), cla.to_device(objs["queue"], a0),
                          out=objs["d"])
        for name in order:
            del objs[name]
            gc.collect()
    """)


def test_python_objects_dropped_before_the_library_uses_them():
    """The caller keeps nothing but the combiner: the queue, its context, the Context object
    and the inputs all go, the combiner still steps and finishes."""
    run("""
    import pyopencl as cl, pyopencl.array as cla
    def make():
        clctx = cl.Context([cl.get_platforms()[0].get_devices()[0]])
        queue = cl.CommandQueue(clctx)
        return bloopcl.Combiner(bloopcl.Context.from_pyopencl(queue), n, lbda=0.5, ema=0.1)
    comb = make()
    gc.collect()
    q = comb.ctx.pyopencl_queue()
    d = comb.step(cla.to_device(q, g0), cla.to_device(q, a0))
    del q
    gc.collect()
    check(d.get())
    del comb
    gc.collect()
    check(d.get())  # the output outlives everything else
    """)


def test_tinygrad_objects_deleted_in_every_order():
    run("""
    import os
    os.environ["DEV"] = "CL"
    from tinygrad import Tensor
    names = ["ctx", "comb", "g", "a", "d"]
    for k, order in enumerate(itertools.permutations(names)):  # 5! = 120
        objs = {"ctx": bloopcl.Context.from_tinygrad("CL")}
        objs["comb"] = bloopcl.Combiner(objs["ctx"], n, lbda=0.5, ema=0.1)
        objs["g"], objs["a"] = Tensor(g0).realize(), Tensor(a0).realize()
        objs["d"] = objs["comb"].step(objs["g"], objs["a"])
        if k % 10 == 0:
            check(objs["d"].numpy())
        objs["comb"].step(Tensor(g0) * 1, Tensor(a0) + 0, out=objs["d"])  # lazy, dropped
        for name in order:
            del objs[name]
            gc.collect()
    """)


def test_own_context_and_host_arrays_deleted_in_every_order():
    run("""
    for order in itertools.permutations(["ctx", "comb", "g", "a", "d"]):
        objs = {"ctx": bloopcl.Context()}
        objs["comb"] = bloopcl.Combiner(objs["ctx"], n, lbda=0.5, ema=0.1)
        objs["g"], objs["a"] = g0.copy(), a0.copy()
        objs["d"] = objs["comb"].step(objs["g"], objs["a"])
        check(objs["d"])
        for name in order:
            del objs[name]
            gc.collect()
    """)
