#!/usr/bin/env python3
"""bench_peers.py: the same Bloop step in numpy, PyTorch eager and JAX jit, next to bloopcl.

Each peer implements the three lines of the method on float32 vectors of n elements,

    m <- m + w (g - m);  r = <m, a> / (<m, m> + eps);  d = g + lambda (a - r m)

and is timed over repeated steps (median) on this machine's CPU, with as many threads as the
library itself uses (all cores). bloopcl's figures come from `bloopcl-bench --json` run in the
same invocation on the default device, so the speed-ups below compare like with like. The
script also reports each implementation's relative error of r against a float64 computation
from the same inputs (the fp32 dot products of numpy and PyTorch lose digits at large n);
bloopcl's r is read through ctypes from the library in the build folder.

Peers that are not installed are skipped (pip install numpy torch jax). Usage:
    python3 tools/bench_peers.py [--sizes 4096,65536,1M,16M,64M] [--reps 10] [--bench PATH]
"""
import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import time

W, LAMBDA, EPS = 0.1, 0.1, 1e-7


def parse_size(text):
    scale = {"k": 1024, "K": 1024, "m": 1 << 20, "M": 1 << 20}
    if text[-1] in scale:
        return int(float(text[:-1]) * scale[text[-1]])
    return int(text)


def median_seconds(step, reps, warmup=3):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def inputs(n):
    import numpy as np
    rng = np.random.default_rng(1)
    g = rng.standard_normal(n, dtype=np.float32)
    a = (rng.standard_normal(n, dtype=np.float32) + np.float32(0.4) * g).astype(np.float32)
    m = rng.standard_normal(n, dtype=np.float32)
    return g, a, m


def reference_ratio(g, a, m):
    """r in float64 from the same float32 inputs (the EMA update itself in float32)."""
    import numpy as np
    m1 = (m + np.float32(W) * (g - m)).astype(np.float32).astype(np.float64)
    return float(np.dot(m1, a.astype(np.float64)) / (np.dot(m1, m1) + EPS))


def bench_numpy(n, reps):
    import numpy as np
    g, a, m0 = inputs(n)
    state = {"m": m0.copy()}
    w, lam, eps = np.float32(W), np.float32(LAMBDA), np.float32(EPS)

    def step():
        m = state["m"]
        m += w * (g - m)
        r = np.dot(m, a) / (np.dot(m, m) + eps)
        return g + lam * (a - r * m), r

    seconds = median_seconds(step, reps)
    state["m"] = m0.copy()
    _, r = step()
    return seconds, float(r)


def bench_torch(n, reps):
    import numpy as np
    import torch
    g_np, a_np, m_np = inputs(n)
    g, a = torch.from_numpy(g_np), torch.from_numpy(a_np)
    state = {"m": torch.from_numpy(m_np.copy())}

    def step():
        m = state["m"]
        m.add_(W * (g - m))
        r = torch.dot(m, a) / (torch.dot(m, m) + EPS)
        return g + LAMBDA * (a - r * m), r

    seconds = median_seconds(step, reps)
    state["m"] = torch.from_numpy(m_np.copy())
    _, r = step()
    return seconds, float(r)


def bench_jax(n, reps):
    import jax
    import jax.numpy as jnp
    g_np, a_np, m_np = inputs(n)
    g, a = jnp.asarray(g_np), jnp.asarray(a_np)

    @jax.jit
    def step_fn(m, g, a):
        m = m + W * (g - m)
        r = jnp.vdot(m, a) / (jnp.vdot(m, m) + EPS)
        return m, g + LAMBDA * (a - r * m), r

    state = {"m": jnp.asarray(m_np)}

    def step():
        state["m"], d, r = step_fn(state["m"], g, a)
        d.block_until_ready()
        return d, r

    seconds = median_seconds(step, reps)
    state["m"] = jnp.asarray(m_np)
    _, r = step()
    return seconds, float(r)


class Config(ctypes.Structure):
    """bloopcl_config, field for field (enums are ints)."""
    _fields_ = [("method", ctypes.c_int), ("ema_weight", ctypes.c_double),
                ("lambda_", ctypes.c_double), ("eps", ctypes.c_double),
                ("rescale", ctypes.c_int), ("ratio_only", ctypes.c_int), ("init", ctypes.c_int),
                ("seed", ctypes.c_uint64), ("initial_ema", ctypes.c_void_p),
                ("initial_aux_ema", ctypes.c_void_p), ("nonfinite", ctypes.c_int),
                ("dots", ctypes.c_int)]


