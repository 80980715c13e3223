"""The regression loss: its value against a hand computation, its backward against centred differences."""
import numpy as np
import pytest

from minadapt.gradcheck import check
from minadapt.nn import mse


def test_value_by_hand():
    pred = np.array([[1.0], [2.0], [4.0]])
    loss, _ = mse.forward(pred, np.array([1.0, 0.0, 5.0]))
    assert loss == pytest.approx((0 + 4 + 1) / 3)


@pytest.mark.parametrize("shape", [(5, 1), (5,), (3, 2)])
def test_backward_matches_finite_differences(shape):
    rng = np.random.default_rng(0)
    pred = rng.normal(size=shape)
    target = rng.normal(size=int(np.prod(shape)))
    loss, cache = mse.forward(pred, target)
    dloss = 0.7  # not 1, so a dropped upstream factor shows
    (dpred,) = mse.backward(dloss, cache)
    assert dpred.shape == pred.shape
    assert check(lambda p: mse.forward(p, target)[0], pred, np.array(dloss), dpred) < 1e-7


def test_backward_leaves_cache_alone_and_zero_at_the_target():
    pred = np.array([[0.5], [-1.0]])
    _, cache = mse.forward(pred, pred.ravel().copy())
    before = cache.diff.copy()
    (dpred,) = mse.backward(1.0, cache)
    assert np.array_equal(dpred, np.zeros_like(pred))
    assert np.array_equal(cache.diff, before)


def test_wrong_number_of_targets():
    with pytest.raises(ValueError, match="one target per output"):
        mse.forward(np.zeros((3, 1)), np.zeros(4))
