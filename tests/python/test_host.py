"""The host path: numpy arrays through bloopcl_step_host (float32) or widened on the host
(float16, bfloat16, lists), against the library's CPU reference (bloopcl.Reference) and an
independent float64 numpy oracle of the README's methods."""
import numpy as np
import pytest

import bloopcl
from conftest import d_tolerance, gradients, oracle_step

CASES = [
    dict(method="bloop", ema=0.1, lbda=0.5),
    dict(method="bloop", ema=1.0, lbda=0.1, rescale=True),
    dict(method="bloop", ema=0.01, lbda=0.3, ratio_only=True),
    dict(method="dynamic_barrier", ema=0.1, lbda=2.0),
    dict(method="pcgrad", ema=0.2, lbda=0.5),
    dict(method="mixed", lbda=0.25, rescale=True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join("%s=%s" % kv for kv in c.items()))
def test_steps_match_reference_and_oracle(ctx, rng, case):
    n = 1537
    comb = bloopcl.Combiner(ctx, n, **case)
    ref = bloopcl.Reference(n, **case)
    state = {"m": np.zeros(n), "q": np.zeros(n)}
    for g, a in gradients(rng, n, 4):
        d = comb.step(g, a)
        d_ref = ref.step(g, a)
        d_oracle = oracle_step(case["method"], state, g, a, case.get("ema", 0.01), case["lbda"],
                               1e-7, case.get("rescale", False), case.get("ratio_only", False))
        assert d.dtype == np.float32 and d.shape == (n,)
        diag, rdiag = comb.diagnostics, ref.diagnostics
        m = ref.state() if case["method"] != "mixed" else np.zeros(n, np.float32)
        tol = d_tolerance(g, a, m, rdiag["r"], case["lbda"])
        if case["method"] == "pcgrad":
            tol += d_tolerance(g, a, ref.state("aux_ema"), rdiag["aux_ratio"], 1.0)
        assert np.max(np.abs(d - d_ref)) <= tol
        assert np.max(np.abs(d - d_oracle)) <= 1e-4 * (np.max(np.abs(d_oracle)) + 1)
        assert diag["accepted"] and diag["reason"] == "none"
        assert diag["r"] == pytest.approx(rdiag["r"], rel=1e-5, abs=1e-12)
        assert diag["grad_norm_sq"] == pytest.approx(float(g.astype(np.float64) @ g), rel=1e-5)
        if case["method"] != "mixed":
            # the EMA is bit-identical to the reference's (README, "Dot-product backends")
            assert np.array_equal(comb.state_dict()["ema"], ref.state())
    assert comb.diagnostics["steps"] == 4


def test_in_place_out_is_g(ctx, rng):
    n = 300
    comb = bloopcl.Combiner(ctx, n, lbda=0.4, ema=0.1)
    ref = bloopcl.Reference(n, lbda=0.4, ema=0.1)
    for g, a in gradients(rng, n, 2):
        expected = ref.step(g, a)
        same = g
        result = comb.step(g, a, out=g)
        assert result is same
        np.testing.assert_allclose(g, expected, rtol=0, atol=1e-5)
    g, a = gradients(rng, n, 1)[0]
    expected = ref.step(g, a)
    assert comb.step(g, a, out=a) is a
    np.testing.assert_allclose(a, expected, rtol=0, atol=1e-5)


def test_segment_lists_are_one_global_projection(ctx, rng):
    sizes = [1, 257, 40, 1000, 3]
    n = sum(sizes)
    comb = bloopcl.Combiner(ctx, n, lbda=0.5, ema=0.1)
    ref = bloopcl.Reference(n, lbda=0.5, ema=0.1)
    for g, a in gradients(rng, n, 3):
        cuts = np.cumsum([0] + sizes)
        gl = [g[cuts[i]:cuts[i + 1]].copy() for i in range(len(sizes))]
        al = [a[cuts[i]:cuts[i + 1]].copy() for i in range(len(sizes))]
        out = comb.step(gl, al)
        assert isinstance(out, list) and [o.shape[0] for o in out] == sizes
        expected = ref.step(g, a)
        np.testing.assert_allclose(np.concatenate(out), expected, rtol=0, atol=1e-5)
        assert comb.diagnostics["r"] == pytest.approx(ref.diagnostics["r"], rel=1e-5)


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_two_byte_host_dtypes(ctx, rng, dtype):
    """float16 arrays and bfloat16 bits (bloopcl.bf16(uint16 array)) are accepted and give
    the typed reference's result (widened exactly, d rounded once into its type)."""
    n = 777
    comb = bloopcl.Combiner(ctx, n, lbda=0.5, ema=0.1)
    ref = bloopcl.Reference(n, lbda=0.5, ema=0.1)
    for g, a in gradients(rng, n, 2):
        if dtype == "f16":
            g2, a2 = g.astype(np.float16), a.astype(np.float16)
            d = comb.step(g2, a2)
            assert d.dtype == np.float16
            d_ref = ref.step(g2, a2, out_dtype=np.float16)
            got, want = d.astype(np.float32), d_ref.astype(np.float32)
        else:
            gb = (g.view(np.uint32) >> 16).astype(np.uint16)  # bf16 bits, truncated
            ab = (a.view(np.uint32) >> 16).astype(np.uint16)
            d = comb.step(bloopcl.bf16(gb), bloopcl.bf16(ab))
            assert d.dtype == np.uint16
            g_wide = (gb.astype(np.uint32) << 16).view(np.float32)
            a_wide = (ab.astype(np.uint32) << 16).view(np.float32)
            want = ref.step(g_wide, a_wide)
            got = (d.astype(np.uint32) << 16).view(np.float32)
        # d in a 2-byte type: one rounding of the same fp32 value (or of one a few ulps off)
        rel = 2.0 ** -10 if dtype == "f16" else 2.0 ** -7
        np.testing.assert_allclose(got, want, rtol=rel, atol=1e-3)


def test_f32_into_f16_out_and_mixed_lists(ctx, rng):
    n = 100
    comb = bloopcl.Combiner(ctx, n, lbda=0.5, ema=0.1)
    g, a = gradients(rng, n, 1)[0]
    out = [np.empty(40, np.float16), np.empty(60, np.float32)]
    comb.step([g[:40].copy(), g[40:].astype(np.float16)], [a[:40].copy(), a[40:].copy()],
              out=out)
    g_used = np.concatenate([g[:40], g[40:].astype(np.float16).astype(np.float32)])
    ref = bloopcl.Reference(n, lbda=0.5, ema=0.1)  # over the same widened values
    want = ref.step(g_used, a)
    np.testing.assert_allclose(out[0].astype(np.float32), want[:40], rtol=2 ** -10, atol=1e-3)
    np.testing.assert_allclose(out[1], want[40:], rtol=0, atol=1e-5)


def test_nonfinite_step_is_skipped_not_raised(ctx, rng):
    n = 64
    comb = bloopcl.Combiner(ctx, n, lbda=0.5, ema=0.1)
    g, a = gradients(rng, n, 1)[0]
    comb.step(g, a)
    before = comb.state_dict()["ema"]
    bad = g.copy()
    bad[7] = np.nan
    d = comb.step(bad, a)
    assert not d.any()  # d = 0
    diag = comb.diagnostics
    assert diag["accepted"] is False and diag["reason"] == "nonfinite_input"
    assert np.array_equal(comb.state_dict()["ema"], before)
