"""Drift statistics: PSI/KL on smoothed histograms, sliding windows over stream events, code usage."""
import math

import numpy as np
import pytest

from catalogue.vocab import Vocabulary
from streams.drift import (EventWindows, StreamEvent, bucket_counts, code_usage, histogram_delta, histogram_quantile,
                           kl, last_event, new_item_codes, psi)


def test_identical_histograms_have_zero_divergence():
    h = [10, 20, 30, 40]
    assert psi(h, h) == pytest.approx(0.0)
    assert kl(h, h) == pytest.approx(0.0)


def test_psi_is_symmetric_and_grows_with_the_shift():
    base = [25, 25, 25, 25]
    small, large = [30, 25, 25, 20], [70, 10, 10, 10]
    assert psi(base, small) == pytest.approx(psi(small, base))
    assert 0 < psi(base, small) < 0.1 < 0.25 < psi(base, large)
    assert kl(base, large) > kl(base, small) > 0


def test_an_empty_bin_gives_a_finite_divergence():
    assert math.isfinite(psi([100, 0], [0, 100]))
    assert math.isfinite(kl([100, 0], [0, 100]))


def test_mismatched_bins_are_an_error():
    with pytest.raises(ValueError, match="bins"):
        psi([1, 2], [1, 2, 3])


def _vocab():
    return Vocabulary(levels=2, codes_per_level=4, suffix_size=3, actions=("click", "skip", "like"))


def test_last_event_reads_the_newest_group_of_a_window():
    v = _vocab()
    first = v.sid_to_tokens((1, 2, 0)) + [v.action_token("click")]
    second = v.sid_to_tokens((3, 0, 1)) + [v.action_token("like")]
    assert last_event(first + second, v) == StreamEvent((3, 0), 2)
    assert last_event(first[:-1], v) is None  # not a whole group
    assert last_event(second + first[:3], v) is None  # does not end in an action


def test_windows_detect_a_shift_in_actions_and_codes():
    v = _vocab()
    w = EventWindows(v.levels, v.codes_per_level, len(v.actions), reference_size=400, recent_size=200)
    rng = np.random.default_rng(0)
    for _ in range(400):
        w.add(StreamEvent((int(rng.integers(4)), int(rng.integers(4))), int(rng.integers(2))))
    for _ in range(200):  # same item mix, but everyone likes now
        w.add(StreamEvent((int(rng.integers(4)), int(rng.integers(4))), 2))
    report = w.report()
    assert report["ready"] and report["reference_events"] == 400 and report["recent_events"] == 200
    assert report["signals"]["action"]["psi"] > 0.25
    assert report["signals"]["sid_level_1"]["psi"] < 0.1
    for _ in range(600):  # a new cluster: everything lands on code 3 of level 1
        w.add(StreamEvent((3, int(rng.integers(4))), 2))
    assert w.report()["signals"]["sid_level_1"]["psi"] < 0.1  # the reference has caught up: drift is over


def test_code_usage_counts_dead_and_overloaded_codes():
    codes = np.array([[0, 0]] * 50 + [[1, 1]] * 2 + [[2, 1]] * 2)
    usage = code_usage(codes, codes_per_level=8, overload_factor=4.0)
    assert usage["level_1"]["dead"] == 5  # codes 3..7
    assert usage["level_1"]["overloaded"] == 1  # code 0 holds 50 of 54 items, > 4 x 54/8
    assert usage["level_2"]["max_share"] == pytest.approx(50 / 54)


def test_new_items_in_one_cluster_show_as_high_psi():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 16, size=(2000, 2))
    spread = rng.integers(0, 16, size=(200, 2))
    cluster = np.column_stack([np.full(200, 5), rng.integers(0, 16, 200)])
    assert new_item_codes(base, spread, 16)["levels"]["level_1"]["psi"] < 0.25
    report = new_item_codes(base, cluster, 16)
    assert report["levels"]["level_1"]["psi"] > 0.25 and report["new_items"] == 200


def test_histogram_helpers_follow_prometheus_semantics():
    before = {0.1: 1.0, 1.0: 2.0, float("inf"): 2.0}
    after = {0.1: 1.0, 1.0: 12.0, float("inf"): 13.0}
    delta = histogram_delta(before, after)
    assert delta == {0.1: 0.0, 1.0: 10.0, float("inf"): 11.0}
    assert bucket_counts(delta).tolist() == [0.0, 10.0, 1.0]
    assert histogram_quantile(delta, 0.5) == pytest.approx(0.1 + 0.9 * 5.5 / 10)
    assert histogram_quantile({0.1: 0.0, float("inf"): 0.0}, 0.5) is None
