"""state_dict / load_state_dict: a checkpoint resumes bit for bit, for every method."""
import numpy as np
import pytest

import bloopcl
from conftest import gradients

N = 1000


@pytest.mark.parametrize("method", ["bloop", "dynamic_barrier", "pcgrad", "mixed"])
def test_round_trip_is_bit_exact(ctx, rng, method):
    steps = gradients(rng, N, 6)
    a = bloopcl.Combiner(ctx, N, method=method, ema=0.05, lbda=0.4)
    for g, aux in steps[:3]:
        a.step(g, aux)
    sd = a.state_dict()
    assert sd["method"] == method and sd["n"] == N
    if method == "mixed":
        assert sd["ema"] is None and sd["aux_ema"] is None
    else:
        assert sd["ema"].dtype == np.float32 and sd["ema"].shape == (N,)
        assert (sd["aux_ema"] is not None) == (method == "pcgrad")
    b = bloopcl.Combiner(ctx, N, method=method, ema=0.9, lbda=0.01)  # other hyperparameters
    b.load_state_dict(sd)
    assert (b.config["ema"], b.config["lbda"]) == (0.05, 0.4)
    for g, aux in steps[3:]:
        assert np.array_equal(a.step(g, aux), b.step(g, aux))
    sa, sb = a.state_dict(), b.state_dict()
    for key in ("ema", "aux_ema"):
        if sa[key] is not None:
            assert np.array_equal(sa[key], sb[key]) and sa[key].tobytes() == sb[key].tobytes()
    # and the dict is a snapshot: stepping on did not change the arrays read before
    if method != "mixed":
        assert not np.array_equal(sd["ema"], sa["ema"])


def test_first_gradient_init_before_and_after(ctx, rng):
    steps = gradients(rng, N, 2)
    a = bloopcl.Combiner(ctx, N, init="first_gradient", ema=0.1)
    sd = a.state_dict()
    assert sd["ema"] is None  # not initialised before the first accepted step
    a.step(*steps[0])
    assert np.array_equal(a.state_dict()["ema"], steps[0][0])  # m <- g exactly
    b = bloopcl.Combiner(ctx, N, init="first_gradient", ema=0.1)
    b.step(*steps[1])
    b.load_state_dict(sd)  # back to "not initialised"
    assert b.state_dict()["ema"] is None
    assert np.array_equal(b.step(*steps[0]), bloopcl.Combiner(
        ctx, N, init="first_gradient", ema=0.1).step(*steps[0]))


def test_random_and_buffer_init_match_the_reference(ctx, rng):
    comb = bloopcl.Combiner(ctx, N, init="random", seed=7)
    ref = bloopcl.Reference(N, init="random", seed=7)
    start = ref.state()
    assert np.array_equal(comb.state_dict()["ema"], start)
    comb.step(*gradients(rng, N, 1)[0])
    assert not np.array_equal(comb.state_dict()["ema"], start)
    comb.reset_state()
    assert np.array_equal(comb.state_dict()["ema"], start)
    given = rng.standard_normal(N).astype(np.float32)
    comb = bloopcl.Combiner(ctx, N, init=given)
    assert np.array_equal(comb.state_dict()["ema"], given)
    with pytest.raises(bloopcl.StateError):  # an init array is not kept by the library
        comb.reset_state()
