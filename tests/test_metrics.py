"""Metrics: hand-computed small cases, and values computed once with scikit-learn 1.9.1 and SciPy
1.17.1 (written here as literals, so neither is a dependency), and the undefined cases."""
import math

import numpy as np
import pytest

from minadapt.tasks import metrics
from minadapt.tasks.metrics import accuracy, f1, f1_macro, matthews, pearson, ranks, score, spearman

# drawn with numpy.random.default_rng(42); see the module docstring for where the values come from
GOLD2 = [0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0,
         0, 0, 0, 1, 1, 0, 1, 1, 0, 1]
PRED2 = [1, 1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0,
         0, 0, 1, 1, 0, 1, 1, 1, 0, 1]
GOLD4 = [1, 2, 2, 1, 3, 2, 0, 3, 2, 2, 2, 2, 0, 2, 3, 1, 2, 0, 1, 1, 3, 0, 1, 1, 3, 3, 0, 0, 3, 0,
         3, 1, 3, 1, 1, 2, 0, 2, 2, 3, 3, 2, 1, 1, 1, 3, 1, 0, 1, 0]
PRED4 = [1, 0, 2, 1, 3, 2, 1, 3, 2, 2, 1, 2, 0, 2, 1, 3, 0, 0, 2, 1, 3, 0, 1, 1, 2, 3, 0, 0, 3, 0,
         1, 3, 0, 1, 2, 2, 1, 2, 2, 3, 3, 2, 1, 1, 1, 3, 2, 0, 1, 0]
X = [1.0, -0.5, -1.2, -1.0, -0.7, 2.1, -0.8, 0.8, -0.9, 0.9, 0.4, -0.2, -0.0, -0.7, 0.4, -0.5, -1.2,
     -1.3, 0.2, 1.6, 0.2, -0.1, 0.3, 1.3, 0.2, -0.4, 1.1, 0.4, 1.5, 0.2]  # 8 ties
Y = [-0.2, -1.9, 0.5, 0.7, -0.9, 1.7, 0.7, -0.3, -1.8, 1.5, 0.0, -0.2, -0.2, -0.4, 1.8, -0.4, -0.6,
     -3.4, 0.2, 0.8, -1.0, -1.0, -0.0, 2.2, -1.1, -0.4, 0.6, 0.1, 2.5, 0.7]  # 8 ties


# --- small cases, by hand --------------------------------------------------------------------------
def test_binary_by_hand():
    gold = [1, 1, 1, 0, 0, 0, 0, 1]
    pred = [1, 1, 0, 0, 0, 1, 0, 1]  # TP 3, FN 1, FP 1, TN 3
    assert accuracy(pred, gold) == 6 / 8
    assert f1(pred, gold) == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))  # P = R = 3/4
    assert f1(pred, gold, positive=0) == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert matthews(pred, gold) == pytest.approx((3 * 3 - 1 * 1) / math.sqrt(4 * 4 * 4 * 4))


def test_f1_is_not_symmetric_in_the_classes():
    gold = [1, 0, 0, 0]
    pred = [1, 1, 0, 0]  # TP 1, FP 1, FN 0 for class 1; TP 2, FP 0, FN 1 for class 0
    assert f1(pred, gold) == pytest.approx(2 / 3)
    assert f1(pred, gold, positive=0) == pytest.approx(4 / 5)
    assert f1_macro(pred, gold) == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_matthews_perfect_and_inverted():
    assert matthews([0, 1, 2, 2], [0, 1, 2, 2]) == pytest.approx(1.0)
    assert matthews([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)


def test_pearson_and_spearman_by_hand():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # y = x^3 is monotone but not linear: Spearman 1, Pearson below 1
    x = np.arange(1.0, 6.0)
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert pearson(x, x**3) < 0.99
    # x = [1,2,3,4], y = [1,3,2,4]: deviations (-1.5,-.5,.5,1.5) . (-1.5,.5,-.5,1.5) = 4, / 5
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_ranks_average_ties():
    assert ranks([10, 20, 20, 30]).tolist() == [1, 2.5, 2.5, 4]
    assert ranks([3, 1, 3, 3, 0]).tolist() == [4, 2, 4, 4, 1]
    assert ranks([5.0]).tolist() == [1]


def test_spearman_with_ties_by_hand():
    # ranks of x: [1, 2.5, 2.5, 4]; ranks of y: [1, 2, 3, 4]; Pearson of those
    expected = np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1]
    assert spearman([0, 7, 7, 9], [1, 2, 3, 4]) == pytest.approx(expected)
    assert expected != pytest.approx(1.0)  # ties do lower it


# --- against scikit-learn and SciPy ----------------------------------------------------------------
def test_binary_against_sklearn():
    assert accuracy(PRED2, GOLD2) == pytest.approx(0.675, abs=1e-15)
    assert f1(PRED2, GOLD2) == pytest.approx(0.723404255319149, abs=1e-12)  # f1_score
    assert matthews(PRED2, GOLD2) == pytest.approx(0.3303360556061336, abs=1e-12)  # matthews_corrcoef


def test_multiclass_against_sklearn():
    assert accuracy(PRED4, GOLD4) == pytest.approx(0.72, abs=1e-15)
    assert f1_macro(PRED4, GOLD4) == pytest.approx(0.7241462241462242, abs=1e-12)  # average="macro"
    assert f1_macro(PRED4, GOLD4, num_classes=4) == pytest.approx(0.7241462241462242, abs=1e-12)
    assert matthews(PRED4, GOLD4) == pytest.approx(0.6252691786734648, abs=1e-12)


def test_correlations_against_scipy():
    assert pearson(X, Y) == pytest.approx(0.6317049931508381, abs=1e-12)  # scipy.stats.pearsonr
    assert spearman(X, Y) == pytest.approx(0.5916955349036381, abs=1e-12)  # scipy.stats.spearmanr


# --- the undefined cases ---------------------------------------------------------------------------
def test_constant_predictions_score_zero_not_nan():
    gold = [0, 1, 1, 0, 1]
    assert matthews([1] * 5, gold) == 0.0  # scikit-learn returns 0.0 too
    assert matthews([0, 1, 2], [1, 1, 1]) == 0.0  # constant labels
    assert pearson([2.0] * 5, [1, 2, 3, 4, 5]) == 0.0  # SciPy would give nan (and warn)
    assert spearman([1, 2, 3, 4, 5], [7] * 5) == 0.0
    assert f1([0, 0, 0], [0, 0, 0]) == 0.0  # no positives anywhere: 0/0
    assert f1([0, 0, 0], [1, 1, 0]) == 0.0  # no positive predictions


def test_macro_f1_counts_a_class_nobody_predicted():
    # class 2 is in neither pred nor gold: with num_classes=3 it counts as F1 0 and lowers the mean
    assert f1_macro([0, 1], [0, 1]) == 1.0
    assert f1_macro([0, 1], [0, 1], num_classes=3) == pytest.approx(2 / 3)


def test_bad_shapes():
    with pytest.raises(ValueError, match="same length"):
        accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="no examples"):
        pearson([], [])


def test_score_in_the_order_asked():
    out = score(("f1", "accuracy"), [1, 0, 1], [1, 1, 1])
    assert list(out) == ["f1", "accuracy"]
    assert out == {"f1": pytest.approx(0.8), "accuracy": pytest.approx(2 / 3)}
    assert all(isinstance(v, float) for v in out.values())
    assert set(metrics.METRICS) == {"accuracy", "f1", "f1_macro", "matthews", "pearson", "spearman"}