class Diagnostics(ctypes.Structure):
    """bloopcl_diagnostics: nine doubles, accepted, steps."""
    _fields_ = [(name, ctypes.c_double) for name in
                ("ratio", "ratio_raw", "dot_ema_aux", "ema_norm_sq", "aux_norm_sq", "cosine",
                 "aux_ratio", "dot_aux_ema_main", "aux_ema_norm_sq")] + \
               [("accepted", ctypes.c_int), ("steps", ctypes.c_uint64)]


def bloopcl_ratio(library, n, dots):
    """r of one bloopcl Bloop step from the same inputs (through ctypes, host-array call)."""
    import numpy as np
    lib = ctypes.CDLL(library)
    g, a, m = inputs(n)
    ctx, comb = ctypes.c_void_p(), ctypes.c_void_p()
    if lib.bloopcl_context_create(None, ctypes.byref(ctx)) != 0:
        raise RuntimeError("bloopcl_context_create failed")
    config = Config()
    lib.bloopcl_config_default(ctypes.byref(config), 0)  # BLOOPCL_METHOD_BLOOP
    config.ema_weight, config.lambda_, config.eps, config.dots = W, LAMBDA, EPS, dots
    config.init, config.initial_ema = 3, m.ctypes.data  # BLOOPCL_INIT_BUFFER
    try:
        if lib.bloopcl_combiner_create(ctx, ctypes.byref(config), ctypes.c_size_t(n),
                                       ctypes.byref(comb)) != 0:
            raise RuntimeError("bloopcl_combiner_create failed")
        d = np.empty(n, dtype=np.float32)
        lib.bloopcl_step_host(comb, g.ctypes.data_as(ctypes.c_void_p),
                              a.ctypes.data_as(ctypes.c_void_p), d.ctypes.data_as(ctypes.c_void_p))
        diag = Diagnostics()
        lib.bloopcl_get_diagnostics(comb, ctypes.byref(diag))
        return diag.ratio
    finally:
        lib.bloopcl_combiner_destroy(comb)
        lib.bloopcl_context_destroy(ctx)


PEERS = [("numpy", bench_numpy), ("torch eager", bench_torch), ("jax jit", bench_jax)]


def ours(bench, sizes, reps):
    """bloopcl's Bloop step per backend and size: {(backend, n): seconds}."""
    command = [bench, "--json", "--reps", str(reps), "--sizes", ",".join(str(n) for n in sizes)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return {(m["backend"], m["n"]): m["step_seconds"]
            for m in json.loads(out) if m["method"] == "bloop"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="4096,65536,1M,16M,64M")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--bench", default="build/tools/bloopcl-bench")
    parser.add_argument("--library", default="build/src/libbloopcl.so")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    print("bloopcl-bench ...", file=sys.stderr)
    mine = ours(args.bench, sizes, args.reps)
    print(f"{'n':>10} {'implementation':<16} {'step':>12} {'rel err r':>10} "
          f"{'bloopcl fused speed-up':>24}")
    for n in sizes:
        g, a, m = inputs(n)
        r64 = reference_ratio(g, a, m)
        fused = mine.get(("fused", n))
        for backend, code in (("fused", 2), ("clblast", 1)):
            if (backend, n) in mine:
                r = bloopcl_ratio(args.library, n, code)
                print(f"{n:>10} {'bloopcl ' + backend:<16} {mine[(backend, n)] * 1e6:>9.1f} us "
                      f"{abs(r - r64) / abs(r64):>10.2e}")
        for name, run in PEERS:
            print(f"{name} n={n} ...", file=sys.stderr)
            try:
                seconds, r = run(n, args.reps)
            except ImportError:
                print(f"{n:>10} {name:<16} {'not installed':>12}")
                continue
            speedup = f"{seconds / fused:>23.2f}x" if fused else ""
            print(f"{n:>10} {name:<16} {seconds * 1e6:>9.1f} us {abs(r - r64) / abs(r64):>10.2e} "
                  f"{speedup}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
