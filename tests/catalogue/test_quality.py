import math

import numpy as np
import pytest

from catalogue import quality

CODES = np.array([[0, 1], [0, 1], [0, 2], [3, 1]])  # K = 4


def test_utilisation_and_dead_codes():
    assert quality.utilisation(CODES, 0, 4) == 0.5
    assert quality.dead_codes(CODES, 0, 4) == [1, 2]
    assert quality.utilisation(CODES, 1, 4) == 0.5
    assert quality.dead_codes(CODES, 1, 4) == [0, 3]


def test_perplexity():
    assert quality.perplexity(np.array([[0], [1], [2], [3]]), 0, 4) == pytest.approx(4.0)
    assert quality.perplexity(np.array([[2], [2], [2]]), 0, 4) == pytest.approx(1.0)
    p = np.array([0.75, 0.25])
    assert quality.perplexity(CODES, 0, 4) == pytest.approx(math.exp(-(p * np.log(p)).sum()))


def test_collision_rate_and_prefix_share():
    assert quality.collision_rate(CODES) == pytest.approx(1 / 4)  # one item repeats (0, 1)
    assert quality.collision_rate(CODES, depth=1) == pytest.approx(2 / 4)
    assert quality.collision_rate(np.array([[0, 0], [0, 1]])) == 0.0
    assert quality.largest_prefix_share(CODES, 1) == 0.75
    assert quality.largest_prefix_share(CODES) == 0.5
    assert quality.max_group_size(CODES) == 2


def test_same_group_prefix_ratio_detects_grouping():
    codes = np.array([[g, 0] for g in range(10) for _ in range(20)])
    groups = [g for g in range(10) for _ in range(20)]
    r = quality.same_group_prefix_ratio(codes, groups, pairs=5000)
    assert r["same_group"] == 1.0 and 0.05 < r["random"] < 0.15 and r["ratio"] > 5
    shuffled = np.random.default_rng(0).permutation(groups)
    r2 = quality.same_group_prefix_ratio(codes, list(shuffled), pairs=5000)
    assert r2["ratio"] < 2


def test_sid_report_with_suffix():
    codes = np.array([[0, 1, 0], [0, 1, 1], [2, 3, 0]])
    r = quality.sid_report(codes, k=4, suffix_size=2, reconstruction_error=0.25)
    assert r["unique_sids"] is True and r["max_suffix"] == 1
    assert r["collision_rate_before_suffix"] == pytest.approx(1 / 3)
    assert r["utilisation_per_level"] == [0.5, 0.5]
    assert "reconstruction error" in quality.format_report(r)
