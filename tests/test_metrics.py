"""Metric functions against values computed by hand."""

import numpy as np
import pytest

from council.evaluation import metrics as m


def test_accuracy_and_balanced_accuracy_by_hand():
    y = np.array([1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.2, 0.1, 0.3, 0.6, 0.4])
    # predictions 1,0,0,0,1,0: correct on items 0,2,3,5 -> 4/6; recall(1) = 1/2, recall(0) = 3/4
    assert m.accuracy(y, p) == pytest.approx(4 / 6)
    assert m.balanced_accuracy(y, p) == pytest.approx((0.5 + 0.75) / 2)
    assert m.balanced_accuracy(y, np.zeros(6)) == pytest.approx(0.5)
    assert m.majority_baseline(y) == pytest.approx(4 / 6)


def test_auroc_by_hand_with_a_tie():
    y = np.array([1, 1, 0, 0])
    p = np.array([0.8, 0.4, 0.4, 0.1])
    # pairs (pos, neg): (0.8,0.4) win, (0.8,0.1) win, (0.4,0.4) tie, (0.4,0.1) win -> 3.5 / 4
    assert m.auroc(y, p) == pytest.approx(0.875)
    assert m.auroc(y, 1 - p) == pytest.approx(0.125)


def test_ece_by_hand():
    y = np.array([1, 0, 1, 1])
    p = np.array([0.95, 0.95, 0.15, 0.15])
    # bin [0.9,1]: mean p 0.95, rate 0.5 -> |0.45| * 0.5; bin [0.1,0.2): mean p 0.15, rate 1 -> 0.85 * 0.5
    assert m.ece(y, p) == pytest.approx(0.5 * 0.45 + 0.5 * 0.85)
    assert m.ece(np.array([1, 0]), np.array([1.0, 0.0])) == pytest.approx(0.0)


def test_minimal_pairs_need_both_items_right():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.1, 0.9, 0.8])
    assert m.minimal_pair_hits(y, p, [(0, 1), (2, 3)]).tolist() == [1.0, 0.0]


def test_fleiss_kappa_by_hand():
    # 3 items, 3 raters, 2 categories
    counts = np.array([[3, 0], [0, 3], [2, 1]])
    # P_i = 1, 1, (2*1 + 1*0)/(3*2) = 1/3 -> mean 7/9; p_cat = (5/9, 4/9) -> Pe = 41/81
    expected = (7 / 9 - 41 / 81) / (1 - 41 / 81)
    assert m.fleiss_kappa(counts) == pytest.approx(expected)
    assert m.fleiss_kappa(np.array([[3, 0], [0, 3]])) == pytest.approx(1.0)


def test_independent_majority_of_three_by_hand():
    # three members right with 0.7 each: 0.7^3 + 3 * 0.7^2 * 0.3 = 0.784
    assert m.independent_majority_accuracy([0.7, 0.7, 0.7]) == pytest.approx(0.784)
    # two members: both right 0.36, one right (tie) 0.48 counted half -> 0.6
    assert m.independent_majority_accuracy([0.6, 0.6]) == pytest.approx(0.6)


def test_error_correlation_of_identical_and_opposite_members():
    e = np.array([1, 0, 1, 0, 1])
    corr = m.error_correlation({"a": e, "b": e, "c": 1 - e})
    assert corr["a"]["b"] == pytest.approx(1.0) and corr["a"]["c"] == pytest.approx(-1.0)


def test_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits = 0
    for trial in range(200):
        sample = rng.random(100) < 0.7
        low, high = m.bootstrap_ci(lambda i, s=sample: float(np.mean(s[i])), 100, resamples=400, seed=trial)
        hits += low <= 0.7 <= high
    assert 0.89 <= hits / 200 <= 0.99
