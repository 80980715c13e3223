"""Scores for predictions, written out by hand (no scikit-learn, no SciPy).

N = examples. `pred` and `gold` are arrays of shape (N,): class indices (int) for classification,
real numbers for regression. Every function returns a Python float, higher is better.

    accuracy   fraction of pred == gold
    f1         binary F1 of the positive class (index 1): 2 P R / (P + R), where
               P = TP / (TP + FP) (precision) and R = TP / (TP + FN) (recall)
    f1_macro   the unweighted mean over classes of each class's one-vs-rest F1
    matthews   Matthews correlation coefficient, in its multiclass form (Gorodkin, 2004), which for
               two classes is (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))
    pearson    linear correlation: cov(pred, gold) / (std(pred) std(gold))
    spearman   Pearson's correlation of the ranks; tied values share the mean of their ranks

Undefined cases, decided once here: where a denominator is 0 (a metric's ratio 0/0) the score is
0.0, not NaN. So F1 is 0 when there are no positive predictions and no positive labels, Matthews
is 0 when the predictions (or the labels) are all one class, and Pearson and Spearman are 0 when
either side is constant. This is what scikit-learn returns for F1 and Matthews (SciPy returns NaN
for a constant Pearson input); a score of 0 keeps "pick the best epoch" comparisons working, where
NaN would make every comparison false.
"""
from __future__ import annotations

import numpy as np


def _pair(pred, gold, dtype=None):
    pred, gold = np.asarray(pred, dtype=dtype), np.asarray(gold, dtype=dtype)
    if pred.shape != gold.shape or pred.ndim != 1:
        raise ValueError(f"pred and gold must be 1-D of the same length, got {pred.shape} and {gold.shape}")
    if pred.size == 0:
        raise ValueError("no examples to score")
    return pred, gold


def accuracy(pred, gold) -> float:
    """Fraction of examples where pred == gold."""
    pred, gold = _pair(pred, gold)
    return float(np.mean(pred == gold))


def _f1_of(pred, gold, cls) -> float:
    """One-vs-rest F1 of class `cls`: 2 TP / (2 TP + FP + FN), the same as 2 P R / (P + R)."""
    tp = np.sum((pred == cls) & (gold == cls))
    fp = np.sum((pred == cls) & (gold != cls))
    fn = np.sum((pred != cls) & (gold == cls))
    denominator = 2 * tp + fp + fn
    return float(2 * tp / denominator) if denominator else 0.0


def f1(pred, gold, positive: int = 1) -> float:
    """Binary F1 of the `positive` class (MRPC's 'equivalent', index 1)."""
    pred, gold = _pair(pred, gold)
    return _f1_of(pred, gold, positive)


def f1_macro(pred, gold, num_classes: int | None = None) -> float:
    """Mean of every class's F1; the classes are 0..num_classes-1 (default: all seen in pred or gold)."""
    pred, gold = _pair(pred, gold)
    classes = range(num_classes) if num_classes else np.union1d(pred, gold)
    return float(np.mean([_f1_of(pred, gold, c) for c in classes]))


def matthews(pred, gold) -> float:
    """Matthews correlation for any number of classes, from the confusion matrix C (C[i, j] =
    examples of class i predicted as j): with t_k = sum_j C[k, j] (true counts), p_k = sum_i C[i, k]
    (predicted counts), c = trace(C) (correct) and s = N,

        MCC = (c s - t.p) / sqrt((s^2 - p.p) (s^2 - t.t))

    1 is perfect, 0 no better than chance, -1 (binary) always wrong; 0 when either factor under the
    root is 0 (all predictions, or all labels, one class)."""
    pred, gold = _pair(pred, gold)
    classes, index = np.unique(np.concatenate([gold, pred]), return_inverse=True)
    g, p = index[: len(gold)], index[len(gold):]
    C = np.zeros((len(classes), len(classes)), dtype=np.float64)
    np.add.at(C, (g, p), 1.0)
    t, q = C.sum(axis=1), C.sum(axis=0)
    c, s = np.trace(C), C.sum()
    denominator = (s * s - q @ q) * (s * s - t @ t)
    return float((c * s - t @ q) / np.sqrt(denominator)) if denominator > 0 else 0.0


def pearson(pred, gold) -> float:
    """sum((x - mean x)(y - mean y)) / sqrt(sum (x - mean x)^2 sum (y - mean y)^2); 0 if either is constant."""
    x, y = _pair(pred, gold, dtype=np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
    return float(np.sum(dx * dy) / denominator) if denominator > 0 else 0.0


def ranks(x) -> np.ndarray:
    """1-based ranks of x, ties sharing the mean of the ranks they span: [10, 20, 20, 30] ->
    [1, 2.5, 2.5, 4] (SciPy's rankdata, method 'average')."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    # a new group of equal values starts where the sorted value changes
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]  # one past each group's end
    mean_rank = (starts + 1 + ends) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    out = np.empty(len(x), dtype=np.float64)
    out[order] = np.repeat(mean_rank, ends - starts)
    return out


def spearman(pred, gold) -> float:
    """Pearson correlation of the ranks (average ranks for ties); 0 if either side is constant."""
    x, y = _pair(pred, gold, dtype=np.float64)
    return pearson(ranks(x), ranks(y))


METRICS = {"accuracy": accuracy, "f1": f1, "f1_macro": f1_macro, "matthews": matthews,
           "pearson": pearson, "spearman": spearman}


def score(metrics, pred, gold, num_classes: int | None = None) -> dict[str, float]:
    """{name: value} for each name in `metrics`, in order (the first is the one reported)."""
    out = {}
    for name in metrics:
        if name == "f1_macro":
            out[name] = f1_macro(pred, gold, num_classes)
        else:
            out[name] = METRICS[name](pred, gold)
    return out
