from streams.offsets import OffsetGuard, Verdict, expected_offsets


def test_in_order_and_redelivered_messages_are_processed():
    guard = OffsetGuard()
    guard.reset({0: 10})
    assert guard.check(0, 10, now=0.0) is Verdict.PROCESS
    guard.processed(0, 10)
    assert guard.expected(0) == 11
    # a redelivery from an older commit: processed (the idempotent append dedupes), expectation unchanged
    assert guard.check(0, 4, now=0.0) is Verdict.PROCESS
    guard.processed(0, 4)
    assert guard.expected(0) == 11


def test_a_hole_rewinds_once_then_skips_until_the_missing_offset_arrives():
    guard = OffsetGuard(rewind_retry_s=5.0)
    guard.reset({3: 67})
    assert guard.check(3, 83, now=0.0) is Verdict.REWIND
    assert guard.expected(3) == 67
    assert [guard.check(3, o, now=1.0) for o in (84, 85, 90)] == [Verdict.SKIP] * 3
    assert guard.check(3, 67, now=1.5) is Verdict.PROCESS  # the rewound consumer delivers it
    guard.processed(3, 67)
    assert guard.check(3, 68, now=1.6) is Verdict.PROCESS
    assert guard.rewinds == 1


def test_a_lost_seek_is_issued_again_after_the_retry_interval():
    guard = OffsetGuard(rewind_retry_s=5.0)
    guard.reset({1: 5})
    assert guard.check(1, 9, now=0.0) is Verdict.REWIND
    assert guard.check(1, 10, now=4.9) is Verdict.SKIP
    assert guard.check(1, 11, now=5.1) is Verdict.REWIND
    assert guard.rewinds == 2


def test_partitions_are_independent_and_unknown_ones_start_unguarded():
    guard = OffsetGuard()
    guard.reset({0: 100})
    assert guard.check(1, 500, now=0.0) is Verdict.PROCESS  # nothing recorded for partition 1 yet
    guard.processed(1, 500)
    assert guard.check(1, 502, now=0.0) is Verdict.REWIND  # from then on it is guarded
    assert guard.check(0, 100, now=0.0) is Verdict.PROCESS


def test_reset_after_a_rebalance_forgets_pending_rewinds():
    guard = OffsetGuard()
    guard.reset({0: 5})
    assert guard.check(0, 8, now=0.0) is Verdict.REWIND
    guard.reset({0: 8})
    assert guard.check(0, 8, now=0.1) is Verdict.PROCESS


def test_expected_offsets_takes_one_past_the_highest_recorded_offset_of_owned_partitions():
    states = [{"partition": 0, "offset": 7}, {"partition": 0, "offset": 3}, {"partition": 1, "offset": 40},
              {"partition": 2, "offset": 9}, {"partition": 0}, None, {}]
    assert expected_offsets(states, owned=[0, 1]) == {0: 8, 1: 41}
    assert expected_offsets([], owned=[0]) == {}


def test_a_tail_hole_is_reported_once_the_partition_is_idle_and_its_log_end_is_ahead():
    guard = OffsetGuard(idle_s=10.0, rewind_retry_s=5.0)
    guard.reset({0: 50, 1: 70}, now=0.0)
    assert guard.stalled({0: 60, 1: 70}, now=5.0) == []  # not idle long enough
    assert guard.stalled({0: 60, 1: 70}, now=10.5) == [0]  # partition 1 is at its log end: nothing missing
    assert guard.stalled({0: 60}, now=12.0) == []  # the rewind is still in flight
    assert guard.check(0, 50, now=12.5) is Verdict.PROCESS
    guard.processed(0, 50)
    assert guard.stalled({0: 60}, now=13.0) == []  # messages arrive again
    assert guard.rewinds == 1


def test_a_partition_with_messages_flowing_is_not_stalled():
    guard = OffsetGuard(idle_s=10.0)
    guard.reset({2: 0}, now=0.0)
    for t in range(1, 30):
        assert guard.check(2, t - 1, now=float(t)) is Verdict.PROCESS
        guard.processed(2, t - 1)
        assert guard.stalled({2: 1000}, now=float(t)) == []


def test_a_late_seek_redelivers_what_this_worker_already_handled_and_it_is_skipped():
    """A tail-hole seek back to 0 lands after 0..2 arrived anyway: their second delivery must not be applied
    again (a bad message among them would be dead-lettered twice)."""
    guard = OffsetGuard()
    guard.reset({0: 0})
    for offset in range(3):
        assert guard.check(0, offset, now=0.0) is Verdict.PROCESS
        guard.processed(0, offset)
    assert [guard.check(0, o, now=1.0) for o in range(3)] == [Verdict.DUPLICATE] * 3
    assert guard.check(0, 3, now=1.0) is Verdict.PROCESS
    assert guard.expected(0) == 3


def test_what_came_before_the_rebalance_is_processed_again_and_left_to_the_idempotent_append():
    guard = OffsetGuard()
    guard.reset({0: 10})
    guard.processed(0, 10)
    assert guard.check(0, 9, now=0.0) is Verdict.PROCESS  # before this worker's start: not known as handled
    assert guard.check(0, 10, now=0.0) is Verdict.DUPLICATE
    guard.processed(5, 40)  # an unguarded partition starts where its first message was handled
    assert guard.check(5, 40, now=0.0) is Verdict.DUPLICATE
    assert guard.check(5, 39, now=0.0) is Verdict.PROCESS
