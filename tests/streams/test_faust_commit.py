"""The patched flush must not return while a message is queued or on its way to the Kafka driver."""
import asyncio

from streams import faust_commit


class FakeBuffer:
    """Stand-in with the attributes the patched ProducerBuffer.flush reads (pure-logic unit test)."""

    def __init__(self, queued: int, in_flight: int):
        self.size, self._sidstream_in_flight, self.state = queued, in_flight, "running"
        self.message_sent = asyncio.Event()


def patched_flush():
    faust_commit.install()
    from faust.transport.producer import ProducerBuffer

    return ProducerBuffer.flush


def test_install_is_idempotent():
    from faust.transport.consumer import TransactionManager

    faust_commit.install()
    first = TransactionManager.commit
    faust_commit.install()
    assert TransactionManager.commit is first


def test_flush_waits_past_faust_original_0_1s_give_up_for_the_message_in_flight():
    flush = patched_flush()

    async def scenario():
        buffer = FakeBuffer(queued=1, in_flight=1)
        task = asyncio.ensure_future(flush(buffer))
        await asyncio.sleep(0.3)  # longer than faust's own flush would have waited
        assert not task.done()
        buffer.size = 0  # taken off the queue, still being handed to the driver
        await asyncio.sleep(0.2)
        assert not task.done()
        buffer._sidstream_in_flight = 0
        buffer.message_sent.set()
        await asyncio.wait_for(task, timeout=1.0)

    asyncio.run(scenario())


def test_flush_of_a_stopped_buffer_with_messages_left_raises():
    flush = patched_flush()
    buffer = FakeBuffer(queued=2, in_flight=0)
    buffer.state = "stopping"
    try:
        asyncio.run(flush(buffer))
    except RuntimeError as exc:
        assert "2 messages left" in str(exc)
    else:
        raise AssertionError("flush returned with messages left in a stopped buffer")


def test_exactly_once_commit_flushes_the_whole_producer_before_committing_the_transaction():
    """The whole producer, not only Faust's buffer: messages to topics the consumer does not read (training
    examples) go through the plain driver, and must reach Kafka before their events' offsets are committed."""
    from types import SimpleNamespace

    from faust.transport.consumer import TransactionManager
    from faust.types import TP

    faust_commit.install()
    calls = []

    class FakeProducer:
        async def flush(self):
            calls.append("flush")

        async def commit_transactions(self, by_transactional_id, group_id, start_new_transaction=True):
            calls.append(("commit", dict(by_transactional_id), group_id))

    manager = SimpleNamespace(producer=FakeProducer(), app=SimpleNamespace(
        conf=SimpleNamespace(id="app"), assignor=SimpleNamespace(group_for_topic=lambda topic: 0)))
    tp = TP("interactions", 3)
    assert asyncio.run(TransactionManager.commit(manager, {tp: 42})) is True
    assert calls == ["flush", ("commit", {"app-0-3": {tp: 42}}, "app")]
