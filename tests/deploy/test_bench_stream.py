"""Pure parts of `sidstream bench stream`."""
from deploy.bench_stream import per_second_p99


def test_per_second_p99_buckets_by_production_second_and_marks_empty_seconds():
    produced = [100.0, 100.5, 100.9, 102.2, 102.3]
    latencies = [10.0, 30.0, 20.0, 500.0, 7.0]
    assert per_second_p99(produced, latencies) == [30.0, None, 500.0]


def test_per_second_p99_of_nothing_is_empty():
    assert per_second_p99([], []) == []
