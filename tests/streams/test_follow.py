"""TopicFollower over fake sources (WholeTopicReader, the Kafka side, is exercised by the integration tests)."""
import threading
import time

from streams.follow import TopicFollower


class ListSource:
    def __init__(self, batches):
        self.batches = list(batches)
        self.closed = False

    def poll(self, timeout_s):
        if self.batches:
            item = self.batches.pop(0)
            if isinstance(item, Exception):
                raise item
            return item
        time.sleep(timeout_s)
        return []

    def close(self):
        self.closed = True


class EndAwareSource(ListSource):
    """A source that knows where the topic ended when it started (as WholeTopicReader does)."""

    def __init__(self, batches, backlog):
        super().__init__(batches)
        self.backlog, self.read = backlog, 0

    def poll(self, timeout_s):
        records = super().poll(timeout_s)
        self.read += len(records)
        return records

    def reached_end(self):
        return self.read >= self.backlog


def test_follower_hands_batches_over_survives_errors_and_stops():
    seen, done = [], threading.Event()
    source = ListSource([[(b"k", b"1")], RuntimeError("broker went away"), [(b"k", b"2"), (b"k", b"3")]])

    def handle(records):
        seen.extend(v for _, v in records)
        if len(seen) == 3:
            done.set()

    follower = TopicFollower("test", lambda: source, handle, poll_s=0.01).start()
    assert done.wait(5)
    assert follower.caught_up.wait(5)
    follower.stop()
    assert seen == [b"1", b"2", b"3"] and follower.errors == 1
    assert not follower.alive and source.closed


def test_a_source_that_cannot_be_built_is_built_again():
    attempts, seen = [], []
    source = ListSource([[(None, b"x")]])

    def factory():
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("topic 'catalogue' does not exist yet")
        return source

    follower = TopicFollower("test", factory, lambda records: seen.extend(records), poll_s=0.001).start()
    assert follower.caught_up.wait(10)
    follower.stop()
    assert len(attempts) == 3 and follower.errors == 2 and seen == [(None, b"x")]


def test_caught_up_waits_for_the_end_a_source_reports_not_for_an_empty_poll():
    handled = []
    # an empty poll before the backlog arrives (a fetch still in flight) must not count as caught up
    source = EndAwareSource([[], [(None, b"1")], [], [(None, b"2")]], backlog=2)
    gate = threading.Event()

    def handle(records):
        handled.extend(v for _, v in records)
        if len(handled) == 1:
            assert not follower.caught_up.is_set()
            gate.set()

    follower = TopicFollower("test", lambda: source, handle, poll_s=0.01)
    follower.start()
    assert gate.wait(5) and follower.caught_up.wait(5)
    follower.stop()
    assert handled == [b"1", b"2"] and follower.errors == 0
