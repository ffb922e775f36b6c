"""Pure parts of `sidstream bench stream`."""
from deploy.bench.stream import per_second_p99


def test_per_second_p99_buckets_by_production_second_and_marks_empty_seconds():
    produced = [100.0, 100.5, 100.9, 102.2, 102.3]
    latencies = [10.0, 30.0, 20.0, 500.0, 7.0]
    # p99 is linearly interpolated (catalogue.bench.percentile): 20 + 0.98 * (30 - 20), 7 + 0.99 * (500 - 7)
    assert per_second_p99(produced, latencies) == [29.8, None, 495.1]


def test_per_second_p99_of_nothing_is_empty():
    assert per_second_p99([], []) == []
