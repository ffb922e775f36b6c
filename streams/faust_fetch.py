"""Give the worker's Kafka consumer a short fetch wait (faust-streaming 0.15.3 hard-codes 1.5 s).

Why: the worker's consumer asks the broker for records with `fetch_max_wait_ms`, the longest the broker may hold
a fetch that finds no new data. Faust fixes it at 1,500 ms. aiokafka sends one fetch at a time per broker, and
only for partitions whose earlier records were all consumed. So whenever the agent falls briefly behind (a
garbage collection, a slow store write), the next fetch can cover only partitions with nothing new. The broker
then holds it for the full 1.5 s while records wait on the others. Measured with one worker at 600 events/s: a
0.2 s pause of the event loop turned into a 1.47 s gap in the agent, and the event -> append lag stayed at
1.4 s for the rest of the run. With 100 ms the same pause cost 0.2 s and the lag went straight back to about
10 ms. A shorter wait only means more empty fetches when the topics are idle (10 a second instead of 0.7).

`install()` wraps Faust's consumer factory and sets the wait before the consumer starts. Like
`streams/faust_commit.py` it checks the internals it relies on, so a Faust or aiokafka upgrade that moves them
fails at start-up instead of silently keeping the 1.5 s.
"""
from __future__ import annotations

from streams.faust_commit import FaustInternalsChanged
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

_MARK = "_sidstream_fetch_settings"  # (fetch_max_wait_ms, fetch_min_bytes) the wrapped factory applies


def install(fetch_max_wait_ms: int, fetch_min_bytes: int = 1) -> None:
    """Make every Faust worker consumer created from now on use `fetch_max_wait_ms` and `fetch_min_bytes`
    (idempotent; the last call's values win)."""
    if fetch_max_wait_ms < 0 or fetch_min_bytes < 1:
        raise ValueError(f"need fetch_max_wait_ms >= 0 and fetch_min_bytes >= 1, got {fetch_max_wait_ms} and "
                         f"{fetch_min_bytes}")

    factory = getattr(AIOKafkaConsumerThread, "_create_worker_consumer", None)
    if factory is None:
        raise FaustInternalsChanged("faust AIOKafkaConsumerThread._create_worker_consumer is gone; "
                                    "re-check streams/faust_fetch.py against this Faust version")
    if getattr(AIOKafkaConsumerThread, _MARK, None) is None:
        def create_worker_consumer(self, transport):
            consumer = factory(self, transport)
            if not (hasattr(consumer, "_fetch_max_wait_ms") and hasattr(consumer, "_fetch_min_bytes")):
                raise FaustInternalsChanged("aiokafka's consumer no longer keeps the fetch settings; "
                                            "re-check streams/faust_fetch.py against this aiokafka version")
            # read when the consumer starts and builds its fetcher, which happens after this returns
            consumer._fetch_max_wait_ms, consumer._fetch_min_bytes = getattr(AIOKafkaConsumerThread, _MARK)
            return consumer

        AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer
    setattr(AIOKafkaConsumerThread, _MARK, (int(fetch_max_wait_ms), int(fetch_min_bytes)))
